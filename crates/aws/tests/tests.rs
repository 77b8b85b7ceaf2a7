//! peerfleet-aws against moto (the EC2 stand-in), through a fault proxy, and its user data against
//! cloud-init's own schema validator.
//!
//! Setup: `scripts/setup-moto.sh` (moto, or `PEERFLEET_MOTO`) and `scripts/setup-cloud-init.sh` (the
//! validator, or `PEERFLEET_CLOUD_INIT_SCHEMA`). Without them tests print SKIPPED, and fail under
//! `CI=true`. No test connects to an address moto hands out.

mod cloud_init;
mod env;
mod faults;
mod firewall;
mod machines;
mod regions;
mod stable_ip;
mod state;
mod support;
