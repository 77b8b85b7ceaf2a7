//! Refusals before anything runs.

use super::*;

// ---- refusals before anything runs ----

#[tokio::test]
async fn a_stale_plan_is_refused() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut state = State::new();
    store.save(&mut state).await.unwrap();
    let plan = plan_from(&state, vec![create(machine("a", 0), &[])], vec![]);
    store.save(&mut state).await.unwrap(); // someone applied meanwhile
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(matches!(err, ExecutorError::StalePlan { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("serial 1 of lineage") && text.contains("now serial 2") && text.contains("plan again"),
        "{text}"
    );
    assert!(world.call_counts().is_empty());
    assert_eq!(store.holder(), None, "the lock is released");
}

#[tokio::test]
async fn a_plan_from_before_the_first_apply_is_stale_after_it() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    run(&plan, &world, &store, &options()).await;
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(err.to_string().contains("made from no state"), "{err}");
    assert_eq!(world.machines(NET).len(), 1);
}

#[tokio::test]
async fn a_cycle_is_refused_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let changes = vec![
        create(machine("a", 0), &[Address::machine("b", 0)]),
        create(machine("b", 0), &[Address::machine("a", 0)]),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(err.to_string().contains("machine.a[0] → machine.b[0] → machine.a[0]"), "{err}");
    assert!(world.call_counts().is_empty());
    assert_eq!(store.writes(), 0);
}

#[tokio::test]
async fn a_held_lock_fails_the_apply_at_once_naming_the_holder() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut holder = LockInfo::for_this_process("apply", Duration::from_secs(600));
    holder.owner = "alice".into();
    holder.host = "ci-7".into();
    store.set_holder(Some(holder));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    let ExecutorError::State(e) = &err else { panic!("{err}") };
    assert!(matches!(e.kind(), StateErrorKind::Locked(_)));
    assert!(err.to_string().contains("alice") && err.to_string().contains("ci-7"), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn the_pinned_chain_cannot_be_silently_switched() {
    let world = TestWorld::new();
    let mut state = State::new();
    state.chain = Some(ChainPin::new(b"another genesis"));
    let store = MemoryState::new();
    store.save(&mut state).await.unwrap();
    let plan = plan_from(&state, vec![create(machine("a", 0), &[])], vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(matches!(err, ExecutorError::ChainMismatch { .. }), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn creating_genesis_needs_its_bytes_to_pin_the_chain() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let without = ApplyOptions::default();
    let err = refused(&plan, &world.providers(), &store, &without).await;
    assert!(
        matches!(err, ExecutorError::InvalidPlan(_)) && err.to_string().contains("genesis bytes"),
        "{err}"
    );
    let wrong = ApplyOptions { genesis: Some(b"not it".to_vec()), ..ApplyOptions::default() };
    let err = refused(&plan, &world.providers(), &store, &wrong).await;
    assert!(err.to_string().contains("hash to chain"), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn a_missing_provider_is_named_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let only_machines = crate::provider::Providers::new()
        .with_machines_as(ProviderKind::Aws, std::sync::Arc::new(world.clone()));
    let err = refused(&plan, &only_machines, &store, &options()).await;
    assert!(err.to_string().contains("container engine connector"), "{err}");
    assert!(world.call_counts().is_empty());
}
