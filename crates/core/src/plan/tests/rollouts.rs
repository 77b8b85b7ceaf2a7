//! Rollouts: replaces of running members planned as ordered batches.

use super::*;
use crate::update::{FailureAction, MaxUnavailable, UpdateOrder, UpdatePolicy};

/// A converged network of `relays` relays, and the same network with the relays' env changed.
fn env_change(relays: u32, policy: UpdatePolicy) -> (ActualState, Remembered, Network) {
    let first =
        plan(&network(relays), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let mut net = network(relays);
    net.services[2].env.insert("LOG_LEVEL".into(), "debug".into());
    net.services[2].update = policy;
    (realize(&first), memory_after(&first), net)
}

fn relay(slot: u32) -> Address {
    Address::container("relay", slot)
}

#[test]
fn relay_env_change_rolls_out_one_relay_at_a_time_by_default() {
    let (actual, memory, net) = env_change(9, UpdatePolicy::default());
    let p = plan(&net, &actual, &memory, &opts()).unwrap().plan;
    assert_eq!(p.summary().replace, 9);
    let [r] = p.rollouts.as_slice() else { panic!("one rollout expected: {:#?}", p.rollouts) };
    assert_eq!(r.headline(), "replace relay in 9 batches of 1 (stop-first, on failure pause)");
    assert_eq!(r.batches, (0..9).map(|i| vec![relay(i)]).collect::<Vec<_>>());
    // Batch N+1 waits for batch N (whose gate is part of its step); the first waits for nothing new.
    assert!(p.change(&relay(0)).unwrap().waits_for.iter().all(|a| a.kind() != "container"));
    for i in 1..9 {
        let c = p.change(&relay(i)).unwrap();
        assert!(c.waits_for.contains(&relay(i - 1)), "{}: {:?}", c.address, c.waits_for);
        let step = c.rollout.as_ref().unwrap();
        assert_eq!((step.batch, step.batches, step.order), (i + 1, 9, UpdateOrder::StopFirst));
    }
    // The plan's text and JSON show the batches.
    let text = crate::render::text(&p, crate::render::Style::default());
    assert!(text.contains("Rollout: replace relay in 9 batches of 1"), "{text}");
    assert!(text.contains("batch 9: container.relay[8]"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&crate::render::json(&p)).unwrap();
    assert_eq!(json["rollouts"][0]["batches"].as_array().unwrap().len(), 9);
    assert_eq!(json["rollouts"][0]["batches"][3][0], "container.relay[3]");
    assert_eq!(json["changes"].as_array().unwrap().iter().filter(|c| c["rollout"]["batch"] == 2).count(), 1);
    assert!(crate::render::dot(&p).contains("label=\"relay batch 2 of 9\""));
}

#[test]
fn half_the_relays_at_once_with_fifty_percent() {
    let policy = UpdatePolicy { max_unavailable: MaxUnavailable::Percent(50), ..Default::default() };
    let (actual, memory, net) = env_change(9, policy);
    let p = plan(&net, &actual, &memory, &opts()).unwrap().plan;
    let sizes: Vec<usize> = p.rollouts[0].batches.iter().map(Vec::len).collect();
    // 50% of 9 rounds down: at most 4 relays down at once.
    assert_eq!(sizes, vec![4, 4, 1]);
    let last = p.change(&relay(8)).unwrap();
    assert!((4..8).all(|i| last.waits_for.contains(&relay(i))), "{:?}", last.waits_for);
    assert!(!last.waits_for.contains(&relay(0)));
}

#[test]
fn start_first_where_ports_allow_and_stop_first_where_they_clash() {
    let policy = UpdatePolicy { order: UpdateOrder::StartFirst, ..Default::default() };
    let (actual, memory, net) = env_change(3, policy);
    let p = plan(&net, &actual, &memory, &opts()).unwrap().plan;
    assert!(p.rollouts[0].notes.is_empty(), "{:?}", p.rollouts[0].notes);
    assert!(p.changes.iter().filter_map(|c| c.rollout.as_ref()).all(|s| s.order == UpdateOrder::StartFirst));

    // Publishing the peer port on a cloud machine: old and new cannot both hold it.
    let first = plan(&network(3), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let mut before = network(3);
    before.services[2].ports = vec![26656];
    let p0 = plan(&before, &realize(&first), &memory_after(&first), &opts()).unwrap().plan;
    let actual = realize_from(&realize(&first), &p0);
    let mut net = before.clone();
    net.services[2].env.insert("LOG_LEVEL".into(), "debug".into());
    net.services[2].update = policy;
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let r = &p.rollouts[0];
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].starts_with("start-first falls back to stop-first for container.relay[0]"), "{r:?}");
    assert!(r.notes[0].contains("both would publish port(s) 26656"), "{r:?}");
    assert!(p.changes.iter().filter_map(|c| c.rollout.as_ref()).all(|s| s.order == UpdateOrder::StopFirst));
    assert!(
        crate::render::text(&p, crate::render::Style::default()).contains("note: start-first falls back")
    );
}

#[test]
fn rollback_falls_back_to_pause_when_the_previous_spec_holds_sealed_secrets() {
    let first = plan(&network(2), &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let mut sealed = realize(&first);
    for o in sealed.objects.values_mut() {
        if let Actual::Container(c) = o
            && let Some(s) = c.spec.as_mut()
            && s.role == Role::Relay
        {
            s.env.insert("API_TOKEN".into(), crate::seal::SealKey::generate().seal("t"));
        }
    }
    let rollback = UpdatePolicy { failure_action: FailureAction::Rollback, ..Default::default() };
    let mut net = network(2);
    net.services[2].env.insert("API_TOKEN".into(), "t2".into());
    net.services[2].update = rollback;
    let p = plan(&net, &sealed, &memory_after(&first), &opts()).unwrap().plan;
    let r = &p.rollouts[0];
    assert_eq!(r.failure_action, FailureAction::Pause);
    assert!(r.notes[0].contains("sensitive values only as hashes"), "{:?}", r.notes);

    // Without secrets, rollback stays.
    let (actual, memory, mut net) = env_change(2, rollback);
    net.services[2].update.gate_timeout_ms = Some(5_000);
    let p = plan(&net, &actual, &memory, &opts()).unwrap().plan;
    assert_eq!(p.rollouts[0].failure_action, FailureAction::Rollback);
    let c = p.change(&relay(1)).unwrap();
    assert_eq!(c.rollout.as_ref().unwrap().on_failure, FailureAction::Rollback);
    assert_eq!(c.gate.as_ref().unwrap().timeout_ms, 5_000);
}

#[test]
fn dead_containers_and_creates_are_not_part_of_a_rollout() {
    let (mut actual, memory, net) = env_change(3, UpdatePolicy::default());
    if let Some(Actual::Container(c)) = actual.objects.get_mut(&relay(1)) {
        c.state = ContainerState::Exited;
    }
    let mut net = net;
    net.services[2].containers = 4;
    let p = plan(&net, &actual, &memory, &opts()).unwrap().plan;
    assert_eq!(p.rollouts[0].batches, vec![vec![relay(0)], vec![relay(2)]]);
    assert!(p.change(&relay(1)).unwrap().rollout.is_none());
    assert_eq!(p.change(&relay(3)).unwrap().action, Action::Create);
    assert!(p.change(&relay(3)).unwrap().rollout.is_none());
}

#[test]
fn machine_replaces_roll_per_cluster_and_take_their_containers_along() {
    let mut base = network(4);
    base.clusters[2].nodes = 3; // oregon: genesis lives on frankfurt, protected by the pin
    let first = plan(&base, &ActualState::default(), &Remembered::default(), &opts()).unwrap().plan;
    let actual = realize(&first);
    let mut net = base.clone();
    net.clusters[2].image = Some("ami-new".into());
    let p = plan(&net, &actual, &memory_after(&first), &opts()).unwrap().plan;
    let r = p.rollouts.iter().find(|r| r.kind == RolloutKind::Cluster).expect("a cluster rollout");
    assert_eq!(r.batches.len(), 3, "{r:?}");
    // Containers on a replaced machine go with it, not in the service's own rollout.
    assert!(p.rollouts.iter().all(|r| r.kind == RolloutKind::Cluster), "{:#?}", p.rollouts);
    let second = &r.batches[1][0];
    let waits = &p.change(second).unwrap().waits_for;
    assert!(waits.contains(&r.batches[0][0]), "{waits:?}");
    let on_first: Vec<&Address> = p
        .changes
        .iter()
        .filter(|c| matches!(&c.after, Some(Desired::Container(s)) if s.node == r.batches[0][0]))
        .map(|c| &c.address)
        .collect();
    assert!(!on_first.is_empty());
    assert!(on_first.iter().all(|a| waits.contains(a)), "{waits:?} should hold {on_first:?}");
    crate::executor::queue::Queue::new(&p.changes).expect("no cycle");
}
