//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::Server;

pub struct KvService {
    server: Server,
}

impl KvService {
    pub fn new(server: Server) -> Self {
        KvService { server }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(
            self.server.range(request.into_inner()).await?,
        ))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.server.put(request.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.server.delete_range(request.into_inner()).await?,
        ))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(self.server.txn(request.into_inner()).await?))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(
            self.server.compact(request.into_inner()).await?,
        ))
    }

    type RangeStreamStream = std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<crate::proto::etcdserverpb::RangeStreamResponse, Status>,
                > + Send
                + 'static,
        >,
    >;

    async fn range_stream(
        &self,
        _request: Request<crate::proto::etcdserverpb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("range_stream is not implemented yet"))
    }
}
