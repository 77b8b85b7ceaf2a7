//! What a run that only partly succeeds leaves: a scale whose step fails after others succeeded
//! keeps the new count in the spec; a destroy that cannot remove everything exits 1 naming it.

use super::{Cleanup, docker, engine_available, engine_missing};
use crate::crash::engine::spec;
use crate::support::{parts, peerfleet};

const CHAIN: &str = "c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199";

/// The reference node image the network's genesis container runs.
fn node_image(net: &str) -> String {
    let (_, out, _) = docker(&["inspect", "--format", "{{.Config.Image}}", &format!("{net}-genesis-1")]);
    out.trim().to_string()
}

#[test]
fn a_scale_that_fails_after_some_steps_succeeded_keeps_the_new_count_in_the_spec() {
    if !engine_available() {
        return engine_missing(
            "a_scale_that_fails_after_some_steps_succeeded_keeps_the_new_count_in_the_spec",
        );
    }
    let net = format!("partial-scale-{}", std::process::id());
    let _cleanup = Cleanup(net.clone());
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    spec(dir, &net);
    let (code, out, err) = parts(&peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]));
    assert_eq!(code, 0, "{out}{err}");
    // A container that is not peerfleet's holds the name relay 4 would get: that create fails,
    // relay 3's succeeds.
    let squatter = format!("{net}-relay-4");
    let (code, _, err) = docker(&["create", "--name", &squatter, &node_image(&net)]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) =
        parts(&peerfleet(dir, &["scale", "-f", "network.toml", "relay", "4", "--auto-approve"]));
    assert_eq!(code, 1, "the scale did not complete:\n{out}{err}");
    assert!(err.contains(&squatter), "the failure names the squatter:\n{err}");
    let spec_text = std::fs::read_to_string(dir.join("network.toml")).unwrap();
    assert!(spec_text.contains("containers = 4"), "relay 3 runs, so the spec must say 4:\n{spec_text}");
    assert!(err.contains("kept containers = 4"), "{err}");
    let (_, running, _) =
        docker(&["ps", "--filter", &format!("label=peerfleet.network={net}"), "--format", "{{.Names}}"]);
    assert!(running.lines().any(|n| n == format!("{net}-relay-3")), "{running}");

    // Once the name is free, apply finishes the scale instead of undoing it.
    docker(&["rm", "-f", &squatter]);
    let (code, out, err) = parts(&peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 added, 0 changed, 0 replaced, 0 destroyed"), "{out}");
    let destroy = ["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN];
    assert_eq!(parts(&peerfleet(dir, &destroy)).0, 0);
}

#[test]
fn a_destroy_that_leaves_something_exits_1_naming_it() {
    if !engine_available() {
        return engine_missing("a_destroy_that_leaves_something_exits_1_naming_it");
    }
    let net = format!("leftover-{}", std::process::id());
    let _cleanup = Cleanup(net.clone());
    let bystander = format!("{net}-bystander");
    let _bystander = Bystander(bystander.clone());
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    spec(dir, &net);
    let (code, out, err) = parts(&peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]));
    assert_eq!(code, 0, "{out}{err}");
    // Someone else's running container joins the network's shared network.
    let genesis = "e30K"; // base64 of "{}\n"
    let chain = peerfleet::core::network::ChainId::of(b"{}\n").to_string();
    let (code, _, err) = docker(&[
        "run",
        "-d",
        "--name",
        &bystander,
        "--network",
        &format!("{net}-internet"),
        "-e",
        "NODE_ROLE=genesis",
        "-e",
        &format!("GENESIS_B64={genesis}"),
        "-e",
        &format!("CHAIN_ID={chain}"),
        &node_image(&net),
    ]);
    assert_eq!(code, 0, "{err}");

    let destroy = ["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN];
    let (code, out, err) = parts(&peerfleet(dir, &destroy));
    assert_eq!(code, 1, "a destroy that leaves the shared network is no success:\n{out}{err}");
    assert!(err.contains(&format!("{net}-internet")) && err.contains(&bystander), "{err}");
    let (_, running, _) = docker(&["ps", "--filter", &format!("name={bystander}"), "--format", "{{.Names}}"]);
    assert_eq!(running.trim(), bystander, "someone else's container is never touched");

    // Once it is gone, destroy completes.
    docker(&["rm", "-f", &bystander]);
    let (code, out, err) = parts(&peerfleet(dir, &destroy));
    assert_eq!(code, 0, "{out}{err}");
    let (_, nets, _) = docker(&["network", "ls", "--filter", &format!("name={net}-internet"), "-q"]);
    assert!(nets.trim().is_empty(), "{nets}");
}

/// Removes the bystander container even when the test fails half-way.
struct Bystander(String);

impl Drop for Bystander {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}
