//! The lock object of an S3 state: created with `If-None-Match: *`, renewed and taken over with
//! `If-Match` on an ETag, removed with `If-Match` on the holder's own ETag.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use peerfleet_core::state::{
    Attempt, LockInfo, LockOptions, LockSlot, StateError, StateErrorKind, StateLock, Timestamp, acquire,
};

use super::{S3State, is_not_found, is_precondition_failed, server_side};

fn lock_json(info: &LockInfo) -> Vec<u8> {
    // Strings, integers and timestamps: serializing cannot fail.
    serde_json::to_vec_pretty(info).unwrap_or_default()
}

impl S3State {
    /// Reads the lock object: the holder and the object's ETag, `Ok(None)` when there is none, and
    /// `Err(None)` when it exists but is not a lock record.
    async fn read_lock(&self) -> Result<Option<(Option<LockInfo>, String)>, StateError> {
        let location = &self.config.location;
        let request = self.client.get_object().bucket(&location.bucket).key(location.lock_key());
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.remote("read the lock object", e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        // A lock record is a few hundred bytes; anything bigger is not one (and is not read).
        if out.content_length().is_some_and(|len| len > 64 << 10) {
            return Ok(Some((None, etag)));
        }
        let body = out.body.collect().await.map_err(|e| {
            self.error(StateErrorKind::Remote { op: "read the lock object", source: Box::new(e) })
        })?;
        Ok(Some((serde_json::from_slice(&body.into_bytes()).ok(), etag)))
    }

    /// Writes the lock object as `info`: created only if absent (`expected` = `None`) or replacing
    /// exactly the version `expected`. `Ok(None)` when the condition did not hold.
    async fn put_lock(&self, info: &LockInfo, expected: Option<&str>) -> Result<Option<String>, StateError> {
        let location = &self.config.location;
        let request = self
            .client
            .put_object()
            .bucket(&location.bucket)
            .key(location.lock_key())
            .content_type("application/json")
            .body(ByteStream::from(lock_json(info)));
        let request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match server_side(request, &self.config.server_side).send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e) if is_precondition_failed(&e) || (expected.is_some() && is_not_found(&e)) => Ok(None),
            Err(e) => Err(self.remote("write the lock object", e)),
        }
    }

    /// Removes the lock object, only if it is still the version `etag` (any version when `None`).
    async fn delete_lock(&self, etag: Option<&str>) -> Result<bool, StateError> {
        let location = &self.config.location;
        let mut request = self.client.delete_object().bucket(&location.bucket).key(location.lock_key());
        if let Some(etag) = etag {
            request = request.if_match(etag);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) || is_not_found(&e) => Ok(false),
            Err(e) => Err(self.remote("remove the lock object", e)),
        }
    }
}

#[async_trait]
impl LockSlot for S3State {
    /// The ETag of our lock object.
    type Guard = String;

    fn location(&self) -> String {
        self.config.location.to_string()
    }

    fn leased(&self) -> bool {
        true
    }

    async fn try_create(&self, info: &LockInfo) -> Result<Attempt<String>, StateError> {
        if let Some(etag) = self.put_lock(info, None).await? {
            return Ok(Attempt::Acquired(etag));
        }
        match self.read_lock().await? {
            Some((Some(holder), _)) => Ok(Attempt::Held(holder)),
            Some((None, _)) => Ok(Attempt::Unreadable),
            // Released between our write and our read: the next attempt will get it.
            None => Ok(Attempt::Unreadable),
        }
    }

    async fn take_over(&self, expired: &LockInfo, ours: &LockInfo) -> Result<Option<String>, StateError> {
        // Replace exactly the version we judged abandoned: if its holder renewed meanwhile, or another
        // run took it over first, the ETag differs and S3 refuses.
        match self.read_lock().await? {
            Some((Some(holder), etag))
                if holder.id == expired.id && holder.is_expired_at(Timestamp::now()) =>
            {
                self.put_lock(ours, Some(&etag)).await
            }
            _ => Ok(None),
        }
    }
}

/// Takes the lock of `state`.
pub(super) async fn lock(
    state: &S3State,
    operation: &str,
    options: &LockOptions,
) -> Result<Box<dyn StateLock>, StateError> {
    let acquired = acquire(state, operation, options).await?;
    Ok(Box::new(S3Lock {
        state: S3State {
            client: state.client.clone(),
            config: state.config.clone(),
            seen: std::sync::Mutex::new(super::Seen::Unknown),
        },
        lease: options.lease,
        info: acquired.info,
        etag: Some(acquired.guard),
        took_over: acquired.took_over,
    }))
}

/// Removes the lock whoever holds it; returns the holder it removed.
pub(super) async fn force_unlock(state: &S3State) -> Result<Option<LockInfo>, StateError> {
    let Some((holder, etag)) = state.read_lock().await? else { return Ok(None) };
    // Conditional on the version read, so that what we report is what we removed.
    if !state.delete_lock(Some(&etag)).await? {
        return Err(state.error(StateErrorKind::Refused(
            "the lock changed while it was being removed; run force-unlock again".to_string(),
        )));
    }
    if let Some(h) = &holder {
        tracing::warn!(state = %state.config.location, "removed the state lock held by {h}");
    }
    Ok(holder)
}

/// A held lock object.
struct S3Lock {
    /// A handle of its own on the same bucket (the lock outlives the borrow it was taken through).
    state: S3State,
    lease: Duration,
    info: LockInfo,
    /// Our lock object's ETag; `None` once released.
    etag: Option<String>,
    took_over: Option<LockInfo>,
}

impl S3Lock {
    async fn lost(&self) -> StateError {
        let holder = self.state.read_lock().await.ok().flatten().and_then(|(h, _)| h);
        self.state.error(StateErrorKind::LockLost(holder.map(Box::new)))
    }
}

#[async_trait]
impl StateLock for S3Lock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&mut self) -> Result<(), StateError> {
        let Some(etag) = self.etag.clone() else { return Err(self.lost().await) };
        let mut renewed = self.info.clone();
        renewed.lease_expires_at = Some(Timestamp::now().plus(self.lease));
        match self.state.put_lock(&renewed, Some(&etag)).await? {
            Some(new) => {
                self.etag = Some(new);
                self.info = renewed;
                Ok(())
            }
            None => {
                self.etag = None;
                Err(self.lost().await)
            }
        }
    }

    async fn release(mut self: Box<Self>) -> Result<(), StateError> {
        let Some(etag) = self.etag.take() else { return Ok(()) };
        if !self.state.delete_lock(Some(&etag)).await? {
            // Taken over or removed meanwhile: not ours to remove.
            tracing::warn!("{}", self.lost().await);
        }
        Ok(())
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        // Dropped without release (an error path): remove it in the background if a runtime is
        // there; otherwise its lease runs out and the next run takes it over.
        let Some(etag) = self.etag.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let state = S3State {
            client: self.state.client.clone(),
            config: self.state.config.clone(),
            seen: std::sync::Mutex::new(super::Seen::Unknown),
        };
        runtime.spawn(async move {
            let _ = state.delete_lock(Some(&etag)).await;
        });
    }
}
