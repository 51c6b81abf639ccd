//! What the session and the worker share, below both: when the agent last heard from a
//! manager (the worker fences on it), and the tasks the worker holds (the session serves log
//! subscriptions from them). Neither imports the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::Task;
use parking_lot::Mutex;

/// The tasks this node's worker holds, by ID (for log subscriptions).
pub type TaskRegistry = Arc<Mutex<HashMap<String, Task>>>;

/// When the agent last heard from a manager, and the heartbeat period then in force: what
/// the worker's fencing looks at.
#[derive(Clone, Default)]
pub struct Contact(Arc<Mutex<Option<(tokio::time::Instant, Duration)>>>);

impl Contact {
    pub fn touch(&self, period: Duration) {
        *self.0.lock() = Some((tokio::time::Instant::now(), period));
    }

    /// How long the agent has heard nothing, and the period; None before the first contact.
    pub fn silence(&self) -> Option<(Duration, Duration)> {
        self.0.lock().map(|(at, period)| (at.elapsed(), period))
    }
}
