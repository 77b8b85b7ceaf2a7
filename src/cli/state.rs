//! Where a command finds its state (`--state`, the spec's `[state]`, or the file beside the spec), and
//! the commands that work on the state itself: `force-unlock` and `state migrate`.

use std::time::Duration;

use anyhow::{Result, bail};
use peerfleet::Deployment;
use peerfleet::core::network::Network;
use peerfleet::core::state::LockOptions;
use peerfleet::store::{self, Migrated, StateLocation};

use super::args::StateArgs;
use super::load;

/// The deployment of the spec `target` names, with its state where `--state`, the spec's `[state]`
/// or the default says.
pub(super) async fn deployment(target: &StateArgs) -> Result<Deployment> {
    let network = load(&target.spec.file)?;
    deployment_of(network, target).await
}

/// The deployment of `network` (already loaded, e.g. after `scale` edited it).
pub(super) async fn deployment_of(network: Network, target: &StateArgs) -> Result<Deployment> {
    let location = StateLocation::resolve(target.state.as_deref(), &target.spec.file, &network)?;
    let store = store::open(&location, &network.name).await?;
    Ok(Deployment::with_store(network, store))
}

pub(super) async fn force_unlock(a: StateArgs) -> Result<u8> {
    let d = deployment(&a).await?;
    let location = d.store().location();
    match d.store().force_unlock().await? {
        Some(holder) => println!("Removed the lock of {location} held by {holder}."),
        None => println!("{location} is not locked."),
    }
    Ok(0)
}

pub(super) async fn migrate(from: StateArgs, to: &str, lock_timeout: u64) -> Result<u8> {
    let network = load(&from.spec.file)?;
    let source = StateLocation::resolve(from.state.as_deref(), &from.spec.file, &network)?;
    let target = StateLocation::from_arg(to, &network.state)?;
    if source == target {
        bail!("the state already lives at {target}");
    }
    let from_store = store::open(&source, &network.name).await?;
    let to_store = store::open(&target, &network.name).await?;
    // A second handle on the target reads the copy back as a later run would.
    let check = store::open(&target, &network.name).await?;
    let lock = LockOptions { timeout: Duration::from_secs(lock_timeout), ..LockOptions::default() };
    match store::migrate(&network.name, from_store.as_ref(), to_store.as_ref(), check.as_ref(), &lock).await?
    {
        Migrated::Copied { lineage, serial } => println!(
            "Copied the state of `{}` from {source} to {target} (lineage {}, serial {serial}) and read it \
             back identical. {source} is left as it was: point the spec's [state] table (or --state) at \
             {target}, then remove the old copy.",
            network.name,
            lineage.as_deref().unwrap_or("-")
        ),
        Migrated::AlreadyThere { serial } => {
            println!("{target} already holds this state (serial {serial}); nothing copied.")
        }
    }
    Ok(0)
}
