//! # The gRPC API
//!
//! tonic services for etcd's v3 API, thin by design: each handler unpacks the request, calls the
//! [`Server`], and maps a [`RequestError`](crate::server::error::RequestError) to the gRPC status
//! code and exact message etcd returns, so client libraries that match on those messages (to retry
//! on "leader changed", to surface "required revision has been compacted") behave as with etcd.
//! Services not implemented yet answer `Unimplemented`.

#[cfg(not(madsim))]
pub mod authority;
mod cluster;
#[cfg(not(madsim))]
mod gateway;
#[cfg(not(madsim))]
mod http;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::future::Future;
use std::net::SocketAddr;

use crate::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::server::Server;

/// The Cluster service as served on the peer port, where a member started with
/// `--initial-cluster-state existing` asks the running members who it is.
#[cfg(not(madsim))]
pub fn peer_cluster_service(
    server: Server,
    dialer: crate::tls::dial::Dialer,
) -> ClusterServer<cluster::ClusterService> {
    ClusterServer::new(cluster::ClusterService::new(server, dialer))
}

/// Largest gRPC message the client API sends (etcd's default client-side receive limit).
pub const GRPC_SEND_BYTES_MAX: usize = usize::MAX >> 1;

/// The client API's gRPC services, each with the server's message size limits, and the one
/// Maintenance service gRPC and the JSON gateway share (so they share the snapshot limit). A
/// macro, as the service types differ between tonic and madsim's tonic.
macro_rules! services {
    ($server:expr, $dialer:expr) => {{
        let server: &Server = $server;
        let recv_max = server.config().max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES;
        let kv = KvServer::new(kv::KvService::new(server.clone()))
            .max_decoding_message_size(recv_max)
            .max_encoding_message_size(GRPC_SEND_BYTES_MAX);
        let maintenance_service =
            std::sync::Arc::new(maintenance::MaintenanceService::new(server.clone()));
        let maintenance = MaintenanceServer::from_arc(maintenance_service.clone())
            .max_decoding_message_size(recv_max);
        let dialer: crate::tls::dial::Dialer = $dialer;
        let cluster =
            ClusterServer::new(cluster::ClusterService::new(server.clone(), dialer.clone()))
                .max_decoding_message_size(recv_max);
        let lease = LeaseServer::new(lease::LeaseService::new(server.clone(), dialer))
            .max_decoding_message_size(recv_max);
        let watch = WatchServer::new(watch::WatchService::new(server.clone()))
            .max_decoding_message_size(recv_max)
            .max_encoding_message_size(GRPC_SEND_BYTES_MAX);
        (kv, maintenance, cluster, lease, watch, maintenance_service)
    }};
}

/// Serves the client API in plaintext on `addr` until `shutdown` resolves.
pub async fn serve(
    server: Server,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    #[cfg(not(madsim))]
    {
        let acceptor =
            crate::tls::accept::Acceptor::bind(addr, crate::tls::accept::Serves::plain())
                .await
                .map_err(ApiError::Bind)?;
        serve_on(
            server,
            acceptor,
            crate::tls::dial::Dialer::plain(),
            shutdown,
        )
        .await
    }
    #[cfg(madsim)]
    {
        let (kv, maintenance, cluster, lease, watch, _) =
            services!(&server, crate::tls::dial::Dialer::plain());
        tonic::transport::Server::builder()
            .add_service(kv)
            .add_service(maintenance)
            .add_service(cluster)
            .add_service(lease)
            .add_service(watch)
            .serve_with_shutdown(addr, shutdown)
            .await
            .map_err(|e| ApiError::Serve(std::io::Error::other(e.to_string())))
    }
}

/// Serves the client API on the connections `acceptor` yields (plain, TLS or both) until
/// `shutdown` resolves; calls forwarded to the leader's client URL are dialled with `dialer`.
#[cfg(not(madsim))]
pub async fn serve_on(
    server: Server,
    acceptor: crate::tls::accept::Acceptor,
    dialer: crate::tls::dial::Dialer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let (kv, maintenance, cluster, lease, watch, maintenance_service) =
        services!(&server, dialer.clone());
    // One port for gRPC and plain HTTP (/health, /metrics, /version), as etcd serves them:
    // tonic's routes become an axum router that also answers the HTTP paths.
    let routes = tonic::service::Routes::new(kv)
        .add_service(maintenance)
        .add_service(cluster)
        .add_service(lease)
        .add_service(watch);
    // etcd's HTTP/JSON gateway (`POST /v3/kv/range`, ...) on the same port.
    let router = http::routes(server.clone(), routes.into_axum_router()).merge(gateway::routes(
        server.clone(),
        maintenance_service,
        dialer,
    ));
    // Each connection behind the `:authority` fix that Go clients need (see authority.rs).
    axum::serve(authority::Listener(acceptor), router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ApiError::Serve)
}

/// Serves only the plain-HTTP endpoints (`/health`, `/metrics`, `/version`) on the connections
/// `acceptor` yields: etcd's `--listen-metrics-urls`, which monitoring scrapes and liveness
/// probes use so that they need neither the client port nor (over `http://`) its credentials.
#[cfg(not(madsim))]
pub async fn serve_metrics(
    server: Server,
    acceptor: crate::tls::accept::Acceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let router = http::routes(server, axum::Router::new());
    axum::serve(authority::Listener(acceptor), router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ApiError::Serve)
}

/// Why the client API stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bind: {0}")]
    Bind(std::io::Error),
    #[error("serve: {0}")]
    Serve(std::io::Error),
}
