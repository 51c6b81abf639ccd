//! The raft log on disk: a redb database holding entries, the hard state, the conf state and
//! the latest snapshot. Every write is one redb transaction committed with fsync before the
//! raft messages that depend on it are sent.
//!
//! In memory we keep the terms of every retained entry (raft asks for them constantly) and a
//! byte-bounded cache of the newest entries (what followers usually need); older entries are
//! read back from disk.

use std::collections::VecDeque;
use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};
use redb::{Database, ReadableDatabase, TableDefinition};

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const KEY_FORMAT: &str = "format";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_CONF_STATE: &str = "conf_state";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";
const KEY_COMPACTED: &str = "compacted";
const FORMAT: &[u8] = b"orch-raft-1";

/// Entries kept in memory, in bytes.
const CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft database {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("raft database: {0}")]
    Db(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for LogError {
            fn from(e: $t) -> Self {
                LogError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    protobuf::ProtobufError
);

/// (index, term) of the last entry removed from the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Compacted {
    index: u64,
    term: u64,
}

impl Compacted {
    fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..].copy_from_slice(&self.term.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let index = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let term = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Compacted { index, term })
    }
}

pub struct LogStore {
    db: Database,
    path: String,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    compacted: Compacted,
    /// Terms of entries `compacted.index + 1 ..= last_index`.
    terms: VecDeque<u64>,
    /// The newest entries, contiguous, ending at the last index.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    /// A commit index raft advanced in memory that is not yet on disk.
    commit_dirty: bool,
    /// Raft asked for a snapshot the stored one cannot serve (it predates the peer joining).
    snapshot_wanted: std::cell::Cell<bool>,
}

fn corrupt(path: &str, message: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_string(),
        message: message.into(),
    }
}

impl LogStore {
    /// Creates a new log at `path`, which must not exist. With `snapshot`, the log starts from it
    /// (a new cluster's first state); without, it is empty and waits for a leader's snapshot.
    pub fn create(path: &Path, snapshot: Option<&Snapshot>) -> Result<Self, LogError> {
        if path.exists() {
            return Err(LogError::Db(format!("{} already exists", path.display())));
        }
        let db = Database::builder().create(path)?;
        set_private(path);
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_FORMAT, FORMAT)?;
            let _ = txn.open_table(ENTRIES)?;
            if let Some(snap) = snapshot {
                let m = snap.get_metadata();
                let hs = HardState {
                    term: m.term,
                    commit: m.index,
                    ..Default::default()
                };
                meta.insert(KEY_HARD_STATE, hs.write_to_bytes()?.as_slice())?;
                meta.insert(
                    KEY_CONF_STATE,
                    m.get_conf_state().write_to_bytes()?.as_slice(),
                )?;
                meta.insert(KEY_SNAPSHOT_META, m.write_to_bytes()?.as_slice())?;
                meta.insert(KEY_SNAPSHOT_DATA, snap.get_data())?;
                meta.insert(
                    KEY_COMPACTED,
                    Compacted {
                        index: m.index,
                        term: m.term,
                    }
                    .encode()
                    .as_slice(),
                )?;
            }
        }
        txn.commit()?;
        drop(db);
        Self::open(path)
    }

    /// Opens an existing log and checks it: a log that does not read back whole is refused,
    /// never repaired by dropping data.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let display = path.display().to_string();
        if !path.exists() {
            return Err(corrupt(&display, "does not exist"));
        }
        let db = Database::builder().open(path).map_err(|e| {
            corrupt(
                &display,
                format!("cannot be opened ({e}); refusing to start, the file is left as it is"),
            )
        })?;
        let mut store = LogStore {
            db,
            path: display.clone(),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot_meta: SnapshotMetadata::default(),
            compacted: Compacted::default(),
            terms: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            commit_dirty: false,
            snapshot_wanted: std::cell::Cell::new(false),
        };
        store.load().map_err(|e| match e {
            LogError::Db(m) => corrupt(
                &display,
                format!("{m}; refusing to start, the file is left as it is"),
            ),
            other => other,
        })?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), LogError> {
        let path = self.path.clone();
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(KEY_FORMAT)? {
            Some(v) if v.value() == FORMAT => {}
            _ => {
                return Err(corrupt(
                    &path,
                    "is not an orch raft log (format marker missing)",
                ))
            }
        }
        if let Some(v) = meta.get(KEY_HARD_STATE)? {
            self.hard_state = HardState::parse_from_bytes(v.value())
                .map_err(|e| corrupt(&path, format!("hard state: {e}")))?;
        }
        if let Some(v) = meta.get(KEY_CONF_STATE)? {
            self.conf_state = ConfState::parse_from_bytes(v.value())
                .map_err(|e| corrupt(&path, format!("conf state: {e}")))?;
        }
        if let Some(v) = meta.get(KEY_SNAPSHOT_META)? {
            self.snapshot_meta = SnapshotMetadata::parse_from_bytes(v.value())
                .map_err(|e| corrupt(&path, format!("snapshot metadata: {e}")))?;
        }
        if let Some(v) = meta.get(KEY_COMPACTED)? {
            self.compacted =
                Compacted::decode(v.value()).ok_or_else(|| corrupt(&path, "compaction marker"))?;
        }
        let entries = txn.open_table(ENTRIES)?;
        let first = self.compacted.index + 1;
        let mut last_term = self.compacted.term;
        for (expect, item) in (first..).zip(entries.range(first..)?) {
            let (k, v) = item?;
            let entry = Entry::parse_from_bytes(v.value())
                .map_err(|e| corrupt(&path, format!("entry {}: {e}", k.value())))?;
            if k.value() != expect || entry.index != expect {
                return Err(corrupt(
                    &path,
                    format!("log gap: expected entry {expect}, found {}", k.value()),
                ));
            }
            if entry.term < last_term {
                return Err(corrupt(
                    &path,
                    format!("entry {expect} has term {} below {last_term}", entry.term),
                ));
            }
            last_term = entry.term;
            self.terms.push_back(entry.term);
            self.cache_push(entry);
        }
        if self.snapshot_meta.index < self.compacted.index {
            return Err(corrupt(&path, "snapshot is older than the compacted log"));
        }
        let last = self.last();
        if self.hard_state.commit > last {
            return Err(corrupt(
                &path,
                format!(
                    "commit index {} is beyond the last entry {last}: entries are missing",
                    self.hard_state.commit
                ),
            ));
        }
        Ok(())
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cache_bytes += entry.data.len() + entry.context.len() + 32;
        self.cache.push_back(entry);
        while self.cache_bytes > CACHE_BYTES && self.cache.len() > 1 {
            if let Some(old) = self.cache.pop_front() {
                self.cache_bytes -= old.data.len() + old.context.len() + 32;
            }
        }
    }

    fn first(&self) -> u64 {
        self.compacted.index + 1
    }

    fn last(&self) -> u64 {
        self.compacted.index + self.terms.len() as u64
    }

    /// Where the log lives on disk.
    pub fn path(&self) -> &Path {
        Path::new(&self.path)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Whether raft needs a fresher snapshot than the stored one (cleared by reading it).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.index
    }

    /// The stored snapshot's data (the encoded store), if any.
    pub fn snapshot_data(&self) -> Result<Option<Vec<u8>>, LogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(KEY_SNAPSHOT_DATA)?.map(|v| v.value().to_vec()))
    }

    /// Persists new entries (replacing any conflicting suffix) and the hard state, with fsync.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), LogError> {
        if entries.is_empty() && hard_state.is_none() && !self.commit_dirty {
            return Ok(());
        }
        if let Some(first) = entries.first() {
            if first.index < self.first() || first.index > self.last() + 1 {
                return Err(LogError::Db(format!(
                    "append at {} outside the log {}..={}",
                    first.index,
                    self.first(),
                    self.last()
                )));
            }
        }
        let mut hs = self.hard_state.clone();
        if let Some(new) = hard_state {
            hs = new.clone();
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            if let Some(first) = entries.first() {
                if first.index <= self.last() {
                    table.retain_in(first.index.., |_, _| false)?;
                }
                for entry in entries {
                    table.insert(entry.index, entry.write_to_bytes()?.as_slice())?;
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_HARD_STATE, hs.write_to_bytes()?.as_slice())?;
        }
        txn.commit()?;
        self.hard_state = hs;
        self.commit_dirty = false;
        if let Some(first) = entries.first() {
            let keep = (first.index - self.first()) as usize;
            self.terms.truncate(keep);
            while self.cache.back().is_some_and(|e| e.index >= first.index) {
                if let Some(old) = self.cache.pop_back() {
                    self.cache_bytes -= old.data.len() + old.context.len() + 32;
                }
            }
            if self
                .cache
                .back()
                .is_some_and(|e| e.index + 1 != first.index)
            {
                self.cache.clear();
                self.cache_bytes = 0;
            }
            for entry in entries {
                self.terms.push_back(entry.term);
                self.cache_push(entry.clone());
            }
        }
        Ok(())
    }

    /// Records a commit index raft advanced without a new hard state; written with the next
    /// append (losing it in a crash only means re-learning it from the leader).
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_dirty = true;
        }
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), LogError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_CONF_STATE, conf_state.write_to_bytes()?.as_slice())?;
        }
        txn.commit()?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), LogError> {
        let m = snapshot.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(m.term);
        hs.commit = hs.commit.max(m.index);
        let compacted = Compacted {
            index: m.index,
            term: m.term,
        };
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            table.retain(|_, _| false)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_HARD_STATE, hs.write_to_bytes()?.as_slice())?;
            meta.insert(
                KEY_CONF_STATE,
                m.get_conf_state().write_to_bytes()?.as_slice(),
            )?;
            meta.insert(KEY_SNAPSHOT_META, m.write_to_bytes()?.as_slice())?;
            meta.insert(KEY_SNAPSHOT_DATA, snapshot.get_data())?;
            meta.insert(KEY_COMPACTED, compacted.encode().as_slice())?;
        }
        txn.commit()?;
        self.hard_state = hs;
        self.conf_state = m.get_conf_state().clone();
        self.snapshot_meta = m.clone();
        self.compacted = compacted;
        self.terms.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        Ok(())
    }

    /// Stores a snapshot of the applied state at `index` and drops entries before
    /// `compact_to` (entries from `compact_to` on stay for slow followers).
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: &[u8],
        compact_to: u64,
    ) -> Result<(), LogError> {
        if index <= self.snapshot_meta.index || index > self.last() {
            return Ok(());
        }
        let term = self
            .term_of(index)
            .ok_or_else(|| LogError::Db(format!("no term for snapshot index {index}")))?;
        let mut m = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        m.set_conf_state(conf_state);
        let compact_to = compact_to.min(index + 1).max(self.first());
        let new_compacted = if compact_to > self.first() {
            let idx = compact_to - 1;
            Some(Compacted {
                index: idx,
                term: self.term_of(idx).unwrap_or(0),
            })
        } else {
            None
        };
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_SNAPSHOT_META, m.write_to_bytes()?.as_slice())?;
            meta.insert(KEY_SNAPSHOT_DATA, data)?;
            if let Some(c) = new_compacted {
                meta.insert(KEY_COMPACTED, c.encode().as_slice())?;
                let mut table = txn.open_table(ENTRIES)?;
                table.retain_in(..compact_to, |_, _| false)?;
            }
        }
        txn.commit()?;
        self.snapshot_meta = m;
        if let Some(c) = new_compacted {
            let drop_n = (c.index - self.compacted.index) as usize;
            self.terms.drain(..drop_n.min(self.terms.len()));
            while self.cache.front().is_some_and(|e| e.index <= c.index) {
                if let Some(old) = self.cache.pop_front() {
                    self.cache_bytes -= old.data.len() + old.context.len() + 32;
                }
            }
            self.compacted = c;
        }
        Ok(())
    }

    fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.compacted.index {
            return Some(self.compacted.term);
        }
        if idx == self.snapshot_meta.index && idx != 0 {
            return Some(self.snapshot_meta.term);
        }
        if idx < self.first() || idx > self.last() {
            return None;
        }
        self.terms.get((idx - self.first()) as usize).copied()
    }

    fn read_entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, LogError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let mut out = Vec::with_capacity((high - low) as usize);
        for item in table.range(low..high)? {
            let (_, v) = item?;
            out.push(Entry::parse_from_bytes(v.value())?);
        }
        Ok(out)
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

fn storage_err(e: LogError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
}

fn limit_size(entries: &mut Vec<Entry>, max: Option<u64>) {
    let Some(max) = max else { return };
    if max == raft::NO_LIMIT || entries.len() <= 1 {
        return;
    }
    let mut size = 0u64;
    let keep = entries
        .iter()
        .take_while(|e| {
            let first = size == 0;
            size += u64::from(e.compute_size());
            first || size <= max
        })
        .count();
    entries.truncate(keep);
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let mut out = match self.cache.front() {
            Some(front) if front.index <= low => {
                let start = (low - front.index) as usize;
                let end = (high - front.index) as usize;
                self.cache.range(start..end).cloned().collect()
            }
            _ => self.read_entries(low, high).map_err(storage_err)?,
        };
        limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.compacted.index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(raft::StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let conf = self.snapshot_meta.get_conf_state();
        let includes_peer = conf.voters.contains(&to) || conf.learners.contains(&to);
        if self.snapshot_meta.index < request_index
            || self.snapshot_meta.index == 0
            || !includes_peer
        {
            // A peer can only install a snapshot whose configuration includes it.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self
            .snapshot_data()
            .map_err(storage_err)?
            .unwrap_or_default();
        let mut snap = Snapshot::default();
        snap.set_metadata(self.snapshot_meta.clone());
        snap.data = data.into();
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn bootstrap_snapshot() -> Snapshot {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 1;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().mut_conf_state().voters = vec![7];
        snap.data = b"state".to_vec().into();
        snap
    }

    #[test]
    fn append_persists_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let mut log = LogStore::create(&path, Some(&bootstrap_snapshot())).expect("create");
        assert_eq!((log.first(), log.last()), (2, 1));
        let hs = HardState {
            term: 2,
            vote: 7,
            commit: 3,
            ..Default::default()
        };
        log.append(&[entry(2, 2, b"a"), entry(3, 2, b"b")], Some(&hs))
            .expect("append");
        drop(log);
        let log = LogStore::open(&path).expect("reopen");
        assert_eq!(log.hard_state().commit, 3);
        assert_eq!(log.conf_state().voters, vec![7]);
        assert_eq!(log.term(1).expect("term"), 1);
        assert_eq!(log.term(3).expect("term"), 2);
        let got = log
            .entries(2, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(
            got.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(log.snapshot(1, 7).expect("snapshot").get_data(), b"state");
    }

    #[test]
    fn conflicting_suffix_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let mut log = LogStore::create(&path, Some(&bootstrap_snapshot())).expect("create");
        log.append(
            &[entry(2, 2, b"a"), entry(3, 2, b"b"), entry(4, 2, b"c")],
            None,
        )
        .expect("append");
        log.append(&[entry(3, 3, b"x")], None).expect("overwrite");
        assert_eq!(log.last(), 3);
        drop(log);
        let log = LogStore::open(&path).expect("reopen");
        assert_eq!(log.last(), 3);
        assert_eq!(log.term(3).expect("term"), 3);
    }

    #[test]
    fn snapshot_compacts_but_keeps_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let mut log = LogStore::create(&path, Some(&bootstrap_snapshot())).expect("create");
        let entries: Vec<Entry> = (2..=20).map(|i| entry(i, 2, b"e")).collect();
        log.append(&entries, None).expect("append");
        log.create_snapshot(18, log.conf_state().clone(), b"snap18", 15)
            .expect("snapshot");
        assert_eq!(log.first(), 15);
        assert_eq!(log.term(14).expect("compacted term kept"), 2);
        assert!(matches!(
            log.term(10),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        drop(log);
        let log = LogStore::open(&path).expect("reopen");
        assert_eq!(
            (log.first(), log.last(), log.snapshot_index()),
            (15, 20, 18)
        );
        assert_eq!(log.snapshot(18, 7).expect("snap").get_data(), b"snap18");
    }

    #[test]
    fn snapshot_for_a_peer_it_does_not_include_is_requested_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::create(&dir.path().join("raft.redb"), Some(&bootstrap_snapshot()))
            .expect("create");
        assert!(log.snapshot(1, 7).is_ok());
        assert!(!log.take_snapshot_wanted());
        assert!(matches!(
            log.snapshot(1, 9),
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(log.take_snapshot_wanted(), "a new snapshot is asked for");
        assert!(!log.take_snapshot_wanted(), "once");
    }

    #[test]
    fn truncated_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let mut log = LogStore::create(&path, Some(&bootstrap_snapshot())).expect("create");
        log.append(
            &(2..=50)
                .map(|i| entry(i, 2, &[7u8; 300]))
                .collect::<Vec<_>>(),
            None,
        )
        .expect("append");
        drop(log);
        let len = std::fs::metadata(&path).expect("meta").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(len / 3).expect("truncate");
        drop(file);
        let before = std::fs::read(&path).expect("read");
        let err = LogStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("refusing to start"), "{err}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "file untouched"
        );
    }

    #[test]
    fn garbage_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        std::fs::write(&path, vec![0xAB; 8192]).expect("write");
        let err = LogStore::open(&path).err().expect("refused");
        assert!(
            err.to_string().contains("refusing to start")
                || err.to_string().contains("not an orch raft log"),
            "{err}"
        );
    }
}
