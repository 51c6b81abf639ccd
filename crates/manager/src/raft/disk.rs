//! A manager whose disk is full stops, saying why.
//!
//! Waiting for a write to fail is not enough: the raft log reuses the pages that compaction
//! freed inside its own file, so a manager whose filesystem has no byte left can go on
//! appending for a long time — looking healthy — until the log needs to grow, a snapshot is
//! larger than the freed pages, or a certificate renewal cannot be written. By then it fails
//! at a random moment, possibly as the leader. The fault suite saw exactly that: a manager on a
//! full disk exited within 2 s in the first cycles and ran on for over a minute in later ones,
//! once its log file had grown. The free space of the filesystem holding the log is checked
//! every second instead, and a manager below the reserve stops at once, naming the directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Below this many free bytes the disk is full: the log cannot be trusted to grow.
pub const DISK_RESERVE: u64 = 1 << 20;

/// How often the free space is checked.
pub const DISK_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Bytes this process can still write on the filesystem holding `dir` (root may use the
/// blocks a filesystem reserves for it; others may not).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let blocks = if nix::unistd::geteuid().is_root() {
        st.blocks_free()
    } else {
        st.blocks_available()
    };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between platforms
    Ok((blocks as u64).saturating_mul(st.fragment_size() as u64))
}

/// Why a manager with `free` bytes left under `dir` must stop, or `None` while it may go on.
pub fn full_disk(dir: &Path, free: u64) -> Option<String> {
    (free < DISK_RESERVE).then(|| {
        format!(
            "the disk holding the raft log ({}) is full: {free} bytes free, {DISK_RESERVE} needed; \
             free some space and restart the node",
            dir.display()
        )
    })
}

/// Checks `dir` every `period` until `shutdown`; calls `on_full` once with the reason when the
/// disk is full. A filesystem that cannot be read is not taken for a full one (the log's own
/// writes still fail loudly).
pub async fn watch(
    dir: PathBuf,
    period: Duration,
    shutdown: CancellationToken,
    on_full: impl FnOnce(String),
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probe = dir.clone();
        let free = tokio::task::spawn_blocking(move || free_bytes(&probe)).await;
        if let Ok(Ok(free)) = free {
            if let Some(why) = full_disk(&dir, free) {
                on_full(why);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_below_the_reserve_only() {
        let dir = Path::new("/var/lib/orch/raft");
        let cases = [
            ("nothing left", 0, true),
            ("a few pages left", 64 << 10, true),
            ("one byte short of the reserve", DISK_RESERVE - 1, true),
            ("exactly the reserve", DISK_RESERVE, false),
            ("plenty", 10 << 30, false),
        ];
        for (name, free, full) in cases {
            let why = full_disk(dir, free);
            assert_eq!(why.is_some(), full, "{name}");
            if let Some(why) = why {
                assert!(why.contains("/var/lib/orch/raft"), "{name}: {why}");
                assert!(why.contains("is full"), "{name}: {why}");
            }
        }
    }

    #[test]
    fn a_real_directory_has_free_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_stops_the_manager_once_when_the_disk_fills() {
        // A directory that does not exist cannot be read: never taken for a full disk.
        let missing = PathBuf::from("/nonexistent/orch-disk-test");
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(
            missing,
            DISK_CHECK_PERIOD,
            shutdown.clone(),
            move |w| {
                let _ = tx.send(w);
            },
        ));
        tokio::time::sleep(DISK_CHECK_PERIOD * 5).await;
        assert!(
            rx.try_recv().is_err(),
            "an unreadable dir is not a full disk"
        );
        shutdown.cancel();
        task.await.expect("watch ends on shutdown");
    }
}
