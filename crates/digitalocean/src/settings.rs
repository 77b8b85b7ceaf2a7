//! How the provider is configured: from the environment (`DIGITALOCEAN_TOKEN`,
//! `DIGITALOCEAN_ACCESS_TOKEN`, `DIGITALOCEAN_API_URL`), with tunables for tests and benchmarks.

use std::time::Duration;

use peerfleet_core::bootstrap::BootstrapOptions;
use peerfleet_core::provider::{ErrorKind, ProviderError, Secret};
use peerfleet_core::retry::{Backoff, RetryPolicy};

use crate::error::PROVIDER;
use crate::limit::RateLimits;

/// The token, first found of these.
pub const TOKEN_VARS: [&str; 2] = ["DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"];
/// Overrides the API's base URL (how tests reach the test server).
pub const API_URL_VAR: &str = "DIGITALOCEAN_API_URL";
/// DigitalOcean's API.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
/// The image used when a cluster names none.
pub const DEFAULT_IMAGE: &str = "debian-12-x64";

/// How long waits and polls take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Shortest interval between polls.
    pub min_interval: Duration,
    /// Longest interval between polls.
    pub max_interval: Duration,
    /// How long a droplet may take to become `active`.
    pub active_timeout: Duration,
    /// How long an action (power, resize, assign) may take.
    pub action_timeout: Duration,
}

impl PollPolicy {
    /// Polls from `min_interval`, doubling up to `max_interval`, giving up `timeout` from now: core's
    /// one backoff mechanism, configured here.
    pub fn polls(&self, timeout: Duration) -> Backoff {
        Backoff::bounded(self.min_interval, self.max_interval, timeout)
    }
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            // A droplet boots in ~20 s: polls at 1, 3, 7, 11, 15, 19, 23 s see it by 23 s. A cap of 15 s
            // (2, 6, 14, 29, 44 s) saw it only at 29-44 s, and made a 100-droplet apply take 44 s
            // instead of ~25 s. All waiters share one listing per poll, so a shorter cap costs one
            // request per 4 s of waiting, whatever the number of droplets.
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            active_timeout: Duration::from_secs(600),
            action_timeout: Duration::from_secs(600),
        }
    }
}

/// Everything tunable.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the API.
    pub api_url: String,
    /// The token's rate limit.
    pub limits: RateLimits,
    /// Retries of each request (`429`s included), and of the look-up-before-create loops: this
    /// provider's one retry layer. `max_wait` bounds how long a rate limit's reset is waited for.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
    /// Poll bounds.
    pub poll: PollPolicy,
    /// How long a create waits for concurrent creates to join its look-up and request.
    pub create_window: Duration,
    /// How old a droplet listing an inventory may reuse (never one from before this provider's last
    /// change), so the regions of one refresh share one listing.
    pub refresh_reuse: Duration,
    /// Image slug when the spec names none.
    pub default_image: String,
    /// Machine bootstrap options.
    pub bootstrap: BootstrapOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            api_url: DEFAULT_API_URL.to_string(),
            limits: RateLimits::DIGITALOCEAN,
            retry: RetryPolicy { cap: Duration::from_secs(20), ..RetryPolicy::default() },
            request_timeout: Duration::from_secs(30),
            poll: PollPolicy::default(),
            create_window: Duration::from_millis(100),
            refresh_reuse: Duration::from_secs(5),
            default_image: DEFAULT_IMAGE.to_string(),
            bootstrap: BootstrapOptions::default(),
        }
    }
}

impl Settings {
    /// Defaults, with the base URL from `DIGITALOCEAN_API_URL` when set.
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        if let Some(url) = std::env::var(API_URL_VAR).ok().filter(|u| !u.trim().is_empty()) {
            s.api_url = url.trim().to_string();
        }
        s
    }
}

/// The token from `DIGITALOCEAN_TOKEN`, else `DIGITALOCEAN_ACCESS_TOKEN`.
///
/// # Errors
/// `Unauthorized` when neither is set (the message names the variables, never a value).
pub fn token_from_env() -> Result<Secret, ProviderError> {
    TOKEN_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
        .map(Secret::new)
        .ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                PROVIDER,
                format!("no API token: set {} (or {})", TOKEN_VARS[0], TOKEN_VARS[1]),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_droplet_booting_in_twenty_seconds_is_seen_within_a_fifth_of_that() {
        let mut polls = PollPolicy::default().polls(Duration::from_secs(600));
        let mut at = Duration::ZERO;
        while at < Duration::from_secs(20) {
            at += polls.next_delay();
        }
        assert!(at <= Duration::from_secs(24), "first poll after a 20 s boot at {at:?}");
    }

    #[test]
    fn polls_double_from_the_shortest_interval_up_to_the_longest() {
        let p = PollPolicy {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            ..Default::default()
        };
        let mut polls = p.polls(Duration::from_secs(600));
        let waits: Vec<u64> = (0..6).map(|_| polls.next_delay().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }
}
