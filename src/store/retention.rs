//! Retention (`[retention]`): what may go is pruned in small batches, each its own short
//! transaction, so that the gate's batches never wait long behind it. Idempotency records past
//! their window, delivered webhook messages, Stripe events' payload bodies (each event's id,
//! type, outcome and detail stay, so a redelivery is still known), and page sessions that have
//! ended. Never the ledger, the journal, Stripe writes in the outbox (they are what refuses a
//! second charge), or an event's record.

use super::Store;
use super::book::placeholder;
use super::rows::time;
use super::unit::Write;
use crate::domain::Timestamp;
use crate::error::Result;
use sea_orm::DatabaseTransaction;
use sea_orm::{ConnectionTrait, Statement, Value};

/// Rows per batch, and batches per table per run: a limit on one run's work.
pub const PRUNE_BATCH_ROWS: u64 = 500;
const MAX_BATCHES: usize = 20;

/// How long what may go is kept (`[retention]`), and the sessions' bounds (`[pages]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// An idempotency key is answered from its record for this long; after, the same key is a
    /// new request.
    pub idempotency_days: u32,
    /// A Stripe event's payload body is kept this long; its record stays.
    pub stripe_payload_days: u32,
    /// A delivered webhook message is kept this long.
    pub outbox_days: u32,
    /// Sessions unused this long, or older than `session_max_seconds`, are over.
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            idempotency_days: 30,
            stripe_payload_days: 90,
            outbox_days: 30,
            session_idle_seconds: 1_800,
            session_max_seconds: 12 * 3_600,
        }
    }
}

/// What one run pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub idempotency_records: u64,
    pub outbox_messages: u64,
    pub stripe_payloads: u64,
    pub sessions: u64,
}

fn days(n: u32) -> chrono::Duration {
    chrono::Duration::days(i64::from(n))
}

fn seconds(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1_000_000))
}

impl Store {
    /// Prunes what `[retention]` lets go: `now` is business time (idempotency records, Stripe
    /// events and sessions are stamped with it), `wall_now` real time (the outbox is).
    pub async fn prune(&self, now: Timestamp, wall_now: Timestamp) -> Result<Pruned> {
        let r = self.retention;
        let p = |n| placeholder(self.backend(), n);
        Ok(Pruned {
            idempotency_records: self
                .prune_batches(
                    format!(
                        "DELETE FROM idempotency_records WHERE (customer_id, idempotency_key) IN \
                         (SELECT customer_id, idempotency_key FROM idempotency_records \
                         WHERE created_at < {} ORDER BY created_at LIMIT {PRUNE_BATCH_ROWS})",
                        p(1)
                    ),
                    vec![time(now - days(r.idempotency_days)).into()],
                )
                .await?,
            outbox_messages: self
                .prune_batches(
                    format!(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                         WHERE delivered_at < {} AND status = 'delivered' AND kind = 'webhook' \
                         ORDER BY delivered_at LIMIT {PRUNE_BATCH_ROWS})",
                        p(1)
                    ),
                    vec![time(wall_now - days(r.outbox_days)).into()],
                )
                .await?,
            stripe_payloads: self
                .prune_batches(
                    format!(
                        "UPDATE stripe_events SET payload = '' WHERE id IN (SELECT id FROM \
                         stripe_events WHERE received_at < {} AND payload <> '' \
                         ORDER BY received_at LIMIT {PRUNE_BATCH_ROWS})",
                        p(1)
                    ),
                    vec![time(now - days(r.stripe_payload_days)).into()],
                )
                .await?,
            sessions: self
                .prune_batches(
                    format!(
                        "DELETE FROM page_sessions WHERE id IN (SELECT id FROM page_sessions \
                         WHERE ended_at IS NOT NULL OR last_seen_at < {} OR created_at < {} \
                         LIMIT {PRUNE_BATCH_ROWS})",
                        p(1),
                        p(2)
                    ),
                    vec![
                        time(now - seconds(r.session_idle_seconds)).into(),
                        time(now - seconds(r.session_max_seconds)).into(),
                    ],
                )
                .await?,
        })
    }

    /// Runs `sql` (one batch of at most `PRUNE_BATCH_ROWS` rows) until a batch comes back short,
    /// each batch its own transaction; the rows it changed.
    async fn prune_batches(&self, sql: String, values: Vec<Value>) -> Result<u64> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let done = self
                .write(&Prune {
                    sql: &sql,
                    values: &values,
                })
                .await?;
            total += done;
            if done < PRUNE_BATCH_ROWS {
                break;
            }
            // Let what waits for the writer go first.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }
}

/// One batch of old rows removed or emptied (`Store::prune`): the rows it changed.
struct Prune<'a> {
    sql: &'a str,
    values: &'a [Value],
}

impl Write for Prune<'_> {
    type Written = u64;

    async fn carry_out(&self, txn: &DatabaseTransaction, store: &Store) -> Result<u64> {
        Ok(txn
            .execute_raw(Statement::from_sql_and_values(
                store.backend(),
                self.sql,
                self.values.to_vec(),
            ))
            .await?
            .rows_affected())
    }
}
