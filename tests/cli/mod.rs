//! The CLI's contract that needs no infrastructure: exit codes, located errors, stable JSON, refusals.

use std::fs;

use crate::support::{local_spec, parts, peerfleet, root};

#[test]
fn validate_accepts_the_examples() {
    for example in ["examples/nine_regions.toml", "examples/nine_regions_local.toml"] {
        let (code, out, err) = parts(&peerfleet(&root(), &["validate", "-f", example]));
        assert_eq!(code, 0, "{example}: {err}");
        assert!(out.contains("is valid"), "{out}");
        assert!(out.contains("c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199"), "{out}");
    }
}

#[test]
fn bad_spec_exits_1_with_file_line_column_and_field_and_creates_nothing() {
    let (dir, spec) = local_spec("cli-bad-spec", 9);
    let text =
        fs::read_to_string(&spec).unwrap().replace("strategy = \"emptiest_node\"", "strategy = \"emptyest\"");
    fs::write(&spec, &text).unwrap();
    let line = text.lines().position(|l| l.contains("emptyest")).unwrap() + 1;
    for cmd in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        let mut args = cmd.to_vec();
        args.extend(["-f", "network.toml"]);
        let (code, _, err) = parts(&peerfleet(dir.path(), &args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&format!("network.toml:{line}:")), "{args:?}: {err}");
        assert!(err.contains("strategy") && err.contains("emptiest_node"), "{err}");
    }
    assert!(!dir.path().join(".peerfleet").exists(), "a bad spec must not create state");
}

#[test]
fn unknown_keys_are_errors_not_ignored() {
    let (dir, spec) = local_spec("cli-typo", 9);
    let text = fs::read_to_string(&spec).unwrap().replacen(
        "provider = \"local\"",
        "provider = \"local\"\nnodse = 2",
        1,
    );
    assert!(text.contains("nodse"));
    fs::write(&spec, text).unwrap();
    let (code, _, err) = parts(&peerfleet(dir.path(), &["validate", "-f", "network.toml"]));
    assert_eq!(code, 1);
    assert!(err.contains("nodse"), "{err}");
}

#[test]
fn plan_exit_codes_follow_detailed_exitcode() {
    let (dir, _) = local_spec("cli-exitcodes", 9);
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "-f", "network.toml", "--refresh=false"];
        args.extend(extra);
        parts(&peerfleet(dir.path(), &args))
    };
    let (code, out, err) = plan(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Plan: 20 to add, 0 to change, 0 to replace, 0 to destroy."), "{out}");
    let (code, _, _) = plan(&["--detailed-exitcode"]);
    assert_eq!(code, 2, "changes present");
}

#[test]
fn plan_json_is_stable_and_byte_identical_across_runs() {
    let (dir, _) = local_spec("cli-json", 9);
    let run = || parts(&peerfleet(dir.path(), &["plan", "-f", "network.toml", "--refresh=false", "--json"]));
    let (code, a, err) = run();
    assert_eq!(code, 0, "{err}");
    let (_, b, _) = run();
    assert_eq!(a, b, "plan JSON must be byte-identical across runs");
    let doc: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["network"], "cli-json");
    assert_eq!(doc["chain_id"], "c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199");
    assert_eq!(doc["summary"]["create"], 20);
    let first = &doc["changes"][0];
    for key in ["address", "action", "reasons", "waits_for"] {
        assert!(first.get(key).is_some(), "change lacks {key}: {first}");
    }
    let actions: Vec<&str> =
        doc["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert!(actions.iter().all(|a| *a == "create"));
}

#[test]
fn apply_without_a_terminal_or_auto_approve_refuses_clearly() {
    let (dir, _) = local_spec("cli-no-tty", 9);
    let (code, _, err) = parts(&peerfleet(dir.path(), &["apply", "-f", "network.toml"]));
    assert_eq!(code, 1);
    assert!(err.contains("--auto-approve"), "{err}");
    assert!(!dir.path().join(".peerfleet").exists(), "nothing may be created");
}

#[test]
fn a_held_lock_fails_at_once_naming_its_holder_and_force_unlock_never_breaks_it() {
    use peerfleet::core::state::{LocalStateFile, LockInfo, LockOptions, StateBackend};
    let (dir, _) = local_spec("cli-lock", 9);
    let state = dir.path().join(".peerfleet/cli-lock.state.json");
    // This test process holds the lock, as a running apply would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt.block_on(LocalStateFile::new(&state).lock("apply", &LockOptions::default())).unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = parts(&peerfleet(dir.path(), &["apply", "-f", "network.toml", "--auto-approve"]));
    assert_eq!(code, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "must fail at once");
    assert!(err.contains(&format!("pid {}", std::process::id())), "the holder is named: {err}");
    // A live holder's local lock is never forced.
    let (code, _, err) = parts(&peerfleet(dir.path(), &["force-unlock", "-f", "network.toml"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("still running"), "{err}");
    rt.block_on(held.release()).unwrap();
    // A lock file a dead run left behind is tidied away.
    let ghost = LockInfo::without_lease("apply");
    std::fs::write(format!("{}.lock", state.display()), serde_json::to_vec(&ghost).unwrap()).unwrap();
    let (code, out, _) = parts(&peerfleet(dir.path(), &["force-unlock", "-f", "network.toml"]));
    assert_eq!(code, 0);
    assert!(out.contains("Removed the lock"), "{out}");
    let (_, out, _) = parts(&peerfleet(dir.path(), &["force-unlock", "-f", "network.toml"]));
    assert!(out.contains("is not locked"), "{out}");
}

#[test]
fn scaling_an_every_node_service_is_refused_and_leaves_the_file_alone() {
    let (dir, spec) = local_spec("cli-every-node", 9);
    let text = fs::read_to_string(&spec).unwrap();
    let text = text.replace("containers = 9\n", "").replacen(
        "strategy = \"emptiest_node\"",
        "strategy = \"every_node\"",
        1,
    );
    fs::write(&spec, &text).unwrap();
    let (code, _, err) =
        parts(&peerfleet(dir.path(), &["scale", "-f", "network.toml", "relay", "3", "--auto-approve"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("every_node"), "{err}");
    assert_eq!(fs::read_to_string(&spec).unwrap(), text);
}

#[test]
fn genesis_new_writes_a_fresh_chain_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = parts(&peerfleet(dir.path(), &["genesis", "new", "--name", "t", "--out", "g.json"]));
    assert_eq!(code, 0, "{err}");
    let bytes = fs::read(dir.path().join("g.json")).unwrap();
    let id = peerfleet::core::ChainId::of(&bytes);
    assert!(err.contains(id.as_str()), "{err}");
    let (code, _, _) = parts(&peerfleet(dir.path(), &["genesis", "new", "--out", "g.json"]));
    assert_eq!(code, 1, "an existing genesis is never overwritten");
    assert_eq!(fs::read(dir.path().join("g.json")).unwrap(), bytes);
    // Two new chains never share an ID.
    let (_, other, _) = parts(&peerfleet(dir.path(), &["genesis", "new"]));
    assert_ne!(peerfleet::core::ChainId::of(other.as_bytes()), id);
}

#[test]
fn graph_prints_dot_with_dependency_edges() {
    let (dir, _) = local_spec("cli-graph", 9);
    // Without --refresh the graph needs the engine; plan --refresh=false semantics via state: use plan JSON's
    // waits_for instead when no engine is around. Here: the graph of the fresh network.
    let (code, out, err) = parts(&peerfleet(dir.path(), &["graph", "-f", "network.toml"]));
    if code != 0 && err.contains("Docker engine") {
        crate::local::engine_missing("graph_prints_dot_with_dependency_edges");
        return;
    }
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("digraph peerfleet {"), "{out}");
    assert!(out.contains("\"container.master[0]\" -> \"container.genesis[0]\""), "{out}");
    // The whole network, one box per cluster, everything to be created.
    assert!(out.contains("subgraph \"cluster_frankfurt\""), "{out}");
    assert!(out.contains("+ container.relay[8]"), "{out}");
    // Only the plan's changes and their order.
    let (code, changes, err) = parts(&peerfleet(dir.path(), &["graph", "-f", "network.toml", "--changes"]));
    assert_eq!(code, 0, "{err}");
    assert!(changes.contains("\"container.master[0]\" -> \"container.genesis[0]\""), "{changes}");
    assert!(!changes.contains("subgraph \"cluster_"), "{changes}");
}

#[test]
fn status_bad_input_exits_1_with_a_clear_message_never_2_which_means_degraded() {
    let (dir, _) = local_spec("cli-status-args", 3);
    let cases: [(&[&str], &str); 5] = [
        (&["status", "-f", "missing.toml"], "missing.toml"),
        (&["status", "-f", "network.toml", "--count", "2"], "--watch"),
        (&["status", "-f", "network.toml", "--watch", "0"], "--watch"),
        (&["status", "-f", "network.toml", "--format", "yaml"], "prometheus"),
        (&["status", "-f", "network.toml", "--json", "--format", "text"], "--format"),
    ];
    for (args, named) in cases {
        let (code, out, err) = parts(&peerfleet(dir.path(), args));
        assert_eq!(code, 1, "{args:?}:\n{out}{err}");
        assert!(err.contains(named), "{args:?} must name {named}: {err}");
    }
    // The same for every command: clap's usage code is 2, which `plan --detailed-exitcode` means as
    // "changes". Help is not an error.
    let (code, _, _) = parts(&peerfleet(dir.path(), &["plan", "-f", "network.toml", "--no-such-flag"]));
    assert_eq!(code, 1);
    let (code, out, _) = parts(&peerfleet(dir.path(), &["status", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--only") && out.contains("--watch") && out.contains("prometheus"), "{out}");
    assert!(!dir.path().join(".peerfleet").exists(), "status never creates state");
}
