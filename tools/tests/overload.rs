//! Overload and recovery through the real `bench`: 3 `engine run` processes under `loadgen
//! --phases`, a burst well past what the (debug) cluster decides, then a low rate again.
//!
//! What it guards (issue 17, "under overload"): the nodes refuse what they cannot decide soon
//! as `Overloaded`, at once (no submission left without a reply: `submit_errors` stays 0),
//! nothing they acknowledged is left undecided, every node ends with the same finalized set,
//! and once the load drops (a quiet phase lets a debug cluster work off the ~12 000
//! submissions it admitted) the cluster finalizes every payload of the last phase. Before the
//! in-flight bound followed the decision rate (`runtime/shard/admission.rs`), a node
//! acknowledged up to 131 072 submissions and an overloaded 4-node cluster answered after
//! 30 s or not at all.
//!
//! `bench` runs the `engine` next to it: the debug one is built with cargo once
//! (`common::engine`), unless `PQDAG_ENGINE` names one (then copied next to `bench`).

mod common;

use std::path::PathBuf;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

#[test]
fn an_overloaded_cluster_refuses_cleanly_and_recovers_when_the_load_drops() {
    let bench_dir = PathBuf::from(BENCH).parent().expect("bench dir").to_path_buf();
    let engine = common::engine();
    if engine != bench_dir.join("engine") {
        std::fs::copy(&engine, bench_dir.join("engine")).expect("copy engine next to bench");
    }
    let out = std::env::temp_dir().join(format!("pqdag-overload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(BENCH)
        .args(["--nodes", "3", "--phases", "200:3,8000:6,20:8,100:10", "--payload-bytes", "128", "--drain", "20", "--health-timeout", "120", "--base-port", "17400", "--out"])
        .arg(&out)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report = std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|e| panic!("no report ({e}); bench said:\n{stdout}\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(&report).expect("report json");
    eprintln!("{stdout}");
    let lg = &v["loadgen"];
    let phases = &v["phases"]["phases"];
    let n = |x: &serde_json::Value, k: &str| x[k].as_u64().unwrap_or_else(|| panic!("no {k} in {x}"));
    assert!(n(&phases[1], "refused_overloaded") > 0, "the burst overloaded the cluster: {phases}");
    assert_eq!(n(lg, "submit_errors"), 0, "every refusal was an answer, none a timeout: {lg}");
    assert_eq!(n(lg, "lost_undecided"), 0, "nothing acknowledged was left undecided: {lg}");
    assert_eq!(v["agreement"]["agree"], serde_json::Value::Bool(true), "finalized sets differ: {}", v["agreement"]);
    assert_eq!(v["phases"]["last_phase_recovered"], serde_json::Value::Bool(true), "the last phase finalized all it offered: {phases}");
    assert!(n(&phases[3], "offered") >= 900, "the last phase ran: {phases}");
    assert_eq!(run.status.code(), Some(0), "bench found a problem: {stderr}");
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
}
