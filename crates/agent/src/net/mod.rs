//! The node's side of overlay networks (the data plane): `plane` drives it, `overlay` makes one
//! network's sandbox, `dns` answers names, `pause` makes the sandbox container's image.

pub mod dns;
pub mod overlay;
pub mod pause;
pub mod plane;
