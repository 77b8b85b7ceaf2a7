//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the built `peerfleet` binary in `dir` with no terminal on stdin.
pub fn peerfleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerfleet"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("the peerfleet binary runs")
}

/// Exit code, stdout, stderr.
pub fn parts(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory holding a copy of the local nine-region example under network name `name` (so tests
/// never share ownership tags), with its genesis file. Returns (dir, spec path).
pub fn local_spec(name: &str, relays: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text =
        std::fs::read_to_string(root().join("examples/nine_regions_local.toml")).expect("example spec");
    let text = text.replace("name = \"nine-regions-local\"", &format!("name = \"{name}\""));
    assert!(text.contains(&format!("name = \"{name}\"")), "the example's network name line changed");
    let text = text.replace("containers = 9", &format!("containers = {relays}"));
    let spec = dir.path().join("network.toml");
    std::fs::write(&spec, text).expect("write spec");
    std::fs::copy(root().join("examples/genesis.json"), dir.path().join("genesis.json"))
        .expect("copy genesis");
    (dir, spec)
}
