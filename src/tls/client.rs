//! The client side of TLS for cairnctl: etcdctl's `--cacert`, `--cert`, `--key` and
//! `--insecure-skip-tls-verify` turned into one rustls client configuration.
//!
//! As etcdctl (`transport.TLSInfo.ClientConfig`): `--cacert` names the CAs that verify the
//! server, and without it the system's CA bundle does (Go's list of bundle files, or
//! `SSL_CERT_FILE`); `--cert` and `--key` together are the client certificate, one without the
//! other is etcd's `KeyFile and CertFile must both be present` error; skipping verification
//! still checks that the server holds the key of the certificate it shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

use super::dial::AnyServer;
use super::{load_certs, load_key, load_roots, provider, TlsError};

/// Where Go looks for the system's CA bundle on Linux, in its order.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// etcdctl's TLS flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub skip_verify: bool,
}

/// The rustls configuration for `files`, offering HTTP/2 (gRPC) by ALPN.
pub fn client_config(files: &ClientFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider(&[])?)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if files.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer::new()?))
    } else {
        let roots = match &files.ca {
            Some(ca) => load_roots(ca)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls(format!("tls: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        (cert, key) => return Err(TlsError::incomplete(cert.as_deref(), key.as_deref())),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The system's CAs: `SSL_CERT_FILE` if set, else the first bundle of Go's list that exists;
/// certificates rustls cannot parse are skipped, as Go skips them. None found: an empty pool
/// (every server then fails verification, with the unknown-authority error).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(certs) = load_certs(Path::new(&path)) {
            roots.add_parsable_certificates(certs);
            break;
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_is_etcds_error() {
        let files = ClientFiles {
            cert: Some("/c.pem".into()),
            skip_verify: true,
            ..Default::default()
        };
        assert_eq!(
            client_config(&files).unwrap_err().to_string(),
            "KeyFile and CertFile must both be present[key: , cert: /c.pem]"
        );
    }

    #[test]
    fn a_missing_ca_file_is_gos_open_error() {
        let files = ClientFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            client_config(&files).unwrap_err().to_string(),
            "open /nonexistent/ca.pem: no such file or directory"
        );
    }
}
