//! Spec parsing and validation, through the TOML path: every check reports file, line, column and
//! field. (The builder's own tests are in `builder.rs`, editing in `edit.rs`.)

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;
use crate::network::{City, HealthCheck, Image, ProviderKind, Region, RestartPolicy, Role, Strategy};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

fn examples() -> PathBuf {
    PathBuf::from(EXAMPLES)
}

/// A valid spec of lines 1..=13; tests append to it, so what they add starts on line 14.
pub(super) const BASE: &str = r#"name = "t"
[chain]
genesis = "genesis.json"
[[clusters]]
name = "a"
provider = "local"
region = "Frankfurt"
[[services]]
name = "genesis"
role = "genesis"
[[services]]
name = "master"
role = "master"
"#;

pub(super) fn parse_text(text: &str) -> Result<Network, SpecErrors> {
    parse(text, Path::new("net.toml"), &examples())
}

/// The messages for `text`, which must be invalid.
pub(super) fn errors(text: &str) -> Vec<String> {
    match parse_text(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

/// The one message for `text`.
fn error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

pub(super) fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn base_spec_is_valid_with_documented_defaults() {
    let n = parse_text(BASE).unwrap();
    assert_eq!(n.name, "t");
    let c = &n.clusters[0];
    assert_eq!(c.region, Region { slug: "frankfurt".into(), city: Some(City::Frankfurt) });
    assert_eq!((c.size.as_str(), c.image.as_deref(), c.nodes), ("virtual", None, 1));
    assert_eq!(c.tags.iter().collect::<Vec<_>>(), ["peer_cluster"]);
    let s = &n.services[0];
    assert_eq!((s.role, s.containers, s.strategy), (Role::Genesis, 1, Strategy::EmptiestNode));
    assert_eq!((&s.image, s.restart, &s.health), (&Image::Reference, RestartPolicy::Always, &None));
    assert!(s.deploy_tags.is_empty() && s.env.is_empty() && s.ports.is_empty());
    assert_eq!(n.access, Default::default());
}

#[test]
fn nine_regions_example_parses_to_nine_cities_on_two_clouds() {
    let n = load(&examples().join("nine_regions.toml")).unwrap();
    assert_eq!(n.name, "nine-regions");
    let regions: Vec<(ProviderKind, &str, Option<City>)> =
        n.clusters.iter().map(|c| (c.provider, c.region.slug.as_str(), c.region.city)).collect();
    use ProviderKind::{Aws, DigitalOcean};
    assert_eq!(
        regions,
        [
            (Aws, "cn-north-1", Some(City::NorthernChina)),
            (Aws, "us-east-1", Some(City::Virginia)),
            (Aws, "us-west-2", Some(City::Oregon)),
            (Aws, "sa-east-1", Some(City::SaoPaulo)),
            (DigitalOcean, "sgp1", Some(City::Singapore)),
            (DigitalOcean, "syd1", Some(City::Sydney)),
            (DigitalOcean, "fra1", Some(City::Frankfurt)),
            (DigitalOcean, "ams3", Some(City::Amsterdam)),
            (DigitalOcean, "lon1", Some(City::London)),
        ]
    );
    assert!(n.clusters.iter().all(|c| c.nodes == 1 && c.tags.contains("peer_cluster")));
    assert_eq!(n.cluster("northern-china").unwrap().profile.as_deref(), Some("china"));
    assert_eq!(n.access.admin_cidrs, ["203.0.113.0/24"]);
    let relay = n.service("relay").unwrap();
    assert_eq!((relay.role, relay.containers, relay.strategy), (Role::Relay, 9, Strategy::EmptiestNode));
    assert!(relay.deploy_tags.contains("peer_cluster"));
    assert_eq!(n.service_of_role(Role::Genesis).unwrap().containers, 1);
    assert_eq!(n.service_of_role(Role::Master).unwrap().containers, 1);
}

#[test]
fn local_example_is_the_same_network_on_local_nodes() {
    let cloud = load(&examples().join("nine_regions.toml")).unwrap();
    let local = load(&examples().join("nine_regions_local.toml")).unwrap();
    assert!(local.clusters.iter().all(|c| c.provider == ProviderKind::Local && c.size == "virtual"));
    let cities = |n: &Network| n.clusters.iter().map(|c| c.region.city).collect::<Vec<_>>();
    assert_eq!(cities(&local), cities(&cloud));
    let slugs: Vec<&str> = local.clusters.iter().map(|c| c.region.slug.as_str()).collect();
    assert_eq!(slugs[0], "northern-china");
    assert_eq!(slugs[3], "sao-paulo");
    assert_eq!(local.services, cloud.services);
    assert_eq!(local.chain, cloud.chain);
}

#[test]
fn chain_id_is_the_sha256_of_the_genesis_file_bytes() {
    let path = examples().join("genesis.json");
    let bytes = std::fs::read(&path).unwrap();
    let n = load(&examples().join("nine_regions.toml")).unwrap();
    assert_eq!(n.chain.id.as_str(), hex::encode(Sha256::digest(&bytes)));
    assert_eq!(n.chain.genesis, bytes);
    assert_eq!(n.chain.source.as_deref(), Some(path.as_path()));
}

#[test]
fn a_typo_in_an_enum_value_names_the_choices_at_its_position() {
    let text = with("[[services]]\nname = \"relay\"\nrole = \"relay\"\nstrategy = \"emptyest\"\n");
    assert_eq!(
        error(&text),
        "net.toml:17:12: services[2].strategy: expected one of emptiest_node, high_availability, \
         every_node, region_spread, found \"emptyest\""
    );
}

#[test]
fn an_unknown_key_is_an_error_at_the_key() {
    let text = with("[[services]]\nname = \"relay\"\nrole = \"relay\"\nstrategyy = \"every_node\"\n");
    let e = parse_text(&text).unwrap_err();
    let e = e.first();
    assert_eq!((e.line(), e.column(), e.path()), (Some(17), Some(1), "services[2].strategyy"));
    assert!(matches!(e.kind(), SpecErrorKind::Schema { .. }));
    assert!(
        e.to_string().starts_with("net.toml:17:1: services[2].strategyy: unknown field `strategyy`"),
        "{e}"
    );

    let top = parse_text("nmae = \"t\"\n").unwrap_err();
    assert!(top.first().to_string().starts_with("net.toml:1:1: nmae: unknown field `nmae`"), "{top}");
    let nested = parse_text(&with("[services.health]\ncommand = [\"x\"]\nretry = 3\n")).unwrap_err();
    assert!(nested.first().to_string().starts_with("net.toml:16:1: services[1].health.retry: unknown field"));
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_at_the_value() {
    let e = error(&with(
        "[[clusters]]\nname = \"b\"\nprovider = \"local\"\nregion = \"London\"\nnodes = \"two\"\n",
    ));
    assert!(e.starts_with("net.toml:18:9: clusters[1].nodes: invalid type: string \"two\""), "{e}");
}

#[test]
fn a_toml_syntax_error_is_located_and_stops_parsing() {
    let e = error("name = \"t\"\n[chain\ngenesis = 3\n");
    assert!(e.starts_with("net.toml:2:7: invalid TOML: "), "{e}");
}

#[test]
fn duplicate_names_point_at_the_second_and_name_the_first() {
    let text = with("[[clusters]]\nname = \"a\"\nprovider = \"local\"\nregion = \"London\"\n");
    assert_eq!(
        error(&text),
        "net.toml:15:8: clusters[1].name: duplicate cluster name \"a\"; first declared at clusters[0].name (line 5)"
    );
    let text = with("[[services]]\nname = \"master\"\nrole = \"relay\"\n");
    assert_eq!(
        error(&text),
        "net.toml:15:8: services[2].name: duplicate service name \"master\"; first declared at services[1].name \
         (line 12)"
    );
}

#[test]
fn exactly_one_genesis_and_one_master() {
    let text = BASE.replace("role = \"genesis\"", "role = \"relay\"");
    assert_eq!(error(&text), "net.toml: services: expected exactly one genesis service, found 0");
    let text = with("[[services]]\nname = \"master2\"\nrole = \"master\"\n");
    assert_eq!(
        error(&text),
        "net.toml:16:8: services[2].role: expected exactly one master service, found 2 (the first is \
         services[1] (line 13))"
    );
}

#[test]
fn a_misspelt_role_is_one_error_not_two() {
    let text = BASE.replace("role = \"genesis\"", "role = \"genesys\"");
    assert_eq!(
        error(&text),
        "net.toml:10:8: services[0].role: expected one of genesis, master, relay, found \"genesys\""
    );
}

#[test]
fn a_city_the_provider_does_not_serve_names_who_serves_it() {
    let text = with("[access]\nadmin_cidrs = [\"203.0.113.0/24\"]\n").replace(
        "provider = \"local\"\nregion = \"Frankfurt\"",
        "provider = \"aws\"\nregion = \"Amsterdam\"",
    );
    assert_eq!(
        error(&text),
        "net.toml:7:10: clusters[0].region: region \"Amsterdam\" is not served by aws; it is served by: \
         digitalocean (ams3), local (amsterdam)"
    );
}

#[test]
fn an_unknown_region_lists_what_the_provider_accepts() {
    let e = error(&BASE.replace("region = \"Frankfurt\"", "region = \"Atlantis\""));
    assert!(
        e.starts_with("net.toml:7:10: clusters[0].region: expected one of the nine cities (Northern China,")
    );
    assert!(e.contains("a local region (northern-china, singapore,"), "{e}");
    assert!(e.ends_with("found \"Atlantis\""), "{e}");
}

#[test]
fn deploy_tags_that_match_no_cluster_are_an_error() {
    let text = with("[[services]]\nname = \"relay\"\nrole = \"relay\"\ndeploy_tags = [\"gpu\"]\n");
    assert_eq!(
        error(&text),
        "net.toml:17:15: services[2].deploy_tags: deploy tags [gpu] match no cluster's tags"
    );
    // Without containers nothing needs a node, so the tags may match nothing yet.
    let idle =
        with("[[services]]\nname = \"relay\"\nrole = \"relay\"\ndeploy_tags = [\"gpu\"]\ncontainers = 0\n");
    assert!(parse_text(&idle).is_ok());
}

#[test]
fn deploy_tags_matching_only_empty_clusters_are_an_error() {
    let text = BASE.replace("region = \"Frankfurt\"", "region = \"Frankfurt\"\nnodes = 0");
    let errors = errors(&text);
    assert_eq!(
        errors,
        [
            "net.toml:9:1: services[0].deploy_tags: deploy tags [] match only clusters with 0 nodes",
            "net.toml:12:1: services[1].deploy_tags: deploy tags [] match only clusters with 0 nodes",
        ]
    );
}

#[test]
fn counts_out_of_range_are_errors_at_the_count() {
    let text = with(
        "[[clusters]]\nname = \"b\"\nprovider = \"local\"\nregion = \"London\"\nnodes = 1001\n\
         [[services]]\nname = \"relay\"\nrole = \"relay\"\ncontainers = -1\n\
         [[services]]\nname = \"more\"\nrole = \"relay\"\ncontainers = 100001\n",
    );
    assert_eq!(
        errors(&text),
        [
            "net.toml:18:9: clusters[1].nodes: expected 0..=1000, found 1001",
            "net.toml:22:14: services[2].containers: expected 0..=100000, found -1",
            "net.toml:26:14: services[3].containers: expected 0..=100000, found 100001",
        ]
    );
    let text = BASE.replace("role = \"master\"", "role = \"master\"\ncontainers = 2");
    assert_eq!(
        error(&text),
        "net.toml:14:14: services[1].containers: expected 1 (a master service runs exactly one container), found 2"
    );
}

#[test]
fn scaling_an_every_node_service_is_an_error() {
    let text =
        with("[[services]]\nname = \"relay\"\nrole = \"relay\"\nstrategy = \"every_node\"\ncontainers = 3\n");
    assert_eq!(
        error(&text),
        "net.toml:18:14: services[2].containers: scaling an every_node service: it runs one container on every \
         matching node, so its count follows the nodes; remove `containers` or choose another strategy"
    );
}

#[test]
fn every_node_runs_one_container_per_matching_node() {
    let text = BASE.replace("region = \"Frankfurt\"", "region = \"Frankfurt\"\nnodes = 2")
        + "[[clusters]]\nname = \"b\"\nprovider = \"local\"\nregion = \"London\"\nnodes = 3\n\
           [[clusters]]\nname = \"c\"\nprovider = \"local\"\nregion = \"Sydney\"\nnodes = 4\ntags = [\"other\"]\n\
           [[services]]\nname = \"relay\"\nrole = \"relay\"\nstrategy = \"every_node\"\ndeploy_tags = [\"peer_cluster\"]\n";
    let n = parse_text(&text).unwrap();
    // Clusters a (2 nodes) and b (3) carry peer_cluster; c (4) does not.
    assert_eq!(n.service("relay").unwrap().containers, 5);
}

#[test]
fn genesis_and_master_cannot_be_every_node() {
    let text = BASE.replace("role = \"genesis\"", "role = \"genesis\"\nstrategy = \"every_node\"");
    assert_eq!(
        error(&text),
        "net.toml:11:12: services[0].strategy: expected emptiest_node, high_availability or region_spread (a \
         genesis service runs exactly one container), found \"every_node\""
    );
}

#[test]
fn env_keys_are_checked_and_role_variables_are_reserved() {
    let text = with("env = { CHAIN_ID = \"x\", log = \"y\", LOG_LEVEL = \"info\" }\n");
    assert_eq!(
        errors(&text),
        [
            "net.toml:14:9: services[1].env.CHAIN_ID: CHAIN_ID is set by peerfleet for the service's role and cannot \
             be overridden",
            "net.toml:14:25: services[1].env.log: expected a variable name matching ^[A-Z_][A-Z0-9_]*$, found \"log\"",
        ]
    );
    let n = parse_text(&with("env = { LOG_LEVEL = \"info\" }\n")).unwrap();
    assert_eq!(n.services[1].env["LOG_LEVEL"], "info");
}

#[test]
fn ports_must_be_in_range_and_unique() {
    let text = with("ports = [26656, 0, 26656, 70000]\n");
    assert_eq!(
        errors(&text),
        [
            "net.toml:14:17: services[1].ports[1]: expected a port in 1..=65535, found 0",
            "net.toml:14:20: services[1].ports[2]: expected each port once (26656 is already at services[1].ports[0]), \
             found 26656",
            "net.toml:14:27: services[1].ports[3]: expected a port in 1..=65535, found 70000",
        ]
    );
    assert_eq!(parse_text(&with("ports = [26656, 26657]\n")).unwrap().services[1].ports, [26656, 26657]);
}

#[test]
fn deploy_tags_may_not_use_the_ownership_prefix() {
    let text =
        BASE.replace("region = \"Frankfurt\"", "region = \"Frankfurt\"\ntags = [\"peerfleet:network:x\"]");
    let e = errors(&text);
    assert!(
        e[0].starts_with("net.toml:8:9: clusters[0].tags[0]: expected a tag not starting with `peerfleet:`"),
        "{e:?}"
    );
}

#[test]
fn tags_follow_the_digitalocean_charset() {
    let text = BASE.replace("region = \"Frankfurt\"", "region = \"Frankfurt\"\ntags = [\"ok\", \"not ok\"]");
    let e = errors(&text);
    assert_eq!(
        e[0],
        "net.toml:8:15: clusters[0].tags[1]: expected a tag matching ^[A-Za-z0-9_:-]{1,64}$, found \"not ok\""
    );
}

#[test]
fn cloud_clusters_require_admin_cidrs() {
    let text = BASE.replace("provider = \"local\"", "provider = \"digitalocean\"");
    assert_eq!(
        error(&text),
        "net.toml: access.admin_cidrs: required (non-empty) because a cluster is on digitalocean: it says who may \
         reach the machines' Docker API port"
    );
    let text =
        format!("{}[access]\nadmin_cidrs = []\n", BASE.replace("provider = \"local\"", "provider = \"aws\""));
    assert!(
        error(&text).starts_with(
            "net.toml:15:15: access.admin_cidrs: required (non-empty) because a cluster is on aws"
        )
    );
}

#[test]
fn admin_cidrs_open_to_the_world_need_force() {
    let text = with("[access]\nadmin_cidrs = [\"0.0.0.0/0\", \"::/0\"]\n");
    assert_eq!(
        errors(&text),
        [
            "net.toml:15:16: access.admin_cidrs[0]: 0.0.0.0/0 opens the Docker API and SSH ports to the whole \
             internet; set access.force_open_admin = true if that is really meant",
            "net.toml:15:29: access.admin_cidrs[1]: ::/0 opens the Docker API and SSH ports to the whole internet; set \
             access.force_open_admin = true if that is really meant",
        ]
    );
    let forced =
        parse_text(&with("[access]\nadmin_cidrs = [\"0.0.0.0/0\"]\nforce_open_admin = true\nssh = true\n"))
            .unwrap();
    assert_eq!(forced.access, crate::network::Access { admin_cidrs: vec!["0.0.0.0/0".into()], ssh: true });
}

#[test]
fn malformed_cidrs_are_errors_at_the_cidr() {
    let text = with("[access]\nadmin_cidrs = [\"203.0.113.0/24\", \"203.0.113.9/24\", \"10.0.0.1\"]\n");
    assert_eq!(
        errors(&text),
        [
            "net.toml:15:34: access.admin_cidrs[1]: expected a network address with no host bits set (did you mean \
             203.0.113.0/24?), found \"203.0.113.9/24\"",
            "net.toml:15:52: access.admin_cidrs[2]: expected an IPv4 or IPv6 CIDR such as 203.0.113.0/24, found \
             \"10.0.0.1\"",
        ]
    );
}

#[test]
fn profile_is_for_aws_only() {
    let text = BASE.replace("region = \"Frankfurt\"", "region = \"Frankfurt\"\nprofile = \"china\"");
    assert_eq!(
        error(&text),
        "net.toml:8:11: clusters[0].profile: profile is only for aws clusters (a named AWS credentials profile), \
         not local"
    );
}

#[test]
fn a_missing_genesis_file_names_the_field_and_the_resolved_path() {
    let text = BASE.replace("genesis.json", "nowhere.json");
    let e = parse_text(&text).unwrap_err();
    let expected_path = examples().join("nowhere.json");
    let e = e.first();
    assert_eq!((e.line(), e.column(), e.path()), (Some(3), Some(11), "chain.genesis"));
    assert!(
        e.to_string().starts_with(&format!(
            "net.toml:3:11: chain.genesis: cannot read the genesis file {}: ",
            expected_path.display()
        )),
        "{e}"
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = with("[[clusters]]\nname = \"b\"\nprovider = \"local\"\n");
    assert_eq!(error(&text), "net.toml:14:1: clusters[1].region: required key is missing");
    assert_eq!(
        errors("[chain]\ngenesis = \"genesis.json\"\n")[..2],
        [
            "net.toml: name: required key is missing",
            "net.toml: services: expected exactly one genesis service, found 0"
        ]
    );
    assert_eq!(
        error(&BASE.replace("genesis = \"genesis.json\"\n", "")),
        "net.toml:2:1: chain.genesis: required key is missing"
    );
}

#[test]
fn all_semantic_errors_are_reported_at_once() {
    let text = r#"name = "Nine"
[chain]
genesis = "genesis.json"
[[clusters]]
name = "a"
provider = "local"
region = "Atlantis"
nodes = -1
[[services]]
name = "relay"
role = "relay"
restart = "sometimes"
"#;
    let e = parse_text(text).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @r#"
    net.toml:1:8: name: expected a name matching ^[a-z][a-z0-9-]{0,31}$, found "Nine"
    net.toml:7:10: clusters[0].region: expected one of the nine cities (Northern China, Singapore, Sydney, Frankfurt, Amsterdam, London, Virginia, Oregon, São Paulo) or a local region (northern-china, singapore, sydney, frankfurt, amsterdam, london, virginia, oregon, sao-paulo), found "Atlantis"
    net.toml:8:9: clusters[0].nodes: expected 0..=1000, found -1
    net.toml:12:11: services[0].restart: expected one of off, on-failure, always, found "sometimes"
    net.toml: services: expected exactly one genesis service, found 0
    net.toml: services: expected exactly one master service, found 0
    "#);
}

#[test]
fn images_and_health_checks_are_read_with_defaults() {
    let text = with(
        "image = \"ghcr.io/acme/node:1.2\"\nrestart = \"on-failure\"\n[services.health]\ncommand = [\"/bin/probe\", \"--fast\"]\ninterval_ms = 500\n",
    );
    let n = parse_text(&text).unwrap();
    let master = n.service("master").unwrap();
    assert_eq!(master.image, Image::Named("ghcr.io/acme/node:1.2".into()));
    assert_eq!(master.restart, RestartPolicy::OnFailure);
    assert_eq!(
        master.health,
        Some(HealthCheck {
            command: vec!["/bin/probe".into(), "--fast".into()],
            interval_ms: 500,
            timeout_ms: 3000,
            retries: 3
        })
    );
    let reference = parse_text(&with("image = \"peerfleet-node\"\n")).unwrap();
    assert_eq!(reference.service("master").unwrap().image, Image::Reference);
    let bad = with("[services.health]\ncommand = []\ntimeout_ms = 0\n");
    assert_eq!(
        errors(&bad),
        [
            "net.toml:15:11: services[1].health.command: expected a non-empty command, found []",
            "net.toml:16:14: services[1].health.timeout_ms: expected 1..=3600000 milliseconds, found 0",
        ]
    );
}

#[test]
fn load_names_an_unreadable_spec_file() {
    let e = load(Path::new("/nonexistent/net.toml")).unwrap_err();
    assert!(e.first().to_string().starts_with("/nonexistent/net.toml: cannot read the spec file: "), "{e}");
}
