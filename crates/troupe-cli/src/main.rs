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
    // Logs go to stderr; traces to an OTLP endpoint when one is configured.
    let telemetry =
        match telemetry::TelemetryConfig::load(cli.config.as_deref(), |k| std::env::var(k).ok())
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
        match dispatch(cli).await {
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

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_run::run(args, settings).await
        }
        Command::Serve(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_serve::serve(args, settings).await
        }
        Command::Bench(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_bench::bench(args, settings).await
        }
        Command::Worker(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_worker::worker(args, settings).await
        }
        Command::Workers(args) => {
            let settings = bus_settings(cli.config.as_deref(), args.bus.clone())?;
            cmd_worker::workers(args, settings).await
        }
        Command::Dlq(DlqCommand::List(args)) => {
            let settings = bus_settings(cli.config.as_deref(), args.bus.bus.clone())?;
            cmd_worker::dlq_list(args, settings).await
        }
        Command::Dlq(DlqCommand::Requeue(args)) => {
            let settings = bus_settings(cli.config.as_deref(), args.dlq.bus.bus.clone())?;
            cmd_worker::dlq_requeue(args, settings).await
        }
        Command::Tasks(TasksCommand::List(args)) => {
            let flags = cli::BackendArgs {
                store: args.store.store.clone(),
                ..Default::default()
            };
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            cmd_tasks::list(args, settings.backend.store).await
        }
        Command::Tasks(TasksCommand::Show(args)) => {
            let flags = cli::BackendArgs {
                store: args.store.store.clone(),
                ..Default::default()
            };
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            cmd_tasks::show(args, settings.backend.store).await
        }
    }
}

/// The settings of a command that only looks at the bus.
fn bus_settings(file: Option<&std::path::Path>, bus: Option<String>) -> anyhow::Result<Settings> {
    let flags = cli::BackendArgs {
        bus,
        ..Default::default()
    };
    Settings::load(file, &flags)
}
