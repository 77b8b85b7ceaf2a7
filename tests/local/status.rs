//! `peerfleet status` on the real engine: a small network (two virtual nodes, genesis, master, three
//! relays) read through the engine's health log — healthy, a refused node of another chain, then a
//! killed relay named in every format.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CHAIN, Cleanup, docker, engine_available, engine_missing, rogue_node_is_refused};
use crate::support::{parts, peerfleet_within, root, samples, scrape};

const NET: &str = "e2e-status";

/// Two virtual nodes, genesis, master and three relays.
pub(super) const SPEC: &str = r#"name = "e2e-status"

[chain]
genesis = "genesis.json"

[[clusters]]
name = "virginia"
provider = "local"
region = "Virginia"
tags = ["peer_cluster"]

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

[[services]]
name = "relay"
role = "relay"
containers = 3
strategy = "emptiest_node"
"#;

/// `peerfleet ARGS` in `dir`, failing the test if it hangs.
pub(super) fn peerfleet(dir: &Path, args: &[&str]) -> (i32, String, String) {
    parts(&peerfleet_within(dir, args, Duration::from_secs(180)))
}

pub(super) fn status(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["status", "-f", "network.toml"];
    args.extend(extra);
    peerfleet(dir, &args)
}

/// The status JSON, polled (bounded) until `ready` holds: health checks run every 500 ms, and the
/// master's probe line counts the relays only once they have peered.
fn status_json_until(
    dir: &Path,
    what: &str,
    ready: impl Fn(i32, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (code, out, err) = status(dir, &["--json"]);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if ready(code, &doc) {
            return doc;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never {what}: exit {code}\n{out}{err}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub(super) fn container<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["containers"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()
}

#[test]
fn status_reads_health_chain_and_peers_from_the_engine_and_names_a_killed_relay() {
    if !engine_available() {
        return engine_missing(
            "status_reads_health_chain_and_peers_from_the_engine_and_names_a_killed_relay",
        );
    }
    let _cleanup = Cleanup(NET.into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("network.toml"), SPEC).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.join("genesis.json")).unwrap();
    let (code, out, err) = peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");

    // Healthy: every fact per container, from the probe line in the engine's health log.
    let doc = status_json_until(dir, "healthy with the master counting 3 relays", |code, doc| {
        code == 0 && doc["containers"].as_array().is_some_and(|c| c.iter().any(|c| c["relays"] == 3))
    });
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{doc:#}");
    assert!(nodes.iter().all(|n| n["provider"] == "local" && n["state"] == "running"), "{doc:#}");
    for relay in ["relay-1", "relay-2", "relay-3"] {
        let r = container(&doc, relay);
        assert_eq!(
            (&r["role"], &r["health"], &r["state"]),
            (&"relay".into(), &"healthy".into(), &"running".into())
        );
        assert_eq!(
            (&r["chain_id"], &r["chain_matches"], &r["master_peered"]),
            (&CHAIN.into(), &true.into(), &true.into()),
            "{r:#}"
        );
        assert!(
            r["peered_since_unix_s"].is_u64() && r["uptime_s"].is_u64() && r["peers"].as_u64() >= Some(1),
            "{r:#}"
        );
        assert!(r["node"].as_str().is_some_and(|n| n.starts_with("machine.")), "{r:#}");
    }
    assert_eq!(container(&doc, "master-1")["chain_id"], CHAIN);
    assert_eq!(container(&doc, "genesis-1")["state"], "running");
    // Status reads no environment: nothing of a container's env (the genesis travels in one) shows.
    let genesis_b64 = super::env_of(&format!("{NET}-genesis-1"), "GENESIS_B64");
    assert!(!genesis_b64.is_empty() && !doc.to_string().contains(&genesis_b64));

    let (code, out, err) = status(dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("healthy: 2 machines running, 5/5 containers healthy, 3/3 relays peered"), "{out}");
    assert!(out.contains("master for ") && out.contains("3 relays"), "{out}");

    let (code, out, err) = status(dir, &["--format", "prometheus"]);
    assert_eq!(code, 0, "{err}");
    let metrics = scrape(&out);
    assert_eq!(samples(&metrics, "peerfleet_network_healthy", None), [1.0], "{out}");
    assert_eq!(samples(&metrics, "peerfleet_master_relays", Some(("name", "master-1"))), [3.0], "{out}");
    for relay in ["relay-1", "relay-2", "relay-3"] {
        assert_eq!(samples(&metrics, "peerfleet_relay_peered", Some(("name", relay))), [1.0], "{out}");
        assert_eq!(
            samples(&metrics, "peerfleet_container_chain_match", Some(("name", relay))),
            [1.0],
            "{out}"
        );
    }

    // A relay of another chain dials the master and is refused: the master's row shows why, and the
    // network stays healthy (the refusal is the master doing its job).
    rogue_node_is_refused(NET);
    let doc = status_json_until(dir, "showing the master's refusal", |_, doc| {
        doc["containers"].as_array().is_some_and(|c| c.iter().any(|c| c["last_refusal"].is_string()))
    });
    let refusal = container(&doc, "master-1")["last_refusal"].as_str().unwrap().to_string();
    assert!(refusal.contains("chain"), "{refusal}");
    let (code, out, err) = status(dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("last refusal: "), "{out}");

    // A killed relay: exit 2 naming it, in every format.
    let (code, _, err) = docker(&["kill", &format!("{NET}-relay-2")]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = status(dir, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("degraded: 2 machines running, 4/5 containers healthy, 2/3 relays peered"), "{out}");
    assert!(out.contains("relay-2 (container.relay[1]): exited"), "{out}");
    let (code, out, _) = status(dir, &["--json"]);
    assert_eq!(code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dead = container(&doc, "relay-2");
    assert_eq!(dead["problem"], "exited", "{doc:#}");
    // Its last health log entry said peered; a dead relay is not.
    assert!(dead["master_peered"].is_null() && dead["uptime_s"].is_null(), "{dead:#}");
    let (code, out, _) = status(dir, &["--format", "prometheus"]);
    assert_eq!(code, 2);
    let metrics = scrape(&out);
    assert_eq!(samples(&metrics, "peerfleet_network_healthy", None), [0.0], "{out}");
    assert_eq!(samples(&metrics, "peerfleet_container_healthy", Some(("name", "relay-2"))), [0.0], "{out}");
    assert_eq!(samples(&metrics, "peerfleet_container_healthy", Some(("name", "relay-1"))), [1.0], "{out}");
    assert!(samples(&metrics, "peerfleet_relay_peered", Some(("name", "relay-2"))).is_empty(), "{out}");
}
