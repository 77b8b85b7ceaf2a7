//! Health gates between steps.

use super::*;

// ---- health gates ----

#[tokio::test(start_paused = true)]
async fn the_master_starts_only_once_genesis_is_healthy() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_secs(5));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    let genesis_created = rec.time_of(
        |e| matches!(e, ApplyEvent::Started { address, .. } if *address == Address::container("genesis", 0)),
    );
    let master_started = rec.time_of(
        |e| matches!(e, ApplyEvent::Started { address, .. } if *address == Address::container("master", 0)),
    );
    assert!(master_started - genesis_created >= Duration::from_secs(5));
    // Polling backs off: far fewer inspections than a 100 ms sleep loop would make.
    assert!(world.calls_for(Op::InspectContainer, &Address::container("genesis", 0)) <= 8);
}

#[tokio::test(start_paused = true)]
async fn a_health_gate_times_out_saying_what_it_waited_for() {
    let world = TestWorld::new();
    world.never_healthy(Address::container("genesis", 0));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(started.elapsed() >= Duration::from_secs(30));
    let (address, error) = &outcome.failed[0];
    assert_eq!(address, &Address::container("genesis", 0));
    assert!(error.message.contains("not healthy after 30s waiting for genesis-1 healthy"), "{error}");
    assert!(error.message.contains("health unhealthy"), "{error}");
    assert_eq!(outcome.skipped.len(), 3, "master and relays");
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, ApplyEvent::Waiting { what, .. } if what.contains("unhealthy")))
    );
}
