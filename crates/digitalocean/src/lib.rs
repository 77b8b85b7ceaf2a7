//! DigitalOcean machine provider for peerfleet: droplets, firewalls and reserved IPs, found by
//! ownership tags, created under DigitalOcean's rate limit.
//!
//! # The decisions that shaped it
//!
//! **DigitalOcean has no idempotency tokens and allows duplicate names**, so a create that crashed
//! after the API accepted it can only be recognised afterwards. Every create therefore looks up the
//! network's droplets right before it is sent, and adopts a droplet of the same name, region and
//! generation that already carries the network's tag instead of creating a second one; an answer
//! that is lost (timeout, `5xx`) is followed by another look-up, never by a blind retry.
//!
//! **The machine's address is its droplet's name** (`<network>-<cluster>-<slot>`), ownership data the
//! tags (`peerfleet:network:…`, `peerfleet:gen:…`, …; see [`ownership`]). Both are set at creation.
//! That is what lets several droplets be made by one `POST /v2/droplets` with `names`: DigitalOcean
//! applies one set of tags and one user data to all of them, and only the names differ. Creates
//! arriving within [`Settings::create_window`] are coalesced: one look-up for all of them, and one
//! request per group of up to ten with *identical* bodies. In practice each machine's user data holds
//! its own engine server key (issued by the network's PKI for that machine alone), so bodies differ
//! and each droplet gets its own request: sharing one key among a cluster's machines to save a few
//! requests is the wrong trade. The look-ups and the waiting are what grow with the number of
//! droplets, and those are shared.
//!
//! **Requests grow with pages, not droplets.** Refresh is one `GET /v2/droplets?tag_name=…&per_page=200`
//! per 200 droplets of the network (shared by all its regions), one firewall listing and one reserved
//! IP listing; polls for `active` share the same listing ([`listing`]).
//!
//! **Rate limits are modelled the way DigitalOcean counts them** ([`limit`]): 250 requests per
//! minute and 5,000 per hour, each request counting for one window after it was made; corrected from
//! `ratelimit-remaining` / `ratelimit-reset`; a `429` holds every request of the token until the
//! reset. Retries are bounded and only where repeating is safe ([`client`]); they are the one retry
//! layer of this provider's calls: the executor does not retry them again.
//!
//! **Firewalls apply by tag** (`peerfleet:fw:<network>:<region>`), with the same inbound rules as the
//! AWS security group and all outbound traffic allowed (a DigitalOcean firewall without outbound
//! rules would drop it). **Reserved IPs** of the genesis and master hosts carry no tags on
//! DigitalOcean; they are owned through the droplet they are assigned to. Deleting that droplet
//! unassigns them, so one left assigned to nothing by a crash mid-replace is looked up by the address
//! state remembers ([`DigitalOceanProvider`]'s `find_stable_ip`), then attached again or released.
//!
//! # Configuration
//! `DIGITALOCEAN_TOKEN` (or `DIGITALOCEAN_ACCESS_TOKEN`), never printed; `DIGITALOCEAN_API_URL`
//! overrides the API (tests point it at the test server). See [`DigitalOceanProvider::from_env`].

pub mod client;
pub mod error;
pub mod limit;
pub mod listing;
pub mod model;
pub mod ownership;
mod provider;
pub mod settings;

pub use client::Stats;
pub use error::ApiError;
pub use limit::{RateLimiter, RateLimits};
/// peerfleet's one retry policy, re-exported: [`Settings::retry`] configures this provider's retries.
pub use peerfleet_core::retry::RetryPolicy;
pub use provider::{DigitalOceanProvider, MAX_NAMES_PER_CREATE};
pub use settings::{PollPolicy, Settings};
