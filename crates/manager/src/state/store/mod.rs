//! The replicated store: tables of clusters, nodes, services and tasks, changed only by
//! applying committed raft entries, in log order, on every manager.
//!
//! Tables are persistent maps (imbl): a read view is an O(1) clone that never blocks the
//! applier, and components take one, decide, and propose a transaction. A transaction applies
//! all-or-nothing: an update carries the version it read, and a stale one fails the whole
//! transaction on every manager alike. Every applied transaction is broadcast as a [`Change`]:
//! the store is the bus components watch.
//!
//! By concept: [`tables`] holds the tables and their indexes (and snapshots), [`apply`]
//! applies a transaction to them, [`lookup`] answers read-side queries, and [`handle`] is the
//! [`Store`] a manager shares (views, watches, the apply entry points).

mod apply;
mod handle;
mod lookup;
mod tables;
#[cfg(test)]
mod tests;

pub use apply::ApplyError;
pub use handle::{Change, Event, Object, Store};
pub use lookup::{member_of, LookupError};
pub use tables::{
    data_name, host_ports, network_name, occupies_node, publishes_host_ports, reservation,
    NodeLoad, Tables,
};
