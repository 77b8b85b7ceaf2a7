//! Where a network's state lives, and opening it: a local file (one person) or an S3 object (a team).
//!
//! The location comes from `--state` (a path, or `s3://bucket/key`), else the spec's `[state]` table,
//! else the conventional local path beside the spec. The client-side encryption key never comes from
//! the spec: it is read from `PEERFLEET_STATE_KEY` / `PEERFLEET_STATE_KEY_FILE`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerfleet_core::network::{Network, S3StateSpec, StateSpec};
use peerfleet_core::state::{
    LocalStateFile, LockOptions, State, StateBackend, StateError, StateErrorKind, StateKey,
    default_state_path,
};

/// Where a state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A local JSON file.
    Local(PathBuf),
    /// An S3 object, with how to reach it.
    S3(S3StateSpec),
}

impl StateLocation {
    /// Reads a `--state` argument: `s3://bucket/key` is S3 (region, profile and encryption from the
    /// spec's `[state]` table when it names the same object, else the defaults), anything else a path.
    ///
    /// # Errors
    /// An `s3://` URL without a bucket and a key.
    pub fn from_arg(arg: &str, spec: &StateSpec) -> Result<Self, StoreError> {
        if !arg.starts_with("s3://") {
            return Ok(StateLocation::Local(PathBuf::from(arg)));
        }
        let location = S3StateSpec::from_url(arg).ok_or_else(|| StoreError::BadUrl(arg.to_string()))?;
        let s3 = match spec {
            StateSpec::S3(s) if s.bucket == location.bucket && s.key == location.key => s.clone(),
            StateSpec::S3(s) => S3StateSpec { bucket: location.bucket, key: location.key, ..s.clone() },
            StateSpec::Local => S3StateSpec::new(&location.bucket, &location.key),
        };
        Ok(StateLocation::S3(s3))
    }

    /// The location of `network`'s state declared in the spec at `spec_path`: its `[state]` table,
    /// or the conventional local file beside the spec.
    pub fn of_spec(spec_path: &Path, network: &Network) -> Self {
        match &network.state {
            StateSpec::S3(s3) => StateLocation::S3(s3.clone()),
            StateSpec::Local => StateLocation::Local(default_state_path(spec_path, &network.name)),
        }
    }

    /// `--state` when given, else [`StateLocation::of_spec`].
    ///
    /// # Errors
    /// As [`StateLocation::from_arg`].
    pub fn resolve(arg: Option<&str>, spec_path: &Path, network: &Network) -> Result<Self, StoreError> {
        match arg {
            Some(arg) => Self::from_arg(arg, &network.state),
            None => Ok(Self::of_spec(spec_path, network)),
        }
    }
}

impl fmt::Display for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateLocation::Local(p) => write!(f, "{}", p.display()),
            StateLocation::S3(s) => write!(f, "s3://{}/{}", s.bucket, s.key),
        }
    }
}

/// Why a state store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `--state s3://...` without a bucket and key.
    #[error("--state {0}: expected s3://BUCKET/KEY or a file path")]
    BadUrl(String),
    /// The client-side key is malformed or unreadable.
    #[error(transparent)]
    Key(#[from] peerfleet_core::state::encryption::KeyError),
    /// The spec asks for client-side encryption and no key was given.
    #[error(
        "[state] client_encryption = true, but no key was given: set PEERFLEET_STATE_KEY (base64 of 32 \
         random bytes, e.g. `openssl rand -base64 32`) or PEERFLEET_STATE_KEY_FILE"
    )]
    KeyMissing,
    /// The state is on S3 and this build has no AWS support (the `aws` feature).
    #[error("the state is on S3 ({0}), and this peerfleet was built without AWS support (feature `aws`)")]
    NotBuiltIn(String),
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Opens the store at `location` for `network`. An S3 store is reached the way EC2 is (the default
/// credentials chain, `AWS_ENDPOINT_URL`), with the client-side key from the environment.
///
/// # Errors
/// A malformed key, a spec that demands encryption without a key, or S3 in a build without `aws`.
pub async fn open(location: &StateLocation, network: &str) -> Result<Arc<dyn StateBackend>, StoreError> {
    match location {
        StateLocation::Local(path) => Ok(Arc::new(LocalStateFile::new(path))),
        StateLocation::S3(spec) => {
            let client_key = StateKey::from_env()?;
            if spec.client_encryption && client_key.is_none() {
                return Err(StoreError::KeyMissing);
            }
            open_s3(spec, network, client_key).await
        }
    }
}

#[cfg(feature = "aws")]
async fn open_s3(
    spec: &S3StateSpec,
    network: &str,
    client_key: Option<StateKey>,
) -> Result<Arc<dyn StateBackend>, StoreError> {
    use peerfleet_aws::state::{S3Location, S3State, S3StateConfig};
    let config = S3StateConfig {
        location: S3Location { bucket: spec.bucket.clone(), key: spec.key.clone() },
        region: spec.region.clone(),
        profile: spec.profile.clone(),
        server_side: spec.server_side.clone(),
        network: network.to_string(),
        client_key,
    };
    Ok(Arc::new(S3State::connect(&peerfleet_aws::AwsSettings::default(), config).await))
}

#[cfg(not(feature = "aws"))]
async fn open_s3(
    spec: &S3StateSpec,
    _network: &str,
    _client_key: Option<StateKey>,
) -> Result<Arc<dyn StateBackend>, StoreError> {
    Err(StoreError::NotBuiltIn(format!("s3://{}/{}", spec.bucket, spec.key)))
}

/// What `state migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// The state was copied and read back identical.
    Copied {
        /// Its lineage.
        lineage: Option<String>,
        /// Its serial.
        serial: u64,
    },
    /// The target already held this very version.
    AlreadyThere {
        /// Its serial.
        serial: u64,
    },
}

/// Copies the state of network `network` from `from` to `to`, keeping lineage and serial, holding
/// both locks.
///
/// Refuses a source that records another network, and a target of another lineage (another network's
/// history) or a newer version of the same lineage; reads the copy back through a fresh handle
/// (`reopen_to`, on the same place as `to`) and compares it with the source before reporting
/// success. The source is never changed.
///
/// # Errors
/// Either lock held, a refused source or target, or a copy that does not read back identical.
pub async fn migrate(
    network: &str,
    from: &dyn StateBackend,
    to: &dyn StateBackend,
    reopen_to: &dyn StateBackend,
    lock: &LockOptions,
) -> Result<Migrated, StateError> {
    let source_lock = from.lock("state migrate", lock).await?;
    let target_lock = match to.lock("state migrate", lock).await {
        Ok(l) => l,
        Err(e) => {
            let _ = source_lock.release().await;
            return Err(e);
        }
    };
    let result = copy(network, from, to, reopen_to).await;
    let released = target_lock.release().await.and(source_lock.release().await);
    let migrated = result?;
    released?;
    Ok(migrated)
}

async fn copy(
    network: &str,
    from: &dyn StateBackend,
    to: &dyn StateBackend,
    reopen_to: &dyn StateBackend,
) -> Result<Migrated, StateError> {
    let refused = |why: String| StateError::new(to.location(), StateErrorKind::Refused(why));
    let source = from.load().await?;
    // Checked without recording the name: the copy must be the source, byte for byte.
    source.clone().claim(network).map_err(|kind| StateError::new(from.location(), kind))?;
    if source.lineage.is_none() {
        return Err(StateError::new(
            from.location(),
            StateErrorKind::Refused("there is no state here to migrate (never saved)".to_string()),
        ));
    }
    let target = to.load().await?;
    match (&target.lineage, target.serial) {
        (None, _) => {}
        (Some(l), _) if Some(l) != source.lineage.as_ref() => {
            return Err(refused(format!(
                "it already holds a state of another lineage ({l}, serial {}); refusing to overwrite \
                 another network's history",
                target.serial
            )));
        }
        (Some(_), serial) if serial > source.serial => {
            return Err(refused(format!(
                "it holds a newer version of this state (serial {serial} > {}); refusing to go back",
                source.serial
            )));
        }
        (Some(_), serial) if serial == source.serial => {
            if target == source {
                return Ok(Migrated::AlreadyThere { serial });
            }
            return Err(refused(format!(
                "it holds a different state with the same lineage and serial ({serial}): the two copies \
                 diverged; refusing to pick one"
            )));
        }
        _ => {}
    }
    to.write(&source).await?;
    let copied: State = reopen_to.load().await?;
    if copied != source {
        return Err(refused(
            "the copy does not read back identical to the source; the source is unchanged".into(),
        ));
    }
    Ok(Migrated::Copied { lineage: source.lineage.clone(), serial: source.serial })
}
