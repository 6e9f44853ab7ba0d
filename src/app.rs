//! Wiring: config → store, backend, results store → engine → HTTP server and reconcile loop.

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::jobs::Engine;
use crate::jobs::store::JobStore;
use crate::storage::ResultsStore;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate_for_serving().map_err(anyhow::Error::msg)?;
    let config = Arc::new(config);
    make_dirs(&config)?;
    let metrics = install_metrics()?;
    let store = JobStore::open(&config.database_path())
        .await
        .context("opening the job store")?;
    let mut backends = std::collections::BTreeMap::new();
    for b in &config.backends {
        backends.insert(b.name.clone(), crate::backends::build(&config, b).await?);
    }
    let results = ResultsStore::open(&config.outputs.results_url)?;
    let keeper = connect_keeper(&config).await?;
    let metadata = crate::assets::metadata::MetadataStore::new(store.pool());
    let chain_context = web::Data::new(crate::authorize::ChainContext::new(
        &config,
        keeper.clone(),
        metadata,
    )?);
    let engine = Engine::new(config.clone(), store.clone(), backends, results, keeper);

    let shutdown = CancellationToken::new();
    let reconcile = tokio::spawn(engine.clone().run(shutdown.clone()));
    let data = web::Data::from(engine.clone());
    let metrics = web::Data::new(metrics);
    info!(bind = %config.bind, data_dir = %config.data_dir.display(), instance = %config.instance, "brizo serving");
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(metrics.clone())
            .app_data(chain_context.clone())
            .configure(crate::api::extractor_config)
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let method = req.method().to_string();
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    metrics::histogram!("brizo_http_request_duration_seconds",
                        "method" => method, "route" => route, "status" => res.status().as_u16().to_string())
                    .record(started.elapsed().as_secs_f64());
                    Ok(res)
                }
            })
            .configure(crate::api::health::configure)
            .configure(crate::api::v2::configure)
            .configure(crate::api::v1::configure)
            .configure(crate::api::ui::configure)
            .default_service(web::to(crate::api::not_found))
    })
    .bind(config.bind)
    .with_context(|| format!("binding {}", config.bind))?
    .run();
    server.await?;
    shutdown.cancel();
    let _ = reconcile.await;
    store.close().await;
    info!("brizo stopped; running containers are re-attached at the next start");
    Ok(())
}

/// The data folders, and the dataset roots (so a first job on an empty machine finds them).
fn make_dirs(config: &Config) -> anyhow::Result<()> {
    for dir in [
        config.data_dir.clone(),
        config.jobs_dir(),
        config.logs_dir(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for root in &config.inputs.dataset_roots {
        let _ = std::fs::create_dir_all(root);
    }
    Ok(())
}

/// The Prometheus recorder `/metrics` renders, with its upkeep running.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ])
        .expect("buckets are valid")
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples wait in the recorder until upkeep folds them into the buckets: without
    // it, a service nobody scrapes kept every request's duration (it grew by megabytes a
    // thousand jobs). `install_recorder` leaves upkeep to the caller.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

/// The keeper (chain) connection when one is configured; an unreachable node is logged, not
/// fatal: v1 requests answer 503 until it is back, and jobs go on.
async fn connect_keeper(
    config: &Config,
) -> anyhow::Result<Option<Arc<crate::chain::keeper::Keeper>>> {
    let keeper = crate::chain::keeper::Keeper::connect(&config.chain)?.map(Arc::new);
    if let Some(k) = &keeper {
        match k.chain_id().await {
            Ok(id) => {
                info!(keeper = %k.url, chain_id = id, provider = %k.address, "keeper connected")
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(keeper)
}
