//! `GET /events`: the cluster's events as a stream of JSON lines.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use orch_api::pb::Empty;
use tokio_stream::wrappers::BroadcastStream;

use crate::backend::Backend;
use crate::convert::time::now_nanos;
use crate::error::{ApiError, ApiResult};
use crate::events::Event;
use crate::query::{self, Filters};

const FILTERS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

fn wanted(f: &Filters, e: &Event) -> bool {
    let name = e
        .attributes
        .iter()
        .find(|(k, _)| k == "name")
        .map_or("", |(_, v)| v.as_str());
    let actor = |kind: &str| {
        // A filter on another kind of object (container=…) leaves nothing of this one.
        f.values(kind).is_empty()
            || (e.kind == kind && f.any(kind, |v| e.id == v || name == v || e.id.starts_with(v)))
    };
    let attributes: HashMap<String, String> = e.attributes.iter().cloned().collect();
    f.any("type", |v| v == e.kind)
        && f.any("event", |v| v == e.action)
        && f.any("scope", |v| v == "swarm")
        && ["config", "network", "node", "secret", "service"]
            .iter()
            .all(|k| actor(k))
        && ["container", "daemon", "image", "plugin", "volume"]
            .iter()
            .all(|k| f.values(k).is_empty())
        && f.labels("label", &attributes)
}

/// A unix time in seconds (with an optional fraction) as nanoseconds.
fn unix_nanos(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().ok().filter(|s| *s >= 0)?;
    let frac = format!("{frac:0<9}");
    let nanos: i64 = frac.get(..9)?.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

pub async fn stream(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let until = match q.get("until").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            unix_nanos(s).ok_or_else(|| ApiError::bad_request(format!("invalid until {s:?}")))?,
        ),
    };
    if let Some(s) = q.get("since").filter(|s| !s.is_empty()) {
        unix_nanos(s).ok_or_else(|| ApiError::bad_request(format!("invalid since {s:?}")))?;
    }
    // A swarm route: a worker answers "not a swarm manager".
    backend.control().get_cluster(Empty {}).await?;
    let rx = backend.events().subscribe();
    let events = BroadcastStream::new(rx).filter_map(move |e| {
        let line = match e {
            Ok(e) if wanted(&filters, &e) => {
                let mut line = e.to_json(now_nanos()).to_string();
                line.push('\n');
                Some(Ok::<_, std::io::Error>(Bytes::from(line)))
            }
            _ => None,
        };
        async move { line }
    });
    let body = match until {
        None => Body::from_stream(events),
        Some(until) => {
            let left =
                Duration::from_nanos(u64::try_from(until.saturating_sub(now_nanos())).unwrap_or(0));
            Body::from_stream(events.take_until(tokio::time::sleep(left)))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_pick_types_actions_and_actors() {
        let q = |f: &str| query::Query::from([("filters".to_string(), f.to_string())]);
        let e = Event::new("service", "create", "s1", "web");
        let f = Filters::parse(
            &q(r#"{"type":{"service":true},"event":{"create":true}}"#),
            FILTERS,
        )
        .expect("filters");
        assert!(wanted(&f, &e));
        let f = Filters::parse(&q(r#"{"service":{"web":true}}"#), FILTERS).expect("filters");
        assert!(wanted(&f, &e));
        assert!(!wanted(&f, &Event::new("node", "update", "n1", "m1")));
        let f = Filters::parse(&q(r#"{"container":{"x":true}}"#), FILTERS).expect("filters");
        assert!(!wanted(&f, &e));
        assert_eq!(unix_nanos("1796025591.5"), Some(1_796_025_591_500_000_000));
        assert_eq!(unix_nanos("x"), None);
        assert_eq!(unix_nanos("-9223372036"), None);
        assert_eq!(unix_nanos("99999999999999999"), None);
    }
}
