//! The serving side of TLS: a rustls server configuration from a [`TlsInfo`], and the
//! self-signed certificate of `--auto-tls` / `--peer-auto-tls`.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

use super::names::{NameRule, NamedClients};
use super::{load_certs, load_crls, load_key, load_roots, provider, TlsError, TlsInfo};

/// Where etcd keeps the file of system CA certificates on Debian and its kin; the pool a server
/// with `--client-cert-auth` but no `--trusted-ca-file` verifies client certificates against.
const SYSTEM_ROOTS_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A self-signed certificate is valid this long (etcd's `SelfCert`: one year).
const SELF_CERT_VALIDITY_DAYS: i64 = 365;

/// Builds the server configuration etcd's `TLSInfo.ServerConfig` describes: the certificate and
/// key; a verified client certificate required when `--trusted-ca-file` or `--client-cert-auth`
/// is set, checked against the revocation list when one is named; TLS 1.2 or newer; ALPN `h2`
/// (and `http/1.1`, for HTTP/1 clients of `/health` and the JSON gateway).
pub fn server_config(info: &TlsInfo) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&info.cert_file, &info.key_file) else {
        return Err(TlsError::incomplete(
            info.cert_file.as_deref(),
            info.key_file.as_deref(),
        ));
    };
    let provider = provider(&info.cipher_suites)?;
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if info.trusted_ca_file.is_some() || info.client_cert_auth {
        let roots = match &info.trusted_ca_file {
            Some(ca) => load_roots(ca)?,
            None => load_roots(Path::new(SYSTEM_ROOTS_FILE))?,
        };
        let mut verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl) = &info.crl_file {
            // etcd refuses a certificate whose serial the list names, and nothing else: a
            // certificate from an issuer without a list is not refused for that.
            verifier = verifier
                .with_crls(load_crls(crl)?)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Rustls(format!("client certificate verifier: {e}")))?;
        match NameRule::from_info(info)? {
            Some(rule) => builder.with_client_cert_verifier(Arc::new(NamedClients {
                inner: verifier,
                rule,
            })),
            None => builder.with_client_cert_verifier(verifier),
        }
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
        e => TlsError::Rustls(format!("tls: {e}")),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// etcd's `transport.SelfCert`: the certificate and key in `dir` (`cert.pem`, `key.pem`), made
/// there first if either is missing: a P-256 key, valid one year, for every host of `hosts`
/// (`host:port`; IP addresses become IP SANs, names DNS SANs), for server and client use. The
/// returned settings mark the certificate self-signed, so dialling members do not verify it.
pub fn self_cert(
    dir: &Path,
    hosts: &[String],
    cipher_suites: &[String],
) -> Result<TlsInfo, TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let info = TlsInfo {
        cert_file: Some(cert_path.clone()),
        key_file: Some(key_path.clone()),
        cipher_suites: cipher_suites.to_vec(),
        self_signed: true,
        ..TlsInfo::default()
    };
    #[allow(clippy::disallowed_methods)] // production I/O: certificate files
    {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::SelfCertDir(dir.to_path_buf(), e))?;
        if cert_path.exists() && key_path.exists() {
            return Ok(info);
        }
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(SELF_CERT_VALIDITY_DAYS);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    for host in hosts {
        let name = match host.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => host.as_str(),
        };
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                name.to_string()
                    .try_into()
                    .map_err(|e| TlsError::SelfCert(format!("host {name:?}: {e}")))?,
            ),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::SelfCert(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::SelfCert(e.to_string()))?;
    #[allow(clippy::disallowed_methods)] // production I/O: certificate files
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let write = |path: &Path, text: &str, mode: u32| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write(&cert_path, &cert.pem(), 0o644)
            .and_then(|()| write(&key_path, &key.serialize_pem(), 0o600))
            .map_err(|e| TlsError::SelfCert(format!("{}: {e}", dir.display())))?;
    }
    tracing::info!(dir = %dir.display(), "created a self-signed certificate");
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost:2379".to_string(), "127.0.0.1:2379".to_string()];
        let info = self_cert(dir.path(), &hosts, &[]).unwrap();
        assert!(info.self_signed);
        let first = std::fs::read(dir.path().join("cert.pem")).unwrap();
        server_config(&info).unwrap();
        // A restart keeps the certificate clients may have pinned.
        self_cert(dir.path(), &hosts, &[]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("cert.pem")).unwrap(), first);
    }

    #[test]
    fn half_a_key_pair_is_refused_in_etcds_words() {
        let info = TlsInfo {
            cert_file: Some("/x/cert.pem".into()),
            ..TlsInfo::default()
        };
        assert_eq!(
            server_config(&info).unwrap_err().to_string(),
            "KeyFile and CertFile must both be present[key: , cert: /x/cert.pem]"
        );
    }
}
