//! `orch`: the node process and every client command, as docker's swarm commands are.

/// mimalloc instead of glibc's malloc: a manager allocates and frees many small objects per
/// task change, and glibc's consolidation showed up as a quarter of its CPU under load
/// (BENCHMARKS.md, "Scale").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    orch_cli::main_entry()
}
