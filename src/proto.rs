//! Generated wire types and gRPC stubs, compiled by `build.rs` from the `.proto` files in `proto/`.
//!
//! The etcd packages keep etcd's names and field numbers so etcd clients work unchanged;
//! `cairnpb` holds cairn's own formats (raft log entries, peer messages).

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

pub mod cairnpb {
    include!(concat!(env!("OUT_DIR"), "/cairnpb.rs"));
}
