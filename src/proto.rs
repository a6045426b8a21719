//! Generated wire types and gRPC stubs, compiled by `build.rs` from the `.proto` files in `proto/`.
//!
//! The etcd packages keep etcd's names and field numbers so etcd clients work unchanged;
//! `cairnpb` holds cairn's own formats (raft log entries, peer messages).

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

pub mod gojson;

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
