//! Scalar conversions: the lenient readers of typed fields (a string from interpolation is as
//! good as a YAML number or boolean), Go durations, go-units byte sizes, CPU counts, Go
//! base-0 integers (octal modes) and short port specs.

use std::time::Duration;

use serde_norway::Value;

use super::LoadError;

pub(super) type R<T> = Result<T, LoadError>;

pub(super) fn err(path: &str, message: impl Into<String>) -> LoadError {
    LoadError::new(path, message)
}

/// `path.key`.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// What a value is, for error messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping key as text (numbers and booleans as written).
pub(super) fn key_text(path: &str, k: &Value) -> R<String> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(err(
            path,
            format!("keys must be strings, not {}", kind(other)),
        )),
    }
}

/// A scalar as text; null is None.
pub(super) fn scalar(path: &str, v: &Value) -> R<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(err(path, format!("must be a string, not {}", kind(other)))),
    }
}

/// A required scalar (null is an error).
pub(super) fn text(path: &str, v: &Value) -> R<String> {
    scalar(path, v)?.ok_or_else(|| err(path, "must be a string, not null"))
}

/// A string or a list of strings.
pub(super) fn string_list(path: &str, v: &Value) -> R<Vec<String>> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| text(&index(path, i), item))
            .collect(),
        other => Ok(scalar(path, other)?.into_iter().collect()),
    }
}

/// `true/false/yes/no/on/off/y/n` in any case.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" => Some(true),
        "false" | "no" | "off" | "n" => Some(false),
        _ => None,
    }
}

pub(super) fn opt_bool(path: &str, v: &Value) -> R<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => parse_bool(s)
            .map(Some)
            .ok_or_else(|| err(path, format!("invalid boolean {s:?}"))),
        other => Err(err(path, format!("must be a boolean, not {}", kind(other)))),
    }
}

pub(super) fn opt_u64(path: &str, v: &Value) -> R<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            err(
                path,
                format!("invalid number {n}: must be a non-negative integer"),
            )
        }),
        Value::String(s) => s.trim().parse::<u64>().map(Some).map_err(|_| {
            err(
                path,
                format!("invalid number {s:?}: must be a non-negative integer"),
            )
        }),
        other => Err(err(path, format!("must be a number, not {}", kind(other)))),
    }
}

pub(super) fn opt_i64(path: &str, v: &Value) -> R<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| err(path, format!("invalid number {n}: must be an integer"))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| err(path, format!("invalid number {s:?}: must be an integer"))),
        other => Err(err(path, format!("must be a number, not {}", kind(other)))),
    }
}

pub(super) fn opt_f32(path: &str, v: &Value) -> R<Option<f32>> {
    let parsed = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string().parse::<f32>().ok(),
        Value::String(s) => s.trim().parse::<f32>().ok(),
        other => return Err(err(path, format!("must be a number, not {}", kind(other)))),
    };
    match parsed {
        Some(f) if f.is_finite() => Ok(Some(f)),
        _ => Err(err(
            path,
            format!("invalid number {:?}", scalar(path, v)?.unwrap_or_default()),
        )),
    }
}

pub(super) fn opt_duration(path: &str, v: &Value) -> R<Option<Duration>> {
    match v {
        Value::Null => Ok(None),
        Value::String(_) | Value::Number(_) => {
            let s = text(path, v)?;
            parse_duration(&s).map(Some).map_err(|m| err(path, m))
        }
        other => Err(err(
            path,
            format!("must be a duration, not {}", kind(other)),
        )),
    }
}

pub(super) fn opt_bytes(path: &str, v: &Value) -> R<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(b) if b >= 0 => Ok(Some(b)),
            _ => parse_bytes(&n.to_string())
                .map(Some)
                .map_err(|m| err(path, m)),
        },
        Value::String(s) => parse_bytes(s).map(Some).map_err(|m| err(path, m)),
        other => Err(err(path, format!("must be a size, not {}", kind(other)))),
    }
}

pub(super) fn opt_nano_cpus(path: &str, v: &Value) -> R<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(_) | Value::String(_) => {
            let s = text(path, v)?;
            parse_cpus(&s).map(Some).map_err(|m| err(path, m))
        }
        other => Err(err(
            path,
            format!("must be a number of CPUs, not {}", kind(other)),
        )),
    }
}

/// A file mode: a YAML integer as is, a string as Go base 0 (`0440`, `0o440`, `0x120`).
pub(super) fn opt_mode(path: &str, v: &Value) -> R<Option<u32>> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| err(path, format!("invalid mode {n}")))?,
        Value::String(s) => parse_go_uint(s).map_err(|m| err(path, m))?,
        other => return Err(err(path, format!("must be a mode, not {}", kind(other)))),
    };
    u32::try_from(n)
        .map(Some)
        .map_err(|_| err(path, format!("invalid mode {n}: too large")))
}

/// Go's `time.ParseDuration`: `1m30s`, `300ms`, `1.5h`, `2h45m`, `1us`, `1µs`; `0` alone;
/// a number without a unit is an error, and so is a negative duration.
pub(super) fn parse_duration(input: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {input:?}");
    let mut rest = input.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if let Some(r) = rest.strip_prefix('-') {
        if r.starts_with(['-', '+']) {
            return Err(bad());
        }
        // "-0s" is zero; any other negative duration is refused.
        return match parse_duration(r) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => Err(format!(
                "invalid duration {input:?}: negative durations are not allowed"
            )),
            Err(e) => Err(e),
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after) = rest.strip_prefix('.') {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after[..n];
            rest = &after[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult: u128 = match unit {
            "" => return Err(format!("invalid duration {input:?}: missing unit")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid duration {input:?}: unknown unit {other:?}"
                ))
            }
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(mult).ok_or_else(bad)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(20)];
            let frac: u128 = digits.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(digits.len() as u32);
            value = value
                .checked_add(frac.checked_mul(mult).ok_or_else(bad)? / scale)
                .ok_or_else(bad)?;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
    }
    // Go's limit: an int64 of nanoseconds.
    if total > i64::MAX as u128 {
        return Err(format!("invalid duration {input:?}: too large"));
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| bad())
}

/// A duration as Go prints it (`1m30s`, `300ms`, `1h0m0s`, `0s`).
pub(super) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    fn frac(whole: u128, rem: u128, digits: usize) -> String {
        if rem == 0 {
            return whole.to_string();
        }
        let f = format!("{rem:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let secs = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = format!("{}s", frac(s, sub, 9));
    if h > 0 {
        format!("{h}h{m}m{s}")
    } else if m > 0 {
        format!("{m}m{s}")
    } else {
        s
    }
}

/// go-units `RAMInBytes`: a number (a fraction allowed), an optional space, then an optional
/// `b k m g t p` unit with an optional `i` and `b` after it, any case, 1024-based.
pub(super) fn parse_bytes(input: &str) -> Result<i64, String> {
    let bad = || format!("invalid size: '{input}'");
    let s = input.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let num = &s[..num_len];
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(bad());
    }
    let rest = s[num_len..].strip_prefix(' ').unwrap_or(&s[num_len..]);
    let rest = rest.to_ascii_lowercase();
    let (power, suffix) = match rest.chars().next() {
        Some('k') => (1, &rest[1..]),
        Some('m') => (2, &rest[1..]),
        Some('g') => (3, &rest[1..]),
        Some('t') => (4, &rest[1..]),
        Some('p') => (5, &rest[1..]),
        _ => (0, rest.as_str()),
    };
    if !matches!(suffix, "" | "b" | "i" | "ib") {
        return Err(bad());
    }
    let mult: u128 = 1024u128.pow(power);
    if !num.contains('.') {
        let n: u128 = num.parse().map_err(|_| bad())?;
        let bytes = n.checked_mul(mult).ok_or_else(bad)?;
        return i64::try_from(bytes).map_err(|_| bad());
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let bytes = (f * mult as f64).trunc();
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// A decimal CPU count (`0.5`, `2`, `.25`) as nano CPUs, exactly (digits past the ninth
/// decimal rounded).
pub(super) fn parse_cpus(input: &str) -> Result<i64, String> {
    let bad = || format!("invalid CPU count {input:?}: must be a non-negative decimal number");
    let s = input.trim();
    let (int_part, frac_part) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !digits(int_part) || !digits(frac_part) {
        return Err(bad());
    }
    let int: i64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| bad())?
    };
    let mut frac: i64 = 0;
    for (i, b) in frac_part.bytes().enumerate() {
        let d = i64::from(b - b'0');
        if i < 9 {
            frac = frac * 10 + d;
        } else {
            if i == 9 && d >= 5 {
                frac += 1;
            }
            break;
        }
    }
    for _ in frac_part.len()..9 {
        frac *= 10;
    }
    int.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(|| format!("invalid CPU count {input:?}: too large"))
}

/// Nano CPUs as a decimal (`0.5`).
pub(super) fn format_cpus(nanos: i64) -> String {
    let (int, frac) = (nanos / 1_000_000_000, (nanos % 1_000_000_000).abs());
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:09}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// Go's `strconv.ParseUint(s, 0, 64)`: `0x`, `0o`, `0b` prefixes, a leading `0` for octal,
/// `_` separators.
pub(super) fn parse_go_uint(input: &str) -> Result<u64, String> {
    let bad = || format!("invalid mode {input:?}");
    let s: String = input.trim().chars().filter(|&c| c != '_').collect();
    let s = s.strip_prefix('+').unwrap_or(&s);
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return Err(bad());
    }
    u64::from_str_radix(digits, radix).map_err(|_| bad())
}

/// One port of a short spec, ranges expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShortPort {
    pub host_ip: Option<String>,
    pub published: Option<u32>,
    pub target: u32,
    pub protocol: String,
}

/// `[ip:][published:]target[/protocol]`, each port part `N` or a range `N-M`.
pub(super) fn parse_short_port(spec: &str) -> Result<Vec<ShortPort>, String> {
    let s = spec.trim();
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, protocol(p)?),
        None => (s, "tcp".to_string()),
    };
    let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, r) = after
            .split_once("]:")
            .ok_or_else(|| format!("invalid port {spec:?}"))?;
        (Some(ip.to_string()), r)
    } else {
        match rest.matches(':').count() {
            0 | 1 => (None, rest),
            2 => {
                let (ip, r) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("invalid port {spec:?}"))?;
                (Some(ip.to_string()), r)
            }
            _ => return Err(format!("invalid port {spec:?}")),
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some((p, t)) => (Some(p), t),
        None => (None, rest),
    };
    if host_ip.is_some() && published.is_none() {
        return Err(format!("invalid port {spec:?}"));
    }
    let (t0, t1) = port_range(spec, target)?;
    let published = match published {
        Some(p) if !p.is_empty() => Some(port_range(spec, p)?),
        _ => None,
    };
    if let Some((p0, p1)) = published {
        if p1 - p0 != t1 - t0 {
            return Err(format!(
                "invalid port {spec:?}: the published and target ranges differ in size"
            ));
        }
    }
    let host_ip = host_ip.filter(|ip| !ip.is_empty());
    Ok((t0..=t1)
        .map(|t| ShortPort {
            host_ip: host_ip.clone(),
            published: published.map(|(p0, _)| p0 + (t - t0)),
            target: t,
            protocol: protocol.clone(),
        })
        .collect())
}

pub(super) fn protocol(p: &str) -> Result<String, String> {
    let p = p.trim().to_ascii_lowercase();
    match p.as_str() {
        "tcp" | "udp" | "sctp" => Ok(p),
        _ => Err(format!("invalid protocol {p:?}: must be tcp, udp or sctp")),
    }
}

fn port_range(spec: &str, s: &str) -> Result<(u32, u32), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(spec, a)?, port_number(spec, b)?);
            if b < a {
                return Err(format!(
                    "invalid port {spec:?}: the range ends before it starts"
                ));
            }
            Ok((a, b))
        }
        None => {
            let p = port_number(spec, s)?;
            Ok((p, p))
        }
    }
}

/// A port number, 1 to 65535.
pub(super) fn port_number(spec: &str, s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p),
        Ok(p) => Err(format!(
            "invalid port {spec:?}: {p} is not between 1 and 65535"
        )),
        Err(_) => Err(format!("invalid port {spec:?}: {s:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: Vec<(&str, &str, Duration)> = vec![
            ("seconds", "10s", Duration::from_secs(10)),
            ("minutes and seconds", "1m30s", Duration::from_secs(90)),
            ("milliseconds", "300ms", Duration::from_millis(300)),
            ("fractional hours", "1.5h", Duration::from_secs(5400)),
            (
                "hours and minutes",
                "2h45m",
                Duration::from_secs(2 * 3600 + 45 * 60),
            ),
            ("micro us", "1us", Duration::from_micros(1)),
            ("micro sign", "1µs", Duration::from_micros(1)),
            ("greek mu", "1μs", Duration::from_micros(1)),
            ("nanoseconds", "1ns", Duration::from_nanos(1)),
            ("zero alone", "0", Duration::ZERO),
            ("zero seconds", "0s", Duration::ZERO),
            ("go string form", "1h0m0s", Duration::from_secs(3600)),
            ("fraction only", ".5s", Duration::from_millis(500)),
            ("plus sign", "+5s", Duration::from_secs(5)),
            (
                "fractional seconds",
                "1.000000001s",
                Duration::from_nanos(1_000_000_001),
            ),
            ("surrounding spaces", " 5s ", Duration::from_secs(5)),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_duration(input), Ok(want), "{name}: {input}");
        }
        let bad: Vec<(&str, &str, &str)> = vec![
            ("bare number", "10", "missing unit"),
            ("empty", "", "invalid duration"),
            ("days", "1d", "unknown unit"),
            ("negative", "-5s", "negative"),
            ("dot alone", ".s", "invalid duration"),
            ("words", "soon", "invalid duration"),
            ("overflow", "99999999999999999999h", "invalid duration"),
            ("too large", "3000000h", "too large"),
        ];
        for (name, input, want) in bad {
            let got = parse_duration(input).expect_err(name);
            assert!(got.contains(want), "{name}: {got}");
        }
    }

    #[test]
    fn duration_format() {
        let cases: Vec<(&str, Duration, &str)> = vec![
            ("zero", Duration::ZERO, "0s"),
            ("seconds", Duration::from_secs(10), "10s"),
            ("minutes", Duration::from_secs(90), "1m30s"),
            ("hours", Duration::from_secs(3600), "1h0m0s"),
            ("millis", Duration::from_millis(300), "300ms"),
            ("fraction of a second", Duration::from_millis(1500), "1.5s"),
            ("micros", Duration::from_micros(1), "1µs"),
            ("fraction of a milli", Duration::from_micros(1500), "1.5ms"),
            ("nanos", Duration::from_nanos(7), "7ns"),
        ];
        for (name, d, want) in cases {
            assert_eq!(format_duration(d), want, "{name}");
            assert_eq!(parse_duration(want), Ok(d), "{name} parses back");
        }
    }

    #[test]
    fn sizes() {
        let ok: Vec<(&str, &str, i64)> = vec![
            ("bare bytes", "1024", 1024),
            ("b suffix", "100b", 100),
            ("kilo", "1k", 1024),
            ("kilo KB", "2KB", 2048),
            ("mega", "512M", 512 << 20),
            ("mega lower", "50m", 50 << 20),
            ("giga", "1g", 1 << 30),
            ("gibi", "1.5GiB", 3 << 29),
            ("gibi with space", "1 GiB", 1 << 30),
            ("tera", "2t", 2 << 40),
            ("peta", "1p", 1 << 50),
            ("i only", "1Ki", 1024),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_bytes(input), Ok(want), "{name}: {input}");
        }
        for (name, input) in [
            ("empty", ""),
            ("negative", "-1M"),
            ("unknown unit", "1x"),
            ("two units", "1MG"),
            ("dot first", ".5M"),
            ("two dots", "1.2.3M"),
            ("huge", "99999999999p"),
        ] {
            assert!(parse_bytes(input).is_err(), "{name}: {input}");
        }
    }

    #[test]
    fn cpus() {
        let ok: Vec<(&str, &str, i64)> = vec![
            ("half", "0.5", 500_000_000),
            ("two", "2", 2_000_000_000),
            ("quarter", "0.25", 250_000_000),
            ("tenth", "0.1", 100_000_000),
            ("leading dot", ".5", 500_000_000),
            ("nano", "0.000000001", 1),
            ("rounded", "0.0000000015", 2),
            ("trailing dot", "3.", 3_000_000_000),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_cpus(input), Ok(want), "{name}: {input}");
        }
        for (name, input) in [
            ("empty", ""),
            ("negative", "-1"),
            ("words", "two"),
            ("dot", "."),
        ] {
            assert!(parse_cpus(input).is_err(), "{name}: {input}");
        }
        for (name, n, want) in [
            ("half", 500_000_000, "0.5"),
            ("two", 2_000_000_000, "2"),
            ("nano", 1, "0.000000001"),
        ] {
            assert_eq!(format_cpus(n), want, "{name}");
        }
    }

    #[test]
    fn go_base0_integers() {
        let ok: Vec<(&str, &str, u64)> = vec![
            ("octal leading zero", "0440", 288),
            ("octal 0o", "0o440", 288),
            ("octal 0O", "0O440", 288),
            ("hex", "0x120", 288),
            ("binary", "0b100100000", 288),
            ("decimal", "288", 288),
            ("zero", "0", 0),
            ("underscores", "0_440", 288),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_go_uint(input), Ok(want), "{name}: {input}");
        }
        for (name, input) in [
            ("bad octal digit", "0948"),
            ("empty", ""),
            ("negative", "-1"),
            ("words", "rw"),
        ] {
            assert!(parse_go_uint(input).is_err(), "{name}: {input}");
        }
    }

    #[test]
    fn bools() {
        for (name, input, want) in [
            ("true", "true", Some(true)),
            ("yes upper", "YES", Some(true)),
            ("on", "On", Some(true)),
            ("y", "y", Some(true)),
            ("false", "False", Some(false)),
            ("no", "no", Some(false)),
            ("off", "OFF", Some(false)),
            ("n", "n", Some(false)),
            ("number", "1", None),
            ("word", "maybe", None),
        ] {
            assert_eq!(parse_bool(input), want, "{name}");
        }
    }

    #[test]
    fn short_ports() {
        let p = |host_ip: Option<&str>, published: Option<u32>, target: u32, protocol: &str| {
            ShortPort {
                host_ip: host_ip.map(str::to_string),
                published,
                target,
                protocol: protocol.to_string(),
            }
        };
        let ok: Vec<(&str, &str, Vec<ShortPort>)> = vec![
            ("target only", "80", vec![p(None, None, 80, "tcp")]),
            ("published", "8080:80", vec![p(None, Some(8080), 80, "tcp")]),
            ("udp", "8080:80/udp", vec![p(None, Some(8080), 80, "udp")]),
            (
                "protocol upper",
                "53:53/UDP",
                vec![p(None, Some(53), 53, "udp")],
            ),
            (
                "host ip",
                "127.0.0.1:8080:80",
                vec![p(Some("127.0.0.1"), Some(8080), 80, "tcp")],
            ),
            (
                "host ip no published",
                "127.0.0.1::80",
                vec![p(Some("127.0.0.1"), None, 80, "tcp")],
            ),
            (
                "ipv6 host",
                "[::1]:8080:80",
                vec![p(Some("::1"), Some(8080), 80, "tcp")],
            ),
            (
                "ranges",
                "8000-8001:80-81",
                vec![
                    p(None, Some(8000), 80, "tcp"),
                    p(None, Some(8001), 81, "tcp"),
                ],
            ),
            (
                "target range",
                "80-81",
                vec![p(None, None, 80, "tcp"), p(None, None, 81, "tcp")],
            ),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_short_port(input), Ok(want), "{name}: {input}");
        }
        let bad: Vec<(&str, &str, &str)> = vec![
            ("zero", "0", "not between 1 and 65535"),
            ("too big", "65536", "not between 1 and 65535"),
            ("words", "http", "not a number"),
            ("bad protocol", "80/icmp", "invalid protocol"),
            ("range sizes", "8000-8002:80-81", "differ in size"),
            ("reversed range", "81-80", "ends before"),
            ("too many colons", "a:b:c:d", "invalid port"),
            ("published zero", "0:80", "not between"),
        ];
        for (name, input, want) in bad {
            let got = parse_short_port(input).expect_err(name);
            assert!(got.contains(want), "{name}: {got}");
        }
    }
}
