//! Status verdicts on a small network, from what refresh and the engine would report.

use super::*;
use crate::plan::{PlanOptions, Remembered, plan};
use crate::resource::{Container, Desired, Machine};
use crate::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};

fn network() -> Network {
    NetworkBuilder::new("st")
        .genesis(b"{\"chain\":\"status\"}".to_vec())
        .cluster(ClusterBuilder::new("virginia", crate::ProviderKind::Local, "Virginia").nodes(2))
        .service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(ServiceBuilder::new("relay", Role::Relay).containers(2))
        .build()
        .unwrap()
}

/// Everything the spec declares, running and healthy, with probe lines saying so.
fn healthy_world(net: &Network) -> (ActualState, BTreeMap<Address, HealthDetail>) {
    let p = plan(net, &ActualState::default(), &Remembered::default(), &PlanOptions::default()).unwrap().plan;
    let mut actual = ActualState { containers_listed: true, ..Default::default() };
    let mut details = BTreeMap::new();
    for (n, c) in p.changes.iter().enumerate() {
        match &c.after {
            Some(Desired::Machine(m)) => actual.insert(Actual::Machine(Machine {
                id: format!("m{n}"),
                address: m.address.clone(),
                provider: m.provider,
                region: m.region.slug.clone(),
                size: m.size.clone(),
                image: "local".into(),
                tags: m.tags.clone(),
                chain_id: None,
                generation: 0,
                bootstrap: m.bootstrap,
                status: MachineStatus::Running,
                public_ip: None,
                private_ip: None,
            })),
            Some(Desired::Container(s)) => {
                actual.insert(Actual::Container(Container {
                    id: format!("c{n}"),
                    address: s.address.clone(),
                    spec: Some(s.clone()),
                    state: ContainerState::Running,
                    health: Health::Healthy,
                    chain_id: s.chain_id.clone(),
                }));
                let line = match s.role {
                    Role::Relay => format!(
                        r#"{{"healthy":true,"chain_id":"{}","peers":1,"master_peered":true,"peered_since_unix_s":900}}"#,
                        net.chain.id
                    ),
                    _ => format!(r#"{{"healthy":true,"chain_id":"{}","relays":2}}"#, net.chain.id),
                };
                details.insert(
                    s.address.clone(),
                    HealthDetail { started_unix_s: Some(940), last_check_output: Some(format!("{line}\n")) },
                );
            }
            _ => {}
        }
    }
    (actual, details)
}

#[test]
fn a_healthy_network_exits_zero_with_peers_and_uptimes() {
    let net = network();
    let (actual, details) = healthy_world(&net);
    let report = assess(&net, &actual, &details, &net.chain.id, 1000, false);
    assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
    assert!(
        report
            .summary()
            .starts_with("healthy: 2 machines running, 4/4 containers healthy, 2/2 relays peered"),
        "{}",
        report.summary()
    );
    let relay = report.containers.iter().find(|c| c.address == "container.relay[1]").unwrap();
    assert_eq!(
        (relay.master_peered, relay.peered_since_unix_s, relay.uptime_s),
        (Some(true), Some(900), Some(60))
    );
    let master = report.containers.iter().find(|c| c.role == Role::Master).unwrap();
    assert_eq!(master.relays, Some(2));
    let text = report.text();
    assert!(text.contains("master for 1m40s") && text.contains(" 1m00s\n"), "{text}");
}

#[test]
fn ages_read_as_people_count_them() {
    let cases = [(0, "0s"), (59, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (90_000, "1d01h")];
    for (seconds, shown) in cases {
        assert_eq!(age(seconds), shown);
    }
}

#[test]
fn what_a_probe_printed_can_neither_drive_the_terminal_nor_break_the_table() {
    let net = network();
    let (actual, mut details) = healthy_world(&net);
    let relay = Address::container("relay", 0);
    details.get_mut(&relay).unwrap().last_check_output =
        Some(r#"{"healthy":true,"master_peered":true,"chain_id":"\u001b[2Jaéééééééé"}"#.into());
    let text = assess(&net, &actual, &details, &net.chain.id, 1000, false).text();
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("\\u{1b}[2Jaééééééé! "), "{text}");
    assert!(text.contains("reports chain \\u{1b}[2Jaéééééééé, not the pinned one"), "{text}");
}

#[test]
fn a_dead_or_missing_relay_degrades_the_network_by_name() {
    let net = network();
    let (mut actual, details) = healthy_world(&net);
    if let Some(Actual::Container(c)) = actual.objects.get_mut(&Address::container("relay", 0)) {
        c.state = ContainerState::Exited;
    }
    actual.objects.remove(&Address::container("relay", 1));
    let report = assess(&net, &actual, &details, &net.chain.id, 1000, false);
    assert_eq!(report.exit_code(), 2);
    assert_eq!(
        report.problems,
        ["relay-1 (container.relay[0]): exited", "relay-2 (container.relay[1]): missing"],
        "{}",
        report.summary()
    );
    // The exited relay's last probe line said peered: that is history, not a fact about it now.
    let dead = &report.containers.iter().find(|c| c.name == "relay-1").unwrap();
    assert_eq!((dead.master_peered, dead.uptime_s, &dead.chain_id), (None, None, &None), "{dead:?}");
    assert!(report.text().lines().all(|l| l == l.trim_end()), "{}", report.text());
}

#[test]
fn a_relay_on_another_chain_or_refused_shows_why() {
    let net = network();
    let (mut actual, mut details) = healthy_world(&net);
    let relay = Address::container("relay", 0);
    let other = ChainId::of(b"other");
    details.get_mut(&relay).unwrap().last_check_output = Some(format!(
        "{{\"healthy\":false,\"reason\":\"not peered with a master (last refusal: chain ID mismatch)\",\
         \"chain_id\":\"{other}\",\"master_peered\":false,\"last_refusal\":\"chain ID mismatch\"}}"
    ));
    if let Some(Actual::Container(c)) = actual.objects.get_mut(&relay) {
        c.health = Health::Unhealthy;
    }
    let report = assess(&net, &actual, &details, &net.chain.id, 1000, false);
    assert_eq!(report.exit_code(), 2);
    let r = report.containers.iter().find(|c| c.address == relay.to_string()).unwrap();
    assert_eq!(r.chain_matches, Some(false));
    assert_eq!(r.last_refusal.as_deref(), Some("chain ID mismatch"));
    assert!(report.problems[0].contains("reports chain"), "{:?}", report.problems);
}

#[test]
fn probe_lines_are_found_among_other_output_and_other_images_are_judged_by_health_alone() {
    assert_eq!(ProbeLine::find("starting\n{\"healthy\":true,\"peers\":3}\n").unwrap().peers, Some(3));
    assert_eq!(ProbeLine::find("healthy: relay on chain abc\n"), None);
    let net = network();
    let (actual, mut details) = healthy_world(&net);
    for d in details.values_mut() {
        d.last_check_output = Some("ok\n".into());
    }
    let report = assess(&net, &actual, &details, &net.chain.id, 1000, false);
    assert_eq!(report.exit_code(), 0);
    assert!(report.containers.iter().all(|c| c.chain_id.is_none()));
}
