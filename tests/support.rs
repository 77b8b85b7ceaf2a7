//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `peerfleet` binary with `args`, to run in `dir` with no terminal on stdin.
pub fn peerfleet_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the built `peerfleet` binary in `dir` with no terminal on stdin.
pub fn peerfleet(dir: &Path, args: &[&str]) -> Output {
    peerfleet_command(dir, args).output().expect("the peerfleet binary runs")
}

/// [`peerfleet`], failing the test if it takes longer than `limit` (see [`bounded`]).
pub fn peerfleet_within(dir: &Path, args: &[&str], limit: std::time::Duration) -> Output {
    bounded(&mut peerfleet_command(dir, args), limit)
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

/// Clears what a test must not inherit for a CLI run: cloud credentials and endpoints, and `RUST_LOG`;
/// and keeps the AWS SDK from reaching for instance metadata (a link-local address).
pub fn without_cloud_env(cmd: &mut Command) -> &mut Command {
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_ACCESS_TOKEN",
        "DIGITALOCEAN_API_URL",
        "PEERFLEET_STATE_KEY",
        "PEERFLEET_STATE_KEY_FILE",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
}

/// Runs `command` to completion with stdout and stderr captured, killing it and failing the test if
/// it takes longer than `limit`: a hung child must fail the test, not stall the suite.
pub fn bounded(command: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("{command:?} did not finish within {limit:?}; stderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// `text` parsed as the Prometheus text format, failing the test when it does not parse.
pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{text}"))
}

/// The values of `metric`'s samples whose labels include `label` (every sample with `None`).
pub fn samples(scrape: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>) -> Vec<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect()
}
