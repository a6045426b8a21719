//! One port, plain and TLS: the listener every server port (client, peer, metrics) accepts on.
//!
//! etcd serves `http://host:p` and `https://host:p` on the same port when both are listed, and
//! tells them apart by the first byte (a TLS record starts with 0x16, the handshake type, which
//! no HTTP/1 method and not the HTTP/2 preface does). [`Acceptor`] does the same: a background
//! task accepts TCP connections, turns Nagle off, and hands each to its own task that peeks at
//! the first byte and runs the TLS handshake when it is one, so a slow or silent client delays
//! only itself. Finished connections queue for the server.
//!
//! Limits: at most [`HANDSHAKES_MAX`] connections are between accept and ready at once (the
//! accept loop waits for a slot), each gets [`HANDSHAKE_TIMEOUT`] to send its first byte and
//! finish the handshake, and at most [`READY_MAX`] finished connections wait for the server. A
//! connection that fails the handshake or speaks plaintext to a TLS-only port is closed and
//! logged, as etcd logs a rejected connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;

/// Connections accepted but not yet ready (peeking, or in the TLS handshake) at once.
pub const HANDSHAKES_MAX: usize = 256;
/// How long a new connection has to send its first byte and complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ready connections waiting for the server to take them.
pub const READY_MAX: usize = 64;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a port serves: plaintext (an `http://` URL), TLS (an `https://` URL), or both.
#[derive(Clone)]
pub struct Serves {
    pub plain: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Serves {
    pub fn plain() -> Serves {
        Serves {
            plain: true,
            tls: None,
        }
    }
}

/// An accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The client certificate a TLS client presented and the server verified, leaf first.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s.get_ref().1.peer_certificates(),
        }
    }
}

/// Accepts on a port and yields connections ready for HTTP (see the module doc).
pub struct Acceptor {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acceptor {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: SocketAddr, serves: Serves) -> io::Result<Acceptor> {
        Ok(Acceptor::new(TcpListener::bind(addr).await?, serves))
    }

    /// Starts accepting on a bound listener.
    pub fn new(listener: TcpListener, serves: Serves) -> Acceptor {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_MAX);
        let task = tokio::spawn(accept_loop(listener, serves, tx));
        Acceptor { ready, local, task }
    }

    /// The next ready connection.
    pub async fn accept(&mut self) -> io::Result<(Conn, SocketAddr)> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the accept loop stopped"))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The ready connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Conn>> {
        futures::stream::unfold(self, |mut a| async move {
            let next = a.accept().await.map(|(c, _)| c);
            Some((next, a))
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    serves: Serves,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    let tls = serves.tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                #[allow(clippy::disallowed_methods)] // the listener, not node code
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response pairs must not wait on Nagle's algorithm and delayed ACKs.
        let _ = tcp.set_nodelay(true);
        if tls.is_none() {
            drop(slot);
            if ready.send((Conn::Plain(tcp), addr)).await.is_err() {
                return;
            }
            continue;
        }
        let (tls, plain, ready) = (tls.clone(), serves.plain, ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, open(tcp, tls, plain)).await;
            match conn {
                Ok(Ok(conn)) => {
                    let _ = ready.send((conn, addr)).await;
                }
                Ok(Err(e)) => {
                    let error = super::go_io_text(&e);
                    tracing::warn!(remote = %addr, %error, "rejected connection");
                }
                Err(_) => {
                    tracing::warn!(remote = %addr, "rejected connection (TLS handshake timed out)");
                }
            }
        });
    }
}

/// Tells TLS from plaintext by the first byte, and completes the handshake of a TLS one.
async fn open(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    plain: bool,
) -> io::Result<Conn> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    let is_tls = n == 1 && first[0] == TLS_HANDSHAKE_RECORD;
    match tls {
        Some(tls) if is_tls => Ok(Conn::Tls(Box::new(tls.accept(tcp).await?))),
        _ if plain => Ok(Conn::Plain(tcp)),
        _ => Err(io::Error::other(
            "client sent a plaintext request to a TLS-only port",
        )),
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}
