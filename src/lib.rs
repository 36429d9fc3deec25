//! creditbook: the credit ledger, pre-call authorization gate and revenue books of an AI product.
//! The README is the reference for its rules and interface; the crate's layout: `domain` (pure),
//! `store` (sea-orm), `http` (axum), `stripe`, `jobs` (time-driven work).

pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod outbound;
pub mod pages;
pub mod service;
pub mod store;
pub mod stripe;
pub mod supervise;

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
    let store = Store::connect_with(&config.database_url, config.pool)
        .await?
        .with_catalog(catalog.clone())
        .with_policy(crate::domain::gate::Policy {
            past_due_grace_seconds: config.stripe.past_due_grace_seconds,
        })
        .with_batching(config.batching)
        .with_key_cache(std::time::Duration::from_secs(config.key_cache_seconds))
        .with_retention(config.retention);
    store.migrate().await?;
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    Ok(AppState::new(http::Shared {
        store,
        catalog,
        clock,
        wall_clock: Arc::new(SystemClock),
        test_clock,
        metrics: Arc::new(metrics::Metrics::default()),
        hold_timeout_seconds: config.hold_timeout_seconds,
        stripe: Arc::new(config.stripe.clone()),
        webhooks: Arc::new(config.webhooks.clone()),
        outbox: config.outbox,
        pages: Arc::new(service::pages::Pages::new(&config.pages, &config.listen)),
        limits: config.limits,
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_concurrent_requests,
        )),
        sign_ins: Arc::default(),
    }))
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request was answered and the jobs stopped between runs.
    Drained,
    /// The drain took longer than its bound; what was still running was cut off.
    TimedOut,
}

/// Serves HTTP on `listener` and runs the expiry job every `job_interval_seconds` until
/// `shutdown` completes. Then it stops accepting connections, lets in-flight requests finish
/// (each one's batch commits before it is answered), lets a job run in progress finish and
/// starts no other, all within `drain`.
// Long: the server's start-up and orderly shutdown, step by step in the order they happen.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    job_interval_seconds: u64,
    drain: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let job_state = state.clone();
    let jobs = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(job_interval_seconds));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.changed() => return,
            }
            // A run is not interrupted: each customer's work commits, or is not begun.
            let run = jobs::run_due(&job_state.store, job_state.clock.now());
            match job_state.store.workers().round(supervise::JOBS, run).await {
                Some(Ok((settled, _))) => {
                    metrics::Metrics::add(&job_state.metrics.customers_settled_by_jobs, settled);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "expiry job failed; it runs again next tick");
                }
                // Logged and counted by the supervision; it runs again next tick.
                None => {}
            }
            metrics::refresh_gauges(&job_state.store, &job_state.metrics).await;
            // What may go, in small batches between the gate's.
            let prune = job_state
                .store
                .prune(job_state.clock.now(), job_state.wall_clock.now());
            if let Some(Err(e)) = job_state
                .store
                .workers()
                .round(supervise::JOBS, prune)
                .await
            {
                tracing::warn!(error = %e, "pruning failed; it runs again next tick");
            }
        }
    });
    let outbox = tokio::spawn(
        outbound::Worker {
            store: state.store.clone(),
            endpoints: state.webhooks.clone(),
            settings: state.outbox,
            wall_clock: state.wall_clock.clone(),
            metrics: state.metrics.clone(),
            stripe: stripe::api::StripeApi::from_config(&state.stripe).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no Stripe client: meter events are not sent");
                None
            }),
        }
        .run(stop.subscribe()),
    );
    let (signalled, drain_started) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
    let began = Arc::new(std::sync::OnceLock::new());
    let began_here = began.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!(
            drain_seconds = drain.as_secs(),
            "shutting down: no new connections; finishing in-flight requests"
        );
        let now = tokio::time::Instant::now();
        let _ = began_here.set(now);
        let _ = signalled.send(now);
    };
    let limits = state.limits;
    let server = async move {
        http::server::serve(
            listener,
            http::router(state, pages::routes::routes()),
            limits,
            shutdown,
        )
        .await;
        std::io::Result::Ok(())
    };
    tokio::pin!(server);
    let deadline = async {
        match drain_started.await {
            Ok(at) => tokio::time::sleep_until(at + drain).await,
            // The server ended without a shutdown: the other branch is ready.
            Err(_) => std::future::pending().await,
        }
    };
    let (served, timed_out) = tokio::select! {
        result = &mut server => (result.map(|()| Stopped::Drained), false),
        () = deadline => (Ok(Stopped::TimedOut), true),
    };
    let _ = stop.send(true);
    let jobs_stopped = if timed_out {
        jobs.abort();
        outbox.abort();
        false
    } else {
        // What is left of the drain, from when it began.
        let left = began.get().map_or(drain, |at| {
            (*at + drain).saturating_duration_since(tokio::time::Instant::now())
        });
        tokio::time::timeout(left, async {
            let _ = tokio::join!(jobs, outbox);
        })
        .await
        .is_ok()
    };
    match served {
        Ok(Stopped::Drained) if jobs_stopped => Ok(Stopped::Drained),
        Ok(_) => Ok(Stopped::TimedOut),
        Err(e) => Err(e),
    }
}
