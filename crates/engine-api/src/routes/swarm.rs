//! `/swarm`: inspect, update (with token rotation), leave. The Engine API socket belongs to a
//! node already in a swarm (`orch init`/`orch join` make the node), so init and join answer
//! dockerd's "already part of a swarm".

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use orch_api::pb::{Empty, LeaveRequest, UpdateClusterRequest};
use serde_json::{json, Value};

use super::{json_body, ok_empty, ok_json};
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, flag};

const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";

pub async fn inspect(State(backend): State<Backend>) -> ApiResult<Response> {
    let cluster = backend.control().get_cluster(Empty {}).await?.into_inner();
    Ok(ok_json(objects::swarm(&cluster, true)))
}

pub async fn init() -> ApiError {
    ApiError::unavailable(ALREADY_IN_SWARM)
}

pub async fn join() -> ApiError {
    ApiError::unavailable(ALREADY_IN_SWARM)
}

pub async fn leave(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    backend
        .node()
        .leave(LeaveRequest {
            force: flag(&q, "force"),
        })
        .await?;
    Ok(ok_empty())
}

/// Spec fields orch does not let change: an update that changes one is refused rather than
/// silently dropped.
const FIXED: &[(&str, &str)] = &[
    ("/Labels", "swarm labels"),
    ("/Raft/KeepOldSnapshots", "Raft.KeepOldSnapshots"),
    ("/Raft/ElectionTick", "Raft.ElectionTick"),
    ("/Raft/HeartbeatTick", "Raft.HeartbeatTick"),
    ("/CAConfig/ExternalCAs", "external CAs"),
    ("/CAConfig/SigningCACert", "the root CA (no root rotation)"),
    ("/CAConfig/SigningCAKey", "the root CA (no root rotation)"),
    ("/CAConfig/ForceRotate", "the root CA (no root rotation)"),
    ("/EncryptionConfig/AutoLockManagers", "autolock"),
];

fn int_at(spec: &Value, pointer: &str) -> ApiResult<Option<i64>> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid JSON: {} must be an integer",
                pointer.trim_start_matches('/').replace('/', ".")
            ))
        }),
    }
}

/// The update docker sends: the whole spec it read, changed, with `version=` and the rotate
/// flags.
pub fn update_request(
    spec: &Value,
    current: &Value,
    q: &query::Query,
) -> ApiResult<UpdateClusterRequest> {
    if !spec.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON: the swarm spec must be an object",
        ));
    }
    for (pointer, what) in FIXED {
        let asked = spec.pointer(pointer);
        let empty = |v: Option<&Value>| {
            matches!(v, None | Some(Value::Null))
                || v == Some(&json!(false))
                || v == Some(&json!({}))
                || v == Some(&json!([]))
                || v == Some(&json!(0))
        };
        if !empty(asked) && asked != current.pointer(pointer) {
            return Err(ApiError::bad_request(format!(
                "orch does not support changing {what}"
            )));
        }
    }
    if flag(q, "rotateManagerUnlockKey") {
        return Err(ApiError::bad_request(
            "orch does not lock managers, so there is no unlock key to rotate",
        ));
    }
    // Docker sends 0 for a setting it leaves as is.
    let setting = |v: Option<i64>, what: &str| -> ApiResult<Option<i64>> {
        match v {
            Some(n) if n < 0 => Err(ApiError::bad_request(format!(
                "{what} must not be negative"
            ))),
            Some(0) | None => Ok(None),
            Some(n) => Ok(Some(n)),
        }
    };
    Ok(UpdateClusterRequest {
        version: query::version(q)?,
        task_history_retention_limit: match int_at(
            spec,
            "/Orchestration/TaskHistoryRetentionLimit",
        )? {
            Some(n) if n < 0 => {
                return Err(ApiError::bad_request(
                    "TaskHistoryRetentionLimit must not be negative",
                ))
            }
            other => other,
        },
        snapshot_interval: setting(int_at(spec, "/Raft/SnapshotInterval")?, "SnapshotInterval")?
            .map(|n| n as u64),
        heartbeat_period: setting(
            int_at(spec, "/Dispatcher/HeartbeatPeriod")?,
            "HeartbeatPeriod",
        )?,
        node_cert_expiry: setting(int_at(spec, "/CAConfig/NodeCertExpiry")?, "NodeCertExpiry")?,
        rotate_worker_token: flag(q, "rotateWorkerToken"),
        rotate_manager_token: flag(q, "rotateManagerToken"),
    })
}

pub async fn update(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
    body: Bytes,
) -> ApiResult<Response> {
    let spec = json_body(&body)?;
    let mut control = backend.control();
    let cluster = control.get_cluster(Empty {}).await?.into_inner();
    let current = objects::swarm(&cluster, false)["Spec"].clone();
    let request = update_request(&spec, &current, &q)?;
    control.update_cluster(request).await?;
    Ok(ok_empty())
}

pub async fn unlock_key(State(backend): State<Backend>) -> ApiResult<Response> {
    // A worker answers "not a swarm manager", as for every swarm route.
    backend.control().get_cluster(Empty {}).await?;
    Ok(ok_json(json!({ "UnlockKey": "" })))
}

pub async fn unlock() -> ApiError {
    ApiError::bad_request("swarm is not locked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Value {
        objects::swarm(&orch_api::pb::Cluster::default(), false)["Spec"].clone()
    }

    fn q(pairs: &[(&str, &str)]) -> query::Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_spec_read_back_with_a_change_becomes_that_change() {
        let mut spec = current();
        spec["Orchestration"]["TaskHistoryRetentionLimit"] = json!(10);
        let r = update_request(
            &spec,
            &current(),
            &q(&[
                ("version", "7"),
                ("rotateWorkerToken", "true"),
                ("rotateManagerToken", "false"),
            ]),
        )
        .expect("update");
        assert_eq!(r.version, 7);
        assert_eq!(r.task_history_retention_limit, Some(10));
        assert!(r.rotate_worker_token && !r.rotate_manager_token);
    }

    #[test]
    fn what_orch_cannot_change_is_refused() {
        let mut spec = current();
        spec["EncryptionConfig"]["AutoLockManagers"] = json!(true);
        let e = update_request(&spec, &current(), &q(&[("version", "1")])).expect_err("autolock");
        assert_eq!(e.message, "orch does not support changing autolock");
        let e = update_request(&current(), &current(), &q(&[])).expect_err("no version");
        assert_eq!(e.status.as_u16(), 400);
        let mut spec = current();
        spec["Dispatcher"]["HeartbeatPeriod"] = json!("5s");
        assert!(update_request(&spec, &current(), &q(&[("version", "1")])).is_err());
    }
}
