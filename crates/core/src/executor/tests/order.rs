//! Ordering, state and outputs; failures, skips and parallelism.

use super::*;

// ---- ordering, state, outputs ----

#[tokio::test(start_paused = true)]
async fn a_network_comes_up_in_dependency_order_and_is_recorded() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_secs(2));
    let store = MemoryState::recording();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;

    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.succeeded.len(), 8);
    for change in &plan.changes {
        for dep in &change.waits_for {
            assert!(
                rec.finished(dep) < rec.started(&change.address),
                "{} started before {dep} finished",
                change.address
            );
        }
    }
    // Each container waited for health, not just for its create call.
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, ApplyEvent::Waiting { what, .. } if what == "genesis-1 healthy (container running, health starting)"))
    );

    let state = store.current();
    assert_eq!(state, outcome.state);
    assert_eq!(state.resources.len(), 8);
    assert!(state.intents.is_empty());
    assert_eq!(state.generations.get(&Address::machine("virginia", 0)), Some(&1));
    assert_eq!(state.chain.as_ref().map(|p| p.id.clone()), Some(ChainId::of(GENESIS)));
    assert_eq!(state.chain.as_ref().and_then(ChainPin::genesis).as_deref(), Some(GENESIS));
    assert_eq!(state.outputs.get("chain_id"), Some(&ChainId::of(GENESIS).to_string()));

    // The master's host is the stable IP of the machine it runs on; relays were told so.
    let ip = world.stable_ips(NET)[0].ip.clone();
    assert_eq!(state.outputs.get("master_host"), Some(&ip));
    assert_eq!(state.outputs.get("genesis_host"), Some(&ip));
    let hosts = world.hosts_given(&Address::container("relay", 1)).unwrap();
    assert_eq!(hosts, BTreeMap::from([("genesis".to_string(), ip.clone()), ("master".to_string(), ip)]));
    // Machines joined the firewall created before them.
    let fw = world.firewalls(NET)[0].id.clone();
    assert_eq!(world.firewall_given(&Address::machine("virginia", 1)), Some(Some(fw)));
    // One save per intent batch and per completion batch, never a half-written step.
    assert!(store.writes() >= 8, "{}", store.writes());
    let serials: Vec<u64> = store.history().iter().map(|s| s.serial).collect();
    assert_eq!(serials.len(), store.writes());
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "{serials:?}");
}

#[tokio::test(start_paused = true)]
async fn every_create_is_on_record_before_the_provider_is_called() {
    let world = TestWorld::new();
    let store = MemoryState::recording();
    let changes = vec![create(machine("a", 0), &[]), create(machine("b", 0), &[Address::machine("a", 0)])];
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    let history = store.history();
    for address in [Address::machine("a", 0), Address::machine("b", 0)] {
        let recorded = history.iter().position(|s| s.intents.contains_key(&address)).unwrap();
        let created = history.iter().position(|s| s.resources.contains_key(&address)).unwrap();
        assert!(recorded < created);
        let intent = &history[recorded].intents[&address];
        let key = format!("{NET}-{}-0-g1", if address == Address::machine("a", 0) { "a" } else { "b" });
        assert_eq!(intent.idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(intent.generation, Some(1));
        assert!(!history[created].intents.contains_key(&address));
    }
}

#[tokio::test(start_paused = true)]
async fn replace_deletes_the_old_machine_then_creates_the_new_generation() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let first = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, _) = run(&first, &world, &store, &options()).await;
    let old = outcome.state.resources[&Address::machine("a", 0)].clone();

    let new = Desired::Machine(machine_spec("a", 0, 2, None));
    let second = plan_from(
        &outcome.state,
        vec![change(Action::Replace, Some(old.clone()), Some(new), &[])],
        vec![old.clone()],
    );
    let (outcome, _) = run(&second, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let machines = world.machines_at(&Address::machine("a", 0));
    assert_eq!(machines.len(), 1);
    assert_ne!(machines[0].id, old.id());
    assert_eq!(machines[0].generation, 2);
    assert_eq!(outcome.state.generations[&Address::machine("a", 0)], 2);
    assert_eq!(outcome.state.resources[&Address::machine("a", 0)], Actual::Machine(machines[0].clone()));
}

#[tokio::test(start_paused = true)]
async fn a_replace_that_fails_after_deleting_forgets_the_old_object() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let first = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, _) = run(&first, &world, &store, &options()).await;
    let old = outcome.state.resources[&Address::machine("a", 0)].clone();

    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let new = Desired::Machine(machine_spec("a", 0, 2, None));
    let second = plan_from(
        &outcome.state,
        vec![change(Action::Replace, Some(old.clone()), Some(new), &[])],
        vec![old],
    );
    let (outcome, _) = run(&second, &world, &store, &options()).await;
    assert_eq!(outcome.failed.len(), 1);
    assert!(world.machines(NET).is_empty());
    assert!(!store.current().resources.contains_key(&Address::machine("a", 0)));
    assert!(
        store.current().intents.contains_key(&Address::machine("a", 0)),
        "the failed create stays on record"
    );
}

#[tokio::test(start_paused = true)]
async fn deletes_remove_objects_from_world_and_state() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    let state = outcome.state;

    // Destroy: dependents first (the planner points deletes the reverse way).
    let prior: Vec<Actual> = state.resources.values().cloned().collect();
    let mut changes = Vec::new();
    for change in plan.changes.iter().rev() {
        let actual = state.resources[&change.address].clone();
        let dependents: Vec<Address> = plan
            .changes
            .iter()
            .filter(|c| c.waits_for.contains(&change.address))
            .map(|c| c.address.clone())
            .collect();
        changes.push(change_for_delete(actual, &dependents));
    }
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let destroy = plan_from(&state, changes, prior);
    let (outcome, _) = run(&destroy, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(
        world.machines(NET).is_empty() && world.firewalls(NET).is_empty() && world.stable_ips(NET).is_empty()
    );
    assert!(outcome.state.resources.is_empty());
    assert!(!outcome.state.outputs.contains_key("master_host"));
    assert_eq!(world.calls(Op::RemoveContainer), 4);
}

fn change_for_delete(actual: Actual, waits_for: &[Address]) -> Change {
    change(Action::Delete, Some(actual), None, waits_for)
}

// ---- failures, skips, parallelism ----

#[tokio::test(start_paused = true)]
async fn failed_create_skips_dependent_relays_while_an_independent_branch_completes() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let master = Address::container("master", 0);
    world.fail(Op::CreateContainer, Some(master.clone()), 1, ErrorKind::Invalid);
    let mut changes = network_changes();
    changes.push(create(machine("oregon", 0), &[]));
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;

    assert_eq!(outcome.failed.len(), 1, "root causes only: {:?}", outcome.failed);
    assert_eq!(outcome.failed[0].0, master);
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Invalid);
    assert_eq!(
        outcome.skipped,
        [(Address::container("relay", 0), master.clone()), (Address::container("relay", 1), master.clone())]
    );
    assert!(outcome.succeeded.contains(&Address::machine("oregon", 0)));
    assert!(outcome.succeeded.contains(&Address::container("genesis", 0)));
    assert_eq!(world.calls_for(Op::CreateContainer, &Address::container("relay", 0)), 0);
    assert!(
        rec.events().iter().any(|e| matches!(e, ApplyEvent::Skipped { because, .. } if *because == master))
    );
    assert!(!outcome.is_success());
    assert_eq!(
        store.current().resources.len(),
        outcome.succeeded.len(),
        "everything that succeeded is recorded"
    );
    assert_eq!(outcome.succeeded.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn parallelism_bound_is_never_exceeded() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_millis(100));
    let store = MemoryState::new();
    let changes = (0..30).map(|i| create(machine("wide", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let options = ApplyOptions { parallelism: 4, ..options() };
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert!(outcome.is_success());
    assert_eq!(world.max_in_flight(), 4);
    assert_eq!(world.machines(NET).len(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_failed_outside_waits_for_fails_the_step_clearly() {
    // The plan forgot that the container waits for its machine: the step fails, it does not guess.
    let world = TestWorld::new();
    let store = MemoryState::new();
    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let changes = vec![
        create(machine("a", 0), &[]),
        create(container("genesis", 0, Role::Genesis, Address::machine("b", 0)), &[]),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert_eq!(outcome.failed.len(), 2);
    let (_, error) = outcome.failed.iter().find(|(a, _)| a.kind() == "container").unwrap();
    assert!(error.message.contains("machine.b[0] does not exist"), "{error}");
    assert_eq!(world.calls(Op::CreateContainer), 0);
}
