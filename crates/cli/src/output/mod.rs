//! How results are printed: tables, `-q`, `--format json`, Go templates, inspect JSON.

pub mod json;
pub mod progress;
pub mod table;
pub mod template;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::Value;

use self::template::Template;

/// Writes a command's output. A reader that went away ends the command at once (see
/// [`output_failed`]).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        output_failed(&e)
    }
}

/// Ends the command when its output cannot be written. A closed pipe (`orch node ls | head
/// -1`) is not an error: the command ends quietly with the status of a process that SIGPIPE
/// ended (141), as docker's does; any other failure is said.
pub fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("Error: cannot write the output: {e}");
    std::process::exit(1)
}

/// `os/arch` as docker prints it (`linux/amd64`).
pub fn os_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// What `--format` asked for.
pub enum Format {
    Table,
    Json,
    Template(Template),
}

impl Format {
    pub fn parse(format: Option<&str>) -> Result<Self> {
        Ok(match format {
            None | Some("") | Some("table") => Format::Table,
            Some("json") => Format::Json,
            Some(other) => Format::Template(Template::parse(other)?),
        })
    }
}

/// Prints list rows (each a JSON object with the table's fields) in the requested format.
pub fn print_list(format: &Format, headers: &[&str], keys: &[&str], rows: &[Value]) -> Result<()> {
    match format {
        Format::Table => {
            let mut t = table::Table::new(headers);
            for row in rows {
                t.row(
                    keys.iter()
                        .map(|k| row.get(*k).map(cell).unwrap_or_default())
                        .collect(),
                );
            }
            out!("{}", t.render());
        }
        Format::Json => {
            for row in rows {
                outln!("{}", serde_json::to_string(row)?);
            }
        }
        Format::Template(tpl) => {
            let mut lines = Vec::new();
            if tpl.table {
                lines.push(
                    tpl.header()
                        .split('\t')
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                );
            }
            for row in rows {
                lines.push(tpl.render(row)?.split('\t').map(str::to_string).collect());
            }
            if tpl.table {
                out!("{}", table::render_rows(lines.iter()));
            } else {
                for line in lines {
                    outln!("{}", line.join("\t"));
                }
            }
        }
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Prints inspect output: a JSON array (docker's indentation), or a template per object.
pub fn print_inspect(format: Option<&str>, objects: &[Value]) -> Result<()> {
    match format {
        None | Some("") | Some("json") => outln!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(objects.to_vec()))?
        ),
        Some(f) => {
            let tpl = Template::parse(f)?;
            for o in objects {
                outln!("{}", tpl.render(o)?);
            }
        }
    }
    Ok(())
}

/// Parses a Go duration ("90s", "1h30m", "2160h", "1.5s", "500ms").
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        bail!("invalid duration {s:?}");
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            bail!("invalid duration {s:?}");
        }
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => bail!("missing unit in duration {s:?}"),
            other => bail!("unknown unit {other:?} in duration {s:?}"),
        };
        total += value * scale;
    }
    if !total.is_finite() || total > 1e12 {
        bail!("invalid duration {s:?}");
    }
    Ok(Duration::from_secs_f64(total))
}

/// Prints a duration the way Go does ("5s", "1m30s", "2160h0m0s").
pub fn format_duration(d: Duration) -> String {
    let total = d.as_secs_f64();
    if total == 0.0 {
        return "0s".into();
    }
    if total < 1.0 {
        let ms = d.as_secs_f64() * 1000.0;
        return format!("{}ms", trim_float(ms));
    }
    let secs = d.as_secs();
    let frac = d.subsec_nanos();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let s_text = if frac == 0 {
        s.to_string()
    } else {
        trim_float(s as f64 + f64::from(frac) / 1e9)
    };
    if h > 0 {
        format!("{h}h{m}m{s_text}s")
    } else if m > 0 {
        format!("{m}m{s_text}s")
    } else {
        format!("{s_text}s")
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// RFC 3339 with nanoseconds as the Engine API prints times: an object's (Go's trimmed
/// `RFC3339Nano`), and a log line's (always nine digits).
pub use orch_engine_api::convert::time::{rfc3339, rfc3339_fixed};

/// docker's `units.HumanDuration`: "Less than a second", "5 seconds", "About a minute", ...
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let mins = secs / 60;
    let hours = mins / 60;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if mins == 1 {
        "About a minute".into()
    } else if mins < 60 {
        format!("{mins} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// How long ago `nanos` (unix) was.
pub fn ago(nanos: i64) -> String {
    let then = UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
    let elapsed = SystemTime::now().duration_since(then).unwrap_or_default();
    format!("{} ago", human_duration(elapsed))
}

/// Bytes in docker's binary units ("23.47GiB").
pub fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{}{}", trim_float((v * 100.0).round() / 100.0), units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("5s", Some(5.0)),
            ("1m30s", Some(90.0)),
            ("2160h", Some(7_776_000.0)),
            ("1.5s", Some(1.5)),
            ("500ms", Some(0.5)),
            ("0", Some(0.0)),
            ("", None),
            ("5", None),
            ("-5s", None),
            ("5 days", None),
            ("1x", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs_f64()),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7_776_000)), "2160h0m0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(70)), "About a minute");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(512), "512B");
    }
}
