//! Group commit. Commands wait briefly in a queue; a worker takes what is waiting (up to
//! `max_batch_commands`, waiting at most `max_batch_wait` for more after the first) and runs it as
//! one batch in one transaction with one commit (`book::run_commands`), then answers each caller.
//! Stripe events wait in the same queues and are taken the same way: the commands of a round run
//! as one batch, then its events as another (`store::stripe`, one transaction, each event in a
//! savepoint): every batch of the process is run by these workers.
//! A batch that fails as a whole is run again command by command, so a failing command never
//! fails its neighbours. SQLite has one worker per process (one writer, no busy-handler
//! sleeping); PostgreSQL has several, each with its own queue: a customer's commands always go to
//! the same worker, so within a process batches never wait on each other's row locks (across
//! processes the row locks, taken in id order, serialise them).

use super::book::{self, Answers, Envelope, Executed, Phases};
use super::engine::Engine;
use super::stripe::{MAX_STRIPE_BATCH_EVENTS, StripeJob, StripeWork, run_stripe_batch};
use crate::domain::billing::Outcome;
use crate::domain::command::Answer;
use crate::domain::customer::CustomerId;
use crate::error::{Error, Result};
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Attempts of one batch when the database reports a transient failure.
const TRANSIENT_ATTEMPTS: u32 = 5;

/// How batches are formed. Defaults measured by `cargo bench --bench gate` (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most commands in one batch (one transaction, one commit).
    pub max_commands: usize,
    /// Longest a batch waits for more commands after its first arrived.
    pub max_wait: Duration,
    /// Batches in flight at once on PostgreSQL (SQLite always has one writer).
    pub postgres_workers: usize,
    /// How old a book kept in memory `check` may decide on (`[ledger] check_staleness_ms`).
    pub check_staleness: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_commands: DEFAULT_MAX_BATCH_COMMANDS,
            max_wait: Duration::from_micros(DEFAULT_MAX_BATCH_WAIT_MICROS),
            postgres_workers: DEFAULT_POSTGRES_WORKERS,
            check_staleness: Duration::from_millis(super::cache::DEFAULT_CHECK_STALENESS_MS),
        }
    }
}

pub const DEFAULT_MAX_BATCH_COMMANDS: usize = 256;
pub const DEFAULT_MAX_BATCH_WAIT_MICROS: u64 = 0;
pub const DEFAULT_POSTGRES_WORKERS: usize = 4;
/// Limits on what a config may set.
pub const MAX_BATCH_COMMANDS: usize = 4096;
pub const MAX_BATCH_WAIT_MICROS: u64 = 100_000;
pub const MAX_POSTGRES_WORKERS: usize = 64;

/// What a worker's queue carries: a command, or a Stripe event's work.
// Commands are nearly all of it: boxing them would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
enum Job {
    Command(CommandJob),
    Stripe(StripeJob, Instant),
}

impl Job {
    fn queued_at(&self) -> Instant {
        match self {
            Job::Command(job) => job.queued_at,
            Job::Stripe(_, queued_at) => *queued_at,
        }
    }
}

struct CommandJob {
    envelope: Envelope,
    reply: oneshot::Sender<Result<Executed<Answer>>>,
    queued_at: Instant,
}

/// The queues' sending sides, one per worker; workers end when their sender is gone.
pub(crate) struct Runner {
    queues: Vec<mpsc::Sender<Job>>,
    /// The books kept in memory: which organization a customer is in, to route its commands.
    books: Arc<super::cache::BookCache>,
}

impl Runner {
    pub fn start(engine: Engine, settings: BatchSettings) -> Runner {
        let max = settings.max_commands.max(1);
        let workers = if engine.sqlite() {
            1
        } else {
            settings.postgres_workers.max(1)
        };
        let books = engine.books.clone();
        let mut queues = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (queue, receiver) = mpsc::channel(max * 8);
            if engine.sqlite() {
                tokio::spawn(checkpoint(engine.db.clone(), queue.downgrade()));
            }
            tokio::spawn(work(engine.clone(), receiver, max, settings.max_wait));
            queues.push(queue);
        }
        Runner { queues, books }
    }

    /// Queues a command on its customer's worker (so one customer's commands share batches and
    /// never wait on each other's row locks); a customer of an organization's, on the worker of
    /// the organization's top as the kept books know it (its spends lock that book too). Its
    /// answer arrives once its batch has committed.
    pub async fn submit(&self, envelope: Envelope) -> oneshot::Receiver<Result<Executed<Answer>>> {
        let (reply, answer) = oneshot::channel();
        let route = self.route_of(&envelope.customer_id);
        let queue = &self.queues[worker_of(&route, self.queues.len())];
        let job = Job::Command(CommandJob {
            envelope,
            reply,
            queued_at: Instant::now(),
        });
        // If the workers are gone the job is dropped with its reply, and the caller's receiver
        // says so.
        let _ = queue.send(job).await;
        answer
    }

    /// The customer whose worker runs `customer`'s commands: the top of its organization, as far
    /// as the kept books say (a guess: a wrong one costs waits, never correctness).
    fn route_of(&self, customer: &CustomerId) -> String {
        crate::domain::organization::ancestors(customer, |c| {
            self.books.parent_of(c.as_str()).flatten()
        })
        .last()
        .unwrap_or(customer)
        .to_string()
    }

    /// Queues a Stripe event's work on the worker of its shard (`StripeWork::shard`: the same
    /// key as a customer's id, the same worker): applied in that worker's next Stripe batch.
    pub async fn submit_stripe(
        &self,
        shard: &str,
        work: Arc<dyn StripeWork>,
    ) -> oneshot::Receiver<Result<Outcome>> {
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[worker_of(shard, self.queues.len())];
        let _ = queue
            .send(Job::Stripe(StripeJob { work, reply }, Instant::now()))
            .await;
        answer
    }
}

/// The worker a customer's commands go to: the same one for as long as the process runs.
pub(crate) fn worker_of(customer_id: &str, workers: usize) -> usize {
    // FNV-1a: stable, and spreads ids that differ in one character.
    let hash = customer_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % workers as u64).expect("below the number of workers")
}

/// How often the SQLite log is checkpointed in the background.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Copies the SQLite write-ahead log into the database from a connection of its own
/// (`PASSIVE`: it never waits for or blocks the writer), so commits do not pay for it. Ends with
/// the runner.
async fn checkpoint(db: DatabaseConnection, runner: mpsc::WeakSender<Job>) {
    use sea_orm::ConnectionTrait;
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if runner.upgrade().is_none() {
            return;
        }
        if let Err(e) = db
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

async fn work(engine: Engine, mut receiver: mpsc::Receiver<Job>, max: usize, max_wait: Duration) {
    while let Some(first) = receiver.recv().await {
        let deadline = tokio::time::Instant::from_std(first.queued_at() + max_wait);
        let mut jobs = vec![first];
        while jobs.len() < max {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
            }
        }
        let (mut commands, mut events) = (Vec::new(), Vec::new());
        for job in jobs {
            match job {
                Job::Command(job) => commands.push(job),
                Job::Stripe(job, _) => events.push(job),
            }
        }
        let _permit = engine.write_permit().await;
        // A panic (a broken invariant) fails this batch's commands, whose callers are answered
        // 500 when their replies drop, and the runner goes on with the next batch.
        if !commands.is_empty() {
            engine
                .workers
                .round(crate::supervise::BATCH_RUNNER, run_batch(&engine, commands))
                .await;
        }
        // The Stripe events that waited with them: their own batches, each one transaction.
        while !events.is_empty() {
            let rest = events.split_off(events.len().min(MAX_STRIPE_BATCH_EVENTS));
            engine
                .workers
                .round(
                    crate::supervise::STRIPE_BATCHER,
                    run_stripe_batch(&engine, std::mem::replace(&mut events, rest)),
                )
                .await;
        }
    }
}

async fn run_batch(engine: &Engine, jobs: Vec<CommandJob>) {
    let started = Instant::now();
    let stats = &engine.stats;
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .commands
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    let waited: u128 = jobs
        .iter()
        .map(|j| started.saturating_duration_since(j.queued_at).as_micros())
        .sum();
    stats
        .queue_wait_micros
        .fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Ordering::Relaxed);
    let items: Vec<&Envelope> = jobs.iter().map(|j| &j.envelope).collect();
    let answers = match run_with_retries(engine, &items).await {
        Ok(answers) => answers,
        Err(e) if items.len() == 1 => vec![Err(e)],
        Err(e) => {
            stats.split_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, commands = items.len(), "batch failed; running its commands one by one");
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                answers.push(
                    match run_with_retries(engine, std::slice::from_ref(item)).await {
                        Ok(mut one) => one.pop().expect("one answer per command"),
                        Err(e) => Err(e),
                    },
                );
            }
            answers
        }
    };
    assert_eq!(answers.len(), jobs.len(), "one answer per command");
    for (job, answer) in jobs.into_iter().zip(answers) {
        // A caller that went away (its request was dropped) needs no answer; what it asked for
        // is committed and replays under its idempotency key.
        let _ = job.reply.send(answer);
    }
}

/// Runs a batch, again from the start on transient failures (lock timeouts, serialization
/// failures, deadlocks); after the last attempt, fails closed with `Unavailable`.
pub(crate) async fn run_with_retries(engine: &Engine, items: &[&Envelope]) -> Result<Answers> {
    let mut attempt = 1;
    loop {
        match run_once(engine, items).await {
            Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            Err(e) if e.is_transient() => return Err(Error::Unavailable),
            other => return other,
        }
    }
}

async fn run_once(engine: &Engine, items: &[&Envelope]) -> Result<Answers> {
    let txn = engine.begin().await?;
    let mut phases = Phases::default();
    let ran = book::run_commands(
        &txn,
        engine.rules(),
        items,
        &mut phases,
        Some(&engine.books),
    )
    .await?;
    let answers = ran.answers;
    let started = Instant::now();
    // A refusal by a spend limit is told (and marked told) though nothing else changed.
    if ran.tells || answers.iter().any(|a| matches!(a, Ok(e) if !e.replayed)) {
        // The row locks are held until the commit: every commit of these customers before
        // this instant is in the books kept.
        let as_of = Instant::now();
        txn.commit().await?;
        engine
            .books
            .publish(ran.kept.into_iter().map(|(id, kept)| (id, kept, as_of)));
    } else {
        // Nothing decided or told: only the lock was taken, and the books kept stay as they
        // were.
        txn.rollback().await?;
    }
    let commit = started.elapsed();
    engine.stats.record(&phases, commit);
    tracing::debug!(
        commands = items.len(),
        load_micros = phases.load.as_micros() as u64,
        decide_micros = phases.decide.as_micros() as u64,
        write_micros = phases.write.as_micros() as u64,
        post_micros = phases.post.as_micros() as u64,
        commit_micros = commit.as_micros() as u64,
        "batch"
    );
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::worker_of;

    #[test]
    fn a_customer_always_goes_to_the_same_worker_and_customers_spread() {
        assert_eq!(worker_of("acme", 4), worker_of("acme", 4));
        assert_eq!(worker_of("anything", 1), 0);
        let mut counts = [0_usize; 4];
        for i in 0..10_000 {
            counts[worker_of(&format!("c{i:05}"), 4)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (2_000..3_000).contains(&n)),
            "{counts:?}"
        );
    }
}
