//! Merging of the `-c` files, in order, at the value level (after interpolation, before
//! typing), as docker's `merge.go` does in spirit:
//!
//! - services merge by name, key by key: scalars, `command`, `entrypoint` and
//!   `healthcheck.test` are replaced; mappings (`deploy`, `environment`, `labels`, …) merge
//!   key-wise, their list and mapping forms alike; `ports` merge keyed by published port and
//!   protocol (the target when unpublished), `secrets`/`configs` by source, `volumes` by
//!   target; other lists are appended without duplicates;
//! - the entries of the top-level `networks`, `volumes`, `secrets` and `configs` are replaced
//!   whole, by key;
//! - a null in a later file leaves the earlier value alone.

use serde_norway::{Mapping, Value};

use super::values::{err, index, join, key_text, parse_short_port, scalar, R};

pub(super) fn files(base: &mut Mapping, over: Mapping) -> R<()> {
    for (k, v) in over {
        let key = key_text("", &k)?;
        let section = matches!(
            key.as_str(),
            "services" | "networks" | "volumes" | "secrets" | "configs"
        );
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) if key == "services" => services(b, o)?,
            (Some(Value::Mapping(b)), Value::Mapping(o)) if section => {
                for (name, def) in o {
                    b.insert(name, def);
                }
            }
            (Some(_), Value::Null) if section => {}
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    Ok(())
}

fn services(base: &mut Mapping, over: Mapping) -> R<()> {
    for (name, svc) in over {
        let path = join("services", &key_text("services", &name)?);
        match base.get_mut(&name) {
            Some(b) => service(&path, b, svc)?,
            None => {
                base.insert(name, svc);
            }
        }
    }
    Ok(())
}

fn service(path: &str, base: &mut Value, over: Value) -> R<()> {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, ov) in o {
                let key = key_text(path, &k)?;
                match b.get_mut(&k) {
                    Some(bv) => field(&join(path, &key), &key, bv, ov)?,
                    None => {
                        b.insert(k, ov);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
    Ok(())
}

fn field(path: &str, key: &str, bv: &mut Value, ov: Value) -> R<()> {
    if ov.is_null() {
        return Ok(());
    }
    match key {
        "command" | "entrypoint" => *bv = ov,
        "environment" | "labels" | "sysctls" => generic(key, bv, ov),
        "networks" => {
            let b = names_to_map(std::mem::take(bv), Value::Null);
            let o = names_to_map(ov, Value::Null);
            *bv = b;
            generic(key, bv, o);
        }
        "depends_on" => {
            let mut started = Mapping::new();
            started.insert("condition".into(), "service_started".into());
            let b = names_to_map(std::mem::take(bv), Value::Mapping(started.clone()));
            let o = names_to_map(ov, Value::Mapping(started));
            *bv = b;
            generic(key, bv, o);
        }
        "ports" => {
            let b = canonical_ports(path, std::mem::take(bv))?;
            let o = canonical_ports(path, ov)?;
            *bv = b;
            keyed(bv, o, port_key);
        }
        "volumes" => keyed(bv, ov, volume_key),
        "secrets" | "configs" => keyed(bv, ov, source_key),
        "dns" | "dns_search" | "env_file" | "cap_add" | "cap_drop" | "tmpfs" => {
            let b = as_list(std::mem::take(bv));
            *bv = b;
            generic(key, bv, as_list(ov));
        }
        "extra_hosts" => {
            let b = hosts_list(std::mem::take(bv));
            *bv = b;
            generic(key, bv, hosts_list(ov));
        }
        "logging" => {
            let differ = matches!(
                (bv.get("driver"), ov.get("driver")),
                (Some(a), Some(b)) if a != b
            );
            if differ {
                *bv = ov;
            } else {
                generic(key, bv, ov);
            }
        }
        _ => generic(key, bv, ov),
    }
    Ok(())
}

/// The general rule: mappings merge key-wise, lists append without duplicates, anything else
/// is replaced; `test` (a healthcheck's) is always replaced.
fn generic(key: &str, bv: &mut Value, ov: Value) {
    if ov.is_null() {
        return;
    }
    if key == "test" {
        *bv = ov;
        return;
    }
    let ov = if matches!(key, "labels" | "environment" | "sysctls") {
        let b = kv_to_map(std::mem::take(bv));
        *bv = b;
        kv_to_map(ov)
    } else {
        ov
    };
    match (bv, ov) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let sub = k.as_str().unwrap_or_default().to_string();
                match b.get_mut(&k) {
                    Some(x) => generic(&sub, x, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) => {
            for item in o {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `["A=1", "B"]` as `{A: "1", B: null}`; a mapping or anything else as is.
fn kv_to_map(v: Value) -> Value {
    let Value::Sequence(items) = v else { return v };
    let mut m = Mapping::new();
    for item in &items {
        let Ok(Some(s)) = scalar("", item) else {
            return Value::Sequence(items);
        };
        match s.split_once('=') {
            Some((k, val)) => m.insert(k.into(), val.into()),
            None => m.insert(s.into(), Value::Null),
        };
    }
    Value::Mapping(m)
}

/// `[a, b]` as `{a: empty, b: empty}`; a mapping or anything else as is.
fn names_to_map(v: Value, empty: Value) -> Value {
    let Value::Sequence(items) = v else { return v };
    let mut m = Mapping::new();
    for item in &items {
        let Ok(Some(s)) = scalar("", item) else {
            return Value::Sequence(items);
        };
        m.insert(s.into(), empty.clone());
    }
    Value::Mapping(m)
}

/// A scalar as a one-item list.
fn as_list(v: Value) -> Value {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Value::Sequence(vec![v]),
        other => other,
    }
}

/// `extra_hosts` as a list of `host:ip`.
fn hosts_list(v: Value) -> Value {
    match v {
        Value::Mapping(m) => {
            let mut out = Vec::new();
            for (k, ip) in &m {
                match (scalar("", k), scalar("", ip)) {
                    (Ok(Some(k)), Ok(Some(ip))) => out.push(Value::String(format!("{k}:{ip}"))),
                    _ => return Value::Mapping(m),
                }
            }
            Value::Sequence(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => match s.split_once('=') {
                        Some((h, ip)) => Value::String(format!("{h}:{ip}")),
                        None => Value::String(s),
                    },
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// Replaces the items of `base` that have the key of an item of `over`, appends the others.
fn keyed(base: &mut Value, over: Value, key: fn(&Value) -> Option<String>) {
    let (Value::Sequence(b), Value::Sequence(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for item in o {
        let k = key(item);
        let pos = k
            .as_ref()
            .and_then(|k| b.iter().position(|x| key(x).as_ref() == Some(k)));
        match pos {
            Some(p) => b[p] = item.clone(),
            None if !b.contains(item) => b.push(item.clone()),
            None => {}
        }
    }
}

/// Short ports as long mappings (ranges expanded; a host IP kept as `host_ip` so that the
/// typing warns about it).
fn canonical_ports(path: &str, v: Value) -> R<Value> {
    let Value::Sequence(items) = v else {
        return Ok(v);
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match &item {
            Value::String(_) | Value::Number(_) => {
                let spec = scalar("", &item)?.unwrap_or_default();
                let ports = parse_short_port(&spec).map_err(|m| err(&index(path, i), m))?;
                for p in ports {
                    let mut m = Mapping::new();
                    m.insert("target".into(), p.target.into());
                    if let Some(published) = p.published {
                        m.insert("published".into(), published.into());
                    }
                    m.insert("protocol".into(), p.protocol.into());
                    m.insert("mode".into(), "ingress".into());
                    if let Some(ip) = p.host_ip {
                        m.insert("host_ip".into(), ip.into());
                    }
                    out.push(Value::Mapping(m));
                }
            }
            _ => out.push(item),
        }
    }
    Ok(Value::Sequence(out))
}

fn field_text(v: &Value, key: &str) -> Option<String> {
    scalar("", v.get(key)?).ok().flatten()
}

fn port_key(v: &Value) -> Option<String> {
    let protocol = field_text(v, "protocol")
        .unwrap_or_else(|| "tcp".to_string())
        .to_ascii_lowercase();
    match field_text(v, "published") {
        Some(p) => Some(format!("{}/{protocol}", p.trim())),
        None => Some(format!(
            "unpublished {}/{protocol}",
            field_text(v, "target")?.trim()
        )),
    }
}

fn volume_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let mut parts = s.split(':');
            let first = parts.next()?;
            Some(parts.next().unwrap_or(first).to_string())
        }
        _ => field_text(v, "target"),
    }
}

fn source_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => field_text(v, "source"),
    }
}
