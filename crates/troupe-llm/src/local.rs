//! [`LocalServer`]: llama.cpp's `llama-server` run by Troupe for the offline
//! model. It starts on a free 127.0.0.1 port, is ready when `/health` says so,
//! and stops when the handle is stopped or dropped.
//!
//! The server runs under a small `sh` watchdog whose standard input is a pipe
//! from this process: when the pipe closes (the handle is dropped, or this
//! process dies in any way, `kill -9` included) the watchdog stops the server.
//! So no `llama-server` outlives Troupe, without any platform-specific call.
//!
//! `scripts/local-model.sh` installs the binary and the model; [`LocalPaths`]
//! says where they are by default.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::config::{OpenAiConfig, StructuredOutput};

/// The model file `scripts/local-model.sh` installs.
pub const LOCAL_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The name the local model answers to.
pub const LOCAL_MODEL_NAME: &str = "smollm2-135m-instruct";

/// Lines of the server's output kept for error messages.
const LOG_LINES: usize = 40;

/// The watchdog: runs the server (`"$@"`) in the background, stops it when
/// standard input reaches its end (SIGTERM, then SIGKILL if it is still there
/// 5 s later: a server busy generating finishes its reply before it exits on
/// SIGTERM), and exits with the server's status. (Background jobs of a
/// non-interactive shell read /dev/null, so the pipe is kept on descriptor 3.)
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
server=$!
( while read -r _; do :; done <&3
  kill "$server" 2>/dev/null || exit 0
  for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5; kill -0 "$server" 2>/dev/null || exit 0; done
  kill -9 "$server" 2>/dev/null ) &
exec 3<&-
wait "$server""#;

/// How long a stopping server may take (the watchdog kills it after 5 s).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the binary and the model are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPaths {
    /// The `llama-server` binary.
    pub server: PathBuf,
    /// The GGUF model file.
    pub model: PathBuf,
}

impl LocalPaths {
    /// The layout `scripts/local-model.sh` installs under `home`
    /// (`bin/llama-server`, `models/SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub fn under(home: &Path) -> Self {
        Self {
            server: home.join("bin").join("llama-server"),
            model: home.join("models").join(LOCAL_MODEL_FILE),
        }
    }

    /// The paths in force, given a way to read settings by name (the
    /// environment, in the `troupe` command): `TROUPE_LLAMA_SERVER` and
    /// `TROUPE_LOCAL_MODEL` name the files; otherwise they are where
    /// `scripts/local-model.sh` installs them, under `TROUPE_HOME`, else
    /// `$XDG_CACHE_HOME/troupe`, else `$HOME/.cache/troupe`. Empty values count as unset.
    pub fn resolve(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = match (var("TROUPE_HOME"), var("XDG_CACHE_HOME")) {
            (Some(home), _) => PathBuf::from(home),
            (None, Some(cache)) => Path::new(&cache).join("troupe"),
            (None, None) => Path::new(&var("HOME").unwrap_or_else(|| ".".to_owned()))
                .join(".cache")
                .join("troupe"),
        };
        let defaults = Self::under(&home);
        Self {
            server: var("TROUPE_LLAMA_SERVER").map_or(defaults.server, PathBuf::from),
            model: var("TROUPE_LOCAL_MODEL").map_or(defaults.model, PathBuf::from),
        }
    }

    /// Checks that both files exist, with an error that says how to install them.
    pub fn check(&self) -> Result<(), LocalError> {
        for (what, path) in [("llama-server", &self.server), ("the model", &self.model)] {
            if !path.is_file() {
                return Err(LocalError::NotInstalled {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// How to run the local server.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModelConfig {
    /// Where the binary and the model are.
    pub paths: LocalPaths,
    /// The port, or `None` for a free one.
    pub port: Option<u16>,
    /// The context of each request, in tokens (the server gets this times `parallel`).
    pub ctx_size: u32,
    /// Requests served at once.
    pub parallel: u32,
    /// CPU threads, or `None` for the server's choice.
    pub threads: Option<u32>,
    /// How long loading may take before giving up.
    pub startup_timeout: Duration,
    /// The most tokens one reply may have (the small model can ramble on).
    pub max_tokens: u32,
}

impl LocalModelConfig {
    /// Defaults for the small model on a laptop: two requests at once with
    /// 8,192 tokens of context each (what SmolLM2 was trained on), replies of
    /// at most 768 tokens, 60 s to start.
    pub fn new(paths: LocalPaths) -> Self {
        Self {
            paths,
            port: None,
            ctx_size: 8_192,
            parallel: 2,
            threads: None,
            startup_timeout: Duration::from_secs(60),
            max_tokens: 768,
        }
    }
}

/// The local server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file is missing.
    #[error(
        "{what} is not installed at {}; run scripts/local-model.sh to install the offline model, \
         or set TROUPE_LLAMA_SERVER / TROUPE_LOCAL_MODEL, or use --llm openai or an OpenAI-compatible URL",
        path.display()
    )]
    NotInstalled {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The process could not be started.
    #[error("cannot start {}: {source}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The process ended before it was ready.
    #[error("llama-server exited before it was ready ({status}); its last output:\n{log}")]
    Exited {
        /// How it ended.
        status: String,
        /// Its last lines of output.
        log: String,
    },
    /// The process did not become ready in time.
    #[error("llama-server was not ready after {after:?}; its last output:\n{log}")]
    NotReady {
        /// How long was waited.
        after: Duration,
        /// Its last lines of output.
        log: String,
    },
    /// No free port could be found.
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    NoPort(std::io::Error),
}

/// A running `llama-server`.
#[derive(Debug)]
pub struct LocalServer {
    /// The watchdog; killed on drop.
    child: Child,
    /// The watchdog's standard input: closing it stops the server.
    lifeline: Option<ChildStdin>,
    port: u16,
    max_tokens: u32,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl LocalServer {
    /// Starts the server and waits until it has loaded the model. A port that
    /// another process took between choosing it and binding it is retried.
    pub async fn start(config: &LocalModelConfig) -> Result<Self, LocalError> {
        config.paths.check()?;
        let mut tries = 0;
        loop {
            tries += 1;
            let port = match config.port {
                Some(p) => p,
                None => free_port().map_err(LocalError::NoPort)?,
            };
            match Self::start_on(config, port).await {
                Err(LocalError::Exited { log, .. })
                    if config.port.is_none() && tries < 3 && log.contains("bind") =>
                {
                    tracing::debug!(port, "the chosen port was taken; trying another");
                }
                other => return other,
            }
        }
    }

    async fn start_on(config: &LocalModelConfig, port: u16) -> Result<Self, LocalError> {
        let mut command = Command::new("sh");
        command
            .args(["-c", WATCHDOG, "llama-server"])
            .arg(&config.paths.server)
            .arg("--model")
            .arg(&config.paths.model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--ctx-size",
                &(u64::from(config.ctx_size) * u64::from(config.parallel.max(1))).to_string(),
            ])
            .args(["--parallel", &config.parallel.to_string()])
            .args(["--alias", LOCAL_MODEL_NAME])
            .args(["--offline", "--no-webui"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(threads) = config.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        let mut child = command.spawn().map_err(|source| LocalError::Spawn {
            path: config.paths.server.clone(),
            source,
        })?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(keep_tail(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_tail(err, log.clone()));
        }
        let lifeline = child.stdin.take();
        let mut server = Self {
            child,
            lifeline,
            port,
            max_tokens: config.max_tokens,
            log,
        };
        tracing::info!(port, pid = server.child.id(), "starting llama-server");
        server.wait_ready(config.startup_timeout).await?;
        tracing::info!(port, "llama-server is ready");
        Ok(server)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), LocalError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| LocalError::NotReady {
                after: Duration::ZERO,
                log: e.to_string(),
            })?;
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the readers a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(LocalError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(LocalError::NotReady {
                    after: limit,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of its watchdog (the server's parent), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// A client configuration for this server: the model's name, JSON-schema
    /// output (llama.cpp turns the schema into a grammar), the reply limit.
    pub fn client_config(&self) -> OpenAiConfig {
        let mut config = OpenAiConfig::new(self.base_url(), LOCAL_MODEL_NAME);
        config.structured_output = StructuredOutput::JsonSchema;
        config.max_tokens = Some(self.max_tokens);
        config.name = "local".to_owned();
        config
    }

    /// The server's last lines of output.
    pub fn log_tail(&self) -> String {
        match self.log.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Stops the server and waits for it to exit (it is killed if it takes more than 5 s).
    pub async fn stop(mut self) {
        drop(self.lifeline.take());
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(_) => tracing::info!(port = self.port, "llama-server stopped"),
            Err(_) => {
                tracing::warn!(port = self.port, "llama-server did not stop; killing it");
                if let Err(e) = self.child.kill().await {
                    tracing::warn!(error = %e, "could not kill llama-server");
                }
            }
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Reads `stream` line by line, keeping the last [`LOG_LINES`].
async fn keep_tail(stream: impl AsyncRead + Unpin, log: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::trace!(target: "troupe_llm::llama_server", "{line}");
        if let Ok(mut tail) = log.lock() {
            if tail.len() == LOG_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_from_settings_then_the_install_layout() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let p = LocalPaths::resolve(vars(&[("HOME", "/home/u")]));
        assert_eq!(p, LocalPaths::under(Path::new("/home/u/.cache/troupe")));
        let p = LocalPaths::resolve(vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]));
        assert_eq!(p, LocalPaths::under(Path::new("/c/troupe")));
        let p = LocalPaths::resolve(vars(&[
            ("TROUPE_HOME", "/t"),
            ("XDG_CACHE_HOME", "/c"),
            ("TROUPE_LOCAL_MODEL", "/m.gguf"),
            ("TROUPE_LLAMA_SERVER", ""),
        ]));
        assert_eq!(p.server, Path::new("/t/bin/llama-server"));
        assert_eq!(p.model, Path::new("/m.gguf"));
    }

    #[test]
    fn missing_files_say_how_to_install() {
        let paths = LocalPaths::under(Path::new("/nonexistent/troupe"));
        assert_eq!(
            paths.server,
            Path::new("/nonexistent/troupe/bin/llama-server")
        );
        let err = paths.check().unwrap_err().to_string();
        assert!(err.contains("scripts/local-model.sh"), "{err}");
        assert!(
            err.contains("/nonexistent/troupe/bin/llama-server"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_server_that_dies_at_once_is_reported_with_its_output() {
        let dir = std::env::temp_dir().join(format!("troupe-local-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("models")).unwrap();
        let paths = LocalPaths::under(&dir);
        // A "server" that prints a line and fails.
        std::fs::write(
            &paths.server,
            "#!/bin/sh\necho 'error: model is corrupt' >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::write(&paths.model, b"not a gguf").unwrap();
        let mut perms = std::fs::metadata(&paths.server).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&paths.server, perms).unwrap();
        let err = LocalServer::start(&LocalModelConfig::new(paths))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LocalError::Exited { .. }), "{text}");
        assert!(text.contains("model is corrupt"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
