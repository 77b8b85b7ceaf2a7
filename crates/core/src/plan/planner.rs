//! The planner: desired + actual + what state remembers → a [`Plan`].
//!
//! A pure function. Everything it needs comes in as arguments, so the same inputs give a
//! byte-identical plan (invariant 1), and every protection (the chain-ID pin) is enforced here, before
//! anything could run.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::actual::ActualState;
use crate::address::Address;
use crate::desired::{self, DesiredContainer, DesiredOptions};
use crate::network::{ChainId, Network, Role};
use crate::placement::PlacementError;
use crate::plan::{Action, Change, FORMAT_VERSION, Gate, Layer, Plan, PlanBase, Reason};
use crate::plan::{diff, join::join, rollout};
use crate::resource::{Actual, Desired};

/// How long a container may take to become healthy before its step fails.
pub const GATE_TIMEOUT_MS: u64 = 180_000;

/// What the state file remembers that the planner needs.
#[derive(Debug, Clone, Default)]
pub struct Remembered {
    /// State lineage.
    pub lineage: Option<String>,
    /// State serial.
    pub serial: u64,
    /// The pinned chain and its genesis bytes.
    pub pinned: Option<(ChainId, Vec<u8>)>,
    /// Last generation used per machine address.
    pub generations: BTreeMap<Address, u32>,
    /// The network's seal key (see [`crate::seal`]); `None` before the first apply.
    pub seal_key: Option<crate::seal::SealKey>,
}

impl Remembered {
    /// What `state` remembers for the planner. The generations of in-flight intents count as used,
    /// so a create a crash left unrecorded never has its idempotency key reused.
    pub fn of(state: &crate::state::State) -> Remembered {
        let mut generations = state.generations.clone();
        for address in state.intents.keys() {
            if let Some(g) = state.last_generation(address) {
                generations.insert(address.clone(), g);
            }
        }
        Remembered {
            lineage: state.lineage.clone(),
            serial: state.serial,
            pinned: state.chain.as_ref().and_then(|pin| pin.genesis().map(|bytes| (pin.id.clone(), bytes))),
            generations,
            seal_key: state
                .secrets
                .get(crate::seal::STATE_SECRET)
                .and_then(crate::seal::SealKey::from_secret),
        }
    }
}

/// Options of one plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Restrict the plan to one layer.
    pub only: Option<Layer>,
    /// Plan the removal of everything (`destroy`).
    pub destroy: bool,
    /// The current chain ID, given to allow replacing or destroying the genesis server.
    pub replace_genesis: Option<ChainId>,
    /// The reference image's content tag; `None` = [`desired::REFERENCE_IMAGE_UNBUILT`].
    pub reference_image: Option<String>,
    /// Whether `actual` was refreshed (else it is what state remembers, and no digest is recorded).
    pub refreshed: bool,
}

/// A plan and what the planner noticed on the way.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Things a person should know that do not stop the plan (duplicates found, ...).
    pub warnings: Vec<String>,
    /// Container → node, for `show`.
    pub placement: BTreeMap<Address, Address>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The spec's genesis block is not the one the network is pinned to.
    #[error(
        "the network is pinned to chain {pinned}, but the spec's genesis file hashes to {spec}; \
         the chain ID must never change by accident. To start a new chain deliberately, pass \
         --replace-genesis {pinned}"
    )]
    ChainMismatch {
        /// The pinned chain.
        pinned: ChainId,
        /// What the spec's genesis hashes to.
        spec: ChainId,
    },
    /// The plan would replace or destroy the genesis server.
    #[error(
        "this plan would {what} the genesis server, which holds chain {pinned}:\n{changes}\n\
         Pass --replace-genesis {pinned} to allow it"
    )]
    GenesisProtected {
        /// The pinned chain.
        pinned: ChainId,
        /// "replace" or "destroy".
        what: &'static str,
        /// The offending changes, one per line.
        changes: String,
    },
    /// `--replace-genesis` named a chain that is not the current one.
    #[error("--replace-genesis {given} does not name the current chain ({pinned}); nothing was changed")]
    WrongOverride {
        /// What was given.
        given: ChainId,
        /// The pinned chain.
        pinned: ChainId,
    },
    /// Containers cannot be placed.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// A machine's generation (from its tags or the state) has no successor.
    #[error(
        "{address} is at generation {last}, the last one: a replacement would reuse an idempotency \
         key. The generation comes from the machine's tags or the state file; one this high was \
         written by hand"
    )]
    GenerationExhausted {
        /// The machine.
        address: Address,
        /// The generation it is at.
        last: u32,
    },
}

/// The layer an address belongs to.
pub fn layer_of(address: &Address) -> Layer {
    match address {
        Address::Container { .. } => Layer::Containers,
        _ => Layer::Machines,
    }
}

/// The deterministic idempotency key of a machine create (EC2's `ClientToken`, at most 64 characters).
pub fn idempotency_key(network: &str, address: &Address, generation: u32) -> String {
    let digest = Sha256::digest(format!("{network}\n{address}\n{generation}").as_bytes());
    format!("pf-{}", &hex::encode(digest)[..40])
}

/// Computes the plan.
pub fn plan(
    network: &Network,
    actual: &ActualState,
    memory: &Remembered,
    opts: &PlanOptions,
) -> Result<Planned, PlanError> {
    let mut warnings = Vec::new();
    // The chain: pinned by state, or by what the running genesis server carries if state was lost.
    let pinned = memory.pinned.as_ref().map(|(id, _)| id.clone()).or_else(|| actual.pinned_chain());
    if let (Some(given), Some(p)) = (&opts.replace_genesis, &pinned)
        && given != p
    {
        return Err(PlanError::WrongOverride { given: given.clone(), pinned: p.clone() });
    }
    let overridden = opts.replace_genesis.is_some() && opts.replace_genesis == pinned;
    let (chain_id, genesis) = match &pinned {
        Some(p) if *p != network.chain.id && !overridden && !opts.destroy => {
            return Err(PlanError::ChainMismatch { pinned: p.clone(), spec: network.chain.id.clone() });
        }
        // Serve the pinned bytes when state has them: the genesis is recreated, never re-hashed.
        Some(p) if *p == network.chain.id => {
            let bytes = memory.pinned.as_ref().filter(|(id, _)| id == p).map(|(_, b)| b.clone());
            (p.clone(), bytes.unwrap_or_else(|| network.chain.genesis.clone()))
        }
        _ => (network.chain.id.clone(), network.chain.genesis.clone()),
    };

    let dopts = DesiredOptions {
        reference_image: opts
            .reference_image
            .clone()
            .unwrap_or_else(|| desired::REFERENCE_IMAGE_UNBUILT.into()),
        chain_id: chain_id.clone(),
        genesis,
        seal_key: memory.seal_key.clone(),
    };
    let set = if opts.destroy {
        desired::DesiredSet::default()
    } else {
        desired::desired(network, actual, &dopts)?
    };
    let in_layer = |a: &Address| opts.only.is_none_or(|l| layer_of(a) == l);

    if !actual.duplicates.is_empty() {
        let list: Vec<String> =
            actual.duplicates.iter().map(|d| format!("{} ({})", d.address(), d.id())).collect();
        warnings.push(format!(
            "found objects carrying an address already in use (left by an interrupted create?): {}; \
             peerfleet keeps the oldest and leaves these untouched — delete them by hand once checked",
            list.join(", ")
        ));
    }

    // Pass 1: action and reasons per address, walking desired and actual side by side in address
    // order (both are sorted maps): no set of every address is built.
    let wanted = join(
        set.resources.iter().map(|(a, d)| (a, Want::Resource(d))),
        set.containers().map(|c| (c.address, Want::Container(c))),
    )
    .filter_map(|(address, resource, container)| Some((address, resource.or(container)?)));
    let mut changes: BTreeMap<Address, Change> = BTreeMap::new();
    let mut unchanged = 0usize;
    // Relays that keep running through this apply: a master replaced under them must see them peer
    // again before its step is done.
    let mut kept_relays = 0u32;
    for (address, want, have) in join(wanted, actual.objects.iter()) {
        if !in_layer(address) {
            continue;
        }
        let (action, reasons) = match (want, have) {
            (Some(_), None) => {
                (Action::Create, vec![Reason::field("exists", None, Some("true".into()), false)])
            }
            (None, Some(_)) => {
                let why = if opts.destroy { "destroy" } else { "not in the spec" };
                (Action::Delete, vec![Reason::field("exists", Some("true".into()), Some(why.into()), false)])
            }
            (Some(w), Some(h)) => {
                let reasons = compare(w, h, actual);
                (diff::action_of(&reasons), reasons)
            }
            (None, None) => unreachable!("join yields an address from one side at least"),
        };
        if action == Action::NoOp {
            unchanged += 1;
            kept_relays += u32::from(want.is_some_and(|w| w.is_relay()));
            continue;
        }
        changes.insert(
            address.clone(),
            Change {
                address: address.clone(),
                action,
                reasons,
                before: have.cloned(),
                after: want.map(|w| w.to_desired()),
                waits_for: vec![],
                gate: None,
                rollout: None,
            },
        );
    }

    // Pass 2: containers on a machine being replaced go with it.
    let replaced_machines: BTreeSet<Address> = changes
        .values()
        .filter(|c| c.action == Action::Replace && matches!(c.address, Address::Machine { .. }))
        .map(|c| c.address.clone())
        .collect();
    if !replaced_machines.is_empty() {
        for want in set.containers() {
            let (address, Some(have)) = (want.address, actual.objects.get(want.address)) else {
                continue;
            };
            if !in_layer(address) || !replaced_machines.contains(want.node) {
                continue;
            }
            let reason = Reason::field(
                "node",
                Some(format!("{} (replaced)", want.node)),
                Some(want.node.to_string()),
                true,
            );
            let change = changes.entry(address.clone()).or_insert_with(|| {
                unchanged -= 1;
                kept_relays -= u32::from(want.template.shared().role == Role::Relay);
                Change {
                    address: address.clone(),
                    action: Action::Replace,
                    reasons: vec![],
                    before: Some(have.clone()),
                    after: Some(Desired::Container(want.spec())),
                    waits_for: vec![],
                    gate: None,
                    rollout: None,
                }
            });
            change.action = Action::Replace;
            change.reasons.push(reason);
        }
        // Their stable IPs move to the successor: deleting a machine detaches its IP (DigitalOcean
        // unassigns a reserved IP, EC2 disassociates an Elastic IP), so without this the new host
        // would come up without the address everyone else dials.
        for (address, want) in &set.resources {
            let (Desired::StableIp(spec), Some(have)) = (want, actual.objects.get(address)) else {
                continue;
            };
            if !in_layer(address) || !replaced_machines.contains(&spec.machine) {
                continue;
            }
            changes.entry(address.clone()).or_insert_with(|| {
                unchanged -= 1;
                Change {
                    address: address.clone(),
                    action: Action::Update,
                    reasons: vec![Reason::field(
                        "attached_to",
                        Some(format!("{} (replaced)", spec.machine)),
                        Some(spec.machine.to_string()),
                        false,
                    )],
                    before: Some(have.clone()),
                    after: Some(want.clone()),
                    waits_for: vec![],
                    gate: None,
                    rollout: None,
                }
            });
        }
    }

    // Pass 3: generations and idempotency keys of machines created now.
    for change in changes.values_mut() {
        if let Some(Desired::Machine(spec)) = &mut change.after
            && matches!(change.action, Action::Create | Action::Replace)
        {
            let from_actual = change.before.as_ref().and_then(|b| match b {
                Actual::Machine(m) => Some(m.generation),
                _ => None,
            });
            let from_memory = memory.generations.get(&change.address).copied();
            // Checked: a wrapped generation would reuse the first create's idempotency key, and the
            // provider would answer with that (long deleted) machine instead of a new one.
            spec.generation = match from_actual.into_iter().chain(from_memory).max() {
                None => 0,
                Some(last) => last.checked_add(1).ok_or_else(|| PlanError::GenerationExhausted {
                    address: change.address.clone(),
                    last,
                })?,
            };
            spec.idempotency_key = idempotency_key(&network.name, &change.address, spec.generation);
        } else if let (Some(Desired::Machine(spec)), Some(Actual::Machine(m))) =
            (&mut change.after, &change.before)
        {
            spec.generation = m.generation;
        }
    }

    protect_genesis(&changes, actual, pinned.as_ref(), overridden)?;
    order(&mut changes, actual, &set.placement);
    for change in changes.values_mut() {
        if let (Some(Desired::Container(spec)), Action::Create | Action::Replace) =
            (&change.after, change.action)
        {
            let relays = (spec.role == Role::Master && change.action == Action::Replace && kept_relays > 0)
                .then_some(kept_relays);
            let waiting_for = match (spec.role, relays) {
                (Role::Genesis, _) => format!("{} serving chain {}", spec.name, chain_id.short()),
                (Role::Master, None) => format!("{} reporting chain {}", spec.name, chain_id.short()),
                (Role::Master, Some(n)) => format!(
                    "{} reporting chain {} with its {n} relay{} peered again",
                    spec.name,
                    chain_id.short(),
                    if n == 1 { "" } else { "s" }
                ),
                (Role::Relay, _) => format!("{} peered with the master", spec.name),
            };
            change.gate = Some(Gate { waiting_for, timeout_ms: GATE_TIMEOUT_MS, relays });
        }
    }
    let rollouts = rollout::plan_rollouts(network, actual, &mut changes);

    let plan = Plan {
        format_version: FORMAT_VERSION,
        network: network.name.clone(),
        chain_id,
        only: opts.only,
        changes: changes.into_values().collect(),
        unchanged,
        prior: prior(actual, network),
        base: PlanBase {
            lineage: memory.lineage.clone(),
            serial: memory.serial,
            actual_digest: opts.refreshed.then(|| actual.digest()),
        },
        rollouts,
    };
    Ok(Planned { plan, warnings, placement: set.placement })
}

/// What apply may need to look up besides the changes themselves: every machine, firewall and stable
/// IP, and the containers of services others depend on (genesis, master: their hosts' addresses go
/// into dependents' hosts files). Other unchanged containers are left out: with thousands of relays,
/// copying them all into every plan would dominate its size.
fn prior(actual: &ActualState, network: &Network) -> Vec<Actual> {
    let needed: BTreeSet<&str> = network
        .services
        .iter()
        .filter(|s| matches!(s.role, Role::Genesis | Role::Master))
        .map(|s| s.name.as_str())
        .collect();
    actual
        .objects
        .values()
        .filter(|o| match o {
            Actual::Container(c) => match &c.address {
                Address::Container { service, .. } => needed.contains(service.as_str()),
                _ => true,
            },
            _ => true,
        })
        .cloned()
        .collect()
}

/// One desired resource: a whole one, or a container as its service's template and its placement.
#[derive(Clone, Copy)]
enum Want<'a> {
    Resource(&'a Desired),
    Container(DesiredContainer<'a>),
}

impl Want<'_> {
    fn is_relay(self) -> bool {
        matches!(self, Want::Container(c) if c.template.shared().role == Role::Relay)
    }

    fn to_desired(self) -> Desired {
        match self {
            Want::Resource(d) => d.clone(),
            Want::Container(c) => Desired::Container(c.spec()),
        }
    }
}

fn compare(want: Want<'_>, have: &Actual, actual: &ActualState) -> Vec<Reason> {
    let want = match (want, have) {
        (Want::Container(w), Actual::Container(h)) => return diff::container(&w, h),
        (Want::Resource(d), _) => d,
        // Same address, different kind: impossible by construction of addresses.
        (Want::Container(_), _) => {
            return vec![Reason::field("kind", Some("other".into()), Some("expected".into()), true)];
        }
    };
    match (want, have) {
        (Desired::Machine(w), Actual::Machine(h)) => {
            if h.status == crate::resource::MachineStatus::ShuttingDown {
                return vec![Reason::field(
                    "status",
                    Some("shutting down".into()),
                    Some("running".into()),
                    true,
                )];
            }
            diff::machine(w, h, w.provider.capabilities())
        }
        (Desired::Firewall(w), Actual::Firewall(h)) => diff::firewall(w, h),
        (Desired::StableIp(w), Actual::StableIp(h)) => {
            let machine_id = actual.machine(&w.machine).map(|m| m.id.clone());
            if h.machine_id != machine_id || machine_id.is_none() {
                vec![Reason::field(
                    "attached_to",
                    Some(h.machine_id.clone().unwrap_or_else(|| "(nothing)".into())),
                    Some(w.machine.to_string()),
                    false,
                )]
            } else {
                vec![]
            }
        }
        // Same address, different kind: impossible by construction of addresses.
        _ => vec![Reason::field("kind", Some("other".into()), Some("expected".into()), true)],
    }
}

/// Refuses any change that would lose the pinned chain, unless the override names it.
fn protect_genesis(
    changes: &BTreeMap<Address, Change>,
    actual: &ActualState,
    pinned: Option<&ChainId>,
    overridden: bool,
) -> Result<(), PlanError> {
    let Some(pinned) = pinned else { return Ok(()) };
    if overridden {
        return Ok(());
    }
    let is_genesis_container = |a: &Actual| match a {
        Actual::Container(c) => {
            c.chain_id.is_some() || c.spec.as_ref().is_some_and(|s| s.role == Role::Genesis)
        }
        _ => false,
    };
    let genesis_hosts: BTreeSet<Address> = actual
        .objects
        .values()
        .filter_map(|o| match o {
            Actual::Container(c) if is_genesis_container(o) => c.spec.as_ref().map(|s| s.node.clone()),
            Actual::Machine(m) if m.chain_id.is_some() => Some(m.address.clone()),
            _ => None,
        })
        .collect();
    let mut offending = Vec::new();
    let mut destroys = false;
    for c in changes.values() {
        let Some(before) = &c.before else { continue };
        let hits = match (before, c.action) {
            (Actual::Container(_), Action::Delete) if is_genesis_container(before) => true,
            // Recreating the genesis container with the pinned chain restores it; any other chain loses it.
            (Actual::Container(_), Action::Replace) if is_genesis_container(before) => match &c.after {
                Some(Desired::Container(s)) => s.chain_id.as_ref() != Some(pinned),
                _ => true,
            },
            (Actual::Machine(m), Action::Delete | Action::Replace) => genesis_hosts.contains(&m.address),
            _ => false,
        };
        if hits {
            destroys |= c.action == Action::Delete;
            let why: Vec<String> = c.reasons.iter().map(|r| r.field.clone()).collect();
            offending.push(format!("  {} {} ({})", c.action.symbol(), c.address, why.join(", ")));
        }
    }
    if offending.is_empty() {
        return Ok(());
    }
    Err(PlanError::GenesisProtected {
        pinned: pinned.clone(),
        what: if destroys { "destroy" } else { "replace" },
        changes: offending.join("\n"),
    })
}

/// Fills `waits_for`: creates after what they stand on, roles in order, deletes in reverse.
fn order(
    changes: &mut BTreeMap<Address, Change>,
    actual: &ActualState,
    placement: &BTreeMap<Address, Address>,
) {
    let builds = |c: &Change| matches!(c.action, Action::Create | Action::Replace | Action::Update);
    let creates = |c: &Change| matches!(c.action, Action::Create | Action::Replace);
    // Indexes built once, so ordering stays linear in the plan's size.
    let mut building_by_service: BTreeMap<&str, Vec<&Address>> = BTreeMap::new();
    let mut ip_building_for_machine: BTreeMap<&Address, &Address> = BTreeMap::new();
    let mut deletes_on_node: BTreeMap<Address, Vec<&Address>> = BTreeMap::new();
    let mut ip_deletes_by_machine_id: BTreeMap<&str, Vec<&Address>> = BTreeMap::new();
    let mut machine_takedowns_by_region: BTreeMap<(crate::network::ProviderKind, &str), Vec<&Address>> =
        BTreeMap::new();
    for c in changes.values() {
        match (&c.address, &c.after, &c.before) {
            (Address::Container { service, .. }, _, _) if builds(c) => {
                building_by_service.entry(service.as_str()).or_default().push(&c.address);
            }
            (_, Some(Desired::StableIp(ip)), _) if builds(c) => {
                ip_building_for_machine.insert(&ip.machine, &c.address);
            }
            _ => {}
        }
        if c.action == Action::Delete {
            match &c.before {
                Some(Actual::Container(k)) => {
                    if let Some(spec) = &k.spec {
                        deletes_on_node.entry(spec.node.clone()).or_default().push(&c.address);
                    }
                }
                Some(Actual::StableIp(ip)) => {
                    if let Some(id) = ip.machine_id.as_deref() {
                        ip_deletes_by_machine_id.entry(id).or_default().push(&c.address);
                    }
                }
                _ => {}
            }
        }
        if let (Some(Actual::Machine(m)), Action::Delete | Action::Replace) = (&c.before, c.action) {
            machine_takedowns_by_region.entry((m.provider, m.region.as_str())).or_default().push(&c.address);
        }
    }
    // Nodes hosting each service (desired placement), for the stable IPs of needed services.
    let mut hosts_of_service: BTreeMap<&str, BTreeSet<&Address>> = BTreeMap::new();
    for (container, node) in placement {
        if let Address::Container { service, .. } = container {
            hosts_of_service.entry(service.as_str()).or_default().insert(node);
        }
    }

    let mut edges: Vec<(Address, Address)> = Vec::new(); // (waiter, waited-for)
    for c in changes.values() {
        let wants = |a: &Address| changes.get(a);
        match &c.after {
            Some(Desired::Machine(m)) if builds(c) => {
                if let Some(fw) = m.firewall.as_ref().filter(|fw| wants(fw).is_some_and(builds)) {
                    edges.push((c.address.clone(), fw.clone()));
                }
            }
            Some(Desired::StableIp(ip)) if builds(c) && wants(&ip.machine).is_some_and(creates) => {
                edges.push((c.address.clone(), ip.machine.clone()));
            }
            Some(Desired::Container(s)) if builds(c) => {
                if wants(&s.node).is_some_and(builds) {
                    edges.push((c.address.clone(), s.node.clone()));
                }
                for needed in &s.needs {
                    // Role gating: wait for the needed service's containers being set up now...
                    for dep in building_by_service.get(needed.as_str()).into_iter().flatten() {
                        edges.push((c.address.clone(), (*dep).clone()));
                    }
                    // ...and for the stable addresses of the machines hosting it.
                    for host in hosts_of_service.get(needed.as_str()).into_iter().flatten() {
                        if let Some(ip) = ip_building_for_machine.get(host) {
                            edges.push((c.address.clone(), (*ip).clone()));
                        }
                    }
                }
            }
            _ => {}
        }
        // Taking something down waits for what stands on it to go first.
        if matches!(c.action, Action::Delete | Action::Replace) {
            match &c.address {
                Address::Machine { .. } => {
                    for dep in deletes_on_node.get(&c.address).into_iter().flatten() {
                        edges.push((c.address.clone(), (*dep).clone()));
                    }
                    if let Some(m) = actual.machine(&c.address) {
                        for dep in ip_deletes_by_machine_id.get(m.id.as_str()).into_iter().flatten() {
                            edges.push((c.address.clone(), (*dep).clone()));
                        }
                    }
                }
                Address::Firewall { provider, region } if c.action == Action::Delete => {
                    for dep in
                        machine_takedowns_by_region.get(&(*provider, region.as_str())).into_iter().flatten()
                    {
                        edges.push((c.address.clone(), (*dep).clone()));
                    }
                }
                _ => {}
            }
        }
    }
    let mut waits: BTreeMap<Address, BTreeSet<Address>> = BTreeMap::new();
    for (waiter, dep) in edges {
        if waiter != dep {
            waits.entry(waiter).or_default().insert(dep);
        }
    }
    for (waiter, deps) in waits {
        if let Some(c) = changes.get_mut(&waiter) {
            c.waits_for = deps.into_iter().collect();
        }
    }
}
