//! A master upgrade on the real engine: the relays stay, reconnect by themselves, and the apply
//! reports success only once the new master counts them all again.

use super::status::{container, peerfleet, status};
use super::{Cleanup, engine_available, engine_missing};
use crate::support::root;

/// The status test's network under its own name, the master with a version to upgrade, and relays
/// that come back 4 s after losing their master: later than a new master needs to become healthy,
/// so an apply that did not wait for them would end before they are back.
fn spec(note: &str) -> String {
    super::status::SPEC
        .replace("e2e-status", "e2e-master")
        .replace("role = \"master\"\n", &format!("role = \"master\"\nenv = {{ UPGRADE_NOTE = \"{note}\" }}\n"))
        .replace(
            "strategy = \"emptiest_node\"\n",
            "strategy = \"emptiest_node\"\nenv = { BACKOFF_INITIAL_MS = \"4000\", BACKOFF_MAX_MS = \"4000\" }\n",
        )
}

#[test]
fn a_master_upgrade_keeps_the_relays_and_ends_only_when_they_are_peered_again() {
    if !engine_available() {
        return engine_missing("a_master_upgrade_keeps_the_relays_and_ends_only_when_they_are_peered_again");
    }
    let _cleanup = Cleanup("e2e-master".into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("network.toml"), spec("first")).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.join("genesis.json")).unwrap();
    let apply = ["apply", "-f", "network.toml", "--auto-approve"];
    let (code, out, err) = peerfleet(dir, &apply);
    assert_eq!(code, 0, "{out}{err}");
    let relay_ids = || {
        super::docker(&[
            "ps",
            "-q",
            "--filter",
            "label=peerfleet.network=e2e-master",
            "--filter",
            "name=relay",
        ])
        .1
    };
    let relays_before = relay_ids();
    assert_eq!(relays_before.split_whitespace().count(), 3, "{relays_before}");

    std::fs::write(dir.join("network.toml"), spec("second")).unwrap();
    let (code, out, err) = peerfleet(dir, &["plan", "-f", "network.toml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("-/+ container.master[0]") && !out.contains("container.relay["), "{out}");
    let (code, out, err) = peerfleet(dir, &apply);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 replaced"), "{out}");
    // At once, with no polling: the new master already counts every relay, because the apply waited.
    let (_, json, err) = status(dir, &["--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}{err}"));
    assert_eq!(container(&doc, "master-1")["relays"], 3, "{doc:#}");
    assert_eq!(relay_ids(), relays_before, "the relays were kept, not replaced");
}
