//! Secrets declared in the spec never leave the container: the whole CLI flow on the real Docker
//! engine, with recognisable fake secrets, and every place peerfleet writes searched for them.
//!
//! Without an engine these tests say SKIPPED on stderr; under CI (`CI` set) they fail instead.

use std::path::Path;
use std::process::Command;

use crate::local::{engine_available, engine_missing};
use crate::support::{parts, root};

const NET: &str = "e2e-secrets";
const CHAIN: &str = "c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199";
/// Read from the environment, under a name the key-name heuristic also catches.
const API_KEY: &str = "pf-fake-apikey-7Q2M9Z";
/// Read from the environment, under a name the heuristic misses.
const CREDENTIALS: &str = "pf-fake-credentials-K4W8R1";
/// Read from a file, under a name the heuristic misses.
const DATABASE_URL: &str = "postgres://peer:pf-fake-dbpass-X5N3V6@db.internal/chain";
/// The changed value of API_KEY, for drift.
const API_KEY_ROTATED: &str = "pf-fake-apikey-ROTATED-3J7P";

const SPEC: &str = r#"name = "e2e-secrets"

[chain]
genesis = "genesis.json"

[[clusters]]
name = "frankfurt"
provider = "local"
region = "Frankfurt"
tags = ["peer_cluster"]

[[services]]
name = "genesis"
role = "genesis"

[[services]]
name = "master"
role = "master"
env = { API_KEY = { from_env = "PF_TEST_NODE_API_KEY", secret = true }, DATABASE_URL = { from_file = "db.url" } }

[[services]]
name = "relay"
role = "relay"
containers = 1
env = { CREDENTIALS = { from_env = "PF_TEST_CREDENTIALS", secret = true }, LOG_LEVEL = "info" }
"#;

/// Runs `peerfleet` in `dir` with `vars` added to its environment.
fn run(dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("PF_TEST_NODE_API_KEY")
        .env_remove("PF_TEST_CREDENTIALS");
    for (k, v) in vars {
        command.env(k, v);
    }
    parts(&command.output().expect("the peerfleet binary runs"))
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn labelled_ids(kind: &str) -> Vec<String> {
    let label = format!("label=peerfleet.network={NET}");
    let out = match kind {
        "containers" => docker(&["ps", "-aq", "--filter", &label]),
        _ => docker(&["network", "ls", "-q", "--filter", &label]),
    };
    out.split_whitespace().map(str::to_string).collect()
}

/// Every label of every Docker object of the network, as JSON text.
fn all_labels() -> String {
    let mut text = String::new();
    for id in labelled_ids("containers") {
        text += &docker(&["inspect", "--format", "{{json .Config.Labels}}", &id]);
    }
    for id in labelled_ids("networks") {
        text += &docker(&["network", "inspect", "--format", "{{json .Labels}}", &id]);
    }
    text
}

/// Removes whatever the test left, even when it failed half-way.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in labelled_ids("containers") {
            docker(&["rm", "-f", &id]);
        }
        for id in labelled_ids("networks") {
            docker(&["network", "rm", &id]);
        }
    }
}

fn assert_no_secret(place: &str, text: &str) {
    for secret in [API_KEY, CREDENTIALS, DATABASE_URL, "pf-fake-dbpass", API_KEY_ROTATED] {
        assert!(!text.contains(secret), "{place} holds the secret {secret:?}:\n{text}");
    }
}

#[test]
fn declared_secrets_never_reach_output_logs_plan_files_state_or_labels() {
    if !engine_available() {
        return engine_missing("declared_secrets_never_reach_output_logs_plan_files_state_or_labels");
    }
    let _cleanup = Cleanup;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("network.toml"), SPEC).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.join("genesis.json")).unwrap();
    std::fs::write(dir.join("db.url"), format!("{DATABASE_URL}\n")).unwrap();
    let vars = [("PF_TEST_NODE_API_KEY", API_KEY), ("PF_TEST_CREDENTIALS", CREDENTIALS)];
    let mut seen = Vec::new();

    // A variable the spec reads and the operator did not set: a located error, nothing created.
    let (code, out, err) = run(dir, &vars[1..], &["apply", "-f", "network.toml", "--auto-approve"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("network.toml:19:")
            && err.contains("services[1].env.API_KEY.from_env: expected the environment variable PF_TEST_NODE_API_KEY to be set"),
        "{err}"
    );
    assert!(labelled_ids("containers").is_empty() && labelled_ids("networks").is_empty());

    let flow: [&[&str]; 6] = [
        &["validate", "-f", "network.toml"],
        &["-vv", "plan", "-f", "network.toml", "--out", "first.plan"],
        &["-vv", "apply", "-f", "network.toml", "first.plan"],
        &["-vv", "show", "-f", "network.toml"],
        &["-vv", "plan", "-f", "network.toml", "--detailed-exitcode", "--out", "converged.plan"],
        &["-vv", "plan", "-f", "network.toml", "--json"],
    ];
    for args in flow {
        let (code, out, err) = run(dir, &vars, args);
        assert_eq!(code, 0, "{args:?} failed:\n{out}\n{err}");
        seen.push((format!("{args:?}"), out + &err));
    }
    // `status` reads the engines' health logs, never a container's environment: in every format, at
    // the most verbose logging.
    for format in ["text", "json", "prometheus"] {
        let (code, out, err) = run(dir, &vars, &["-vv", "status", "-f", "network.toml", "--format", format]);
        assert!(code == 0 || code == 2, "status --format {format}: exit {code}\n{out}\n{err}");
        seen.push((format!("status --format {format}"), out + &err));
    }
    // The container itself got the values: declaring them did not lose them on the way.
    let env =
        docker(&["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", "e2e-secrets-master-1"]);
    assert!(
        env.contains(&format!("API_KEY={API_KEY}")) && env.contains(&format!("DATABASE_URL={DATABASE_URL}"))
    );

    // A rotated secret is drift: the container is replaced, the values shown as sensitive only.
    let rotated = [("PF_TEST_NODE_API_KEY", API_KEY_ROTATED), vars[1]];
    let (code, out, err) = run(dir, &rotated, &["-vv", "plan", "-f", "network.toml", "--detailed-exitcode"]);
    assert_eq!(code, 2, "a changed secret must show as a change:\n{out}\n{err}");
    assert!(out.contains("env.API_KEY: \"(sensitive)\" → \"(sensitive)\""), "{out}");
    seen.push(("rotated plan".into(), out + &err));

    for (place, text) in &seen {
        assert_no_secret(place, text);
    }
    for file in ["first.plan", "converged.plan", ".peerfleet/e2e-secrets.state.json"] {
        assert_no_secret(file, &std::fs::read_to_string(dir.join(file)).unwrap());
    }
    let labels = all_labels();
    assert!(labels.contains("hmac-sha256:"), "the labels carry seals: {labels}");
    assert_no_secret("Docker labels", &labels);

    let (code, out, err) =
        run(dir, &vars, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]);
    assert_eq!(code, 0, "{out}{err}");
    assert_no_secret("destroy", &(out + &err));
}
