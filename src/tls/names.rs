//! Certificate name checks: etcd's `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname` and
//! `--client-cert-allowed-hostname`.
//!
//! As in etcd (`TLSInfo.baseConfig`), a rule applies to every certificate the side verifies:
//! the client certificates its port accepts and, for members dialling each other, the other
//! member's server certificate too. A certificate passes when its subject's common name is the
//! allowed CN, or when it is valid for the allowed host name (its DNS or IP subject alternative
//! names, as Go's `VerifyHostname`); otherwise the handshake fails with etcd's
//! `client certificate authentication failed`. The two rules exclude each other.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{TlsError, TlsInfo};

/// etcd's words when a certificate fails the rule.
pub const REFUSED: &str = "client certificate authentication failed";

/// What a verified certificate must also name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule {
    CommonName(String),
    Hostname(String),
}

impl NameRule {
    /// The rule `info` asks for, if any; both at once is etcd's error.
    pub fn from_info(info: &TlsInfo) -> Result<Option<NameRule>, TlsError> {
        match (&info.allowed_cn, &info.allowed_hostname) {
            (Some(cn), Some(hostname)) => Err(TlsError::NameRules {
                cn: cn.clone(),
                hostname: hostname.clone(),
            }),
            (Some(cn), None) => Ok(Some(NameRule::CommonName(cn.clone()))),
            (None, Some(h)) => Ok(Some(NameRule::Hostname(h.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// Whether the end-entity certificate `der` passes.
    pub fn allows(&self, der: &CertificateDer<'_>) -> bool {
        match self {
            NameRule::CommonName(cn) => common_name(der).as_deref() == Some(cn.as_str()),
            NameRule::Hostname(host) => {
                let Ok(name) = ServerName::try_from(host.as_str()) else {
                    return false;
                };
                let Ok(cert) = rustls::server::ParsedCertificate::try_from(der) else {
                    return false;
                };
                rustls::client::verify_server_name(&cert, &name).is_ok()
            }
        }
    }

    fn check(&self, der: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.allows(der) {
            Ok(())
        } else {
            // Logged here in etcd's words; the error is one rustls answers with a
            // bad_certificate alert, the alert Go sends when this check fails.
            tracing::warn!(
                error = REFUSED,
                rule = ?self,
                subject_cn = common_name(der).unwrap_or_default(),
                "rejected a certificate"
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }
}

/// The subject's common name (OID 2.5.4.3) of a DER certificate; with several, the last, as
/// Go's `pkix.Name` keeps it. None when the certificate cannot be read or has none.
pub fn common_name(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    // signature, issuer, validity, subject, ... }, ... }
    let (_, cert, _) = der_item(der)?;
    let (_, tbs, _) = der_item(cert)?;
    let mut rest = tbs;
    let mut fields = Vec::new();
    while !rest.is_empty() && fields.len() < 6 {
        let (tag, body, after) = der_item(rest)?;
        fields.push((tag, body));
        rest = after;
    }
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (tag, subject) = *fields.get(skip + 4)?;
    if tag != 0x30 {
        return None;
    }
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, after) = der_item(rdns)?;
        rdns = after;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, after) = der_item(attrs)?;
            attrs = after;
            let (oid_tag, oid, value) = der_item(attr)?;
            let (_, text, _) = der_item(value)?;
            if oid_tag == 0x06 && oid == CN {
                found = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    found
}

/// One DER item at the start of `bytes`: its tag, its contents and what follows it.
fn der_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A client-certificate verifier that also applies a [`NameRule`].
#[derive(Debug)]
pub struct NamedClients {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub rule: NameRule,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.rule.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server-certificate verifier that also applies a [`NameRule`] (members dialling members).
#[derive(Debug)]
pub struct NamedServers {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub rule: NameRule,
}

impl ServerCertVerifier for NamedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.rule.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "cairn");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        assert_eq!(
            common_name(&cert("member-1", &["localhost"])).as_deref(),
            Some("member-1")
        );
        assert_eq!(common_name(b"not a certificate"), None);
        assert_eq!(common_name(&[0x30, 0x85, 0xff]), None);
    }

    #[test]
    fn rules_pass_the_named_certificate_only() {
        let c = cert("example.com", &["m1.example.com", "127.0.0.1"]);
        assert!(NameRule::CommonName("example.com".into()).allows(&c));
        assert!(!NameRule::CommonName("example.org".into()).allows(&c));
        assert!(NameRule::Hostname("m1.example.com".into()).allows(&c));
        assert!(NameRule::Hostname("127.0.0.1".into()).allows(&c));
        // The CN is not a host name (Go ignores it since 1.15).
        assert!(!NameRule::Hostname("example.com".into()).allows(&c));
    }

    #[test]
    fn both_rules_at_once_are_etcds_error() {
        let info = TlsInfo {
            allowed_cn: Some("a".into()),
            allowed_hostname: Some("b".into()),
            ..TlsInfo::default()
        };
        assert_eq!(
            NameRule::from_info(&info).unwrap_err().to_string(),
            r#"AllowedCN and AllowedHostname are mutually exclusive (cn="a", hostname="b")"#
        );
    }
}
