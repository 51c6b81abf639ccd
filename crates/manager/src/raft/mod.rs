//! Raft: the node (RawNode driver), its redb log, the gRPC transport and service, membership.

pub mod disk;
pub mod log;
pub mod membership;
pub mod node;
pub mod service;
pub mod storage;
pub mod transport;
