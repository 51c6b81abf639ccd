//! The secrets and configs this node's tasks use: held in memory only (never in a file of the
//! agent's), filled from the dispatcher's assignments, and turned into files for a task's
//! container on a tmpfs of its own (see [`TaskFiles`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orch_api::data::{container_path, DEFAULT_MODE};
use orch_api::pb::{Assignments, DataKind, DataPayload, DataReference, Task};
use orch_api::template;
use parking_lot::Mutex;

/// Under this directory, one per node: the tmpfs mounts of its tasks' secrets and configs.
pub const FILES_ROOT: &str = "/run/orch";

type Key = (String, u32);

/// The payloads the dispatcher sent, by (ID, version).
#[derive(Clone, Default)]
pub struct DataStore {
    held: Arc<Mutex<BTreeMap<Key, DataPayload>>>,
}

fn key_of(p: &DataPayload) -> Key {
    p.key
        .as_ref()
        .map_or_else(Default::default, |k| (k.id.clone(), k.version))
}

impl DataStore {
    /// Takes the data part of an assignment message: a full set replaces what is held.
    pub fn apply(&self, a: &Assignments) {
        let mut held = self.held.lock();
        if a.full {
            held.clear();
        }
        for p in &a.data {
            held.insert(key_of(p), p.clone());
        }
        for k in &a.data_removed {
            held.remove(&(k.id.clone(), k.version));
        }
    }

    /// What is held, as "ID@version" (for `orch info`; never the data).
    pub fn held(&self) -> Vec<String> {
        self.held
            .lock()
            .keys()
            .map(|(id, v)| format!("{id}@{v}"))
            .collect()
    }

    fn get(&self, id: &str, version: u32) -> Option<DataPayload> {
        self.held.lock().get(&(id.to_string(), version)).cloned()
    }

    /// The files the task's references make, rendered for the task (templates).
    pub fn files_for(&self, task: &Task, node: &NodeFacts) -> Result<Vec<DataFile>, String> {
        let Some(spec) = task.spec.as_ref().and_then(|s| s.container.as_ref()) else {
            return Ok(Vec::new());
        };
        let refs = spec
            .secrets
            .iter()
            .map(|r| (DataKind::Secret, r))
            .chain(spec.configs.iter().map(|r| (DataKind::Config, r)));
        let mut files = Vec::new();
        for (kind, r) in refs {
            let payload = self.get(&r.id, r.version).ok_or_else(|| {
                format!(
                    "{} {} (version {}) has not reached this node",
                    orch_api::data::kind_name(kind),
                    r.name,
                    r.version
                )
            })?;
            let data = if payload.template_driver.is_empty() {
                payload.data
            } else {
                template::parse(&payload.data)
                    .map_err(|e| format!("{} {}: {e}", orch_api::data::kind_name(kind), r.name))?
                    .render(&node.context(task, &spec.env))
            };
            files.push(DataFile::new(kind, r, data));
        }
        Ok(files)
    }
}

/// What a template may say about the node.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub node_id: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
}

impl NodeFacts {
    fn context(&self, task: &Task, env: &[String]) -> template::Context {
        let service_labels = task
            .spec
            .as_ref()
            .and_then(|s| s.container.as_ref())
            .map(|c| c.labels.clone().into_iter().collect())
            .unwrap_or_default();
        let instance = if task.slot > 0 {
            task.slot.to_string()
        } else {
            task.node_id.clone()
        };
        template::Context {
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            service_labels,
            node_id: self.node_id.clone(),
            node_hostname: self.hostname.clone(),
            node_os: self.os.clone(),
            node_arch: self.arch.clone(),
            task_id: task.id.clone(),
            task_name: format!("{}.{instance}.{}", task.service_name, task.id),
            task_slot: task.slot,
            env: env.to_vec(),
        }
    }
}

/// One file for a container: where it goes, whose it is, and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DataFile {
    pub container_path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for DataFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataFile({} {}:{} {:o}, {} bytes)",
            self.container_path,
            self.uid,
            self.gid,
            self.mode,
            self.data.len()
        )
    }
}

impl DataFile {
    fn new(kind: DataKind, r: &DataReference, data: Vec<u8>) -> DataFile {
        let target = if r.target.is_empty() {
            &r.name
        } else {
            &r.target
        };
        DataFile {
            container_path: container_path(kind, target),
            uid: r.uid.parse().unwrap_or(0),
            gid: r.gid.parse().unwrap_or(0),
            mode: if r.mode == 0 { DEFAULT_MODE } else { r.mode },
            data,
        }
    }
}

/// A task's files on the host: a tmpfs of its own (memory, never the node's disk), written,
/// then remounted read-only; each file is bind-mounted read-only into the container. Removed
/// with the container; leftovers of a crashed agent are removed at its next start.
pub struct TaskFiles;

impl TaskFiles {
    /// Where the task's tmpfs goes under `root`.
    pub fn dir(root: &Path, task_id: &str) -> PathBuf {
        root.join(task_id)
    }

    /// Mounts the tmpfs and writes `files`; returns (host path, container path) per file.
    pub fn create(
        root: &Path,
        task_id: &str,
        files: &[DataFile],
    ) -> Result<Vec<(PathBuf, String)>, String> {
        use nix::mount::{mount, MsFlags};
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = Self::dir(root, task_id);
        Self::remove(root, task_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
        let size: usize = files.iter().map(|f| f.data.len() + 4096).sum();
        let options = format!("mode=0700,size={}", size.max(64 * 1024));
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| {
            format!(
                "cannot mount a tmpfs for the task's secrets at {}: {e}",
                dir.display()
            )
        })?;
        let written = (|| {
            let mut binds = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let path = dir.join(format!("{i}"));
                std::fs::write(&path, &f.data)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                nix::unistd::chown(
                    &path,
                    Some(nix::unistd::Uid::from_raw(f.uid)),
                    Some(nix::unistd::Gid::from_raw(f.gid)),
                )
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
                    .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
                binds.push((path, f.container_path.clone()));
            }
            mount(
                None::<&str>,
                &dir,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("cannot make the secrets tmpfs read-only: {e}"))?;
            Ok(binds)
        })();
        if written.is_err() {
            Self::remove(root, task_id);
        }
        written
    }

    /// Unmounts and removes the task's tmpfs, if there is one.
    pub fn remove(root: &Path, task_id: &str) {
        let dir = Self::dir(root, task_id);
        if !dir.exists() {
            return;
        }
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&dir);
    }

    /// Removes every task tmpfs of a node and its directory (`orch leave`, the lab's and the
    /// tests' teardown of nodes that were killed).
    pub fn remove_node(node_id: &str) {
        let root = Path::new(FILES_ROOT).join(node_id);
        Self::reconcile(&root, &BTreeSet::new());
        let _ = std::fs::remove_dir(&root);
    }

    /// Removes every task tmpfs under `root` but those of `keep` (a restarted agent's
    /// leftovers).
    pub fn reconcile(root: &Path, keep: &BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                Self::remove(root, &name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{ContainerSpec, DataKey, TaskSpec};

    use super::*;

    fn payload(id: &str, version: u32, data: &str, driver: &str) -> DataPayload {
        DataPayload {
            key: Some(DataKey {
                id: id.into(),
                version,
            }),
            kind: DataKind::Secret as i32,
            data: data.as_bytes().to_vec(),
            template_driver: driver.into(),
        }
    }

    fn task_using(secrets: Vec<DataReference>, configs: Vec<DataReference>) -> Task {
        Task {
            id: "t1".into(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 3,
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    env: vec!["PORT=8080".into()],
                    secrets,
                    configs,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn reference(id: &str, name: &str, version: u32, target: &str) -> DataReference {
        DataReference {
            id: id.into(),
            name: name.into(),
            version,
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn files_come_from_the_held_version_rendered_for_the_task() {
        let store = DataStore::default();
        store.apply(&Assignments {
            full: true,
            data: vec![
                payload("d1", 1, "old", ""),
                payload("d1", 2, "new", ""),
                payload(
                    "c1",
                    1,
                    "port={{env \"PORT\"}} slot={{.Task.Slot}} on {{.Node.Hostname}}",
                    "golang",
                ),
            ],
            ..Default::default()
        });
        let task = task_using(
            vec![reference("d1", "db", 2, "")],
            vec![reference("c1", "app", 1, "/etc/app.conf")],
        );
        let node = NodeFacts {
            hostname: "host-a".into(),
            ..Default::default()
        };
        let files = store.files_for(&task, &node).expect("files");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].container_path, "/run/secrets/db");
        assert_eq!(files[0].data, b"new");
        assert_eq!(files[0].mode, 0o444);
        assert_eq!(files[1].container_path, "/etc/app.conf");
        assert_eq!(files[1].data, b"port=8080 slot=3 on host-a");

        // Forgotten when the dispatcher says so; a task using it then cannot start.
        store.apply(&Assignments {
            data_removed: vec![DataKey {
                id: "d1".into(),
                version: 2,
            }],
            ..Default::default()
        });
        assert_eq!(store.held(), vec!["c1@1", "d1@1"]);
        let err = store.files_for(&task, &node).expect_err("missing");
        assert!(err.contains("has not reached this node"), "{err}");

        // A full set replaces everything.
        store.apply(&Assignments {
            full: true,
            ..Default::default()
        });
        assert!(store.held().is_empty());
    }

    #[test]
    fn custom_owner_and_mode_are_kept() {
        let mut r = reference("d1", "db", 1, "pw");
        r.uid = "1000".into();
        r.gid = "50".into();
        r.mode = 0o400;
        let f = DataFile::new(DataKind::Secret, &r, b"x".to_vec());
        assert_eq!(
            (f.container_path.as_str(), f.uid, f.gid, f.mode),
            ("/run/secrets/pw", 1000, 50, 0o400)
        );
    }
}
