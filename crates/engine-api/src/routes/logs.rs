//! Service and task logs in docker's stream format: per line, an 8-byte header (stream,
//! 0, 0, 0, big-endian length) and the line, optionally after its time and its details
//! (`com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=…`).

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use orch_api::pb::{GetServiceRequest, LogMessage, ServiceLogsRequest};

use crate::backend::Backend;
use crate::convert::time::rfc3339_fixed;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, flag};
use crate::version::ApiVersion;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub details: bool,
    /// A TTY service's output: one stream, no headers.
    pub raw: bool,
}

/// The frames of one message (one per line).
pub fn frames(m: &LogMessage, service_id: &str, f: Format) -> Vec<u8> {
    let mut out = Vec::new();
    if (m.stream == 2 && !f.stderr) || (m.stream != 2 && !f.stdout) {
        return out;
    }
    // Lines as bytes: output that is not UTF-8 goes through as the container wrote it.
    let data = m.data.strip_suffix(b"\n").unwrap_or(&m.data);
    if data.is_empty() {
        return out;
    }
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut payload = Vec::with_capacity(line.len() + 160);
        if f.timestamps {
            payload.extend_from_slice(rfc3339_fixed(m.timestamp).as_bytes());
            payload.push(b' ');
        }
        if f.details {
            payload.extend_from_slice(
                format!(
                    "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
                    escape(&m.node_id),
                    escape(service_id),
                    escape(&m.task_id)
                )
                .as_bytes(),
            );
        }
        payload.extend_from_slice(line);
        payload.push(b'\n');
        if !f.raw {
            push_header(&mut out, if m.stream == 2 { 2 } else { 1 }, payload.len());
        }
        out.extend_from_slice(&payload);
    }
    out
}

/// A frame's header: the stream, three zeros, the big-endian length.
fn push_header(out: &mut Vec<u8>, stream: u8, len: usize) {
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Go's `url.QueryEscape` for the characters IDs and names may hold.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `since` is unix seconds, with an optional fraction (`1796025591.000000000`).
fn since(q: &query::Query) -> ApiResult<i64> {
    match q.get("since").map(String::as_str) {
        None | Some("") | Some("0") => Ok(0),
        Some(s) => s
            .split('.')
            .next()
            .and_then(|secs| secs.parse::<i64>().ok())
            .ok_or_else(|| ApiError::bad_request(format!("invalid since {s:?}"))),
    }
}

fn tail(q: &query::Query) -> ApiResult<i64> {
    match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => Ok(-1),
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("invalid tail {n:?}"))),
    }
}

async fn logs(
    backend: Backend,
    version: ApiVersion,
    q: query::Query,
    service: String,
    task: String,
) -> ApiResult<Response> {
    let stdout = flag(&q, "stdout");
    let stderr = flag(&q, "stderr");
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "must specify at least one of 'stdout' or 'stderr'",
        ));
    }
    let mut control = backend.control();
    // The service (by the task's, for a task's logs): its ID for the details, its TTY for the
    // format.
    let service = if task.is_empty() {
        control
            .get_service(GetServiceRequest { service })
            .await?
            .into_inner()
    } else {
        let t = super::tasks::find(&backend, &task).await?;
        control
            .get_service(GetServiceRequest {
                service: t.service_id.clone(),
            })
            .await?
            .into_inner()
    };
    let tty = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .is_some_and(|c| c.tty);
    let format = Format {
        stdout,
        stderr,
        timestamps: flag(&q, "timestamps"),
        details: flag(&q, "details"),
        raw: tty,
    };
    let request = ServiceLogsRequest {
        service: if task.is_empty() {
            service.id.clone()
        } else {
            String::new()
        },
        task,
        follow: flag(&q, "follow"),
        tail: tail(&q)?,
        since: since(&q)?,
        timestamps: format.timestamps,
    };
    let stream = control.service_logs(request).await?.into_inner();
    let service_id = service.id.clone();
    let body = stream.map(move |m| match m {
        Ok(m) => Ok::<_, std::io::Error>(Bytes::from(frames(&m, &service_id, format))),
        Err(status) => {
            // Docker's stream 3: an error while the stream is already under way (a TTY
            // service's raw stream has no streams: the text goes as it is).
            let text = format!("Error grabbing logs: {}\n", status.message());
            let mut out = Vec::new();
            if !format.raw {
                push_header(&mut out, 3, text.len());
            }
            out.extend_from_slice(text.as_bytes());
            Ok(Bytes::from(out))
        }
    });
    let content_type = if !tty && version.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn service(
    State(backend): State<Backend>,
    Extension(version): Extension<ApiVersion>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    logs(backend, version, q, id, String::new()).await
}

pub async fn task(
    State(backend): State<Backend>,
    Extension(version): Extension<ApiVersion>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    logs(backend, version, q, String::new(), id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(stream: u32, data: &str) -> LogMessage {
        LogMessage {
            task_id: "t1".into(),
            node_id: "n1".into(),
            service_name: "web".into(),
            slot: 1,
            timestamp: 1_796_025_591_000_000_000,
            stream,
            data: data.as_bytes().to_vec(),
        }
    }

    const ALL: Format = Format {
        stdout: true,
        stderr: true,
        timestamps: false,
        details: true,
        raw: false,
    };

    #[test]
    fn each_line_is_one_frame_with_its_details() {
        let out = frames(&message(1, "hello\nworld\n"), "s1", ALL);
        let first = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello\n";
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..4], &[0, 0, 0]);
        assert_eq!(
            u32::from_be_bytes([out[4], out[5], out[6], out[7]]) as usize,
            first.len()
        );
        assert_eq!(&out[8..8 + first.len()], first.as_bytes());
        let second = &out[8 + first.len()..];
        assert!(second[8..].ends_with(b"t1 world\n"));
    }

    #[test]
    fn stderr_raw_and_timestamps() {
        let plain = Format {
            details: false,
            timestamps: true,
            ..ALL
        };
        let out = frames(&message(2, "oops"), "s1", plain);
        assert_eq!(out[0], 2);
        assert_eq!(&out[8..], b"2026-11-30T07:59:51.000000000Z oops\n");
        let only_stdout = Format {
            stderr: false,
            ..ALL
        };
        assert!(frames(&message(2, "oops"), "s1", only_stdout).is_empty());
        let raw = Format {
            raw: true,
            details: false,
            ..ALL
        };
        assert_eq!(frames(&message(1, "x"), "s1", raw), b"x\n");
        let mut binary = message(1, "");
        binary.data = vec![0xff, b'a', b'\n'];
        assert_eq!(frames(&binary, "s1", raw), [0xff, b'a', b'\n']);
        assert_eq!(rfc3339_fixed(0), "0001-01-01T00:00:00.000000000Z");
    }
}
