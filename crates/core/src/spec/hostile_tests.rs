//! Hostile specs: inputs that respect the TOML grammar but try to make validation slow, noisy,
//! or wrong. Each test pins a limit or a refusal of issue 13.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// A valid spec with one cluster; tests append services and clusters to it.
const BASE: &str = r#"name = "t"
[chain]
genesis = "genesis.json"
[[clusters]]
name = "a"
provider = "local"
region = "Frankfurt"
nodes = 2
[[services]]
name = "genesis"
role = "genesis"
[[services]]
name = "master"
role = "master"
"#;

fn parse_text(text: &str) -> Result<Network, SpecErrors> {
    parse(text, Path::new("net.toml"), &PathBuf::from(EXAMPLES))
}

fn errors(text: &str) -> SpecErrors {
    parse_text(text).err().unwrap_or_else(|| panic!("expected errors for:\n{text}"))
}

fn relay(name: &str, containers: u32) -> String {
    format!("[[services]]\nname = \"{name}\"\nrole = \"relay\"\ncontainers = {containers}\n")
}

#[test]
fn a_service_named_like_another_services_container_is_refused() {
    let text = format!("{BASE}{}{}", relay("relay", 3), relay("relay-2", 1));
    let e = errors(&text);
    let message = e.first().to_string();
    assert!(message.starts_with("net.toml:20:8: services[3].name:"), "{message}");
    assert!(message.contains("container 2 of service \"relay\" is called \"relay-2\""), "{message}");
    // relay-4 is past relay's last container (3): no clash, and leading zeros never name a slot.
    for name in ["relay-4", "relay-02", "relay-0"] {
        assert!(parse_text(&format!("{BASE}{}{}", relay("relay", 3), relay(name, 1))).is_ok(), "{name}");
    }
}

#[test]
fn network_totals_are_refused_at_the_entry_that_crosses_them() {
    let mut text = BASE.replace("nodes = 2", "nodes = 1000");
    for i in 0..5 {
        text += &format!(
            "[[clusters]]\nname = \"c{i}\"\nprovider = \"local\"\nregion = \"Oregon\"\nnodes = 1000\n"
        );
    }
    let e = errors(&text);
    let message = e.first().to_string();
    assert!(
        message.contains(
            "clusters[5].nodes: expected at most 5000 nodes in the whole network, found 6000 nodes"
        ),
        "{message}"
    );

    let text = format!("{BASE}{}{}", relay("r", 40_000), relay("s", 40_000));
    let message = errors(&text).first().to_string();
    assert!(message.contains("services[3].containers: expected at most 50000 containers"), "{message}");
    assert!(message.starts_with("net.toml:22:14:"), "{message}");
}

#[test]
fn more_clusters_or_services_than_the_limit_are_refused_before_other_checks() {
    let mut text = BASE.to_string();
    for i in 0..=MAX_SERVICES {
        text += &relay(&format!("r{i}"), 0);
    }
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e}");
    assert!(e.first().to_string().contains("at most 200 services in one network"), "{e}");
}

#[test]
fn thousands_of_mistakes_give_a_bounded_report_quickly() {
    // Bad env keys: one error each, 50,000 of them.
    let mut text = format!("{BASE}{}[services.env]\n", relay("r", 1));
    for i in 0..50_000 {
        text += &format!("bad{i} = \"x\"\n");
    }
    let started = Instant::now();
    let e = errors(&text);
    let took = started.elapsed();
    assert_eq!(e.len(), MAX_REPORTED_ERRORS);
    assert_eq!(e.omitted(), 50_000 - MAX_REPORTED_ERRORS);
    assert!(e.to_string().ends_with("... and 49900 more problems (fix the ones above first)"));
    // Generous: the point is linear, not quadratic (which took tens of seconds).
    assert!(took.as_secs() < 20, "{took:?}");
}

#[test]
fn duplicate_ports_are_found_without_comparing_every_pair() {
    let mut text = format!("{BASE}{}ports = [\n", relay("r", 1));
    for p in 1..=65_535 {
        text += &format!("{p},\n");
    }
    text += "80,\n]\n";
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e}");
    assert!(e.first().to_string().contains("each port once (80 is already at services[2].ports[79])"), "{e}");
}

#[test]
fn echoed_values_are_escaped_and_cut() {
    let text = BASE.replace("region = \"Frankfurt\"", "region = \"\\u001b[2J\\u202eevil\"");
    let message = errors(&text).to_string();
    assert!(!message.contains('\u{1b}') && !message.contains('\u{202e}'), "{message:?}");
    assert!(message.contains("\\u{1b}[2J\\u{202e}evil"), "{message}");

    let long = "x".repeat(1_000_000);
    let message = errors(&BASE.replace("name = \"t\"", &format!("name = \"{long}\""))).to_string();
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.contains("(1000000 characters)"), "{message}");
}

#[test]
fn too_many_tags_in_one_list_are_refused() {
    let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
    let text = BASE.replace("nodes = 2", &format!("nodes = 2\ntags = [{}]", tags.join(", ")));
    assert!(errors(&text).to_string().contains("clusters[0].tags: expected at most 32 tags, found 33 tags"));
}

#[test]
fn a_genesis_over_the_cap_or_not_a_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::File::create(&big).unwrap().set_len(MAX_GENESIS_BYTES + 1).unwrap();
    for (genesis, expected) in [
        ("big.json", "larger than the limit of 65536 bytes"),
        ("/dev/zero", "not a regular file"),
        (".", "a directory"),
    ] {
        let text = BASE.replace("genesis.json", genesis);
        let message = parse(&text, Path::new("net.toml"), dir.path()).unwrap_err().to_string();
        assert!(message.starts_with("net.toml:3:11: chain.genesis:"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn line_index_agrees_with_a_scan() {
    let text = "a\nbé\n\nxyz";
    let index = error::LineIndex::new(text);
    for offset in 0..=text.len() + 2 {
        let scanned = {
            let mut o = offset.min(text.len());
            while !text.is_char_boundary(o) {
                o -= 1;
            }
            let before = &text[..o];
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            Location { line: before.matches('\n').count() + 1, column: before[start..].chars().count() + 1 }
        };
        assert_eq!(index.locate(offset), scanned, "offset {offset}");
    }
}
