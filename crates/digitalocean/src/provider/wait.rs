//! Waiting for DigitalOcean to settle: polls that end by themselves, and creates that look up
//! before they try again.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use peerfleet_core::provider::{ErrorKind, ProviderError};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::{Inner, transient};
use crate::client::Retry;
use crate::error::PROVIDER;
use crate::model::Droplet;

impl Inner {
    /// Calls `check` until it yields a value, sleeping between calls as the settings' polls say
    /// ([`crate::PollPolicy::polls`]); bounded by `timeout`. `check` is given the instant the
    /// previous check began: anything observed since then is news to it.
    pub(super) async fn poll_until<'a, T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(Instant) -> BoxFuture<'a, Result<Option<T>, ProviderError>> + Send,
    ) -> Result<T, ProviderError> {
        let mut polls = self.settings.poll.polls(timeout);
        let mut since = Instant::now();
        loop {
            if !polls.wait().await {
                return Err(transient(format!("{what} within {} s", timeout.as_secs())));
            }
            let now = Instant::now();
            if let Some(done) = check(since).await? {
                return Ok(done);
            }
            since = now;
        }
    }

    /// Polls the network's listing until droplet `id` is `active`. Every waiter accepts any listing
    /// that started after its previous look, so all droplets waiting at once share one listing per
    /// round, however slow listings are.
    pub(super) async fn wait_active(
        self: &Arc<Self>,
        network: &str,
        id: u64,
    ) -> Result<Droplet, ProviderError> {
        let what = format!("droplet {id} did not become active");
        self.poll_until(&what, self.settings.poll.active_timeout, |since| {
            async move {
                let listed = self.droplets(network, since).await?;
                match listed.into_iter().find(|d| d.id == id) {
                    Some(d) if d.status == "active" => Ok(Some(d)),
                    Some(d) if d.status == "archive" => Err(ProviderError::new(
                        ErrorKind::NotFound,
                        PROVIDER,
                        format!("droplet {id} was destroyed while booting"),
                    )),
                    // Still `new`, or not listed yet.
                    _ => Ok(None),
                }
            }
            .boxed()
        })
        .await
    }

    /// Polls droplet `id` itself until it is `active` (when its network's listing is not at hand).
    pub(super) async fn wait_droplet_active(&self, id: u64) -> Result<(), ProviderError> {
        let what = format!("droplet {id} did not become active");
        self.poll_until(&what, self.settings.poll.active_timeout, |_| {
            async move { Ok((self.get_droplet(id).await?.status == "active").then_some(())) }.boxed()
        })
        .await
    }

    /// Polls an action until it completes.
    pub(super) async fn wait_action(&self, action: u64) -> Result<(), ProviderError> {
        let what = format!("action {action} did not complete");
        self.poll_until(&what, self.settings.poll.action_timeout, |_| {
            async move {
                let answer =
                    self.call(Method::GET, &format!("/v2/actions/{action}"), None, Retry::Safe).await?;
                match answer.body.pointer("/action/status").and_then(Value::as_str) {
                    Some("completed") => Ok(Some(())),
                    Some("errored") => Err(transient(format!("action {action} errored"))),
                    _ => Ok(None),
                }
            }
            .boxed()
        })
        .await
    }

    /// Returns what `find` finds in a listing that started at or after the instant it is given;
    /// else runs `create`. A create whose answer was lost (`Transient`) may have happened, so it is
    /// followed by another `find`, never by a blind repeat. This loop is the create's one retry
    /// layer (the client sends `create`'s request once: [`Retry::Caller`]), bounded by the policy.
    pub(super) async fn find_or_create<'a, T>(
        &self,
        what: &str,
        mut find: impl FnMut(Instant) -> BoxFuture<'a, Result<Option<T>, ProviderError>> + Send,
        mut create: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send,
    ) -> Result<T, ProviderError> {
        let mut not_before = Instant::now();
        let mut attempts = self.settings.retry.attempts();
        loop {
            if let Some(found) = find(not_before).await? {
                return Ok(found);
            }
            let result = create().await;
            self.touch();
            match result {
                Err(e) if e.kind == ErrorKind::Transient => {
                    tracing::debug!("{what} create answer lost ({e}); looking up before trying again");
                    if !attempts.wait(None).await {
                        return Err(e);
                    }
                    not_before = Instant::now();
                }
                other => return other,
            }
        }
    }
}
