//! Running a member with production I/O: real files, the runtime clock, TCP. The binary calls
//! [`run`] with a shutdown future; tests and the simulator build their own I/O and call
//! [`crate::server::Server::start`] and [`crate::api::serve`] directly.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::io::{Clock, FsDisk, RuntimeClock, SplitMix64, Transport};
use crate::peer::{GrpcTransport, PeerService};
use crate::server::{Server, ServerIo};
use crate::tls::dial::Dialer;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
    #[error("listen {addr} failed: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A certificate, key or CA file could not be used (etcd's texts).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// `--experimental-initial-corrupt-check` found this member's data differ from a peer's.
    #[error("{0}")]
    Corrupt(String),
    #[error("client API stopped: {0}")]
    Api(String),
    #[error("raft node stopped: {0}")]
    Node(String),
}

/// Resolves when the member's stop signal is raised.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The TLS each side serves with, built once at start so that a bad file stops the start.
struct Tls {
    client: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    peer: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Dials other members' client URLs (forwarded calls, the start-up hash check).
    client_dialer: Dialer,
    /// Dials other members' peer URLs.
    peer_dialer: Dialer,
}

impl Tls {
    /// Makes `--auto-tls` certificates where asked (in `<data-dir>/fixtures/{client,peer}`, as
    /// etcd keeps them) and builds the server configurations the `https://` URLs need.
    fn resolve(cfg: &Config) -> Result<Tls, RunError> {
        type Side = (Option<Arc<tokio_rustls::rustls::ServerConfig>>, Dialer);
        let side = |auto: bool,
                    info: &crate::tls::TlsInfo,
                    listens: &[&[crate::config::Listen]],
                    dir: &str|
         -> Result<Side, RunError> {
            let info = if auto && info.is_empty() {
                let hosts: Vec<String> = listens[0].iter().map(|l| l.host.clone()).collect();
                let dir = cfg.server.data_dir.join("fixtures").join(dir);
                crate::tls::server::self_cert(&dir, &hosts, &info.cipher_suites)?
            } else {
                info.clone()
            };
            let serves_tls = listens.iter().any(|ls| ls.iter().any(|l| l.tls));
            let server = if serves_tls {
                Some(crate::tls::server::server_config(&info)?)
            } else {
                None
            };
            Ok((server, Dialer::new(&info)?))
        };
        let (client, client_dialer) = side(
            cfg.client_auto_tls,
            &cfg.client_tls,
            &[&cfg.listen_client, &cfg.listen_metrics],
            "client",
        )?;
        let (peer, peer_dialer) = side(
            cfg.peer_auto_tls,
            &cfg.peer_tls,
            &[&cfg.listen_peer],
            "peer",
        )?;
        Ok(Tls {
            client,
            peer,
            client_dialer,
            peer_dialer,
        })
    }

    /// The acceptor for one listening address: plaintext for its `http://` URLs, TLS with
    /// `config` for its `https://` ones.
    fn acceptor(
        listen: &crate::config::Listen,
        listener: std::net::TcpListener,
        config: &Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Result<crate::tls::accept::Acceptor, RunError> {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| RunError::Listen {
                addr: listen.addr,
                source,
            })?;
        let serves = crate::tls::accept::Serves {
            plain: listen.plain,
            tls: if listen.tls { config.clone() } else { None },
        };
        Ok(crate::tls::accept::Acceptor::new(listener, serves))
    }
}

/// Starts the member described by `cfg` and serves until `shutdown` resolves or the node fails.
pub async fn run(
    mut cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // Fail with one clear line when a port is taken, before touching the data dir. Like etcd,
    // even a one-member cluster listens for peers: members can be added to it at runtime.
    let bind = |ls: &[crate::config::Listen]| -> Result<Vec<_>, RunError> {
        ls.iter()
            .map(|l| {
                let std_listener = std::net::TcpListener::bind(l.addr)
                    .and_then(|t| t.set_nonblocking(true).map(|()| t))
                    .map_err(|source| RunError::Listen {
                        addr: l.addr,
                        source,
                    })?;
                Ok((l.clone(), std_listener))
            })
            .collect()
    };
    let client_listeners = bind(&cfg.listen_client)?;
    let peer_listeners = bind(&cfg.listen_peer)?;
    let metrics_listeners = bind(&cfg.listen_metrics)?;
    let tls = Tls::resolve(&cfg)?;
    let wal_dir = cfg.server.wal_dir();
    if cfg.server.join_existing && !crate::wal::Wal::exists(&FsDisk, &wal_dir) {
        discover(&mut cfg.server, &tls.peer_dialer).await?;
    }
    let clock: Arc<dyn Clock> = Arc::new(RuntimeClock::new());
    let seed = (clock.wall_unix_nanos() as u64) ^ (u64::from(std::process::id()) << 32);
    let peers = GrpcTransport::new(
        cfg.server.cluster_id,
        cfg.server.member_id,
        clock.clone(),
        tls.peer_dialer.clone(),
    );
    let transport: Arc<dyn Transport> = peers.clone();
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
    peers.set_identity(cluster_id, member_id);
    peers.set_inbound(inbound.clone());
    let mut apis = Vec::new();
    {
        // Whom to talk to: the applied membership, or before anything was applied (a new
        // cluster, a joining member) the initial one.
        let applied: Vec<(u64, Vec<String>)> = server
            .members()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.id, m.peer_urls))
            .collect();
        if applied.is_empty() {
            let initial: Vec<(u64, Vec<String>)> = server
                .config()
                .initial_cluster
                .iter()
                .map(|m| (m.id, m.peer_urls.clone()))
                .collect();
            peers.set_peers(&initial);
        } else {
            peers.set_peers(&applied);
        }
        for (listen, listener) in peer_listeners {
            let stop = stopped(&stop_rx);
            let snap_dir = cfg.server.data_dir.join("member").join("snap");
            let members = server.clone();
            let removed = crate::server::membership::RemovedCache::default();
            let is_removed: crate::peer::RemovedCheck =
                Arc::new(move |id| removed.contains(members.store(), id).unwrap_or(false));
            let svc =
                PeerService::new(cluster_id, member_id, inbound.clone(), snap_dir, is_removed);
            let members =
                crate::api::peer_cluster_service(server.clone(), tls.client_dialer.clone());
            let acceptor = Tls::acceptor(&listen, listener, &tls.peer)?;
            tracing::info!(addr = %listen.addr, tls = listen.tls, "serving peer traffic");
            apis.push(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .add_service(members)
                    .serve_with_incoming_shutdown(acceptor.into_stream(), stop)
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
    if cfg.initial_corrupt_check {
        if let Err(e) = check_initial_hash(&server, &tls.client_dialer).await {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    }
    for (listen, listener) in client_listeners {
        let acceptor = Tls::acceptor(&listen, listener, &tls.client)?;
        tracing::info!(addr = %listen.addr, tls = listen.tls, "ready to serve client requests");
        let (server, stop) = (server.clone(), stopped(&stop_rx));
        let dialer = tls.client_dialer.clone();
        apis.push(tokio::spawn(async move {
            crate::api::serve_on(server, acceptor, dialer, stop)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    for (listen, listener) in metrics_listeners {
        let acceptor = Tls::acceptor(&listen, listener, &tls.client)?;
        tracing::info!(addr = %listen.addr, tls = listen.tls, "serving metrics and health");
        let (server, stop) = (server.clone(), stopped(&stop_rx));
        apis.push(tokio::spawn(async move {
            crate::api::serve_metrics(server, acceptor, stop)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let mut removed = peers.removed();
    // A member removed from the cluster stops, as etcd's does, with its error in the log and exit
    // status 0: the removal was asked for (etcd exits 0 whenever its server stops).
    let removed_stop = || {
        tracing::error!("{}", crate::peer::REMOVED_MESSAGE);
        Ok(())
    };
    let result = tokio::select! {
        _ = removed.wait_for(|r| *r) => removed_stop(),
        _ = shutdown => { tracing::info!("shutting down"); Ok(()) }
        r = &mut node => match r {
            Ok(Err(crate::raft::NodeError::Removed)) => removed_stop(),
            Ok(Ok(())) => Err(RunError::Node("exited".into())),
            Ok(Err(e)) => Err(RunError::Node(e.to_string())),
            Err(e) => Err(RunError::Node(e.to_string())),
        },
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
            Ok(Ok(())) | Ok(Err(crate::raft::NodeError::Removed)) => {}
            Ok(Err(e)) => return Err(RunError::Node(e.to_string())),
            Err(e) => return Err(RunError::Node(e.to_string())),
        }
    }
    result
}

/// How long the initial corruption check waits for one peer's hash.
pub const INITIAL_HASH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// etcd's `--experimental-initial-corrupt-check`: before serving clients, compare this member's
/// KV hash at its current revision with every other member's at the same revision (asked on
/// their client URLs). A different hash under the same compaction floor means the data differ:
/// the member refuses to serve. A peer that cannot answer (down, behind, compacted past the
/// revision, or with another compaction floor) is skipped with a warning, as in etcd.
async fn check_initial_hash(server: &Server, dialer: &Dialer) -> Result<(), RunError> {
    use crate::proto::etcdserverpb::{maintenance_client::MaintenanceClient, HashKvRequest};
    let me = server.config().member_id;
    tracing::info!(member = %format!("{me:x}"), "starting initial corruption check");
    let store = server.store();
    let revision = store.current_revision();
    let (hash, compact_revision, _) = store
        .hash_kv(revision)
        .map_err(|e| RunError::Corrupt(format!("{me:x} failed to fetch hash ({e})")))?;
    let members = server.members().unwrap_or_default();
    let mut mismatch = 0;
    for m in members.iter().filter(|m| m.id != me) {
        let Some(url) = m.client_urls.first() else {
            tracing::warn!(peer = %format!("{:x}", m.id), "cannot check the hash of a peer whose client URLs are not known yet");
            continue;
        };
        let call = async {
            let mut client = dialer
                .connect(url)
                .await
                .map(MaintenanceClient::new)
                .map_err(|e| e.to_string())?;
            client
                .hash_kv(HashKvRequest { revision })
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.message().to_string())
        };
        let resp = match tokio::time::timeout(INITIAL_HASH_TIMEOUT, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(peer = %format!("{:x}", m.id), %url, revision, error = %e, "cannot fetch hash from peer");
                continue;
            }
            Err(_) => {
                tracing::warn!(peer = %format!("{:x}", m.id), %url, revision, "cannot fetch hash from peer: timed out");
                continue;
            }
        };
        if resp.hash == hash {
            continue;
        }
        if resp.compact_revision == compact_revision {
            tracing::error!(
                "{me:x}'s hash {hash} != {:x}'s hash {} (revision {revision}, peer revision {}, compact revision {compact_revision})",
                m.id,
                resp.hash,
                resp.header.map(|h| h.revision).unwrap_or_default()
            );
            mismatch += 1;
        } else {
            tracing::warn!(
                "{me:x} cannot check hash of peer({:x}): peer has a different compact revision {} (revision:{revision})",
                m.id,
                resp.compact_revision
            );
        }
    }
    if mismatch > 0 {
        return Err(RunError::Corrupt(format!(
            "{me:x} found data inconsistency with peers"
        )));
    }
    tracing::info!("initial corruption checking passed; no corruption");
    Ok(())
}

/// How long a joining member keeps asking the running members who it is.
pub const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A member started with `--initial-cluster-state existing` and no data learns its id, the
/// cluster id and the current membership from a running member's peer port; it must have been
/// added with `member add` first.
async fn discover(cfg: &mut crate::server::ServerConfig, dialer: &Dialer) -> Result<(), RunError> {
    use crate::proto::etcdserverpb::{cluster_client::ClusterClient, MemberListRequest};
    let mine: Vec<String> = cfg
        .initial_cluster
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.peer_urls.clone())
        .unwrap_or_default();
    let mut last_error = String::from("no other member listed in --initial-cluster");
    for m in cfg.initial_cluster.clone() {
        if m.peer_urls == mine {
            continue;
        }
        for url in &m.peer_urls {
            let call = async {
                let mut client = dialer
                    .connect(url)
                    .await
                    .map(ClusterClient::new)
                    .map_err(|e| e.to_string())?;
                client
                    .member_list(MemberListRequest {
                        linearizable: false,
                    })
                    .await
                    .map_err(|e| e.message().to_string())
            };
            let resp = match tokio::time::timeout(DISCOVERY_TIMEOUT, call).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(e)) => {
                    last_error = format!("{url}: {e}");
                    continue;
                }
                Err(_) => {
                    last_error = format!("{url}: timed out");
                    continue;
                }
            };
            let header = resp.header.unwrap_or_default();
            let Some(me) = resp.members.iter().find(|x| {
                let mut a = x.peer_ur_ls.clone();
                a.sort();
                let mut b = mine.clone();
                b.sort();
                a == b
            }) else {
                return Err(RunError::Join(format!(
                    "no member with peer URLs {} in the running cluster: add it with `member add` first",
                    mine.join(",")
                )));
            };
            cfg.member_id = me.id;
            cfg.cluster_id = header.cluster_id;
            cfg.initial_cluster = resp
                .members
                .iter()
                .map(|x| crate::server::InitialMember {
                    name: if x.id == me.id {
                        cfg.name.clone()
                    } else {
                        x.name.clone()
                    },
                    id: x.id,
                    peer_urls: x.peer_ur_ls.clone(),
                })
                .collect();
            tracing::info!(member_id = %format!("{:x}", me.id), cluster_id = %format!("{:x}", header.cluster_id), "joining a running cluster");
            return Ok(());
        }
    }
    Err(RunError::Join(format!(
        "cannot reach a running member: {last_error}"
    )))
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
