//! The [`Store`] a manager shares: consistent views, watches of applied changes (the
//! [`Event`]s of each [`Change`]), and the entry points raft applies committed entries through.

use std::sync::Arc;

use orch_api::pb::{
    Cluster, DataObject, Network, Node, RaftMember, Service, StoreSnapshot, StoreTransaction, Task,
};
use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

use super::apply::{self, ApplyError};
use super::Tables;

/// An object of any table.
#[derive(Debug, Clone)]
pub enum Object {
    Cluster(Arc<Cluster>),
    Node(Arc<Node>),
    Service(Arc<Service>),
    Task(Arc<Task>),
    Data(Arc<DataObject>),
    Network(Arc<Network>),
}

#[derive(Debug, Clone)]
pub enum Event {
    Created(Object),
    Updated { old: Object, new: Object },
    Deleted(Object),
}

impl Event {
    /// The object as it is after the event (the deleted object for deletions).
    pub fn object(&self) -> &Object {
        match self {
            Event::Created(o) | Event::Deleted(o) => o,
            Event::Updated { new, .. } => new,
        }
    }
}

/// One applied transaction's events.
#[derive(Debug)]
pub struct Change {
    pub index: u64,
    pub events: Vec<Event>,
}

/// The store of one manager.
pub struct Store {
    tables: RwLock<Tables>,
    events: broadcast::Sender<Arc<Change>>,
    applied: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        let (applied, _) = watch::channel(0);
        Store {
            tables: RwLock::new(Tables::default()),
            events,
            applied,
        }
    }

    /// A consistent view of every table (O(1)).
    pub fn view(&self) -> Tables {
        self.tables.read().clone()
    }

    /// A view and a subscription that starts exactly after it.
    pub fn view_and_watch(&self) -> (Tables, broadcast::Receiver<Arc<Change>>) {
        let tables = self.tables.read();
        (tables.clone(), self.events.subscribe())
    }

    pub fn index(&self) -> u64 {
        self.tables.read().index
    }

    /// Waits until the store has applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    /// Applies a committed transaction at raft `index`. A rejected transaction changes nothing
    /// (but the index still advances).
    pub fn apply(&self, index: u64, txn: &StoreTransaction) -> Result<(), ApplyError> {
        let mut tables = self.tables.write();
        let mut next = tables.clone();
        let mut events = Vec::new();
        let result = apply::apply_txn(&mut next, index, txn, &mut events);
        match result {
            Ok(()) => {
                next.index = index;
                *tables = next;
            }
            Err(_) => {
                tables.index = index;
                events.clear();
            }
        }
        self.publish(&mut tables, index, events);
        result
    }

    /// Records a raft membership change on the member's node object (its manager status).
    pub fn apply_member_change(
        &self,
        index: u64,
        member: &RaftMember,
        added: bool,
        timestamp: i64,
    ) {
        let mut tables = self.tables.write();
        let mut events = Vec::new();
        apply::apply_member_change(&mut tables, index, member, added, timestamp, &mut events);
        tables.index = index;
        self.publish(&mut tables, index, events);
    }

    /// Notes that raft applied `index` without a store change (empty or conf entries).
    pub fn advance(&self, index: u64) {
        let mut tables = self.tables.write();
        if index > tables.index {
            tables.index = index;
            self.publish(&mut tables, index, Vec::new());
        }
    }

    /// Replaces everything with a snapshot's contents at raft `index`. Watchers see a change
    /// with no events and must re-read (they cannot tell what changed).
    pub fn restore(&self, index: u64, snapshot: StoreSnapshot) {
        let mut tables = self.tables.write();
        *tables = Tables::from_snapshot(index, snapshot);
        self.publish(&mut tables, index, Vec::new());
        let _ = self.events.send(Arc::new(Change {
            index,
            events: vec![],
        }));
    }

    fn publish(&self, tables: &mut Tables, index: u64, events: Vec<Event>) {
        if !events.is_empty() {
            let _ = self.events.send(Arc::new(Change { index, events }));
        }
        let _ = tables;
        self.applied.send_replace(index);
    }
}
