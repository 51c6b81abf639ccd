//! The node's side of overlay networks (the data plane): see `overlay`.

pub mod dns;
pub mod overlay;
