//! `orch`: the node process and every client command, as docker's swarm commands are.

fn main() -> std::process::ExitCode {
    orch_cli::main_entry()
}
