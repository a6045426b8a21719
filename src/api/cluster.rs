//! The Cluster service: membership as clients see it and change it. Every change is a raft conf
//! change (see [`crate::server::membership`]); answers carry the member list after the change.

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::server::error::RequestError;
use crate::server::membership;
use crate::server::Server;
use crate::tls::dial::Dialer;

pub struct ClusterService {
    server: Server,
    /// Dials the leader's client URL for forwarded member changes.
    dialer: Dialer,
}

impl ClusterService {
    pub fn new(server: Server, dialer: Dialer) -> Self {
        ClusterService { server, dialer }
    }

    /// A client of the leader's Cluster service when this member is not the leader.
    async fn leader(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        let Some(url) = self.server.leader_client_url()? else {
            return Ok(None);
        };
        let client = self
            .dialer
            .connect(&url)
            .await
            .map(ClusterClient::new)
            .map_err(|_| Status::from(RequestError::NoLeader))?;
        Ok(Some(client))
    }

    /// etcd's Cluster responses carry no revision in their header.
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.server.header(0))
    }
}

fn to_wire(m: membership::Member) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

fn all_to_wire(members: Vec<membership::Member>) -> Vec<Member> {
    members.into_iter().map(to_wire).collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = request.into_inner();
        if let Some(mut leader) = self.leader().await? {
            return leader.member_add(req).await;
        }
        let (member, members) = self
            .server
            .member_add(req.peer_ur_ls, req.is_learner)
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(to_wire(member)),
            members: all_to_wire(members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        if let Some(mut leader) = self.leader().await? {
            return leader.member_remove(request.into_inner()).await;
        }
        let members = self.server.member_remove(request.into_inner().id).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: all_to_wire(members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = request.into_inner();
        if let Some(mut leader) = self.leader().await? {
            return leader.member_update(req).await;
        }
        let members = self.server.member_update(req.id, req.peer_ur_ls).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: all_to_wire(members),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // Like etcd 3.5's `linearizable` flag: the list reflects every change committed before
        // the request, not only what this member has applied.
        if request.into_inner().linearizable {
            self.server.read_index().await?;
        }
        let members = self.server.members()?;
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: all_to_wire(members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        if let Some(mut leader) = self.leader().await? {
            return leader.member_promote(request.into_inner()).await;
        }
        let members = self.server.member_promote(request.into_inner().id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: all_to_wire(members),
        }))
    }
}
