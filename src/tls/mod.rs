//! # TLS for the client and peer ports, with etcd's flags
//!
//! What this module owns: reading PEM files named by etcd's flags into rustls configurations
//! (server side: [`server`]; members dialling members: [`dial`]; cairnctl: [`client`]), the
//! certificate name checks ([`names`]), the self-signed certificates of `--auto-tls` /
//! `--peer-auto-tls`, and the listener that serves plain and TLS connections on one port
//! ([`accept`]). The simulator's members talk plaintext over madsim's network: the listener is
//! not compiled under `cfg(madsim)`, and there [`dial`] dials only plaintext (the settings are
//! compiled, as the configuration carries them).
//!
//! The flags keep etcd's meaning (etcd's `transport.TLSInfo`): a port serves TLS when one of its
//! URLs is `https://`; `--trusted-ca-file` alone already makes the server require and verify a
//! client certificate, as `--client-cert-auth` does; `--cipher-suites` takes Go's suite names and
//! narrows TLS 1.2 (TLS 1.3's suites are not configurable, as in Go); the minimum version is
//! TLS 1.2.

#[cfg(not(madsim))]
pub mod accept;
pub mod client;
pub mod dial;
pub mod names;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// One side's TLS settings, as etcd's flags give them (`--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`, `--cipher-suites`, or their
/// `--peer-*` forms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub crl_file: Option<PathBuf>,
    /// Go's names of the TLS 1.2 suites to offer; empty: every suite rustls has.
    pub cipher_suites: Vec<String>,
    /// The certificate is one `--auto-tls` made: dialling peers do not verify it.
    pub self_signed: bool,
    /// `--peer-cert-allowed-cn`: the common name every verified certificate must have.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname` / `--client-cert-allowed-hostname`: the host name every
    /// verified certificate must be valid for.
    pub allowed_hostname: Option<String>,
}

impl TlsInfo {
    /// etcd's `TLSInfo.Empty`: neither a certificate nor a key was named.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

impl TlsError {
    /// etcd's error for a certificate without its key or a key without its certificate.
    pub(crate) fn incomplete(cert: Option<&Path>, key: Option<&Path>) -> TlsError {
        let show = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
        TlsError::Incomplete {
            key: show(key),
            cert: show(cert),
        }
    }
}

/// Why a TLS configuration could not be built; the texts are etcd's where etcd has one.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read: Go's `open PATH: no such file or directory`.
    #[error("open {}: {}", .path.display(), go_io_error(.source))]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")]
    Incomplete { key: String, cert: String },
    #[error("tls: failed to find any PEM data in certificate input")]
    NoCertificate,
    #[error("tls: failed to find any PEM data in key input")]
    NoKey,
    #[error("tls: found a certificate rather than a key in the PEM for the private key")]
    CertificateForKey,
    #[error("tls: private key does not match public key")]
    KeyMismatch,
    #[error("{}: no certificates found", .0.display())]
    NoCa(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Invalid(PathBuf, String),
    #[error(
        "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={hostname:?})"
    )]
    NameRules { cn: String, hostname: String },
    #[error("unexpected TLS cipher suite {0:?}")]
    UnknownCipherSuite(String),
    #[error("cannot create cert directory {}: {}", .0.display(), go_io_error(.1))]
    SelfCertDir(PathBuf, std::io::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfCert(String),
    #[error("{0}")]
    Rustls(String),
}

/// Go's wording of the common `os.Open` failures.
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[allow(clippy::disallowed_methods)] // production I/O: certificate files are not on the Disk seam
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order (a chain: the leaf first).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// The private key in a PEM file: PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#8.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound
            if CertificateDer::pem_slice_iter(&bytes).next().is_some() =>
        {
            TlsError::CertificateForKey
        }
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        e => TlsError::Invalid(path.to_path_buf(), e.to_string()),
    })
}

/// A certificate pool from a PEM file of CA certificates.
pub(crate) fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path).map_err(|e| match e {
        TlsError::NoCertificate => TlsError::NoCa(path.to_path_buf()),
        e => e,
    })? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Invalid(path.to_path_buf(), e.to_string()))?;
    }
    Ok(roots)
}

/// The revocation lists in a PEM or DER file (`--client-crl-file`).
pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let pem: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_default();
    if pem.is_empty() {
        // etcd reads the file as DER, as `openssl crl -outform der` writes it.
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Ok(pem)
}

/// Go's TLS suite names (`crypto/tls.CipherSuites()` and `InsecureCipherSuites()`, plus the two
/// aliases etcd accepts). The ones rustls implements map to its suite; the others (CBC, RC4,
/// 3DES, RSA key exchange) are accepted as etcd accepts them but cannot be offered.
const GO_SUITES: &[(&str, Option<rustls::CipherSuite>)] = {
    use rustls::CipherSuite as C;
    &[
        ("TLS_RSA_WITH_RC4_128_SHA", None),
        ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_128_CBC_SHA256", None),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
        ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", None),
        ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", None),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", None),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        ("TLS_AES_128_GCM_SHA256", Some(C::TLS13_AES_128_GCM_SHA256)),
        ("TLS_AES_256_GCM_SHA384", Some(C::TLS13_AES_256_GCM_SHA384)),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            Some(C::TLS13_CHACHA20_POLY1305_SHA256),
        ),
    ]
};

/// Checks `--cipher-suites` names as etcd does (`unexpected TLS cipher suite "X"`); returns the
/// names that cairn cannot offer (they are accepted, and logged).
pub fn check_cipher_suites(names: &[String]) -> Result<Vec<String>, TlsError> {
    let mut unavailable = Vec::new();
    for name in names {
        match GO_SUITES.iter().find(|(n, _)| n == name) {
            None => return Err(TlsError::UnknownCipherSuite(name.clone())),
            Some((_, None)) => unavailable.push(name.clone()),
            Some(_) => {}
        }
    }
    Ok(unavailable)
}

/// The ring crypto provider, narrowed to the named TLS 1.2 suites (TLS 1.3's always stay).
pub(crate) fn provider(
    cipher_suites: &[String],
) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    // Deprecated only for lacking post-quantum key exchange, which etcd 3.4 (Go 1.19) lacks too.
    #[allow(deprecated)]
    let mut provider = tokio_rustls::rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        check_cipher_suites(cipher_suites)?;
        let wanted: Vec<rustls::CipherSuite> = cipher_suites
            .iter()
            .filter_map(|n| GO_SUITES.iter().find(|(g, _)| g == n).and_then(|(_, s)| *s))
            .collect();
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || wanted.contains(&s.suite()));
    }
    Ok(Arc::new(provider))
}

/// Go's crypto/tls and crypto/x509 words for the handshake failures users meet (etcd logs and
/// etcdctl prints these), else rustls's own.
pub fn go_text(e: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "x509: certificate signed by unknown authority".into()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "x509: certificate has expired or is not yet valid".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "x509: certificate is not valid for the requested name".into()
        }
        Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        Error::AlertReceived(AlertDescription::CertificateRequired)
        | Error::AlertReceived(AlertDescription::BadCertificate) => {
            "remote error: tls: bad certificate".into()
        }
        Error::AlertReceived(AlertDescription::UnknownCA) => {
            "remote error: tls: unknown certificate authority".into()
        }
        Error::NoCertificatesPresented => "tls: client didn't provide a certificate".into(),
        other => other.to_string(),
    }
}

/// [`go_text`] for an I/O error that carries a TLS error, else the I/O error's own text.
pub fn go_io_text(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => go_text(tls),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suite_names_are_checked_as_etcd_checks_them() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_cipher_suites(&names(&["FOO"]))
                .unwrap_err()
                .to_string(),
            "unexpected TLS cipher suite \"FOO\""
        );
        assert_eq!(
            check_cipher_suites(&names(&[
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_RSA_WITH_AES_128_CBC_SHA"
            ]))
            .unwrap(),
            names(&["TLS_RSA_WITH_AES_128_CBC_SHA"])
        );
        let p = provider(&names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"])).unwrap();
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() != &rustls::version::TLS13)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            vec![rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
        );
    }

    #[test]
    fn a_missing_file_is_reported_in_gos_words() {
        let e = load_certs(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "open /nonexistent/cert.pem: no such file or directory"
        );
    }
}
