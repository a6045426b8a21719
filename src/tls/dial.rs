//! How a member dials other members: raft traffic and snapshots to their peer URLs, forwarded
//! calls (member changes, lease keep-alives) and start-up checks to their client URLs.
//!
//! An `http://` URL is dialled in plaintext. An `https://` one goes through TCP and rustls with
//! the side's own settings, as etcd's members do: the CA file (`--trusted-ca-file` /
//! `--peer-trusted-ca-file`) verifies the other member, and the member's own certificate and key
//! are its client certificate (so a port that requires one accepts its fellow members). A
//! self-signed certificate (`--auto-tls`) is not verified, as etcd does not verify it. Under
//! madsim only plaintext dials (the simulated members serve no TLS).

use std::sync::Arc;

use tokio_rustls::rustls;

use super::names::{NameRule, NamedServers};
use super::{load_certs, load_key, load_roots, provider, TlsError, TlsInfo};

/// Dials `http://` and `https://` URLs with one side's TLS settings.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("{0}: TLS is not configured for this side (no certificate flags)")]
    NoTls(String),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Dialer {
    /// Plaintext only: an `https://` URL fails to dial.
    pub fn plain() -> Dialer {
        Dialer::default()
    }

    /// A dialler with `info`'s settings; with no certificate and no CA it dials only plaintext.
    pub fn new(info: &TlsInfo) -> Result<Dialer, TlsError> {
        if info.is_empty() && info.trusted_ca_file.is_none() {
            return Ok(Dialer::plain());
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider(&info.cipher_suites)?)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            match (&info.trusted_ca_file, info.self_signed) {
                (Some(ca), false) => rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(&[])?,
                )
                .build()
                .map_err(|e| TlsError::Rustls(format!("server certificate verifier: {e}")))?,
                _ => Arc::new(AnyServer::new()?),
            };
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            match NameRule::from_info(info)? {
                Some(rule) => Arc::new(NamedServers {
                    inner: verifier,
                    rule,
                }),
                None => verifier,
            };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&info.cert_file, &info.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| TlsError::Rustls(format!("tls: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Dialer {
            tls: Some(Arc::new(config)),
        })
    }

    /// A dialler with a client configuration built elsewhere (cairnctl's, [`super::client`]).
    pub fn with_config(config: Arc<rustls::ClientConfig>) -> Dialer {
        Dialer { tls: Some(config) }
    }

    /// A channel to `url` (`http://host:port` or `https://host:port`), connected.
    pub async fn connect(&self, url: &str) -> Result<tonic::transport::Channel, DialError> {
        self.endpoint(url)?.connect_with(self).await
    }

    /// A channel to `url` that connects on first use and reconnects after failures.
    pub fn connect_lazy(&self, url: &str) -> Result<tonic::transport::Channel, DialError> {
        Ok(self.endpoint(url)?.connect_lazy_with(self))
    }

    fn endpoint(&self, url: &str) -> Result<Target, DialError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(DialError::Url(url.to_string()));
        };
        let authority = rest.trim_end_matches('/').to_string();
        // tonic sees plain http: the TLS is done by the connector below.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|_| DialError::Url(url.to_string()))?;
        if tls && self.tls.is_none() {
            return Err(DialError::NoTls(url.to_string()));
        }
        Ok(Target {
            endpoint,
            tls,
            authority,
        })
    }
}

struct Target {
    endpoint: tonic::transport::Endpoint,
    tls: bool,
    authority: String,
}

impl Target {
    async fn connect_with(self, dialer: &Dialer) -> Result<tonic::transport::Channel, DialError> {
        if !self.tls {
            return Ok(self.endpoint.connect().await?);
        }
        #[cfg(madsim)]
        {
            let _ = dialer;
            Err(DialError::NoTls(self.authority))
        }
        #[cfg(not(madsim))]
        let connector = connector(dialer.tls.clone().expect("checked"), self.authority);
        #[cfg(not(madsim))]
        Ok(self.endpoint.connect_with_connector(connector).await?)
    }

    fn connect_lazy_with(self, dialer: &Dialer) -> tonic::transport::Channel {
        if !self.tls {
            return self.endpoint.connect_lazy();
        }
        #[cfg(madsim)]
        {
            let _ = dialer;
            self.endpoint.connect_lazy()
        }
        #[cfg(not(madsim))]
        {
            let connector = connector(dialer.tls.clone().expect("checked"), self.authority);
            self.endpoint.connect_with_connector_lazy(connector)
        }
    }
}

#[cfg(not(madsim))]
type Io = hyper_util::rt::TokioIo<Primed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;

/// How long a dial waits for the server's first bytes after the TLS handshake.
#[cfg(not(madsim))]
const PRIMING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The bytes an HTTP/2 client opens a connection with (RFC 9113 section 3.4).
#[cfg(not(madsim))]
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TLS stream on which the server has already answered. In TLS 1.3 the server checks a
/// client certificate after the client's side of the handshake is done, so a refused client
/// learns it only from its next read. So the dial sends HTTP/2's client preface itself and
/// waits for the server's first bytes (its settings), as grpc-go waits for the server's
/// preface before a connection counts as up: a refused certificate is a failed dial, retried
/// until the deadline, not a failed call. The server's bytes are replayed to the reader, and
/// the preface the HTTP/2 client then writes is dropped (it went out already).
#[cfg(not(madsim))]
pub(crate) struct Primed<S> {
    head: Vec<u8>,
    at: usize,
    /// How much of the preface the HTTP/2 client has still to write (and the wire not see).
    skip: usize,
    inner: S,
}

#[cfg(not(madsim))]
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Primed<S> {
    async fn new(mut inner: S) -> std::io::Result<Primed<S>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        inner.write_all(H2_PREFACE).await?;
        inner.flush().await?;
        let mut head = vec![0u8; 4096];
        let n = inner.read(&mut head).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.truncate(n);
        Ok(Primed {
            head,
            at: 0,
            skip: H2_PREFACE.len(),
            inner,
        })
    }
}

#[cfg(not(madsim))]
impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Primed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(not(madsim))]
impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Primed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.skip > 0 && !data.is_empty() {
            let sent = H2_PREFACE.len() - self.skip;
            let n = self.skip.min(data.len());
            if data[..n] != H2_PREFACE[sent..sent + n] {
                return std::task::Poll::Ready(Err(std::io::Error::other(
                    "the HTTP/2 client did not open with its preface",
                )));
            }
            self.skip -= n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.skip > 0 {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// TCP (Nagle off) then a TLS handshake naming the URL's host (an IP address host is checked
/// against the certificate's IP SANs).
#[cfg(not(madsim))]
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    authority: String,
}

#[cfg(not(madsim))]
fn connector(config: Arc<rustls::ClientConfig>, authority: String) -> Connector {
    Connector {
        tls: tokio_rustls::TlsConnector::from(config),
        authority,
    }
}

#[cfg(not(madsim))]
impl tonic::codegen::Service<tonic::codegen::http::Uri> for Connector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let (tls, authority) = (self.tls.clone(), self.authority.clone());
        Box::pin(async move {
            let host = match authority.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
                None => authority.clone(),
            };
            let name = rustls_pki_types::ServerName::try_from(host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tls.connect(name, tcp).await?;
            let primed = tokio::time::timeout(PRIMING_TIMEOUT, Primed::new(stream))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the server sent nothing after the TLS handshake",
                    )
                })??;
            Ok(hyper_util::rt::TokioIo::new(primed))
        })
    }
}

/// Accepts any server certificate, still checking that the server holds its key: etcd's
/// behaviour towards a member serving a self-signed (`--auto-tls`) certificate, and etcdctl's
/// `--insecure-skip-tls-verify`.
#[derive(Debug)]
pub(crate) struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl AnyServer {
    pub(crate) fn new() -> Result<AnyServer, TlsError> {
        Ok(AnyServer(provider(&[])?))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
