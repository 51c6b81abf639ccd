//! `orch secret …` and `orch config …`: one implementation, two kinds. Secret data is read
//! from a file or stdin, sent once, and never shown again; config data is shown by `inspect`.
//! `rotate` (beyond docker) makes the next version and rolls every service using it onto it.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use orch_api::data::{kind_name, MAX_CONFIG_BYTES, MAX_SECRET_BYTES};
use orch_api::pb::{
    CreateDataRequest, DataKind, DataObject, DataSpec, GetDataRequest, ListDataRequest,
    RotateDataRequest,
};
use orch_engine_api::convert::objects;
use serde_json::{json, Value};

use crate::client::{rpc, Target};
use crate::commands::spec_flags::parse_key_values;
use crate::output::{ago, print_inspect, print_list, rfc3339, Format};

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Create from a file or STDIN ("-") as content
    Create(CreateArgs),
    /// List them
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more
    Inspect(InspectArgs),
    /// Remove one or more
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Make the next version from a file or STDIN and roll every service using it onto it
    Rotate {
        #[command(flatten)]
        wait: crate::commands::service::WaitFlags,
        name: String,
        /// A file, or "-" for STDIN
        file: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Labels (key=value)
    #[arg(short, long)]
    label: Vec<String>,
    /// Template driver ("golang")
    #[arg(long)]
    template_driver: Option<String>,
    /// Secret driver (external secret stores are not supported)
    #[arg(short, long)]
    driver: Option<String>,
    name: String,
    /// A file, or "-" for STDIN
    file: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter output (id=, name=, label=)
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output (table, json, or a Go template)
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pretty: bool,
    /// Format output using a Go template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

/// Reads the data from `file` ("-": stdin), refusing empty input and anything over twice the
/// kind's limit before it is read whole (the server holds the exact limit).
fn read_data(kind: DataKind, file: &str) -> Result<Vec<u8>> {
    let limit = match kind {
        DataKind::Secret => MAX_SECRET_BYTES,
        DataKind::Config => MAX_CONFIG_BYTES,
    } as u64
        * 2;
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .context("error reading from STDIN")?;
        if data.is_empty() {
            bail!("error reading from STDIN: data is empty");
        }
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("error reading content from {file:?}"))?
            .take(limit)
            .read_to_end(&mut data)
            .with_context(|| format!("error reading content from {file:?}"))?;
    }
    Ok(data)
}

pub async fn run(target: &Target, kind: DataKind, cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Create(args) => create(target, kind, args).await,
        DataCmd::Ls(args) => ls(target, kind, args).await,
        DataCmd::Inspect(args) => inspect(target, kind, args).await,
        DataCmd::Rm { names } => rm(target, kind, &names).await,
        DataCmd::Rotate { wait, name, file } => rotate(target, kind, &name, &file, &wait).await,
    }
}

async fn create(target: &Target, kind: DataKind, args: CreateArgs) -> Result<()> {
    if args.driver.as_deref().is_some_and(|d| !d.is_empty()) {
        bail!("secret drivers (external secret stores) are not supported: give the data as a file or on STDIN");
    }
    // Checked here too, so bad input fails before stdin is read.
    orch_api::data::check_name(&args.name).map_err(anyhow::Error::msg)?;
    let template_driver = args.template_driver.unwrap_or_default();
    orch_api::template::check_driver(&template_driver)?;
    let data = read_data(kind, &args.file)?;
    let created = target
        .control()?
        .create_data(CreateDataRequest {
            kind: kind as i32,
            spec: Some(DataSpec {
                name: args.name,
                labels: parse_key_values(&args.label)?.into_iter().collect(),
                template_driver,
            }),
            data,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    outln!("{}", created.id);
    Ok(())
}

fn name_of(d: &DataObject) -> &str {
    d.spec.as_ref().map_or("", |s| s.name.as_str())
}

fn matches(d: &DataObject, filter: &str) -> Result<bool> {
    let Some((key, value)) = filter.split_once('=') else {
        bail!("bad format of filter (expected name=value): {filter}");
    };
    Ok(match key {
        "id" => d.id.starts_with(value),
        "name" => name_of(d).starts_with(value),
        "label" => d
            .spec
            .as_ref()
            .is_some_and(|s| crate::commands::label_filter(&s.labels, value)),
        other => bail!("invalid filter '{other}'"),
    })
}

fn meta_times(d: &DataObject) -> (i64, i64) {
    d.meta
        .as_ref()
        .map_or((0, 0), |m| (m.created_at, m.updated_at))
}

async fn ls(target: &Target, kind: DataKind, args: LsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref())?;
    let listed = target
        .control()?
        .list_data(ListDataRequest { kind: kind as i32 })
        .await
        .map_err(rpc)?
        .into_inner();
    let mut objects = Vec::new();
    for d in listed.objects {
        let mut keep = true;
        for f in &args.filter {
            keep &= matches(&d, f)?;
        }
        if keep {
            objects.push(d);
        }
    }
    objects.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    if args.quiet {
        for d in &objects {
            outln!("{}", d.id);
        }
        return Ok(());
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|d| {
            let (created, updated) = meta_times(d);
            json!({
                "ID": d.id,
                "Name": name_of(d),
                "Driver": "",
                "CreatedAt": ago(created),
                "UpdatedAt": ago(updated),
                "Versions": d.versions.len(),
            })
        })
        .collect();
    match kind {
        DataKind::Secret => print_list(
            &format,
            &["ID", "NAME", "DRIVER", "CREATED", "UPDATED"],
            &["ID", "Name", "Driver", "CreatedAt", "UpdatedAt"],
            &rows,
        ),
        DataKind::Config => print_list(
            &format,
            &["ID", "NAME", "CREATED", "UPDATED"],
            &["ID", "Name", "CreatedAt", "UpdatedAt"],
            &rows,
        ),
    }
}

/// docker's inspect object (`orch_engine_api`'s, so `docker secret inspect` shows the same),
/// plus orch's versions and the services that use each.
fn inspect_json(d: &DataObject, users: &[String]) -> Value {
    let versions: Vec<Value> = d
        .versions
        .iter()
        .map(|v| {
            let services: Vec<&str> = users
                .iter()
                .filter_map(|u| u.rsplit_once('@'))
                .filter(|(_, version)| *version == v.version.to_string())
                .map(|(name, _)| name)
                .collect();
            json!({
                "Version": v.version,
                "CreatedAt": rfc3339(v.created_at),
                "Services": services,
            })
        })
        .collect();
    let mut out = objects::data(d);
    out["Versions"] = Value::Array(versions);
    out
}

async fn inspect(target: &Target, kind: DataKind, args: InspectArgs) -> Result<()> {
    let mut control = target.control()?;
    // One list for the users of each version; then each name as the server resolves it.
    let listed = control
        .list_data(ListDataRequest { kind: kind as i32 })
        .await
        .map_err(rpc)?
        .into_inner();
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        match control
            .get_data(GetDataRequest {
                kind: kind as i32,
                name: name.clone(),
            })
            .await
        {
            Ok(d) => objects.push(d.into_inner()),
            Err(status) => errors.push(rpc(status).to_string()),
        }
    }
    let users = |d: &DataObject| {
        listed
            .users
            .get(&d.id)
            .map(|u| u.services.clone())
            .unwrap_or_default()
    };
    if args.pretty {
        for (i, d) in objects.iter().enumerate() {
            if i > 0 {
                outln!();
            }
            let spec = d.spec.clone().unwrap_or_default();
            let (created, updated) = meta_times(d);
            outln!("ID:              {}", d.id);
            outln!("Name:              {}", spec.name);
            if !spec.labels.is_empty() {
                outln!("Labels:");
                for (k, v) in &spec.labels {
                    outln!(" - {k}={v}");
                }
            }
            if kind == DataKind::Secret {
                outln!("Driver:");
            }
            outln!("Created at:        {}", rfc3339(created));
            outln!("Updated at:        {}", rfc3339(updated));
            let used = users(d);
            for v in &d.versions {
                let services: Vec<&str> = used
                    .iter()
                    .filter_map(|u| u.rsplit_once('@'))
                    .filter(|(_, version)| *version == v.version.to_string())
                    .map(|(name, _)| name)
                    .collect();
                outln!(
                    "Version {}:         created {}, used by: {}",
                    v.version,
                    rfc3339(v.created_at),
                    if services.is_empty() {
                        "-".to_string()
                    } else {
                        services.join(", ")
                    }
                );
            }
            if kind == DataKind::Config {
                if let Some(v) = d.versions.last() {
                    outln!("Data:\n{}", String::from_utf8_lossy(&v.data));
                }
            }
        }
    } else {
        let values: Vec<Value> = objects.iter().map(|d| inspect_json(d, &users(d))).collect();
        print_inspect(args.format.as_deref(), &values)?;
    }
    if !errors.is_empty() {
        bail!(crate::client::DaemonError(errors.join("\n")));
    }
    Ok(())
}

async fn rm(target: &Target, kind: DataKind, names: &[String]) -> Result<()> {
    let mut control = target.control()?;
    let mut errors = Vec::new();
    for name in names {
        match control
            .remove_data(GetDataRequest {
                kind: kind as i32,
                name: name.clone(),
            })
            .await
        {
            Ok(_) => outln!("{name}"),
            Err(status) => errors.push(rpc(status).to_string()),
        }
    }
    if !errors.is_empty() {
        bail!(crate::client::DaemonError(errors.join("\n")));
    }
    Ok(())
}

/// Rotates, then (unless `--detach`) follows each service's update as `service update` does:
/// a service whose update pauses or rolls back makes the command fail, naming it.
async fn rotate(
    target: &Target,
    kind: DataKind,
    name: &str,
    file: &str,
    wait: &crate::commands::service::WaitFlags,
) -> Result<()> {
    let data = read_data(kind, file)?;
    let mut control = target.control()?;
    let rotated = control
        .rotate_data(RotateDataRequest {
            kind: kind as i32,
            name: name.to_string(),
            data,
            if_changed: false,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    outln!(
        "{} {name} is now at version {}",
        kind_name(kind),
        rotated.version
    );
    if rotated.services.is_empty() {
        outln!("no service uses it");
        return Ok(());
    }
    outln!("rolling onto it: {}", rotated.services.join(", "));
    let mut failed = Vec::new();
    for service in &rotated.services {
        let id = control
            .get_service(orch_api::pb::GetServiceRequest {
                service: service.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .id;
        if !wait.detach {
            outln!("{service}");
        }
        let followed = crate::commands::service::follow(
            &mut control,
            &id,
            wait,
            crate::output::progress::Expect::Update,
        )
        .await;
        if let Err(e) = followed {
            failed.push(format!("{service}: {e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "not every service is on version {}:\n{}",
            rotated.version,
            failed.join("\n")
        );
    }
    Ok(())
}
