//! The `troupe` command: argument parsing and wiring only; the work is in the
//! `troupe` crates.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod backend;
mod cli;
mod cmd_bench;
mod cmd_run;
mod cmd_serve;
mod cmd_tasks;
mod cmd_worker;
mod live;
mod settings;
mod telemetry;

use clap::Parser as _;

use crate::cli::{Cli, Command, DlqCommand, TasksCommand};
use crate::settings::Settings;

/// Exit code for bad usage, configuration or setup.
const EXIT_USAGE: i32 = 2;

fn main() {
    let cli = Cli::parse();
    // The configuration is read once, before anything else, so that a bad
    // key or value stops the command with a clear message.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let settings = match Settings::load(cli.config.as_deref(), &env, &cli.command.backend_flags()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("troupe: {e:#}");
            std::process::exit(EXIT_USAGE);
        }
    };
    // Logs go to stderr; traces to an OTLP endpoint when one is configured.
    let telemetry =
        match telemetry::TelemetryConfig::resolve(&settings.log, &settings.traces, |k| {
            std::env::var(k).ok()
        })
        .and_then(|config| telemetry::init(&config))
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("troupe: {e:#}");
                std::process::exit(EXIT_USAGE);
            }
        };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("troupe: cannot start the async runtime: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let code = runtime.block_on(async {
        match dispatch(cli.command, settings).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("troupe: {e:#}");
                EXIT_USAGE
            }
        }
    });
    // Outside the runtime: the trace exporter flushes on its own thread.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    telemetry.shutdown();
    std::process::exit(code);
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Run(args) => cmd_run::run(args, settings).await,
        Command::Serve(args) => cmd_serve::serve(args, settings).await,
        Command::Bench(args) => cmd_bench::bench(args, settings).await,
        Command::Worker(args) => cmd_worker::worker(args, settings).await,
        Command::Workers(args) => cmd_worker::workers(args, settings).await,
        Command::Dlq(DlqCommand::List(args)) => cmd_worker::dlq_list(args, settings).await,
        Command::Dlq(DlqCommand::Requeue(args)) => cmd_worker::dlq_requeue(args, settings).await,
        Command::Tasks(TasksCommand::List(args)) => cmd_tasks::list(args, settings).await,
        Command::Tasks(TasksCommand::Show(args)) => cmd_tasks::show(args, settings).await,
    }
}
