//! Test support (feature `testing`): the EC2 stand-in and a fault layer in front of it.
//!
//! - [`Moto`] starts `moto_server` on a free loopback port (found at `PEERFLEET_MOTO`, else the
//!   repository's `.venv/bin/moto_server`, installed by `scripts/setup-moto.sh`) and stops it on drop.
//! - [`FaultProxy`] sits between the SDK and moto: it records every request (action, region,
//!   `ClientToken`, tags) and injects EC2 errors such as throttling.
//! - [`settings`] points an [`AwsProvider`](crate::AwsProvider) at either, with static dummy
//!   credentials set in the SDK config only (never in the process environment, which other tests
//!   share), short retries and short waits.
//!
//! Nothing here connects anywhere but loopback; the public addresses moto hands out are never dialled.

mod moto;
mod proxy;

use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};

pub use moto::{DEBIAN_AMI, DEBIAN_AMI_CN, Moto, MotoError};
pub use proxy::{Fault, FaultProxy, Recorded};

use crate::{AwsSettings, RetryPolicy, Waits};

/// Settings for a provider talking to a stand-in at `endpoint`: dummy static credentials, three
/// attempts per request with millisecond backoff, and waits bounded in seconds.
pub fn settings(endpoint: &str) -> AwsSettings {
    let credentials = Credentials::new("testing", "testing", None, None, "peerfleet-testing");
    AwsSettings {
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(SharedCredentialsProvider::new(credentials)),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(20),
        },
        waits: Waits {
            visibility: Duration::from_secs(2),
            running: Duration::from_secs(10),
            terminated: Duration::from_secs(10),
            dependency: Duration::from_secs(2),
            first_poll: Duration::from_millis(20),
            max_poll: Duration::from_millis(200),
        },
        ..AwsSettings::default()
    }
}
