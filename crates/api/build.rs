//! Generates the gRPC code from `proto/` with a vendored protoc, so a plain `cargo build`
//! works on a machine without protoc. PROTOC is set for our invocation only (never globally).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "objects",
        "specs",
        "raft",
        "ca",
        "dispatcher",
        "control",
        "store",
    ]
    .map(|name| root.join(format!("orch/v1/{name}.proto")));
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
