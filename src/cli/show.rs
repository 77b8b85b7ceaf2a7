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

/// The table form: columns as wide as their widest cell, so long addresses keep them aligned.
pub fn text(prepared: &Prepared) -> String {
    let plan = &prepared.planned.plan;
    let mut out = String::new();
    let pinned =
        prepared.state.chain.as_ref().map(|p| p.id.to_string()).unwrap_or_else(|| "(not pinned yet)".into());
    let _ = writeln!(out, "Network {}  chain {}  (pinned: {pinned})", plan.network, plan.chain_id);
    let _ = writeln!(out, "\nNodes:");
    let mut nodes = vec![row(["ADDRESS", "PROVIDER", "REGION", "STATUS", "PUBLIC IP", "TAGS"])];
    for o in prepared.actual.objects.values() {
        if let Actual::Machine(m) = o {
            let tags: Vec<_> = m.tags.iter().cloned().collect();
            nodes.push(vec![
                m.address.to_string(),
                m.provider.as_str().to_string(),
                m.region.clone(),
                format!("{:?}", m.status).to_lowercase(),
                m.public_ip.clone().unwrap_or_else(|| "-".into()),
                tags.join(","),
            ]);
        }
    }
    table(&mut out, &nodes);
    let _ = writeln!(out, "\nContainers:");
    let mut containers = vec![row(["ADDRESS", "NAME", "ROLE", "NODE", "STATE", "HEALTH"])];
    for o in prepared.actual.objects.values() {
        if let Actual::Container(c) = o {
            let (name, role, node) = c
                .spec
                .as_ref()
                .map(|s| (s.name.clone(), s.role.as_str().to_string(), s.node.to_string()))
                .unwrap_or_else(|| ("?".into(), "?".into(), "?".into()));
            containers.push(vec![
                c.address.to_string(),
                name,
                role,
                node,
                format!("{:?}", c.state).to_lowercase(),
                format!("{:?}", c.health).to_lowercase(),
            ]);
        }
    }
    table(&mut out, &containers);
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

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Writes `rows` (the first is the header) indented by two spaces, each column padded to its widest
/// cell (counted in characters: region names and tags may be non-ASCII), the last one unpadded.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::from(" ");
        for (i, cell) in r.iter().enumerate() {
            line.push(' ');
            line.push_str(cell);
            if i + 1 < r.len() {
                line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfleet::core::Address;
    use peerfleet::core::actual::ActualState;
    use peerfleet::core::network::ProviderKind;
    use peerfleet::core::plan::{PlanOptions, Remembered, plan};
    use peerfleet::core::resource::{Container, ContainerState, Desired, Health, Machine, MachineStatus};
    use peerfleet::core::state::State;

    fn machine(cluster: &str, provider: ProviderKind, region: &str, ip: Option<&str>) -> Actual {
        Actual::Machine(Machine {
            id: format!("id-{cluster}"),
            address: Address::Machine { cluster: cluster.into(), slot: 0 },
            provider,
            region: region.into(),
            size: "small".into(),
            image: "debian-12".into(),
            tags: ["peer_cluster".to_string()].into(),
            chain_id: None,
            generation: 1,
            bootstrap: 1,
            status: MachineStatus::Running,
            public_ip: ip.map(Into::into),
            private_ip: None,
        })
    }

    #[test]
    fn show_sizes_its_columns_to_the_longest_address() {
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nine_regions.toml");
        let network = peerfleet::core::spec::load(spec.as_ref()).unwrap();
        let mut actual = ActualState::default();
        actual.insert(machine("northern-china", ProviderKind::Aws, "cn-north-1", Some("203.0.113.10")));
        actual.insert(machine("amsterdam", ProviderKind::DigitalOcean, "ams3", Some("198.51.100.200")));
        actual.insert(machine("sao-paulo", ProviderKind::Aws, "sa-east-1", None));
        actual.containers_listed = true;
        // Containers as the plan places them (genesis, master, the first relays), running and healthy.
        let first = plan(&network, &actual, &Remembered::default(), &PlanOptions::default()).unwrap();
        let specs = first.plan.changes.iter().filter_map(|c| match &c.after {
            Some(Desired::Container(spec)) => Some(spec.clone()),
            _ => None,
        });
        for (i, spec) in specs.take(4).enumerate() {
            actual.insert(Actual::Container(Container {
                id: format!("c{i}"),
                address: spec.address.clone(),
                spec: Some(spec),
                state: ContainerState::Running,
                health: Health::Healthy,
                chain_id: None,
            }));
        }
        let planned = plan(&network, &actual, &Remembered::default(), &PlanOptions::default()).unwrap();
        let shown = text(&Prepared { planned, state: State::new(), actual });
        insta::assert_snapshot!(shown);
    }
}
