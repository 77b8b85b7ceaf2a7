//! Fuzzes spec text, state files and plan files in-process, seeded and replayable.
//!
//! ```text
//! cargo run --release --example fuzz_spec -- --cases 1000000 --seed 1
//! cargo run --release --example fuzz_spec -- --seed 1 --from 4242 --cases 1 --show   # replay one case
//! cargo run --release --example fuzz_spec -- --cases 500000 --from 500000 --seed 1    # a second core
//! ```
//!
//! Prints cases, accepted inputs, findings (panics and broken round trips) and the slowest case;
//! exits 1 when anything was found. The cases themselves are in `tests/hostile/fuzz.rs`, shared with
//! the short run in the test suite. It lives in the examples package so that a release build of it
//! does not compile the cloud SDKs or the root package's test stand-ins: spec, state and plan files are
//! read, validated, planned and rendered without contacting any provider.

#[path = "../../tests/hostile/fuzz.rs"]
#[allow(dead_code)]
mod fuzz;

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut cases = 10_000u64;
    let mut seed = 1u64;
    let mut from = 0u64;
    let mut show = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.replace('_', "").parse::<u64>().ok());
        match arg.as_str() {
            "--cases" => cases = value().unwrap_or(cases),
            "--seed" => seed = value().unwrap_or(seed),
            "--from" => from = value().unwrap_or(from),
            "--show" => show = true,
            other => {
                eprintln!("unknown argument {other:?}; expected --cases N --seed S [--from N] [--show]");
                return ExitCode::from(2);
            }
        }
    }
    // Panics are findings, counted and reported below; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let corpus = fuzz::Corpus::new(&root, dir.path());
    let started = Instant::now();
    let mut total = fuzz::Report::default();
    // In chunks, so a long run shows progress.
    let chunk = 50_000;
    let mut next = from;
    while next < from + cases {
        let n = chunk.min(from + cases - next);
        let r = fuzz::run(&corpus, seed, next, n);
        total.cases += r.cases;
        total.accepted += r.accepted;
        total.planned += r.planned;
        if r.slowest.0 > total.slowest.0 {
            total.slowest = r.slowest;
        }
        total.findings.extend(r.findings);
        next += n;
        if cases > chunk {
            eprintln!(
                "{} cases, {} findings, {:.0} s",
                total.cases,
                total.findings.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let (slowest, case, kind, size) = total.slowest;
    println!(
        "seed {seed}: {} cases in {:.1} s; accepted {} ({} planned, rendered and round-tripped); findings {}; slowest case {case} ({kind}, {size} bytes) {:.1} ms",
        total.cases,
        started.elapsed().as_secs_f64(),
        total.accepted,
        total.planned,
        total.findings.len(),
        slowest.as_secs_f64() * 1000.0
    );
    for f in total.findings.iter().take(20) {
        println!("case {} ({}): {}", f.case, f.kind, f.what);
        if show {
            println!("{}\n---", f.input);
        }
    }
    if total.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
