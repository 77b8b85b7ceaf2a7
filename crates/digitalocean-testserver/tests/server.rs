//! The test server against DigitalOcean's description: well-formed traffic passes, malformed traffic
//! is caught, and the behaviour the provider depends on (pagination, rate limit, faults) holds.

use std::time::Duration;

use peerfleet_digitalocean_testserver::{Config, Conformance, Delays, Fault, RateLimit, TestServer};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(server: &TestServer) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: server.url().to_string(),
            token: server.token().to_string(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut req =
            self.http.request(method, url).bearer_auth(&self.token).timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, headers, value))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let (s, _, v) = self.send(reqwest::Method::GET, path, None).await?;
        Ok((s, v))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let (s, _, v) = self.send(reqwest::Method::POST, path, Some(body)).await?;
        Ok((s, v))
    }
}

/// Whether the description is there; when not, says so loudly and fails under `CI=true`.
fn description_available(server: &TestServer) -> bool {
    match server.conformance() {
        Conformance::Checked(_) => true,
        Conformance::Skipped(reason) => {
            peerfleet_digitalocean_testserver::skipped(
                "this test (it needs DigitalOcean's OpenAPI description)",
                &reason,
            );
            false
        }
    }
}

fn fast() -> Config {
    Config {
        timing: Delays { boot: Duration::from_millis(50), action: Duration::from_millis(20) },
        ..Config::default()
    }
}

#[tokio::test]
async fn the_providers_traffic_conforms_to_the_description() -> anyhow::Result<()> {
    let server = TestServer::start_with(fast()).await?;
    let c = Client::new(&server);
    let (s, one) = c
        .post(
            "/v2/droplets",
            json!({ "name": "net-fra-0", "region": "fra1", "size": "s-1vcpu-1gb", "image": "debian-12-x64",
                    "tags": ["peer_cluster", "peerfleet:network:net"], "user_data": "#cloud-config\n" }),
        )
        .await?;
    assert_eq!(s, 202, "{one}");
    let (s, many) = c
        .post(
            "/v2/droplets",
            json!({ "names": ["net-fra-1", "net-fra-2"], "region": "fra1", "size": "s-1vcpu-1gb",
                    "image": "debian-12-x64", "tags": ["peerfleet:network:net"] }),
        )
        .await?;
    assert_eq!(s, 202, "{many}");
    assert_eq!(many["droplets"].as_array().map(Vec::len), Some(2));
    let id = one["droplet"]["id"].as_u64().unwrap_or_default();
    assert_eq!(one["droplet"]["status"], "new");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (s, got) = c.get(&format!("/v2/droplets/{id}")).await?;
    assert_eq!((s, got["droplet"]["status"].as_str()), (200, Some("active")));
    let (s, list) = c.get("/v2/droplets?tag_name=peerfleet:network:net&per_page=200").await?;
    assert_eq!((s, list["meta"]["total"].as_u64()), (200, Some(3)));

    // Resize needs the droplet off, as on DigitalOcean.
    let (s, refused) = c
        .post(&format!("/v2/droplets/{id}/actions"), json!({ "type": "resize", "size": "s-2vcpu-2gb" }))
        .await?;
    assert_eq!((s, refused["id"].as_str()), (422, Some("unprocessable_entity")));
    let (s, off) = c.post(&format!("/v2/droplets/{id}/actions"), json!({ "type": "power_off" })).await?;
    assert_eq!(s, 201, "{off}");
    tokio::time::sleep(Duration::from_millis(40)).await;
    let action = off["action"]["id"].as_u64().unwrap_or_default();
    let (s, done) = c.get(&format!("/v2/droplets/{id}/actions/{action}")).await?;
    assert_eq!((s, done["action"]["status"].as_str()), (200, Some("completed")));
    let (s, _) = c
        .post(
            &format!("/v2/droplets/{id}/actions"),
            json!({ "type": "resize", "size": "s-2vcpu-2gb", "disk": false }),
        )
        .await?;
    assert_eq!(s, 201);

    let (s, _) = c.post("/v2/tags", json!({ "name": "relay" })).await?;
    assert_eq!(s, 201);
    let (s, _) = c
        .post(
            "/v2/tags/relay/resources",
            json!({ "resources": [{ "resource_id": id.to_string(), "resource_type": "droplet" }] }),
        )
        .await?;
    assert_eq!(s, 204);
    let (s, tag) = c.get("/v2/tags/relay").await?;
    assert_eq!((s, tag["tag"]["resources"]["count"].as_u64()), (200, Some(1)));

    let (s, fw) = c
        .post(
            "/v2/firewalls",
            json!({ "name": "peerfleet-net-fra1", "tags": ["peerfleet:network:net"],
                    "inbound_rules": [{ "protocol": "tcp", "ports": "2376", "sources": { "addresses": ["192.0.2.0/24"] } }],
                    "outbound_rules": [{ "protocol": "tcp", "ports": "0", "destinations": { "addresses": ["0.0.0.0/0", "::/0"] } }] }),
        )
        .await?;
    assert_eq!(s, 202, "{fw}");
    let (s, fws) = c.get("/v2/firewalls?per_page=200").await?;
    assert_eq!((s, fws["meta"]["total"].as_u64()), (200, Some(1)));

    let (s, rip) = c.post("/v2/reserved_ips", json!({ "droplet_id": many["droplets"][0]["id"] })).await?;
    assert_eq!(s, 202, "{rip}");
    let ip = rip["reserved_ip"]["ip"].as_str().unwrap_or_default().to_string();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (s, got) = c.get(&format!("/v2/reserved_ips/{ip}")).await?;
    assert_eq!((s, got["reserved_ip"]["droplet"]["id"].clone()), (200, many["droplets"][0]["id"].clone()));
    let (s, act) = c.post(&format!("/v2/reserved_ips/{ip}/actions"), json!({ "type": "unassign" })).await?;
    assert_eq!(s, 201, "{act}");

    for path in ["/v2/regions", "/v2/sizes", "/v2/reserved_ips"] {
        let (s, _) = c.get(path).await?;
        assert_eq!(s, 200, "{path}");
    }
    let (s, _, _) = c.send(reqwest::Method::DELETE, &format!("/v2/droplets/{id}"), None).await?;
    assert_eq!(s, 204);
    let (s, gone) = c.get(&format!("/v2/droplets/{id}")).await?;
    assert_eq!((s, gone["id"].as_str()), (404, Some("not_found")));
    assert!(gone["request_id"].is_string(), "errors carry a request ID: {gone}");
    server.assert_conforms();
    Ok(())
}

#[tokio::test]
async fn a_request_the_description_rejects_is_recorded_and_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    if !description_available(&server) {
        return Ok(());
    }
    let c = Client::new(&server);
    // `size` is required by droplet_create; `per_page` may not exceed 200; `tag` is not a parameter.
    let (s, body) =
        c.post("/v2/droplets", json!({ "name": "x", "region": "fra1", "image": "debian-12-x64" })).await?;
    assert_eq!((s, body["id"].as_str()), (400, Some("bad_request")));
    let (s, _) = c.get("/v2/droplets?per_page=500").await?;
    assert_eq!(s, 400);
    let (s, _) = c.get("/v2/droplets?tag=x").await?;
    assert_eq!(s, 400);
    let (s, _) = c
        .post("/v2/droplets", json!({ "name": "bad_name", "size": "s-1vcpu-1gb", "image": "debian-12-x64" }))
        .await?;
    assert_eq!(s, 400, "underscores are not allowed in droplet names");
    let v = server.violations();
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(v[1].problems.iter().any(|p| p.contains("per_page")), "{:?}", v[1]);
    assert!(v[2].problems.iter().any(|p| p.contains("`tag` is not declared")), "{:?}", v[2]);
    assert!(server.droplets().is_empty(), "a refused request changes nothing");
    Ok(())
}

#[tokio::test]
async fn a_response_the_description_rejects_would_be_caught() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    if !description_available(&server) {
        return Ok(());
    }
    let incomplete = json!({ "droplet": { "id": 1, "name": "x", "status": "booting", "kernel": null } });
    let problems = server.check_response("GET", "/v2/droplets/1", 200, &incomplete).unwrap_or_default();
    assert!(problems.iter().any(|p| p.contains("\"memory\" is a required property")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("booting")), "{problems:?}");
    // `kernel: null` is fine once `nullable` is understood; the same body with a good droplet passes.
    let good = server.with_world(|w| {
        let id = w.seed_droplet("a", "fra1", "s-1vcpu-1gb", "debian-12-x64", &[], true);
        w.droplets().into_iter().find(|d| Some(d.id) == id).map(|d| w.droplet_json(&d))
    });
    let good = json!({ "droplet": good });
    assert_eq!(server.check_response("GET", "/v2/droplets/1", 200, &good), Some(vec![]));
    let undeclared =
        server.check_response("GET", "/v2/droplets/1", 200, &json!({ "droplet": 1 })).unwrap_or_default();
    assert!(!undeclared.is_empty());
    Ok(())
}

#[tokio::test]
async fn five_hundred_droplets_list_in_three_pages() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let tags = vec!["peerfleet:network:big".to_string()];
    server.with_world(|w| {
        for i in 0..500 {
            w.seed_droplet(&format!("big-c-{i}"), "fra1", "s-1vcpu-1gb", "debian-12-x64", &tags, true);
        }
    });
    let c = Client::new(&server);
    let mut next = Some(format!("{}/v2/droplets?tag_name=peerfleet:network:big&per_page=200", server.url()));
    let mut seen = 0;
    let mut pages = 0;
    while let Some(url) = next.take() {
        let (s, page) = c.get(&url).await?;
        assert_eq!(s, 200);
        assert_eq!(page["meta"]["total"], 500);
        seen += page["droplets"].as_array().map(Vec::len).unwrap_or(0);
        pages += 1;
        next = page["links"]["pages"]["next"].as_str().map(str::to_string);
        assert!(pages <= 3, "more pages than expected");
    }
    assert_eq!((seen, pages), (500, 3));
    assert_eq!(server.request_count("droplets_list"), 3);
    server.assert_conforms();
    Ok(())
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_the_documented_headers_and_body() -> anyhow::Result<()> {
    let limit = RateLimit {
        per_minute: 3,
        minute: Duration::from_secs(2),
        per_hour: 100,
        hour: Duration::from_secs(60),
    };
    let server = TestServer::start_with(Config { rate_limit: Some(limit), ..Config::default() }).await?;
    let c = Client::new(&server);
    for _ in 0..3 {
        let (s, h, _) = c.send(reqwest::Method::GET, "/v2/regions", None).await?;
        assert_eq!(s, 200);
        assert!(h.contains_key("ratelimit-remaining") && h.contains_key("ratelimit-reset"));
    }
    let (s, h, body) = c.send(reqwest::Method::GET, "/v2/regions", None).await?;
    assert_eq!(s, 429);
    assert_eq!(body["id"], "too_many_requests");
    assert_eq!(h.get("ratelimit-remaining").and_then(|v| v.to_str().ok()), Some("0"));
    let retry: u64 =
        h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(server.throttled(), 1);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (s, _) = c.get("/v2/regions").await?;
    assert_eq!(s, 200, "a slot frees when the oldest request expires");
    server.assert_conforms();
    Ok(())
}

#[tokio::test]
async fn injected_faults_fail_lose_or_delay_responses() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let c = Client::new(&server);
    server.inject("regions_list", Fault::Fail(503), 1);
    let (s, body) = c.get("/v2/regions").await?;
    assert_eq!((s, body["id"].as_str()), (503, Some("server_error")));
    let (s, _) = c.get("/v2/regions").await?;
    assert_eq!(s, 200, "the fault was for one request only");

    server.inject("droplets_create", Fault::FailAfter(500), 1);
    let (s, _) = c
        .post(
            "/v2/droplets",
            json!({ "name": "lost", "region": "fra1", "size": "s-1vcpu-1gb", "image": "debian-12-x64" }),
        )
        .await?;
    assert_eq!(s, 500);
    assert_eq!(server.droplets().len(), 1, "the droplet exists although the client saw an error");

    server.inject("*", Fault::Delay(Duration::from_millis(300)), 1);
    let started = std::time::Instant::now();
    let (s, _) = c.get("/v2/sizes").await?;
    assert_eq!(s, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.request_count("regions_list"), 2);
    server.assert_conforms();
    Ok(())
}

#[tokio::test]
async fn requests_without_the_token_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let resp = reqwest::Client::new().get(format!("{}/v2/regions", server.url())).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await?;
    assert_eq!(body["id"], "unauthorized");
    server.assert_conforms();
    Ok(())
}
