//! Batching of droplet creates: creates arriving within [`Settings::create_window`] share one
//! look-up of the network's droplets and, when their bodies are equal, one `POST /v2/droplets`.
//!
//! [`Settings::create_window`]: crate::Settings::create_window

use std::sync::Arc;

use peerfleet_core::provider::ErrorKind;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Inner, lock, parse_all};
use crate::client::Retry;
use crate::error::ApiError;
use crate::model::Droplet;

/// Most droplets one create request may name (DigitalOcean's documented limit).
pub const MAX_NAMES_PER_CREATE: usize = 10;
/// One droplet a create asks for.
pub(super) struct CreateRequest {
    pub(super) name: String,
    pub(super) region: String,
    pub(super) generation_tag: String,
    /// The request body without `name`: requests with equal bodies may share one multi-create.
    pub(super) body: Value,
}

/// A create waiting in its batch.
pub(super) struct Pending {
    request: CreateRequest,
    arrived: Instant,
    reply: oneshot::Sender<Result<Droplet, ApiError>>,
}

/// One droplet to make, and everyone waiting for it.
struct Wanted {
    name: String,
    region: String,
    generation_tag: String,
    body: Value,
    replies: Vec<oneshot::Sender<Result<Droplet, ApiError>>>,
}

impl Wanted {
    fn answer(self, result: Result<Droplet, ApiError>) {
        for r in self.replies {
            let _ = r.send(result.clone());
        }
    }

    /// Whether `d` is this droplet made earlier: same name, region and generation, still there.
    fn is(&self, d: &Droplet) -> bool {
        d.name == self.name
            && d.region.slug == self.region
            && d.tags.contains(&self.generation_tag)
            && d.status != "archive"
    }
}

impl Inner {
    /// Queues a create into its network's batch and waits for the droplet (made or adopted).
    pub(super) async fn create_droplet(
        self: &Arc<Self>,
        network: &str,
        request: CreateRequest,
    ) -> Result<Droplet, ApiError> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut batches = lock(&self.batches);
            let batch = batches.entry(network.to_string()).or_default();
            batch.push(Pending { request, arrived: Instant::now(), reply: tx });
            batch.len() == 1
        };
        if first {
            // The batch runs on its own task, so a caller that gives up cannot strand the others.
            let inner = self.clone();
            let network = network.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(inner.settings.create_window).await;
                inner.flush(&network).await;
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::local(
                ErrorKind::Transient,
                "POST /v2/droplets",
                "the create batch ended without an answer",
            ))
        })
    }

    /// Runs one batch: one look-up for all of it, adoption of what exists, then as few create
    /// requests as the API allows; an ambiguous failure (the droplet may exist) is followed by a new
    /// look-up before anything is created again.
    async fn flush(self: &Arc<Self>, network: &str) {
        let batch = lock(&self.batches).remove(network).unwrap_or_default();
        let Some(mut not_before) = batch.iter().map(|p| p.arrived).max() else { return };
        let mut wanted: Vec<Wanted> = Vec::new();
        for p in batch {
            match wanted.iter_mut().find(|w| w.name == p.request.name) {
                // The same name twice in one batch is one droplet, never two.
                Some(w) => w.replies.push(p.reply),
                None => wanted.push(Wanted {
                    name: p.request.name,
                    region: p.request.region,
                    generation_tag: p.request.generation_tag,
                    body: p.request.body,
                    replies: vec![p.reply],
                }),
            }
        }
        let mut attempts = self.settings.retry.attempts();
        let mut last_error = None;
        loop {
            let existing = match self.droplets(network, not_before).await {
                Ok(d) => d,
                Err(e) => {
                    for w in wanted {
                        w.answer(Err(e.clone()));
                    }
                    return;
                }
            };
            let mut missing = Vec::new();
            for w in wanted {
                match existing.iter().filter(|d| w.is(d)).min_by_key(|d| d.id) {
                    Some(d) => {
                        tracing::info!(name = %w.name, id = d.id, "adopting an existing droplet instead of creating one");
                        let d = d.clone();
                        w.answer(Ok(d));
                    }
                    None => missing.push(w),
                }
            }
            if missing.is_empty() {
                return;
            }
            let requests = group_for_create(missing);
            let results =
                futures::future::join_all(requests.iter().map(|group| self.post_create(group))).await;
            self.touch();
            wanted = Vec::new();
            for (group, result) in requests.into_iter().zip(results) {
                match result {
                    Ok(mut made) => {
                        for w in group {
                            match made.iter().position(|d| d.name == w.name) {
                                Some(i) => w.answer(Ok(made.swap_remove(i))),
                                None => w.answer(Err(ApiError::local(
                                    ErrorKind::Transient,
                                    "POST /v2/droplets",
                                    "the answer did not include the droplet",
                                ))),
                            }
                        }
                    }
                    // The request may have been processed: look again before creating again.
                    Err(e) if e.kind == ErrorKind::Transient => {
                        tracing::debug!("create answer lost ({e}); looking up before trying again");
                        last_error = Some(e);
                        wanted.extend(group);
                    }
                    Err(e) => {
                        for w in group {
                            w.answer(Err(e.clone()));
                        }
                    }
                }
            }
            if wanted.is_empty() {
                return;
            }
            if !attempts.wait(None).await {
                break;
            }
            not_before = Instant::now();
        }
        let e = last_error.unwrap_or_else(|| {
            ApiError::local(ErrorKind::Transient, "POST /v2/droplets", "creates kept failing")
        });
        for w in wanted {
            w.answer(Err(e.clone()));
        }
    }

    async fn post_create(&self, group: &[Wanted]) -> Result<Vec<Droplet>, ApiError> {
        let mut body = group[0].body.clone();
        if group.len() == 1 {
            body["name"] = Value::String(group[0].name.clone());
        } else {
            body["names"] = Value::Array(group.iter().map(|w| Value::String(w.name.clone())).collect());
        }
        // This loop is the create's retry layer: the client sends it once.
        let answer = self.call(Method::POST, "/v2/droplets", Some(&body), Retry::Caller).await?;
        let made = match (answer.body.get("droplet"), answer.body.get("droplets")) {
            (Some(d), _) => vec![d.clone()],
            (None, Some(Value::Array(ds))) => ds.clone(),
            _ => Vec::new(),
        };
        Ok(parse_all("droplet", &made))
    }
}

/// Splits what must be created into requests: equal bodies (same region, size, image, tags, user
/// data) in the same request, at most [`MAX_NAMES_PER_CREATE`] names each.
fn group_for_create(missing: Vec<Wanted>) -> Vec<Vec<Wanted>> {
    let mut groups: Vec<Vec<Wanted>> = Vec::new();
    for w in missing {
        match groups.iter_mut().find(|g| g.len() < MAX_NAMES_PER_CREATE && g[0].body == w.body) {
            Some(g) => g.push(w),
            None => groups.push(vec![w]),
        }
    }
    groups
}
