//! What `/proc` says about a node process. A SIGKILLed process is not gone when its main
//! thread is a zombie: its other threads may still be finishing a system call (an fsync on a
//! busy disk), and until the last one exits the process keeps its files — and the data
//! dir's pid-file lock.

/// A process's life, as far as its files are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Running (or stopped): it holds its files.
    Live,
    /// Its main thread has exited, but some threads have not: it still holds its files.
    Exiting,
    /// Gone, or a zombie with every thread exited: its files are closed.
    Gone,
}

/// The state of the thread or process whose `stat` file is `path` (None if it is gone).
fn stat_state(path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The state follows the command name, which is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

fn exited(state: Option<char>) -> bool {
    matches!(state, None | Some('Z') | Some('X'))
}

pub fn proc_state(pid: i32) -> ProcState {
    if !exited(stat_state(&format!("/proc/{pid}/stat"))) {
        return ProcState::Live;
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .any(|e| !exited(stat_state(&format!("{}/stat", e.path().display()))))
        })
        .unwrap_or(false);
    if threads {
        ProcState::Exiting
    } else {
        ProcState::Gone
    }
}

/// Whether `pid` still holds its files (live or still exiting).
pub fn holds_files(pid: i32) -> bool {
    proc_state(pid) != ProcState::Gone
}

/// Restarts a node: runs `orch daemon --data-dir DIR` through `orch` (the binary, or a wrapper
/// such as `nsenter --net=… orch`), its output appended to `DIR/orch.log`, and reaps it in the
/// background when it exits (a killed node does not linger as a zombie). Does not wait for it
/// to answer.
pub fn spawn_node(mut orch: std::process::Command, dir: &std::path::Path) -> std::io::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("orch.log"))?;
    let mut child = orch
        .arg("daemon")
        .arg("--data-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_live_and_a_reaped_child_is_gone() {
        assert_eq!(proc_state(std::process::id() as i32), ProcState::Live);
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        child.wait().expect("wait");
        assert_eq!(proc_state(pid), ProcState::Gone);
    }

    #[test]
    fn an_unreaped_zombie_is_gone() {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while stat_state(&format!("/proc/{pid}/stat")) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(proc_state(pid), ProcState::Gone);
        drop(child);
    }
}
