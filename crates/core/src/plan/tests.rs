//! Planner behaviour, pinned on small networks.

use std::collections::BTreeSet;

use super::*;
use crate::actual::ActualState;
use crate::network::*;
use crate::resource::*;

fn cluster(name: &str, provider: ProviderKind, slug: &str, nodes: u32) -> Cluster {
    Cluster {
        name: name.into(),
        provider,
        region: Region { slug: slug.into(), city: None },
        size: "s1".into(),
        image: None,
        nodes,
        tags: BTreeSet::from([PEER_CLUSTER_TAG.to_string()]),
        profile: None,
        update: Default::default(),
    }
}

fn service(name: &str, role: Role, containers: u32) -> Service {
    Service {
        name: name.into(),
        role,
        image: Image::Reference,
        containers,
        strategy: Strategy::EmptiestNode,
        deploy_tags: BTreeSet::from([PEER_CLUSTER_TAG.to_string()]),
        env: Default::default(),
        secrets: Default::default(),
        ports: vec![],
        restart: RestartPolicy::Always,
        health: None,
        update: Default::default(),
    }
}

pub(crate) fn network(relays: u32) -> Network {
    Network {
        name: "net".into(),
        chain: Chain::from_genesis(b"{\"chain\":\"test\"}".to_vec(), None),
        clusters: vec![
            cluster("virginia", ProviderKind::Aws, "us-east-1", 1),
            cluster("frankfurt", ProviderKind::DigitalOcean, "fra1", 1),
            cluster("oregon", ProviderKind::Aws, "us-west-2", 1),
        ],
        services: vec![
            service("genesis", Role::Genesis, 1),
            service("master", Role::Master, 1),
            service("relay", Role::Relay, relays),
        ],
        access: Access { admin_cidrs: vec!["203.0.113.0/24".into()], ssh: false },
        state: Default::default(),
    }
}

/// What a perfect apply of `plan`, made against `before`, leaves behind.
pub(crate) fn realize_from(before: &ActualState, plan: &Plan) -> ActualState {
    let mut objects = before.objects.clone();
    let mut next_id = 1000 + objects.len();
    for c in &plan.changes {
        objects.remove(&c.address);
        let Some(after) = &c.after else { continue };
        next_id += 1;
        let id = format!("id-{next_id}");
        let made = match after {
            Desired::Machine(m) => Actual::Machine(Machine {
                id,
                address: m.address.clone(),
                provider: m.provider,
                region: m.region.slug.clone(),
                size: m.size.clone(),
                image: m.image.clone().unwrap_or_else(|| "default-image".into()),
                tags: m.tags.clone(),
                chain_id: m.chain_id.clone(),
                generation: m.generation,
                bootstrap: m.bootstrap,
                status: MachineStatus::Running,
                public_ip: None,
                private_ip: None,
            }),
            Desired::Firewall(f) => {
                Actual::Firewall(Firewall { id, address: f.address.clone(), rules: f.rules.clone() })
            }
            Desired::StableIp(s) => Actual::StableIp(StableIp {
                id,
                address: s.address.clone(),
                ip: "192.0.2.1".into(),
                machine_id: None,
                provider: Some(s.provider),
            }),
            Desired::Container(s) => Actual::Container(Container {
                id,
                address: s.address.clone(),
                // Engines keep the sealed form (the label), as the Docker engine does.
                spec: Some(s.sealed()),
                state: ContainerState::Running,
                health: Health::Healthy,
                chain_id: s.chain_id.clone(),
            }),
        };
        objects.insert(c.address.clone(), made);
    }
    // Stable IPs attach to whatever machine now holds their address.
    let ids: std::collections::BTreeMap<_, _> = objects
        .values()
        .filter_map(
            |o| if let Actual::Machine(m) = o { Some((m.address.clone(), m.id.clone())) } else { None },
        )
        .collect();
    for o in objects.values_mut() {
        if let Actual::StableIp(ip) = o {
            ip.machine_id = ids.get(&ip.address.machine_of_ip().unwrap()).cloned();
        }
    }
    ActualState { objects, duplicates: vec![], containers_listed: true }
}

/// What a perfect apply of a plan made against nothing leaves behind.
pub(crate) fn realize(plan: &Plan) -> ActualState {
    realize_from(&ActualState::default(), plan)
}

pub(crate) fn memory_after(plan: &Plan) -> Remembered {
    let genesis = plan.changes.iter().find_map(|c| match &c.after {
        Some(Desired::Container(s)) if s.role == Role::Genesis => Some(s.env["GENESIS_B64"].clone()),
        _ => None,
    });
    use base64::Engine as _;
    Remembered {
        lineage: Some("l".into()),
        serial: 1,
        pinned: genesis
            .map(|g| (plan.chain_id.clone(), base64::engine::general_purpose::STANDARD.decode(g).unwrap())),
        generations: Default::default(),
        seal_key: Some(test_seal_key()),
    }
}

/// One network's seal key, the same in every test of this file.
fn test_seal_key() -> crate::seal::SealKey {
    crate::seal::SealKey::from_secret(&crate::provider::Secret::new("ab".repeat(32))).unwrap()
}

pub(crate) fn opts() -> PlanOptions {
    PlanOptions { refreshed: true, ..Default::default() }
}

fn actions(plan: &Plan) -> Vec<String> {
    plan.changes.iter().map(|c| format!("{} {}", c.action.symbol(), c.address)).collect()
}

#[test]
fn fresh_network_creates_everything_in_dependency_order() {
    let planned = plan(&network(3), &ActualState::default(), &Remembered::default(), &opts()).unwrap();
    let p = &planned.plan;
    let s = p.summary();
    // 3 machines, 3 firewalls (one per provider-region), 2 stable IPs (genesis and master hosts), 5 containers.
    assert_eq!((s.create, s.update, s.replace, s.delete), (13, 0, 0, 0), "{:#?}", actions(p));
    let master = p.change(&Address::container("master", 0)).unwrap();
    assert!(master.waits_for.contains(&Address::container("genesis", 0)), "{:?}", master.waits_for);
    let relay = p.change(&Address::container("relay", 0)).unwrap();
    assert!(relay.waits_for.contains(&Address::container("master", 0)));
    assert!(relay.gate.as_ref().unwrap().waiting_for.contains("peered with the master"));
    let machine = p.change(&Address::machine("virginia", 0)).unwrap();
    assert_eq!(machine.waits_for, vec![Address::firewall(ProviderKind::Aws, "us-east-1")]);
}

#[test]
fn plan_json_is_byte_identical_across_runs() {
    let a = plan(&network(9), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let b = plan(&network(9), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    let actual = realize(&a);
    let c = plan(&network(9), &actual, &memory_after(&a), &opts()).unwrap().plan;
    let d = plan(&network(9), &actual, &memory_after(&a), &opts()).unwrap().plan;
    assert_eq!(serde_json::to_string(&c).unwrap(), serde_json::to_string(&d).unwrap());
}

#[test]
fn converged_network_plans_no_changes() {
    let first = plan(&network(3), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let again = plan(&network(3), &realize(&first), &memory_after(&first), &opts()).unwrap().plan;
    assert!(!again.has_changes(), "{:#?}", actions(&again));
    assert_eq!(again.unchanged, 13);
}

#[test]
fn scaling_changes_only_the_difference() {
    let first = plan(&network(3), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let three = realize(&first);
    let up = plan(&network(9), &three, &memory_after(&first), &opts()).unwrap().plan;
    assert_eq!(up.summary().create, 6, "{:#?}", actions(&up));
    assert!(up.changes.iter().all(|c| c.action == Action::Create && c.address.kind() == "container"));
    let down = plan(&network(1), &realize_from(&three, &up), &memory_after(&first), &opts()).unwrap().plan;
    // The newest (highest) slots go.
    assert_eq!(actions(&down), (1..9).map(|i| format!("- container.relay[{i}]")).collect::<Vec<_>>());
}

#[test]
fn size_replaces_on_aws_but_resizes_in_place_on_digitalocean() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let mut net = network(1);
    for c in &mut net.clusters {
        c.size = "s2".into();
    }
    let p = plan(
        &net,
        &actual,
        &memory_after(&first),
        &PlanOptions { replace_genesis: Some(first.chain_id.clone()), ..opts() },
    )
    .unwrap()
    .plan;
    let aws = p.change(&Address::machine("virginia", 0)).unwrap();
    let digitalocean = p.change(&Address::machine("frankfurt", 0)).unwrap();
    assert_eq!(aws.action, Action::Replace);
    assert_eq!(digitalocean.action, Action::Update);
    let r = &aws.reasons[0];
    assert_eq!((r.field.as_str(), r.before.as_deref(), r.after.as_deref()), ("size", Some("s1"), Some("s2")));
}

#[test]
fn tags_update_machines_in_place_and_env_replaces_only_containers() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let mut net = network(1);
    net.clusters[0].tags.insert("extra".into());
    net.services[2].env.insert("LOG_LEVEL".into(), "debug".into());
    net.services[2].deploy_tags.clear();
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    assert_eq!(p.change(&Address::machine("virginia", 0)).unwrap().action, Action::Update);
    let relay = p.change(&Address::container("relay", 0)).unwrap();
    assert_eq!(relay.action, Action::Replace);
    assert!(relay.reasons.iter().any(|r| r.field == "env.LOG_LEVEL" && r.after.as_deref() == Some("debug")));
    assert_eq!(p.summary().replace, 1, "{:#?}", actions(&p));
}

#[test]
fn image_and_bootstrap_changes_replace_machines_with_a_new_generation_and_key() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let mut net = network(1);
    net.clusters[2].image = Some("ami-new".into());
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let c = p.change(&Address::machine("oregon", 0)).unwrap();
    assert_eq!(c.action, Action::Replace);
    let Some(Desired::Machine(spec)) = &c.after else { panic!() };
    assert_eq!(spec.generation, 1);
    let Some(Desired::Machine(old)) = &first.change(&Address::machine("oregon", 0)).unwrap().after else {
        panic!()
    };
    assert_ne!(spec.idempotency_key, old.idempotency_key);
    assert_eq!(old.idempotency_key, idempotency_key("net", &Address::machine("oregon", 0), 0));
    assert!(spec.idempotency_key.len() <= 64);
}

#[test]
fn a_replaced_host_takes_its_stable_ip_with_it() {
    // Deleting a machine detaches its stable IP (DigitalOcean unassigns it, EC2 disassociates it):
    // the replace must attach it to the successor, after the successor exists.
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let hosts: Vec<(Address, Address)> = first
        .changes
        .iter()
        .filter_map(|c| match &c.after {
            Some(Desired::StableIp(ip)) => Some((c.address.clone(), ip.machine.clone())),
            _ => None,
        })
        .collect();
    let genesis_host =
        |m: &Address| matches!(actual.objects.get(m), Some(Actual::Machine(x)) if x.chain_id.is_some());
    let (ip, host) = hosts.iter().find(|(_, m)| !genesis_host(m)).expect("the master's host has a stable IP");
    let Address::Machine { cluster, .. } = host else { panic!("{host}") };
    let mut net = network(1);
    net.clusters.iter_mut().find(|c| &c.name == cluster).unwrap().image = Some("new-image".into());
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    assert_eq!(p.change(host).unwrap().action, Action::Replace, "{:#?}", actions(&p));
    let c = p.change(ip).unwrap_or_else(|| panic!("{ip} is attached again: {:#?}", actions(&p)));
    assert_eq!(c.action, Action::Update);
    assert!(c.waits_for.contains(host), "{:?}", c.waits_for);
    assert_eq!(c.reasons[0].field, "attached_to");
    // Only the replaced host's IP moves.
    let moved: Vec<_> = p.changes.iter().filter(|c| matches!(c.address, Address::StableIp { .. })).collect();
    assert_eq!(moved.len(), 1, "{:#?}", actions(&p));
}

#[test]
fn a_changed_genesis_file_is_refused_without_the_override() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let mut net = network(1);
    net.chain = Chain::from_genesis(b"another chain".to_vec(), None);
    let err = plan(&net, &actual, &memory_after(&first), &opts()).unwrap_err();
    assert!(matches!(err, PlanError::ChainMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&format!("--replace-genesis {}", first.chain_id)));
    // Even with the state file lost: the running genesis server carries the pin.
    let err = plan(&net, &actual, &Remembered::default(), &opts()).unwrap_err();
    assert!(matches!(err, PlanError::ChainMismatch { .. }), "{err}");
    let wrong = ChainId::of(b"nope");
    let err =
        plan(&net, &actual, &memory_after(&first), &PlanOptions { replace_genesis: Some(wrong), ..opts() })
            .unwrap_err();
    assert!(matches!(err, PlanError::WrongOverride { .. }));
    let ok = plan(
        &net,
        &actual,
        &memory_after(&first),
        &PlanOptions { replace_genesis: Some(first.chain_id.clone()), ..opts() },
    )
    .unwrap();
    assert_eq!(ok.plan.chain_id, net.chain.id);
}

#[test]
fn destroying_the_genesis_server_needs_the_current_chain_id() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let destroy = PlanOptions { destroy: true, ..opts() };
    let err = plan(&network(1), &actual, &Remembered::default(), &destroy).unwrap_err();
    assert!(matches!(err, PlanError::GenesisProtected { what: "destroy", .. }), "{err}");
    let allowed = PlanOptions { replace_genesis: Some(first.chain_id.clone()), ..destroy };
    let p = plan(&network(1), &actual, &Remembered::default(), &allowed).unwrap().plan;
    assert_eq!(p.summary().delete, actual.objects.len());
    // Containers go before the machines they run on; firewalls after their machines.
    let m = p.change(&Address::machine("virginia", 0)).unwrap();
    let on_virginia: Vec<_> = first
        .changes
        .iter()
        .filter_map(|c| match &c.after {
            Some(Desired::Container(s)) if s.node == Address::machine("virginia", 0) => {
                Some(c.address.clone())
            }
            _ => None,
        })
        .collect();
    assert!(!on_virginia.is_empty());
    for c in on_virginia {
        assert!(m.waits_for.contains(&c), "{:?}", m.waits_for);
    }
    let fw = p.change(&Address::firewall(ProviderKind::Aws, "us-east-1")).unwrap();
    assert!(fw.waits_for.contains(&Address::machine("virginia", 0)));
}

#[test]
fn replacing_the_genesis_host_machine_is_protected() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let host = first
        .changes
        .iter()
        .find_map(|c| match &c.after {
            Some(Desired::Container(s)) if s.role == Role::Genesis => Some(s.node.clone()),
            _ => None,
        })
        .unwrap();
    let mut net = network(1);
    let Address::Machine { cluster, .. } = &host else { panic!() };
    net.clusters.iter_mut().find(|c| &c.name == cluster).unwrap().image = Some("new-image".into());
    let err = plan(&net, &actual, &memory_after(&first), &opts()).unwrap_err();
    assert!(matches!(err, PlanError::GenesisProtected { what: "replace", .. }), "{err}");
}

#[test]
fn a_dead_genesis_container_is_restored_from_the_pinned_bytes_without_override() {
    let first = plan(&network(1), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let mut actual = realize(&first);
    let addr = Address::container("genesis", 0);
    if let Some(Actual::Container(c)) = actual.objects.get_mut(&addr) {
        c.state = ContainerState::Exited;
    }
    let p = plan(&network(1), &actual, &memory_after(&first), &opts()).unwrap().plan;
    let c = p.change(&addr).unwrap();
    assert_eq!(c.action, Action::Replace);
    assert_eq!(c.reasons[0].field, "state");
    let Some(Desired::Container(s)) = &c.after else { panic!() };
    assert_eq!(s.env["CHAIN_ID"], first.chain_id.to_string());
    assert_eq!(p.chain_id, first.chain_id);
}

#[test]
fn only_machines_leaves_containers_out() {
    let p = plan(
        &network(3),
        &ActualState::default(),
        &Remembered::default(),
        &PlanOptions { only: Some(Layer::Machines), ..opts() },
    )
    .unwrap()
    .plan;
    assert!(p.changes.iter().all(|c| layer_of(&c.address) == Layer::Machines));
    assert_eq!(p.summary().create, 8);
}

#[test]
fn firewall_opens_docker_tls_only_to_admin_cidrs() {
    let net = network(1);
    let rules = crate::desired::firewall_rules(&net);
    let docker = rules.iter().find(|r| r.port == ports::DOCKER_TLS).unwrap();
    assert_eq!(docker.sources, vec!["203.0.113.0/24".to_string()]);
    assert!(rules.iter().all(|r| r.port != 22), "no SSH unless asked");
    let peer = rules.iter().find(|r| r.port == ports::PEER).unwrap();
    assert_eq!(peer.sources, vec!["0.0.0.0/0".to_string()]);
}

#[test]
fn sensitive_env_compares_sealed_and_is_never_shown() {
    let mut net = network(1);
    net.services[2].env.insert("API_TOKEN".into(), "hunter2".into());
    let memory = Remembered { seal_key: Some(test_seal_key()), ..Remembered::default() };
    let first = plan(&net, &ActualState::default(), &memory, &opts()).unwrap().plan;
    let actual = realize(&first);
    // Engines keep sensitive values sealed: the converged network must still plan no changes.
    let stored = actual.objects.values().find_map(|o| match o {
        Actual::Container(c) => c.spec.as_ref().and_then(|s| s.env.get("API_TOKEN")).cloned(),
        _ => None,
    });
    assert!(stored.is_some_and(|v| v.starts_with("hmac-sha256:")), "the heuristic still seals");
    assert!(!plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan.has_changes());
    net.services[2].env.insert("API_TOKEN".into(), "hunter3".into());
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let relay = p.change(&Address::container("relay", 0)).unwrap();
    let r = relay.reasons.iter().find(|r| r.field == "env.API_TOKEN").unwrap();
    assert_eq!((r.before.as_deref(), r.after.as_deref()), (Some("(sensitive)"), Some("(sensitive)")));
    assert!(!crate::render::text(&p, crate::render::Style { color: false }).contains("hunter"));
}

#[test]
fn a_generation_with_no_successor_is_refused_instead_of_reusing_an_idempotency_key() {
    let net = network(1);
    let first = plan(&net, &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let machine = first
        .changes
        .iter()
        .find(|c| layer_of(&c.address) == Layer::Machines && c.address.to_string().starts_with("machine."))
        .unwrap();
    let mut memory = Remembered::default();
    memory.generations.insert(machine.address.clone(), u32::MAX);
    let err = plan(&net, &ActualState::default(), &memory, &opts()).unwrap_err();
    assert!(matches!(err, PlanError::GenerationExhausted { last: u32::MAX, .. }), "{err}");
    // One below the last is still fine, and gives the last.
    memory.generations.insert(machine.address.clone(), u32::MAX - 1);
    let planned = plan(&net, &ActualState::default(), &memory, &opts()).unwrap().plan;
    match &planned.change(&machine.address).unwrap().after {
        Some(Desired::Machine(m)) => assert_eq!(m.generation, u32::MAX),
        other => panic!("{other:?}"),
    }
}

#[test]
fn changed_declared_secret_replaces_its_container_without_showing_it() {
    use crate::provider::Secret;
    let mut net = network(1);
    // A name the heuristic misses: only the declaration makes it sensitive.
    net.services[2].secrets.insert("DATABASE_URL".into(), Secret::new("postgres://u:pw1@db/x"));
    let memory = Remembered { seal_key: Some(test_seal_key()), ..Remembered::default() };
    let first = plan(&net, &ActualState::default(), &memory, &opts()).unwrap().plan;
    let relay = Address::container("relay", 0);
    let Some(Desired::Container(spec)) = &first.change(&relay).unwrap().after else { panic!("a container") };
    assert_eq!(spec.env["DATABASE_URL"], "postgres://u:pw1@db/x", "the container gets it in clear");
    assert_eq!(spec.sealed().env["DATABASE_URL"], test_seal_key().seal("postgres://u:pw1@db/x"));
    assert!(!format!("{spec:?}").contains("pw1"), "Debug shows the sealed form");
    let actual = realize(&first);
    assert!(!plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan.has_changes());

    net.services[2].secrets.insert("DATABASE_URL".into(), Secret::new("postgres://u:pw2@db/x"));
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let change = p.change(&relay).unwrap();
    assert_eq!(change.action, Action::Replace, "a changed secret is drift");
    let r = change.reasons.iter().find(|r| r.field == "env.DATABASE_URL").unwrap();
    assert_eq!((r.before.as_deref(), r.after.as_deref()), (Some("(sensitive)"), Some("(sensitive)")));
    let text = crate::render::text(&p, crate::render::Style { color: false });
    assert!(!text.contains("pw1") && !text.contains("pw2"), "{text}");
}

#[test]
fn another_networks_key_cannot_confirm_a_secret() {
    use crate::provider::Secret;
    let mut net = network(1);
    net.services[2].secrets.insert("CREDENTIALS".into(), Secret::new("s3cret"));
    let memory = Remembered { seal_key: Some(test_seal_key()), ..Remembered::default() };
    let first = plan(&net, &ActualState::default(), &memory, &opts()).unwrap().plan;
    let actual = realize(&first);
    // Same value, another key (state lost and remade): the stored seal cannot be matched.
    let other = Remembered { seal_key: Some(crate::seal::SealKey::generate()), ..memory_after(&first) };
    let p = plan(&net, &actual, &other, &opts()).unwrap().plan;
    assert_eq!(p.change(&Address::container("relay", 0)).unwrap().action, Action::Replace);
}

mod rollouts;
