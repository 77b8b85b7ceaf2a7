//! The network graph, pinned on the planner's small three-cluster network.

use crate::actual::ActualState;
use crate::address::Address;
use crate::plan::tests::{memory_after, network, opts, realize};
use crate::plan::{Remembered, plan};

fn converged(relays: u32) -> (crate::plan::Plan, ActualState) {
    let first =
        plan(&network(relays), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    (first.clone(), realize(&first))
}

#[test]
fn a_converged_network_is_drawn_whole_with_what_stands_on_what() {
    let (first, actual) = converged(3);
    let noop = plan(&network(3), &actual, &memory_after(&first), &opts()).unwrap().plan;
    assert!(noop.changes.is_empty(), "{:?}", noop.changes);
    let dot = super::dot(&noop, &actual);
    assert!(dot.starts_with("digraph peerfleet {"), "{dot}");
    // Every resource is a node, none highlighted.
    for address in actual.objects.keys() {
        assert!(dot.contains(&format!("  \"{address}\" [label=\"{address}")), "{address} missing:\n{dot}");
    }
    assert!(!dot.contains("bold"), "nothing pending:\n{dot}");
    // Containers stand on their machines and on the services they need; the master needs genesis.
    assert!(dot.contains("\"container.master[0]\" -> \"container.genesis[0]\""), "{dot}");
    for relay in 0..3 {
        assert!(dot.contains(&format!("\"container.relay[{relay}]\" -> \"container.master[0]\"")), "{dot}");
        assert!(dot.contains(&format!("\"container.relay[{relay}]\" -> \"machine.")), "{dot}");
    }
    // Stable IPs on their machines, machines behind their region's firewall, clusters as boxes.
    assert!(dot.contains("\"ip.") && dot.contains("\" -> \"machine."), "{dot}");
    assert!(dot.contains("\"machine.virginia[0]\" -> \"firewall."), "{dot}");
    for cluster in ["virginia", "frankfurt", "oregon"] {
        assert!(dot.contains(&format!("subgraph \"cluster_{cluster}\"")), "{dot}");
    }
    // Balanced braces: one per subgraph and the graph itself.
    assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
}

#[test]
fn pending_changes_are_highlighted_with_their_action_and_batch() {
    let (first, actual) = converged(3);
    let mut net = network(3);
    let relay = net.services.iter_mut().find(|s| s.name == "relay").unwrap();
    relay.env.insert("LOG".into(), "debug".into());
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let dot = super::dot(&p, &actual);
    for relay in 0..3 {
        let line = dot
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"container.relay[{relay}]\" [")))
            .unwrap_or_else(|| panic!("relay {relay}:\n{dot}"));
        assert!(line.contains("-/+ container.relay") && line.contains("bold"), "{line}");
        assert!(line.contains("batch ") && line.contains(" of 3"), "{line}");
    }
    let master = dot.lines().find(|l| l.trim_start().starts_with("\"container.master[0]\" [")).unwrap();
    assert!(!master.contains("bold"), "the master stays: {master}");
}

#[test]
fn what_a_plan_creates_from_nothing_is_drawn_as_created() {
    let (first, _) = converged(1);
    let dot = super::dot(&first, &ActualState::default());
    assert!(dot.contains("+ machine.oregon[0]"), "{dot}");
    assert!(dot.contains("\"container.master[0]\" -> \"container.genesis[0]\""), "{dot}");
    assert!(!dot.contains("gray50"), "everything is new:\n{dot}");
    let _ = Address::machine("oregon", 0);
}
