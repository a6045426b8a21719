//! The Lease service: grant and revoke go through raft; keep-alive and time-to-live are answered
//! by the leader's lessor (see [`crate::lease`]), which alone tracks deadlines. A member that is
//! not the leader forwards them to the leader's Lease service, as etcd does, and answers with its
//! own header: clients may hold their keep-alive stream on any member.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::server::error::RequestError;
use crate::server::Server;
use crate::tls::dial::Dialer;

/// Keep-alive answers buffered per stream before the stream stops reading requests.
pub const KEEPALIVE_RESPONSES_MAX: usize = 64;
/// Keep-alives a forwarding stream to the leader holds before the next one waits.
const FORWARDED_KEEPALIVES_MAX: usize = 1;

/// A keep-alive stream to the leader's Lease service, held for one client stream on a member
/// that is not the leader.
pub(super) struct Forward {
    url: String,
    requests: tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// What a failed forward tells the client: the leader's own answer, or "no leader" when it could
/// not be reached.
fn unreachable_leader<E>(_: E) -> Status {
    Status::from(RequestError::NoLeader)
}

impl Forward {
    async fn open(
        dialer: &Dialer,
        url: String,
        timeout: std::time::Duration,
    ) -> Result<Forward, Status> {
        let connect = dialer.connect(&url);
        let mut client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(unreachable_leader)?
            .map(LeaseClient::new)
            .map_err(unreachable_leader)?;
        let (requests, rx) = tokio::sync::mpsc::channel(FORWARDED_KEEPALIVES_MAX);
        let call = client.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx));
        let responses = tokio::time::timeout(timeout, call)
            .await
            .map_err(unreachable_leader)??
            .into_inner();
        Ok(Forward {
            url,
            requests,
            responses,
        })
    }

    /// The TTL the leader renewed `id` to (0 for a lease it does not know).
    async fn renew(&mut self, id: i64, timeout: std::time::Duration) -> Result<i64, Status> {
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(unreachable_leader)?;
        match tokio::time::timeout(timeout, self.responses.message()).await {
            Ok(Ok(Some(resp))) => Ok(resp.ttl),
            Ok(Ok(None)) | Err(_) => Err(Status::from(RequestError::NoLeader)),
            Ok(Err(status)) => Err(status),
        }
    }
}

/// One keep-alive, on the leader's lessor: here, or through `forward` (opened, or reopened when
/// the leader changed or the stream broke). The gRPC stream and the gateway's both renew here.
pub(super) async fn keep_alive(
    server: &Server,
    dialer: &Dialer,
    forward: &mut Option<Forward>,
    id: i64,
) -> Result<LeaseKeepAliveResponse, Status> {
    let Some(url) = server.leader_client_url()? else {
        *forward = None;
        return Ok(server.lease_keep_alive(id)?);
    };
    let timeout = server.config().request_timeout();
    if forward.as_ref().is_none_or(|f| f.url != url) {
        *forward = Some(Forward::open(dialer, url, timeout).await?);
    }
    let f = forward.as_mut().expect("opened above");
    match f.renew(id, timeout).await {
        Ok(ttl) => Ok(server.lease_keep_alive_answer(id, ttl)),
        Err(status) => {
            *forward = None;
            Err(status)
        }
    }
}

pub struct LeaseService {
    server: Server,
    /// Dials the leader's client URL for forwarded calls.
    dialer: Dialer,
}

impl LeaseService {
    pub fn new(server: Server, dialer: Dialer) -> Self {
        LeaseService { server, dialer }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            self.server.lease_grant(request.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            self.server.lease_revoke(request.into_inner()).await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (server, dialer) = (self.server.clone(), self.dialer.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_RESPONSES_MAX);
        tokio::spawn(async move {
            let mut forward = None;
            loop {
                let req = match requests.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let answer = keep_alive(&server, &dialer, &mut forward, req.id).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let Some(url) = self.server.leader_client_url()? else {
            return Ok(Response::new(self.server.lease_time_to_live(&req)));
        };
        let timeout = self.server.config().request_timeout();
        let ask = async {
            let mut leader = self
                .dialer
                .connect(&url)
                .await
                .map(LeaseClient::new)
                .map_err(unreachable_leader)?;
            leader.lease_time_to_live(req).await
        };
        let mut resp = tokio::time::timeout(timeout, ask)
            .await
            .map_err(unreachable_leader)??
            .into_inner();
        resp.header = Some(self.server.header(self.server.store().current_revision()));
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(self.server.lease_leases()))
    }
}
