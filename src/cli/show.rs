//! `peerfleet show`: nodes, containers, placement and the chain ID, as a table or JSON.

use std::fmt::Write as _;

use peerfleet::Prepared;
use peerfleet::core::resource::Actual;
use serde_json::json;

/// The JSON form.
pub fn json(prepared: &Prepared) -> String {
    let plan = &prepared.planned.plan;
    let mut nodes = Vec::new();
    let mut containers = Vec::new();
    for o in prepared.actual.objects.values() {
        match o {
            Actual::Machine(m) => nodes.push(json!({
                "address": m.address.to_string(), "id": m.id, "provider": m.provider.as_str(), "region": m.region,
                "size": m.size, "status": m.status, "tags": m.tags, "public_ip": m.public_ip,
            })),
            Actual::Container(c) => containers.push(json!({
                "address": c.address.to_string(), "id": c.id,
                "name": c.spec.as_ref().map(|s| s.name.clone()),
                "role": c.spec.as_ref().map(|s| s.role.as_str()),
                "node": c.spec.as_ref().map(|s| s.node.to_string()),
                "state": c.state, "health": c.health,
            })),
            _ => {}
        }
    }
    let placement: serde_json::Map<String, serde_json::Value> =
        prepared.planned.placement.iter().map(|(c, n)| (c.to_string(), json!(n.to_string()))).collect();
    let doc = json!({
        "network": plan.network,
        "chain_id": plan.chain_id.as_str(),
        "pinned_chain_id": prepared.state.chain.as_ref().map(|p| p.id.to_string()),
        "nodes": nodes,
        "containers": containers,
        "placement": placement,
        "pending_changes": plan.changes.len(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The table form.
pub fn text(prepared: &Prepared) -> String {
    let plan = &prepared.planned.plan;
    let mut out = String::new();
    let pinned =
        prepared.state.chain.as_ref().map(|p| p.id.to_string()).unwrap_or_else(|| "(not pinned yet)".into());
    let _ = writeln!(out, "Network {}  chain {}  (pinned: {pinned})", plan.network, plan.chain_id);
    let _ = writeln!(out, "\nNodes:");
    let _ = writeln!(
        out,
        "  {:<28} {:<13} {:<16} {:<10} {:<16} tags",
        "ADDRESS", "PROVIDER", "REGION", "STATUS", "ADDRESS(IP)"
    );
    for o in prepared.actual.objects.values() {
        if let Actual::Machine(m) = o {
            let tags: Vec<_> = m.tags.iter().cloned().collect();
            let _ = writeln!(
                out,
                "  {:<28} {:<13} {:<16} {:<10} {:<16} {}",
                m.address.to_string(),
                m.provider.as_str(),
                m.region,
                format!("{:?}", m.status).to_lowercase(),
                m.public_ip.clone().unwrap_or_else(|| "-".into()),
                tags.join(",")
            );
        }
    }
    let _ = writeln!(out, "\nContainers:");
    let _ = writeln!(
        out,
        "  {:<22} {:<12} {:<8} {:<24} {:<9} HEALTH",
        "ADDRESS", "NAME", "ROLE", "NODE", "STATE"
    );
    for o in prepared.actual.objects.values() {
        if let Actual::Container(c) = o {
            let (name, role, node) = c
                .spec
                .as_ref()
                .map(|s| (s.name.clone(), s.role.as_str().to_string(), s.node.to_string()))
                .unwrap_or_else(|| ("?".into(), "?".into(), "?".into()));
            let _ = writeln!(
                out,
                "  {:<22} {:<12} {:<8} {:<24} {:<9} {}",
                c.address.to_string(),
                name,
                role,
                node,
                format!("{:?}", c.state).to_lowercase(),
                format!("{:?}", c.health).to_lowercase()
            );
        }
    }
    if !prepared.actual.containers_listed {
        let _ = writeln!(out, "  (containers not listed)");
    }
    if plan.has_changes() {
        let _ =
            writeln!(out, "\n{} pending change(s): run `peerfleet plan` to see them.", plan.changes.len());
    } else {
        let _ = writeln!(out, "\nEverything matches the spec.");
    }
    out
}
