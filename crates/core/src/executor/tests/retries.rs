//! Retries: one layer per call path, attempts, throttling, deadlines.

use super::*;

// ---- retries ----

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_until_success() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 2, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    assert_eq!(world.calls(Op::CreateMachine), 3);
    let attempts: Vec<u32> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            ApplyEvent::Retrying { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn invalid_errors_are_not_retried() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert_eq!(world.calls(Op::CreateMachine), 1);
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Invalid);
    assert!(!rec.events().iter().any(|e| matches!(e, ApplyEvent::Retrying { .. })));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_attempts() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 10, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let options =
        ApplyOptions { retry: RetryPolicy { max_attempts: 3, ..RetryPolicy::default() }, ..options() };
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert_eq!(world.calls(Op::CreateMachine), 3);
    assert!(outcome.failed[0].1.message.contains("gave up after 3 attempts"), "{}", outcome.failed[0].1);
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_wait_for_retry_after_and_are_counted() {
    let world = TestWorld::new();
    world.throttle(Op::CreateMachine, None, 2, Some(Duration::from_secs(7)));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    assert!(started.elapsed() >= Duration::from_secs(14), "{:?}", started.elapsed());
    assert_eq!(outcome.throttled, BTreeMap::from([("test".to_string(), 2)]));
    let delays: Vec<Duration> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            ApplyEvent::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(delays.iter().all(|d| *d >= Duration::from_secs(7)), "{delays:?}");
}

/// A machine provider that retries its own requests (as the AWS and DigitalOcean providers do): the
/// test world's, saying so.
struct RetriesItself(TestWorld);

#[async_trait::async_trait]
impl crate::provider::MachineProvider for RetriesItself {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }
    fn retries_requests(&self) -> bool {
        true
    }
    async fn inventory(&self, n: &str, r: &str) -> Result<crate::provider::Inventory, ProviderError> {
        self.0.inventory(n, r).await
    }
    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &crate::provider::CreateContext,
    ) -> Result<crate::resource::Machine, ProviderError> {
        self.0.create_machine(spec, ctx).await
    }
    async fn update_machine(
        &self,
        current: &crate::resource::Machine,
        spec: &MachineSpec,
    ) -> Result<crate::resource::Machine, ProviderError> {
        self.0.update_machine(current, spec).await
    }
    async fn delete_machine(&self, current: &crate::resource::Machine) -> Result<(), ProviderError> {
        self.0.delete_machine(current).await
    }
    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<crate::resource::Firewall, ProviderError> {
        self.0.create_firewall(spec).await
    }
    async fn update_firewall(
        &self,
        current: &crate::resource::Firewall,
        spec: &FirewallSpec,
    ) -> Result<crate::resource::Firewall, ProviderError> {
        self.0.update_firewall(current, spec).await
    }
    async fn delete_firewall(&self, current: &crate::resource::Firewall) -> Result<(), ProviderError> {
        self.0.delete_firewall(current).await
    }
    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &crate::resource::Machine,
    ) -> Result<crate::resource::StableIp, ProviderError> {
        self.0.create_stable_ip(spec, machine).await
    }
    async fn attach_stable_ip(
        &self,
        current: &crate::resource::StableIp,
        machine: &crate::resource::Machine,
    ) -> Result<crate::resource::StableIp, ProviderError> {
        self.0.attach_stable_ip(current, machine).await
    }
    async fn delete_stable_ip(&self, current: &crate::resource::StableIp) -> Result<(), ProviderError> {
        self.0.delete_stable_ip(current).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanently_failing_provider_gives_up_after_the_documented_attempts_and_waits() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1000, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    let policy = RetryPolicy::default();
    assert_eq!(
        world.calls(Op::CreateMachine),
        u64::from(policy.max_attempts),
        "exactly the policy's attempts"
    );
    assert!(started.elapsed() <= policy.worst_case_waits(), "{:?}", started.elapsed());
    assert!(outcome.failed[0].1.message.contains("gave up after 5 attempts"), "{}", outcome.failed[0].1);
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_retries_itself_is_called_once_per_step_not_retried_again() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1000, ErrorKind::Transient);
    let store = MemoryState::new();
    let providers = crate::provider::Providers::new()
        .with_engines(std::sync::Arc::new(world.clone()))
        .with_machines(std::sync::Arc::new(RetriesItself(world.clone())));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let outcome =
        in_time(apply(&plan, &providers, &store, &options(), &|_: &ApplyEvent| {}, Interrupt::new()))
            .await
            .unwrap();
    assert_eq!(world.calls(Op::CreateMachine), 1, "one retry layer: the provider's");
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Transient);
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_deadline_fails_saying_attempts_and_time() {
    let world = TestWorld::new();
    // A provider that hangs (or keeps asking to wait) for an hour.
    world.set_latency(Op::CreateMachine, Duration::from_secs(3600));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let options = ApplyOptions { step_deadline: Duration::from_secs(90), ..options() };
    let started = tokio::time::Instant::now();
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert!(started.elapsed() < Duration::from_secs(91), "{:?}", started.elapsed());
    let error = &outcome.failed[0].1;
    assert!(error.message.contains("gave up after 1 attempt(s) in 90.0s"), "{error}");
    assert!(error.message.contains("step deadline (90.0s)"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_step_keeps_the_lease_renewed_until_its_deadline() {
    let (world, store, _, mut lock) = slow_world_with_short_lease().await;
    world.set_latency(Op::CreateMachine, Duration::ZERO);
    world.throttle(Op::CreateMachine, None, 1000, Some(Duration::from_secs(100)));
    let options = ApplyOptions {
        retry: RetryPolicy { max_attempts: 1000, ..RetryPolicy::default() },
        // Attempts at 0, 100, ..., 500 s (plus jitter); the seventh would come after the deadline.
        step_deadline: Duration::from_secs(550),
        lock: crate::state::LockOptions { lease: Duration::from_secs(3), ..Default::default() },
        ..options()
    };
    let first = lock.info().lease_expires_at;
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    std::thread::sleep(Duration::from_millis(5));
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    let error = &outcome.failed[0].1;
    assert!(error.message.contains("gave up after 6 attempt(s)"), "{error}");
    assert!(lock.info().lease_expires_at > first, "renewed while the step waited");
    assert_eq!(store.holder().as_ref(), Some(lock.info()));
}
