//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Troupe: multi-agent LLM orchestration.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, long_about = None)]
pub(crate) struct Cli {
    /// A TOML configuration file (flags and TROUPE_* variables override it).
    #[arg(long, global = true, env = "TROUPE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Command {
    /// The `[backend]` flags this command was given, laid over the
    /// configuration file and the environment.
    pub(crate) fn backend_flags(&self) -> BackendArgs {
        match self {
            Command::Run(a) => a.backend.clone(),
            Command::Serve(a) => a.backend.clone(),
            Command::Bench(a) => a.backend.clone(),
            Command::Worker(a) => a.backend.clone(),
            Command::Workers(a) => a.flags(),
            Command::Dlq(DlqCommand::List(a)) => a.bus.flags(),
            Command::Dlq(DlqCommand::Requeue(a)) => a.dlq.bus.flags(),
            Command::Tasks(TasksCommand::List(a)) => a.store.flags(),
            Command::Tasks(TasksCommand::Show(a)) => a.store.flags(),
        }
    }
}

impl BusArgs {
    fn flags(&self) -> BackendArgs {
        BackendArgs {
            bus: self.bus.clone(),
            ..BackendArgs::default()
        }
    }
}

impl StoreArgs {
    fn flags(&self) -> BackendArgs {
        BackendArgs {
            store: self.store.clone(),
            ..BackendArgs::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one goal to its end in this process and print the answer.
    Run(RunArgs),
    /// Inspect stored tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Measure throughput and latency of whole tasks (prints JSON).
    Bench(BenchArgs),
    /// Serve the HTTP API (tasks, /healthz, /metrics) with an orchestrator and workers.
    Serve(ServeArgs),
    /// Run workers of one role that take subtasks off a shared bus.
    Worker(WorkerArgs),
    /// List the live workers on the bus (its worker registry).
    Workers(BusArgs),
    /// Inspect and requeue dead letters (messages set aside after too many deliveries).
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `troupe worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// The role served: researcher, coder, analyst, writer or reviewer.
    #[arg(long, env = "TROUPE_ROLE", value_name = "ROLE")]
    pub(crate) role: String,
    /// Subtasks run at once (default: workers.concurrency of the configuration).
    #[arg(long, env = "TROUPE_CONCURRENCY", value_name = "N")]
    pub(crate) concurrency: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "TROUPE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
}

/// A bus to inspect.
#[derive(Debug, Args)]
pub(crate) struct BusArgs {
    /// The bus: redis://... (or memory, which is empty in a new process).
    #[arg(long, env = "TROUPE_BUS", value_name = "URL")]
    pub(crate) bus: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List a topic's dead letters, oldest first.
    List(DlqArgs),
    /// Put dead letters back on their topic (all, or those named by --id).
    Requeue(DlqRequeueArgs),
}

/// Which dead letters.
#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// The topic: `role.NAME` for a role's subtasks, `inbox.AGENT` for replies.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) topic: String,
}

/// `troupe dlq requeue`.
#[derive(Debug, Args)]
pub(crate) struct DlqRequeueArgs {
    #[command(flatten)]
    pub(crate) dlq: DlqArgs,
    /// Only the dead letter with this message id (repeat for more).
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    pub(crate) ids: Vec<String>,
}

/// `troupe serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Where to listen (port 0: any free port, printed at start).
    #[arg(
        long,
        env = "TROUPE_ADDR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080"
    )]
    pub(crate) addr: String,
    /// Host the built-in workers in this process even on a shared bus (on
    /// the memory bus they always are).
    #[arg(long)]
    pub(crate) workers: bool,
}

/// Where the LLM, the ledgers and the messages live.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct BackendArgs {
    /// The LLM: mock, mock:FILE, local, openai, or an OpenAI-compatible base URL
    /// (default: openai when OPENAI_API_KEY is set, else local).
    #[arg(long, env = "TROUPE_LLM", value_name = "SPEC")]
    pub(crate) llm: Option<String>,
    /// A provider to fall back on when the ones before are unavailable or
    /// refuse a request for good: a --llm SPEC, with `#MODEL` to name its
    /// model (repeat for more, in order).
    #[arg(
        long = "fallback-llm",
        env = "TROUPE_FALLBACK_LLM",
        value_delimiter = ',',
        value_name = "SPEC[#MODEL]"
    )]
    pub(crate) fallback_llm: Vec<String>,
    /// The model name for the LLM.
    #[arg(long, env = "TROUPE_MODEL", value_name = "NAME")]
    pub(crate) model: Option<String>,
    /// The store: sqlite://PATH (default sqlite://troupe.db), postgres://... or memory.
    #[arg(long, env = "TROUPE_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,
    /// The bus: memory (default), or redis://HOST[:PORT][/DB] (rediss:// for TLS).
    #[arg(long, env = "TROUPE_BUS", value_name = "URL")]
    pub(crate) bus: Option<String>,
    /// How the LLM server is held to JSON: json_schema (default), json_object or prompt.
    #[arg(long, env = "TROUPE_STRUCTURED_OUTPUT", value_name = "MODE")]
    pub(crate) structured_output: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Print one JSON document instead of the answer.
    #[arg(long)]
    pub(crate) json: bool,
    /// Host the built-in workers in this process even on a shared bus.
    #[arg(long)]
    pub(crate) workers: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the task runs.
    #[arg(long, env = "TROUPE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
    /// The goal.
    #[arg(value_name = "GOAL")]
    pub(crate) goal: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// List tasks, newest first.
    List(ListArgs),
    /// Show a task's ledger and its progress ledger.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The store: sqlite://PATH (default sqlite://troupe.db) or postgres://....
    #[arg(long, env = "TROUPE_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Only tasks with this status.
    #[arg(long, value_name = "STATUS")]
    pub(crate) status: Option<String>,
    /// The most tasks to list.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
    /// Only tasks older than this one (the next page).
    #[arg(long, value_name = "TASK_ID")]
    pub(crate) before: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// The task's id.
    #[arg(value_name = "TASK_ID")]
    pub(crate) id: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Tasks to measure.
    #[arg(long, default_value_t = 1000)]
    pub(crate) tasks: usize,
    /// Tasks in flight at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// Host the built-in workers in this process even on a shared bus.
    #[arg(long)]
    pub(crate) workers: bool,
    /// Tasks run first and not measured (default: a tenth of --tasks, at most 500).
    #[arg(long)]
    pub(crate) warmup: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics during the run (and
    /// measure with the recorder installed).
    #[arg(long, env = "TROUPE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
}
