//! `orch service ...` and `orch node ps` (filled in by the services work).

use anyhow::{bail, Result};
use clap::Args;

use crate::client::Target;

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(short, long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
    pub targets: Vec<String>,
}

pub async fn node_ps(_target: &Target, _args: PsArgs) -> Result<()> {
    bail!("services are not implemented yet")
}
