//! Running a member with production I/O: real files, the runtime clock, TCP. The binary calls
//! [`run`] with a shutdown future; tests and the simulator build their own I/O and call
//! [`crate::server::Server::start`] and [`crate::api::serve`] directly.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::io::{Clock, FsDisk, LocalTransport, RuntimeClock, SplitMix64, Transport};
use crate::peer::{GrpcTransport, PeerService};
use crate::server::{Server, ServerIo};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
    #[error("listen {addr} failed: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("client API stopped: {0}")]
    Api(String),
    #[error("raft node stopped: {0}")]
    Node(String),
}

/// Starts the member described by `cfg` and serves until `shutdown` resolves or the node fails.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let clustered = cfg.server.initial_cluster.len() > 1;
    // Fail with one clear line when a port is taken, before touching the data dir.
    let mut listen = cfg.listen_client.clone();
    if clustered {
        listen.extend(cfg.listen_peer.iter().copied());
    }
    for addr in &listen {
        std::net::TcpListener::bind(addr).map_err(|source| RunError::Listen {
            addr: *addr,
            source,
        })?;
    }
    let clock: Arc<dyn Clock> = Arc::new(RuntimeClock::new());
    let seed = (clock.wall_unix_nanos() as u64) ^ (u64::from(std::process::id()) << 32);
    let peers = if clustered {
        Some(GrpcTransport::new(
            cfg.server.cluster_id,
            cfg.server.member_id,
            clock.clone(),
        ))
    } else {
        None
    };
    let transport: Arc<dyn Transport> = match &peers {
        Some(p) => p.clone(),
        None => Arc::new(LocalTransport),
    };
    let clock_for_shutdown = clock.clone();
    let io = ServerIo {
        disk: Arc::new(FsDisk),
        clock,
        transport,
        rng: Box::new(SplitMix64::new(seed)),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (server, inbound, mut node) = Server::start(cfg.server.clone(), io, stop_rx.clone())?;
    // The data dir may carry another identity than the flags (a restarted member keeps its own).
    let (cluster_id, member_id) = (server.config().cluster_id, server.config().member_id);
    let mut apis = Vec::new();
    if let Some(peers) = &peers {
        for m in &server.config().initial_cluster {
            if let Some(url) = m.peer_urls.first() {
                peers.add_peer(m.id, url.clone());
            }
        }
        for addr in cfg.listen_peer.clone() {
            let mut rx = stop_rx.clone();
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let svc = PeerService::new(cluster_id, member_id, inbound.clone());
            tracing::info!(%addr, "serving peer traffic");
            apis.push(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_shutdown(addr, stop)
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
    }
    tracing::info!(
        name = %cfg.server.name,
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        data_dir = %cfg.server.data_dir.display(),
        "member started"
    );
    for addr in cfg.listen_client.clone() {
        let mut rx = stop_rx.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tracing::info!(%addr, "serving client requests");
        let server = server.clone();
        apis.push(tokio::spawn(async move {
            crate::api::serve(server, addr, stop)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let result = tokio::select! {
        _ = shutdown => { tracing::info!("shutting down"); Ok(()) }
        r = &mut node => Err(RunError::Node(match r { Ok(Ok(())) => "exited".into(), Ok(Err(e)) => e.to_string(), Err(e) => e.to_string() })),
    };
    let _ = stop_tx.send(true);
    // Graceful shutdown waits for open connections to finish; a client that keeps its
    // connection open (an idle HTTP/2 connection, a watch) must not hold the process forever.
    let grace = clock_for_shutdown.sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    for mut api in apis {
        tokio::select! {
            r = &mut api => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RunError::Api(e)),
                Err(e) => return Err(RunError::Api(e.to_string())),
            },
            _ = &mut grace => {
                tracing::info!("closing client connections still open after the grace period");
                api.abort();
            }
        }
    }
    if result.is_ok() && !node.is_finished() {
        match node.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RunError::Node(e.to_string())),
            Err(e) => return Err(RunError::Node(e.to_string())),
        }
    }
    result
}

/// How long shutdown waits for open client connections before closing them.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(any(not(unix), madsim))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
