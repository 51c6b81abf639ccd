//! Secret and config templates (`--template-driver golang`): the subset of Go's text/template
//! that swarm users write in practice: `{{.Service.Name}}`, `{{.Task.Slot}}`,
//! `{{.Node.Hostname}}`, `{{env "X"}}` (the task's container environment), with `{{-`/`-}}`
//! trimming. Parsed when the object is created (anything else is refused there, with what is
//! supported), rendered by the agent for each task when its container is made.

use std::fmt;

/// The only template driver there is.
pub const GOLANG: &str = "golang";

/// What a task's template can read.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub service_id: String,
    pub service_name: String,
    pub service_labels: std::collections::BTreeMap<String, String>,
    pub node_id: String,
    pub node_hostname: String,
    pub node_os: String,
    pub node_arch: String,
    pub task_id: String,
    pub task_name: String,
    pub task_slot: u64,
    /// The container's environment, "K=V".
    pub env: Vec<String>,
}

const FIELDS: &[&str] = &[
    ".Service.ID",
    ".Service.Name",
    ".Node.ID",
    ".Node.Hostname",
    ".Node.Platform.OS",
    ".Node.Platform.Architecture",
    ".Task.ID",
    ".Task.Name",
    ".Task.Slot",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(&'static str),
    Env(String),
    Label(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template: {}", self.0)
    }
}

impl std::error::Error for TemplateError {}

/// Checks a template driver name as docker does.
pub fn check_driver(driver: &str) -> Result<(), TemplateError> {
    match driver {
        "" | GOLANG => Ok(()),
        other => Err(TemplateError(format!(
            "unrecognized template type {other:?} (only \"golang\" is supported)"
        ))),
    }
}

/// Parses template bytes (UTF-8 text).
pub fn parse(data: &[u8]) -> Result<Template, TemplateError> {
    let src = std::str::from_utf8(data)
        .map_err(|_| TemplateError("a template must be UTF-8 text".into()))?;
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut line = 1;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let after_open = &rest[open + 2..];
        let (trim_left, body_start) = match after_open.strip_prefix("- ") {
            Some(b) => (true, b),
            None => (false, after_open),
        };
        if trim_left {
            text = text.trim_end();
        }
        line += text.matches('\n').count();
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let close = body_start
            .find("}}")
            .ok_or_else(|| TemplateError(format!("line {line}: unclosed action")))?;
        let mut body = &body_start[..close];
        let mut after = &body_start[close + 2..];
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            after = after.trim_start();
        }
        pieces.push(action(body.trim(), line)?);
        line += body.matches('\n').count();
        rest = after;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(Template { pieces })
}

fn action(body: &str, line: usize) -> Result<Piece, TemplateError> {
    if let Some(field) = FIELDS.iter().find(|f| **f == body) {
        return Ok(Piece::Field(field));
    }
    let words: Vec<&str> = body.split_whitespace().collect();
    match words.as_slice() {
        ["env", name] => Ok(Piece::Env(quoted(name, line)?)),
        ["index", ".Service.Labels", key] => Ok(Piece::Label(quoted(key, line)?)),
        _ => Err(TemplateError(format!(
            "line {line}: {{{{{body}}}}} is not supported; orch renders {}, {{{{env \"NAME\"}}}} and {{{{index .Service.Labels \"KEY\"}}}}",
            FIELDS
                .iter()
                .map(|f| format!("{{{{{f}}}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn quoted(word: &str, line: usize) -> Result<String, TemplateError> {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .filter(|w| !w.contains('"') && !w.contains('\\'))
        .map(str::to_string)
        .ok_or_else(|| TemplateError(format!("line {line}: expected a quoted name, got {word}")))
}

impl Template {
    pub fn render(&self, ctx: &Context) -> Vec<u8> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Env(name) => {
                    let value = ctx
                        .env
                        .iter()
                        .rev()
                        .find_map(|kv| kv.strip_prefix(name.as_str())?.strip_prefix('='));
                    out.push_str(value.unwrap_or(""));
                }
                Piece::Label(key) => {
                    out.push_str(ctx.service_labels.get(key).map_or("", String::as_str))
                }
                Piece::Field(field) => {
                    let slot;
                    out.push_str(match *field {
                        ".Service.ID" => &ctx.service_id,
                        ".Service.Name" => &ctx.service_name,
                        ".Node.ID" => &ctx.node_id,
                        ".Node.Hostname" => &ctx.node_hostname,
                        ".Node.Platform.OS" => &ctx.node_os,
                        ".Node.Platform.Architecture" => &ctx.node_arch,
                        ".Task.ID" => &ctx.task_id,
                        ".Task.Name" => &ctx.task_name,
                        ".Task.Slot" => {
                            slot = ctx.task_slot.to_string();
                            &slot
                        }
                        _ => "",
                    })
                }
            }
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            service_id: "svc1".into(),
            service_name: "web".into(),
            service_labels: [("tier".to_string(), "front".to_string())].into(),
            node_id: "n1".into(),
            node_hostname: "host-a".into(),
            node_os: "linux".into(),
            node_arch: "x86_64".into(),
            task_id: "t9".into(),
            task_name: "web.2.t9".into(),
            task_slot: 2,
            env: vec!["PORT=80".into(), "MODE=a=b".into()],
        }
    }

    fn render(src: &str) -> Result<String, TemplateError> {
        Ok(String::from_utf8(parse(src.as_bytes())?.render(&ctx())).expect("utf-8"))
    }

    #[test]
    fn the_common_subset_renders_as_swarm_does() {
        let cases = [
            ("plain text", "plain text"),
            ("name={{.Service.Name}}", "name=web"),
            (
                "{{ .Task.Slot }}/{{.Task.Name}}/{{.Task.ID}}",
                "2/web.2.t9/t9",
            ),
            ("{{.Node.Hostname}} {{.Node.ID}}", "host-a n1"),
            (
                "{{.Node.Platform.OS}}-{{.Node.Platform.Architecture}}",
                "linux-x86_64",
            ),
            (
                "port {{env \"PORT\"}} mode {{env \"MODE\"}}",
                "port 80 mode a=b",
            ),
            ("missing [{{env \"NOPE\"}}]", "missing []"),
            ("{{index .Service.Labels \"tier\"}}", "front"),
            ("a  {{- .Service.ID -}}  b", "asvc1b"),
            ("line1\n{{.Service.Name}}\n", "line1\nweb\n"),
        ];
        for (src, want) in cases {
            assert_eq!(render(src).as_deref(), Ok(want), "{src:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_is_supported() {
        for src in [
            "{{.Service.Nope}}",
            "{{if .Service.Name}}x{{end}}",
            "{{env PORT}}",
            "{{secret \"db\"}}",
            "open {{.Service.Name",
            "{{range .Service.Labels}}{{.}}{{end}}",
        ] {
            let err = render(src).expect_err(src);
            assert!(
                err.0.contains("not supported")
                    || err.0.contains("unclosed")
                    || err.0.contains("quoted"),
                "{src:?}: {err}"
            );
        }
        let err = render("x\n\n{{.Bad}}").expect_err("bad field");
        assert!(err.0.starts_with("line 3:"), "{err}");
        assert!(err.0.contains("{{.Service.Name}}"), "{err}");
        assert!(parse(&[0xff, 0xfe]).is_err());
        assert!(check_driver("golang").is_ok() && check_driver("").is_ok());
        assert!(check_driver("jinja").is_err());
    }
}
