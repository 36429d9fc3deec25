//! Auto top-up in the database (README, Auto top-up): charges are started in the transaction of
//! the change of balance that calls for them (an attempt row and an outbox row, delivered by the
//! worker to Stripe), and settled once: by Stripe's answer, by the outbox giving up, or by
//! Stripe's `payment_intent.*` events, whichever comes first.

use super::Store;
use super::locks::lock_customer;
use super::outbox::{OutboxKind, STRIPE_DESTINATION, insert_new, pending};
use super::rows::ByKey;
use super::rows::{self, micros, time};
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::autotopup::{AutoTopup, Charge, Settled, Start, failed_message};
use crate::domain::billing::money_to_minor;
use crate::domain::catalog::Catalog;
use crate::domain::customer::CustomerId;
use crate::error::{Error, Result};
use entity::{auto_topup_attempts, customers};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// The `type` of the outbox rows that charge a top-up.
pub const CHARGE_ROW_TYPE: &str = "auto_topup.charge";
/// Attempts listed with a customer's auto top-up, newest first.
pub const ATTEMPTS_SHOWN: u64 = 20;

/// An attempt's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Pending,
    Succeeded,
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
        }
    }
}

/// A customer's auto top-up and its latest attempts.
pub struct AutoTopupState {
    pub auto_topup: AutoTopup,
    pub attempts: Vec<auto_topup_attempts::Model>,
}

/// Writes each started charge: its attempt and the outbox row that asks Stripe for it.
pub(crate) async fn start_charges(txn: &DatabaseTransaction, starts: &[Start]) -> Result<()> {
    if starts.is_empty() {
        return Ok(());
    }
    let mut attempts = Vec::with_capacity(starts.len());
    let mut outbox = Vec::with_capacity(starts.len());
    for start in starts {
        let amount_minor = money_to_minor(start.price, &start.currency);
        attempts.push(auto_topup_attempts::ActiveModel {
            id: Set(start.attempt.clone()),
            customer_id: Set(start.customer.to_string()),
            pack_id: Set(start.pack.clone()),
            credits: Set(micros(start.credits)?),
            amount_minor: Set(amount_minor),
            currency: Set(start.currency.clone()),
            status: Set(AttemptStatus::Pending.as_str().into()),
            payment_intent: Set(None),
            failure: Set(None),
            failure_code: Set(None),
            created_at: Set(time(start.at)),
            settled_at: Set(None),
        });
        let charge = Charge {
            attempt: start.attempt.clone(),
            customer: start.customer.clone(),
            pack: start.pack.clone(),
            amount_minor,
            currency: start.currency.clone(),
        };
        let body = serde_json::to_string(&charge)
            .map_err(|e| Error::Internal(format!("a charge's body: {e}")))?;
        outbox.push(pending(
            &start.attempt,
            OutboxKind::PaymentIntent,
            STRIPE_DESTINATION,
            CHARGE_ROW_TYPE,
            start.customer.as_str(),
            body,
            time(chrono::Utc::now()),
        ));
    }
    auto_topup_attempts::Entity::insert_many(attempts)
        .on_conflict(
            OnConflict::column(auto_topup_attempts::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    insert_new(txn, outbox).await
}

/// Settles an attempt once: a success from pending or failed (the money was taken: it counts),
/// a failure only from pending. The customer's auto top-up follows; a failure is told
/// (`auto_topup.failed`). Returns the attempt's customer when the attempt changed.
pub(crate) async fn settle(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    attempt_id: &str,
    settled: &Settled,
    payment_intent: Option<&str>,
    now: Timestamp,
) -> Result<Option<String>> {
    let Some(attempt) = auto_topup_attempts::Entity::find_by_id(attempt_id)
        .by_key(txn)
        .await?
    else {
        return Ok(None);
    };
    if !lock_customer(txn, &attempt.customer_id).await? {
        return Ok(None);
    }
    let mut update = auto_topup_attempts::Entity::update_many()
        .col_expr(
            auto_topup_attempts::Column::SettledAt,
            Expr::value(time(now)),
        )
        .filter(auto_topup_attempts::Column::Id.eq(attempt_id));
    if let Some(pi) = payment_intent {
        update = update.col_expr(auto_topup_attempts::Column::PaymentIntent, Expr::value(pi));
    }
    update = match settled {
        Settled::Succeeded => update
            .col_expr(
                auto_topup_attempts::Column::Status,
                Expr::value(AttemptStatus::Succeeded.as_str()),
            )
            .filter(auto_topup_attempts::Column::Status.ne(AttemptStatus::Succeeded.as_str())),
        Settled::Failed { reason, code } => update
            .col_expr(
                auto_topup_attempts::Column::Status,
                Expr::value(AttemptStatus::Failed.as_str()),
            )
            .col_expr(auto_topup_attempts::Column::Failure, Expr::value(reason))
            .col_expr(
                auto_topup_attempts::Column::FailureCode,
                Expr::value(code.clone()),
            )
            .filter(auto_topup_attempts::Column::Status.eq(AttemptStatus::Pending.as_str())),
    };
    if update.exec(txn).await?.rows_affected == 0 {
        return Ok(None);
    }
    let column: Option<String> = customers::Entity::find_by_id(attempt.customer_id.clone())
        .select_only()
        .column(customers::Column::AutoTopup)
        .into_tuple::<Option<String>>()
        .by_key(txn)
        .await?
        .flatten();
    let mut auto: AutoTopup = rows::from_json_column(column.as_deref())?;
    let started_at = rows::timestamp(attempt.created_at)?;
    if auto.settle(attempt_id, started_at, settled, now) {
        customers::Entity::update_many()
            .col_expr(
                customers::Column::AutoTopup,
                Expr::value(rows::json_column(&auto, auto.is_unset())?),
            )
            .filter(customers::Column::Id.eq(attempt.customer_id.as_str()))
            .exec(txn)
            .await?;
    }
    if let Settled::Failed { reason, code } = settled {
        let message = failed_message(
            &CustomerId::known(attempt.customer_id.clone()),
            attempt_id,
            &attempt.pack_id,
            reason,
            code.as_deref(),
            now,
        );
        super::outbox::enqueue(txn, &catalog.webhooks, &[message]).await?;
    }
    Ok(Some(attempt.customer_id))
}

impl Store {
    /// A customer's auto top-up and its latest attempts; `None` when there is no customer.
    pub async fn auto_topup(&self, customer: &CustomerId) -> Result<Option<AutoTopupState>> {
        let customer = customer.as_str();
        let Some(column) = customers::Entity::find_by_id(customer)
            .select_only()
            .column(customers::Column::AutoTopup)
            .into_tuple::<Option<String>>()
            .by_key(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let attempts = auto_topup_attempts::Entity::find()
            .filter(auto_topup_attempts::Column::CustomerId.eq(customer))
            .order_by_desc(auto_topup_attempts::Column::CreatedAt)
            .order_by_desc(auto_topup_attempts::Column::Id)
            .limit(ATTEMPTS_SHOWN)
            .all(self.connection())
            .await?;
        Ok(Some(AutoTopupState {
            auto_topup: rows::from_json_column(column.as_deref())?,
            attempts,
        }))
    }

    pub async fn auto_topup_attempt(&self, id: &str) -> Result<Option<auto_topup_attempts::Model>> {
        Ok(auto_topup_attempts::Entity::find_by_id(id)
            .by_key(self.connection())
            .await?)
    }

    /// Records the payment intent Stripe made for a pending attempt.
    pub async fn auto_topup_charged(&self, attempt: &str, payment_intent: &str) -> Result<()> {
        self.write(&Charged {
            attempt,
            payment_intent,
        })
        .await
    }

    /// Settles an attempt as failed (Stripe refused the charge, or could not be reached in the
    /// outbox's retry window).
    pub async fn auto_topup_failed(
        &self,
        attempt: &str,
        reason: &str,
        code: Option<&str>,
        payment_intent: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let settled = Settled::Failed {
            reason: reason.to_owned(),
            code: code.map(str::to_owned),
        };
        let changed = self
            .write(&Settle {
                attempt,
                settled: &settled,
                payment_intent,
                now,
            })
            .await?;
        self.books.forget(changed.as_deref());
        Ok(changed.is_some())
    }

    /// The Stripe customer a customer is charged as: the first linked, by Stripe id.
    pub async fn stripe_customer_of(&self, customer: &str) -> Result<Option<String>> {
        let ids = [customer.to_owned()];
        Ok(super::overage::stripe_links(self.connection(), &ids)
            .await?
            .remove(customer))
    }
}

/// The payment intent Stripe made for a pending attempt recorded (`Store::auto_topup_charged`).
struct Charged<'a> {
    attempt: &'a str,
    payment_intent: &'a str,
}

impl Write for Charged<'_> {
    type Written = ();

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<()> {
        auto_topup_attempts::Entity::update_many()
            .col_expr(
                auto_topup_attempts::Column::PaymentIntent,
                Expr::value(self.payment_intent),
            )
            .filter(auto_topup_attempts::Column::Id.eq(self.attempt))
            .filter(auto_topup_attempts::Column::PaymentIntent.is_null())
            .exec(txn)
            .await?;
        Ok(())
    }
}

/// An attempt settled ([`settle`]): the customer whose attempt changed.
struct Settle<'a> {
    attempt: &'a str,
    settled: &'a Settled,
    payment_intent: Option<&'a str>,
    now: Timestamp,
}

impl Write for Settle<'_> {
    type Written = Option<String>;

    async fn carry_out(&self, txn: &DatabaseTransaction, store: &Store) -> Result<Option<String>> {
        settle(
            txn,
            store.catalog(),
            self.attempt,
            self.settled,
            self.payment_intent,
            self.now,
        )
        .await
    }
}
