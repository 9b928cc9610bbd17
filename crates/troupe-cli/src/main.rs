//! The `troupe` command: argument parsing and wiring only; the work is in the
//! `troupe` crates.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod backend;
mod cli;
mod cmd_bench;
mod cmd_run;
mod cmd_tasks;
mod live;
mod settings;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, TasksCommand};
use crate::settings::Settings;

/// Exit code for bad usage, configuration or setup.
const EXIT_USAGE: i32 = 2;

fn main() {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG overrides the quiet default.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

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
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_run::run(args, settings).await
        }
        Command::Bench(args) => {
            let settings = Settings::load(cli.config.as_deref(), &args.backend)?;
            cmd_bench::bench(args, settings).await
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
