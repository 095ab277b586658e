//! The benchmark runs: every scenario of the tiny profile completes against real agents and
//! writes its JSON line. Timings are never checked here (they are measured, in
//! docs/PERFORMANCE.md); what is checked is that the contended run saw exclusive holders with
//! rising tokens, which is safety, not speed.

use std::process::Command;

#[test]
fn every_scenario_runs_in_the_tiny_profile() {
    let out = std::env::temp_dir().join(format!("lockmesh-bench-tiny-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_lockmesh-bench")).args(["--profile", "tiny", "--out"]).arg(&out).output().expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let lines = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let rows: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let scenarios: Vec<&str> = rows.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(scenarios, ["uncontended", "independent", "contended", "voter-loss", "scale", "members"], "{stdout}");
    for row in &rows {
        assert!(row["result"].is_object() && row["error"].is_null(), "{row}");
        assert!(stdout.contains(row["scenario"].as_str().unwrap()), "a table row for {row}");
    }
    let contended = &rows[2]["result"];
    assert!(contended["grants"].as_u64().unwrap_or(0) > 0, "{contended}");
    assert_eq!(contended["exclusive"], true, "{contended}");
    // After the fill, a node joined and was removed: both roster changes were swept.
    let scale = &rows[4]["result"];
    assert!(scale["join_swept_s"].is_number() && scale["remove_swept_s"].is_number(), "{scale}");
}
