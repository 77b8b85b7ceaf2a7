//! Crashes and interrupts.

use super::*;

// ---- crashes and interrupts ----

#[tokio::test(start_paused = true)]
async fn a_crash_between_provider_create_and_state_save_then_reapply_makes_no_duplicate() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let target = Address::machine("a", 0);
    world.crash_after(Op::CreateMachine, target.clone());
    let plan =
        plan_from(&State::new(), vec![create(machine("a", 0), &[]), create(machine("b", 0), &[])], vec![]);

    // kill -9: the apply future is dropped while the provider has made the machine.
    let providers = world.providers();
    let noop = |_: &ApplyEvent| {};
    let killed = tokio::time::timeout(
        Duration::from_secs(60),
        apply(&plan, &providers, &store, &options(), &noop, Interrupt::new()),
    )
    .await;
    assert!(killed.is_err(), "the crashed apply never returns");
    assert_eq!(world.machines_at(&target).len(), 1, "the provider did create it");
    let after_crash = store.current();
    assert!(!after_crash.resources.contains_key(&target), "the state never heard back");
    let intent = after_crash.intents.get(&target).expect("the intent was saved before the create");
    assert_eq!(intent.idempotency_key.as_deref(), Some("testnet-a-0-g1"));
    store.force_unlock().await.unwrap(); // a killed process leaves its lock behind

    // Re-plan from the state after the crash; the create reuses the intent's key, as the planner does.
    let remaining = vec![create(machine("a", 0), &[])];
    let replan = plan_from(&after_crash, remaining, vec![]);
    let (outcome, _) = run(&replan, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(world.machines_at(&target).len(), 1, "no duplicate");
    assert_eq!(world.machines(NET).len(), 2);
    assert!(outcome.state.intents.is_empty());
    assert_eq!(outcome.state.resources[&target].id(), world.machines_at(&target)[0].id);
}

#[tokio::test(start_paused = true)]
async fn first_interrupt_stops_scheduling_and_lets_in_flight_steps_finish() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_secs(1));
    let store = MemoryState::new();
    let changes = (0..6).map(|i| create(machine("n", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let interrupt = Interrupt::new();
    let signal = interrupt.clone();
    let events = Mutex::new(Vec::new());
    let reporter = |e: &ApplyEvent| {
        if matches!(e, ApplyEvent::Started { .. })
            && !events.lock().unwrap().iter().any(|x: &ApplyEvent| matches!(x, ApplyEvent::Started { .. }))
        {
            assert_eq!(signal.escalate(), InterruptLevel::StopScheduling); // "Ctrl-C" once
        }
        events.lock().unwrap().push(e.clone());
    };
    let options = ApplyOptions { parallelism: 2, ..options() };
    let outcome =
        in_time(apply(&plan, &world.providers(), &store, &options, &reporter, interrupt)).await.unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.succeeded, [Address::machine("n", 0), Address::machine("n", 1)]);
    assert_eq!(outcome.not_started.len(), 4);
    assert!(outcome.aborted.is_empty() && outcome.failed.is_empty());
    assert_eq!(world.machines(NET).len(), 2);
    assert_eq!(store.current().resources.len(), 2, "finished steps are saved");
    assert!(store.current().intents.is_empty());
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, ApplyEvent::Stopping { aborting: false, .. })));
}

#[tokio::test(start_paused = true)]
async fn second_interrupt_abandons_in_flight_steps_with_their_intents_saved() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_secs(10));
    let store = MemoryState::new();
    let changes = (0..4).map(|i| create(machine("n", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let interrupt = Interrupt::new();
    let signal = interrupt.clone();
    let ctrl_c = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal.escalate();
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal.escalate()
    });
    let options = ApplyOptions { parallelism: 2, ..options() };
    let outcome =
        in_time(apply(&plan, &world.providers(), &store, &options, &|_: &ApplyEvent| {}, interrupt))
            .await
            .unwrap();
    assert_eq!(ctrl_c.await.unwrap(), InterruptLevel::Abort);
    assert!(outcome.interrupted);
    assert_eq!(outcome.aborted, [Address::machine("n", 0), Address::machine("n", 1)]);
    assert_eq!(outcome.not_started, [Address::machine("n", 2), Address::machine("n", 3)]);
    let saved = store.current();
    assert!(
        saved.intents.contains_key(&Address::machine("n", 0))
            && saved.intents.contains_key(&Address::machine("n", 1))
    );
    assert!(saved.resources.is_empty());
    assert_eq!(store.holder(), None, "the lock is released after an abort");
}
