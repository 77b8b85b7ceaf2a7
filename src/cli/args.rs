//! The command-line surface. Scripts and benchmarks rely on it: change it only compatibly.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declare a blockchain peer-server network (genesis server, master, relays) and converge real
/// infrastructure to it: AWS EC2, DigitalOcean, or virtual nodes on the local Docker engine.
#[derive(Debug, Parser)]
#[command(name = "peerfleet", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file without touching anything.
    Validate(SpecArgs),
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the infrastructure match the spec (or execute a saved plan).
    Apply(ApplyArgs),
    /// Remove everything peerfleet made for the network.
    Destroy(DestroyArgs),
    /// Show nodes, containers, placement and the chain ID.
    Show(ShowArgs),
    /// Print the network as a graph in Graphviz DOT: every resource, what it stands on, pending
    /// changes highlighted (`--changes`: only the plan's changes and their order).
    Graph(GraphArgs),
    /// The live network: each node and container, its health, chain and peers. Exit 0 healthy on the
    /// pinned chain, 2 degraded, 1 error.
    Status(StatusArgs),
    /// Set a service's container count in the spec file, then plan and apply.
    Scale(ScaleArgs),
    /// Remove a state lock left by a crashed run.
    ForceUnlock(StateArgs),
    /// Work on the state itself.
    #[command(subcommand)]
    State(StateCommand),
    /// Genesis files.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Print a shell completion script, e.g. `peerfleet completions bash > /etc/bash_completion.d/peerfleet`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `peerfleet man > peerfleet.1`.
    Man,
}

/// `-f FILE`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The network spec (network.toml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

/// `-f FILE [--state PATH]`.
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    /// The spec.
    pub spec: SpecArgs,
    /// Where the state lives: a file, or s3://BUCKET/KEY (default: the spec's [state] table, else
    /// .peerfleet/<network>.state.json beside the spec).
    #[arg(long, value_name = "PATH|s3://BUCKET/KEY")]
    pub state: Option<String>,
}

/// `state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the state to another location (a file or s3://BUCKET/KEY), keeping lineage and serial.
    /// Refuses a target holding another lineage; the source is left as it is.
    Migrate {
        #[command(flatten)]
        /// Spec and the current state.
        from: StateArgs,
        /// Where the state goes.
        #[arg(long, value_name = "PATH|s3://BUCKET/KEY")]
        to: String,
        /// Wait up to this many seconds for either state's lock.
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        lock_timeout: u64,
    },
}

/// A layer, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnlyLayer {
    /// Firewalls, machines and stable IPs.
    Machines,
    /// Containers.
    Containers,
}

/// Options shared by the commands that plan.
#[derive(Debug, Args)]
pub struct PlanningArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// Restrict to one layer.
    #[arg(long, value_enum)]
    pub only: Option<OnlyLayer>,
    /// Allow replacing or destroying the genesis server: name the CURRENT chain ID.
    #[arg(long, value_name = "CHAIN_ID")]
    pub replace_genesis: Option<String>,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    /// Common planning options.
    pub planning: PlanningArgs,
    /// Save the plan for `apply -f FILE PLANFILE`.
    #[arg(long, value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON (stable format, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
    /// Exit 2 when the plan has changes (0 when none, 1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Ask the providers what exists (default), or plan against the state file alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    /// Common planning options.
    pub planning: PlanningArgs,
    /// A plan saved by `plan --out`: executed exactly, refused when stale.
    #[arg(value_name = "PLANFILE")]
    pub plan_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// At most this many steps at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
    /// Print the plan and the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// Wait up to this many seconds for a state lock held by another run.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// A shared (S3) lock stays valid this many seconds after its holder stops renewing it (it renews
    /// every third): a run killed mid-apply blocks others for at most this long.
    #[arg(long, default_value_t = 120, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_lease: u64,
}

/// `destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Required when the network has a genesis server: name the CURRENT chain ID.
    #[arg(long, value_name = "CHAIN_ID")]
    pub replace_genesis: Option<String>,
    /// At most this many steps at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
    /// Wait up to this many seconds for a state lock held by another run.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// A shared (S3) lock stays valid this many seconds after its holder stops renewing it (it renews
    /// every third): a run killed mid-apply blocks others for at most this long.
    #[arg(long, default_value_t = 120, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_lease: u64,
}

/// `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Ask the providers (default), or show what the state file remembers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
    /// Restrict to one layer (`machines` never contacts a machine's container engine).
    #[arg(long, value_enum)]
    pub only: Option<OnlyLayer>,
}

/// `graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// Restrict to one layer (`machines` never contacts a machine's container engine).
    #[arg(long, value_enum)]
    pub only: Option<OnlyLayer>,
    /// Only the pending changes and the order apply runs them in (rollout batches boxed), instead of
    /// the whole network with the changes highlighted.
    #[arg(long)]
    pub changes: bool,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// Tables for people, and a summary line.
    Text,
    /// One JSON document per look (one line per look under --watch).
    Json,
    /// The Prometheus text exposition format (for node_exporter's textfile collector).
    Prometheus,
}

/// What `status --only` restricts the look to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOnly {
    /// The machines alone: no container engine is contacted.
    Machines,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// Print JSON (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
    /// Look again every SECONDS until interrupted (redraws on a terminal, appends elsewhere).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
    /// With --watch: stop after N looks (the exit code is the last look's).
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Restrict the look (`machines` never contacts a machine's container engine).
    #[arg(long, value_enum)]
    pub only: Option<StatusOnly>,
}

/// `scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    /// Spec and state.
    pub target: StateArgs,
    /// The service to scale.
    pub service: String,
    /// Its new container count.
    pub containers: u32,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// At most this many steps at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
}

/// `genesis ...`.
#[derive(Debug, Subcommand)]
pub enum GenesisCommand {
    /// Write a fresh genesis file (its sha256 becomes the chain ID).
    New {
        /// The chain's name inside the document.
        #[arg(long, default_value = "peerfleet-chain")]
        name: String,
        /// Where to write it (default: stdout). An existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn refresh_false_is_accepted_as_terraform_spells_it() {
        let cli = Cli::try_parse_from(["peerfleet", "plan", "-f", "n.toml", "--refresh=false"]).unwrap();
        let Command::Plan(p) = cli.command else { panic!() };
        assert!(!p.refresh);
    }
}
