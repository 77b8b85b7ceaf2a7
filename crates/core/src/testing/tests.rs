use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::network::Region;
use crate::provider::{CreateContext, EngineConnector, MachineProvider};
use crate::resource::ContainerState;

fn spec(network: &str, cluster: &str, region: &str, key: &str) -> MachineSpec {
    MachineSpec {
        address: Address::machine(cluster, 0),
        network: network.into(),
        provider: ProviderKind::Aws,
        region: Region { slug: region.into(), city: None },
        size: "small".into(),
        image: None,
        tags: BTreeSet::new(),
        profile: None,
        bootstrap: 1,
        chain_id: None,
        generation: 0,
        idempotency_key: key.into(),
        firewall: None,
    }
}

#[tokio::test]
async fn a_repeated_create_with_the_same_key_returns_the_same_machine() {
    let world = TestWorld::new();
    let ctx = CreateContext::default();
    let a = world.create_machine(&spec("n", "c", "r", "k1"), &ctx).await.unwrap();
    let b = world.create_machine(&spec("n", "c", "r", "k1"), &ctx).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.id, "i-000001");
    assert_eq!(world.machines_at(&a.address).len(), 1);
    let c = world.create_machine(&spec("n", "c", "r", "k2"), &ctx).await.unwrap();
    assert_ne!(c.id, a.id, "a different key is a different create, as on EC2");
    assert_eq!(world.calls(Op::CreateMachine), 3);
    assert_eq!(world.calls_for(Op::CreateMachine, &a.address), 3);
}

#[tokio::test]
async fn inventory_returns_only_one_network_in_one_region() {
    let world = TestWorld::new();
    let ctx = CreateContext::default();
    world.create_machine(&spec("n", "a", "r1", "1"), &ctx).await.unwrap();
    world.create_machine(&spec("n", "b", "r2", "2"), &ctx).await.unwrap();
    world.create_machine(&spec("other", "a", "r1", "3"), &ctx).await.unwrap();
    let inv = world.inventory("n", "r1").await.unwrap();
    assert_eq!(inv.machines.len(), 1);
    assert_eq!(inv.machines[0].address, Address::machine("a", 0));
    assert_eq!(world.calls(Op::Inventory), 1);
}

#[tokio::test]
async fn armed_faults_strike_the_matching_calls_then_disarm() {
    let world = TestWorld::new();
    let ctx = CreateContext::default();
    world.fail(Op::CreateMachine, Some(Address::machine("b", 0)), 2, ErrorKind::Invalid);
    world.create_machine(&spec("n", "a", "r", "1"), &ctx).await.unwrap();
    for _ in 0..2 {
        let e = world.create_machine(&spec("n", "b", "r", "2"), &ctx).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
    }
    world.create_machine(&spec("n", "b", "r", "2"), &ctx).await.unwrap();
    assert!(world.machines("n").len() == 2);
}

#[tokio::test]
async fn a_lost_response_still_creates_and_a_retry_finds_it() {
    let world = TestWorld::new();
    let ctx = CreateContext::default();
    world.lose_response(Op::CreateMachine, None, 1, ErrorKind::Transient);
    assert!(world.create_machine(&spec("n", "a", "r", "k"), &ctx).await.is_err());
    assert_eq!(world.machines("n").len(), 1);
    world.create_machine(&spec("n", "a", "r", "k"), &ctx).await.unwrap();
    assert_eq!(world.machines("n").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_point_acts_and_never_returns() {
    let world = TestWorld::new();
    world.crash_after(Op::CreateMachine, Address::machine("a", 0));
    let (s, ctx) = (spec("n", "a", "r", "k"), CreateContext::default());
    let call = world.create_machine(&s, &ctx);
    assert!(tokio::time::timeout(Duration::from_secs(3600), call).await.is_err());
    assert_eq!(world.machines("n").len(), 1);
    assert_eq!(world.max_in_flight(), 1);
    assert_eq!(world.lock().in_flight, 0, "a dropped call is no longer in flight");
}

#[tokio::test(start_paused = true)]
async fn containers_turn_healthy_after_the_configured_delay() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_secs(5));
    let m = world.create_machine(&spec("n", "a", "r", "k"), &CreateContext::default()).await.unwrap();
    let engine = world.engine_for(&m).await.unwrap();
    let c = Container {
        id: "c-x".into(),
        address: Address::container("relay", 0),
        spec: None,
        state: ContainerState::Running,
        health: Health::Starting,
        chain_id: None,
    };
    world.insert_container("n", &m.id, c.clone());
    assert_eq!(engine.inspect_container(&c).await.unwrap().unwrap().health, Health::Starting);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(engine.inspect_container(&c).await.unwrap().unwrap().health, Health::Healthy);
    assert_eq!(engine.list_containers("n").await.unwrap().len(), 1);
    assert!(engine.list_containers("other").await.unwrap().is_empty());
    world.delete_machine(&m).await.unwrap();
    assert!(world.containers("n").is_empty(), "containers die with their machine");
    world.delete_machine(&m).await.unwrap();
}
