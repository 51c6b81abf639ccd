//! Secrets and configs on the manager: which services and tasks use which version, resolving
//! a service's references, what each node must hold, and which old versions can go.

pub mod seal;

use std::collections::{BTreeMap, BTreeSet};

use orch_api::data::{check_references, kind_name, DEFAULT_MODE};
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    DataKey, DataKind, DataObject, DataPayload, DataReference, ServiceSpec, Task, TaskSpec,
    TaskState,
};

use crate::state::store::Tables;
use seal::DataKey as SealKey;

/// Every secret and config reference of a task spec.
pub fn refs(spec: Option<&TaskSpec>) -> impl Iterator<Item = (DataKind, &DataReference)> {
    let container = spec.and_then(|s| s.container.as_ref());
    let secrets = container
        .into_iter()
        .flat_map(|c| c.secrets.iter().map(|r| (DataKind::Secret, r)));
    let configs = container
        .into_iter()
        .flat_map(|c| c.configs.iter().map(|r| (DataKind::Config, r)));
    secrets.chain(configs)
}

fn service_refs(spec: Option<&ServiceSpec>) -> impl Iterator<Item = (DataKind, &DataReference)> {
    refs(spec.and_then(|s| s.task.as_ref()))
}

/// Resolves a service spec's references against the store: each names an existing secret
/// (config) by name or ID; the version defaults to the latest; target, owner and mode get
/// docker's defaults; two references may not land on one file.
pub fn resolve_references(view: &Tables, spec: &mut ServiceSpec) -> Result<(), String> {
    let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) else {
        return Ok(());
    };
    for (kind, refs) in [
        (DataKind::Secret, &mut container.secrets),
        (DataKind::Config, &mut container.configs),
    ] {
        for r in refs.iter_mut() {
            let wanted = if r.name.is_empty() { &r.id } else { &r.name };
            let object = view
                .find_data(kind, wanted)
                .map_err(|_| format!("{} not found: {wanted}", kind_name(kind)))?;
            let latest = latest_version(&object);
            if r.version == 0 {
                r.version = latest;
            } else if !object.versions.iter().any(|v| v.version == r.version) {
                return Err(format!(
                    "{} {wanted} has no version {}",
                    kind_name(kind),
                    r.version
                ));
            }
            r.id = object.id.clone();
            r.name = object
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            if r.target.is_empty() {
                r.target = r.name.clone();
            }
            if r.uid.is_empty() {
                r.uid = "0".into();
            }
            if r.gid.is_empty() {
                r.gid = "0".into();
            }
            if r.mode == 0 {
                r.mode = DEFAULT_MODE;
            }
        }
        check_references(kind, refs)?;
    }
    Ok(())
}

pub fn latest_version(d: &DataObject) -> u32 {
    d.versions.last().map_or(0, |v| v.version)
}

/// Services whose spec (or previous spec, kept for rollback) uses `id`: name -> versions.
pub fn users(view: &Tables, id: &str) -> BTreeMap<String, BTreeSet<u32>> {
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for s in view.services() {
        let name = s
            .spec
            .as_ref()
            .map(|sp| sp.name.clone())
            .unwrap_or_default();
        for spec in [s.spec.as_ref(), s.previous_spec.as_ref()] {
            for (_, r) in service_refs(spec).filter(|(_, r)| r.id == id) {
                out.entry(name.clone()).or_default().insert(r.version);
            }
        }
    }
    out
}

/// Services whose current spec uses `id` (what `rm` refuses for and `rotate` updates).
pub fn current_users(view: &Tables, id: &str) -> Vec<String> {
    view.services()
        .filter(|s| service_refs(s.spec.as_ref()).any(|(_, r)| r.id == id))
        .filter_map(|s| s.spec.as_ref().map(|sp| sp.name.clone()))
        .collect()
}

/// A task that still has (or may get) a container needs its data.
pub fn is_needed(t: &Task) -> bool {
    !t.node_id.is_empty()
        && t.observed_state() >= TaskState::Assigned
        && t.desired_state() <= TaskState::Running
        && t.observed_state() <= TaskState::Running
}

/// The (ID, version) pairs the node's tasks need.
pub fn needed_by_node(view: &Tables, node_id: &str) -> BTreeSet<(String, u32)> {
    view.tasks_of_node(node_id)
        .filter(|t| is_needed(t))
        .flat_map(|t| refs(t.spec.as_ref()).map(|(_, r)| (r.id.clone(), r.version)))
        .collect()
}

/// The (ID, version) pairs one task uses.
pub fn used_by_task(t: &Task) -> BTreeSet<(String, u32)> {
    refs(t.spec.as_ref())
        .map(|(_, r)| (r.id.clone(), r.version))
        .collect()
}

/// What a node gets for (ID, version): the data in the clear (a secret opened with the data
/// key). None when the object or version is gone, or does not open (logged).
pub fn payload(view: &Tables, key: &SealKey, id: &str, version: u32) -> Option<DataPayload> {
    let object = view.data_object(id)?;
    let v = object.versions.iter().find(|v| v.version == version)?;
    let data = match object.kind() {
        DataKind::Secret => match key.open(&v.data) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(secret = %id, version, error = %e, "cannot open a secret");
                return None;
            }
        },
        DataKind::Config => v.data.clone(),
    };
    Some(DataPayload {
        key: Some(DataKey {
            id: id.to_string(),
            version,
        }),
        kind: object.kind,
        data,
        template_driver: object
            .spec
            .as_ref()
            .map(|s| s.template_driver.clone())
            .unwrap_or_default(),
    })
}

/// Old versions nothing uses any more (no service spec, previous spec, or task that may
/// still run): one update per object that drops them. The latest version always stays.
pub fn stale_versions(view: &Tables) -> Vec<Action> {
    // Most passes: nothing has an old version (the walk below is over every task).
    if !view.data_versions_exist() {
        return Vec::new();
    }
    let mut in_use: BTreeSet<(String, u32)> = BTreeSet::new();
    for s in view.services() {
        for spec in [s.spec.as_ref(), s.previous_spec.as_ref()] {
            in_use.extend(service_refs(spec).map(|(_, r)| (r.id.clone(), r.version)));
        }
    }
    // Ended tasks kept as history do not hold a version; one that may still run does.
    for t in view.tasks().filter(|t| {
        t.desired_state() <= TaskState::Running || t.observed_state() < TaskState::Complete
    }) {
        in_use.extend(used_by_task(t));
    }
    let mut actions = Vec::new();
    for kind in [DataKind::Secret, DataKind::Config] {
        for object in view.data_objects(kind).filter(|d| d.versions.len() > 1) {
            let latest = latest_version(object);
            let keep: Vec<_> = object
                .versions
                .iter()
                .filter(|v| v.version == latest || in_use.contains(&(object.id.clone(), v.version)))
                .cloned()
                .collect();
            if keep.len() < object.versions.len() {
                let mut d = (**object).clone();
                d.versions = keep;
                actions.push(Action::UpdateData(d));
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orch_api::pb::{ContainerSpec, DataSpec, DataVersion, Service};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::state::store::Store;
    use crate::testkit;

    fn object(id: &str, kind: DataKind, name: &str, versions: &[u32]) -> DataObject {
        DataObject {
            id: id.into(),
            kind: kind as i32,
            spec: Some(DataSpec {
                name: name.into(),
                ..Default::default()
            }),
            versions: versions
                .iter()
                .map(|v| DataVersion {
                    version: *v,
                    data: format!("v{v}").into_bytes(),
                    created_at: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn using(mut s: Service, secrets: Vec<DataReference>) -> Service {
        let task = s
            .spec
            .as_mut()
            .and_then(|sp| sp.task.as_mut())
            .expect("task");
        task.container = Some(ContainerSpec {
            image: "busybox".into(),
            secrets,
            ..Default::default()
        });
        s
    }

    fn by_name(name: &str) -> DataReference {
        DataReference {
            name: name.into(),
            ..Default::default()
        }
    }

    async fn store_with(actions: Vec<Action>) -> Arc<Store> {
        let store = Arc::new(Store::new());
        Applier::new(store.clone())
            .propose(actions)
            .await
            .expect("set up the store");
        store
    }

    #[tokio::test]
    async fn references_resolve_to_the_latest_version_with_dockers_defaults() {
        let store = store_with(vec![
            Action::CreateData(object("d1", DataKind::Secret, "db", &[1, 2])),
            Action::CreateData(object("c1", DataKind::Config, "db", &[1])),
        ])
        .await;
        let mut spec = using(testkit::replicated("web", 1), vec![by_name("db")])
            .spec
            .expect("spec");
        resolve_references(&store.view(), &mut spec).expect("resolves");
        let r = &spec
            .task
            .as_ref()
            .expect("set")
            .container
            .as_ref()
            .expect("set")
            .secrets[0];
        assert_eq!(
            (
                r.id.as_str(),
                r.version,
                r.target.as_str(),
                r.uid.as_str(),
                r.mode
            ),
            ("d1", 2, "db", "0", 0o444)
        );

        let mut missing = using(testkit::replicated("web", 1), vec![by_name("nope")])
            .spec
            .expect("spec");
        assert_eq!(
            resolve_references(&store.view(), &mut missing),
            Err("secret not found: nope".into())
        );
        let mut twice = using(
            testkit::replicated("web", 1),
            vec![by_name("db"), by_name("db")],
        )
        .spec
        .expect("spec");
        let err = resolve_references(&store.view(), &mut twice).expect_err("same target");
        assert!(err.contains("conflicting target"), "{err}");
    }

    #[tokio::test]
    async fn a_node_needs_only_what_its_live_tasks_use_and_old_versions_go_when_unused() {
        let web = using(testkit::replicated("web", 1), vec![by_name("db")]);
        let mut spec = web.spec.clone().expect("spec");
        let store = store_with(vec![Action::CreateData(object(
            "d1",
            DataKind::Secret,
            "db",
            &[1, 2, 3],
        ))])
        .await;
        resolve_references(&store.view(), &mut spec).expect("resolves");
        // The service runs version 3, was on 1 before (its previous spec); 2 is unused.
        let mut previous = spec.clone();
        previous
            .task
            .as_mut()
            .expect("set")
            .container
            .as_mut()
            .expect("set")
            .secrets[0]
            .version = 1;
        let web = Service {
            spec: Some(spec),
            previous_spec: Some(previous),
            ..web
        };
        let mut running = testkit::running("t1", &web, 1, "n1");
        let mut ended = testkit::task(
            "t0",
            &web,
            1,
            "n2",
            TaskState::Failed,
            TaskState::Shutdown,
            0,
        );
        ended.spec = running.spec.clone();
        running.status.as_mut().expect("set").state = TaskState::Running as i32;
        Applier::new(store.clone())
            .propose(vec![
                Action::CreateService(web),
                Action::CreateTask(running),
                Action::CreateTask(ended),
            ])
            .await
            .expect("service");
        let view = store.view();
        assert_eq!(
            needed_by_node(&view, "n1"),
            BTreeSet::from([("d1".to_string(), 3)])
        );
        assert!(
            needed_by_node(&view, "n2").is_empty(),
            "an ended task needs nothing"
        );
        assert!(needed_by_node(&view, "n3").is_empty());
        assert_eq!(users(&view, "d1")["web"], BTreeSet::from([1, 3]));
        let gc = stale_versions(&view);
        let [Action::UpdateData(d)] = gc.as_slice() else {
            panic!("one update: {gc:?}");
        };
        let kept: Vec<u32> = d.versions.iter().map(|v| v.version).collect();
        assert_eq!(kept, vec![1, 3]);
    }
}
