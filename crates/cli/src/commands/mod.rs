//! One module per command group.

pub mod cluster;
pub mod data;
pub mod lab;
pub mod network;
pub mod node;
pub mod service;
pub mod spec_flags;
