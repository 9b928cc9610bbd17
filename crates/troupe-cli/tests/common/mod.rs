//! Running the `troupe` binary from the tests, cut off from the caller's
//! environment (each test binary uses part of this).

#![allow(dead_code)]
#![allow(clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output};

use serde_json::Value;

/// Settings a developer's shell may carry that would change what a test sees.
const AMBIENT: &[&str] = &[
    "TROUPE_LLM",
    "TROUPE_STORE",
    "TROUPE_CONFIG",
    "TROUPE_ENV",
    "TROUPE_LOG_FORMAT",
    "TROUPE_FALLBACK_LLM",
    "TROUPE_METRICS_ADDR",
    "OPENAI_API_KEY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
];

/// `troupe ARGS` in `dir`, without the ambient settings.
pub(crate) fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_troupe"));
    command.args(args).current_dir(dir);
    for name in AMBIENT {
        command.env_remove(name);
    }
    command
}

/// Runs `troupe ARGS` with `env` set, to its end.
pub(crate) fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(dir, args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the troupe binary runs")
}

/// Stderr as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout as one JSON document.
pub(crate) fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// A running `troupe`, killed however the test ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
