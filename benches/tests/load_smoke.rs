//! A CI-sized run of the load generator: 3 real managers, 50 simulated agents, 10 services
//! totalling 2,000 tasks, a 10% drain and a leader SIGKILL. It asserts correctness (every task
//! RUNNING, spread ≤ 1, moved tasks RUNNING elsewhere, no node marked Down and no task
//! rescheduled by the leader change), not speed.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn load_smoke_50_agents_2000_tasks() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_orch-bench"));
    let orch = bench.with_file_name("orch");
    assert!(
        orch.exists(),
        "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
        orch.display()
    );
    let out = Command::new(&bench)
        .args(["load", "--orch"])
        .arg(&orch)
        .args([
            "--managers",
            "3",
            "--agents",
            "50",
            "--services",
            "10",
            "--tasks",
            "2000",
            "--drain-percent",
            "10",
            "--kill-leader",
            "--timeout",
            "120s",
        ])
        .output()
        .expect("run orch-bench load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the load run failed:\n{stdout}\n{stderr}"
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{stdout}"))
            .to_string()
    };
    assert!(line("agents:").contains("50 simulated nodes joined"));
    let create = line("create:");
    assert!(
        create.contains("2000 placements committed") && create.contains("all RUNNING"),
        "{create}"
    );
    let spread: usize = create
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spread in {create}"));
    assert!(spread <= 1, "spread {spread}");
    assert!(line("drain:").contains("all RUNNING elsewhere"));
    let kill = line("leader kill");
    assert!(
        kill.contains(" 0 nodes marked Down; 0 tasks rescheduled"),
        "{kill}"
    );
}
