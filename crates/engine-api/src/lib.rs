//! The Docker Engine API on an orch node.
//!
//! Every node serves it on `DATA_DIR/docker.sock` (and, when asked, on a TCP address that
//! requires a manager's certificate). It is a translation of the Engine API's swarm routes onto
//! orch's control API, reached through the node's own control socket: there is no second
//! source of truth, and a worker answers the swarm routes with docker's "not a swarm manager"
//! error. The node's local engine answers the read-only container, image and volume routes.

pub mod backend;
pub mod convert;
pub mod error;
pub mod events;
pub mod query;
pub mod read;
mod routes;
pub mod server;
pub mod version;

pub use backend::{Backend, Options};
pub use server::{serve_tls, serve_unix};
