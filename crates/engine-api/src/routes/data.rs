//! `/secrets` and `/configs`: one kind of object in orch (named, versioned data); the Engine
//! API sees the latest version. A secret's data is never returned.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use orch_api::pb::{
    CreateDataRequest, DataKind, DataObject, DataSpec, GetDataRequest, UpdateDataRequest,
};
use serde_json::{json, Value};

use super::{created, json_body, labels_field, no_content, ok_json, str_field};
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, Filters};
use crate::read;

const FILTERS: &[&str] = &["id", "label", "name", "names"];

/// Swarm's answer to an update that changes more than labels.
const LABELS_ONLY: &str =
    "rpc error: code = InvalidArgument desc = only updates to Labels are allowed";

fn matches(f: &Filters, d: &DataObject) -> bool {
    let spec = d.spec.clone().unwrap_or_default();
    f.any("id", |v| d.id.starts_with(v))
        && f.any("name", |v| spec.name.starts_with(v))
        && f.any("names", |v| spec.name == v)
        && f.labels("label", &spec.labels)
}

/// The spec and data of a create or update body.
fn spec_from_engine(body: &Value) -> ApiResult<(DataSpec, Option<Vec<u8>>)> {
    if body.get("Driver").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::bad_request(
            "orch keeps secrets and configs in its own store: drivers are not supported",
        ));
    }
    let template_driver = match body.get("Templating") {
        None | Some(Value::Null) => String::new(),
        Some(t) => str_field(t, "Name")?.to_string(),
    };
    let data = match body.get("Data") {
        None | Some(Value::Null) => None,
        Some(Value::String(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid JSON: Data is not base64: {e}"))
                })?,
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid JSON: Data must be a base64 string",
            ))
        }
    };
    Ok((
        DataSpec {
            name: str_field(body, "Name")?.to_string(),
            labels: labels_field(body, "Labels")?,
            template_driver,
        },
        data,
    ))
}

async fn list(backend: Backend, kind: DataKind, q: query::Query) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let objects = read::data(&mut backend.control(), kind).await?;
    Ok(ok_json(Value::Array(
        objects
            .iter()
            .filter(|d| matches(&filters, d))
            .map(objects::data)
            .collect(),
    )))
}

async fn create(backend: Backend, kind: DataKind, body: Bytes) -> ApiResult<Response> {
    let (spec, data) = spec_from_engine(&json_body(&body)?)?;
    let object = backend
        .control()
        .create_data(CreateDataRequest {
            kind: kind as i32,
            spec: Some(spec),
            data: data.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(created(json!({ "ID": object.id })))
}

async fn inspect(backend: Backend, kind: DataKind, name: String) -> ApiResult<Response> {
    let object = backend
        .control()
        .get_data(GetDataRequest {
            kind: kind as i32,
            name,
        })
        .await?
        .into_inner();
    Ok(ok_json(objects::data(&object)))
}

async fn remove(backend: Backend, kind: DataKind, name: String) -> ApiResult<Response> {
    backend
        .control()
        .remove_data(GetDataRequest {
            kind: kind as i32,
            name,
        })
        .await?;
    Ok(no_content())
}

/// Only labels may change, as in swarm: the name and data sent back must be the current ones.
async fn update(
    backend: Backend,
    kind: DataKind,
    name: String,
    q: query::Query,
    body: Bytes,
) -> ApiResult<Response> {
    let version = query::version(&q)?;
    let (spec, data) = spec_from_engine(&json_body(&body)?)?;
    let mut control = backend.control();
    let current = control
        .get_data(GetDataRequest {
            kind: kind as i32,
            name: name.clone(),
        })
        .await?
        .into_inner();
    let current_spec = current.spec.unwrap_or_default();
    if (!spec.name.is_empty() && spec.name != current_spec.name)
        || spec.template_driver != current_spec.template_driver
    {
        return Err(ApiError::bad_request(LABELS_ONLY));
    }
    control
        .update_data(UpdateDataRequest {
            kind: kind as i32,
            name: current.id,
            version,
            labels: spec.labels,
            data,
        })
        .await
        .map_err(|status| {
            // The manager's refusal of changed data, in swarm's words.
            if status.code() == tonic::Code::InvalidArgument
                && status
                    .message()
                    .ends_with("only updates to Labels are allowed")
            {
                ApiError::bad_request(LABELS_ONLY)
            } else {
                ApiError::from(status)
            }
        })?;
    Ok(super::ok_empty())
}

macro_rules! kind_routes {
    ($kind:expr, $list:ident, $create:ident, $inspect:ident, $remove:ident, $update:ident) => {
        pub async fn $list(
            State(backend): State<Backend>,
            Query(q): Query<query::Query>,
        ) -> ApiResult<Response> {
            list(backend, $kind, q).await
        }

        pub async fn $create(State(backend): State<Backend>, body: Bytes) -> ApiResult<Response> {
            create(backend, $kind, body).await
        }

        pub async fn $inspect(
            State(backend): State<Backend>,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            inspect(backend, $kind, id).await
        }

        pub async fn $remove(
            State(backend): State<Backend>,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            remove(backend, $kind, id).await
        }

        pub async fn $update(
            State(backend): State<Backend>,
            Path(id): Path<String>,
            Query(q): Query<query::Query>,
            body: Bytes,
        ) -> ApiResult<Response> {
            update(backend, $kind, id, q, body).await
        }
    };
}

kind_routes!(
    DataKind::Secret,
    list_secrets,
    create_secret,
    inspect_secret,
    remove_secret,
    update_secret
);
kind_routes!(
    DataKind::Config,
    list_configs,
    create_config,
    inspect_config,
    remove_config,
    update_config
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_and_bad_ones_are_refused() {
        let (spec, data) =
            spec_from_engine(&json!({"Name":"s1","Labels":{"a":"b"},"Data":"aHVudGVyMg=="}))
                .expect("body");
        assert_eq!(spec.name, "s1");
        assert_eq!(data.as_deref(), Some(&b"hunter2"[..]));
        let (t, _) =
            spec_from_engine(&json!({"Name":"t","Data":"","Templating":{"Name":"golang"}}))
                .expect("template");
        assert_eq!(t.template_driver, "golang");
        for bad in [
            json!({"Name":"s","Data":"not base64!"}),
            json!({"Name":"s","Data":5}),
            json!({"Name":"s","Driver":{"Name":"vault"}}),
            json!({"Name":["s"]}),
        ] {
            assert_eq!(
                spec_from_engine(&bad).expect_err("bad").status.as_u16(),
                400,
                "{bad}"
            );
        }
    }
}
