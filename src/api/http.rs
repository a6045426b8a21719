//! Plain-HTTP endpoints on the client port, as etcd serves them: `GET /health` (JSON
//! `{"health":"true"}` only with a leader and a linearizable read completing in time), `GET
//! /metrics` (Prometheus text under etcd's metric names) and `GET /version`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::server::{Server, ETCD_API_VERSION};

/// How long `/health` waits for its linearizable read (etcd waits about one second).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

pub fn routes(server: Server, grpc: Router) -> Router {
    let health_server = server.clone();
    let metrics_server = server;
    grpc.route(
        "/health",
        get(move || {
            let server = health_server.clone();
            async move {
                match server.health(HEALTH_TIMEOUT).await {
                    // etcd 3.4's body, byte for byte; the reason goes to the log only.
                    Ok(()) => (StatusCode::OK, json(r#"{"health":"true"}"#)),
                    Err(reason) => {
                        tracing::warn!(%reason, "serving /health false");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            json(r#"{"health":"false"}"#),
                        )
                    }
                }
            }
        }),
    )
    .route(
        "/metrics",
        get(move || {
            let server = metrics_server.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    server.render_metrics(),
                )
            }
        }),
    )
    .route(
        "/version",
        get(|| async {
            json(&format!(
                r#"{{"etcdserver":"{ETCD_API_VERSION}","etcdcluster":"3.4.0"}}"#
            ))
        }),
    )
}

fn json(body: &str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
