//! A node's data directory: its config, certificates, raft log, control socket, log file.
//! Files are written atomically (temporary file, fsync, rename); keys and the raft log are 0600;
//! `node.json` is written last, so a directory without it holds no node.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What a node remembers across restarts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeConfig {
    pub node_id: String,
    pub cluster_id: String,
    pub hostname: String,
    /// Where a manager listens (host:port).
    pub listen_addr: String,
    /// Where other nodes reach this one (host:port).
    pub advertise_addr: String,
    /// The address given to `--advertise-addr` as typed (an interface name is resolved again
    /// at each start).
    #[serde(default)]
    pub advertise_spec: String,
    pub docker_host: String,
    /// Managers to reach, best first (refreshed from the session).
    pub managers: Vec<String>,
    /// This node's raft ID while it is a raft member; 0 otherwise.
    #[serde(default)]
    pub raft_id: u64,
    /// The raft members as of joining (used until the store knows them).
    #[serde(default)]
    pub raft_peers: Vec<RaftPeer>,
    /// A TCP address (host:port) where the node also serves the Docker Engine API, to clients
    /// with a manager certificate of this cluster; empty: only `docker.sock`.
    #[serde(default)]
    pub engine_api_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RaftPeer {
    pub raft_id: u64,
    pub node_id: String,
    pub addr: String,
}

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("node.json")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certificates")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.certs_dir().join("swarm-root-ca.crt")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.certs_dir().join("swarm-node.crt")
    }
    pub fn node_key(&self) -> PathBuf {
        self.certs_dir().join("swarm-node.key")
    }
    /// Managers only: the key that seals secrets in the raft log (0600).
    pub fn data_key(&self) -> PathBuf {
        self.certs_dir().join("raft-data.key")
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }
    pub fn raft_db(&self) -> PathBuf {
        self.raft_dir().join("raft.redb")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("orch.sock")
    }
    /// The Docker Engine API's socket.
    pub fn engine_socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("orch.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("orch.pid")
    }

    /// Whether this directory holds a node (init or join completed).
    pub fn is_initialized(&self) -> bool {
        self.config_path().exists()
    }

    /// Creates the directory (mode 0700).
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create data directory {}", self.root.display()))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        fs::create_dir_all(self.certs_dir())?;
        fs::set_permissions(self.certs_dir(), fs::Permissions::from_mode(0o700))?;
        fs::create_dir_all(self.raft_dir())?;
        fs::set_permissions(self.raft_dir(), fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    pub fn load_config(&self) -> Result<NodeConfig> {
        let path = self.config_path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid node config", path.display()))
    }

    pub fn save_config(&self, config: &NodeConfig) -> Result<()> {
        let text = serde_json::to_vec_pretty(config)?;
        write_atomic(&self.config_path(), &text, 0o600)
    }

    pub fn write_certs(&self, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
        write_atomic(&self.ca_cert(), ca_pem.as_bytes(), 0o644)?;
        write_atomic(&self.node_key(), key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.node_cert(), cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    pub fn read_certs(&self) -> Result<(String, String, String)> {
        let read = |p: PathBuf| {
            fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
        };
        Ok((
            read(self.ca_cert())?,
            read(self.node_cert())?,
            read(self.node_key())?,
        ))
    }

    /// Removes everything that makes this directory a node (after `leave`, or a failed setup).
    pub fn wipe(&self) -> Result<()> {
        let _ = fs::remove_file(self.config_path());
        for dir in [self.certs_dir(), self.raft_dir()] {
            if dir.exists() {
                fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        let _ = fs::remove_file(self.socket());
        Ok(())
    }
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The default data directory: /var/lib/orch for root, $XDG_DATA_HOME/orch otherwise.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/orch");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("orch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_config_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dd = DataDir::new(dir.path().join("node"));
        dd.create().expect("create");
        dd.write_certs("ca", "cert", "key").expect("certs");
        let mode = fs::metadata(dd.node_key())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&dd.root).expect("meta").permissions().mode() & 0o777,
            0o700
        );
        assert!(!dd.is_initialized());
        let config = NodeConfig {
            node_id: "n".into(),
            managers: vec!["a:1".into()],
            ..Default::default()
        };
        dd.save_config(&config).expect("save");
        assert!(dd.is_initialized());
        assert_eq!(
            dd.load_config().expect("load").managers,
            vec!["a:1".to_string()]
        );
        dd.wipe().expect("wipe");
        assert!(!dd.is_initialized());
        assert!(!dd.node_key().exists());
    }
}
