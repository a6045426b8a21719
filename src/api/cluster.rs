//! The Cluster service: membership as clients see it.

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{Member, MemberListRequest, MemberListResponse};
use crate::server::Server;

pub struct ClusterService {
    server: Server,
}

impl ClusterService {
    pub fn new(server: Server) -> Self {
        ClusterService { server }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self
            .server
            .members()?
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: m.peer_urls,
                client_ur_ls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        // etcd's Cluster responses carry no revision in their header.
        let header = self.server.header(0);
        Ok(Response::new(MemberListResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_add(
        &self,
        _request: Request<crate::proto::etcdserverpb::MemberAddRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MemberAddResponse>, Status> {
        Err(Status::unimplemented("member_add is not implemented yet"))
    }

    async fn member_remove(
        &self,
        _request: Request<crate::proto::etcdserverpb::MemberRemoveRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MemberRemoveResponse>, Status> {
        Err(Status::unimplemented(
            "member_remove is not implemented yet",
        ))
    }

    async fn member_update(
        &self,
        _request: Request<crate::proto::etcdserverpb::MemberUpdateRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "member_update is not implemented yet",
        ))
    }

    async fn member_promote(
        &self,
        _request: Request<crate::proto::etcdserverpb::MemberPromoteRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MemberPromoteResponse>, Status> {
        Err(Status::unimplemented(
            "member_promote is not implemented yet",
        ))
    }
}
