//! What the engine benchmarks share: the nine-region network on local virtual nodes, the engine with
//! the reference image, and the teardown.

// Each benchmark is its own crate and uses a part of this.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use peerfleet_core::executor::{self, ApplyEvent, ApplyOptions, ApplyOutcome, Interrupt};
use peerfleet_core::network::{Network, ProviderKind, Role, Strategy};
use peerfleet_core::plan::{Plan, PlanOptions, Remembered, plan};
use peerfleet_core::provider::Providers;
use peerfleet_core::refresh::refresh;
use peerfleet_core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use peerfleet_core::state::{State, StateBackend};
use peerfleet_docker::{DockerConnector, DockerEngine, LocalNodes, locate_node_binary, reference_image};

/// The nine-region network named `name`: nine local nodes, genesis, master and nine relays by
/// `emptiest_node`, with `relay_env` on the relays.
pub fn network(name: &str, relay_env: &[(&str, &str)]) -> Network {
    let cities = [
        "Northern China",
        "Singapore",
        "Sydney",
        "Frankfurt",
        "Amsterdam",
        "London",
        "Virginia",
        "Oregon",
        "São Paulo",
    ];
    let genesis = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/genesis.json"))
        .expect("examples/genesis.json");
    let mut b = NetworkBuilder::new(name).genesis(genesis);
    for city in cities {
        let name = city.to_lowercase().replace(' ', "-").replace('ã', "a");
        b = b.cluster(ClusterBuilder::new(name, ProviderKind::Local, city).tags(["peer_cluster"]));
    }
    let mut relays = ServiceBuilder::new("relay", Role::Relay)
        .containers(9)
        .strategy(Strategy::EmptiestNode)
        .deploy_tags(["peer_cluster"]);
    for (key, value) in relay_env {
        relays = relays.env(*key, *value);
    }
    b.service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(relays)
        .build()
        .expect("valid network")
}

/// The local engine with the reference image built, and providers for network `name` on it.
pub struct Local {
    pub engine: Arc<DockerEngine>,
    pub providers: Providers,
    /// The reference image's tag.
    pub image: String,
}

/// Connects to the local engine; `None` (said on stderr) when there is none.
pub async fn connect(bench: &str, name: &str) -> Option<Local> {
    let engine = match DockerEngine::connect_local().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIPPED {bench}: no Docker engine ({e})");
            return None;
        }
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = locate_node_binary(Some(&workspace)).expect("node binary");
    let image = Arc::new(reference_image(&binary).expect("reference image"));
    peerfleet_docker::ensure_image(engine.client(), &image).await.expect("image builds");
    let engine = Arc::new(engine.with_reference_image(image.clone()));
    let providers = Providers::new()
        .with_machines(Arc::new(LocalNodes::new(engine.clone())))
        .with_engines(Arc::new(DockerConnector::new(name.to_string()).with_local_engine(engine.clone())));
    Some(Local { engine, providers, image: image.tag.clone() })
}

/// Plan options as the CLI's after a refresh, with the reference image.
pub fn plan_options(image: &str) -> PlanOptions {
    PlanOptions { reference_image: Some(image.to_string()), refreshed: true, ..Default::default() }
}

/// Applies `plan` with the default options, failing the benchmark if any step fails.
pub async fn apply(
    plan: &Plan,
    local: &Local,
    store: &dyn StateBackend,
    net: &Network,
    reporter: &dyn executor::Reporter,
) -> ApplyOutcome {
    let options = ApplyOptions { genesis: Some(net.chain.genesis.clone()), ..ApplyOptions::default() };
    let outcome = executor::apply(plan, &local.providers, store, &options, reporter, Interrupt::new())
        .await
        .expect("apply starts");
    assert!(outcome.is_success(), "apply failed: {:?}", outcome.failed);
    outcome
}

/// Destroys everything of `net` (the chain pin overridden with its own ID).
pub async fn destroy(net: &Network, local: &Local, store: &dyn StateBackend, state: &State) {
    let now = refresh(net, &local.providers, &[], None).await.expect("refresh");
    let options = PlanOptions {
        destroy: true,
        replace_genesis: Some(net.chain.id.clone()),
        ..plan_options(&local.image)
    };
    let down = plan(net, &now, &Remembered::of(state), &options).expect("destroy plan").plan;
    apply(&down, local, store, net, &|_: &ApplyEvent| {}).await;
}
