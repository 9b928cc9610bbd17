//! `troupe serve`: the HTTP API with an orchestrator and (on the memory bus)
//! the built-in workers, until Ctrl-C or SIGTERM; and the metrics endpoint
//! that `troupe run --metrics-addr` starts.

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use troupe_server::{ApiState, Metrics, router};

use crate::backend::{self, Llms};
use crate::cli::ServeArgs;
use crate::cmd_run::stop_requested;
use crate::settings::Settings;

/// A running HTTP server.
pub(crate) struct Server {
    shutdown: CancellationToken,
    join: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` and serves `state` on it; prints where.
    async fn start(addr: &str, state: ApiState, what: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener
            .local_addr()
            .context("cannot read the bound address")?;
        eprintln!("troupe: {what} on http://{bound}");
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(troupe_server::serve(
            listener,
            router(state),
            shutdown.clone(),
        ));
        Ok(Self { shutdown, join })
    }

    /// Stops accepting, finishes the requests in progress.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        match self.join.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server failed"),
            Err(e) => tracing::warn!(error = %e, "the HTTP server stopped abnormally"),
        }
    }
}

/// Serves `/metrics` (and `/healthz`) on `addr`, if given, for this process.
pub(crate) async fn expose_metrics(addr: Option<&str>) -> anyhow::Result<Option<Server>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let metrics = Metrics::install().map_err(anyhow::Error::msg)?;
    let state = ApiState {
        troupe: None,
        metrics: Some(metrics),
    };
    Server::start(addr, state, "metrics").await.map(Some)
}

pub(crate) async fn serve(args: ServeArgs, settings: Settings) -> anyhow::Result<i32> {
    let metrics = Metrics::install().map_err(anyhow::Error::msg)?;
    let bus = backend::bus(&settings).await?;
    let host_workers = backend::bus_is_local(&settings) || args.workers;
    let llms = Llms::start(&settings).await?;
    let stores = backend::stores(settings.store_url(), &settings).await?;
    let config = llms.config(&settings);
    let troupe = llms.runtime(bus, stores, config, host_workers).await?;
    let state = ApiState {
        troupe: Some(troupe.clone()),
        metrics: Some(metrics),
    };
    let server = Server::start(&args.addr, state, "serving the API").await?;
    stop_requested().await;
    eprintln!("troupe: stopping");
    server.stop().await;
    troupe.shutdown().await;
    llms.stop().await;
    Ok(0)
}
