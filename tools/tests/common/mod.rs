//! Shared by the real-process tests of `pqdag-tools`: the `engine` binary they run.

use std::path::PathBuf;
use std::process::Command;

/// The `engine` binary: `PQDAG_ENGINE` when set, else the debug one, built with cargo once into
/// this test's target dir (it is not built for this package; `client/tests/cluster.rs` does the
/// same).
pub(crate) fn engine() -> PathBuf {
    if let Ok(p) = std::env::var("PQDAG_ENGINE") {
        return PathBuf::from(p);
    }
    // <target>/debug/deps/<test>-<hash> -> <target>
    let exe = std::env::current_exe().expect("test exe");
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--locked", "-p", "pqdag-node", "--bin", "engine"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo build engine");
    assert!(st.success(), "building the engine failed");
    target.join("debug/engine")
}
