//! Hostile input and hostile files, through the CLI (issue 13's findings, one corpus file each).
//!
//! Every test runs the binary with a timeout (a hang is a failure, never a stuck suite) and checks
//! the three promises of bad input: exit code 1 (never 101, a panic), a message that says what is
//! wrong, and nothing created, overwritten, chmod'ed or deleted — the directory is compared before
//! and after. Corpus files may hold `# repeat N` … `# end` blocks (repeated with `{i}` numbered)
//! and `{x*N}` (N x's), so megabyte inputs stay a few hundred bytes in the repository.

mod fuzz;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::root;

/// Long enough for a debug build on a loaded machine; a hang runs into it.
const TIMEOUT: Duration = Duration::from_secs(60);

fn corpus_dir() -> PathBuf {
    root().join("tests/hostile/corpus")
}

/// A corpus file, expanded.
fn corpus(name: &str) -> String {
    let text = fs::read_to_string(corpus_dir().join(name)).unwrap();
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("# repeat ") {
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "# end").collect();
            for i in 0..n.trim().parse::<usize>().unwrap() {
                for l in &block {
                    out += &l.replace("{i}", &i.to_string());
                    out.push('\n');
                }
            }
        } else {
            out += line;
            out.push('\n');
        }
    }
    while let Some(start) = out.find("{x*") {
        let end = start + out[start..].find('}').unwrap();
        let n: usize = out[start + 3..end].parse().unwrap();
        out.replace_range(start..=end, &"x".repeat(n));
    }
    out
}

/// A directory with the genesis, `network.toml` = corpus `spec`, and the given extra corpus files.
fn workspace(spec: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(root().join("examples/genesis.json"), dir.path().join("genesis.json")).unwrap();
    fs::write(dir.path().join("network.toml"), corpus(spec)).unwrap();
    for (name, from) in files {
        let path = dir.path().join(name);
        fs::write(&path, corpus(from)).unwrap();
        // State files are private, as peerfleet writes them: a readable one is tightened on load by
        // design, and that must not be mistaken for the command touching the file.
        if from.ends_with(".state.json") {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    dir
}

/// Every entry under `dir` (symlinks not followed): kind, mode, and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = format!("{:?}", meta.file_type());
            let content = if meta.is_file() {
                fs::read(&path).unwrap()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            all.insert(path.strip_prefix(dir).unwrap().to_path_buf(), (kind, meta.mode(), content));
        }
    }
    all
}

/// Runs the CLI in `dir` with a timeout: exit code, stdout, stderr.
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_with(dir, args, &[])
}

/// [`run`] with extra environment variables.
fn run_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerfleet"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DIGITALOCEAN_ACCESS_TOKEN")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        // Nothing here may reach an engine; an unreachable one fails fast instead of hanging.
        .env("DOCKER_HOST", "unix:///nonexistent/peerfleet-hostile.sock")
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peerfleet {args:?} hung for {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Runs `args` in `dir`, which must end exactly as it began; the command must exit 1 with every
/// one of `expected` in its message. Returns the message.
fn refused(dir: &Path, args: &[&str], expected: &[&str]) -> String {
    let before = snapshot(dir);
    let (code, out, err) = run(dir, args);
    assert_eq!(code, 1, "peerfleet {args:?} exit {code}\nstdout: {out}\nstderr: {err}");
    for e in expected {
        assert!(err.contains(e), "peerfleet {args:?}: expected {e:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(snapshot(dir) == before, "peerfleet {args:?} changed the directory");
    err
}

fn validate_refuses(spec: &str, expected: &[&str]) -> String {
    let dir = workspace(spec, &[]);
    refused(dir.path(), &["validate", "-f", "network.toml"], expected)
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn a_state_chain_id_that_is_not_hex_is_refused_not_a_panic() {
    let dir = workspace("base.toml", &[("s.json", "chain_id_not_ascii.state.json")]);
    let args = ["plan", "-f", "network.toml", "--state", "s.json", "--refresh=false"];
    refused(dir.path(), &args, &["not a valid peerfleet state file", "64 lowercase hex digits"]);
}

#[test]
fn a_generation_with_no_successor_is_refused_instead_of_reusing_an_idempotency_key() {
    let dir = workspace("base.toml", &[("s.json", "generation_u32_max.state.json")]);
    let args = ["plan", "-f", "network.toml", "--state", "s.json", "--refresh=false"];
    refused(dir.path(), &args, &["machine.home[0] is at generation 4294967295, the last one"]);
}

#[test]
fn container_counts_past_the_network_total_are_refused_at_their_line() {
    let err = validate_refuses("containers_past_the_network_total.toml", &["at most 50000 containers"]);
    assert!(err.contains("network.toml:39:14: services[5].containers"), "{err}");
}

#[test]
fn a_serial_with_no_successor_is_refused_before_planning() {
    let dir = workspace("base.toml", &[("s.json", "serial_u64_max.state.json")]);
    let args = ["plan", "-f", "network.toml", "--state", "s.json", "--refresh=false"];
    refused(dir.path(), &args, &["serial is 18446744073709551615, the largest there is"]);
}

#[test]
fn a_hundred_thousand_bad_tags_are_one_error() {
    validate_refuses(
        "many_bad_tags.toml",
        &["services[2].deploy_tags: expected at most 32 tags, found 100000"],
    );
}

#[test]
fn twenty_thousand_services_are_refused_at_the_first_one_too_many() {
    validate_refuses("many_bad_strategies.toml", &["services: expected at most 200 services in one network"]);
}

#[test]
fn fifty_thousand_bad_env_keys_give_a_bounded_report() {
    let err = validate_refuses("many_bad_env_keys.toml", &["services[2].env.bad0:", "more problems"]);
    assert!(err.lines().count() <= 102, "{} lines", err.lines().count());
}

#[test]
fn two_hundred_thousand_ports_are_checked_without_comparing_pairs() {
    let err = validate_refuses(
        "many_ports.toml",
        &["services[2].ports[0]: expected a port in 1..=65535", "more problems"],
    );
    assert!(err.len() < 64 << 10, "{} bytes", err.len());
}

#[test]
fn nodes_past_the_network_total_are_refused_at_their_line() {
    validate_refuses(
        "nodes_past_the_network_total.toml",
        &["clusters[5].nodes: expected at most 5000 nodes"],
    );
}

#[test]
fn an_every_node_service_over_the_node_total_is_refused() {
    validate_refuses("every_node_past_the_network_total.toml", &["expected at most 5000 nodes"]);
}

#[test]
fn named_pipes_are_refused_instead_of_blocking() {
    let dir = workspace("genesis_fifo.toml", &[]);
    let d = dir.path();
    mkfifo(&d.join("pipe"));
    refused(d, &["validate", "-f", "network.toml"], &["chain.genesis", "not a regular file (a named pipe)"]);
    fs::write(d.join("network.toml"), corpus("base.toml")).unwrap();
    refused(d, &["validate", "-f", "pipe"], &["not a regular file (a named pipe)"]);
    let plan = ["plan", "-f", "network.toml", "--state", "pipe", "--refresh=false"];
    refused(d, &plan, &["not a regular file (a named pipe)"]);
    refused(d, &["apply", "-f", "network.toml", "pipe"], &["not a regular file (a named pipe)"]);
}

#[test]
fn a_device_or_an_oversized_genesis_is_refused_with_the_cap() {
    validate_refuses(
        "genesis_dev_zero.toml",
        &["network.toml:5:11: chain.genesis:", "not a regular file (a device)"],
    );
    let dir = workspace("genesis_huge.toml", &[]);
    // Sparse: 3 GB that take no disk, and must not be read.
    fs::File::create(dir.path().join("huge.json")).unwrap().set_len(3 << 30).unwrap();
    refused(dir.path(), &["validate", "-f", "network.toml"], &["larger than the limit of 65536 bytes"]);
}

#[test]
fn plan_out_never_overwrites_what_is_not_a_plan() {
    let dir = workspace("base.toml", &[("s.json", "other_network.state.json")]);
    let d = dir.path();
    fs::create_dir(d.join("plans")).unwrap();
    for target in ["network.toml", "genesis.json", "s.json", "plans"] {
        let args = ["plan", "-f", "network.toml", "--refresh=false", "--out", target];
        refused(d, &args, &[target, "refusing to"]);
    }
}

#[test]
fn plan_out_writes_a_private_plan_and_replaces_only_a_plan() {
    let dir = workspace("base.toml", &[]);
    let d = dir.path();
    let args = ["plan", "-f", "network.toml", "--refresh=false", "--out", "p.plan"];
    let (code, _, err) = run(d, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::metadata(d.join("p.plan")).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, _, err) = run(d, &args);
    assert_eq!(code, 0, "a plan replaces a plan: {err}");
    let mut names: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["genesis.json", "network.toml", "p.plan"], "no temporary file is left");
}

#[test]
fn a_read_only_plan_never_chmods_a_file_that_is_not_state() {
    let dir = workspace("base.toml", &[("data.json", "not_a_state.json")]);
    let d = dir.path();
    fs::set_permissions(d.join("data.json"), fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("data.json", d.join("link.json")).unwrap();
    for state in ["data.json", "link.json"] {
        let args = ["plan", "-f", "network.toml", "--state", state, "--refresh=false"];
        refused(d, &args, &["not a valid peerfleet state file"]);
    }
}

#[test]
fn force_unlock_leaves_a_lock_file_that_is_not_peerfleets() {
    let dir =
        workspace("base.toml", &[("victim.json", "not_a_state.json"), ("victim.json.lock", "foreign.lock")]);
    let args = ["force-unlock", "-f", "network.toml", "--state", "victim.json"];
    refused(dir.path(), &args, &["victim.json.lock is not a peerfleet lock file"]);
}

#[test]
fn a_state_of_another_network_is_refused() {
    let dir = workspace("base.toml", &[("s.json", "other_network.state.json")]);
    let args = ["plan", "-f", "network.toml", "--state", "s.json", "--refresh=false"];
    refused(dir.path(), &args, &["network \"someone-else\"'s, but the spec declares `hostile`"]);
}

#[test]
fn an_edited_or_newer_saved_plan_is_refused_before_anything_connects() {
    let dir = workspace("base.toml", &[]);
    let d = dir.path();
    let (code, _, err) = run(d, &["plan", "-f", "network.toml", "--refresh=false", "--out", "p.plan"]);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(d.join("p.plan")).unwrap();
    let edited = text.replacen("\"relay\"", "\"relax\"", 1);
    assert_ne!(edited, text);
    fs::write(d.join("edited.plan"), edited).unwrap();
    fs::write(d.join("newer.plan"), text.replacen("\"format_version\": 1", "\"format_version\": 99", 1))
        .unwrap();
    fs::write(d.join("spec.plan"), corpus("base.toml")).unwrap();
    // DOCKER_HOST points nowhere: reaching the engine would be a different error.
    refused(d, &["apply", "-f", "network.toml", "edited.plan"], &["does not match its digest"]);
    refused(d, &["apply", "-f", "network.toml", "newer.plan"], &["plan format 99 is not the format"]);
    refused(d, &["apply", "-f", "network.toml", "spec.plan"], &["not a peerfleet plan file"]);
}

#[test]
fn control_and_bidi_characters_are_escaped_and_long_values_cut() {
    let err = validate_refuses("control_characters.toml", &["\\u{1b}[2J\\u{202e}evil"]);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{202e}'), "{err:?}");
    let err = validate_refuses("huge_value.toml", &["(2600000 characters)"]);
    assert!(err.len() < 1000, "{} bytes", err.len());
}

#[test]
fn a_service_named_like_a_container_of_another_is_refused() {
    validate_refuses(
        "service_named_like_a_container.toml",
        &["services[3].name:", "container 2 of service \"relay\" is called \"relay-2\""],
    );
}

#[test]
fn a_short_seeded_fuzz_run_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = fuzz::Corpus::new(&root(), dir.path());
    let report = fuzz::run(&corpus, 13, 0, 300);
    assert_eq!(report.cases, 300);
    assert!(report.accepted > 0 && report.planned > 0, "{report:?}");
    let findings: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("case {} ({}): {}\n{}", f.case, f.kind, f.what, f.input))
        .collect();
    assert!(findings.is_empty(), "{}", findings.join("\n---\n"));
}

#[test]
fn show_and_graph_of_a_cloud_network_only_machines_never_dial_an_engine() {
    use peerfleet_digitalocean_testserver::{Config, Delays, TestServer};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let timing = Delays { boot: Duration::from_millis(200), action: Duration::from_millis(50) };
    let server = rt.block_on(TestServer::start_with(Config { timing, ..Config::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(root().join("examples/digitalocean.toml"), d.join("network.toml")).unwrap();
    fs::copy(root().join("examples/genesis.json"), d.join("genesis.json")).unwrap();
    let url = server.url().to_string();
    let env = [("DIGITALOCEAN_API_URL", url.as_str()), ("DIGITALOCEAN_TOKEN", server.token())];
    let (code, _, err) =
        run_with(d, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"], &env);
    assert_eq!(code, 0, "{err}");
    // The droplets' addresses are documentation addresses: dialing one would hang or fail.
    let (code, out, err) = run_with(d, &["show", "-f", "network.toml", "--only", "machines", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["nodes"].as_array().map(Vec::len), Some(5), "{out}");
    let (code, out, err) = run_with(d, &["graph", "-f", "network.toml", "--only", "machines"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("digraph"), "{out}");
}
