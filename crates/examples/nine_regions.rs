//! The main job: the nine-region peer network — a genesis server, a master and nine relays, one per
//! city (Northern China, Singapore, Sydney, Frankfurt, Amsterdam, London, Virginia, Oregon, São Paulo).
//!
//! ```text
//! cargo run --example nine_regions
//! ```
//!
//! It deploys the network on virtual nodes of the local Docker engine (`examples/nine_regions_local.toml`),
//! and builds without the cloud providers for that. Built with `--features cloud`, and with AWS
//! credentials *and* a DigitalOcean token in the environment, it deploys `examples/nine_regions.toml`
//! to AWS EC2 and DigitalOcean instead. It plans, applies
//! with progress, prints the topology, and says how to tear it down. Run it again: no changes.
//! Without a Docker engine it says so and prints the plan.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;
use peerfleet::core::executor::{ApplyEvent, Interrupt, Reporter};
use peerfleet::core::render::{self, Style};
use peerfleet::core::resource::Actual;
use peerfleet::core::spec;
use peerfleet::core::state::default_state_path;
use peerfleet::{Applied, ApplyRequest, ConnectError, DeployError, Deployment, PlanRequest};

/// Prints each step as it finishes, with the time since the apply started.
struct Steps {
    start: Instant,
    done: Mutex<usize>,
    total: AtomicUsize,
}

impl Reporter for Steps {
    fn event(&self, event: &ApplyEvent) {
        let t = self.start.elapsed().as_secs_f64();
        match event {
            ApplyEvent::Finished { .. } | ApplyEvent::Failed { .. } | ApplyEvent::Skipped { .. } => {
                let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
                *done += 1;
                println!("[{t:6.1}s {:>2}/{}] {event}", *done, self.total.load(Ordering::Relaxed));
            }
            ApplyEvent::Waiting { .. } | ApplyEvent::Retrying { .. } | ApplyEvent::Stopping { .. } => {
                println!("[{t:6.1}s      ] {event}")
            }
            _ => {}
        }
    }
}

fn cloud_credentials() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let aws = set("AWS_ACCESS_KEY_ID") || set("AWS_PROFILE");
    let digitalocean = set("DIGITALOCEAN_TOKEN") || set("DIGITALOCEAN_ACCESS_TOKEN");
    aws && digitalocean
}

/// Whether to deploy to the clouds: credentials for both, and a build that has their providers.
fn to_the_clouds() -> bool {
    if !cloud_credentials() {
        return false;
    }
    if !cfg!(feature = "cloud") {
        println!(
            "AWS and DigitalOcean credentials are set, but this example was built without the cloud \
             providers; deploying locally. For the clouds: cargo run --example nine_regions --features cloud\n"
        );
        return false;
    }
    true
}

#[tokio::main]
async fn main() -> Result<()> {
    // The specs live in the repository's `examples/`, beside the other example networks.
    let root = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))?;
    let file = if to_the_clouds() { "nine_regions.toml" } else { "nine_regions_local.toml" };
    let spec_path = root.join("examples").join(file);
    let network = spec::load(&spec_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = default_state_path(&spec_path, &network.name);
    println!("peerfleet: network `{}` from examples/{file}, chain {}", network.name, network.chain.id);
    println!("state: {}\n", state.display());
    let deployment = Deployment::new(network, &state).with_workspace(&root);
    let style = Style::detect(std::io::stdout().is_terminal());

    match deployment.plan(&PlanRequest::default()).await {
        Ok(_) => {}
        Err(DeployError::Connect(ConnectError::NoDocker(e))) => {
            println!("No Docker engine is reachable here ({e}).");
            println!(
                "Start Docker (or set DOCKER_HOST) to deploy the network locally. This is what it would do:\n"
            );
            let prepared =
                deployment.plan(&PlanRequest { no_refresh: true, ..PlanRequest::default() }).await?;
            print!("{}", render::text(&prepared.planned.plan, style));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }

    let steps = Steps { start: Instant::now(), done: Mutex::new(0), total: AtomicUsize::new(0) };
    let mut confirm = |prepared: &peerfleet::Prepared| {
        print!("{}", render::text(&prepared.planned.plan, style));
        println!();
        steps.total.store(prepared.planned.plan.changes.len(), Ordering::Relaxed);
        true
    };
    let interrupt = Interrupt::new();
    let on_ctrl_c = interrupt.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.escalate();
        }
    });
    let applied = deployment.apply(&ApplyRequest::default(), &mut confirm, &steps, interrupt).await?;
    let chain = match &applied {
        Applied::NothingToDo(p) => {
            println!("No changes: the network already matches its spec.");
            p.planned.plan.chain_id.clone()
        }
        Applied::Declined(_) => unreachable!("this example always confirms"),
        Applied::Ran(p, outcome) => {
            if !outcome.is_success() {
                for (address, error) in &outcome.failed {
                    eprintln!("failed: {address}: {error}");
                }
                anyhow::bail!("the apply did not complete; run the example again to continue");
            }
            println!(
                "\nApplied {} changes in {:.1}s.",
                p.planned.plan.changes.len(),
                steps.start.elapsed().as_secs_f64()
            );
            p.planned.plan.chain_id.clone()
        }
    };

    // The topology, as it is now.
    let now = deployment.plan(&PlanRequest::default()).await?;
    println!("\nTopology (chain {chain}):");
    let city_of = |node: &peerfleet::core::Address| {
        now.actual.machine(node).map(|m| m.region.clone()).unwrap_or_else(|| "?".into())
    };
    for o in now.actual.objects.values() {
        if let Actual::Container(c) = o
            && let Some(s) = &c.spec
        {
            let chain_ok = s.env.get("CHAIN_ID").map(String::as_str) == Some(chain.as_str());
            println!(
                "  {:<10} {:<8} → {:<15} on {:<26} {:?}/{:?}  chain {}",
                s.name,
                s.role.as_str(),
                city_of(&s.node),
                s.node.to_string(),
                c.state,
                c.health,
                if chain_ok { chain.short() } else { "MISMATCH" }
            );
        }
    }
    // The CLI built with the same features as this example: Cargo reuses everything but its own link.
    let cli = if cfg!(feature = "cloud") {
        "cargo run -p peerfleet --"
    } else {
        "cargo run -p peerfleet --no-default-features --"
    };
    let spec_arg = format!("examples/{file}");
    println!("\nRun this example again: it reports no changes.");
    println!("Inspect:   {cli} show -f {spec_arg}");
    println!("Scale:     {cli} scale -f {spec_arg} relay 3");
    println!("Tear down: {cli} destroy -f {spec_arg} --replace-genesis {chain}");
    Ok(())
}
