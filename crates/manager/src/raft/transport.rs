//! Raft messages between managers: each peer gets a task with a queue and one long-lived
//! client stream over mTLS; queued messages go out in batches. A broken stream is reported to
//! raft as unreachable and reconnected with backoff; raft retransmits what was lost.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use orch_api::pb::raft_client::RaftClient;
use orch_api::pb::{RaftBatch, RaftMember};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::node::{RaftHandle, Transport};

const PEER_QUEUE: usize = 8192;
const MAX_BATCH: usize = 512;
/// Raft snapshots carry the whole store.
pub const MAX_RAFT_MESSAGE: usize = 1 << 30;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    cancel: CancellationToken,
}

pub struct GrpcTransport {
    self_id: u64,
    tls: Arc<ClientConfig>,
    peers: Mutex<HashMap<u64, Peer>>,
    raft: Arc<OnceLock<RaftHandle>>,
    shutdown: CancellationToken,
}

impl GrpcTransport {
    pub fn new(self_id: u64, tls: Arc<ClientConfig>, shutdown: CancellationToken) -> Self {
        GrpcTransport {
            self_id,
            tls,
            peers: Mutex::new(HashMap::new()),
            raft: Arc::new(OnceLock::new()),
            shutdown,
        }
    }

    /// Connects the transport to the node it reports to (set once the node has started).
    pub fn attach(&self, raft: RaftHandle) {
        let _ = self.raft.set(raft);
    }

    fn report_unreachable(&self, id: u64) {
        if let Some(raft) = self.raft.get() {
            raft.report_unreachable(id);
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let peers = self.peers.lock();
        for m in messages {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let sent = peers.get(&to).is_some_and(|p| p.tx.try_send(m).is_ok());
            if !sent {
                self.report_unreachable(to);
                if snapshot {
                    if let Some(raft) = self.raft.get() {
                        raft.report_snapshot(to, SnapshotStatus::Failure);
                    }
                }
            }
        }
    }

    fn set_peer(&self, member: &RaftMember) {
        if member.raft_id == self.self_id || member.addr.is_empty() {
            return;
        }
        let mut peers = self.peers.lock();
        if peers
            .get(&member.raft_id)
            .is_some_and(|p| p.addr == member.addr)
        {
            return;
        }
        if let Some(old) = peers.remove(&member.raft_id) {
            old.cancel.cancel();
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let cancel = self.shutdown.child_token();
        let span = tracing::info_span!("raft_peer", peer = member.raft_id, addr = %member.addr);
        tokio::spawn(
            peer_loop(
                self.self_id,
                member.raft_id,
                member.addr.clone(),
                self.tls.clone(),
                rx,
                self.raft.clone(),
                cancel.clone(),
            )
            .instrument(span),
        );
        peers.insert(
            member.raft_id,
            Peer {
                addr: member.addr.clone(),
                tx,
                cancel,
            },
        );
    }

    fn remove_peer(&self, raft_id: u64) {
        if let Some(peer) = self.peers.lock().remove(&raft_id) {
            peer.cancel.cancel();
        }
    }
}

async fn peer_loop(
    self_id: u64,
    peer_id: u64,
    addr: String,
    tls: Arc<ClientConfig>,
    mut rx: mpsc::Receiver<Message>,
    raft: Arc<OnceLock<RaftHandle>>,
    cancel: CancellationToken,
) {
    let report = |snapshot_failed: bool| {
        if let Some(raft) = raft.get() {
            raft.report_unreachable(peer_id);
            if snapshot_failed {
                raft.report_snapshot(peer_id, SnapshotStatus::Failure);
            }
        }
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let channel = match orch_api::transport::tls_channel(&addr, tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "bad peer address");
                return;
            }
        };
        let mut client = RaftClient::new(channel)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
            .max_decoding_message_size(MAX_RAFT_MESSAGE);
        let (batch_tx, batch_rx) = mpsc::channel::<RaftBatch>(16);
        let mut call =
            tokio::spawn(async move { client.stream(ReceiverStream::new(batch_rx)).await });
        let mut sent_any = false;
        let broken = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    call.abort();
                    return;
                }
                result = &mut call => {
                    match result {
                        Ok(Err(status)) => debug!(code = ?status.code(), message = status.message(), "raft stream ended"),
                        Ok(Ok(_)) => debug!("raft stream closed by peer"),
                        Err(e) => debug!(error = %e, "raft stream task failed"),
                    }
                    break true;
                }
                first = rx.recv() => {
                    let Some(first) = first else { return };
                    let mut messages = vec![first];
                    while messages.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(m) => messages.push(m),
                            Err(_) => break,
                        }
                    }
                    let has_snapshot = messages.iter().any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
                    let encoded: Vec<Vec<u8>> = messages.iter().filter_map(|m| m.write_to_bytes().ok()).collect();
                    if batch_tx.send(RaftBatch { from: self_id, messages: encoded }).await.is_err() {
                        report(has_snapshot);
                        break true;
                    }
                    if has_snapshot {
                        if let Some(raft) = raft.get() {
                            raft.report_snapshot(peer_id, SnapshotStatus::Finish);
                        }
                    }
                    sent_any = true;
                }
            }
        };
        if broken {
            report(false);
            if sent_any {
                backoff = Duration::from_millis(50);
            }
            // Drop what queued while the peer was away: raft resends what still matters.
            while rx.try_recv().is_ok() {}
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Decodes a batch received from a peer.
pub fn decode_batch(batch: &RaftBatch) -> Vec<Message> {
    batch
        .messages
        .iter()
        .filter_map(|bytes| Message::parse_from_bytes(bytes).ok())
        .collect()
}
