//! Engine API times: RFC 3339 with nanoseconds, from orch's unix nanoseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-30T23:00:00.123456789Z`; 0 is Go's zero time, as docker shows an unset time.
pub fn rfc3339(unix_nanos: i64) -> String {
    if unix_nanos <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    let t = UNIX_EPOCH + Duration::from_nanos(unix_nanos as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_nanoseconds_and_zero_as_go_zero_time() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_796_025_591_000_000_001),
            "2026-11-30T07:59:51.000000001Z"
        );
    }
}
