//! Paid invoices and subscription events applied together: what they decide on is read once for
//! all of them, each is decided in order by [`crate::domain::stripe_run::Run::decide`], and what
//! they did is written with one multi-row statement per table and one run of the unit of work for
//! their grants.

use super::checkouts::RunRows;
use super::{
    EventRecord, StripeTx, grant_command, invoice_payment_row, payment_grant,
    save_invoice_payments, save_subscriptions, subscription_row, subscription_state, time,
};
use crate::domain::billing::LinkedBy;
use crate::domain::customer::CustomerId;
use crate::domain::invoice::InvoiceFact;
use crate::domain::stripe_run::{
    Applied, EventFact, FactKind, RecordedSubscription, Run, RunDecision,
};
use crate::error::Result;
use crate::store::book::Envelope;
use crate::store::rows::{in_list, timestamp};
use entity::{
    stripe_customers, stripe_events, stripe_invoice_payments, stripe_payment_grants,
    stripe_payments, stripe_renewals, stripe_subscriptions,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::{BTreeSet, HashSet};

/// A paid invoice or a subscription event of the mode applied: its record, the Stripe objects it
/// names, and the fact it states.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub record: EventRecord,
    /// Stripe object ids it names (serialised on PostgreSQL).
    pub objects: Vec<String>,
    pub fact: EventFact,
}

impl StripeTx {
    /// Applies `events` in order, stopping before the first one a run leaves alone (see
    /// `domain::stripe_run`). Answers the events it applied, in order. Fails as a whole when a
    /// write fails.
    // Long: read once, decide in order, then one statement per table; split, it would pass the
    // same dozen collections between three functions.
    pub async fn apply_run(
        &self,
        events: &[&RunEvent],
    ) -> Result<Vec<crate::domain::billing::Outcome>> {
        let objects: Vec<String> = events.iter().flat_map(|e| e.objects.clone()).collect();
        self.lock(&objects).await?;
        let mut run = self.known_to_run(events).await?;
        let catalog = self.catalog.clone();
        let mut answers = Vec::with_capacity(events.len());
        let mut applied: Vec<(&RunEvent, Applied)> = Vec::new();
        for event in events {
            let now = event.record.received_at;
            match run.decide(&event.fact, &catalog, now, crate::store::new_grant_id) {
                RunDecision::Alone => break,
                RunDecision::Duplicate => {
                    answers.push(crate::domain::billing::Outcome::duplicate());
                }
                RunDecision::Apply(done) => {
                    if let Some(ignored) = &done.ignored_link {
                        tracing::warn!(
                            stripe_customer = ?done.stripe_customer,
                            linked = ?done.customer,
                            ignored = %ignored,
                            "a Stripe customer names a second account; the first link is kept"
                        );
                    }
                    answers.push(done.outcome.clone());
                    applied.push((*event, *done));
                }
            }
        }
        if applied.is_empty() {
            return Ok(answers);
        }

        // The grants first: a refused command fails the whole run, before anything is written.
        let envelopes: Vec<Envelope> = applied
            .iter()
            .flat_map(|(event, done)| {
                done.customer.iter().flat_map(move |customer| {
                    done.grants().map(move |bought| {
                        grant_command(customer, bought.grants().cloned().collect(), &event.record)
                    })
                })
            })
            .collect();
        self.run_grants(&envelopes).await?;
        self.write_run(&applied).await?;
        Ok(answers)
    }

    /// What a run's events wrote besides their grants, one statement per table (the
    /// standing: one per event that refreshes it, in order, as each event on its own writes it).
    async fn write_run(&self, applied: &[(&RunEvent, Applied)]) -> Result<()> {
        let mut rows = RunRows::default();
        let mut subscriptions = Vec::new();
        let mut learnt = Vec::new();
        // Each event's standing of its account, written in the events' order.
        let mut standings = Vec::new();
        for (event, done) in applied {
            let record = &event.record;
            rows.event(record, &done.outcome);
            if let Some((stripe_customer, account, by)) = &done.link {
                rows.link(stripe_customer, account, *by);
            }
            if let Some(paid) = &done.paid {
                for line in &paid.lines {
                    rows.effect(&line.effect, &paid.customer, record);
                }
                rows.payments.extend(paid.payments.iter().map(payment_row));
            }
            for bought in done.grants() {
                debug_assert!(!bought.renewal, "a run carries no credits over");
                let subscription = done
                    .paid
                    .as_ref()
                    .and_then(|p| p.subscription_id.as_deref());
                for grant in bought.grants() {
                    rows.payment_grants.extend(
                        bought
                            .payment_keys
                            .iter()
                            .map(|key| payment_grant(key, &grant.id, subscription)),
                    );
                }
            }
            if let (Some((id, state)), Some(stripe_customer)) =
                (&done.subscription, &done.stripe_customer)
            {
                // One row per subscription in a statement: the last state recorded.
                subscriptions.retain(|(known, _)| known != id);
                let row = subscription_row(id, stripe_customer, state.clone());
                subscriptions.push((id.clone(), row));
            }
            if let (Some(standing), Some(customer)) = (&done.standing, &done.customer) {
                standings.push((customer.clone(), standing.clone(), record.received_at));
            }
            if let Some((invoice, key)) = &done.invoice_payment {
                learnt.push(invoice_payment_row(invoice, key));
                rows.payment_grants
                    .extend(done.also_paid.iter().map(|(grant, subscription)| {
                        payment_grant(key, grant, subscription.as_deref())
                    }));
                if let Some((paid_minor, tax_minor, currency)) = &done.also_payment {
                    let amounts = (key.clone(), *paid_minor, *tax_minor, currency.clone());
                    rows.payments.push(payment_row(&amounts));
                }
            }
            if let Some(customer) = &done.customer {
                rows.concerns(customer.as_str(), record);
            }
        }
        rows.save(&self.txn).await?;
        let rows = subscriptions.into_iter().map(|(_, row)| row).collect();
        save_subscriptions(&self.txn, rows).await?;
        save_invoice_payments(&self.txn, learnt).await?;
        for (customer, standing, now) in standings {
            self.set_plan_standing(&customer, standing, now).await?;
        }
        Ok(())
    }

    /// What the invoices that invoice payments name paid for, and what they paid.
    async fn known_to_invoice_payments(
        &self,
        run: &mut Run,
        paying: &[(&str, &str)],
    ) -> Result<()> {
        let invoices: Vec<&str> = paying.iter().map(|(invoice, _)| *invoice).collect();
        let grants = stripe_payment_grants::Entity::find()
            .filter(stripe_payment_grants::Column::PaymentKey.is_in(in_list(&invoices)))
            .all(&self.txn)
            .await?;
        for row in grants {
            let grant = (row.grant_id, row.subscription_id);
            run.paid_grants
                .entry(row.payment_key)
                .or_default()
                .push(grant);
        }
        let payments = stripe_payments::Entity::find()
            .filter(stripe_payments::Column::PaymentKey.is_in(in_list(&invoices)))
            .all(&self.txn)
            .await?;
        for row in payments {
            let amounts = (row.paid_minor, row.tax_minor, row.currency);
            run.payments.insert(row.payment_key, amounts);
        }
        Ok(())
    }

    /// What a run of paid invoices and subscription events decides on, in a few set-based reads (after locking every
    /// account it may write): which events were recorded, the links of their Stripe customers,
    /// which lines were applied, the payments learnt for them, the subscriptions they name and
    /// those of their Stripe customers, which of their payments had something taken back, and
    /// the renewals recorded at their periods' ends.
    // Long: one set-based read per table, in the order the decision needs them.
    async fn known_to_run(&self, events: &[&RunEvent]) -> Result<Run> {
        let ids: Vec<&str> = events.iter().map(|e| e.record.id.as_str()).collect();
        let recorded: Vec<String> = stripe_events::Entity::find()
            .select_only()
            .column(stripe_events::Column::Id)
            .filter(stripe_events::Column::Id.is_in(in_list(&ids)))
            .into_tuple()
            .all(&self.txn)
            .await?;
        let recorded: HashSet<String> = recorded.into_iter().collect();
        let facts: Vec<&EventFact> = events
            .iter()
            .map(|e| &e.fact)
            .filter(|f| !recorded.contains(&f.event_id))
            .collect();
        let mut run = Run {
            events: recorded,
            ..Run::default()
        };
        if facts.is_empty() {
            return Ok(run);
        }
        let invoices: Vec<&InvoiceFact> = facts
            .iter()
            .filter_map(|f| match &f.kind {
                FactKind::InvoicePaid(invoice) => Some(invoice),
                _ => None,
            })
            .collect();
        // The invoices the invoice payments name, with their payments.
        let paying: Vec<(&str, &str)> = facts
            .iter()
            .filter_map(|f| match &f.kind {
                FactKind::InvoicePayment(p) => {
                    Some((p.invoice.as_deref()?, p.payment_key.as_deref()?))
                }
                _ => None,
            })
            .collect();
        let stripe_customers: Vec<&str> = facts
            .iter()
            .filter_map(|f| f.stripe_customer.as_deref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !stripe_customers.is_empty() {
            let links = stripe_customers::Entity::find()
                .filter(
                    stripe_customers::Column::StripeCustomerId.is_in(in_list(&stripe_customers)),
                )
                .all(&self.txn)
                .await?;
            run.links = links
                .into_iter()
                .map(|r| {
                    let by = LinkedBy::parse(&r.linked_by);
                    (r.stripe_customer_id, (CustomerId::known(r.customer_id), by))
                })
                .collect();
        }
        // Every account an event may write: its Stripe customer's, the linked one, the named one.
        let mut accounts: BTreeSet<&str> = stripe_customers.iter().copied().collect();
        for fact in &facts {
            accounts.extend(fact.named.as_ref().map(|(a, _)| a.as_str()));
        }
        accounts.extend(run.links.values().map(|(a, _)| a.as_str()));
        self.lock_accounts(accounts.iter().copied()).await?;

        let effects: Vec<String> = invoices
            .iter()
            .flat_map(|invoice| invoice.line_effects())
            .collect();
        run.applied = self.applied_effects(&effects).await?;
        let unnamed: Vec<&str> = invoices
            .iter()
            .filter(|invoice| invoice.named_payment.is_none())
            .map(|invoice| invoice.invoice_id.as_str())
            .collect();
        if !unnamed.is_empty() {
            let learnt = stripe_invoice_payments::Entity::find()
                .filter(stripe_invoice_payments::Column::InvoiceId.is_in(in_list(&unnamed)))
                .all(&self.txn)
                .await?;
            run.learnt_payments = learnt
                .into_iter()
                .map(|r| (r.invoice_id, r.payment_key))
                .collect();
        }
        let named: Vec<&str> = facts
            .iter()
            .filter_map(|f| match &f.kind {
                FactKind::InvoicePaid(invoice) => invoice.subscription.as_deref(),
                FactKind::Subscription(subscription) => Some(subscription.id.as_str()),
                _ => None,
            })
            .collect();
        let rows = stripe_subscriptions::Entity::find()
            .filter(
                Condition::any()
                    .add(stripe_subscriptions::Column::Id.is_in(in_list(&named)))
                    .add(
                        stripe_subscriptions::Column::StripeCustomerId
                            .is_in(in_list(&stripe_customers)),
                    ),
            )
            .order_by_asc(stripe_subscriptions::Column::AsOf)
            .all(&self.txn)
            .await?;
        run.subscriptions = rows
            .into_iter()
            .map(|row| RecordedSubscription {
                id: row.id.clone(),
                stripe_customer: row.stripe_customer_id.clone(),
                state: subscription_state(row),
            })
            .collect();
        // Every key a payment may be known by: named, read, learnt, the invoice, its lines.
        let mut keys: Vec<String> = Vec::new();
        for invoice in &invoices {
            keys.extend(invoice.named_payment.clone());
            keys.extend(invoice.read_payments.iter().filter_map(|(_, k)| k.clone()));
            keys.extend(run.learnt_payments.get(&invoice.invoice_id).cloned());
            keys.push(invoice.invoice_id.clone());
            keys.extend(invoice.line_effects());
        }
        keys.extend(paying.iter().map(|(_, key)| key.to_string()));
        run.taken_back = self.payments_taken_back(&keys).await?;

        let bounds: Vec<i64> = invoices
            .iter()
            .flat_map(|invoice| invoice.lines.iter().filter_map(|l| l.period))
            .map(|(_, end)| time(end))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !bounds.is_empty() {
            let recorded = stripe_renewals::Entity::find()
                .select_only()
                .column(stripe_renewals::Column::CustomerId)
                .column(stripe_renewals::Column::Boundary)
                .filter(
                    stripe_renewals::Column::CustomerId
                        .is_in(in_list(&accounts.iter().copied().collect::<Vec<_>>())),
                )
                .filter(stripe_renewals::Column::Boundary.is_in(in_list(&bounds)))
                .into_tuple::<(String, i64)>()
                .all(&self.txn)
                .await?;
            for (customer, boundary) in recorded {
                run.renewals
                    .insert((CustomerId::known(customer), timestamp(boundary)?));
            }
        }
        if !paying.is_empty() {
            self.known_to_invoice_payments(&mut run, &paying).await?;
        }
        Ok(run)
    }
}

/// What a payment paid, tax included, and the tax in it: `(key, paid, tax, currency)`.
fn payment_row(
    (key, paid_minor, tax_minor, currency): &(String, i64, i64, String),
) -> stripe_payments::ActiveModel {
    stripe_payments::ActiveModel {
        payment_key: Set(key.clone()),
        paid_minor: Set(*paid_minor),
        tax_minor: Set(*tax_minor),
        currency: Set(currency.clone()),
    }
}
