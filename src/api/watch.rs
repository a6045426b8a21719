//! The Watch service: one bidirectional stream per call, served by
//! [`crate::server::watches`] (history replay, live feed, resynchronisation and etcd's response
//! rules are explained there). This layer only adapts tonic's streams to it.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::Server;

pub struct WatchService {
    server: Server,
}

impl WatchService {
    pub fn new(server: Server) -> Self {
        WatchService { server }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let requests = Box::pin(request.into_inner());
        let responses = crate::server::watches::open(&self.server, requests);
        // The stream ends when the server side does (the node stopped); dropping it (the client
        // went away) stops the stream's task.
        let stream = futures::stream::unfold(responses, |mut responses| async move {
            responses.recv().await.map(|r| (Ok(r), responses))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
