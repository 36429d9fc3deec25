//! What creditbook learns from Stripe, kept beside the ledger: events received, customer links,
//! subscriptions, which grants each payment paid for, refunds, charges and disputes.
//!
//! What must be serialised is serialised per Stripe object, not for the whole service: on
//! PostgreSQL an event first takes transaction-scoped advisory locks on what it names (its Stripe
//! customer, payment intent, charge, subscription, session or invoice), in one order, then on
//! each account it touches as it learns them. On SQLite (one writer) events are group-committed:
//! a worker takes the events waiting, applies each in a savepoint of one transaction and commits
//! once, so a failing event never fails its neighbours. On PostgreSQL events are group-committed
//! the same way. The workers are the runner's (`store::runner`), whose queues carry commands and
//! events alike, each taking the events of its share of the Stripe
//! customers (an event naming no customer goes by its payment or its own object, see
//! `Parsed::shard_key`): the events of one Stripe customer apply in order on one worker (one
//! deferred behind a lock, below, waits after its batch with the later events of its shard), those
//! of different workers in parallel, on every instance.
//!
//! Checkout events are facts: a run of them (all the checkouts next to each other in a batch) is
//! read once, decided in order by `domain::checkout`, and written with one
//! statement per table and one run of the unit of work for their grants ([`checkouts`]). An
//! event that needs more (a late link moving earlier credits, a payment refunded before its
//! checkout arrived) is applied on its own after the run; a run that fails as a whole is applied
//! again one event at a time. Paid invoices and subscription events are applied in runs the same
//! way ([`runs`], decided by `domain::stripe_run`).

use super::Store;
use super::book::{Envelope, run_commands};
use super::engine::Engine;
use super::locks::insert_customer_if_absent;
use super::rows::ByKey;
use super::rows::{micros, time, timestamp};
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::billing::Outcome;
use crate::domain::command::{Answer, Command, Rules};
use crate::domain::customer::CustomerId;
use crate::domain::ledger::{EntryKind, Grant, GrantKind, GrantSource};
use crate::domain::money::{Credits, Money};
use crate::domain::refunds::{
    DisputeStatus, PaidShare, PaymentRefunds, RefundStatus, dispute_moves,
};
use crate::domain::subscription::{PlanStanding, SubscriptionState, SubscriptionStatus};
use crate::error::{Error, Result};
use entity::{
    customers, grants, ledger_entries, stripe_charges, stripe_customers, stripe_disputes,
    stripe_effects, stripe_event_customers, stripe_events, stripe_invoice_payments,
    stripe_payment_grants, stripe_payments, stripe_refunds, stripe_renewals, stripe_subscriptions,
    stripe_sync_cursors,
};
use futures_util::future::BoxFuture;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::oneshot;

pub use crate::domain::billing::LinkedBy;
pub use checkouts::{Checked, CheckoutEvent, EventRecord, Settling};
pub use runs::RunEvent;

mod checkouts;
mod runs;

/// A grant a payment paid for, with what the refund rules need.
#[derive(Debug, Clone)]
pub struct PaidGrant {
    pub grant_id: String,
    /// Of this payment's refunds, what was taken back from this grant (zero outside
    /// [`StripeTx::paid_grants`]).
    pub clawed_back: Money,
    pub customer_id: String,
    pub price: Money,
    pub refunded: Money,
    pub currency: String,
    /// The start of a credit period bought ahead.
    pub starts_at: Option<Timestamp>,
}

impl PaidGrant {
    /// The grant as the refund rules see it.
    pub fn share(&self) -> PaidShare {
        PaidShare {
            grant_id: self.grant_id.clone(),
            price: self.price,
            refunded: self.refunded,
            clawed_back: self.clawed_back,
            starts_at: self.starts_at,
        }
    }
}

/// A renewal period as recorded when its invoice was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub plan_id: String,
    pub period_end: Timestamp,
    /// Credits carried over into it so far; `None` for a renewal rolled over before this was
    /// kept (its room counts as used).
    pub carried: Option<Credits>,
}

/// What Stripe says was taken back of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenBack {
    pub facts: PaymentRefunds,
    pub currency: Option<String>,
    /// Has the payment any dispute, in any state?
    pub disputed: bool,
    /// Is a dispute on the payment still open? What it bought stays frozen until none is.
    pub dispute_open: bool,
}

/// One Stripe event's transaction.
pub struct StripeTx {
    txn: DatabaseTransaction,
    catalog: std::sync::Arc<crate::domain::catalog::Catalog>,
    policy: crate::domain::gate::Policy,
    /// The customers whose books the event touches, as they are decided.
    concerned: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The customers whose books or standing the event wrote: what the book cache forgets
    /// once the event's transaction commits (shared by the events of one SQLite batch).
    wrote: Wrote,
}

/// Customers written by Stripe events, and the cache that must forget them once committed.
#[derive(Clone)]
struct Wrote {
    customers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    books: std::sync::Arc<super::cache::BookCache>,
}

impl Wrote {
    fn new(books: std::sync::Arc<super::cache::BookCache>) -> Wrote {
        Wrote {
            customers: Default::default(),
            books,
        }
    }

    fn note(&self, customer: &str) {
        self.customers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(customer.to_owned());
        // Now too: a book kept from before is not decided on by `check` while this commits.
        self.books.forget([customer]);
    }

    /// After the commit: what `check` reads next of these customers is read again.
    fn committed(&self) {
        let customers = self
            .customers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.books.forget(customers.iter().map(String::as_str));
    }
}

/// One group commit of Stripe events, run by a batch worker (`store::runner`) holding the
/// writer permit; each caller is answered once it is durable (or failed).
pub(crate) async fn run_stripe_batch(engine: &Engine, batch: Vec<StripeJob>) {
    let (works, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.work, j.reply)).unzip();
    for (reply, answer) in replies.into_iter().zip(apply_batch(engine, &works).await) {
        let _ = reply.send(answer);
    }
}

/// Applies `works` in order in one transaction (the caller holds the writer permit), each in a savepoint (a
/// run of checkouts, or of paid invoices and subscription events, in one), and commits once: an event that fails writes nothing and never
/// fails its neighbours. Answers each once the batch is durable; when the commit fails, every
/// one with `WriteConflict` (nothing was written: each is run again by its caller).
// Long: the batch's three outcomes (a run together, one left alone, each on its own after a
// failure) share the savepoint and answer bookkeeping.
async fn apply_batch(engine: &Engine, works: &[Arc<dyn StripeWork>]) -> Vec<Result<Outcome>> {
    let outer = match engine.begin().await {
        Ok(outer) => outer,
        Err(e) => {
            tracing::error!(error = %e, "a Stripe batch could not begin");
            return works.iter().map(|_| Err(Error::WriteConflict)).collect();
        }
    };
    let wrote = Wrote::new(engine.books.clone());
    let tx = |txn| StripeTx {
        txn,
        catalog: engine.catalog.clone(),
        policy: engine.policy,
        concerned: Default::default(),
        wrote: wrote.clone(),
    };
    let mut answers: Vec<Result<Outcome>> = Vec::with_capacity(works.len());
    // The shards with an event deferred: their later events wait behind it, in order.
    let mut deferred: HashSet<&str> = HashSet::new();
    let mut noted = 0;
    while answers.len() < works.len() {
        let start = answers.len();
        for (work, answer) in works[noted..start].iter().zip(&answers[noted..]) {
            if matches!(answer, Err(Error::Deferred)) {
                deferred.insert(work.shard());
            }
        }
        noted = start;
        if deferred.contains(works[start].shard()) {
            answers.push(Err(Error::Deferred));
            continue;
        }
        // The checkouts, or the paid invoices and subscription events, from here on: decided
        // together in one savepoint.
        let ready = || {
            works[start..]
                .iter()
                .take_while(|w| !deferred.contains(w.shard()))
        };
        let checkouts: Vec<&CheckoutEvent> = ready().map_while(|w| w.checkout()).collect();
        let facts: Vec<&RunEvent> = ready().map_while(|w| w.run_fact()).collect();
        let run = checkouts.len().max(facts.len());
        if run == 0 {
            answers.push(apply_alone(&outer, works[start].clone(), &tx, start > 0).await);
            continue;
        }
        let together = match savepoint(&outer, start > 0).await {
            Ok(txn) => {
                let tx = tx(txn);
                let applied: Result<Vec<Result<Outcome>>> = if checkouts.is_empty() {
                    tx.apply_run(&facts)
                        .await
                        .map(|done| done.into_iter().map(Ok).collect())
                } else {
                    tx.apply_checkouts(&checkouts, Settling::Stop)
                        .await
                        .map(|done| done.into_iter().map(|c| c.map(|c| c.outcome)).collect())
                };
                match applied {
                    Ok(done) => tx.commit().await.map(|()| done),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match deferred_if_busy(together, start > 0) {
            Ok(done) => {
                let stopped = done.len() < run;
                engine
                    .stats
                    .stripe_events_together
                    .fetch_add(done.len() as u64, Relaxed);
                answers.extend(done);
                if stopped {
                    // Left alone by the events before it: applied on its own.
                    let work = works[answers.len()].clone();
                    answers.push(apply_alone(&outer, work, &tx, true).await);
                }
            }
            Err(Error::Deferred) => answers.extend((0..run).map(|_| Err(Error::Deferred))),
            Err(e) => {
                engine.stats.stripe_runs_split.fetch_add(1, Relaxed);
                tracing::warn!(
                    error = %e,
                    events = run,
                    "events applied together failed; each is applied on its own"
                );
                for work in &works[start..start + run] {
                    let behind = !answers.is_empty();
                    answers.push(apply_alone(&outer, work.clone(), &tx, behind).await);
                }
            }
        }
    }
    let committed = outer.commit().await;
    wrote.committed();
    match committed {
        Ok(()) => {
            engine.stats.stripe_batches.fetch_add(1, Relaxed);
            engine
                .stats
                .stripe_batch_events
                .fetch_add(works.len() as u64, Relaxed);
            // Those that found a lock taken behind the others, and the later events of their
            // shards: each on its own now, in order, holding nothing else while it waits.
            for (work, answer) in works.iter().zip(answers.iter_mut()) {
                if matches!(answer, Err(Error::Deferred)) {
                    engine.stats.stripe_deferred.fetch_add(1, Relaxed);
                    *answer = match engine.begin().await {
                        Ok(txn) => work.clone().apply(tx(txn)).await,
                        Err(e) => Err(e),
                    };
                    wrote.committed();
                }
            }
            answers
        }
        Err(e) => {
            tracing::error!(error = %e, "a Stripe batch failed to commit");
            works.iter().map(|_| Err(Error::WriteConflict)).collect()
        }
    }
}

/// One event of a SQLite batch in a savepoint of its own.
async fn apply_alone(
    outer: &DatabaseTransaction,
    work: Arc<dyn StripeWork>,
    tx: &impl Fn(DatabaseTransaction) -> StripeTx,
    behind: bool,
) -> Result<Outcome> {
    let applied = match savepoint(outer, behind).await {
        Ok(txn) => work.apply(tx(txn)).await,
        Err(e) => Err(e),
    };
    deferred_if_busy(applied, behind)
}

/// An event's savepoint of its batch. Behind other events (whose locks the batch holds), on
/// PostgreSQL, it never waits for a lock: a wait could close a cycle with another batch that
/// waits for one of those. Any wait fails it at once (`lock_timeout`), and it is deferred: applied
/// on its own once the batch commits, holding nothing else while it waits.
async fn savepoint(outer: &DatabaseTransaction, behind: bool) -> Result<DatabaseTransaction> {
    let txn = outer.begin().await?;
    if behind && txn.get_database_backend() == DbBackend::Postgres {
        // Undone with the savepoint when the event fails; else in force to the batch's end,
        // where every event is behind this one.
        txn.execute_unprepared("SET LOCAL lock_timeout = '1ms'")
            .await?;
    }
    Ok(txn)
}

/// What an event behind others that found a lock taken answers: deferred.
fn deferred_if_busy<T>(result: Result<T>, behind: bool) -> Result<T> {
    match result {
        Err(e) if behind && crate::error::is_lock_not_available(&e) => Err(Error::Deferred),
        other => other,
    }
}

/// The advisory lock key of a Stripe object or an account: the first 8 bytes of a SHA-256 of a
/// name kept apart from every other use.
fn advisory_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("creditbook.stripe:{name}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// One Stripe event as the store applies it: given the event's transaction (a savepoint of a
/// batch on SQLite), it commits it or drops it, and says what the event did; the caller hears
/// it once the transaction it belongs to has committed.
pub trait StripeWork: Send + Sync + 'static {
    fn apply(self: Arc<Self>, tx: StripeTx) -> BoxFuture<'static, Result<Outcome>>;

    /// The event as a checkout fact, when it is one: applied together with the checkouts next
    /// to it ([`StripeTx::apply_checkouts`]), and by `apply` when they leave it alone.
    fn checkout(&self) -> Option<&CheckoutEvent> {
        None
    }

    /// The event as a paid invoice's or a subscription's fact, when it is one: applied together
    /// with such events next to it ([`StripeTx::apply_run`]), and by `apply` when they leave it
    /// alone.
    fn run_fact(&self) -> Option<&RunEvent> {
        None
    }

    /// Which batch worker applies it on PostgreSQL (the same key, the same worker, in order):
    /// see `Parsed::shard_key`.
    fn shard(&self) -> &str;
}

pub(crate) struct StripeJob {
    pub(crate) work: Arc<dyn StripeWork>,
    pub(crate) reply: oneshot::Sender<Result<Outcome>>,
}

/// Most events in one batch (one transaction, one commit).
pub(crate) const MAX_STRIPE_BATCH_EVENTS: usize = 128;

impl Store {
    /// Runs one Stripe event's work in a savepoint of the next batch of its worker (on SQLite the
    /// one writer; on PostgreSQL its shard's, see [`StripeWork::shard`]). Answers once the work
    /// is durable (or failed).
    pub async fn stripe_transaction(&self, work: Arc<dyn StripeWork>) -> Result<Outcome> {
        // Which batch worker takes it: on SQLite the one; on PostgreSQL its shard's (its Stripe
        // customer's, mostly).
        let shard = if self.db.get_database_backend() == DbBackend::Sqlite {
            String::new()
        } else {
            work.shard().to_owned()
        };
        let answer = self.runner().await.submit_stripe(&shard, work).await;
        answer.await.map_err(|_| Error::Unavailable)?
    }

    /// Applies events as one batch, in order, with one commit: what the SQLite worker does with
    /// the events waiting, on either engine (one transaction on PostgreSQL too). For tests that
    /// a batch reaches the books its events reach one at a time.
    pub async fn stripe_batch(&self, works: &[Arc<dyn StripeWork>]) -> Vec<Result<Outcome>> {
        let engine = self.engine();
        let _permit = engine.write_permit().await;
        apply_batch(&engine, works).await
    }

    /// Refunds recorded whose payment is not known (no grant is mapped to it), for `/metrics`.
    pub async fn pending_stripe_refunds(&self) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        use sea_orm::sea_query::Query;
        let mapped = Query::select()
            .column(stripe_payment_grants::Column::PaymentKey)
            .from(stripe_payment_grants::Entity)
            .to_owned();
        Ok(stripe_refunds::Entity::find()
            .filter(stripe_refunds::Column::Status.eq("succeeded"))
            .filter(
                Condition::any()
                    .add(stripe_refunds::Column::PaymentIntent.not_in_subquery(mapped.clone()))
                    .add(stripe_refunds::Column::PaymentIntent.is_null()),
            )
            .filter(
                Condition::any()
                    .add(stripe_refunds::Column::Charge.not_in_subquery(mapped))
                    .add(stripe_refunds::Column::Charge.is_null()),
            )
            .count(self.connection())
            .await?)
    }

    /// Where the backfill reading `source` stopped, if a run left a cursor.
    pub async fn sync_cursor(&self, source: &str) -> Result<Option<stripe_sync_cursors::Model>> {
        Ok(stripe_sync_cursors::Entity::find_by_id(source.to_owned())
            .by_key(self.connection())
            .await?)
    }

    /// Records where the backfill reading `source` is: after `starting_after`, or done.
    pub async fn save_sync_cursor(&self, cursor: stripe_sync_cursors::Model) -> Result<()> {
        self.write(&SaveCursor(cursor)).await
    }

    /// Forgets every backfill cursor: the next run reads from the start.
    pub async fn clear_sync_cursors(&self) -> Result<()> {
        self.write(&ClearCursors).await
    }

    /// Events received, newest first (for tests and operators).
    pub async fn stripe_events(&self, limit: u64) -> Result<Vec<stripe_events::Model>> {
        self.stripe_events_where(None, None, None, limit).await
    }

    /// Events received, newest first, with outcome `outcome` when given, touching `customer`'s
    /// books when given, received before `before` (microseconds) when given; at most `limit`.
    pub async fn stripe_events_where(
        &self,
        outcome: Option<&str>,
        customer: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<stripe_events::Model>> {
        use sea_orm::QuerySelect;
        let mut select = stripe_events::Entity::find();
        if let Some(outcome) = outcome {
            select = select.filter(stripe_events::Column::Outcome.eq(outcome));
        }
        if let Some(customer) = customer {
            let ids: Vec<String> = stripe_event_customers::Entity::find()
                .select_only()
                .column(stripe_event_customers::Column::EventId)
                .filter(stripe_event_customers::Column::CustomerId.eq(customer))
                .filter(stripe_event_customers::Column::ReceivedAt.lt(before.unwrap_or(i64::MAX)))
                .order_by_desc(stripe_event_customers::Column::ReceivedAt)
                .limit(limit)
                .into_tuple()
                .all(self.connection())
                .await?;
            select = select.filter(stripe_events::Column::Id.is_in(ids));
        }
        if let Some(before) = before {
            select = select.filter(stripe_events::Column::ReceivedAt.lt(before));
        }
        Ok(select
            .order_by_desc(stripe_events::Column::ReceivedAt)
            .order_by_desc(stripe_events::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// How many events have each outcome.
    pub async fn stripe_outcome_counts(&self) -> Result<Vec<(String, i64)>> {
        use sea_orm::QuerySelect;
        Ok(stripe_events::Entity::find()
            .select_only()
            .column(stripe_events::Column::Outcome)
            .column_as(stripe_events::Column::Id.count().cast_as("BIGINT"), "n")
            .group_by(stripe_events::Column::Outcome)
            .order_by_asc(stripe_events::Column::Outcome)
            .into_tuple()
            .all(self.connection())
            .await?)
    }
}

impl StripeTx {
    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await?;
        self.wrote.committed();
        Ok(())
    }

    /// Serialises this event with every other that names one of `names` (Stripe object ids,
    /// `account:` ids), until it commits. Locks are taken in one order; one already held is
    /// taken again at no cost. Nothing on SQLite, whose writer is alone.
    pub async fn lock(&self, names: &[String]) -> Result<()> {
        if self.txn.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let mut keys: Vec<i64> = names.iter().map(|n| advisory_key(n)).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        // One round trip; the rows of a VALUES list are taken in the order written, so the
        // locks are too. The keys are our own integers.
        let values: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
        self.txn
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT count(pg_advisory_xact_lock(k)) FROM (VALUES {}) AS t(k)",
                    values.join(", ")
                ),
            ))
            .await?;
        Ok(())
    }

    /// The catalog in force.
    pub fn catalog(&self) -> std::sync::Arc<crate::domain::catalog::Catalog> {
        self.catalog.clone()
    }

    /// Notes that the event touches `account`'s books: its outcome is listed with the account.
    pub fn concerns(&self, account: &str) {
        self.concerned
            .lock()
            .expect("no panic while holding it")
            .insert(account.to_owned());
    }

    /// [`StripeTx::lock`] on accounts.
    pub async fn lock_accounts<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let names: Vec<String> = ids.into_iter().map(|id| format!("account:{id}")).collect();
        self.lock(&names).await
    }

    /// Whether an event id was recorded.
    pub async fn is_recorded(&self, id: &str) -> Result<bool> {
        Ok(stripe_events::Entity::find_by_id(id.to_owned())
            .by_key(&self.txn)
            .await?
            .is_some())
    }

    /// Records an event as received; false when it was recorded before (a duplicate delivery).
    pub async fn record_event(&self, record: &EventRecord) -> Result<bool> {
        let inserted =
            stripe_events::Entity::insert(checkouts::event_row(record, "received", None))
                .on_conflict(
                    OnConflict::column(stripe_events::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.txn)
                .await?;
        Ok(inserted == 1)
    }

    /// Records what the event did, and with which customers' books.
    pub async fn set_outcome(
        &self,
        id: &str,
        outcome: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        stripe_events::Entity::update_many()
            .col_expr(stripe_events::Column::Outcome, Expr::value(outcome))
            .col_expr(stripe_events::Column::Detail, Expr::value(detail))
            .filter(stripe_events::Column::Id.eq(id))
            .exec(&self.txn)
            .await?;
        let concerned: Vec<String> =
            std::mem::take(&mut *self.concerned.lock().expect("no panic while holding it"))
                .into_iter()
                .collect();
        let rows = concerned
            .into_iter()
            .map(|customer| stripe_event_customers::ActiveModel {
                customer_id: Set(customer),
                event_id: Set(id.to_owned()),
                received_at: Set(time(now)),
            })
            .collect();
        save_event_customers(&self.txn, rows).await
    }

    /// Settles an automatic top-up's attempt (see `store::autotopup::settle`).
    pub async fn settle_auto_topup(
        &self,
        attempt: &str,
        settled: &crate::domain::autotopup::Settled,
        payment_intent: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let changed = super::autotopup::settle(
            &self.txn,
            &self.catalog,
            attempt,
            settled,
            payment_intent,
            now,
        )
        .await?;
        if let Some(customer) = &changed {
            self.wrote.note(customer);
        }
        Ok(changed.is_some())
    }

    /// Posts billed overage paid on `source` (an invoice line).
    pub async fn post_overage_paid(
        &self,
        customer_id: &CustomerId,
        money: Money,
        currency: &str,
        source: &str,
        event: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let customer_id = customer_id.as_str();
        match crate::domain::revrec::overage_paid(money, currency, now) {
            Some(posting) => {
                super::revenue::post_direct(&self.txn, customer_id, posting, source, event, now)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Marks an effect applied; false when it already was.
    pub async fn claim_effect(
        &self,
        key: &str,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Result<bool> {
        let customer_id = customer_id.as_str();
        let inserted = stripe_effects::Entity::insert(stripe_effects::ActiveModel {
            effect_key: Set(key.to_owned()),
            customer_id: Set(customer_id.to_owned()),
            created_at: Set(time(now)),
        })
        .on_conflict(
            OnConflict::column(stripe_effects::Column::EffectKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.txn)
        .await?;
        Ok(inserted == 1)
    }

    /// Which of `keys` were applied before, in one read.
    pub async fn applied_effects(&self, keys: &[String]) -> Result<HashSet<String>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let applied: Vec<String> = stripe_effects::Entity::find()
            .select_only()
            .column(stripe_effects::Column::EffectKey)
            .filter(stripe_effects::Column::EffectKey.is_in(super::rows::in_list(keys)))
            .into_tuple()
            .all(&self.txn)
            .await?;
        Ok(applied.into_iter().collect())
    }

    pub async fn link(&self, stripe_customer: &str) -> Result<Option<(CustomerId, LinkedBy)>> {
        let row = stripe_customers::Entity::find_by_id(stripe_customer.to_owned())
            .by_key(&self.txn)
            .await?;
        Ok(row.map(|r| {
            (
                CustomerId::known(r.customer_id),
                LinkedBy::parse(&r.linked_by),
            )
        }))
    }

    pub async fn set_link(
        &self,
        stripe_customer: &str,
        customer: &CustomerId,
        by: LinkedBy,
    ) -> Result<()> {
        save_links(
            &self.txn,
            vec![stripe_customers::ActiveModel {
                stripe_customer_id: Set(stripe_customer.to_owned()),
                customer_id: Set(customer.to_string()),
                linked_by: Set(by.as_str().to_owned()),
            }],
        )
        .await
    }

    /// Runs a ledger command on its customers inside this transaction.
    pub async fn run(&self, envelope: Envelope) -> Result<Answer> {
        let rules = Rules {
            catalog: &self.catalog,
            policy: self.policy,
        };
        for customer in envelope.customers() {
            self.wrote.note(customer.as_str());
        }
        let executed = run_commands(
            &self.txn,
            rules,
            &[&envelope],
            &mut Default::default(),
            None,
        )
        .await?
        .answers
        .pop()
        .expect("one answer per command")?;
        Ok(executed.value)
    }

    /// Runs commands granting what events bought, in one run of the unit of work: a refused one
    /// fails them all, before anything is written.
    pub(crate) async fn run_grants(&self, envelopes: &[Envelope]) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        for envelope in envelopes {
            self.wrote.note(envelope.customer_id.as_str());
        }
        let items: Vec<&Envelope> = envelopes.iter().collect();
        let rules = Rules {
            catalog: &self.catalog,
            policy: self.policy,
        };
        let ran = run_commands(&self.txn, rules, &items, &mut Default::default(), None).await?;
        for answer in ran.answers {
            match answer?.value {
                Answer::Done => {}
                other => return Err(Error::unexpected(&other)),
            }
        }
        Ok(())
    }

    /// Records that each of `payment_keys` paid for grant `grant_id`, with one statement.
    pub async fn map_payments(
        &self,
        payment_keys: &[String],
        grant_id: &str,
        subscription: Option<&str>,
    ) -> Result<()> {
        let rows = payment_keys
            .iter()
            .map(|key| payment_grant(key, grant_id, subscription))
            .collect();
        save_payment_grants(&self.txn, rows).await
    }

    /// Records what a payment paid, tax included, and the tax in it (first record wins: a
    /// payment's amounts do not change).
    pub async fn put_payment(&self, payment: stripe_payments::Model) -> Result<()> {
        save_payments(&self.txn, vec![payment.into()]).await
    }

    /// What a payment paid and the tax in it, when known.
    pub async fn payment(&self, payment_key: &str) -> Result<Option<stripe_payments::Model>> {
        Ok(stripe_payments::Entity::find_by_id(payment_key.to_owned())
            .by_key(&self.txn)
            .await?)
    }

    /// Records which payment paid an invoice.
    pub async fn put_invoice_payment(&self, invoice_id: &str, payment_key: &str) -> Result<()> {
        save_invoice_payments(
            &self.txn,
            vec![invoice_payment_row(invoice_id, payment_key)],
        )
        .await
    }

    /// The payment that paid an invoice, when learnt.
    pub async fn invoice_payment(&self, invoice_id: &str) -> Result<Option<String>> {
        Ok(
            stripe_invoice_payments::Entity::find_by_id(invoice_id.to_owned())
                .by_key(&self.txn)
                .await?
                .map(|row| row.payment_key),
        )
    }

    /// Makes the grants (and amounts) known under `from` known under `to` as well: the payment
    /// `to` paid what was recorded under the invoice `from`. Returns how many grants.
    pub async fn also_paid_by(&self, from: &str, to: &str) -> Result<usize> {
        let rows = stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::PaymentKey.eq(from))
            .all(&self.txn)
            .await?;
        let known = rows
            .iter()
            .map(|row| payment_grant(to, &row.grant_id, row.subscription_id.as_deref()))
            .collect();
        save_payment_grants(&self.txn, known).await?;
        if let Some(amounts) = self.payment(from).await? {
            self.put_payment(stripe_payments::Model {
                payment_key: to.to_owned(),
                ..amounts
            })
            .await?;
        }
        Ok(rows.len())
    }

    /// Moves a grant's payment mapping to the grant that replaced it (a transfer).
    pub async fn remap_grant(&self, from: &str, to: &str) -> Result<()> {
        let rows = stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::GrantId.eq(from))
            .all(&self.txn)
            .await?;
        // What the payment's refunds took so far stays counted, so nothing is taken twice.
        let moved = rows
            .iter()
            .map(|row| payment_grant(&row.payment_key, to, row.subscription_id.as_deref()))
            .collect();
        save_payment_grants(&self.txn, moved).await?;
        for row in rows {
            self.add_clawed_back(&row.payment_key, to, Money::from_micros(row.clawed_back))
                .await?;
        }
        stripe_payment_grants::Entity::delete_many()
            .filter(stripe_payment_grants::Column::GrantId.eq(from))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    /// Payment keys that have grants, among `keys`.
    pub async fn known_payment_keys(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut found: Vec<String> = stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::PaymentKey.is_in(super::rows::in_list(keys)))
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|r| r.payment_key)
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The grants a payment paid for, oldest first, with what its refunds took from each.
    pub async fn paid_grants(&self, payment_key: &str) -> Result<Vec<PaidGrant>> {
        let rows = stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::PaymentKey.eq(payment_key))
            .all(&self.txn)
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.grant_id.clone()).collect();
        let mut grants = self.grants_by_ids(&ids).await?;
        for g in &mut grants {
            if let Some(row) = rows.iter().find(|r| r.grant_id == g.grant_id) {
                g.clawed_back = Money::from_micros(row.clawed_back);
            }
        }
        Ok(grants)
    }

    /// Adds to what a payment's refunds took back from one of its grants.
    pub async fn add_clawed_back(
        &self,
        payment_key: &str,
        grant_id: &str,
        money: Money,
    ) -> Result<()> {
        stripe_payment_grants::Entity::update_many()
            .col_expr(
                stripe_payment_grants::Column::ClawedBack,
                Expr::col(stripe_payment_grants::Column::ClawedBack).add(micros(money)?),
            )
            .filter(stripe_payment_grants::Column::PaymentKey.eq(payment_key))
            .filter(stripe_payment_grants::Column::GrantId.eq(grant_id))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    async fn grants_by_ids(&self, ids: &[String]) -> Result<Vec<PaidGrant>> {
        let rows = grants::Entity::find()
            .filter(grants::Column::Id.is_in(super::rows::in_list(ids)))
            .order_by_asc(grants::Column::CreatedAt)
            // The months of one invoice, bought together, in their order.
            .order_by_asc(Expr::cust("COALESCE(starts_at, 0)"))
            .order_by_asc(grants::Column::Id)
            .all(&self.txn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|g| {
                Some(PaidGrant {
                    clawed_back: Money::ZERO,
                    price: Money::from_micros(g.price?),
                    currency: g.currency?,
                    refunded: Money::from_micros(g.refunded),
                    starts_at: g.starts_at.and_then(|t| super::rows::timestamp(t).ok()),
                    customer_id: g.customer_id,
                    grant_id: g.id,
                })
            })
            .collect())
    }

    /// The grants a subscription's payments bought.
    async fn subscription_grant_ids(&self, subscription: &str) -> Result<Vec<String>> {
        Ok(stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::SubscriptionId.eq(subscription))
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|r| r.grant_id)
            .collect())
    }

    /// The plan grants of `subscription` for the customer whose period ends at `period_end`,
    /// with what refunds took back of each; those carried over from a period before aside.
    pub async fn held_in_period(
        &self,
        customer_id: &CustomerId,
        subscription: &str,
        period_end: Timestamp,
    ) -> Result<Vec<crate::domain::invoice::HeldInPeriod>> {
        let ids = self.subscription_grant_ids(subscription).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = grants::Entity::find()
            .filter(grants::Column::Id.is_in(super::rows::in_list(&ids)))
            .filter(grants::Column::CustomerId.eq(customer_id.as_str()))
            .filter(grants::Column::Kind.eq(GrantKind::Plan.as_str()))
            .filter(grants::Column::ExpiresAt.eq(time(period_end)))
            .all(&self.txn)
            .await?;
        let ids: Vec<String> = rows.iter().map(|g| g.id.clone()).collect();
        let carried: HashSet<String> = ledger_entries::Entity::find()
            .filter(ledger_entries::Column::GrantId.is_in(ids.iter().cloned()))
            .filter(ledger_entries::Column::Kind.eq(EntryKind::Rollover.as_str()))
            .all(&self.txn)
            .await?
            .into_iter()
            .filter_map(|e| e.grant_id)
            .collect();
        let clawed = self.clawed_credits(&ids).await?;
        Ok(rows
            .into_iter()
            .filter(|g| !carried.contains(&g.id))
            .map(|g| crate::domain::invoice::HeldInPeriod {
                net: Credits::from_micros(g.credits)
                    - clawed.get(&g.id).copied().unwrap_or(Credits::ZERO),
                plan_id: g.plan_id,
            })
            .collect())
    }

    /// The sources of the promotional grants Stripe gave the customer (its trials).
    pub async fn stripe_promotions(&self, customer_id: &CustomerId) -> Result<HashSet<String>> {
        Ok(grants::Entity::find()
            .filter(grants::Column::CustomerId.eq(customer_id.as_str()))
            .filter(grants::Column::SourceType.eq(GrantSource::Stripe.as_str()))
            .filter(grants::Column::Kind.eq(GrantKind::Promotional.as_str()))
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|g| g.source_id)
            .collect())
    }

    /// The newest paid plan grant of a subscription for a customer, if any.
    pub async fn latest_subscription_grant(
        &self,
        customer_id: &CustomerId,
        subscription: &str,
    ) -> Result<Option<PaidGrant>> {
        let customer_id = customer_id.as_str();
        let ids = self.subscription_grant_ids(subscription).await?;
        let grants = self.grants_by_ids(&ids).await?;
        Ok(grants.into_iter().rfind(|g| g.customer_id == customer_id))
    }

    /// Plan grants of a customer whose period ended at `boundary`, with the credits that lapsed
    /// at that instant (expiry entries carry the instant the grant fell due).
    pub async fn plan_grants_ending_at(
        &self,
        customer_id: &CustomerId,
        boundary: Timestamp,
    ) -> Result<Vec<(String, Credits)>> {
        let customer_id = customer_id.as_str();
        let grant_rows = grants::Entity::find()
            .filter(grants::Column::CustomerId.eq(customer_id))
            .filter(grants::Column::Kind.eq("plan"))
            .filter(grants::Column::ExpiresAt.eq(time(boundary)))
            .all(&self.txn)
            .await?;
        let mut out = Vec::new();
        for g in grant_rows {
            let lapsed: i64 = ledger_entries::Entity::find()
                .filter(ledger_entries::Column::GrantId.eq(g.id.as_str()))
                .filter(ledger_entries::Column::Kind.eq("expire"))
                .filter(ledger_entries::Column::EffectiveAt.eq(time(boundary)))
                .all(&self.txn)
                .await?
                .iter()
                .map(|e| -e.credits)
                .sum();
            out.push((g.id, Credits::from_micros(lapsed)));
        }
        Ok(out)
    }

    /// Grants of a customer that came from Stripe (or moved from such), with credits free.
    pub async fn movable_grants(&self, customer_id: &CustomerId) -> Result<Vec<String>> {
        let customer_id = customer_id.as_str();
        Ok(grants::Entity::find()
            .filter(grants::Column::CustomerId.eq(customer_id))
            .filter(grants::Column::SourceType.is_in(["stripe", "transfer"]))
            .filter(grants::Column::Expired.eq(false))
            .filter(grants::Column::Remaining.gt(0))
            .order_by_asc(grants::Column::CreatedAt)
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect())
    }

    /// Records that a renewal period starts at `boundary` (once).
    pub async fn put_renewal(
        &self,
        customer_id: &CustomerId,
        boundary: Timestamp,
        plan_id: &str,
        period_end: Timestamp,
    ) -> Result<()> {
        let customer_id = customer_id.as_str();
        stripe_renewals::Entity::insert(stripe_renewals::ActiveModel {
            customer_id: Set(customer_id.to_owned()),
            boundary: Set(time(boundary)),
            plan_id: Set(plan_id.to_owned()),
            period_end: Set(time(period_end)),
            rolled_at: Set(None),
            carried: Set(Some(0)),
        })
        .on_conflict(
            OnConflict::columns([
                stripe_renewals::Column::CustomerId,
                stripe_renewals::Column::Boundary,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.txn)
        .await?;
        Ok(())
    }

    /// The renewal starting at `boundary`, if one is known: its plan, its period's end, and the
    /// credits it has carried over so far (`None` when its room was used before that was kept).
    pub async fn renewal(
        &self,
        customer_id: &CustomerId,
        boundary: Timestamp,
    ) -> Result<Option<Renewal>> {
        let customer_id = customer_id.as_str();
        let row = stripe_renewals::Entity::find_by_id((customer_id.to_owned(), time(boundary)))
            .by_key(&self.txn)
            .await?;
        row.map(|r| {
            Ok(Renewal {
                plan_id: r.plan_id,
                period_end: timestamp(r.period_end)?,
                carried: match (r.rolled_at, r.carried) {
                    (_, Some(micros)) => Some(Credits::from_micros(micros)),
                    (None, None) => Some(Credits::ZERO),
                    (Some(_), None) => None,
                },
            })
        })
        .transpose()
    }

    /// Adds to what the renewal starting at `boundary` has carried over.
    pub async fn add_carried(
        &self,
        customer_id: &CustomerId,
        boundary: Timestamp,
        carried: Credits,
        now: Timestamp,
    ) -> Result<()> {
        let customer_id = customer_id.as_str();
        stripe_renewals::Entity::update_many()
            .col_expr(
                stripe_renewals::Column::RolledAt,
                Expr::col(stripe_renewals::Column::RolledAt).if_null(time(now)),
            )
            .col_expr(
                stripe_renewals::Column::Carried,
                Expr::col(stripe_renewals::Column::Carried)
                    .if_null(0)
                    .add(micros(carried)?),
            )
            .filter(stripe_renewals::Column::CustomerId.eq(customer_id))
            .filter(stripe_renewals::Column::Boundary.eq(time(boundary)))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<SubscriptionState>> {
        Ok(stripe_subscriptions::Entity::find_by_id(id.to_owned())
            .by_key(&self.txn)
            .await?
            .map(subscription_state))
    }

    /// Records a subscription's state (the domain decided it is newer).
    pub async fn put_subscription(
        &self,
        id: &str,
        stripe_customer: &str,
        state: SubscriptionState,
    ) -> Result<()> {
        save_subscriptions(
            &self.txn,
            vec![subscription_row(id, stripe_customer, state)],
        )
        .await
    }

    /// Records a refund; its status only moves forward (pending, then succeeded, then failed or
    /// canceled).
    pub async fn put_refund(&self, row: stripe_refunds::Model) -> Result<()> {
        let existing = stripe_refunds::Entity::find_by_id(row.id.clone())
            .by_key(&self.txn)
            .await?;
        if let Some(old) = &existing
            && !RefundStatus::parse(Some(&old.status))
                .is_superseded_by(RefundStatus::parse(Some(&row.status)))
        {
            return Ok(());
        }
        save(&self.txn, row, existing.is_some()).await
    }

    /// Records a charge's refunded total; it only grows.
    pub async fn put_charge(&self, row: stripe_charges::Model) -> Result<()> {
        let existing = stripe_charges::Entity::find_by_id(row.id.clone())
            .by_key(&self.txn)
            .await?;
        if let Some(old) = &existing
            && old.amount_refunded >= row.amount_refunded
        {
            return Ok(());
        }
        save(&self.txn, row, existing.is_some()).await
    }

    /// Records a dispute: a closed dispute stays closed; otherwise the newer state wins.
    pub async fn put_dispute(&self, row: stripe_disputes::Model) -> Result<()> {
        let existing = stripe_disputes::Entity::find_by_id(row.id.clone())
            .by_key(&self.txn)
            .await?;
        if let Some(old) = &existing
            && !dispute_moves(
                (&DisputeStatus::parse(&old.status), old.as_of),
                (&DisputeStatus::parse(&row.status), row.as_of),
            )
        {
            return Ok(());
        }
        save(&self.txn, row, existing.is_some()).await
    }

    /// Has Stripe told of anything taken back of these payments (a charge's refunds, a refund
    /// or a dispute, in any state)? One statement: most purchases have nothing to settle.
    pub async fn anything_taken_back(&self, payment_keys: &[String]) -> Result<bool> {
        if payment_keys.is_empty() {
            return Ok(false);
        }
        Ok(!self.payments_taken_back(payment_keys).await?.is_empty())
    }

    /// What Stripe has told of the money refunded or lost in disputes on a payment (README,
    /// Stripe events); [`PaymentRefunds::taken_back_minor`] says what it comes to.
    pub async fn money_taken_back(&self, payment_key: &str) -> Result<TakenBack> {
        let matches_key = |pi: sea_orm::sea_query::SimpleExpr,
                           other: sea_orm::sea_query::SimpleExpr| {
            Condition::any().add(pi).add(other)
        };
        let charges = stripe_charges::Entity::find()
            .filter(matches_key(
                stripe_charges::Column::PaymentIntent.eq(payment_key),
                stripe_charges::Column::Id.eq(payment_key),
            ))
            .all(&self.txn)
            .await?;
        let refunds = stripe_refunds::Entity::find()
            .filter(matches_key(
                stripe_refunds::Column::PaymentIntent.eq(payment_key),
                stripe_refunds::Column::Charge.eq(payment_key),
            ))
            .all(&self.txn)
            .await?;
        let disputes = stripe_disputes::Entity::find()
            .filter(matches_key(
                stripe_disputes::Column::PaymentIntent.eq(payment_key),
                stripe_disputes::Column::Charge.eq(payment_key),
            ))
            .all(&self.txn)
            .await?;
        let lost: Vec<&stripe_disputes::Model> = disputes
            .iter()
            .filter(|d| DisputeStatus::parse(&d.status).is_lost())
            .collect();
        let refunded_when = |undone: bool| -> i64 {
            refunds
                .iter()
                .filter(|r| {
                    let status = RefundStatus::parse(Some(&r.status));
                    if undone {
                        status.is_undone()
                    } else {
                        status == RefundStatus::Succeeded
                    }
                })
                .map(|r| r.amount)
                .sum()
        };
        let currency = charges
            .first()
            .map(|c| c.currency.clone())
            .or_else(|| refunds.first().map(|r| r.currency.clone()))
            .or_else(|| lost.first().map(|d| d.currency.clone()));
        Ok(TakenBack {
            facts: PaymentRefunds {
                charge_refunded_minor: charges.iter().map(|c| c.amount_refunded).sum(),
                succeeded_minor: refunded_when(false),
                undone_minor: refunded_when(true),
                lost_minor: lost.iter().map(|d| d.amount).sum(),
            },
            currency,
            disputed: !disputes.is_empty(),
            dispute_open: disputes
                .iter()
                .any(|d| !DisputeStatus::parse(&d.status).is_closed()),
        })
    }

    /// Credits the clawbacks took from each grant, less what their reversals gave back.
    pub async fn clawed_credits(&self, grant_ids: &[String]) -> Result<HashMap<String, Credits>> {
        let rows = ledger_entries::Entity::find()
            .filter(ledger_entries::Column::GrantId.is_in(grant_ids.iter().cloned()))
            .filter(ledger_entries::Column::Kind.is_in([
                EntryKind::Clawback.as_str(),
                EntryKind::ClawbackReversal.as_str(),
            ]))
            .all(&self.txn)
            .await?;
        let mut clawed: HashMap<String, Credits> = HashMap::new();
        for row in rows {
            let Some(grant) = row.grant_id else { continue };
            // A clawback's credits are negative, a reversal's positive.
            *clawed.entry(grant).or_insert(Credits::ZERO) -= Credits::from_micros(row.credits);
        }
        Ok(clawed)
    }

    /// Subscriptions of a Stripe customer, oldest state first.
    pub async fn subscriptions_of(&self, stripe_customer: &str) -> Result<Vec<SubscriptionState>> {
        Ok(stripe_subscriptions::Entity::find()
            .filter(stripe_subscriptions::Column::StripeCustomerId.eq(stripe_customer))
            .order_by_asc(stripe_subscriptions::Column::AsOf)
            .all(&self.txn)
            .await?
            .into_iter()
            .map(subscription_state)
            .collect())
    }

    /// Writes the account's plan, period end and past-due start as its Stripe customer's
    /// subscriptions decide them (`domain::subscription::standing`); `None`: it has none.
    pub async fn set_plan_standing(
        &self,
        customer_id: &CustomerId,
        standing: Option<PlanStanding>,
        now: Timestamp,
    ) -> Result<()> {
        let subscription = match standing {
            Some(s) => Some((
                s.plan_id,
                s.past_due_since_unix.map(from_unix).transpose()?,
                s.period_end_unix.map(from_unix).transpose()?,
            )),
            None => None,
        };
        self.set_standing(customer_id, subscription, now).await
    }

    /// Writes the customer's standing as Stripe sets it (creating the customer): plan and period
    /// from its subscription when it has one, and past-due start. (A dispute freezes what its
    /// payment bought, never the customer: see `Book::set_frozen`.)
    pub async fn set_standing(
        &self,
        customer_id: &CustomerId,
        subscription: Option<(Option<String>, Option<Timestamp>, Option<Timestamp>)>,
        now: Timestamp,
    ) -> Result<()> {
        let customer_id = customer_id.as_str();
        self.wrote.note(customer_id);
        insert_customer_if_absent(&self.txn, customer_id, now).await?;
        let mut update = customers::Entity::update_many().col_expr(
            customers::Column::Version,
            Expr::col(customers::Column::Version).add(1),
        );
        if let Some((plan, past_due_since, renews_at)) = subscription {
            if !crate::domain::cycle::survives_subscription(plan.as_deref()) {
                update = update
                    .col_expr(
                        customers::Column::CreditCycle,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(
                        customers::Column::NextGrantAt,
                        Expr::value(Option::<i64>::None),
                    );
            }
            update = update
                .col_expr(customers::Column::PlanId, Expr::value(plan))
                .col_expr(
                    customers::Column::PastDueSince,
                    Expr::value(past_due_since.map(time)),
                )
                .col_expr(
                    customers::Column::RenewsAt,
                    Expr::value(renews_at.map(time)),
                );
        }
        update
            .filter(customers::Column::Id.eq(customer_id))
            .exec(&self.txn)
            .await?;
        Ok(())
    }
}

/// Writes a fact row read before: updated when it existed, inserted otherwise.
async fn save<M, A>(txn: &DatabaseTransaction, row: M, existed: bool) -> Result<()>
where
    M: sea_orm::ModelTrait + sea_orm::IntoActiveModel<A>,
    A: ActiveModelTrait<Entity = M::Entity> + sea_orm::ActiveModelBehavior + Send,
    <M::Entity as EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
{
    let model = row.into_active_model().reset_all();
    if existed {
        model.update(txn).await?;
    } else {
        model.insert(txn).await?;
    }
    Ok(())
}

/// A subscription's row as recorded.
fn subscription_row(
    id: &str,
    stripe_customer: &str,
    state: SubscriptionState,
) -> stripe_subscriptions::ActiveModel {
    let row = stripe_subscriptions::Model {
        id: id.to_owned(),
        stripe_customer_id: stripe_customer.to_owned(),
        status: state.status.as_str().to_owned(),
        plan_id: state.plan_id,
        quantity: state.quantity,
        current_period_end: state.current_period_end_unix,
        past_due_since: state.past_due_since_unix,
        as_of: state.as_of_unix,
    };
    let model: stripe_subscriptions::ActiveModel = row.into();
    model.reset_all()
}

/// Records subscriptions' states, replacing what was recorded of each.
async fn save_subscriptions(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_subscriptions::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_subscriptions::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(stripe_subscriptions::Column::Id)
                .update_columns([
                    stripe_subscriptions::Column::StripeCustomerId,
                    stripe_subscriptions::Column::Status,
                    stripe_subscriptions::Column::PlanId,
                    stripe_subscriptions::Column::Quantity,
                    stripe_subscriptions::Column::CurrentPeriodEnd,
                    stripe_subscriptions::Column::PastDueSince,
                    stripe_subscriptions::Column::AsOf,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// The command granting what an event bought, journaled as the event's.
fn grant_command(customer: &CustomerId, grants: Vec<Grant>, record: &EventRecord) -> Envelope {
    Envelope::new(
        customer.clone(),
        Command::AddGrants { grants },
        record.received_at,
    )
    .from_origin(super::revenue::Origin {
        source: None,
        event: Some(record.id.clone()),
    })
}

/// A row saying that `payment_key` paid invoice `invoice_id`.
fn invoice_payment_row(
    invoice_id: &str,
    payment_key: &str,
) -> stripe_invoice_payments::ActiveModel {
    stripe_invoice_payments::ActiveModel {
        invoice_id: Set(invoice_id.to_owned()),
        payment_key: Set(payment_key.to_owned()),
    }
}

/// Records which payment paid each invoice (the first learnt wins).
async fn save_invoice_payments(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_invoice_payments::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_invoice_payments::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(stripe_invoice_payments::Column::InvoiceId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Links Stripe customers to accounts (a later link replaces the one it moves).
async fn save_links(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_customers::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_customers::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(stripe_customers::Column::StripeCustomerId)
                .update_columns([
                    stripe_customers::Column::CustomerId,
                    stripe_customers::Column::LinkedBy,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Notes which grants payments paid for (once each).
/// A row saying that `payment_key` paid for `grant_id`, nothing of it taken back yet.
fn payment_grant(
    payment_key: &str,
    grant_id: &str,
    subscription: Option<&str>,
) -> stripe_payment_grants::ActiveModel {
    stripe_payment_grants::ActiveModel {
        payment_key: Set(payment_key.to_owned()),
        grant_id: Set(grant_id.to_owned()),
        subscription_id: Set(subscription.map(str::to_owned)),
        clawed_back: Set(0),
    }
}

async fn save_payment_grants(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_payment_grants::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_payment_grants::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                stripe_payment_grants::Column::PaymentKey,
                stripe_payment_grants::Column::GrantId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Records what payments paid, tax included, and the tax in it (first record wins: a payment's
/// amounts do not change).
async fn save_payments(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_payments::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_payments::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(stripe_payments::Column::PaymentKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Notes which customers' books events touched.
async fn save_event_customers(
    txn: &DatabaseTransaction,
    rows: Vec<stripe_event_customers::ActiveModel>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    stripe_event_customers::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                stripe_event_customers::Column::CustomerId,
                stripe_event_customers::Column::EventId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Unix seconds from Stripe as a timestamp.
pub fn from_unix(seconds: i64) -> Result<Timestamp> {
    timestamp(seconds.saturating_mul(1_000_000))
        .map_err(|_| Error::invalid("created", format!("{seconds} is not a valid time")))
}

fn subscription_state(row: stripe_subscriptions::Model) -> SubscriptionState {
    SubscriptionState {
        status: SubscriptionStatus::parse(&row.status),
        plan_id: row.plan_id,
        quantity: row.quantity,
        current_period_end_unix: row.current_period_end,
        past_due_since_unix: row.past_due_since,
        as_of_unix: row.as_of,
    }
}

/// Where the backfill reading a source is (`Store::save_sync_cursor`).
struct SaveCursor(stripe_sync_cursors::Model);

impl Write for SaveCursor {
    type Written = ();

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<()> {
        stripe_sync_cursors::Entity::insert(stripe_sync_cursors::ActiveModel::from(self.0.clone()))
            .on_conflict(
                OnConflict::column(stripe_sync_cursors::Column::Source)
                    .update_columns([
                        stripe_sync_cursors::Column::Since,
                        stripe_sync_cursors::Column::StartingAfter,
                        stripe_sync_cursors::Column::Done,
                        stripe_sync_cursors::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
        Ok(())
    }
}

/// Every backfill cursor forgotten (`Store::clear_sync_cursors`).
struct ClearCursors;

impl Write for ClearCursors {
    type Written = ();

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<()> {
        stripe_sync_cursors::Entity::delete_many().exec(txn).await?;
        Ok(())
    }
}
