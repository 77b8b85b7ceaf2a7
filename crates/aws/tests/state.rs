//! The S3 state backend against moto's S3: conditional writes, the lock object and its lease,
//! client-side encryption, refusals.
//!
//! moto checks S3's conditions (`If-None-Match: *`, `If-Match`) but not atomically with the write, so
//! every store here reaches moto through the fault proxy, which forwards conditional writes one at a
//! time (as S3 makes them atomic); the probes of moto itself talk to it directly.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use aws_sdk_s3::primitives::ByteStream;
use peerfleet_aws::state::{S3Location, S3State, S3StateConfig};
use peerfleet_aws::testing::{self, Fault, FaultProxy, Moto};
use peerfleet_core::network::ServerSideEncryption;
use peerfleet_core::state::{
    ChainPin, LockOptions, Secret, State, StateBackend, StateErrorKind, StateKey, keep_renewed,
};

use crate::support::bounded;

const BUCKET: &str = "team-state";
const KEY: &str = "nets/testnet.state.json";
const CA_KEY: &str = "-----BEGIN PRIVATE KEY----- recognisable-ca-key";
const GENESIS: &[u8] = b"{\"chain\":\"recognisable-genesis-bytes\"}";

/// moto with the state bucket, behind the conditional-write layer.
struct Stand {
    moto: Moto,
    proxy: FaultProxy,
}

impl Stand {
    /// Where stores send their requests: the proxy.
    fn endpoint(&self) -> String {
        self.proxy.endpoint()
    }
}

/// moto with the state bucket, or `None` when moto is missing (SKIPPED).
async fn moto(test: &str) -> anyhow::Result<Option<Stand>> {
    let Some(moto) = Moto::for_test(test)? else { return Ok(None) };
    testing::create_bucket(&moto.endpoint(), BUCKET).await.map_err(anyhow::Error::msg)?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    Ok(Some(Stand { moto, proxy }))
}

fn config(network: &str, key: Option<&StateKey>) -> S3StateConfig {
    S3StateConfig {
        location: S3Location { bucket: BUCKET.into(), key: KEY.into() },
        region: Some("us-east-1".into()),
        profile: None,
        server_side: ServerSideEncryption::S3,
        network: network.into(),
        client_key: key.cloned(),
    }
}

async fn store(moto: &Stand, network: &str, key: Option<&StateKey>) -> S3State {
    S3State::connect(&testing::settings(&moto.endpoint()), config(network, key)).await
}

fn sample() -> State {
    let mut s = State::new();
    s.secrets.insert("ca_key".into(), Secret::new(CA_KEY));
    s.chain = Some(ChainPin::new(GENESIS));
    s.outputs.insert("note".into(), "hello".into());
    s
}

/// The state object's bytes as any reader of the bucket sees them.
async fn raw_object(moto: &Stand) -> anyhow::Result<Vec<u8>> {
    let client = testing::s3_client(&moto.endpoint()).await;
    let out = client.get_object().bucket(BUCKET).key(KEY).send().await?;
    Ok(out.body.collect().await?.into_bytes().to_vec())
}

async fn put_raw(
    moto: &Moto,
    key: &str,
    body: Vec<u8>,
    if_match: Option<&str>,
    if_none_match: bool,
) -> Result<String, u16> {
    let client = testing::s3_client(&moto.endpoint()).await;
    let mut put = client.put_object().bucket(BUCKET).key(key).body(ByteStream::from(body));
    if let Some(etag) = if_match {
        put = put.if_match(etag);
    }
    if if_none_match {
        put = put.if_none_match("*");
    }
    put.send()
        .await
        .map(|o| o.e_tag().unwrap_or_default().to_string())
        .map_err(|e| e.raw_response().map_or(0, |r| r.status().as_u16()))
}

#[tokio::test]
async fn moto_honours_conditional_writes_on_put_and_delete() -> anyhow::Result<()> {
    let Some(stand) = moto("moto_honours_conditional_writes_on_put_and_delete").await? else { return Ok(()) };
    // Straight to moto, not through the proxy: this is what moto itself does with each condition.
    let moto = &stand.moto;
    bounded(async {
        let first =
            put_raw(moto, "probe", b"one".to_vec(), None, true).await.map_err(|s| anyhow::anyhow!("{s}"))?;
        assert_eq!(put_raw(moto, "probe", b"two".to_vec(), None, true).await, Err(412), "If-None-Match: *");
        let second = put_raw(moto, "probe", b"two".to_vec(), Some(&first), false)
            .await
            .map_err(|s| anyhow::anyhow!("{s}"))?;
        assert_eq!(
            put_raw(moto, "probe", b"three".to_vec(), Some(&first), false).await,
            Err(412),
            "If-Match"
        );
        let client = testing::s3_client(&moto.endpoint()).await;
        let stale = client.delete_object().bucket(BUCKET).key("probe").if_match(&first).send().await;
        assert_eq!(stale.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16())), Some(412));
        client.delete_object().bucket(BUCKET).key("probe").if_match(&second).send().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn state_written_by_one_handle_is_read_by_another() -> anyhow::Result<()> {
    let Some(moto) = moto("state_written_by_one_handle_is_read_by_another").await? else { return Ok(()) };
    bounded(async {
        let writer = store(&moto, "testnet", None).await;
        let mut s = writer.load().await?;
        assert_eq!(s, State::new(), "no object yet: an empty state");
        s = State { secrets: sample().secrets, ..s };
        writer.save(&mut s).await?;
        writer.save(&mut s).await?;
        let reader = store(&moto, "testnet", None).await;
        let read = reader.load().await?;
        assert_eq!(read, s);
        assert_eq!(read.serial, 2);
        assert!(read.lineage.is_some());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stale_writers_save_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let Some(moto) = moto("a_stale_writers_save_is_refused_and_changes_nothing").await? else {
        return Ok(());
    };
    bounded(async {
        let (a, b) = (store(&moto, "testnet", None).await, store(&moto, "testnet", None).await);
        let mut first = a.load().await?;
        a.save(&mut first).await?;
        // Both read serial 1; b saves serial 2; a's view is now stale.
        let mut stale = a.load().await?;
        let mut fresh = b.load().await?;
        b.save(&mut fresh).await?;
        stale.outputs.insert("lost".into(), "update".into());
        let err = a.save(&mut stale).await.err().context("a stale save must fail")?;
        assert!(matches!(err.kind(), StateErrorKind::Conflict), "{err}");
        assert!(err.to_string().contains("another writer"), "{err}");
        assert_eq!(stale.serial, 1, "a failed save keeps the serial");
        let stored = store(&moto, "testnet", None).await.load().await?;
        assert_eq!(stored, fresh, "the newer state is untouched");
        // Two first writers: the second create of a missing object fails too.
        let c = S3State::connect(
            &testing::settings(&moto.endpoint()),
            S3StateConfig {
                location: S3Location { bucket: BUCKET.into(), key: "other".into() },
                ..config("testnet", None)
            },
        )
        .await;
        let d = S3State::connect(
            &testing::settings(&moto.endpoint()),
            S3StateConfig {
                location: S3Location { bucket: BUCKET.into(), key: "other".into() },
                ..config("testnet", None)
            },
        )
        .await;
        let (mut sc, mut sd) = (c.load().await?, d.load().await?);
        c.save(&mut sc).await?;
        let err = d.save(&mut sd).await.err().context("second create must fail")?;
        assert!(matches!(err.kind(), StateErrorKind::Conflict), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_held_lock_names_its_holder_and_a_waiter_gets_it_on_release() -> anyhow::Result<()> {
    let Some(moto) = moto("a_held_lock_names_its_holder_and_a_waiter_gets_it_on_release").await? else {
        return Ok(());
    };
    bounded(async {
        let (a, b) = (store(&moto, "testnet", None).await, store(&moto, "testnet", None).await);
        let held = a.lock("apply", &LockOptions::default()).await?;
        let err = b.lock("apply", &LockOptions::default()).await.err().context("held")?;
        assert_eq!(err.lock_holder(), Some(held.info()), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("s3://team-state/"),
            "{text}"
        );
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            held.release().await
        });
        let waiting = LockOptions {
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(50),
            ..Default::default()
        };
        let lock = b.lock("apply", &waiting).await?;
        assert!(lock.took_over().is_none());
        releaser.await??;
        lock.release().await?;
        // Released: the lock object is gone.
        assert_eq!(b.force_unlock().await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_loses_it() -> anyhow::Result<()> {
    let Some(moto) = moto("an_expired_lease_is_taken_over_and_the_old_holder_loses_it").await? else {
        return Ok(());
    };
    bounded(async {
        let (a, b) = (store(&moto, "testnet", None).await, store(&moto, "testnet", None).await);
        let short = LockOptions { lease: Duration::from_millis(500), ..Default::default() };
        let mut crashed = a.lock("apply", &short).await?;
        let ghost = crashed.info().clone();
        // Within the lease: refused, naming the holder.
        assert!(matches!(b.lock("apply", &short).await.err().map(|e| e.lock_holder().cloned()), Some(Some(h)) if h == ghost));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let lock = b.lock("apply", &LockOptions::default()).await?;
        assert_eq!(lock.took_over(), Some(&ghost));
        // The old holder wakes up: its renewal (conditional on its own ETag) fails, naming the new one.
        let err = crashed.renew().await.err().context("renewal of a lost lock")?;
        assert!(matches!(err.kind(), StateErrorKind::LockLost(Some(h)) if h.id == lock.info().id), "{err}");
        crashed.release().await?; // leaves the new holder's lock alone
        let again = a.lock("apply", &LockOptions::default()).await.err().context("still held")?;
        assert_eq!(again.lock_holder(), Some(lock.info()));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_lock_renewed_in_the_background_outlives_its_lease() -> anyhow::Result<()> {
    let Some(moto) = moto("a_lock_renewed_in_the_background_outlives_its_lease").await? else {
        return Ok(());
    };
    bounded(async {
        let (a, b) = (store(&moto, "testnet", None).await, store(&moto, "testnet", None).await);
        let short = LockOptions { lease: Duration::from_millis(900), ..Default::default() };
        let lock = keep_renewed(a.lock("apply", &short).await?);
        // A confirmation prompt waits for three leases; the background task keeps the lock.
        tokio::time::sleep(Duration::from_millis(2700)).await;
        let err = b.lock("apply", &short).await.err().context("still held")?;
        assert!(matches!(err.kind(), StateErrorKind::Locked(_)), "{err}");
        lock.release().await?;
        b.lock("apply", &short).await?.release().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn force_unlock_removes_the_lock_object_and_names_its_holder() -> anyhow::Result<()> {
    let Some(moto) = moto("force_unlock_removes_the_lock_object_and_names_its_holder").await? else {
        return Ok(());
    };
    bounded(async {
        let (a, b) = (store(&moto, "testnet", None).await, store(&moto, "testnet", None).await);
        let held = a.lock("apply", &LockOptions::default()).await?;
        let info = held.info().clone();
        std::mem::forget(held); // the holder's laptop died
        assert_eq!(b.force_unlock().await?, Some(info));
        b.lock("apply", &LockOptions::default()).await?.release().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn client_side_encryption_keeps_the_ca_key_and_genesis_out_of_the_bucket() -> anyhow::Result<()> {
    let Some(moto) = moto("client_side_encryption_keeps_the_ca_key_and_genesis_out_of_the_bucket").await?
    else {
        return Ok(());
    };
    bounded(async {
        let key = StateKey::generate();
        let writer = store(&moto, "testnet", Some(&key)).await;
        let mut s = writer.load().await?;
        s = State { secrets: sample().secrets, chain: sample().chain, ..s };
        writer.save(&mut s).await?;
        let raw = raw_object(&moto).await?;
        let text = String::from_utf8_lossy(&raw);
        let genesis_b64 = &s.chain.as_ref().context("pin")?.genesis_b64;
        for secret in ["recognisable-ca-key", "PRIVATE KEY", "recognisable-genesis", genesis_b64.as_str()] {
            ensure!(!text.contains(secret), "{secret} is readable in the bucket: {text}");
        }
        assert_eq!(store(&moto, "testnet", Some(&key)).await.load().await?, s);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let Some(moto) = moto("a_wrong_or_missing_key_is_refused_and_changes_nothing").await? else {
        return Ok(());
    };
    bounded(async {
        let key = StateKey::generate();
        let writer = store(&moto, "testnet", Some(&key)).await;
        let mut s = writer.load().await?;
        writer.save(&mut s).await?;
        let before = raw_object(&moto).await?;
        let missing = store(&moto, "testnet", None).await.load().await.err().context("no key")?;
        assert!(missing.to_string().contains("PEERFLEET_STATE_KEY"), "{missing}");
        let wrong = store(&moto, "testnet", Some(&StateKey::generate())).await;
        let err = wrong.load().await.err().context("wrong key")?;
        assert!(err.to_string().contains("wrong PEERFLEET_STATE_KEY"), "{err}");
        // A run that could not read the state cannot write it either: it never learnt the ETag.
        let err = wrong.save(&mut State::new()).await.err().context("blind write")?;
        assert!(matches!(err.kind(), StateErrorKind::Conflict), "{err}");
        assert_eq!(raw_object(&moto).await?, before, "nothing changed");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_tampered_object_and_another_networks_object_are_refused() -> anyhow::Result<()> {
    let Some(moto) = moto("a_tampered_object_and_another_networks_object_are_refused").await? else {
        return Ok(());
    };
    bounded(async {
        // Plain: edited by hand in the bucket (the metadata checksum no longer matches).
        let writer = store(&moto, "testnet", None).await;
        let mut s = writer.load().await?;
        writer.save(&mut s).await?;
        let edited = String::from_utf8(raw_object(&moto).await?)?.replace("\"serial\": 1", "\"serial\": 7");
        let client = testing::s3_client(&moto.endpoint()).await;
        let head = client.head_object().bucket(BUCKET).key(KEY).send().await?;
        let mut put = client.put_object().bucket(BUCKET).key(KEY).body(ByteStream::from(edited.into_bytes()));
        for (k, v) in head.metadata().cloned().unwrap_or_default() {
            put = put.metadata(k, v);
        }
        put.send().await?;
        let err = store(&moto, "testnet", None).await.load().await.err().context("tampered")?;
        assert!(err.to_string().contains("altered outside peerfleet"), "{err}");

        // Another network's state at this key.
        writer.force_unlock().await?;
        client.delete_object().bucket(BUCKET).key(KEY).send().await?;
        let other = store(&moto, "mainnet", None).await;
        let mut m = other.load().await?;
        other.save(&mut m).await?;
        let err = store(&moto, "testnet", None).await.load().await.err().context("other network")?;
        assert!(err.to_string().contains("`mainnet`") && err.to_string().contains("`testnet`"), "{err}");

        // Encrypted and altered: authentication fails.
        client.delete_object().bucket(BUCKET).key(KEY).send().await?;
        let key = StateKey::generate();
        let sealed = store(&moto, "testnet", Some(&key)).await;
        let mut e = sealed.load().await?;
        sealed.save(&mut e).await?;
        let mut envelope: serde_json::Value = serde_json::from_slice(&raw_object(&moto).await?)?;
        let ct = envelope["ciphertext"].as_str().context("ciphertext")?.to_string();
        // Another first base64 digit: the first byte of the ciphertext changes.
        let flipped = match ct.strip_prefix('A') {
            Some(rest) => format!("B{rest}"),
            None => format!("A{}", ct.get(1..).unwrap_or_default()),
        };
        envelope["ciphertext"] = flipped.into();
        client
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .body(ByteStream::from(envelope.to_string().into_bytes()))
            .send()
            .await?;
        let err = store(&moto, "testnet", Some(&key)).await.load().await.err().context("altered envelope")?;
        assert!(err.to_string().contains("altered after it was written"), "{err}");
        Ok(())
    })
    .await
}

/// Many runs racing for one lock, each through its own handle: exactly one gets it, every other is
/// told who has it. Then the holder's lease runs out and many runs race to take it over: again exactly
/// one wins (each take-over is conditional on the expired lock's ETag).
#[tokio::test]
async fn racing_lockers_and_racing_take_overs_have_exactly_one_winner() -> anyhow::Result<()> {
    let Some(moto) = moto("racing_lockers_and_racing_take_overs_have_exactly_one_winner").await? else {
        return Ok(());
    };
    bounded(async {
        const RUNS: usize = 12;
        let short = LockOptions { lease: Duration::from_millis(800), ..Default::default() };
        let mut stores = Vec::new();
        for _ in 0..RUNS {
            stores.push(store(&moto, "testnet", None).await);
        }
        let race = |options: LockOptions| {
            let stores = &stores;
            async move {
                let attempts = stores.iter().map(|s| s.lock("apply", &options));
                futures::future::join_all(attempts).await
            }
        };
        let results = race(short.clone()).await;
        let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        assert_eq!(won.len(), 1, "one winner of {RUNS}");
        let winner = won.into_iter().next().context("winner")??;
        for e in lost.into_iter().filter_map(Result::err) {
            assert_eq!(e.lock_holder(), Some(winner.info()), "{e}");
        }
        let expired = winner.info().clone();
        std::mem::forget(winner); // its process died: no renewal, no release
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let results = race(LockOptions::default()).await;
        let took_over: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(took_over.len(), 1, "one take-over of {RUNS}");
        assert_eq!(took_over[0].took_over(), Some(&expired));
        let now = took_over[0].info().clone();
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(e.lock_holder(), Some(&now), "{e}");
        }
        Ok(())
    })
    .await
}

/// S3 answers 409 `ConditionalRequestConflict` when another conditional write of the same key is in
/// flight (moto never does; the proxy injects it): the lock is tried again, not reported as an error.
#[tokio::test]
async fn a_conflicting_conditional_write_is_tried_again() -> anyhow::Result<()> {
    let Some(moto) = moto("a_conflicting_conditional_write_is_tried_again").await? else { return Ok(()) };
    bounded(async {
        let conflict = Fault::Error { status: 409, code: "ConditionalRequestConflict".into() };
        moto.proxy.fail(&format!("PUT /{BUCKET}/{KEY}.lock"), 2, conflict);
        let lock = store(&moto, "testnet", None).await.lock("apply", &LockOptions::default()).await?;
        let puts = moto.proxy.requests_of(&format!("PUT /{BUCKET}/{KEY}.lock"));
        let statuses: Vec<u16> = puts.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [409, 409, 200]);
        lock.release().await?;
        Ok(())
    })
    .await
}
