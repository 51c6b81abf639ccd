//! The compose file loader of `orch stack deploy` and `orch stack config`.
//!
//! The pipeline follows docker's (see `shared/docs/reference/stacks-secrets-configs.md` §1.0),
//! with the compose-spec additions orch adopts (`.env`, nested defaults, long `depends_on`,
//! long `env_file`):
//!
//! 1. each file is parsed into a YAML value, its tags dropped and its merge keys (`<<`)
//!    applied; the top level must be a mapping;
//! 2. its `version` is checked (absent or 3.x), and must agree with the other files';
//! 3. forbidden service keys (`extends`, `mem_limit`, …) fail the load, before interpolation;
//! 4. its string values are interpolated (`interp`);
//! 5. the files are merged in order at the value level (`merge`);
//! 6. the merged value is turned into the typed model, collecting the ignored keys by path
//!    (`walk`), and the references between sections are checked.
//!
//! `to_yaml` (`emit`) prints a model back as a compose file that loads to the same model.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_norway::{Mapping, Value};

use super::model;

mod emit;
mod interp;
mod merge;
mod values;
mod walk;

#[cfg(test)]
mod tests;

/// Where variables come from: the shell's environment, then (beyond docker) a `.env` file
/// beside the first compose file, or the `--env-file` given instead; the shell wins.
#[derive(Debug, Clone, Default)]
pub struct Env {
    shell: BTreeMap<String, String>,
    dotenv: BTreeMap<String, String>,
}

impl Env {
    /// `shell` is the process environment (or a test's); `env_file` replaces the `.env` that
    /// is otherwise read, when present, from `first_file_dir`. A missing `.env` is fine, a
    /// missing `env_file` is an error.
    pub fn new(
        shell: BTreeMap<String, String>,
        env_file: Option<&Path>,
        first_file_dir: &Path,
    ) -> Result<Env, LoadError> {
        let dotenv = match env_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    LoadError::new(
                        "",
                        format!("couldn't read env file {}: {e}", path.display()),
                    )
                })?;
                parse_dotenv(&path.display().to_string(), &text)?
            }
            None => {
                let path = first_file_dir.join(".env");
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_dotenv(&path.display().to_string(), &text)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                    Err(e) => {
                        return Err(LoadError::new(
                            "",
                            format!("couldn't read env file {}: {e}", path.display()),
                        ))
                    }
                }
            }
        };
        Ok(Env { shell, dotenv })
    }

    /// [`Env::new`] with this process's environment (variables that are not UTF-8 skipped).
    pub fn from_process(env_file: Option<&Path>, first_file_dir: &Path) -> Result<Env, LoadError> {
        let shell = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Env::new(shell, env_file, first_file_dir)
    }

    /// A variable for interpolation: the shell's, else the env file's.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.shell
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .map(String::as_str)
    }

    /// A variable of the shell only (what a bare `KEY` in `environment` or an `env_file`
    /// takes, as docker's client does).
    pub fn shell(&self, name: &str) -> Option<&str> {
        self.shell.get(name).map(String::as_str)
    }
}

/// Reads a `.env` file: `KEY=VAL` lines, `#` comments, blank lines, an optional `export `
/// prefix, surrounding quotes stripped (with `\n`, `\"` and `\\` escapes inside double
/// quotes), and a ` # comment` after an unquoted value dropped. A line without `=` is skipped.
fn parse_dotenv(name: &str, text: &str) -> Result<BTreeMap<String, String>, LoadError> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(LoadError::new(
                "",
                format!("{name}:{}: invalid variable name {key:?}", n + 1),
            ));
        }
        out.insert(key.to_string(), dotenv_value(value.trim()));
    }
    Ok(out)
}

fn dotenv_value(v: &str) -> String {
    let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if quoted('\'') {
        return v[1..v.len() - 1].to_string();
    }
    if quoted('"') {
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c @ ('"' | '\\')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => out.push('\\'),
            }
        }
        return out;
    }
    // An unquoted value ends at a ` #` comment.
    let end = v
        .char_indices()
        .find(|&(i, c)| c == '#' && i > 0 && v[..i].ends_with(char::is_whitespace))
        .map_or(v.len(), |(i, _)| i);
    v[..end].trim_end().to_string()
}

/// A load failure: where (`services.web.deploy.replicas`, or "" for a whole-file problem)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

impl LoadError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> LoadError {
        LoadError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for LoadError {}

/// The directory that relative paths resolve against: the first file's (absolute), or the
/// current directory when the first file is `-` (stdin).
pub fn base_dir(files: &[PathBuf]) -> Result<PathBuf, LoadError> {
    let cwd = std::env::current_dir()
        .map_err(|e| LoadError::new("", format!("cannot get the current directory: {e}")))?;
    let dir = match files.first() {
        Some(f) if f.as_os_str() != "-" => f.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => PathBuf::new(),
    };
    Ok(clean_path(&cwd.join(dir)))
}

/// Loads, interpolates, checks and merges the files in order (`-` reads stdin).
pub fn load(files: &[PathBuf], env: &Env) -> Result<model::Loaded, LoadError> {
    let dir = base_dir(files)?;
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| LoadError::new("", format!("cannot read the standard input: {e}")))?;
            texts.push(("-".to_string(), text));
        } else {
            let text = std::fs::read_to_string(file)
                .map_err(|e| LoadError::new("", format!("cannot read {}: {e}", file.display())))?;
            texts.push((file.display().to_string(), text));
        }
    }
    load_texts(&texts, &dir, env)
}

/// Same from in-memory texts (name, text); `dir` resolves relative paths.
pub fn load_texts(
    texts: &[(String, String)],
    dir: &Path,
    env: &Env,
) -> Result<model::Loaded, LoadError> {
    if texts.is_empty() {
        return Err(LoadError::new("", "no compose file given"));
    }
    let mut interpolator = interp::Interpolator::new(env);
    let mut merged: Option<Mapping> = None;
    let mut version: Option<(String, String)> = None;
    for (name, text) in texts {
        let mut doc = parse(name, text)?;
        check_version(&doc, &mut version)?;
        check_forbidden(&doc)?;
        interpolator.file(&mut doc)?;
        merged = Some(match merged {
            None => doc,
            Some(mut base) => {
                merge::files(&mut base, doc)?;
                base
            }
        });
    }
    let merged = merged.unwrap_or_default();
    let dir = clean_path(dir);
    let mut walker = walk::Walker::new(env, &dir);
    let compose = walker.compose(&merged)?;
    walk::check_references(&compose, &walker.optional_deps)?;

    let mut warnings = interpolator.warnings();
    warnings.append(&mut walker.warnings);
    let mut unsupported = std::mem::take(&mut walker.unsupported);
    unsupported.sort();
    unsupported.dedup();
    if !unsupported.is_empty() {
        warnings.push(format!(
            "Ignoring unsupported options: {}",
            unsupported.join(", ")
        ));
    }
    let mut deprecated = std::mem::take(&mut walker.deprecated);
    deprecated.sort();
    deprecated.dedup();
    if !deprecated.is_empty() {
        warnings.push(format!(
            "Ignoring deprecated options: {}",
            deprecated.join(", ")
        ));
    }
    Ok(model::Loaded {
        compose,
        warnings,
        dir,
    })
}

/// The merged, interpolated result as YAML (for `orch stack config`): long forms, sorted
/// keys, durations as Go strings, sizes in bytes, `$` escaped as `$$`. `load_texts` reads it
/// back to the same model.
pub fn to_yaml(c: &model::Compose) -> String {
    emit::to_yaml(c)
}

/// Parses one file: YAML, tags dropped, merge keys applied, a mapping at the top.
fn parse(name: &str, text: &str) -> Result<Mapping, LoadError> {
    let mut doc: Value =
        serde_norway::from_str(text).map_err(|e| LoadError::new("", format!("{name}: {e}")))?;
    untag(&mut doc);
    // A merged-in mapping may hold a `<<` of its own: apply until none is left.
    let mut passes = 0;
    while has_merge_key(&doc) {
        passes += 1;
        if passes > 32 {
            return Err(LoadError::new(
                "",
                format!("{name}: merge keys nested too deeply"),
            ));
        }
        doc.apply_merge()
            .map_err(|e| LoadError::new("", format!("{name}: {e}")))?;
    }
    match doc {
        Value::Mapping(m) => Ok(m),
        _ => Err(LoadError::new(
            "",
            format!("{name}: top-level object must be a mapping"),
        )),
    }
}

fn untag(v: &mut Value) {
    if let Value::Tagged(t) = v {
        let inner = std::mem::replace(&mut t.value, Value::Null);
        *v = inner;
        untag(v);
        return;
    }
    match v {
        Value::Mapping(m) => m.values_mut().for_each(untag),
        Value::Sequence(s) => s.iter_mut().for_each(untag),
        _ => {}
    }
}

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.contains_key("<<") || m.values().any(has_merge_key),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        _ => false,
    }
}

/// Absent, `3` and `3.x` are fine; files that give a version must give the same one.
fn check_version(doc: &Mapping, seen: &mut Option<(String, String)>) -> Result<(), LoadError> {
    let raw = match doc.get("version") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(LoadError::new(
                "version",
                format!("must be a string, not {}", values::kind(other)),
            ))
        }
    };
    if raw != "3" && !raw.starts_with("3.") {
        return Err(LoadError::new(
            "",
            format!("unsupported Compose file version: {raw}"),
        ));
    }
    let normal = if raw == "3" {
        "3.13".to_string()
    } else {
        raw.clone()
    };
    match seen {
        Some((first, first_normal)) if *first_normal != normal => Err(LoadError::new(
            "",
            format!("version mismatched between two composefiles : {first} and {raw}"),
        )),
        Some(_) => Ok(()),
        None => {
            *seen = Some((raw, normal));
            Ok(())
        }
    }
}

/// Service keys that fail a stack deploy, with docker's hints.
const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    ("memswap_limit", "Set resource limits using deploy.resources"),
];

fn check_forbidden(doc: &Mapping) -> Result<(), LoadError> {
    let Some(Value::Mapping(services)) = doc.get("services") else {
        return Ok(());
    };
    let mut found: Vec<String> = Vec::new();
    for (name, service) in services {
        let Value::Mapping(service) = service else {
            continue;
        };
        if name.as_str().is_some_and(|n| n.starts_with("x-")) {
            continue;
        }
        for (key, hint) in FORBIDDEN {
            if service.contains_key(*key) {
                found.push(format!("{key}: {hint}"));
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    found.dedup();
    Err(LoadError::new(
        "",
        format!(
            "compose file contains unsupported options:\n\n{}",
            found.join("\n\n")
        ),
    ))
}

/// `path` without `.` components and with `..` applied, lexically (as Go's `filepath.Clean`).
pub(crate) fn clean_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}
