//! The network as a graph: every resource that exists or is planned, what each stands on, and the
//! plan's pending changes highlighted. This is what `peerfleet graph` prints (Graphviz DOT).
//!
//! A plan alone holds only what changes, so its graph of a converged network would be empty; people
//! expect `graph` to show the network itself, as Terraform's does. Nodes are the union of what the
//! refresh found and what the plan creates; edges say what stands on what: a container on its machine
//! and on the services it needs, a stable IP on its machine, a machine behind its region's firewall.
//! Each cluster is a box holding its machines, their stable IPs and the containers they host. Pending
//! changes are drawn bold in the colour of their action and labelled with it (and their rollout batch);
//! what stays as it is is grey. Pure: the same plan and actual state give the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::ProviderKind;
use crate::plan::{Action, Plan};
use crate::resource::{Actual, ContainerSpec, Desired};

/// One node of the graph: what it is now or will be, and the change pending on it.
struct Node<'a> {
    action: Option<Action>,
    desired: Option<&'a Desired>,
    actual: Option<&'a Actual>,
}

impl Node<'_> {
    /// The container spec that decides its edges: the planned one, else the running one's labels.
    fn container(&self) -> Option<&ContainerSpec> {
        match (self.desired, self.actual) {
            (Some(Desired::Container(s)), _) => Some(s),
            (_, Some(Actual::Container(c))) => c.spec.as_ref(),
            _ => None,
        }
    }

    /// The second line of the node's label: where a machine runs, what a container is.
    fn detail(&self) -> String {
        match (self.desired, self.actual) {
            (Some(Desired::Machine(m)), _) => format!("{} {}", m.provider, m.region.slug),
            (_, Some(Actual::Machine(m))) => format!("{} {}", m.provider, m.region),
            (_, Some(Actual::StableIp(ip))) => ip.ip.clone(),
            _ => self.container().map(|s| s.role.as_str().to_string()).unwrap_or_default(),
        }
    }
}

/// The cluster an address belongs to: its own for machines and stable IPs, its node's for containers.
fn cluster_of(address: &Address, node: &Node<'_>) -> Option<String> {
    match address {
        Address::Machine { cluster, .. } | Address::StableIp { cluster, .. } => Some(cluster.clone()),
        Address::Container { .. } => match &node.container()?.node {
            Address::Machine { cluster, .. } => Some(cluster.clone()),
            _ => None,
        },
        Address::Firewall { .. } => None,
    }
}

/// The network of `plan` and `actual` in Graphviz DOT (see the module's header).
pub fn dot(plan: &Plan, actual: &ActualState) -> String {
    let mut nodes: BTreeMap<&Address, Node<'_>> = actual
        .objects
        .iter()
        .map(|(a, o)| (a, Node { action: None, desired: None, actual: Some(o) }))
        .collect();
    for c in &plan.changes {
        let node = nodes.entry(&c.address).or_insert(Node { action: None, desired: None, actual: None });
        node.action = Some(c.action);
        node.desired = c.after.as_ref();
        if node.actual.is_none() {
            node.actual = c.before.as_ref();
        }
    }
    let batch: BTreeMap<&Address, String> = plan
        .rollouts
        .iter()
        .flat_map(|r| {
            let n = r.batches.len();
            r.batches
                .iter()
                .enumerate()
                .flat_map(move |(i, b)| b.iter().map(move |a| (a, format!("batch {} of {n}", i + 1))))
        })
        .collect();

    let mut out =
        String::from("digraph peerfleet {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    let _ = writeln!(out, "  label=\"network {} (chain {})\";", plan.network, plan.chain_id.short());
    let mut clusters: BTreeMap<String, Vec<&Address>> = BTreeMap::new();
    let mut loose = Vec::new();
    for (address, node) in &nodes {
        match cluster_of(address, node) {
            Some(c) => clusters.entry(c).or_default().push(address),
            None => loose.push(*address),
        }
    }
    for address in loose {
        node_line(&mut out, "  ", address, &nodes[address], batch.get(address));
    }
    for (name, members) in &clusters {
        let _ =
            writeln!(out, "  subgraph \"cluster_{name}\" {{\n    label=\"cluster {name}\"; style=rounded;");
        for address in members {
            node_line(&mut out, "    ", address, &nodes[*address], batch.get(*address));
        }
        out.push_str("  }\n");
    }
    for (from, to) in edges(&nodes) {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
    }
    out.push_str("}\n");
    out
}

fn node_line(out: &mut String, indent: &str, address: &Address, node: &Node<'_>, batch: Option<&String>) {
    let detail = node.detail();
    let (style, head) = match node.action {
        None => ("color=gray50, fontcolor=gray30".to_string(), address.to_string()),
        Some(action) => {
            let color = crate::render::action_color(action);
            let dashed = if action == Action::Delete { ", dashed" } else { "" };
            (
                format!("color={color}, fontcolor={color}, style=\"bold{dashed}\""),
                format!("{} {address}", action.symbol()),
            )
        }
    };
    let mut label = head;
    for extra in [Some(&detail).filter(|d| !d.is_empty()), batch].into_iter().flatten() {
        let _ = write!(label, "\\n{extra}");
    }
    let _ = writeln!(out, "{indent}\"{address}\" [label=\"{label}\", {style}];");
}

/// Dependent → dependency, each edge once, in a stable order.
fn edges<'a>(nodes: &BTreeMap<&'a Address, Node<'_>>) -> BTreeSet<(&'a Address, &'a Address)> {
    // Containers by every name they answer to (service, alias, role), for the `needs` edges.
    let mut answering: BTreeMap<&str, Vec<&Address>> = BTreeMap::new();
    for (address, node) in nodes {
        if let Some(s) = node.container() {
            for name in s.names() {
                answering.entry(name).or_default().push(address);
            }
        }
    }
    let firewalls: BTreeMap<(ProviderKind, &str), &Address> = nodes
        .keys()
        .filter_map(|a| match a {
            Address::Firewall { provider, region } => Some(((*provider, region.as_str()), *a)),
            _ => None,
        })
        .collect();
    let mut edges = BTreeSet::new();
    let mut to = |from: &'a Address, target: &Address| {
        if let Some((known, _)) = nodes.get_key_value(target)
            && known != &from
        {
            edges.insert((from, *known));
        }
    };
    for (address, node) in nodes {
        match address {
            Address::Container { .. } => {
                let Some(spec) = node.container() else { continue };
                to(address, &spec.node);
                for need in &spec.needs {
                    for dep in answering.get(need.as_str()).into_iter().flatten() {
                        to(address, dep);
                    }
                }
            }
            Address::StableIp { .. } => {
                if let Some(machine) = address.machine_of_ip() {
                    to(address, &machine);
                }
            }
            Address::Machine { .. } => {
                let at = match (node.desired, node.actual) {
                    (Some(Desired::Machine(m)), _) => Some((m.provider, m.region.slug.as_str())),
                    (_, Some(Actual::Machine(m))) => Some((m.provider, m.region.as_str())),
                    _ => None,
                };
                if let Some(fw) = at.and_then(|k| firewalls.get(&k)) {
                    to(address, fw);
                }
            }
            Address::Firewall { .. } => {}
        }
    }
    edges
}

#[cfg(test)]
mod tests;
