//! peerfleet's AWS EC2 machine provider.
//!
//! The decision that shaped this crate: **EC2 is the source of truth, found by ownership tags**.
//! Every instance, root volume, security group and Elastic IP is tagged in the very request that
//! creates it (`TagSpecifications`), and refresh reads a region back with one paginated
//! `DescribeInstances` filtered on `peerfleet:network` (plus one call each for groups and addresses).
//! Nothing is tagged afterwards, so a crash at any point leaves either no object or a fully tagged one,
//! which the next refresh finds. Creates that EC2 can deduplicate carry a deterministic `ClientToken`
//! (the spec's idempotency key); the one that cannot (`AllocateAddress`) looks up by tags first.
//!
//! The rest follows from AWS's shape:
//! - one SDK client per (region, credentials profile), built on first use and cached, because
//!   `cn-north-1` sits in the separate `aws-cn` partition with its own account ([`Partition`]);
//! - the default image is looked up by publisher and name ([`ImageLookup`]), never a hard-coded map;
//! - errors are classified from the SDK's error codes into the core's kinds, naming the partition and
//!   profile when credentials fail (see [`AwsProvider`] and `error.rs`);
//! - retries of single requests are the SDK's standard strategy, configured by peerfleet's one
//!   [`RetryPolicy`], and the only retry layer of an EC2 request (the executor does not retry this
//!   provider's calls again; see [`peerfleet_core::retry`]); the provider's own waits (visibility
//!   right after a launch, termination, running-before-associate) are bounded polls ([`Waits`]).
//!
//! The machines' user data is [`peerfleet_core::bootstrap::cloud_init`]: Docker with its API behind
//! mutual TLS using the network's CA.
//!
//! # Configuration
//! [`AwsProvider::from_env`] is what the CLI uses: credentials from the default chain (environment,
//! `~/.aws` profiles, SSO, instance metadata), the endpoint from `AWS_ENDPOINT_URL` when set (that is
//! how tests point it at moto), or an explicit override. [`AwsSettings::with_network_profiles`] maps
//! each cluster's `profile` onto its region, so refresh and create use the same account.

mod client;
mod error;
mod firewall;
mod image;
mod machines;
mod provider;
mod settings;
mod stable_ip;
pub mod state;
pub mod tags;

pub use client::AwsProvider;
pub use firewall::group_name;
pub use machines::CLIENT_TOKEN_MAX;
/// peerfleet's one retry policy, re-exported: [`AwsSettings::retry`] configures the SDK's retries.
pub use peerfleet_core::retry::RetryPolicy;
pub use settings::{AwsSettings, ImageLookup, Partition, Timeouts, Waits};
pub use stable_ip::{parse_stable_ip_id, stable_ip_id};
#[cfg(feature = "testing")]
pub mod testing;
