//! Engine API times: RFC 3339 with nanoseconds, from orch's unix nanoseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go's `RFC3339Nano`, as dockerd writes an object's times: `2026-11-30T23:00:00.12345Z`, the
/// fraction's trailing zeros dropped (and the fraction with them when it is zero); 0 is Go's
/// zero time, as docker shows an unset time.
pub fn rfc3339(unix_nanos: i64) -> String {
    if unix_nanos <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    let fixed = rfc3339_fixed(unix_nanos);
    let body = fixed.trim_end_matches('Z').trim_end_matches('0');
    format!("{}Z", body.trim_end_matches('.'))
}

/// Always nine fractional digits, as docker prints a log line's time (`RFC3339NanoFixed`).
pub fn rfc3339_fixed(unix_nanos: i64) -> String {
    if unix_nanos <= 0 {
        return "0001-01-01T00:00:00.000000000Z".to_string();
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
    fn formats_as_go_does_and_zero_as_go_zero_time() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_796_025_591_000_000_001),
            "2026-11-30T07:59:51.000000001Z"
        );
        // Go drops the fraction's trailing zeros, and the fraction when it is zero.
        assert_eq!(
            rfc3339(1_796_025_591_982_483_960),
            "2026-11-30T07:59:51.98248396Z"
        );
        assert_eq!(rfc3339(1_796_025_591_000_000_000), "2026-11-30T07:59:51Z");
        assert_eq!(
            rfc3339_fixed(1_796_025_591_982_483_960),
            "2026-11-30T07:59:51.982483960Z"
        );
        assert_eq!(rfc3339_fixed(0), "0001-01-01T00:00:00.000000000Z");
    }
}
