//! A seeded, in-process fuzzer of everything peerfleet reads from a person: spec text, state files
//! and saved plan files.
//!
//! Each case is made from the seed and its number alone (same seed, same cases), so any finding is
//! replayed with `--seed S --from N --cases 1`. A case is one of:
//! - spec text: a shipped example or a generated spec, mutated (values swapped for edge values,
//!   lines inserted, deleted, repeated, characters replaced, text cut), then parsed, validated,
//!   planned, rendered (text, JSON, DOT) and round-tripped through the plan file format;
//! - a state file: a converged network's state, mutated as JSON text, then loaded and planned from
//!   through the library's read-only `plan` (no provider is contacted) and round-tripped;
//! - a plan file: a saved plan, mutated, then read back, rendered and round-tripped.
//!
//! A panic anywhere, or a round trip that does not give back what went in, is a finding.
//! The same source is the `fuzz_spec` example (long runs) and a short run in the test suite.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use peerfleet::core::actual::ActualState;
use peerfleet::core::network::Network;
use peerfleet::core::plan::{Plan, PlanOptions, Remembered, file as plan_file, plan};
use peerfleet::core::render::{self, Style};
use peerfleet::core::resource::{Actual, Container, ContainerState, Desired, Health, Machine, MachineStatus};
use peerfleet::core::spec;
use peerfleet::core::state::{ChainPin, State};
use peerfleet::deploy::sealed;
use peerfleet::{Deployment, PlanRequest};

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run.
    pub cases: u64,
    /// Inputs accepted (a spec that validated, a state or plan file that was read).
    pub accepted: u64,
    /// Accepted specs that were also planned, rendered and round-tripped.
    pub planned: u64,
    /// Findings: case number, kind, what happened, and the input (cut).
    pub findings: Vec<Finding>,
    /// The slowest case: time, case number, kind, input size.
    pub slowest: (Duration, u64, &'static str, usize),
}

/// One finding.
#[derive(Debug)]
pub struct Finding {
    /// The case number (replay with `--from`).
    pub case: u64,
    /// `spec`, `state` or `plan`.
    pub kind: &'static str,
    /// The panic message or the broken property.
    pub what: String,
    /// The input that caused it.
    pub input: String,
}

/// The fixed inputs every case starts from.
pub struct Corpus {
    specs: Vec<String>,
    state: String,
    plan: String,
    network: Network,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Corpus {
    /// Reads the shipped examples from `root`'s `examples/` and prepares `dir` (the genesis file the
    /// examples name, and the base state and plan).
    pub fn new(root: &Path, dir: &Path) -> Corpus {
        let examples = root.join("examples");
        std::fs::copy(examples.join("genesis.json"), dir.join("genesis.json")).expect("copy genesis");
        let specs: Vec<String> =
            ["nine_regions_local.toml", "nine_regions.toml", "aws_eight_regions.toml", "digitalocean.toml"]
                .iter()
                .map(|f| std::fs::read_to_string(examples.join(f)).expect("example spec"))
                .collect();
        let network = spec::parse(&specs[0], &dir.join("network.toml"), dir).expect("the example is valid");
        let first = plan(&network, &ActualState::default(), &Remembered::default(), &PlanOptions::default())
            .expect("the example plans");
        let state = converged_state(&network, &first.plan);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Corpus {
            specs,
            state: String::from_utf8(state.to_json()).expect("JSON is UTF-8"),
            plan: String::from_utf8(plan_file::encode(&sealed(&first.plan))).expect("JSON is UTF-8"),
            network,
            dir: dir.to_path_buf(),
            runtime,
        }
    }
}

/// The state an apply of `plan` leaves: every machine and container as created, the chain pinned.
fn converged_state(network: &Network, plan: &Plan) -> State {
    let mut state = State::new();
    state.lineage = Some("00000000-0000-4000-8000-000000000000".into());
    state.serial = 3;
    state.network = Some(network.name.clone());
    state.chain = Some(ChainPin::new(&network.chain.genesis));
    for (n, change) in plan.changes.iter().enumerate() {
        let actual = match &change.after {
            Some(Desired::Machine(m)) => Actual::Machine(Machine {
                id: format!("m-{n}"),
                address: m.address.clone(),
                provider: m.provider,
                region: m.region.slug.clone(),
                size: m.size.clone(),
                image: "img".into(),
                tags: m.tags.clone(),
                chain_id: m.chain_id.clone(),
                generation: 1,
                bootstrap: m.bootstrap,
                status: MachineStatus::Running,
                public_ip: Some("192.0.2.10".into()),
                private_ip: None,
            }),
            Some(Desired::Container(s)) => Actual::Container(Container {
                id: format!("c-{n}"),
                address: s.address.clone(),
                spec: Some(s.clone()),
                state: ContainerState::Running,
                health: Health::Healthy,
                chain_id: s.chain_id.clone(),
            }),
            _ => continue,
        };
        state.generations.insert(change.address.clone(), 1);
        state.resources.insert(change.address.clone(), actual);
    }
    state
}

/// The case's generator: seeded from the run's seed and the case number alone, so one case is
/// replayed without running those before it.
struct Rng(StdRng);

impl Rng {
    fn new(seed: u64, case: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed ^ case.rotate_left(32)))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Values a field may be given: edges of every type the spec, state and plan use.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "9",
    "1000",
    "1001",
    "50000",
    "100000",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "1e400",
    "nan",
    "true",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"relay\"",
    "\"relay-1\"",
    "\"relay-2\"",
    "\"master-1\"",
    "\"genesis\"",
    "\"master\"",
    "\"every_node\"",
    "\"emptiest_node\"",
    "\"high_availability\"",
    "\"region_spread\"",
    "\"aws\"",
    "\"digitalocean\"",
    "\"local\"",
    "\"Frankfurt\"",
    "\"São Paulo\"",
    "\"nyc3\"",
    "\"eu-west-1\"",
    "\"\\u001b[2J\"",
    "\"\\u202eevil\"",
    "\"a€€€€€€€\"",
    "\"a€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€\"",
    "\"/dev/zero\"",
    "\".\"",
    "\"genesis.json\"",
    "\"missing.json\"",
    "\"0.0.0.0/0\"",
    "\"203.0.113.0/24\"",
    "\"203.0.113.5/24\"",
    "\"peerfleet:x\"",
    "\"peer_cluster\"",
    "[]",
    "[\"peer_cluster\"]",
    "[\"a\", \"a\"]",
    "[1, 1]",
    "[65535, 0, 70000]",
    "{}",
    "{ A = \"1\" }",
    "{ NODE_ROLE = \"x\" }",
    "{ \"bad key\" = \"1\" }",
    "null",
    "{\"x\": 1}",
    "\"c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199\"",
    "\"C9DEEA424D5ACB5719414C8D3779CC4363CC8C9B9CCAA380A34131B094215199\"",
    "\"machine/x/0\"",
    "\"container/relay/4294967295\"",
];

/// Lines a spec may gain.
const SPEC_LINES: &[&str] = &[
    "containers = 100000",
    "containers = 50000",
    "nodes = 1000",
    "[[services]]\nname = \"relay-1\"\nrole = \"relay\"",
    "[[services]]\nname = \"genesis\"\nrole = \"genesis\"",
    "[[clusters]]\nname = \"big\"\nprovider = \"local\"\nregion = \"Frankfurt\"\nnodes = 1000\ntags = [\"peer_cluster\"]",
    "[[clusters]]\nname = \"c\"\nprovider = \"aws\"\nregion = \"Amsterdam\"",
    "strategy = \"every_node\"",
    "deploy_tags = [\"peer_cluster\"]",
    "[services.health]\ncommand = [\"x\"]\nretries = 0",
    "ports = [1, 2, 3, 1]",
    "env = { NODE_ROLE = \"x\", \"\\u001b\" = \"y\" }",
    "[access]\nadmin_cidrs = [\"0.0.0.0/0\"]",
    "name = \"x\"",
    "profile = \"p\"",
    "unknown = 1",
    "[chain]\ngenesis = \"/dev/zero\"",
    "[[",
    "\"\\u202e\" = 1",
];

/// Characters a mutation may write over another.
const CHARS: &[char] =
    &['"', '=', '[', ']', '{', '}', '\n', '#', '\\', '\u{1b}', '\u{202e}', '€', '0', '9', '-', ' ', 'a'];

/// Applies 1..=4 random mutations to `text`.
fn mutate(rng: &mut Rng, text: &str, lines: &[&str]) -> String {
    let mut out: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            out.push(String::new());
        }
        let at = rng.below(out.len());
        match rng.below(9) {
            // A value swapped for an edge value: the most productive mutation.
            0..=2 => {
                if let Some(eq) = out[at].find(['=', ':']) {
                    let value = rng.pick(VALUES);
                    let line = &out[at];
                    let comma = if line.trim_end().ends_with(',') { "," } else { "" };
                    out[at] = format!("{} {value}{comma}", &line[..=eq]);
                }
            }
            3 => out.insert(at, rng.pick(lines).to_string()),
            4 => {
                out.remove(at);
            }
            5 => {
                // A line repeated: size stress (kept near a megabyte at most).
                let times = [2, 10, 1000, 20_000][rng.below(4)];
                let line = out[at].clone();
                let times = times.min(1_100_000 / (line.len() + 1));
                // In one splice: inserting one by one shifts the tail each time (quadratic; it was
                // two thirds of a long run's time). The case is the same either way.
                out.splice(at..at, std::iter::repeat_n(line, times));
            }
            6 => {
                let chars: Vec<char> = out[at].chars().collect();
                if !chars.is_empty() {
                    let i = rng.below(chars.len());
                    let mut chars = chars;
                    chars[i] = CHARS[rng.below(CHARS.len())];
                    out[at] = chars.into_iter().collect();
                }
            }
            7 => {
                let block_end = (at + 1 + rng.below(8)).min(out.len());
                let block: Vec<String> = out[at..block_end].to_vec();
                out.splice(block_end..block_end, block);
            }
            _ => {
                // Cut the text (a truncated copy), at a character boundary.
                let joined = out.join("\n");
                let mut cut = rng.below(joined.len() + 1);
                while !joined.is_char_boundary(cut) {
                    cut -= 1;
                }
                out = joined[..cut].lines().map(str::to_string).collect();
            }
        }
    }
    out.join("\n")
}

/// A spec built from parts: usually valid, so that placement and planning are exercised too.
fn generated_spec(rng: &mut Rng) -> String {
    let mut s = String::from("name = \"fuzz\"\n[chain]\ngenesis = \"genesis.json\"\n");
    let cities =
        ["Frankfurt", "London", "Singapore", "Sydney", "Virginia", "Oregon", "São Paulo", "Amsterdam"];
    let tags = ["peer_cluster", "a", "b"];
    for c in 0..1 + rng.below(6) {
        let nodes = [0, 1, 2, 3, 10, 1000][rng.below(6)];
        let _ = write!(
            s,
            "[[clusters]]\nname = \"c{c}\"\nprovider = \"local\"\nregion = \"{}\"\nnodes = {nodes}\ntags = [\"{}\"]\n",
            cities[rng.below(cities.len())],
            tags[rng.below(tags.len())]
        );
    }
    let strategies = ["emptiest_node", "high_availability", "every_node", "region_spread"];
    let _ = write!(s, "[[services]]\nname = \"genesis\"\nrole = \"genesis\"\n");
    let _ = write!(s, "[[services]]\nname = \"master\"\nrole = \"master\"\n");
    for r in 0..rng.below(4) {
        // Names like `relay-1` next to `relay` probe the DNS-name clash rule.
        let name = ["relay", "relay-1", "relay-2", "edge"][r % 4];
        let strategy = strategies[rng.below(strategies.len())];
        let _ = write!(s, "[[services]]\nname = \"{name}\"\nrole = \"relay\"\nstrategy = \"{strategy}\"\n");
        if strategy != "every_node" {
            let _ = writeln!(s, "containers = {}", [0, 1, 2, 9, 100, 5000][rng.below(6)]);
        }
        if rng.chance(50) {
            let _ = writeln!(s, "deploy_tags = [\"{}\"]", tags[rng.below(tags.len())]);
        }
        if rng.chance(30) {
            let _ = writeln!(s, "ports = [{}, {}]", 1 + rng.below(65535), 1 + rng.below(65535));
        }
        if rng.chance(20) {
            let _ = writeln!(s, "env = {{ LOG = \"{}\" }}", ["x", "\\u001b[2J", "\\u202e"][rng.below(3)]);
        }
    }
    s
}

/// Runs cases `from..from + cases` of `seed`.
pub fn run(corpus: &Corpus, seed: u64, from: u64, cases: u64) -> Report {
    let mut report = Report::default();
    for case in from..from + cases {
        let mut rng = Rng::new(seed, case);
        let kind = match rng.below(10) {
            0..=6 => "spec",
            7 | 8 => "state",
            _ => "plan",
        };
        let input = match kind {
            "spec" if rng.chance(40) => {
                let text = generated_spec(&mut rng);
                if rng.chance(50) { mutate(&mut rng, &text, SPEC_LINES) } else { text }
            }
            "spec" => {
                let base = rng.below(corpus.specs.len());
                mutate(&mut rng, &corpus.specs[base], SPEC_LINES)
            }
            "state" => mutate(
                &mut rng,
                &corpus.state,
                &["\"serial\": 18446744073709551615,", "\"network\": \"other\","],
            ),
            _ => mutate(&mut rng, &corpus.plan, &["\"format_version\": 99,", "\"digest\": \"sha256:00\","]),
        };
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| match kind {
            "spec" => spec_case(corpus, &input),
            "state" => state_case(corpus, &input),
            _ => plan_case(&input),
        }));
        let took = started.elapsed();
        if took > report.slowest.0 {
            report.slowest = (took, case, kind, input.len());
        }
        report.cases += 1;
        let what = match outcome {
            Ok(Ok(Accepted::No)) => None,
            Ok(Ok(Accepted::Read)) => {
                report.accepted += 1;
                None
            }
            Ok(Ok(Accepted::Planned)) => {
                report.accepted += 1;
                report.planned += 1;
                None
            }
            Ok(Err(broken)) => Some(broken),
            Err(panic) => Some(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        if let Some(what) = what {
            let input = input.chars().take(4000).collect();
            report.findings.push(Finding { case, kind, what, input });
        }
    }
    report
}

enum Accepted {
    No,
    Read,
    Planned,
}

/// Parse, validate, plan, render, and round-trip the plan file.
fn spec_case(corpus: &Corpus, text: &str) -> Result<Accepted, String> {
    let Ok(network) = spec::parse(text, &corpus.dir.join("network.toml"), &corpus.dir) else {
        return Ok(Accepted::No);
    };
    let Ok(planned) =
        plan(&network, &ActualState::default(), &Remembered::default(), &PlanOptions::default())
    else {
        return Ok(Accepted::Read);
    };
    render_all(&planned.plan);
    round_trip_plan(&planned.plan)?;
    Ok(Accepted::Planned)
}

/// Load a state file through the library's read-only plan (no provider contacted), and round-trip it.
fn state_case(corpus: &Corpus, text: &str) -> Result<Accepted, String> {
    let path = corpus.dir.join("state.json");
    std::fs::write(&path, text).map_err(|e| format!("cannot write the case: {e}"))?;
    let d = Deployment::new(corpus.network.clone(), &path);
    let request = PlanRequest { no_refresh: true, ..PlanRequest::default() };
    let planned = corpus.runtime.block_on(d.plan(&request));
    if let Ok(state) = State::from_json(text.as_bytes()) {
        let again = State::from_json(&state.to_json()).map_err(|e| format!("state round trip: {e}"))?;
        if again != state {
            return Err("state round trip changed the state".into());
        }
    }
    match planned {
        Ok(prepared) => {
            render_all(&prepared.planned.plan);
            round_trip_plan(&prepared.planned.plan)?;
            Ok(Accepted::Planned)
        }
        Err(_) => Ok(Accepted::No),
    }
}

/// Read a plan file; an accepted one is rendered and written again.
fn plan_case(text: &str) -> Result<Accepted, String> {
    let Ok(plan) = plan_file::decode(text.as_bytes()) else { return Ok(Accepted::No) };
    render_all(&plan);
    round_trip_plan(&plan)?;
    Ok(Accepted::Read)
}

fn render_all(plan: &Plan) {
    let _ = render::text(plan, Style::default());
    let _ = render::json(plan);
    let _ = render::dot(plan);
}

fn round_trip_plan(plan: &Plan) -> Result<(), String> {
    let written = sealed(plan);
    match plan_file::decode(&plan_file::encode(&written)) {
        Ok(read) if read == written => Ok(()),
        Ok(_) => Err("plan file round trip changed the plan".into()),
        Err(e) => Err(format!("plan file round trip refused its own file: {e}")),
    }
}
