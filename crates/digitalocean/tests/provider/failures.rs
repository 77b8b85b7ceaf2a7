//! Lost answers, crashes, rate limits, retries and errors that must not leak the token.

use super::*;

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_looked_up_and_adopted_not_repeated() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        server.inject("droplets_create", Fault::FailAfter(500), 1);
        let m = p.create_machine(&spec("lost", "frankfurt", 0), &ctx(PerMachinePki)).await?;
        assert_eq!(server.droplets().len(), 1, "no duplicate");
        assert_eq!(server.request_count("droplets_create"), 1);
        assert_eq!(m.id, server.droplets()[0].id.to_string());
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn crash_after_the_create_then_rerun_adopts_instead_of_duplicating() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let s = spec("crash", "frankfurt", 0);
        // The server makes the droplet, then holds the answer: the first run "crashes" meanwhile.
        server.inject("droplets_create", Fault::DelayAfter(Duration::from_secs(30)), 1);
        // The first run lives on its own runtime, so the crash ends every task it had, as kill -9 would.
        let doomed = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let first = provider(&server)?;
        {
            let s = s.clone();
            doomed.spawn(async move { first.create_machine(&s, &ctx(PerMachinePki)).await });
        }
        while server.droplets().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        doomed.shutdown_background();
        assert_eq!(server.droplets().len(), 1);

        // A new process: nothing in memory, the same spec.
        let second = provider(&server)?;
        let m = second.create_machine(&s, &ctx(PerMachinePki)).await?;
        assert_eq!(server.droplets().len(), 1, "adopted, not duplicated");
        assert_eq!(m.id, server.droplets()[0].id.to_string());
        assert_eq!(server.request_count("droplets_create"), 1);
        // A replacement (next generation) is a new droplet, never the old one adopted.
        let mut next = s.clone();
        next.generation = 1;
        let replacement = second.create_machine(&next, &ctx(PerMachinePki)).await?;
        assert_ne!(replacement.id, m.id);
        assert_eq!(replacement.generation, 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_429_waits_until_the_reset_then_succeeds() -> anyhow::Result<()> {
    bounded(async {
        let limit = RateLimit {
            per_minute: 5,
            minute: Duration::from_secs(2),
            per_hour: 1000,
            hour: Duration::from_secs(3600),
        };
        let server = TestServer::start_with(Config { rate_limit: Some(limit), ..Config::default() }).await?;
        // Another client of the same token used the whole burst a moment ago.
        server.consume_rate_limit(5);
        let p = provider(&server)?;
        let started = std::time::Instant::now();
        let inv = p.inventory("rl", "fra1").await?;
        assert!(inv.machines.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500), "waited only {waited:?}");
        assert!(waited < Duration::from_secs(6), "waited {waited:?}");
        let stats = p.stats();
        assert!((1..=3).contains(&stats.throttled), "{stats:?}");
        assert_eq!(stats.throttled, server.throttled());
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_client_paces_itself_under_the_limit_without_429s() -> anyhow::Result<()> {
    bounded(async {
        // 25 per 3 s, scaled from 250 per minute.
        let limit = RateLimit {
            per_minute: 25,
            minute: Duration::from_secs(3),
            per_hour: 5000,
            hour: Duration::from_secs(3600),
        };
        let server = TestServer::start_with(Config { rate_limit: Some(limit), ..Config::default() }).await?;
        let mut st = settings(&server);
        st.limits = RateLimits {
            per_minute: 25,
            minute: Duration::from_secs(3),
            per_hour: 5000,
            hour: Duration::from_secs(3600),
        };
        st.refresh_reuse = Duration::ZERO;
        let p = DigitalOceanProvider::new(Secret::new(server.token()), st)?;
        let started = std::time::Instant::now();
        // 10 inventories of 3 list requests each.
        for _ in 0..10 {
            p.inventory("pace", "fra1").await?;
        }
        let waited = started.elapsed();
        assert_eq!(server.total_requests(), 30);
        assert_eq!(server.throttled(), 0, "the client never exceeded the limit");
        assert!(waited >= Duration::from_secs(3), "30 requests at 25 per 3 s need one window: {waited:?}");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let mut st = settings(&server);
        st.request_timeout = Duration::from_millis(500);
        let p = DigitalOceanProvider::new(Secret::new(server.token()), st)?;
        server.inject("droplets_list", Fault::Fail(503), 1);
        server.inject("firewalls_list", Fault::Fail(500), 1);
        server.inject("reservedIPs_list", Fault::Delay(Duration::from_millis(1500)), 1);
        p.inventory("retry", "fra1").await?;
        // At least the three injected failures (a loaded machine may time out another request too).
        assert!(p.stats().retried >= 3, "{:?}", p.stats());
        assert_eq!(server.request_count("droplets_list"), 2);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_digitaloceans_id_and_request_id() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("bad", "frankfurt", 0);
        s.size = "s-64vcpu-1tb".into();
        let err = p
            .create_machine(&s, &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(err.message.contains("unprocessable_entity"), "{err}");
        assert!(err.request_id.is_some(), "{err:?}");
        assert_eq!(server.request_count("droplets_create"), 1, "not retried");

        let missing = Machine {
            id: "123456".into(),
            ..p.create_machine(&spec("bad", "frankfurt", 1), &ctx(PerMachinePki)).await?
        };
        let err = p
            .update_machine(&missing, &spec("bad", "frankfurt", 1))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(server.request_count("droplets_get"), 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn names_and_tags_digitalocean_cannot_hold_fail_before_any_request() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("net", "under_score", 0);
        assert_eq!(
            p.create_machine(&s, &ctx(PerMachinePki)).await.err().map(|e| e.kind),
            Some(ErrorKind::Invalid)
        );
        s = spec("net", "ok", 0);
        s.tags.insert("has space".into());
        assert_eq!(
            p.create_machine(&s, &ctx(PerMachinePki)).await.err().map(|e| e.kind),
            Some(ErrorKind::Invalid)
        );
        s = spec("net", "ok", 0);
        let no_pki = CreateContext::default();
        assert_eq!(p.create_machine(&s, &no_pki).await.err().map(|e| e.kind), Some(ErrorKind::Invalid));
        assert_eq!(server.total_requests(), 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let token = "dop_v1_f00dfacecafe0123456789abcdef0123456789abcdef0123456789abcdef";
        let p = DigitalOceanProvider::new(Secret::new(token), settings(&server))?;
        let mut texts = vec![format!("{p:?}"), format!("{:?}", p.settings())];
        // Wrong token: 401.
        let err = p.inventory("tok", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        // A server error, a lost create.
        let right = provider(&server)?;
        server.inject("*", Fault::Fail(500), 100);
        let err = right
            .create_machine(&spec("tok", "frankfurt", 0), &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        texts.push(format!("{right:?}"));
        // Nothing to connect to.
        let nowhere = DigitalOceanProvider::new(
            Secret::new(token),
            Settings { api_url: "http://127.0.0.1:9".into(), ..settings(&server) },
        )?;
        let err = nowhere.inventory("tok", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Transient);
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        for t in &texts {
            assert!(!t.contains(token) && !t.contains(server.token()), "token leaked: {t}");
            assert!(!t.contains("PRIVATE KEY"), "user data leaked: {t}");
        }
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_permanently_failing_api_gets_exactly_the_policys_attempts() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let attempts = u64::from(settings(&server).retry.max_attempts);
        server.inject("droplets_list", Fault::Fail(503), 1000);
        let err = p.inventory("down", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("listed"))?;
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert_eq!(
            server.request_count("droplets_list"),
            attempts,
            "one retry layer, not attempts × attempts"
        );

        // `429`s count as attempts too: never 20 waits of up to 10 minutes.
        let server = self::server().await?;
        let p = provider(&server)?;
        server.inject("firewalls_list", Fault::Fail(429), 1000);
        let err = p.inventory("limited", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("listed"))?;
        assert!(matches!(err.kind, ErrorKind::Throttled { .. }), "{err}");
        assert_eq!(server.request_count("firewalls_list"), attempts);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_create_that_keeps_failing_is_sent_once_per_look_up_never_retried_by_the_client_too()
-> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let attempts = u64::from(settings(&server).retry.max_attempts);
        // A connection reset after the server made the droplet would look the same; here nothing is made.
        server.inject("droplets_create", Fault::Fail(503), 1000);
        let err = p
            .create_machine(&spec("flaky", "frankfurt", 0), &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("created"))?;
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert_eq!(server.request_count("droplets_create"), attempts);
        assert!(p.retries_requests(), "the executor makes one attempt per call of this provider");
        server.assert_conforms();
        Ok(())
    })
    .await
}
