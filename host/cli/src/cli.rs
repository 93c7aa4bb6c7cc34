//! The command line: every command, its arguments and an example in its help.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use stepflow_store::RunStatus;

/// Runs resumable, multi-step workflows whose steps are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "stepflow", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// The run database: a SQLite file, or a PostgreSQL URL (postgres://USER@HOST/DATABASE)
    /// that several servers share.
    #[arg(long, global = true, env = "STEPFLOW_DB", value_name = "FILE|URL")]
    pub db: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// The largest flow file read (a size like 4MiB).
    #[arg(long, global = true, value_name = "SIZE", default_value = "4MiB", value_parser = size)]
    pub max_flow_size: u64,

    /// The largest a run's data document may grow (as JSON): a step whose patch would make it
    /// larger fails, and its patch is not applied.
    #[arg(long, global = true, value_name = "SIZE", default_value = "64MiB", value_parser = size)]
    pub max_data: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown under `--help`.
pub const EXIT_CODES: &str = "Exit codes:
  0  completed (or the command succeeded)
  1  the run failed: a step error that no retry took
  2  usage or validation error: a bad command line, flow file or plugin
  3  interrupted or waiting: the run is saved; `stepflow resume RUN` continues it
  4  storage error: the run database could not be read or written
  5  the run was cancelled";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a run of a flow file and drive it to the end.
    #[command(
        after_help = "Example:\n  stepflow run examples/quickstart.yaml --input '{\"version\": \"2.0\"}'"
    )]
    Run {
        /// The flow file (YAML).
        flow: PathBuf,
        /// Data merged into the flow's initial data document: JSON text, or @file.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// The largest `--input` accepted (a size like 16MiB); it bounds the memory a run starts
        /// with.
        #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = size)]
        max_input: u64,
        /// Build the flow's plugins with their `build` commands before running.
        #[arg(long)]
        build: bool,
        /// How long a `build` command may run before it is stopped with everything it started.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = duration)]
        build_timeout: std::time::Duration,
        /// Save the run and stop at the first wait instead of sleeping through it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Continue a saved run from where it stopped.
    #[command(after_help = "Example:\n  stepflow resume 20261128-101500-4f2a")]
    Resume {
        /// The run id (see `stepflow runs`).
        run: String,
        /// Check a waiting step at once instead of sleeping until it is due (cuts a wait's
        /// `every` or a retry back-off short; a wait's `timeout` still counts).
        #[arg(long)]
        now: bool,
        /// Save the run and stop at the first wait instead of sleeping through it.
        #[arg(long)]
        no_wait: bool,
    },
    /// List runs, newest first.
    #[command(after_help = "Example:\n  stepflow runs --status failed")]
    Runs {
        /// Only runs with this status.
        #[arg(long, value_parser = status_parser())]
        status: Option<RunStatus>,
        /// Only runs of this flow (its name, e.g. `deploy.v1`).
        #[arg(long, value_name = "NAME")]
        flow: Option<String>,
        /// Only runs on this deployment (an id, or 8 or more of its leading hex digits).
        #[arg(long, value_name = "DEPLOYMENT")]
        deployment: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a run: each step call with its outcome, and the data document.
    #[command(after_help = "Example:\n  stepflow show 20261128-101500-4f2a")]
    Show {
        /// The run id.
        run: String,
    },
    /// Check a flow file: parse it, load its plugins, check every function it uses.
    #[command(after_help = "Example:\n  stepflow validate examples/deploy.yaml")]
    Validate {
        /// The flow file.
        flow: PathBuf,
    },
    /// List a plugin's step functions and their kinds, and what is not a step function.
    #[command(
        after_help = "Example:\n  stepflow inspect plugins/rust/target/wasm32-wasip2/release/deploy.wasm"
    )]
    Inspect {
        /// The component (`.wasm`).
        plugin: PathBuf,
    },
    /// Create, build and test a plugin project of your own, in any folder.
    #[command(
        subcommand,
        after_help = "Example:\n  stepflow plugin new --lang python greeter\n  stepflow plugin test greeter"
    )]
    Plugin(PluginCommand),
    /// Draw a flow as a state diagram.
    #[command(
        after_help = "Example:\n  stepflow graph examples/deploy.yaml --format dot | dot -Tsvg > deploy.svg"
    )]
    Graph {
        /// The flow file.
        flow: PathBuf,
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// List deployments, newest first: each flow file and plugin content a run was started
    /// from, kept in the run database.
    #[command(after_help = "Example:\n  stepflow deployments --flow deploy.v1")]
    Deployments {
        /// Only deployments of this flow (its name, e.g. `deploy.v1`).
        #[arg(long, value_name = "NAME")]
        flow: Option<String>,
        /// At most this many deployments.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Move a waiting or failed run onto another deployment of its flow; refused when a step
    /// the run is at is not in the new flow.
    #[command(
        after_help = "Example:\n  stepflow upgrade 20261128-101500-4f2a\n  stepflow upgrade 20261128-101500-4f2a --to 3f9a1c0b2d4e --dry-run\n  stepflow upgrade --flow deploy.v1 --dry-run",
        group = clap::ArgGroup::new("which").required(true).args(["run", "flow"])
    )]
    Upgrade {
        /// The run id.
        run: Option<String>,
        /// The deployment to move onto (an id, or 8 or more of its leading hex digits); default:
        /// the newest deployment of the run's flow.
        #[arg(long, value_name = "DEPLOYMENT")]
        to: Option<String>,
        /// Only say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run and no RUN: list every waiting or failed run of this flow and whether
        /// it could move.
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "run",
            requires = "dry_run"
        )]
        flow: Option<String>,
    },
    /// Start a run of a flow file for `stepflow server` to drive; prints the run id and
    /// returns at once.
    #[command(
        after_help = "Example:\n  stepflow submit examples/deploy.yaml --input '{\"version\": \"2.1\"}'\n\nThe flow's source and plugins are stored with the run, so the files may change or go away afterwards."
    )]
    Submit {
        /// The flow file (YAML).
        flow: PathBuf,
        /// Data merged into the flow's initial data document: JSON text, or @file.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// The largest `--input` accepted (a size like 16MiB).
        #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = size)]
        max_input: u64,
        /// Build the flow's plugins with their `build` commands before submitting.
        #[arg(long)]
        build: bool,
        /// How long a `build` command may run before it is stopped with everything it started.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = duration)]
        build_timeout: std::time::Duration,
    },
    /// Drive every due run of the database until stopped: submitted runs, runs whose wait or
    /// back-off ends, runs whose driver died.
    #[command(
        after_help = "Example:\n  stepflow server --concurrency 32\n\nCtrl-C or SIGTERM stops claiming runs and lets the steps in flight finish; a second one abandons them (they run again on the next start)."
    )]
    Server {
        /// The most runs driven at once.
        #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=4096))]
        concurrency: u16,
        /// How many threads drive runs (default: four per core). Servers that share one host
        /// split its cores: give each its part (e.g. 4 for two servers on 2 cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        drive_threads: Option<u16>,
        /// How long a claim on a run lasts unless this server renews it (it renews at half
        /// time): how soon another server takes over the runs of one that died or hangs. A
        /// flow whose steps may run longer gets twice its longest step time.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
        lease: std::time::Duration,
        /// How log lines are written: text for people, JSON (one object per line) for log
        /// collectors.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Where the HTTP API and the web page listen (port 0: any free port, logged).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7700")]
        listen: std::net::SocketAddr,
        /// Serve no HTTP API and no web page.
        #[arg(long, conflicts_with_all = ["listen", "reads_need_token", "allow_dir", "allow_env"])]
        no_api: bool,
        /// Make reads of the API need the token too (writes always do).
        #[arg(long)]
        reads_need_token: bool,
        /// A directory that flows submitted over HTTP may grant their plugins (and all below
        /// it); add `:rw` to let them write there. Repeatable. Default: none.
        #[arg(long, value_name = "DIR[:rw]")]
        allow_dir: Vec<String>,
        /// An environment variable that flows submitted over HTTP may grant their plugins.
        /// Repeatable. Default: none.
        #[arg(long, value_name = "NAME")]
        allow_env: Vec<String>,
    },
    /// Send a signal to a run: a wait for it (`wait-for: {signal: NAME}`) moves on. A signal
    /// that arrives before the run reaches its wait is kept for it.
    #[command(
        after_help = "Examples:\n  stepflow signal 20261128-101500-4f2a approve --data '{\"by\": \"ana\"}'\n  stepflow signal 20261128-101500-4f2a approve --id ticket-4711   # sent twice, applied once"
    )]
    Signal {
        /// The run id.
        run: String,
        /// The signal's name, as the flow's `wait-for: {signal: NAME}` spells it.
        name: String,
        /// The signal's payload, merged under `signals.NAME` in the run's data: JSON text, or
        /// @file (default `{}`).
        #[arg(long, value_name = "JSON|@FILE")]
        data: Option<String>,
        /// An id for this signal: a second delivery with the same id is applied once (a retry
        /// after a timeout, say). Default: a fresh id.
        #[arg(long)]
        id: Option<String>,
    },
    /// Start a new run from the state a run had after one of its steps (`stepflow show`
    /// numbers them): its history is replayed through its flow, no plugin runs, and the new
    /// run goes on from there on the same deployment.
    #[command(after_help = "Example:\n  stepflow rerun 20261128-101500-4f2a --from 3")]
    Rerun {
        /// The run id.
        run: String,
        /// The history entry (#) after which the new run starts; 0 starts from the run's
        /// first state.
        #[arg(long, value_name = "N")]
        from: u64,
    },
    /// Cancel a run so that it is never resumed.
    #[command(after_help = "Example:\n  stepflow cancel 20261128-101500-4f2a")]
    Cancel {
        /// The run id.
        run: String,
    },
}

/// A duration as flow files write it (`90s`, `30m`, `1h30m`).
fn duration(text: &str) -> Result<std::time::Duration, String> {
    stepflow_flowfile::parse_duration(text)
}

/// A size as flow files write it (`16MiB`, `1GB`).
fn size(text: &str) -> Result<u64, String> {
    stepflow_flowfile::parse_size(text)
}

/// `--status`: the store's own spellings of a run status, listed in `--help`.
fn status_parser() -> impl TypedValueParser<Value = RunStatus> {
    PossibleValuesParser::new(RunStatus::ALL.map(RunStatus::as_str))
        .try_map(|text| text.parse::<RunStatus>())
}

/// How `stepflow server` writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people, with a timestamp.
    Text,
    /// One JSON object per line.
    Json,
}

/// The diagram languages.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid `stateDiagram-v2` (renders on GitHub).
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// `stepflow plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project: its WIT world (with the `stepflow:plugin` package of this
    /// version), one step of each kind, a flow file that uses them and a `build` command.
    #[command(after_help = "Example:\n  stepflow plugin new --lang rust fetch-orders")]
    New {
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: PluginLanguage,
        /// Its name (kebab-case): the WIT world, the plugin in the flow file, the `.wasm` name.
        name: String,
        /// Where to create it (default: ./NAME); it must not exist or be empty.
        dir: Option<PathBuf>,
    },
    /// Build a plugin project into DIR/target/NAME.wasm; the first build of a language installs
    /// its pinned toolchain in the shared tools directory ($STEPFLOW_TOOLS_DIR, else
    /// ~/.cache/stepflow/tools).
    #[command(after_help = "Example:\n  stepflow plugin build fetch-orders")]
    Build {
        /// The project (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project, run its flow.yaml against a scratch database (DIR/target/test.db)
    /// and print the run's timeline.
    #[command(after_help = "Example:\n  stepflow plugin test fetch-orders")]
    Test {
        /// The project (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// The languages `stepflow plugin new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginLanguage {
    /// Rust with wit-bindgen, for wasm32-wasip2.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    #[value(alias = "js")]
    Javascript,
    /// C with wit-bindgen and zig cc.
    C,
}

impl std::fmt::Display for PluginLanguage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginLanguage::Rust => "rust",
            PluginLanguage::Python => "python",
            PluginLanguage::Javascript => "javascript",
            PluginLanguage::C => "c",
        })
    }
}
