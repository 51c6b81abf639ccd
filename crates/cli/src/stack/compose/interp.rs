//! Variable interpolation of string values (never keys): `$VAR`, `${VAR}`, `${VAR:-def}`,
//! `${VAR-def}`, `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`, `$$`; defaults
//! may nest (`${A:-${B:-x}}`, beyond docker). An unset variable without a default becomes ""
//! and (beyond docker) is warned about once.

use serde_norway::{Mapping, Value};

use super::values::{err, index, join, key_text, R};
use super::Env;

/// The sections whose values are interpolated (as docker does).
const SECTIONS: &[&str] = &["services", "networks", "volumes", "secrets", "configs"];

/// How deep `${…}` may nest inside defaults.
const MAX_NESTING: usize = 32;

pub(super) struct Interpolator<'a> {
    env: &'a Env,
    unset: Vec<String>,
}

impl<'a> Interpolator<'a> {
    pub(super) fn new(env: &'a Env) -> Self {
        Interpolator {
            env,
            unset: Vec::new(),
        }
    }

    /// The warnings about unset variables, in the order they were met.
    pub(super) fn warnings(&self) -> Vec<String> {
        self.unset
            .iter()
            .map(|v| format!("The {v:?} variable is not set. Defaulting to a blank string."))
            .collect()
    }

    /// Interpolates one file's sections in place (`x-` extensions are left alone).
    pub(super) fn file(&mut self, doc: &mut Mapping) -> R<()> {
        for (k, v) in doc.iter_mut() {
            let Some(section) = k.as_str() else { continue };
            if SECTIONS.contains(&section) {
                self.value(section, v, 1)?;
            }
        }
        Ok(())
    }

    fn value(&mut self, path: &str, v: &mut Value, depth: usize) -> R<()> {
        match v {
            Value::String(s) => {
                let out = self.string(path, s)?;
                *s = out;
            }
            Value::Mapping(m) => {
                for (k, item) in m.iter_mut() {
                    let key = key_text(path, k)?;
                    // Extensions at the top of a section or of a definition are not ours.
                    if depth <= 2 && key.starts_with("x-") {
                        continue;
                    }
                    self.value(&join(path, &key), item, depth + 1)?;
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(&index(path, i), item, depth + 1)?;
                }
            }
            Value::Tagged(t) => self.value(path, &mut t.value, depth)?,
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Ok(())
    }

    /// One string, `path` naming it in errors.
    pub(super) fn string(&mut self, path: &str, s: &str) -> R<String> {
        if !s.contains('$') {
            return Ok(s.to_string());
        }
        self.expand(path, s, s, 0)
    }

    fn expand(&mut self, path: &str, whole: &str, s: &str, nesting: usize) -> R<String> {
        let invalid = || err(path, format!("Invalid template: {whole:?}"));
        if nesting > MAX_NESTING {
            return Err(invalid());
        }
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            let Some(next) = s[i..].find('$').map(|n| i + n) else {
                out.push_str(&s[i..]);
                break;
            };
            out.push_str(&s[i..next]);
            i = next;
            match b.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(b'{') => {
                    let end = closing_brace(s, i + 2).ok_or_else(invalid)?;
                    let value = self.braced(path, whole, &s[i + 2..end], nesting)?;
                    out.push_str(&value);
                    i = end + 1;
                }
                Some(&c) if is_name_start(c) => {
                    let len = name_len(&s[i + 1..]);
                    let name = &s[i + 1..i + 1 + len];
                    out.push_str(&self.var(name));
                    i += 1 + len;
                }
                _ => return Err(invalid()),
            }
        }
        Ok(out)
    }

    /// The inside of `${…}`.
    fn braced(&mut self, path: &str, whole: &str, inner: &str, nesting: usize) -> R<String> {
        let invalid = || err(path, format!("Invalid template: {whole:?}"));
        let len = name_len(inner);
        if len == 0 || !inner.as_bytes().first().copied().is_some_and(is_name_start) {
            return Err(invalid());
        }
        let name = &inner[..len];
        let rest = &inner[len..];
        if rest.is_empty() {
            return Ok(self.var(name));
        }
        let value = self.env.lookup(name).map(str::to_string);
        let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
        let (op, arg) = [":-", ":?", ":+", "-", "?", "+"]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|arg| (*op, arg)))
            .ok_or_else(invalid)?;
        let sub = |me: &mut Self| me.expand(path, whole, arg, nesting + 1);
        match op {
            ":-" if !set_nonempty => sub(self),
            "-" if value.is_none() => sub(self),
            ":-" | "-" => Ok(value.unwrap_or_default()),
            ":?" if !set_nonempty => Err(required(path, name, &sub(self)?)),
            "?" if value.is_none() => Err(required(path, name, &sub(self)?)),
            ":?" | "?" => Ok(value.unwrap_or_default()),
            ":+" if set_nonempty => sub(self),
            "+" if value.is_some() => sub(self),
            _ => Ok(String::new()),
        }
    }

    fn var(&mut self, name: &str) -> String {
        match self.env.lookup(name) {
            Some(v) => v.to_string(),
            None => {
                if !self.unset.iter().any(|u| u == name) {
                    self.unset.push(name.to_string());
                }
                String::new()
            }
        }
    }
}

fn required(path: &str, name: &str, message: &str) -> super::LoadError {
    if message.is_empty() {
        err(path, format!("required variable {name} is missing a value"))
    } else {
        err(
            path,
            format!("required variable {name} is missing a value: {message}"),
        )
    }
}

fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if !b.first().copied().is_some_and(is_name_start) {
        return 0;
    }
    b.iter()
        .take_while(|&&c| c == b'_' || c.is_ascii_alphanumeric())
        .count()
}

/// The index of the `}` closing a `${` whose inside starts at `start`, nested `${…}` and `$$`
/// skipped.
fn closing_brace(s: &str, start: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut j = start;
    while j < b.len() {
        match (b[j], b.get(j + 1)) {
            (b'$', Some(b'$')) => j += 2,
            (b'$', Some(b'{')) => {
                depth += 1;
                j += 2;
            }
            (b'}', _) if depth == 0 => return Some(j),
            (b'}', _) => {
                depth -= 1;
                j += 1;
            }
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn env() -> Env {
        let shell: BTreeMap<String, String> = [
            ("NAME", "web"),
            ("EMPTY", ""),
            ("TAG", "1.25"),
            ("B", "bee"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Env::new(shell, None, Path::new("/nonexistent-orch-test-dir")).expect("env")
    }

    #[test]
    fn forms() {
        let env = env();
        let cases: Vec<(&str, &str, &str)> = vec![
            ("plain", "nginx", "nginx"),
            ("dollar name", "$NAME", "web"),
            ("braced", "nginx:${TAG}", "nginx:1.25"),
            ("name ends at non-name char", "$NAME-x", "web-x"),
            ("adjacent", "${NAME}${TAG}", "web1.25"),
            ("colon dash unset", "${NOPE:-def}", "def"),
            ("colon dash empty", "${EMPTY:-def}", "def"),
            ("colon dash set", "${NAME:-def}", "web"),
            ("dash unset", "${NOPE-def}", "def"),
            ("dash empty keeps empty", "${EMPTY-def}", ""),
            ("empty default", "${NOPE:-}", ""),
            ("default with spaces and colons", "${NOPE:-a b:c}", "a b:c"),
            ("nested default", "${NOPE:-${B:-x}}", "bee"),
            ("nested twice", "${NOPE:-${NOPE2:-x}}", "x"),
            ("nested set outer", "${NAME:-${B}}", "web"),
            ("escaped dollar", "$$NAME", "$NAME"),
            ("escaped in braces default", "${NOPE:-$$x}", "$x"),
            ("plus set", "${NAME:+yes}", "yes"),
            ("plus unset", "${NOPE:+yes}", ""),
            ("plus empty", "${EMPTY+yes}", "yes"),
            ("question set", "${NAME:?must}", "web"),
            ("question empty allowed", "${EMPTY?must}", ""),
            ("unset becomes blank", "a${NOPE}b", "ab"),
            ("unicode around", "é$NAME€", "éweb€"),
        ];
        for (name, input, want) in cases {
            let mut i = Interpolator::new(&env);
            assert_eq!(i.string("p", input).expect(name), want, "{name}");
        }
    }

    #[test]
    fn errors() {
        let env = env();
        let cases: Vec<(&str, &str, &str)> = vec![
            ("open brace", "${", "Invalid template: \"${\""),
            ("unterminated", "a ${NAME", "Invalid template: \"a ${NAME\""),
            ("no name", "${-x}", "Invalid template: \"${-x}\""),
            ("bad operator", "${NAME!x}", "Invalid template"),
            ("lone dollar", "cost: 5$", "Invalid template"),
            ("digit after dollar", "$1", "Invalid template"),
            (
                "required unset",
                "${NOPE:?set it}",
                "required variable NOPE is missing a value: set it",
            ),
            (
                "required empty",
                "${EMPTY:?set it}",
                "required variable EMPTY is missing a value: set it",
            ),
            (
                "required no message",
                "${NOPE?}",
                "required variable NOPE is missing a value",
            ),
            (
                "required nested",
                "${NOPE:-${NOPE2:?deep}}",
                "required variable NOPE2 is missing a value: deep",
            ),
        ];
        for (name, input, want) in cases {
            let mut i = Interpolator::new(&env);
            let e = i.string("services.web.image", input).expect_err(name);
            assert_eq!(e.path, "services.web.image", "{name}");
            assert!(e.message.contains(want), "{name}: {}", e.message);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let env = env();
        let mut s = String::new();
        for _ in 0..200 {
            s.push_str("${NOPE:-");
        }
        s.push('x');
        for _ in 0..200 {
            s.push('}');
        }
        let mut i = Interpolator::new(&env);
        let e = i.string("p", &s).expect_err("too deep");
        assert!(e.message.starts_with("Invalid template"), "{}", e.message);
    }

    #[test]
    fn unset_warned_once() {
        let env = env();
        let mut i = Interpolator::new(&env);
        for s in ["$NOPE", "${NOPE}", "${NOPE:-x}", "${OTHER}"] {
            i.string("p", s).expect("interpolates");
        }
        assert_eq!(
            i.warnings(),
            vec![
                "The \"NOPE\" variable is not set. Defaulting to a blank string.".to_string(),
                "The \"OTHER\" variable is not set. Defaulting to a blank string.".to_string(),
            ]
        );
    }
}
