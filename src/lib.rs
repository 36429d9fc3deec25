//! creditbook: the credit ledger, pre-call authorization gate and revenue books of an AI product.
//! DESIGN.md is the contract; this crate follows its layout: `domain` (pure), `store`
//! (sea-orm), `http` (axum), `jobs` (time-driven work).

pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod store;
pub mod stripe;

use clock::{Clock, SystemClock, TestClock};
use config::Config;
use http::AppState;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

/// Connects, migrates and assembles the service's state.
pub async fn build_state(config: &Config, test_clock: bool) -> error::Result<AppState> {
    let test_clock = test_clock.then(|| TestClock::starting_at(chrono::Utc::now()));
    build_state_with_clock(config, test_clock).await
}

/// `build_state` with a given test clock (tests start it where they need).
pub async fn build_state_with_clock(
    config: &Config,
    test_clock: Option<TestClock>,
) -> error::Result<AppState> {
    let catalog = Arc::new(config.catalog.clone());
    let store = Store::connect(&config.database_url)
        .await?
        .with_catalog(catalog.clone())
        .with_batching(config.batching);
    store.migrate().await?;
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    Ok(AppState {
        store,
        catalog,
        clock,
        test_clock,
        metrics: Arc::new(metrics::Metrics::default()),
        hold_timeout_seconds: config.hold_timeout_seconds,
        stripe: Arc::new(config.stripe.clone()),
    })
}

/// Serves HTTP on `listener` and runs the expiry job every `job_interval_seconds` until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    job_interval_seconds: u64,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let job_state = state.clone();
    let jobs = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(job_interval_seconds));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match jobs::run_due(&job_state.store, job_state.clock.now()).await {
                Ok((settled, _)) => {
                    metrics::Metrics::add(&job_state.metrics.customers_settled_by_jobs, settled);
                }
                Err(e) => tracing::warn!(error = %e, "expiry job failed; it runs again next tick"),
            }
        }
    });
    let result = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    jobs.abort();
    result
}
