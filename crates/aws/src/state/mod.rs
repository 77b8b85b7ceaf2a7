//! State on S3, for teams: one object holds the state, a second one is the lock.
//!
//! S3 has no lock service, and peerfleet wants none beside it (no lock table to create and pay
//! for): since S3 offers conditional writes, the object store itself can arbitrate.
//!
//! - **The state object** (`s3://bucket/key`) holds the state JSON, or its client-side encrypted
//!   envelope ([`peerfleet_core::state::encryption`]). Every write is conditional on the ETag this
//!   handle last read or wrote (`If-Match`; `If-None-Match: *` when there was none): a run whose view is
//!   stale — its lease ran out and another run saved meanwhile — fails with
//!   [`StateErrorKind::Conflict`] instead of overwriting a newer state.
//! - **The lock object** (`key` + `.lock`) is created with `If-None-Match: *`, so exactly one of two
//!   racing runs gets it. It names its holder (user, host, pid, since when) and carries a lease the
//!   holder renews in the background (each renewal again conditional on the holder's own ETag). A lock
//!   whose lease ran out is taken over by a write conditional on *its* ETag, so two runs taking over at
//!   once cannot both win, and a holder that renews at the last moment keeps it.
//!
//! Objects carry the network's name as metadata; a state object of another network is refused. A
//! plain (unencrypted) object also carries the sha256 of its body, so an object edited by hand outside
//! peerfleet is refused rather than trusted (an attacker with write access could recompute it: against
//! that, use client-side encryption, which authenticates).

mod lock;

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use peerfleet_core::network::{S3StateSpec, ServerSideEncryption};
use peerfleet_core::state::encryption;
use peerfleet_core::state::{
    LockInfo, LockOptions, MAX_STATE_BYTES, State, StateBackend, StateError, StateErrorKind, StateKey,
    StateLock,
};
use sha2::{Digest, Sha256};

use crate::settings::AwsSettings;

/// Metadata key naming the network a state object belongs to.
const META_NETWORK: &str = "peerfleet-network";
/// Metadata key holding the sha256 of a plain state object's body.
const META_SHA256: &str = "peerfleet-sha256";

/// Where a state lives on S3: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket (it must exist; peerfleet never creates it).
    pub bucket: String,
    /// The state object's key.
    pub key: String,
}

impl S3Location {
    /// Parses `s3://bucket/key` (the key may contain `/`); `None` for anything else.
    pub fn parse(url: &str) -> Option<Self> {
        S3StateSpec::from_url(url).map(|s| S3Location { bucket: s.bucket, key: s.key })
    }

    /// The lock object's key: the state's key + `.lock`.
    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// How to reach a state on S3.
#[derive(Debug, Clone)]
pub struct S3StateConfig {
    /// The bucket and key.
    pub location: S3Location,
    /// The bucket's region (`None`: the default region chain, `AWS_REGION` and the profile).
    pub region: Option<String>,
    /// The credentials profile (`None`: the default chain).
    pub profile: Option<String>,
    /// Server-side encryption to ask for.
    /// Server-side encryption to ask for (S3 encrypts at rest; whoever may read the bucket still
    /// reads a plain state: client-side encryption protects against that).
    pub server_side: ServerSideEncryption,
    /// The network whose state this is (objects of another network are refused).
    pub network: String,
    /// The client-side key: when given, every write is encrypted with it and reads need it.
    pub client_key: Option<StateKey>,
}

/// What this handle knows of the state object's version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Not read yet.
    Unknown,
    /// Read, and there was none.
    Absent,
    /// Read or written with this ETag.
    Etag(String),
}

/// The state of one network on S3, with its lock. See the module documentation.
pub struct S3State {
    client: Client,
    config: S3StateConfig,
    seen: Mutex<Seen>,
}

impl fmt::Debug for S3State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3State").field("config", &self.config).finish_non_exhaustive()
    }
}

impl S3State {
    /// A handle on the state `config` describes, reaching S3 the way EC2 is reached: `settings`'
    /// endpoint (or `AWS_ENDPOINT_URL`), credentials chain and retry policy.
    pub async fn connect(settings: &AwsSettings, config: S3StateConfig) -> Self {
        let sdk = settings.sdk_config(config.region.as_deref(), config.profile.as_deref()).await;
        // A stand-in (or an S3-compatible store) at a custom endpoint has no per-bucket host names.
        let custom_endpoint = settings.endpoint_url.is_some()
            || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|v| std::env::var_os(v).is_some());
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(custom_endpoint)
            // Checksums only where S3 requires them: conditional writes need none, and stand-ins
            // handle the plain form best.
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .build();
        S3State { client: Client::from_conf(s3), config, seen: Mutex::new(Seen::Unknown) }
    }

    /// Where the state lives.
    pub fn location(&self) -> &S3Location {
        &self.config.location
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain data: a panic elsewhere cannot leave it half-written.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, kind: StateErrorKind) -> StateError {
        StateError::new(self.config.location.to_string(), kind)
    }

    fn remote<E>(&self, op: &'static str, err: SdkError<E, HttpResponse>) -> StateError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.error(remote(op, err))
    }

    /// Reads the state object: its body, ETag and metadata, or `None` when there is none.
    async fn get(&self) -> Result<Option<(Vec<u8>, String, Metadata)>, StateError> {
        let request =
            self.client.get_object().bucket(&self.config.location.bucket).key(&self.config.location.key);
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.remote("read the state object", e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let metadata = Metadata::from(out.metadata());
        // The same bound as a local state file: a wrong key (a backup, a disk image) is not read whole.
        if out.content_length().is_some_and(|len| u64::try_from(len).is_ok_and(|l| l > MAX_STATE_BYTES)) {
            return Err(self.error(StateErrorKind::Refused(format!(
                "the state object is larger than the limit of {MAX_STATE_BYTES} bytes: it is not a peerfleet \
                 state; check the key"
            ))));
        }
        let body = out.body.collect().await.map_err(|e| {
            self.error(StateErrorKind::Remote { op: "read the state object", source: Box::new(e) })
        })?;
        Ok(Some((body.into_bytes().to_vec(), etag, metadata)))
    }

    /// Turns a state object's body into state, refusing another network's, a hand-edited one, or an
    /// encrypted one without the right key.
    fn decode(&self, bytes: &[u8], metadata: &Metadata) -> Result<State, StateErrorKind> {
        let network = &self.config.network;
        if let Some(theirs) = &metadata.network
            && theirs != network
        {
            return Err(StateErrorKind::Refused(format!(
                "this is the state of network `{theirs}`, not of `{network}`: check the state location"
            )));
        }
        let plain = if encryption::is_encrypted(bytes) {
            encryption::decrypt(bytes, self.config.client_key.as_ref(), network)?
        } else {
            if let Some(sum) = &metadata.sha256
                && *sum != sha256_hex(bytes)
            {
                return Err(StateErrorKind::Refused(
                    "the state object was altered outside peerfleet (its content no longer matches the \
                     checksum peerfleet wrote); restore a previous version of the object"
                        .to_string(),
                ));
            }
            if self.config.client_key.is_some() {
                tracing::warn!(
                    state = %self.config.location,
                    "the state object is not encrypted yet; the next save encrypts it"
                );
            }
            bytes.to_vec()
        };
        State::from_json(&plain)
    }
}

/// The metadata peerfleet reads back from an object.
#[derive(Debug, Default)]
struct Metadata {
    network: Option<String>,
    sha256: Option<String>,
}

impl From<Option<&std::collections::HashMap<String, String>>> for Metadata {
    fn from(map: Option<&std::collections::HashMap<String, String>>) -> Self {
        let get = |k: &str| map.and_then(|m| m.get(k)).cloned();
        Metadata { network: get(META_NETWORK), sha256: get(META_SHA256) }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether an S3 error says the object (or the condition's object) does not exist.
fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    status(err) == Some(404) && err.code() != Some("NoSuchBucket")
}

/// Whether an S3 error says a conditional write's condition did not hold (412), or that another
/// conditional write on the same key was in progress (409).
fn is_precondition_failed<E>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(status(err), Some(412 | 409))
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A remote failure with the SDK's whole error chain in its text (its own `Display` says only
/// "service error").
fn remote<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> StateErrorKind
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text = DisplayErrorContext(&err).to_string();
    StateErrorKind::Remote { op, source: text.into() }
}

#[async_trait]
impl StateBackend for S3State {
    fn location(&self) -> String {
        self.config.location.to_string()
    }

    async fn load(&self) -> Result<State, StateError> {
        match self.get().await? {
            None => {
                *self.seen() = Seen::Absent;
                Ok(State::new())
            }
            Some((bytes, etag, metadata)) => {
                let state = self.decode(&bytes, &metadata).map_err(|kind| self.error(kind))?;
                *self.seen() = Seen::Etag(etag);
                Ok(state)
            }
        }
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        let plain = state.to_json();
        let body = match &self.config.client_key {
            Some(key) => encryption::encrypt(&plain, key, &self.config.network),
            None => plain,
        };
        let seen = self.seen().clone();
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.location.bucket)
            .key(&self.config.location.key)
            .content_type("application/json")
            .metadata(META_NETWORK, &self.config.network)
            .metadata(META_SHA256, sha256_hex(&body))
            .body(ByteStream::from(body));
        request = match &seen {
            Seen::Etag(etag) => request.if_match(etag),
            // Never read, or read as absent: only create, never overwrite what someone else made.
            Seen::Absent | Seen::Unknown => request.if_none_match("*"),
        };
        request = server_side(request, &self.config.server_side);
        match request.send().await {
            Ok(out) => {
                *self.seen() = Seen::Etag(out.e_tag().unwrap_or_default().to_string());
                Ok(())
            }
            // 404 on If-Match: the object was deleted since we read it — also someone else's doing.
            Err(e) if is_precondition_failed(&e) || (matches!(seen, Seen::Etag(_)) && is_not_found(&e)) => {
                Err(self.error(StateErrorKind::Conflict))
            }
            Err(e) => Err(self.remote("write the state object", e)),
        }
    }

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        lock::lock(self, operation, options).await
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        lock::force_unlock(self).await
    }
}

/// Adds the server-side encryption headers `sse` asks for.
fn server_side(
    request: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    sse: &ServerSideEncryption,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    use aws_sdk_s3::types::ServerSideEncryption as Sse;
    match sse {
        ServerSideEncryption::BucketDefault => request,
        ServerSideEncryption::S3 => request.server_side_encryption(Sse::Aes256),
        ServerSideEncryption::Kms { key_id } => {
            let request = request.server_side_encryption(Sse::AwsKms);
            match key_id {
                Some(key) => request.ssekms_key_id(key),
                None => request,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_key() {
        let l = S3Location::parse("s3://team-state/nets/testnet.json").unwrap();
        assert_eq!((l.bucket.as_str(), l.key.as_str()), ("team-state", "nets/testnet.json"));
        assert_eq!(l.lock_key(), "nets/testnet.json.lock");
        assert_eq!(l.to_string(), "s3://team-state/nets/testnet.json");
        for bad in ["s3://bucket", "s3://bucket/", "s3:///key", "bucket/key", "s3://b/dir/"] {
            assert_eq!(S3Location::parse(bad), None, "{bad}");
        }
    }
}
