//! Creates, refreshes, updates and deletes of droplets, firewalls, reserved IPs and tags.

use super::*;

#[tokio::test]
async fn a_machine_is_created_with_its_tags_name_region_size_image_and_user_data() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("prod", "frankfurt", 0);
        s.chain_id = Some(ChainId::of(b"genesis"));
        let m = p.create_machine(&s, &ctx(PerMachinePki)).await?;
        assert_eq!(m.address, Address::machine("frankfurt", 0));
        assert_eq!(m.status, MachineStatus::Running, "create returns once the droplet is active");
        assert_eq!(
            (m.region.as_str(), m.size.as_str(), m.image.as_str()),
            ("fra1", "s-1vcpu-1gb", "debian-12-x64")
        );
        assert_eq!(m.tags, s.tags);
        assert_eq!(m.chain_id, s.chain_id);
        assert_eq!((m.generation, m.bootstrap), (0, 1));
        only_documentation_addresses(&m);

        let droplets = server.droplets();
        assert_eq!(droplets.len(), 1);
        let d = &droplets[0];
        assert_eq!(d.name, "prod-frankfurt-0");
        let tags: BTreeSet<&str> = d.tags.iter().map(String::as_str).collect();
        let chain = format!("peerfleet:chain:{}", ChainId::of(b"genesis"));
        for t in [
            "peer_cluster",
            "relay",
            "peerfleet:network:prod",
            "peerfleet:gen:0",
            "peerfleet:boot:1",
            "peerfleet:fw:prod:fra1",
            chain.as_str(),
        ] {
            assert!(tags.contains(t), "missing tag {t} in {tags:?}");
        }
        let user_data = d.user_data.clone().unwrap_or_default();
        assert!(user_data.starts_with("#cloud-config\n"), "{}", &user_data[..40.min(user_data.len())]);
        assert!(user_data.contains("/etc/docker/tls/server-key.pem"));

        let inv = p.inventory("prod", "fra1").await?;
        assert_eq!(inv.machines, vec![m]);
        assert!(p.inventory("prod", "ams3").await?.machines.is_empty(), "inventories are per region");
        assert!(p.inventory("other", "fra1").await?.machines.is_empty(), "and per network");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn concurrent_creates_with_identical_requests_share_multi_creates_of_at_most_ten() -> anyhow::Result<()>
{
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let made =
            create_all(&p, (0..12).map(|i| spec("net", "sydney", i)).collect(), ctx(SharedPki)).await?;
        assert_eq!(made.len(), 12);
        let addresses: BTreeSet<Address> = made.iter().map(|m| m.address.clone()).collect();
        assert_eq!(addresses.len(), 12, "each machine gets its own droplet");
        assert_eq!(server.droplets().len(), 12);
        assert_eq!(server.request_count("droplets_create"), 2, "12 names = one request of 10 + one of 2");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn machines_with_their_own_keys_get_one_request_each_but_share_lookup_and_polls() -> anyhow::Result<()>
{
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        create_all(&p, (0..30).map(|i| spec("net", "london", i)).collect(), ctx(PerMachinePki)).await?;
        assert_eq!(server.request_count("droplets_create"), 30);
        let lists = server.request_count("droplets_list");
        assert!(
            lists <= 12,
            "one shared look-up and a few shared polls, not per droplet: {lists} list requests"
        );
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn refresh_of_500_droplets_takes_three_list_requests() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let tags = vec![
            "peerfleet:network:big".to_string(),
            "peerfleet:gen:0".to_string(),
            "peerfleet:boot:1".to_string(),
            "peer_cluster".to_string(),
        ];
        server.with_world(|w| {
            for i in 0..500 {
                let region = if i % 5 == 0 { "ams3" } else { "fra1" };
                w.seed_droplet(
                    &format!("big-c{}-{i}", i % 5),
                    region,
                    "s-1vcpu-1gb",
                    "debian-12-x64",
                    &tags,
                    true,
                );
            }
            // Not ours: no network tag, or another network's.
            w.seed_droplet(
                "big-c1-9999",
                "fra1",
                "s-1vcpu-1gb",
                "debian-12-x64",
                &["peer_cluster".to_string()],
                true,
            );
            w.seed_droplet(
                "other-c1-0",
                "fra1",
                "s-1vcpu-1gb",
                "debian-12-x64",
                &["peerfleet:network:other".to_string()],
                true,
            );
        });
        let p = provider(&server)?;
        let (fra, ams) = tokio::join!(p.inventory("big", "fra1"), p.inventory("big", "ams3"));
        let (fra, ams) = (fra?, ams?);
        assert_eq!((fra.machines.len(), ams.machines.len()), (400, 100));
        assert!(fra.machines.iter().all(|m| m.tags == BTreeSet::from(["peer_cluster".to_string()])));
        assert_eq!(
            server.request_count("droplets_list"),
            3,
            "500 droplets = 3 pages of 200, shared by both regions"
        );
        assert_eq!(server.request_count("firewalls_list"), 1);
        assert_eq!(server.request_count("reservedIPs_list"), 1);
        assert_eq!(server.total_requests(), 5);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn update_changes_tags_in_place_and_resizes_through_power_off_and_on() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let before = spec("upd", "frankfurt", 0);
        let m = p.create_machine(&before, &ctx(PerMachinePki)).await?;
        let mut after = before.clone();
        after.tags = BTreeSet::from(["peer_cluster".to_string(), "seed".to_string()]);
        after.size = "s-2vcpu-4gb".into();
        let updated = p.update_machine(&m, &after).await?;
        assert_eq!(updated.id, m.id, "updated in place");
        assert_eq!(updated.tags, after.tags);
        assert_eq!(updated.size, "s-2vcpu-4gb");
        assert_eq!(updated.status, MachineStatus::Running, "powered on again after the resize");
        assert_eq!(server.request_count("dropletActions_post"), 3, "power_off, resize, power_on");
        let d = &server.droplets()[0];
        assert!(d.tags.contains(&"peerfleet:network:upd".to_string()), "ownership tags are never removed");
        assert!(!d.tags.contains(&"relay".to_string()));
        // Nothing left to do: a second update sends no action.
        p.update_machine(&updated, &after).await?;
        assert_eq!(server.request_count("dropletActions_post"), 3);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn delete_cleans_up_machines_firewalls_and_reserved_ips() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let fw_spec = firewall_spec("del");
        let fw = p.create_firewall(&fw_spec).await?;
        let m = p.create_machine(&spec("del", "frankfurt", 0), &ctx(PerMachinePki)).await?;
        let ip_spec = StableIpSpec {
            address: Address::stable_ip("frankfurt", 0),
            network: "del".into(),
            machine: m.address.clone(),
            provider: ProviderKind::DigitalOcean,
            region: "fra1".into(),
        };
        let ip = p.create_stable_ip(&ip_spec, &m).await?;
        assert_eq!(ip.machine_id.as_deref(), Some(m.id.as_str()));
        assert!(
            ip.ip.starts_with("192.0.2.")
                || ip.ip.starts_with("198.51.100.")
                || ip.ip.starts_with("203.0.113.")
        );
        // Creating it again adopts the one already assigned.
        assert_eq!(p.create_stable_ip(&ip_spec, &m).await?, ip);

        let inv = p.inventory("del", "fra1").await?;
        assert_eq!((inv.machines.len(), inv.firewalls.len(), inv.stable_ips.len()), (1, 1, 1));
        assert_eq!(inv.firewalls[0].id, fw.id);
        assert_eq!(inv.stable_ips[0], ip);

        p.delete_stable_ip(&ip).await?;
        p.delete_machine(&m).await?;
        p.delete_firewall(&fw).await?;
        assert!(server.droplets().is_empty());
        assert!(server.firewalls().is_empty());
        assert!(server.reserved_ips().is_empty());
        let inv = p.inventory("del", "fra1").await?;
        assert!(inv.machines.is_empty() && inv.firewalls.is_empty() && inv.stable_ips.is_empty());
        // Deleting what is already gone succeeds.
        p.delete_stable_ip(&ip).await?;
        p.delete_machine(&m).await?;
        p.delete_firewall(&fw).await?;
        server.assert_conforms();
        Ok(())
    })
    .await
}

/// Tags droplet `id` with `tag` through the API, as a person with `doctl` would.
async fn tag_by_hand(server: &TestServer, id: &str, tag: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        http.post(format!("{}{path}", server.url())).bearer_auth(server.token()).json(&body).send()
    };
    post("/v2/tags".into(), serde_json::json!({ "name": tag })).await?.error_for_status()?;
    let resources = serde_json::json!({ "resources": [{ "resource_id": id, "resource_type": "droplet" }] });
    post(format!("/v2/tags/{tag}/resources"), resources).await?.error_for_status()?;
    Ok(())
}

#[tokio::test]
async fn a_tag_added_by_hand_survives_an_update_and_is_never_reported() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let before = spec("hand", "frankfurt", 0);
        let m = p.create_machine(&before, &ctx(PerMachinePki)).await?;
        tag_by_hand(&server, &m.id, "owner-alice").await?;

        let inv = p.inventory("hand", "fra1").await?;
        assert_eq!(inv.machines[0].tags, before.tags, "a hand-added tag is no deploy tag");
        let mut after = before.clone();
        after.tags = BTreeSet::from(["peer_cluster".to_string(), "seed".to_string()]);
        let updated = p.update_machine(&inv.machines[0], &after).await?;
        assert_eq!(updated.tags, after.tags);
        let d = &server.droplets()[0];
        assert!(d.tags.contains(&"owner-alice".to_string()), "the hand-added tag is gone: {:?}", d.tags);
        assert!(d.tags.contains(&"seed".to_string()) && !d.tags.contains(&"relay".to_string()));
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reordered_firewall_sources_produce_no_diff() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let spec = firewall_spec("reorder");
        p.create_firewall(&spec).await?;
        let inv = p.inventory("reorder", "fra1").await?;
        let actual = inv.firewalls.first().ok_or_else(|| anyhow::anyhow!("the firewall is listed"))?;
        // The same access, written in another order: rules reversed, each rule's sources reversed.
        let mut reordered = spec.clone();
        reordered.rules.reverse();
        for r in &mut reordered.rules {
            r.sources.reverse();
        }
        assert_ne!(reordered.rules, spec.rules, "the test must reorder something");
        let reasons = peerfleet_core::plan::diff::firewall(&reordered, actual);
        assert!(reasons.is_empty(), "{reasons:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn firewalls_carry_the_spec_rules_and_allow_all_outbound_traffic() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = firewall_spec("fw");
        let fw = p.create_firewall(&s).await?;
        let mut want = s.rules.clone();
        want.sort();
        assert_eq!(fw.rules, want);
        let raw = &server.firewalls()[0];
        assert_eq!(raw["tags"], serde_json::json!(["peerfleet:fw:fw:fra1"]));
        let outbound = raw["outbound_rules"].as_array().cloned().unwrap_or_default();
        for proto in ["tcp", "udp", "icmp"] {
            assert!(
                outbound
                    .iter()
                    .any(|r| r["protocol"] == proto && r["destinations"]["addresses"][0] == "0.0.0.0/0"),
                "{outbound:?}"
            );
        }
        // Creating again adopts; a changed spec is converged in place.
        s.rules.push(FirewallRule {
            protocol: Protocol::Udp,
            port: 26656,
            sources: vec!["0.0.0.0/0".into()],
        });
        let again = p.create_firewall(&s).await?;
        assert_eq!(again.id, fw.id);
        assert_eq!(again.rules.len(), 3);
        assert_eq!(server.request_count("firewalls_create"), 1);
        assert_eq!(server.request_count("firewalls_update"), 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}
