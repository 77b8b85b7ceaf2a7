//! The `peerfleet` command: argument parsing, confirmation, output, exit codes. Everything that
//! touches infrastructure goes through the library's [`peerfleet::Deployment`].

mod about;
mod advice;
mod args;
mod logging;
mod progress;
mod show;
mod state;
mod status;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, FromArgMatches};
use peerfleet::core::executor::{ApplyOutcome, Interrupt, InterruptLevel};
use peerfleet::core::input;
use peerfleet::core::network::{ChainId, Network};
use peerfleet::core::plan::{Layer, Plan, file as plan_file};
use peerfleet::core::render::{self, Style};
use peerfleet::core::spec;
use peerfleet::{Applied, ApplyRequest, Deployment, PlanRequest, Prepared};

use progress::LazyProgress;

use args::{
    ApplyArgs, Cli, Command, DestroyArgs, GenesisCommand, GraphArgs, OnlyLayer, PlanArgs, ScaleArgs,
    ShowArgs, StateCommand,
};

/// Runs the CLI and maps the result to an exit code: 0 ok, 1 error, 2 changes (`--detailed-exitcode`).
pub fn main() -> ExitCode {
    let cli = parse();
    logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let spec = spec_file(&cli.command);
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line with the next step; quoted input (file contents, names) never raw to a terminal.
            let message = advice::message(&e, spec.as_deref());
            eprintln!("{} {message}", Style::detect(std::io::stderr().is_terminal()).bold("Error:"));
            ExitCode::from(1)
        }
    }
}

/// The spec file a command works on, for the next step an error suggests.
fn spec_file(command: &Command) -> Option<std::path::PathBuf> {
    match command {
        Command::Validate(a) => Some(a.file.clone()),
        Command::Plan(a) => Some(a.planning.target.spec.file.clone()),
        Command::Apply(a) => Some(a.planning.target.spec.file.clone()),
        Command::Destroy(a) => Some(a.target.spec.file.clone()),
        Command::Show(a) => Some(a.target.spec.file.clone()),
        Command::Scale(a) => Some(a.target.spec.file.clone()),
        Command::Graph(a) => Some(a.target.spec.file.clone()),
        Command::Status(a) => Some(a.target.spec.file.clone()),
        Command::ForceUnlock(a) => Some(a.spec.file.clone()),
        _ => None,
    }
}

/// Parses the arguments; `--version` also names the node image, which costs reading the node binary,
/// so it is only worked out when asked for.
fn parse() -> Cli {
    let mut command = Cli::command();
    if std::env::args_os().any(|a| a == "-V" || a == "--version") {
        // Parsed once per process: leaking the string is how clap takes an owned version.
        let version: &'static str = Box::leak(about::long_version().into_boxed_str());
        command = command.version(version).long_version(version);
    }
    command
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|e| usage_exit(&e))
}

/// Prints clap's message and exits: 0 for `--help` and `--version`, 1 for bad arguments. Clap's own
/// code for those is 2, which `plan --detailed-exitcode` and `status` give a meaning a script acts on
/// ("changes", "degraded"): a mistyped flag must not read as either.
fn usage_exit(e: &clap::Error) -> ! {
    let _ = e.print();
    std::process::exit(if e.use_stderr() { 1 } else { 0 })
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate(a) => validate(&a.file),
        Command::Plan(a) => plan(a).await,
        Command::Apply(a) => apply(a).await,
        Command::Destroy(a) => destroy(a).await,
        Command::Show(a) => show(a).await,
        Command::Graph(a) => graph(a).await,
        Command::Status(a) => status::run(&a).await,
        Command::Scale(a) => scale(a).await,
        Command::ForceUnlock(a) => state::force_unlock(a).await,
        Command::State(StateCommand::Migrate { from, to, lock_timeout }) => {
            state::migrate(from, &to, lock_timeout).await
        }
        Command::Genesis(GenesisCommand::New { name, out }) => genesis_new(&name, out.as_deref()),
        Command::Completions { shell } => about::completions(shell, &mut std::io::stdout()).map(|()| 0),
        Command::Man => about::man(&mut std::io::stdout()).map(|()| 0),
    }
}

fn load(path: &Path) -> Result<Network> {
    // Spec errors carry file, line, column and field; print them as they are, one per line.
    spec::load(path).map_err(|e| advice::SpecProblems(e.to_string()).into())
}

fn layer(only: Option<OnlyLayer>) -> Option<Layer> {
    only.map(|o| match o {
        OnlyLayer::Machines => Layer::Machines,
        OnlyLayer::Containers => Layer::Containers,
    })
}

fn chain_arg(s: &Option<String>) -> Result<Option<ChainId>> {
    s.as_deref()
        .map(|s| {
            ChainId::parse(s)
                .ok_or_else(|| anyhow!("--replace-genesis: expected a chain ID (64 hex digits), found {s:?}"))
        })
        .transpose()
}

fn stdout_style() -> Style {
    Style::detect(std::io::stdout().is_terminal())
}

fn warn_all(prepared: &Prepared) {
    for w in &prepared.planned.warnings {
        eprintln!("Warning: {w}");
    }
}

fn validate(file: &Path) -> Result<u8> {
    let n = load(file)?;
    // u64: the spec bounds the totals, but a sum of u32s must never be what breaks.
    let nodes: u64 = n.clusters.iter().map(|c| u64::from(c.nodes)).sum();
    let containers: u64 = n.services.iter().map(|s| u64::from(s.containers)).sum();
    println!(
        "{} is valid: network `{}`, {} clusters ({nodes} nodes), {} services ({containers} containers), chain {}",
        file.display(),
        n.name,
        n.clusters.len(),
        n.services.len(),
        n.chain.id
    );
    Ok(0)
}

async fn plan(a: PlanArgs) -> Result<u8> {
    let d = state::deployment(&a.planning.target).await?;
    let request = PlanRequest {
        only: layer(a.planning.only),
        no_refresh: !a.refresh,
        destroy: false,
        replace_genesis: chain_arg(&a.planning.replace_genesis)?,
    };
    let prepared = d.plan(&request).await?;
    warn_all(&prepared);
    let plan = &prepared.planned.plan;
    if a.json {
        println!("{}", render::json(plan));
    } else {
        print!("{}", render::text(plan, stdout_style()));
    }
    if let Some(out) = &a.out {
        write_plan(out, plan)?;
        if !a.json {
            println!(
                "\nSaved the plan to {}. Apply exactly it with: peerfleet apply -f {} {}",
                out.display(),
                a.planning.target.spec.file.display(),
                out.display()
            );
        }
    }
    Ok(if a.detailed_exitcode && plan.has_changes() { 2 } else { 0 })
}

fn write_plan(path: &Path, plan: &Plan) -> Result<()> {
    ensure_plan_or_absent(path)?;
    let bytes = plan_file::encode(&peerfleet::deploy::sealed(plan));
    // Private: a plan file carries the network's (sealed) environment and layout.
    peerfleet_core::atomic::write(path, &bytes, peerfleet_core::atomic::FileMode::Private)
        .with_context(|| format!("writing {}", path.display()))
}

/// `plan --out` replaces only an earlier plan file: never a spec, a state file or anything else.
fn ensure_plan_or_absent(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            bail!("{} exists and is not a regular file; refusing to replace it with a plan", path.display())
        }
    }
    let is_plan = input::read_regular(path, plan_file::MAX_PLAN_FILE_BYTES)
        .is_ok_and(|bytes| plan_file::is_plan_file(&bytes));
    if !is_plan {
        bail!(
            "{} exists and is not a peerfleet plan file; refusing to overwrite it (choose another --out path)",
            path.display()
        );
    }
    Ok(())
}

/// Reads a saved plan, checking its kind, format version and digest before anything connects.
fn read_plan(path: &Path) -> Result<Plan> {
    let bytes = input::read_regular(path, plan_file::MAX_PLAN_FILE_BYTES)
        .with_context(|| format!("reading the plan file {}", path.display()))?;
    plan_file::decode(&bytes).with_context(|| format!("{} cannot be applied", path.display()))
}

/// Refuses at once when confirmation is needed and there is no terminal to ask on.
fn ensure_can_confirm(auto_approve: bool, what: &str) -> Result<()> {
    if !auto_approve && !std::io::stdin().is_terminal() {
        bail!("{what} needs confirmation, and there is no terminal to ask on: re-run with --auto-approve");
    }
    Ok(())
}

/// The confirmation rules of apply/destroy/scale: `--auto-approve`, or "yes" typed on a terminal.
fn confirmer(
    auto_approve: bool,
    json: bool,
    what: &'static str,
) -> Result<impl FnMut(&Prepared) -> bool + Send> {
    ensure_can_confirm(auto_approve, what)?;
    Ok(move |prepared: &Prepared| {
        warn_all(prepared);
        let plan = &prepared.planned.plan;
        if json {
            println!("{}", render::json(plan));
        } else {
            print!("{}", render::text(plan, stdout_style()));
        }
        if auto_approve {
            return true;
        }
        print!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    })
}

/// Ctrl-C: the first stops scheduling, the second aborts in-flight steps.
fn watch_interrupts() -> Interrupt {
    let interrupt = Interrupt::new();
    let handle = interrupt.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            match handle.escalate() {
                InterruptLevel::StopScheduling => {
                    eprintln!(
                        "\nInterrupted: finishing the steps in flight, starting nothing new (Ctrl-C again to abort them)."
                    )
                }
                _ => eprintln!(
                    "\nAborting the steps in flight; their intents are saved, so the next apply picks them up."
                ),
            }
        }
    });
    interrupt
}

async fn run_apply(
    d: &Deployment,
    request: ApplyRequest,
    auto_approve: bool,
    json: bool,
    what: &'static str,
) -> Result<u8> {
    Ok(run_apply_steps(d, request, auto_approve, json, what).await?.0)
}

/// [`run_apply`], also saying whether any step ran (and so may have changed something).
async fn run_apply_steps(
    d: &Deployment,
    request: ApplyRequest,
    auto_approve: bool,
    json: bool,
    what: &'static str,
) -> Result<(u8, bool)> {
    let progress = LazyProgress::new(json);
    let mut confirm = progress.confirming(confirmer(auto_approve, json, what)?);
    let applied = d.apply(&request, &mut confirm, &progress, watch_interrupts()).await?;
    progress.finish();
    match applied {
        Applied::NothingToDo(prepared) => {
            warn_all(&prepared);
            if json {
                println!("{}", render::json(&prepared.planned.plan));
            } else {
                println!("No changes. Network `{}` matches its spec.", prepared.planned.plan.network);
            }
            Ok((0, false))
        }
        Applied::Declined(_) => {
            eprintln!("{what} cancelled: nothing was changed.");
            Ok((1, false))
        }
        Applied::Ran(prepared, outcome) => {
            let ran =
                !(outcome.succeeded.is_empty() && outcome.failed.is_empty() && outcome.aborted.is_empty());
            Ok((report(&prepared, &outcome, json, what)?, ran))
        }
    }
}

fn report(prepared: &Prepared, outcome: &ApplyOutcome, json: bool, what: &str) -> Result<u8> {
    let plan = &prepared.planned.plan;
    if json {
        let doc = serde_json::json!({
            "network": plan.network,
            "chain_id": plan.chain_id.as_str(),
            "succeeded": outcome.succeeded.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "failed": outcome.failed.iter().map(|(a, e)| serde_json::json!({"address": a.to_string(), "error": e.to_string()})).collect::<Vec<_>>(),
            "skipped": outcome.skipped.iter().map(|(a, b)| serde_json::json!({"address": a.to_string(), "because": b.to_string()})).collect::<Vec<_>>(),
            "not_started": outcome.not_started.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "interrupted": outcome.interrupted,
            "stopped_rollouts": render::stopped_rollouts(plan, &outcome.failed, &outcome.succeeded),
            "left_behind": outcome.left_behind,
            "success": outcome.is_success(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let s = plan.summary();
        if outcome.is_success() {
            println!(
                "\n{} complete! {} added, {} changed, {} replaced, {} destroyed. Chain {}.",
                capitalize(what),
                s.create,
                s.update,
                s.replace,
                s.delete,
                plan.chain_id
            );
        } else {
            eprintln!(
                "\n{} did not complete: {} of {} steps succeeded.",
                capitalize(what),
                outcome.succeeded.len(),
                plan.changes.len()
            );
            for (address, error) in &outcome.failed {
                eprintln!("  ✗ {address}: {error}");
            }
            for line in render::stopped_rollouts(plan, &outcome.failed, &outcome.succeeded) {
                eprintln!("  {line}");
            }
            for left in &outcome.left_behind {
                eprintln!("  ✗ left behind: {left}");
            }
            if !outcome.skipped.is_empty() {
                eprintln!(
                    "  {} step(s) skipped because a step they depend on failed.",
                    outcome.skipped.len()
                );
            }
            if outcome.interrupted {
                eprintln!(
                    "  Interrupted: {} step(s) not started. Run apply again to continue.",
                    outcome.not_started.len()
                );
            }
            if let Some(e) = &outcome.state_error {
                eprintln!("  The state could not be saved: {e}");
            }
        }
    }
    Ok(if outcome.is_success() { 0 } else { 1 })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

async fn apply(a: ApplyArgs) -> Result<u8> {
    let d = state::deployment(&a.planning.target).await?;
    let saved = a.plan_file.as_deref().map(read_plan).transpose()?;
    if let Some(p) = &saved
        && p.network != d.network().name
    {
        bail!(
            "the plan file is for network `{}`, but {} declares `{}`",
            p.network,
            a.planning.target.spec.file.display(),
            d.network().name
        );
    }
    let request = ApplyRequest {
        plan: PlanRequest {
            only: saved.as_ref().map(|p| p.only).unwrap_or(layer(a.planning.only)),
            no_refresh: false,
            destroy: false,
            replace_genesis: chain_arg(&a.planning.replace_genesis)?,
        },
        // A saved plan was already reviewed: it runs without asking again, like Terraform's.
        saved,
        parallelism: a.parallelism as usize,
        lock_timeout: Duration::from_secs(a.lock_timeout),
        lock_lease: Duration::from_secs(a.lock_lease),
    };
    let auto = a.auto_approve || request.saved.is_some();
    run_apply(&d, request, auto, a.json, "apply").await
}

async fn destroy(a: DestroyArgs) -> Result<u8> {
    let d = state::deployment(&a.target).await?;
    let request = ApplyRequest {
        plan: PlanRequest {
            destroy: true,
            replace_genesis: chain_arg(&a.replace_genesis)?,
            ..PlanRequest::default()
        },
        saved: None,
        parallelism: a.parallelism as usize,
        lock_timeout: Duration::from_secs(a.lock_timeout),
        lock_lease: Duration::from_secs(a.lock_lease),
    };
    run_apply(&d, request, a.auto_approve, false, "destroy").await
}

async fn show(a: ShowArgs) -> Result<u8> {
    let d = state::deployment(&a.target).await?;
    let request = PlanRequest { no_refresh: !a.refresh, only: layer(a.only), ..PlanRequest::default() };
    let prepared = d.plan(&request).await?;
    if a.json {
        println!("{}", show::json(&prepared));
    } else {
        print!("{}", show::text(&prepared));
    }
    Ok(0)
}

async fn graph(a: GraphArgs) -> Result<u8> {
    let d = state::deployment(&a.target).await?;
    let prepared = d.plan(&PlanRequest { only: layer(a.only), ..PlanRequest::default() }).await?;
    if a.changes {
        print!("{}", render::dot(&prepared.planned.plan));
    } else {
        print!("{}", peerfleet::core::graph::dot(&prepared.planned.plan, &prepared.actual));
    }
    Ok(0)
}

async fn scale(a: ScaleArgs) -> Result<u8> {
    let file = &a.target.spec.file;
    // Check everything that can be checked before the file is touched.
    ensure_can_confirm(a.auto_approve, "scale")?;
    let scaled = spec::edit::set_containers(file, &a.service, a.containers).map_err(|e| anyhow!("{e}"))?;
    eprintln!("{}: service `{}` containers {} → {}", file.display(), a.service, scaled.before, scaled.after);
    let d = state::deployment_of(scaled.network, &a.target).await?;
    let request = ApplyRequest { parallelism: a.parallelism as usize, ..ApplyRequest::default() };
    let result = run_apply_steps(&d, request, a.auto_approve, false, "scale").await;
    // The spec is the source of truth: once a step ran, the file must keep the new count, or the next
    // apply would undo what succeeded. Declined, or failed before anything ran: put the count back.
    let ran = matches!(&result, Ok((0, _)) | Ok((_, true)));
    if ran && !matches!(&result, Ok((0, _))) {
        eprintln!(
            "{}: kept containers = {} because some steps ran; run `peerfleet apply` to finish the scale.",
            file.display(),
            scaled.after
        );
    }
    let result = result.map(|(code, _)| code);
    if !ran && scaled.before != scaled.after && matches!(result, Ok(1) | Err(_)) {
        if let Err(e) = spec::edit::set_containers(file, &a.service, scaled.before) {
            eprintln!("Warning: could not restore containers = {} in {}: {e}", scaled.before, file.display());
        } else {
            eprintln!(
                "{}: restored containers = {} (the scale did not complete).",
                file.display(),
                scaled.before
            );
        }
    }
    result
}

fn genesis_new(name: &str, out: Option<&Path>) -> Result<u8> {
    let bytes = peerfleet::node::genesis::new_genesis(name);
    let id = ChainId::of(&bytes);
    match out {
        Some(path) => {
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).open(path).with_context(|| {
                    format!("creating {} (an existing genesis file is never overwritten)", path.display())
                })?;
            f.write_all(&bytes)?;
            eprintln!("Wrote {} — chain ID {id}", path.display());
        }
        None => {
            std::io::stdout().write_all(&bytes)?;
            eprintln!("chain ID {id}");
        }
    }
    Ok(0)
}
