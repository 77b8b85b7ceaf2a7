//! Embedding peerfleet in your own Rust tool: build a network with the Rust builder (no TOML), plan,
//! apply with your own progress reporter, look at the result, and tear it down again.
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! It runs on the local Docker engine (three virtual nodes, a genesis server, a master, three relays);
//! without an engine it prints the plan only. Everything here is library API: no CLI types.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use peerfleet::core::executor::{ApplyEvent, Interrupt, Reporter};
use peerfleet::core::network::{ProviderKind, Role, Strategy};
use peerfleet::core::render::{self, Style};
use peerfleet::core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use peerfleet::{Applied, ApplyRequest, ConnectError, DeployError, Deployment, PlanRequest};

/// A reporter of our own: counts finished steps and prints one compact line each.
#[derive(Default)]
struct Counter {
    finished: AtomicUsize,
}

impl Reporter for Counter {
    fn event(&self, event: &ApplyEvent) {
        if let ApplyEvent::Finished { address, action, elapsed } = event {
            let n = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
            println!("  step {n:>2}: {} {address} in {} ms", action.symbol(), elapsed.as_millis());
        } else if let ApplyEvent::Failed { address, error, .. } = event {
            println!("  FAILED {address}: {error}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // The chain: a genesis block of our own. Its sha256 is the chain ID.
    let genesis = include_bytes!("../../examples/genesis.json").to_vec();
    let mut builder = NetworkBuilder::new("embedded-demo").genesis(genesis);
    for city in ["Frankfurt", "Singapore", "Oregon"] {
        let name = city.to_lowercase();
        builder = builder
            .cluster(ClusterBuilder::new(name, ProviderKind::Local, city).nodes(1).tags(["peer_cluster"]));
    }
    let network = builder
        .service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay)
                .containers(3)
                .strategy(Strategy::RegionSpread)
                .deploy_tags(["peer_cluster"])
                .env("LOG_LEVEL", "info"),
        )
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let chain = network.chain.id.clone();

    let state = std::env::temp_dir().join("peerfleet-embed-demo").join("state.json");
    let deployment = Deployment::new(network, &state).with_workspace(env!("CARGO_MANIFEST_DIR"));

    let prepared = match deployment.plan(&PlanRequest::default()).await {
        Ok(p) => p,
        Err(DeployError::Connect(ConnectError::NoDocker(e))) => {
            println!("No Docker engine ({e}); the plan would be:");
            let p = deployment.plan(&PlanRequest { no_refresh: true, ..PlanRequest::default() }).await?;
            print!("{}", render::text(&p.planned.plan, Style { color: false }));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let s = prepared.planned.plan.summary();
    println!(
        "planned: {} to create, {} to change, {} to replace, {} to delete",
        s.create, s.update, s.replace, s.delete
    );
    for (container, node) in &prepared.planned.placement {
        println!("  placement: {container} → {node}");
    }

    let counter = Counter::default();
    let applied =
        deployment.apply(&ApplyRequest::default(), &mut |_| true, &counter, Interrupt::new()).await?;
    if let Applied::Ran(_, outcome) = &applied {
        anyhow::ensure!(outcome.is_success(), "apply failed: {:?}", outcome.failed);
    }
    println!("applied: {} steps; chain {}", counter.finished.load(Ordering::Relaxed), chain.short());

    // Tear down: destroying the genesis server must name the chain it holds.
    let destroy = ApplyRequest {
        plan: PlanRequest { destroy: true, replace_genesis: Some(chain), ..PlanRequest::default() },
        ..ApplyRequest::default()
    };
    let counter = Counter::default();
    deployment.apply(&destroy, &mut |_| true, &counter, Interrupt::new()).await?;
    println!("destroyed: {} steps", counter.finished.load(Ordering::Relaxed));
    Ok(())
}
