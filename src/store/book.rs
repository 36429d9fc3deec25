//! Running a command on one customer's book: lock, replay or decide, check, write, commit.

use super::Store;
use super::revenue::{self, Origin};
use super::rows::{self, micros, time, timestamp};
use crate::domain::Timestamp;
use crate::domain::catalog::Catalog;
use crate::domain::ledger::{Book, HoldStatus};
use crate::domain::money::Credits;
use crate::error::{Error, Result};
use entity::{customers, grants, holds, idempotency_records, ledger_entries};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};

/// Attempts of one command when the database reports a transient failure.
const TRANSIENT_ATTEMPTS: u32 = 5;

/// An idempotency key and the hash of the request it was first used with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    key: String,
    request_hash: String,
}

impl Idempotency {
    /// A caller's `idempotency_key`. Stored under its own namespace, so that no caller's key can
    /// collide with a hold's resolution.
    pub fn request(key: &str, request_hash: String) -> Self {
        Idempotency {
            key: format!("request:{key}"),
            request_hash,
        }
    }

    /// The one resolution (capture or void) a hold may have.
    pub fn hold_resolution(hold_id: &str, request_hash: String) -> Self {
        Idempotency {
            key: format!("hold:{hold_id}"),
            request_hash,
        }
    }
}

/// The customer facts beside the book that decisions need.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub plan_id: Option<String>,
    pub frozen: bool,
    /// Since when the customer's subscription is past due, if it is.
    pub past_due_since: Option<Timestamp>,
    /// End of the current subscription period.
    pub renews_at: Option<Timestamp>,
}

impl Standing {
    /// The plan whose features and overage rule apply at `now`: none once a past-due
    /// subscription has outlived its grace.
    pub fn plan_in_force(&self, now: Timestamp, past_due_grace_seconds: u64) -> Option<&str> {
        let grace = chrono::Duration::seconds(i64::try_from(past_due_grace_seconds).ok()?);
        match self.past_due_since {
            Some(since) if now >= since + grace => None,
            _ => self.plan_id.as_deref(),
        }
    }
}

/// How a command meets its customer.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    pub customer_id: &'a str,
    /// Create the customer when unknown (grants); otherwise an unknown customer is an error.
    pub create_customer: bool,
    pub idempotency: Option<Idempotency>,
    /// Load this hold even when it is no longer open, to say why it cannot be resolved.
    pub hold_id: Option<&'a str>,
    pub now: Timestamp,
    /// Where the command comes from, for the journal: a usage id, a Stripe event.
    pub origin: Origin<'a>,
}

#[derive(Debug)]
pub struct Executed<T> {
    pub value: T,
    /// The stored result of an earlier request with the same idempotency key.
    pub replayed: bool,
}

struct Loaded {
    book: Book,
    standing: Standing,
    version: i64,
}

impl Store {
    /// Runs `decide` on the customer's book under its row lock and writes what it appended, in
    /// one transaction. `decide` is pure and may run more than once (transient retries); when it
    /// fails nothing is written.
    pub async fn execute<T, F>(&self, command: Command<'_>, decide: F) -> Result<Executed<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&mut Book, &Standing) -> Result<T>,
    {
        let mut attempt = 1;
        loop {
            match self.execute_once(&command, &decide).await {
                Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)))
                        .await;
                }
                Err(e) if e.is_transient() => return Err(Error::Unavailable),
                other => return other,
            }
        }
    }

    pub(crate) async fn begin(&self) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            isolation_level: None,
            access_mode: None,
            // Take SQLite's write lock at BEGIN, so a transaction never has to upgrade a read
            // snapshot (which fails at once instead of waiting on the busy timeout).
            sqlite_transaction_mode: (self.backend() == DbBackend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
        };
        Ok(self.connection().begin_with_options(options).await?)
    }

    async fn execute_once<T, F>(&self, command: &Command<'_>, decide: &F) -> Result<Executed<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&mut Book, &Standing) -> Result<T>,
    {
        let txn = self.begin().await?;
        let executed = run_in(&txn, &self.catalog, command, &[], decide).await?;
        if !executed.replayed {
            txn.commit().await?;
        }
        Ok(executed)
    }

    /// The customer's book as of `now`, without writing: for `check` and reads. `None` when the
    /// customer is unknown.
    pub async fn view(
        &self,
        customer_id: &str,
        now: Timestamp,
    ) -> Result<Option<(Book, Standing)>> {
        let txn = self.connection().begin().await?;
        let exists = customers::Entity::find_by_id(customer_id.to_owned())
            .one(&txn)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let loaded = load(&txn, customer_id, None, &[]).await?;
        txn.commit().await?;
        let mut book = loaded.book;
        book.settle_due(now);
        Ok(Some((book, loaded.standing)))
    }

    /// The customer owning a hold and the hold's status, if the hold exists.
    pub async fn hold_status(&self, hold_id: &str) -> Result<Option<(String, HoldStatus)>> {
        let Some(row) = holds::Entity::find_by_id(hold_id.to_owned())
            .one(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let status = HoldStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(format!("hold status {:?}", row.status)))?;
        Ok(Some((row.customer_id, status)))
    }

    /// Customers with a hold or a grant due to expire at `now`: the work of the expiry job.
    pub async fn customers_due(&self, now: Timestamp, limit: u64) -> Result<Vec<String>> {
        use sea_orm::{Order, QuerySelect};
        let now = time(now);
        let mut ids: Vec<String> = holds::Entity::find()
            .select_only()
            .column(holds::Column::CustomerId)
            .distinct()
            .filter(holds::Column::Status.eq(HoldStatus::Held.as_str()))
            .filter(holds::Column::ExpiresAt.lte(now))
            .order_by(holds::Column::CustomerId, Order::Asc)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        let grant_ids: Vec<String> = grants::Entity::find()
            .select_only()
            .column(grants::Column::CustomerId)
            .distinct()
            .filter(grants::Column::Expired.eq(false))
            .filter(grants::Column::ExpiresAt.lte(now))
            .order_by(grants::Column::CustomerId, Order::Asc)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        ids.extend(grant_ids);
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Sets the customer's plan (creating the customer), as an admin command.
    pub async fn set_plan(
        &self,
        customer_id: &str,
        plan_id: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let txn = self.begin().await?;
        customers::Entity::insert(customers::ActiveModel {
            plan_id: Set(plan_id.map(str::to_owned)),
            ..rows::new_customer(customer_id, now)
        })
        .on_conflict(
            OnConflict::column(customers::Column::Id)
                .update_column(customers::Column::PlanId)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Runs `decide` on the customer's book inside `txn`: takes the customer's row lock (creating the
/// customer when the command allows), replays or decides, checks the invariants and writes.
/// `extra_grants` are loaded even when spent or expired (a refund or rollover acts on them). The
/// caller commits; on a replay there is nothing to commit.
pub(crate) async fn run_in<T, F>(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    command: &Command<'_>,
    extra_grants: &[String],
    decide: &F,
) -> Result<Executed<T>>
where
    T: Serialize + DeserializeOwned,
    F: Fn(&mut Book, &Standing) -> Result<T>,
{
    if !lock_customer(txn, command.customer_id).await? {
        if !command.create_customer {
            return Err(Error::CustomerNotFound(command.customer_id.to_owned()));
        }
        insert_customer_if_absent(txn, command.customer_id, command.now).await?;
        let locked = lock_customer(txn, command.customer_id).await?;
        assert!(locked, "the customer row exists once inserted");
    }

    if let Some(idempotency) = &command.idempotency {
        let earlier = idempotency_records::Entity::find_by_id((
            command.customer_id.to_owned(),
            idempotency.key.clone(),
        ))
        .one(txn)
        .await?;
        if let Some(record) = earlier {
            if record.request_hash != idempotency.request_hash {
                return Err(Error::IdempotencyConflict);
            }
            let value = serde_json::from_str(&record.body)
                .map_err(|e| Error::Internal(format!("stored idempotent result: {e}")))?;
            return Ok(Executed {
                value,
                replayed: true,
            });
        }
    }

    let loaded = load(txn, command.customer_id, command.hold_id, extra_grants).await?;
    let before = loaded.book.clone();
    let mut book = loaded.book;
    book.settle_due(command.now);
    let value = decide(&mut book, &loaded.standing)?;
    book.check_invariants()?;
    write(txn, &before, &book, loaded.version, command.now).await?;
    revenue::post(
        txn,
        catalog,
        command.customer_id,
        &book.grants,
        &book.entries[before.entries.len()..],
        command.origin,
        command.now,
    )
    .await?;

    if let Some(idempotency) = &command.idempotency {
        let body = serde_json::to_string(&value).map_err(|e| Error::Internal(e.to_string()))?;
        idempotency_records::ActiveModel {
            customer_id: Set(command.customer_id.to_owned()),
            idempotency_key: Set(idempotency.key.clone()),
            request_hash: Set(idempotency.request_hash.clone()),
            body: Set(body),
            created_at: Set(time(command.now)),
        }
        .insert(txn)
        .await?;
    }
    Ok(Executed {
        value,
        replayed: false,
    })
}

/// Creates the customer's row unless it exists (it may have been created concurrently).
pub(crate) async fn insert_customer_if_absent(
    txn: &DatabaseTransaction,
    customer_id: &str,
    now: Timestamp,
) -> Result<()> {
    customers::Entity::insert(rows::new_customer(customer_id, now))
        .on_conflict(
            OnConflict::column(customers::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Takes the customer's row lock for the rest of the transaction (PostgreSQL: the row lock of an
/// UPDATE; SQLite: the database write lock). False when the customer does not exist.
pub(crate) async fn lock_customer(txn: &DatabaseTransaction, customer_id: &str) -> Result<bool> {
    let result = customers::Entity::update_many()
        .col_expr(
            customers::Column::Version,
            Expr::col(customers::Column::Version).add(1),
        )
        .filter(customers::Column::Id.eq(customer_id))
        .exec(txn)
        .await?;
    Ok(result.rows_affected == 1)
}

async fn load(
    txn: &DatabaseTransaction,
    customer_id: &str,
    hold_id: Option<&str>,
    extra_grants: &[String],
) -> Result<Loaded> {
    let customer = customers::Entity::find_by_id(customer_id.to_owned())
        .one(txn)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer_id.to_owned()))?;
    let grant_rows = grants::Entity::find()
        .filter(grants::Column::CustomerId.eq(customer_id))
        .filter(
            Condition::any()
                .add(
                    Condition::all()
                        .add(grants::Column::Expired.eq(false))
                        .add(grants::Column::Remaining.gt(0)),
                )
                .add(grants::Column::Held.gt(0))
                .add(grants::Column::Id.is_in(extra_grants.iter().cloned())),
        )
        .order_by_asc(grants::Column::CreatedAt)
        .all(txn)
        .await?;
    let mut hold_condition =
        Condition::any().add(holds::Column::Status.eq(HoldStatus::Held.as_str()));
    if let Some(id) = hold_id {
        hold_condition = hold_condition.add(holds::Column::Id.eq(id));
    }
    let hold_rows = holds::Entity::find()
        .filter(holds::Column::CustomerId.eq(customer_id))
        .filter(hold_condition)
        .order_by_asc(holds::Column::CreatedAt)
        .order_by_asc(holds::Column::Id)
        .all(txn)
        .await?;
    let open_ids: Vec<String> = hold_rows
        .iter()
        .filter(|h| h.status == HoldStatus::Held.as_str())
        .map(|h| h.id.clone())
        .collect();
    let mut allocations: HashMap<String, Vec<(String, Credits)>> = HashMap::new();
    if !open_ids.is_empty() {
        let reservations = ledger_entries::Entity::find()
            .filter(ledger_entries::Column::HoldId.is_in(open_ids))
            .filter(ledger_entries::Column::Kind.eq("hold"))
            .filter(ledger_entries::Column::GrantId.is_not_null())
            .order_by_asc(ledger_entries::Column::Id)
            .all(txn)
            .await?;
        for r in reservations {
            let (Some(hold), Some(grant)) = (r.hold_id, r.grant_id) else {
                continue;
            };
            allocations
                .entry(hold)
                .or_default()
                .push((grant, Credits::from_micros(r.held)));
        }
    }
    let mut book = Book::new(customer_id);
    book.overdraft = Credits::from_micros(customer.overdraft);
    book.overdraft_held = Credits::from_micros(customer.overdraft_held);
    book.grants = grant_rows
        .into_iter()
        .map(rows::grant_from_row)
        .collect::<Result<_>>()?;
    book.holds = hold_rows
        .into_iter()
        .map(|row| {
            let reserved = allocations.remove(&row.id).unwrap_or_default();
            rows::hold_from_row(row, reserved)
        })
        .collect::<Result<_>>()?;
    Ok(Loaded {
        book,
        standing: Standing {
            plan_id: customer.plan_id,
            frozen: customer.frozen,
            past_due_since: customer.past_due_since.map(timestamp).transpose()?,
            renews_at: customer.renews_at.map(timestamp).transpose()?,
        },
        version: customer.version,
    })
}

/// Writes the difference between the book as loaded and as decided, and the new entries.
async fn write(
    txn: &DatabaseTransaction,
    before: &Book,
    after: &Book,
    version: i64,
    now: Timestamp,
) -> Result<()> {
    let customer = &after.customer_id;
    let old_grants: BTreeMap<&str, _> = before.grants.iter().map(|g| (g.id.as_str(), g)).collect();
    for grant in &after.grants {
        match old_grants.get(grant.id.as_str()) {
            None => {
                grants::Entity::insert(rows::grant_to_row(customer, grant)?)
                    .exec_without_returning(txn)
                    .await?;
            }
            Some(old) if *old != grant => {
                // Conditional on the values read: a second line of defence behind the row lock,
                // so a grant is never written from a stale read.
                let updated = grants::Entity::update_many()
                    .col_expr(
                        grants::Column::Remaining,
                        Expr::value(micros(grant.remaining)?),
                    )
                    .col_expr(grants::Column::Held, Expr::value(micros(grant.held)?))
                    .col_expr(grants::Column::Expired, Expr::value(grant.expired))
                    .col_expr(
                        grants::Column::Refunded,
                        Expr::value(micros(grant.refunded)?),
                    )
                    .col_expr(
                        grants::Column::ExpiresAt,
                        Expr::value(grant.expires_at.map(time)),
                    )
                    .filter(grants::Column::Id.eq(grant.id.as_str()))
                    .filter(grants::Column::Remaining.eq(micros(old.remaining)?))
                    .filter(grants::Column::Held.eq(micros(old.held)?))
                    .filter(grants::Column::Expired.eq(old.expired))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Err(Error::WriteConflict);
                }
            }
            Some(_) => {}
        }
    }
    // Holds before entries: entries reference them.
    let old_holds: BTreeMap<&str, _> = before.holds.iter().map(|h| (h.id.as_str(), h)).collect();
    for hold in &after.holds {
        match old_holds.get(hold.id.as_str()) {
            None => {
                holds::Entity::insert(rows::hold_to_row(customer, hold)?)
                    .exec_without_returning(txn)
                    .await?;
            }
            Some(old) if *old != hold => {
                holds::Entity::update_many()
                    .col_expr(holds::Column::Status, Expr::value(hold.status.as_str()))
                    .col_expr(
                        holds::Column::Captured,
                        Expr::value(hold.captured.map(micros).transpose()?),
                    )
                    .col_expr(
                        holds::Column::ResolvedAt,
                        Expr::value(hold.resolved_at.map(time)),
                    )
                    .filter(holds::Column::Id.eq(hold.id.as_str()))
                    .exec(txn)
                    .await?;
            }
            Some(_) => {}
        }
    }
    if before.overdraft != after.overdraft || before.overdraft_held != after.overdraft_held {
        let updated = customers::Entity::update_many()
            .col_expr(
                customers::Column::Overdraft,
                Expr::value(micros(after.overdraft)?),
            )
            .col_expr(
                customers::Column::OverdraftHeld,
                Expr::value(micros(after.overdraft_held)?),
            )
            .filter(customers::Column::Id.eq(customer.as_str()))
            .filter(customers::Column::Version.eq(version))
            .exec(txn)
            .await?;
        // The row lock is ours: nobody else can have moved the version.
        if updated.rows_affected != 1 {
            return Err(Error::WriteConflict);
        }
    }
    let new_entries = &after.entries[before.entries.len()..];
    if !new_entries.is_empty() {
        let operation_id = uuid::Uuid::now_v7().to_string();
        let rows = new_entries
            .iter()
            .enumerate()
            .map(|(i, e)| rows::entry_to_row(customer, &operation_id, i, e, now))
            .collect::<Result<Vec<_>>>()?;
        ledger_entries::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}
