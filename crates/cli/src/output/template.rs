//! Enough of Go's text/template for docker's `--format`: `{{.Field.Sub}}`, `{{json .X}}`,
//! `{{.}}`, `{{upper .X}}`, `{{lower .X}}`, and a leading `table` for a header row. Values come
//! from the JSON objects the table or inspect output is built from.

use anyhow::{bail, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field {
        func: Option<String>,
        path: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// `table` formats print a header row.
    pub table: bool,
}

impl Template {
    pub fn parse(format: &str) -> Result<Self> {
        let mut format = format.replace("\\t", "\t").replace("\\n", "\n");
        let mut table = false;
        if let Some(rest) = format.strip_prefix("table") {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                table = true;
                format = rest.trim_start().to_string();
            }
        }
        let mut pieces = Vec::new();
        let mut rest = format.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("template parsing error: unclosed action in {format:?}");
            };
            let action = after[..end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            pieces.push(parse_action(action)?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces, table })
    }

    pub fn render(&self, value: &Value) -> Result<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { func, path } => {
                    let mut v = value;
                    for key in path {
                        v = match v.get(key) {
                            Some(x) => x,
                            None => bail!("template: can't evaluate field {key}"),
                        };
                    }
                    let text = match func.as_deref() {
                        Some("json") => serde_json::to_string(v)?,
                        Some("upper") => plain(v).to_uppercase(),
                        Some("lower") => plain(v).to_lowercase(),
                        _ => plain(v),
                    };
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }

    /// The header row of a `table` format: each field's name in capitals.
    pub fn header(&self) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { path, .. } => {
                    out.push_str(&header_name(path.last().map(String::as_str).unwrap_or("")))
                }
            }
        }
        out
    }
}

fn header_name(field: &str) -> String {
    // CurrentState -> CURRENT STATE, as docker's headers read.
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() && chars[i - 1].is_lowercase() {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

fn parse_action(action: &str) -> Result<Piece> {
    let mut words = action.split_whitespace();
    let first = words.next().unwrap_or(".");
    let (func, arg) = if first.starts_with('.') {
        (None, first)
    } else {
        (Some(first.to_string()), words.next().unwrap_or("."))
    };
    if let Some(f) = &func {
        if !["json", "upper", "lower"].contains(&f.as_str()) {
            bail!("template: function {f:?} not defined");
        }
    }
    if !arg.starts_with('.') {
        bail!("template: unsupported action {{{{{action}}}}}");
    }
    let path = arg
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Piece::Field { func, path })
}

/// How Go prints a value with `{{.X}}`: strings bare, everything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(plain).collect::<Vec<_>>().join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_and_functions() {
        let v = json!({"ID": "abc", "Spec": {"Role": "manager", "Labels": {"a": "b"}}, "N": 3});
        let cases = [
            ("{{.ID}}", "abc"),
            ("{{.Spec.Role}}", "manager"),
            ("{{ .ID }}:{{.N}}", "abc:3"),
            ("{{json .Spec.Labels}}", "{\"a\":\"b\"}"),
            ("{{upper .Spec.Role}}", "MANAGER"),
            ("{{.ID}}\\t{{.N}}", "abc\t3"),
        ];
        for (format, want) in cases {
            assert_eq!(
                Template::parse(format)
                    .expect(format)
                    .render(&v)
                    .expect(format),
                want,
                "{format}"
            );
        }
    }

    #[test]
    fn table_header_and_errors() {
        let t = Template::parse("table {{.ID}}\t{{.CurrentState}}").expect("parse");
        assert!(t.table);
        assert_eq!(t.header(), "ID\tCURRENT STATE");
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{index .X}}").is_err());
        assert!(Template::parse("{{.Missing}}")
            .expect("parse")
            .render(&json!({}))
            .is_err());
    }
}
