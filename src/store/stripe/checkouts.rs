//! Checkout events applied together: what they decide on is read once for all of them, each is
//! decided in order by [`crate::domain::checkout::Known::decide`], and what they did is written
//! with one multi-row statement per table and one run of the unit of work for their grants.

use super::{StripeTx, save_event_customers, save_links, save_payment_grants, save_payments, time};
use crate::domain::Timestamp;
use crate::domain::billing::{EventOrigin, LinkedBy, Outcome};
use crate::domain::checkout::{CheckoutFact, Decision, Known, PackGrant};
use crate::domain::customer::CustomerId;
use crate::error::{Error, Result};
use crate::store::book::Envelope;
use entity::{
    stripe_charges, stripe_customers, stripe_disputes, stripe_effects, stripe_event_customers,
    stripe_events, stripe_payment_grants, stripe_payments, stripe_refunds,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use std::collections::{BTreeSet, HashSet};

/// A Stripe event as it is recorded.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    /// Unix seconds.
    pub created: i64,
    pub origin: EventOrigin,
    pub payload: String,
    pub received_at: Timestamp,
}

/// A checkout event: its record, the Stripe objects it names, and the fact it states.
#[derive(Debug, Clone)]
pub struct CheckoutEvent {
    pub record: EventRecord,
    /// Stripe object ids it names (serialised on PostgreSQL).
    pub objects: Vec<String>,
    pub fact: CheckoutFact,
}

/// What one checkout event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub outcome: Outcome,
    /// The payment a grant was made for, when one was: settled by the caller when Stripe told
    /// of refunds or disputes of it before (see [`Settling`]).
    pub granted_payment: Option<String>,
}

/// Who settles a checkout's payment against refunds and disputes Stripe told of before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settling {
    /// Nobody in a batch: such a payment stops the batch before it (the event is applied on its
    /// own).
    Stop,
    /// The caller, after the grant is written: an event applied on its own, whose caller has
    /// already resolved its link (moving earlier credits, saying so of a second account named,
    /// noting the accounts it touched).
    ByCaller,
}

impl StripeTx {
    /// Applies `events` in order, stopping before the first one a batch leaves alone (a link
    /// that moves earlier credits; with [`Settling::Stop`], a payment with refunds or disputes
    /// told before). Answers the events it applied, in order: each an outcome, or the refusal
    /// of an event that wrote nothing. Fails as a whole when a write fails.
    // Long: read once, decide in order, then one statement per table; split, it would pass the
    // same dozen collections between three functions.
    pub async fn apply_checkouts(
        &self,
        events: &[&CheckoutEvent],
        settling: Settling,
    ) -> Result<Vec<Result<Checked>>> {
        let objects: Vec<String> = events.iter().flat_map(|e| e.objects.clone()).collect();
        self.lock(&objects).await?;
        let mut known = self.known_to_checkouts(events, settling).await?;
        let mut accounts: BTreeSet<&str> = BTreeSet::new();
        for event in events {
            let fact = &event.fact;
            accounts.extend(fact.stripe_customer.as_deref());
            accounts.extend(fact.named.as_ref().map(|(a, _)| a.as_str()));
            if let Some(c) = &fact.stripe_customer {
                accounts.extend(known.links.get(c).map(|(a, _)| a.as_str()));
            }
        }
        self.lock_accounts(accounts).await?;

        let catalog = self.catalog.clone();
        let mut answers = Vec::with_capacity(events.len());
        let mut applied = Vec::new();
        for event in events {
            let now = event.record.received_at;
            match known.decide(&event.fact, &catalog, now, crate::store::new_grant_id) {
                Decision::Alone => break,
                Decision::Duplicate => answers.push(Ok(Checked {
                    outcome: Outcome::duplicate(),
                    granted_payment: None,
                })),
                Decision::Refused(field, why) => answers.push(Err(Error::invalid(field, why))),
                Decision::Apply(done) => {
                    if let Some(ignored) = &done.ignored_link
                        && settling == Settling::Stop
                    {
                        tracing::warn!(
                            stripe_customer = ?event.fact.stripe_customer,
                            linked = ?done.concerns,
                            ignored = %ignored,
                            "a Stripe customer names a second account; the first link is kept"
                        );
                    }
                    answers.push(Ok(Checked {
                        outcome: done.outcome.clone(),
                        granted_payment: done.grant.as_ref().map(|g| g.payment_key.clone()),
                    }));
                    applied.push((*event, done));
                }
            }
        }
        if applied.is_empty() {
            return Ok(answers);
        }

        // The grants first: a refused command fails the whole batch, before anything is written.
        let envelopes: Vec<Envelope> = applied
            .iter()
            .filter_map(|(event, done)| {
                done.grant.as_ref().map(|g| grant_command(g, &event.record))
            })
            .collect();
        self.run_grants(&envelopes).await?;

        // The accounts the caller's link resolution touched (an event applied on its own).
        let drained: Vec<String> =
            std::mem::take(&mut *self.concerned.lock().expect("no panic while holding it"))
                .into_iter()
                .collect();
        debug_assert!(
            drained.is_empty() || events.len() == 1,
            "only an event applied on its own resolves its link first"
        );
        let mut rows = RunRows::default();
        for (event, done) in &applied {
            let record = &event.record;
            rows.event(record, &done.outcome);
            if let Some((stripe_customer, account, by)) = &done.link {
                rows.link(stripe_customer, account, *by);
            }
            let mut customers: BTreeSet<&str> = drained.iter().map(String::as_str).collect();
            customers.extend(done.concerns.as_ref().map(CustomerId::as_str));
            for customer in customers {
                rows.concerns(customer, record);
            }
            if let Some(g) = &done.grant {
                rows.effect(&g.effect, &g.customer, record);
                let (paid_for, payment) = payment_rows(g);
                rows.payment_grants.push(paid_for);
                rows.payments.extend(payment);
            }
        }
        rows.save(&self.txn).await?;
        Ok(answers)
    }

    /// What checkout events decide on, in a few set-based reads: which were recorded, the links
    /// of their Stripe customers, which sessions granted, which payments had something taken
    /// back (with [`Settling::Stop`]).
    async fn known_to_checkouts(
        &self,
        events: &[&CheckoutEvent],
        settling: Settling,
    ) -> Result<Known> {
        let ids: Vec<&str> = events.iter().map(|e| e.record.id.as_str()).collect();
        let recorded: Vec<String> = stripe_events::Entity::find()
            .select_only()
            .column(stripe_events::Column::Id)
            .filter(stripe_events::Column::Id.is_in(crate::store::rows::in_list(&ids)))
            .into_tuple()
            .all(&self.txn)
            .await?;
        let recorded: HashSet<String> = recorded.into_iter().collect();
        // What the events received before would decide on is not read.
        let events: Vec<&&CheckoutEvent> = events
            .iter()
            .filter(|e| !recorded.contains(&e.record.id))
            .collect();
        if events.is_empty() {
            return Ok(Known {
                events: recorded,
                ..Known::default()
            });
        }
        let stripe_customers: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e.fact.stripe_customer.as_deref())
            .collect();
        let links = if stripe_customers.is_empty() {
            Vec::new()
        } else {
            stripe_customers::Entity::find()
                .filter(stripe_customers::Column::StripeCustomerId.is_in(
                    crate::store::rows::in_list(&stripe_customers.into_iter().collect::<Vec<_>>()),
                ))
                .all(&self.txn)
                .await?
        };
        let effect_keys: Vec<String> = events.iter().map(|e| e.fact.effect()).collect();
        let effects = self.applied_effects(&effect_keys).await?;
        let taken_back = match settling {
            Settling::Stop => {
                let keys: Vec<String> = events.iter().map(|e| e.fact.payment_key.clone()).collect();
                self.payments_taken_back(&keys).await?
            }
            Settling::ByCaller => HashSet::new(),
        };
        Ok(Known {
            events: recorded,
            links: links
                .into_iter()
                .map(|r| {
                    let by = LinkedBy::parse(&r.linked_by);
                    (r.stripe_customer_id, (CustomerId::known(r.customer_id), by))
                })
                .collect(),
            effects,
            taken_back,
        })
    }

    /// Which of `keys` (payment intents, charges, sessions) Stripe has told of a refunded charge,
    /// a refund or a dispute for: one statement.
    pub(super) async fn payments_taken_back(&self, keys: &[String]) -> Result<HashSet<String>> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{
            Alias, Condition, Expr, ExprTrait, Iden, Query, SelectStatement, UnionType,
        };
        fn naming<T: Iden + Copy + 'static, C: Iden + Copy + 'static>(
            table: T,
            [a, b]: [C; 2],
            keys: &[String],
        ) -> SelectStatement {
            Query::select()
                .expr_as(Expr::col((table, a)), Alias::new("a"))
                .expr_as(Expr::col((table, b)), Alias::new("b"))
                .from(table)
                .cond_where(
                    Condition::any()
                        .add(Expr::col((table, a)).is_in(crate::store::rows::in_list(keys)))
                        .add(Expr::col((table, b)).is_in(crate::store::rows::in_list(keys))),
                )
                .to_owned()
        }
        use stripe_charges::Column as C;
        use stripe_disputes::Column as D;
        use stripe_refunds::Column as R;
        let query = naming(stripe_charges::Entity, [C::PaymentIntent, C::Id], keys)
            .union(
                UnionType::All,
                naming(stripe_refunds::Entity, [R::PaymentIntent, R::Charge], keys),
            )
            .union(
                UnionType::All,
                naming(stripe_disputes::Entity, [D::PaymentIntent, D::Charge], keys),
            )
            .to_owned();
        let wanted: HashSet<&String> = keys.iter().collect();
        let mut found = HashSet::new();
        for row in self.txn.query_all(&query).await? {
            for column in ["a", "b"] {
                if let Some(key) = row.try_get::<Option<String>>("", column)?
                    && wanted.contains(&key)
                {
                    found.insert(key);
                }
            }
        }
        Ok(found)
    }
}

impl StripeTx {
    /// Notes which payment paid for a pack's grant, and what it paid.
    pub async fn record_pack_payment(&self, bought: &PackGrant) -> Result<()> {
        let (paid_for, payment) = payment_rows(bought);
        save_payment_grants(&self.txn, vec![paid_for]).await?;
        save_payments(&self.txn, payment.into_iter().collect()).await
    }
}

/// What a run of events writes besides their ledger commands, one multi-row statement per
/// table.
#[derive(Default)]
pub(super) struct RunRows {
    events: Vec<stripe_events::ActiveModel>,
    links: Vec<stripe_customers::ActiveModel>,
    effects: Vec<stripe_effects::ActiveModel>,
    pub(super) payment_grants: Vec<stripe_payment_grants::ActiveModel>,
    pub(super) payments: Vec<stripe_payments::ActiveModel>,
    concerned: Vec<stripe_event_customers::ActiveModel>,
}

impl RunRows {
    /// The event, recorded with what it did.
    pub(super) fn event(&mut self, record: &EventRecord, outcome: &Outcome) {
        self.events.push(event_row(
            record,
            outcome.outcome.as_str(),
            Some(outcome.detail.clone()),
        ));
    }

    pub(super) fn link(&mut self, stripe_customer: &str, account: &CustomerId, by: LinkedBy) {
        self.links.push(stripe_customers::ActiveModel {
            stripe_customer_id: Set(stripe_customer.to_owned()),
            customer_id: Set(account.to_string()),
            linked_by: Set(by.as_str().to_owned()),
        });
    }

    /// An effect the event applied (once) for `customer`.
    pub(super) fn effect(&mut self, key: &str, customer: &CustomerId, record: &EventRecord) {
        self.effects.push(stripe_effects::ActiveModel {
            effect_key: Set(key.to_owned()),
            customer_id: Set(customer.to_string()),
            created_at: Set(time(record.received_at)),
        });
    }

    /// The event touched `customer`'s books: it is listed with the customer.
    pub(super) fn concerns(&mut self, customer: &str, record: &EventRecord) {
        self.concerned.push(stripe_event_customers::ActiveModel {
            customer_id: Set(customer.to_owned()),
            event_id: Set(record.id.clone()),
            received_at: Set(time(record.received_at)),
        });
    }

    pub(super) async fn save(self, txn: &sea_orm::DatabaseTransaction) -> Result<()> {
        if !self.events.is_empty() {
            stripe_events::Entity::insert_many(self.events)
                .exec_without_returning(txn)
                .await?;
        }
        save_links(txn, self.links).await?;
        if !self.effects.is_empty() {
            stripe_effects::Entity::insert_many(self.effects)
                .exec_without_returning(txn)
                .await?;
        }
        save_payment_grants(txn, self.payment_grants).await?;
        save_payments(txn, self.payments).await?;
        save_event_customers(txn, self.concerned).await
    }
}

/// An event's row, with what it did (`received` while it is being applied).
pub(super) fn event_row(
    record: &EventRecord,
    outcome: &str,
    detail: Option<String>,
) -> stripe_events::ActiveModel {
    stripe_events::ActiveModel {
        id: Set(record.id.clone()),
        event_type: Set(record.event_type.clone()),
        api_version: Set(record.api_version.clone()),
        created: Set(record.created),
        received_at: Set(time(record.received_at)),
        origin: Set(record.origin.as_str().to_owned()),
        outcome: Set(outcome.to_owned()),
        detail: Set(detail),
        payload: Set(record.payload.clone()),
    }
}

/// The rows noting which payment paid for a pack's grant, and what it paid (when known).
fn payment_rows(
    bought: &PackGrant,
) -> (
    stripe_payment_grants::ActiveModel,
    Option<stripe_payments::ActiveModel>,
) {
    let paid_for = stripe_payment_grants::ActiveModel {
        payment_key: Set(bought.payment_key.clone()),
        grant_id: Set(bought.grant.id.clone()),
        subscription_id: Set(None),
        clawed_back: Set(0),
    };
    let payment = bought
        .payment
        .map(|(paid_minor, tax_minor)| stripe_payments::ActiveModel {
            payment_key: Set(bought.payment_key.clone()),
            paid_minor: Set(paid_minor),
            tax_minor: Set(tax_minor),
            currency: Set(bought.grant.currency.clone().unwrap_or_default()),
        });
    (paid_for, payment)
}

/// The command granting a checkout's pack, journaled as the event's.
fn grant_command(grant: &PackGrant, record: &EventRecord) -> Envelope {
    super::grant_command(&grant.customer, vec![grant.grant.clone()], record)
}
