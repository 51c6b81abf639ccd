//! Secrets and configs: the rules docker holds them to (names, sizes, targets, modes), shared by
//! the CLI, the control API and the agent.

use crate::pb::{DataKind, DataReference};

/// Secrets: at most this many bytes, exclusive (docker: "less than 512000 bytes").
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// Configs: at most this many bytes, exclusive.
pub const MAX_CONFIG_BYTES: usize = 1000 * 1024;
/// Where relative secret targets go in the container.
pub const SECRETS_DIR: &str = "/run/secrets";
/// The default file mode of a mounted secret or config.
pub const DEFAULT_MODE: u32 = 0o444;

pub fn kind_name(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Secret => "secret",
        DataKind::Config => "config",
    }
}

/// Docker's name rule for secrets and configs (and its message).
pub fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let ok = !name.is_empty()
        && name.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(inner_ok);
    if ok {
        Ok(())
    } else {
        Err("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]".into())
    }
}

/// Docker's size rule (and its message).
pub fn check_size(kind: DataKind, data: &[u8]) -> Result<(), String> {
    let max = match kind {
        DataKind::Secret => MAX_SECRET_BYTES,
        DataKind::Config => MAX_CONFIG_BYTES,
    };
    if data.is_empty() || data.len() >= max {
        return Err(format!(
            "{} data must be larger than 0 and less than {max} bytes",
            kind_name(kind)
        ));
    }
    Ok(())
}

/// The path a reference's file has in the container.
pub fn container_path(kind: DataKind, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    match kind {
        DataKind::Secret => format!("{SECRETS_DIR}/{target}"),
        DataKind::Config => format!("/{target}"),
    }
}

/// Checks a service's references of one kind: each names a source, targets are usable
/// paths, and no two land on the same file (swarm's message).
pub fn check_references(kind: DataKind, refs: &[DataReference]) -> Result<(), String> {
    let what = kind_name(kind);
    let mut seen: Vec<(String, &str)> = Vec::new();
    for r in refs {
        if r.name.is_empty() && r.id.is_empty() {
            return Err(format!("{what} reference without a source"));
        }
        let target = if r.target.is_empty() {
            &r.name
        } else {
            &r.target
        };
        if target.is_empty()
            || target.split('/').any(|part| part == "..")
            || target.contains('\0')
            || target == "/"
        {
            return Err(format!("invalid {what} target {target:?} for {}", r.name));
        }
        if r.mode > 0o7777 {
            return Err(format!(
                "invalid file mode {:o} for {what} {}",
                r.mode, r.name
            ));
        }
        let path = container_path(kind, target);
        if let Some((_, other)) = seen.iter().find(|(p, _)| *p == path) {
            return Err(format!(
                "{what} references '{other}' and '{}' have a conflicting target: '{target}'",
                r.name
            ));
        }
        seen.push((path, &r.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, target: &str) -> DataReference {
        DataReference {
            name: name.into(),
            target: target.into(),
            mode: DEFAULT_MODE,
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_dockers_rule() {
        for good in ["db", "db_pw.v2", "A-1", "x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-db", "db-", "a b", "ä", &"a".repeat(65), "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_follow_dockers_limits() {
        assert!(check_size(DataKind::Secret, b"").is_err());
        assert!(check_size(DataKind::Secret, &vec![1; MAX_SECRET_BYTES - 1]).is_ok());
        let err = check_size(DataKind::Secret, &vec![1; MAX_SECRET_BYTES]).expect_err("limit");
        assert_eq!(
            err,
            "secret data must be larger than 0 and less than 512000 bytes"
        );
        assert!(check_size(DataKind::Config, &vec![1; MAX_SECRET_BYTES]).is_ok());
        assert!(check_size(DataKind::Config, &vec![1; MAX_CONFIG_BYTES]).is_err());
    }

    #[test]
    fn targets_resolve_and_conflicts_are_refused() {
        assert_eq!(container_path(DataKind::Secret, "db"), "/run/secrets/db");
        assert_eq!(container_path(DataKind::Config, "app.conf"), "/app.conf");
        assert_eq!(
            container_path(DataKind::Config, "/etc/app.conf"),
            "/etc/app.conf"
        );
        assert!(check_references(
            DataKind::Secret,
            &[reference("a", ""), reference("b", "other")]
        )
        .is_ok());
        let err = check_references(
            DataKind::Secret,
            &[reference("a", "t"), reference("b", "/run/secrets/t")],
        )
        .expect_err("same file");
        assert_eq!(
            err,
            "secret references 'a' and 'b' have a conflicting target: '/run/secrets/t'"
        );
        assert!(check_references(DataKind::Config, &[reference("a", "../etc/passwd")]).is_err());
        let mut bad_mode = reference("a", "");
        bad_mode.mode = 0o17777;
        assert!(check_references(DataKind::Config, &[bad_mode]).is_err());
    }
}
