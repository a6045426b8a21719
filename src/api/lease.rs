//! The Lease service: grant and revoke go through raft; keep-alive and time-to-live are answered
//! by the leader's lessor (see [`crate::lease`]).

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::server::Server;

/// Keep-alive answers buffered per stream before the stream stops reading requests.
pub const KEEPALIVE_RESPONSES_MAX: usize = 64;

pub struct LeaseService {
    server: Server,
}

impl LeaseService {
    pub fn new(server: Server) -> Self {
        LeaseService { server }
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
        let server = self.server.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_RESPONSES_MAX);
        tokio::spawn(async move {
            loop {
                let req = match requests.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let answer = server.lease_keep_alive(req.id).map_err(Status::from);
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
        Ok(Response::new(
            self.server.lease_time_to_live(&request.into_inner()),
        ))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(self.server.lease_leases()))
    }
}
