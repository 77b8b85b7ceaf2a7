//! Shared list calls: many callers that need "the network's droplets as of time T or later" share one
//! paginated listing instead of each making their own.
//!
//! This is what keeps request counts proportional to pages rather than to droplets: the pre-create
//! look-ups of a whole batch of creates, the polls of every droplet waiting to become `active`, and
//! the inventories of all regions of one network each cost one listing, not one per droplet or
//! region.
//!
//! # Freshness
//! A caller passes `not_before`: it accepts only a listing that *started* at or after that instant.
//! The pre-create look-up passes the instant its last request arrived, so it can never miss a droplet
//! created before any of those requests began; polls accept a listing a little older than their
//! interval; inventories accept a few seconds, but never one from before the provider's last change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde_json::Value;
use tokio::time::Instant;

use crate::error::ApiError;

/// What is listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListKey {
    /// Droplets carrying a network's tag.
    Droplets(String),
    /// All firewalls of the account.
    Firewalls,
    /// All reserved IPs of the account.
    ReservedIps,
}

/// One listing's result.
pub type Listed = Result<Arc<Vec<Value>>, ApiError>;

type Flight = Shared<BoxFuture<'static, Listed>>;

#[derive(Default)]
struct Slot {
    last: Option<(Instant, Arc<Vec<Value>>)>,
    flight: Option<(Instant, Flight)>,
}

/// The shared listings of one provider.
#[derive(Default)]
pub struct Listings {
    slots: Mutex<HashMap<ListKey, Slot>>,
}

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listings").finish_non_exhaustive()
    }
}

impl Listings {
    /// A listing of `key` that started at or after `not_before`: a finished one, one in flight, or a
    /// new one made by `fetch`.
    pub async fn get(
        &self,
        key: ListKey,
        not_before: Instant,
        fetch: impl FnOnce() -> BoxFuture<'static, Listed>,
    ) -> Listed {
        let (started, flight) = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(key.clone()).or_default();
            if let Some((started, items)) = &slot.last
                && *started >= not_before
            {
                return Ok(items.clone());
            }
            match &slot.flight {
                Some((started, flight)) if *started >= not_before => (*started, flight.clone()),
                _ => {
                    let started = Instant::now();
                    let flight = fetch().shared();
                    slot.flight = Some((started, flight.clone()));
                    (started, flight)
                }
            }
        };
        let result = flight.await;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(key).or_default();
        if slot.flight.as_ref().is_some_and(|(s, _)| *s == started) {
            slot.flight = None;
        }
        if let Ok(items) = &result
            && slot.last.as_ref().is_none_or(|(s, _)| *s < started)
        {
            slot.last = Some((started, items.clone()));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn counting(calls: &Arc<AtomicUsize>) -> impl FnOnce() -> BoxFuture<'static, Listed> + use<> {
        let calls = calls.clone();
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Arc::new(vec![Value::from(1)]))
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_listing() {
        let listings = Arc::new(Listings::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let a = listings.get(ListKey::Firewalls, t0, counting(&calls));
        let b = listings.get(ListKey::Firewalls, t0, counting(&calls));
        let (a, b) = tokio::join!(a, b);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_older_than_the_caller_accepts_is_not_reused() {
        let listings = Listings::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let _ = listings.get(ListKey::Firewalls, Instant::now(), counting(&calls)).await;
        let _ =
            listings.get(ListKey::Firewalls, Instant::now() - Duration::from_secs(1), counting(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a recent enough result is reused");
        let _ = listings.get(ListKey::Firewalls, Instant::now(), counting(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one that started before the caller's bound is not");
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_never_share() {
        let listings = Listings::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let _ = listings.get(ListKey::Droplets("a".into()), t0, counting(&calls)).await;
        let _ = listings.get(ListKey::Droplets("b".into()), t0, counting(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
