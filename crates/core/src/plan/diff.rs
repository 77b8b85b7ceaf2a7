//! Field-by-field comparison of one desired resource with what exists, and the replace-vs-update rules.

use std::collections::BTreeSet;

use crate::desired::DesiredContainer;
use crate::network::{Capabilities, ChainId};
use crate::plan::join::join;
use crate::plan::{Action, Reason};
use crate::resource::{
    Container, ContainerState, Firewall, FirewallRule, FirewallSpec, Machine, MachineSpec,
};
use crate::seal;

/// The action implied by a list of reasons: replace if any forces it, update if any, else no-op.
pub fn action_of(reasons: &[Reason]) -> Action {
    if reasons.iter().any(|r| r.forces_replace) {
        Action::Replace
    } else if reasons.is_empty() {
        Action::NoOp
    } else {
        Action::Update
    }
}

fn differ<T: PartialEq + ToString>(out: &mut Vec<Reason>, field: &str, before: &T, after: &T, replace: bool) {
    if before != after {
        out.push(Reason::field(field, Some(before.to_string()), Some(after.to_string()), replace));
    }
}

fn set_text(s: &BTreeSet<String>) -> String {
    format!("[{}]", s.iter().cloned().collect::<Vec<_>>().join(", "))
}

fn chain_text(c: &Option<ChainId>) -> String {
    c.as_ref().map(|c| c.short().to_string()).unwrap_or_else(|| "(none)".into())
}

/// What must change on a machine. Region, image and bootstrap can only be set at creation; size and
/// tags depend on what the provider can change in place.
pub fn machine(spec: &MachineSpec, actual: &Machine, caps: Capabilities) -> Vec<Reason> {
    let mut r = Vec::new();
    differ(&mut r, "region", &actual.region, &spec.region.slug, true);
    if let Some(image) = &spec.image {
        differ(&mut r, "image", &actual.image, image, true);
    }
    differ(&mut r, "size", &actual.size, &spec.size, !caps.resize);
    differ(&mut r, "bootstrap", &actual.bootstrap, &spec.bootstrap, true);
    if actual.tags != spec.tags {
        r.push(Reason::field("tags", Some(set_text(&actual.tags)), Some(set_text(&spec.tags)), !caps.retag));
    }
    if actual.chain_id != spec.chain_id {
        r.push(Reason::field(
            "chain_id",
            Some(chain_text(&actual.chain_id)),
            Some(chain_text(&spec.chain_id)),
            !caps.retag,
        ));
    }
    r
}

/// What must change on a container. Containers are never changed in place: any difference replaces.
///
/// The desired side is the service's template and the container's slot and node: a no-op plan of
/// thousands of containers compares each with its template and builds no spec.
pub fn container(want: &DesiredContainer<'_>, actual: &Container) -> Vec<Reason> {
    let spec = want.template.shared();
    let name = crate::desired::stable_name(&spec.service, want.slot);
    let aliases = [name.as_str(), spec.service.as_str()];
    let node = want.node;
    let mut r = Vec::new();
    if !matches!(actual.state, ContainerState::Running | ContainerState::Restarting) {
        r.push(Reason::field(
            "state",
            Some(format!("{:?}", actual.state).to_lowercase()),
            Some("running".into()),
            true,
        ));
    }
    let Some(have) = &actual.spec else {
        r.push(Reason::field("labels", Some("(unreadable)".into()), Some("(spec)".into()), true));
        return r;
    };
    differ(&mut r, "node", &have.node, node, true);
    differ(&mut r, "image", &have.image, &spec.image, true);
    // `have` was read back from a label, so its sensitive values are seals (see `crate::seal`).
    for (key, before, after) in join(have.env.iter(), spec.env.iter()) {
        let sealed = spec.seals.get(key);
        let same = match (before, after, sealed) {
            (Some(b), Some(a), Some(s)) => seal::stored_matches(b, s, a),
            (b, a, _) => b == a,
        };
        if !same {
            let sensitive = sealed.is_some() || before.is_some_and(|b| seal::is_seal(b));
            let show = |v: Option<&String>| {
                v.map(|v| if sensitive { "(sensitive)".to_string() } else { abbreviate(v) })
            };
            r.push(Reason::field(format!("env.{key}"), show(before), show(after), true));
        }
    }
    // Typed comparisons first: formatting is only for the reasons of what differs.
    if have.ports != spec.ports {
        r.push(Reason::field(
            "ports",
            Some(format!("{:?}", have.ports)),
            Some(format!("{:?}", spec.ports)),
            true,
        ));
    }
    differ(&mut r, "restart", &have.restart.as_str(), &spec.restart.as_str(), true);
    if have.health != spec.health {
        r.push(Reason::field(
            "health",
            Some(format!("{:?}", have.health)),
            Some(format!("{:?}", spec.health)),
            true,
        ));
    }
    if !have.aliases.iter().map(String::as_str).eq(aliases.iter().copied()) {
        r.push(Reason::field("aliases", Some(have.aliases.join(",")), Some(aliases.join(",")), true));
    }
    if have.needs != spec.needs {
        r.push(Reason::field("needs", Some(have.needs.join(",")), Some(spec.needs.join(",")), true));
    }
    r
}

/// What must change on a firewall: its rules, in place. Both sides are compared in their canonical
/// form, so rules that grant the same access in another order are no change.
pub fn firewall(spec: &FirewallSpec, actual: &Firewall) -> Vec<Reason> {
    let text = |rules: &[FirewallRule]| {
        rules
            .iter()
            .map(|r| format!("{}/{:?} from {}", r.port, r.protocol, r.sources.join(" ")).to_lowercase())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (have, want) = (FirewallRule::canonical(&actual.rules), FirewallRule::canonical(&spec.rules));
    let mut r = Vec::new();
    differ(&mut r, "rules", &text(&have), &text(&want), false);
    r
}

/// Long values (the genesis block in base64) are shown by length and a prefix only.
fn abbreviate(v: &str) -> String {
    if v.len() <= 80 {
        v.to_string()
    } else {
        format!("{}… ({} bytes)", &v[..v.char_indices().nth(40).map(|(i, _)| i).unwrap_or(40)], v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::network::ProviderKind;
    use crate::resource::Protocol;

    fn rule(port: u16, sources: &[&str]) -> FirewallRule {
        FirewallRule {
            protocol: Protocol::Tcp,
            port,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn reordered_firewall_rules_and_sources_are_no_change() {
        let address = Address::firewall(ProviderKind::DigitalOcean, "fra1");
        let spec = FirewallSpec {
            address: address.clone(),
            network: "n".into(),
            provider: ProviderKind::DigitalOcean,
            region: "fra1".into(),
            rules: vec![rule(26656, &["0.0.0.0/0"]), rule(2376, &["203.0.113.0/24", "198.51.100.0/24"])],
        };
        let actual = Firewall {
            id: "fw".into(),
            address,
            rules: vec![
                rule(2376, &["198.51.100.0/24", "203.0.113.0/24", "198.51.100.0/24"]),
                rule(26656, &["0.0.0.0/0"]),
            ],
        };
        assert!(firewall(&spec, &actual).is_empty());
        let mut narrowed = actual.clone();
        narrowed.rules[0].sources.pop();
        narrowed.rules[0].sources.pop();
        assert_eq!(firewall(&spec, &narrowed).len(), 1, "a lost source is a change");
    }

    #[test]
    fn canonical_rules_merge_ports_and_drop_empty_ones() {
        let messy = vec![rule(80, &["z"]), rule(26656, &["b"]), rule(26656, &["a", "b"]), rule(22, &[])];
        assert_eq!(FirewallRule::canonical(&messy), vec![rule(80, &["z"]), rule(26656, &["a", "b"])]);
    }
}
