//! State backend trouble: failed saves, lost and renewed locks.

use super::*;

// ---- state backend trouble ----

#[tokio::test(start_paused = true)]
async fn a_failed_intent_save_starts_nothing_and_is_reported() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    store.fail_writes(1);
    let plan = plan_from(
        &State::new(),
        vec![create(machine("a", 0), &[]), create(machine("b", 0), &[Address::machine("a", 0)])],
        vec![],
    );
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert!(world.call_counts().is_empty(), "no create without its intent on record");
    assert!(outcome.state_error.is_some());
    assert_eq!(outcome.failed.len(), 1);
    assert!(outcome.failed[0].1.message.contains("not started"), "{}", outcome.failed[0].1);
    assert_eq!(outcome.skipped, [(Address::machine("b", 0), Address::machine("a", 0))]);
    assert!(!outcome.is_success());
}

#[tokio::test(start_paused = true)]
async fn the_lock_lease_is_renewed_while_applying() {
    let (world, store, options, mut lock) = slow_world_with_short_lease().await;
    let first = lock.info().lease_expires_at;
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    // Wall-clock lease times move in real milliseconds; make sure at least one passes.
    std::thread::sleep(Duration::from_millis(5));
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    assert!(outcome.is_success());
    assert!(lock.info().lease_expires_at > first, "renewed during the 30 s step");
    assert_eq!(store.holder().as_ref(), Some(lock.info()));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lock_stops_all_state_writes() {
    let (world, store, options, mut lock) = slow_world_with_short_lease().await;
    let a0 = Address::machine("a", 0);
    let changes = vec![
        create(machine("a", 0), &[]),
        create(machine("a", 1), std::slice::from_ref(&a0)),
        create(machine("a", 2), std::slice::from_ref(&a0)),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let thief = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        thief.force_unlock().await.unwrap();
        thief.set_holder(Some(LockInfo::for_this_process("apply", Duration::from_secs(600))));
    });
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    let err = outcome.state_error.as_ref().expect("the lost lock is reported");
    assert!(matches!(err.kind(), StateErrorKind::LockLost(_)), "{err}");
    assert_eq!(outcome.not_started.len(), 2, "nothing new starts without the lock");
    assert!(store.current().resources.is_empty(), "nothing is written without the lock");
    assert_eq!(outcome.succeeded, [Address::machine("a", 0)], "the step in flight still completes");
}

#[tokio::test]
async fn a_lock_lost_before_applying_is_refused_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut lock = store.lock("apply", &crate::state::LockOptions::default()).await.unwrap();
    // While our user sat at the confirmation prompt, the lease ran out and someone took over.
    store.set_holder(Some(LockInfo::for_this_process("apply", Duration::from_secs(600))));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let noop = |_: &ApplyEvent| {};
    let err =
        apply_locked(&plan, &world.providers(), &store, lock.as_mut(), &options(), &noop, Interrupt::new())
            .await
            .expect_err("a lost lock must be refused");
    let ExecutorError::State(e) = &err else { panic!("{err}") };
    assert!(matches!(e.kind(), StateErrorKind::LockLost(Some(_))), "{err}");
    assert!(world.call_counts().is_empty());
    assert_eq!(store.writes(), 0);
}

#[test]
fn the_apply_future_can_run_on_any_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let (world, store) = (TestWorld::new(), MemoryState::new());
    let providers = world.providers();
    let plan = plan_from(&State::new(), vec![], vec![]);
    let options = options();
    let reporter = |_: &ApplyEvent| {};
    let fut = apply(&plan, &providers, &store, &options, &reporter, Interrupt::new());
    assert_send(&fut);
}
