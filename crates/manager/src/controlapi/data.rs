//! Secrets and configs: create, inspect, list (with the services using each version), update
//! (labels only), remove (refused while a service uses it), and rotate (a new version, and
//! every service using the object rolled onto it with its update policy).

use orch_api::data::{check_name, check_size, kind_name};
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    CreateDataRequest, DataKind, DataObject, DataSpec, DataUsers, DataVersion, ListDataResponse,
    RotateDataRequest, RotateDataResponse, UpdateDataRequest, UpdateState, UpdateStatus,
};
use orch_api::template;

use crate::ctx::ManagerCtx;
use crate::data::{current_users, latest_version, users};
use crate::error::{ManagerError, Result};
use crate::handles::conflict::retry_conflicts;
use crate::raft::node::ProposeError;
use crate::state::store::ApplyError;

fn kind_of(kind: i32) -> Result<DataKind> {
    DataKind::try_from(kind)
        .map_err(|_| ManagerError::InvalidArgument(format!("unknown object kind {kind}")))
}

/// What the API shows of an object: a secret's data never leaves the managers.
fn shown(d: &DataObject) -> DataObject {
    let mut d = d.clone();
    if d.kind() == DataKind::Secret {
        for v in &mut d.versions {
            v.data.clear();
        }
    }
    d
}

/// The data as stored: sealed for a secret, checked as a template when it is one.
fn stored_data(ctx: &ManagerCtx, kind: DataKind, spec: &DataSpec, data: &[u8]) -> Result<Vec<u8>> {
    check_size(kind, data).map_err(ManagerError::InvalidArgument)?;
    if !spec.template_driver.is_empty() {
        template::parse(data).map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
    }
    match kind {
        DataKind::Secret => ctx.data_key.seal(data).map_err(ManagerError::Internal),
        DataKind::Config => Ok(data.to_vec()),
    }
}

pub async fn create(ctx: &ManagerCtx, req: CreateDataRequest) -> Result<DataObject> {
    let kind = kind_of(req.kind)?;
    let spec = req.spec.unwrap_or_default();
    check_name(&spec.name).map_err(ManagerError::InvalidArgument)?;
    template::check_driver(&spec.template_driver)
        .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
    let data = stored_data(ctx, kind, &spec, &req.data)?;
    let exists =
        || ManagerError::AlreadyExists(format!("{} {} already exists", kind_name(kind), spec.name));
    if ctx
        .read_view()
        .await?
        .data_by_name(kind, &spec.name)
        .is_some()
    {
        return Err(exists());
    }
    let object = DataObject {
        id: orch_api::ids::new_id(),
        kind: kind as i32,
        versions: vec![DataVersion {
            version: 1,
            data,
            created_at: orch_api::now_nanos(),
        }],
        spec: Some(spec.clone()),
        ..Default::default()
    };
    ctx.propose(vec![Action::CreateData(object.clone())])
        .await
        .map_err(|e| match e {
            ManagerError::Propose(ProposeError::Rejected(ApplyError::NameConflict { .. })) => {
                exists()
            }
            other => other,
        })?;
    let view = ctx.store.view();
    let created = view
        .data_object(&object.id)
        .ok_or_else(|| ManagerError::Internal("created object vanished".into()))?;
    Ok(shown(created))
}

pub async fn get(ctx: &ManagerCtx, kind: i32, reference: &str) -> Result<DataObject> {
    let kind = kind_of(kind)?;
    let view = ctx.read_view().await?;
    let found = view.find_data(kind, reference)?;
    Ok(shown(&found))
}

pub async fn list(ctx: &ManagerCtx, kind: i32) -> Result<ListDataResponse> {
    let kind = kind_of(kind)?;
    let view = ctx.read_view().await?;
    let mut out = ListDataResponse::default();
    for d in view.data_objects(kind) {
        let services = users(&view, &d.id)
            .into_iter()
            .flat_map(|(name, versions)| versions.into_iter().map(move |v| format!("{name}@{v}")))
            .collect();
        out.users.insert(d.id.clone(), DataUsers { services });
        out.objects.push(shown(d));
    }
    Ok(out)
}

pub async fn update(ctx: &ManagerCtx, req: UpdateDataRequest) -> Result<DataObject> {
    let kind = kind_of(req.kind)?;
    let view = ctx.read_view().await?;
    let current = view.find_data(kind, &req.name)?;
    let mut d = (*current).clone();
    super::check_read_version(kind_name(kind), &d.id, req.version, d.meta.as_ref())?;
    if let Some(data) = &req.data {
        if latest_data(ctx, kind, &d).as_ref() != Some(data) {
            return Err(ManagerError::InvalidArgument(
                "only updates to Labels are allowed".into(),
            ));
        }
    }
    d.spec.get_or_insert_with(Default::default).labels = req.labels;
    ctx.propose(vec![Action::UpdateData(d.clone())]).await?;
    let view = ctx.store.view();
    Ok(shown(view.data_object(&d.id).unwrap_or(&current)))
}

/// The latest version's data, unsealed.
fn latest_data(ctx: &ManagerCtx, kind: DataKind, d: &DataObject) -> Option<Vec<u8>> {
    let v = d.versions.last()?;
    match kind {
        DataKind::Secret => ctx.data_key.open(&v.data).ok(),
        DataKind::Config => Some(v.data.clone()),
    }
}

/// docker's message for an object a service still uses.
fn in_use(kind: DataKind, name: &str, services: &[String]) -> ManagerError {
    let noun = if services.len() == 1 {
        "service"
    } else {
        "services"
    };
    ManagerError::InvalidArgument(format!(
        "{} '{name}' is in use by the following {noun}: {}",
        kind_name(kind),
        services.join(", ")
    ))
}

pub async fn remove(ctx: &ManagerCtx, kind: i32, reference: &str) -> Result<()> {
    let kind = kind_of(kind)?;
    let view = ctx.read_view().await?;
    let d = view.find_data(kind, reference)?;
    let name = crate::state::store::data_name(&d).to_string();
    let services: Vec<String> = users(&view, &d.id).into_keys().collect();
    if !services.is_empty() {
        return Err(in_use(kind, &name, &services));
    }
    ctx.propose(vec![Action::DeleteData(d.id.clone())])
        .await
        .map_err(|e| match e {
            // A service took it up between the read and the commit.
            ManagerError::Propose(ProposeError::Rejected(ApplyError::Refused(_))) => {
                in_use(kind, &name, &current_users(&ctx.store.view(), &d.id))
            }
            other => other,
        })?;
    Ok(())
}

/// Adds the next version and, in the same transaction, moves every service that uses the
/// object onto it: a spec change like `service update`, so each rolls with its own update
/// policy (parallelism, delay, monitor, failure action and rollback).
pub async fn rotate(ctx: &ManagerCtx, req: RotateDataRequest) -> Result<RotateDataResponse> {
    let kind = kind_of(req.kind)?;
    let req = &req;
    retry_conflicts(|| async move {
        let view = ctx.read_view().await?;
        let current = view.find_data(kind, &req.name)?;
        let mut d = (*current).clone();
        let spec = d.spec.clone().unwrap_or_default();
        if req.if_changed && latest_data(ctx, kind, &d).is_some_and(|plain| plain == req.data) {
            return Ok(RotateDataResponse {
                object: Some(shown(&current)),
                version: latest_version(&d),
                services: Vec::new(),
            });
        }
        let data = stored_data(ctx, kind, &spec, &req.data)?;
        let version = latest_version(&d) + 1;
        let now = orch_api::now_nanos();
        d.versions.push(DataVersion {
            version,
            data,
            created_at: now,
        });
        let mut actions = vec![Action::UpdateData(d.clone())];
        let mut services = Vec::new();
        for s in view.services() {
            let Some(old_spec) = s.spec.clone() else {
                continue;
            };
            let mut new_spec = old_spec.clone();
            let mut moved = false;
            if let Some(c) = new_spec.task.as_mut().and_then(|t| t.container.as_mut()) {
                let refs = match kind {
                    DataKind::Secret => &mut c.secrets,
                    DataKind::Config => &mut c.configs,
                };
                for r in refs.iter_mut().filter(|r| r.id == d.id) {
                    r.version = version;
                    moved = true;
                }
            }
            if !moved {
                continue;
            }
            let mut service = (**s).clone();
            services.push(new_spec.name.clone());
            service.previous_spec = Some(old_spec);
            service.spec = Some(new_spec);
            service.spec_version += 1;
            service.update_status = Some(UpdateStatus {
                state: UpdateState::Updating as i32,
                started_at: now,
                message: format!(
                    "{} {} rotated to version {version}",
                    kind_name(kind),
                    spec.name
                ),
                ..Default::default()
            });
            if let Some(job) = service.job_status.as_mut() {
                job.job_iteration += 1;
                job.last_execution = now;
            }
            actions.push(Action::UpdateService(service));
        }
        ctx.propose(actions).await?;
        let view = ctx.store.view();
        Ok(RotateDataResponse {
            object: view.data_object(&d.id).map(|o| shown(o)),
            version,
            services,
        })
    })
    .await
}
