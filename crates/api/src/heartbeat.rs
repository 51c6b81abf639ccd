//! The deadlines of a node's heartbeats, in one place: the leader, the agent's session and the
//! agent's fencing all derive theirs from the heartbeat period here, so they keep their order
//! whatever the period:
//!
//! `session_silence_limit` (1.5 periods) < `fence_after` (2.5) < `heartbeat_deadline` (3).
//!
//! An agent whose manager falls silent (a leader cut off or paused) looks for the new leader
//! after 1.5 periods, a whole period before it would stop its tasks (2.5 periods, only if no
//! manager at all answers) and before the leader would mark its node Down (3 periods, counted
//! from the new leader's election).

use std::time::Duration;

/// Heartbeat periods a node may miss before the leader marks it Down.
pub const MISSED_HEARTBEATS: u32 = 3;

/// The heartbeat period of a new cluster, and the one an agent assumes until a manager tells
/// it the cluster's.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);

/// Metadata carrying the leader's address when a follower turns an agent's session away.
pub const LEADER_ADDR: &str = "orch-leader-addr";

/// Silence after which the leader marks a node Down (and its tasks are replaced).
pub fn heartbeat_deadline(period: Duration) -> Duration {
    period * MISSED_HEARTBEATS
}

/// Silence from every manager after which an agent stops its tasks: half a period before the
/// leader would replace them elsewhere, so no slot runs twice, and a whole period after the
/// agent left a silent session, so that it has that long to reach the new leader. (At 2
/// periods, half a period was too little on a loaded machine: a leader partition in CI made
/// an agent stop its tasks while it was connecting to the new leader.)
pub fn fence_after(period: Duration) -> Duration {
    heartbeat_deadline(period).saturating_sub(period / 2)
}

/// Silence of its session's manager after which an agent ends the session and looks for the
/// leader through the other managers.
pub fn session_silence_limit(period: Duration) -> Duration {
    period + period / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadlines_keep_their_order_for_any_period() {
        for ms in [100u64, 500, 1000, 5000, 30_000] {
            let p = Duration::from_millis(ms);
            assert!(
                session_silence_limit(p) + p <= fence_after(p),
                "{ms}ms: a whole period to reach the new leader"
            );
            assert!(fence_after(p) < heartbeat_deadline(p), "{ms}ms");
            assert!(
                p < session_silence_limit(p),
                "{ms}ms: one late ack is not silence"
            );
        }
        assert_eq!(
            heartbeat_deadline(Duration::from_secs(1)),
            Duration::from_secs(3)
        );
        assert_eq!(
            fence_after(Duration::from_secs(1)),
            Duration::from_millis(2500)
        );
    }
}
