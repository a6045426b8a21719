//! The Maintenance service: Status (clients call it first to pick an endpoint).

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{StatusRequest, StatusResponse};
use crate::server::Server;

pub struct MaintenanceService {
    server: Server,
}

impl MaintenanceService {
    pub fn new(server: Server) -> Self {
        MaintenanceService { server }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.server.status()))
    }

    async fn alarm(
        &self,
        request: Request<crate::proto::etcdserverpb::AlarmRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::AlarmResponse>, Status> {
        use crate::proto::etcdserverpb::alarm_request::AlarmAction;
        // cairn raises no alarms yet (no space quota alarm, no corruption alarm), so the list is
        // always empty. Like etcd, the answer carries no header.
        let req = request.into_inner();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {
                Ok(Response::new(crate::proto::etcdserverpb::AlarmResponse {
                    header: None,
                    alarms: Vec::new(),
                }))
            }
            _ => Err(Status::unimplemented(
                "raising alarms by request is not supported",
            )),
        }
    }

    async fn defragment(
        &self,
        _request: Request<crate::proto::etcdserverpb::DefragmentRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::DefragmentResponse>, Status> {
        Err(Status::unimplemented("defragment is not implemented yet"))
    }

    async fn hash(
        &self,
        _request: Request<crate::proto::etcdserverpb::HashRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::HashResponse>, Status> {
        Err(Status::unimplemented("hash is not implemented yet"))
    }

    async fn hash_kv(
        &self,
        request: Request<crate::proto::etcdserverpb::HashKvRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::HashKvResponse>, Status> {
        Ok(Response::new(
            self.server.hash_kv(request.into_inner().revision)?,
        ))
    }

    async fn move_leader(
        &self,
        request: Request<crate::proto::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MoveLeaderResponse>, Status> {
        self.server
            .move_leader(request.into_inner().target_id)
            .await?;
        let header = Some(self.server.header(self.server.store().current_revision()));
        Ok(Response::new(
            crate::proto::etcdserverpb::MoveLeaderResponse { header },
        ))
    }

    async fn downgrade(
        &self,
        _request: Request<crate::proto::etcdserverpb::DowngradeRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not implemented yet"))
    }

    type SnapshotStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<crate::proto::etcdserverpb::SnapshotResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn snapshot(
        &self,
        _request: Request<crate::proto::etcdserverpb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("snapshot is not implemented yet"))
    }
}
