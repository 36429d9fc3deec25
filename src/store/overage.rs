//! Billed overage reported to Stripe meters (README, Overage billed through Stripe): the job that
//! turns each customer's accrued overage into meter events in the outbox, and the list of what is
//! accrued and reported.

use super::Store;
use super::rows::in_lists;
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::customer::CustomerId;
use crate::domain::money::{Credits, Money};
use crate::domain::overage::{MeterReport, meter_report};
use crate::error::Result;
use entity::{customers, overage_accruals, stripe_customers};
use sea_orm::DatabaseTransaction;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeMap;

/// One whole credit, at the scale amounts are stored at.
const ONE_CREDIT_MICROS: i64 = 1_000_000;

/// One customer's billed overage: accrued, and what of it went to Stripe.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OverageRow {
    pub customer: String,
    pub currency: String,
    pub plan: Option<String>,
    /// Overage credits accrued in all.
    #[schema(value_type = String)]
    pub credits: Credits,
    /// Billed money accrued in all (rounded to the currency: the journal's).
    #[schema(value_type = String)]
    pub amount: Money,
    /// Whole credits reported to the plan's Stripe meter.
    #[schema(value_type = String)]
    pub reported: Credits,
    #[schema(value_type = String)]
    pub unreported: Credits,
    /// The Stripe customer reports go to; none when the customer is not linked to one.
    pub stripe_customer: Option<String>,
    /// The meter's event name; none when the plan reports to no meter.
    pub meter_event: Option<String>,
}

impl Store {
    /// Reports the whole overage credits waiting of up to `limit` customers whose plan reports
    /// to a Stripe meter and who are linked to a Stripe customer: per customer, in one
    /// transaction, the accrual's `reported` moves and the meter event (and `overage.reported`)
    /// is written to the outbox. Returns how many customers it looked at.
    pub async fn report_overage(&self, now: Timestamp, limit: u64) -> Result<usize> {
        let metered: Vec<String> = self
            .catalog()
            .plans
            .values()
            .filter(|p| p.overage_meter.is_some())
            .map(|p| p.id.clone())
            .collect();
        if metered.is_empty() {
            return Ok(0);
        }
        self.write(&ReportOverage {
            now,
            limit,
            metered,
        })
        .await
    }

    /// Customers' billed overage, accrued and reported, in customer order after `after`: at
    /// most `limit`.
    pub async fn overage(&self, after: Option<&str>, limit: u64) -> Result<Vec<OverageRow>> {
        let catalog = self.catalog();
        let db = self.connection();
        let mut query = overage_accruals::Entity::find()
            .order_by_asc(overage_accruals::Column::CustomerId)
            .order_by_asc(overage_accruals::Column::Currency)
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(overage_accruals::Column::CustomerId.gt(after));
        }
        let rows = query.all(db).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.customer_id.clone()).collect();
        let plans = customer_plans(db, &ids).await?;
        let links = stripe_links(db, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let plan = plans.get(&r.customer_id).cloned().flatten();
                let meter_event = plan
                    .as_deref()
                    .and_then(|p| catalog.plan(p))
                    .and_then(|p| p.overage_meter.as_ref())
                    .map(|m| m.event_name.clone());
                OverageRow {
                    stripe_customer: links.get(&r.customer_id).cloned(),
                    customer: r.customer_id,
                    currency: r.currency,
                    plan,
                    credits: Credits::from_micros(r.credits),
                    amount: Money::from_micros(r.posted),
                    reported: Credits::from_micros(r.reported),
                    unreported: Credits::from_micros(r.credits - r.reported),
                    meter_event,
                }
            })
            .collect())
    }
}

/// The plan of each of `ids`.
async fn customer_plans(
    db: &impl sea_orm::ConnectionTrait,
    ids: &[String],
) -> Result<BTreeMap<String, Option<String>>> {
    let mut plans = BTreeMap::new();
    for chunk in in_lists(ids, super::rows::ROWS_PER_STATEMENT) {
        plans.extend(
            customers::Entity::find()
                .select_only()
                .column(customers::Column::Id)
                .column(customers::Column::PlanId)
                .filter(customers::Column::Id.is_in(chunk.iter().cloned()))
                .into_tuple::<(String, Option<String>)>()
                .all(db)
                .await?,
        );
    }
    Ok(plans)
}

/// The Stripe customer each of `ids` reports to: the first linked, by Stripe id, when several
/// are.
pub(crate) async fn stripe_links(
    db: &impl sea_orm::ConnectionTrait,
    ids: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut links = BTreeMap::new();
    for chunk in in_lists(ids, super::rows::ROWS_PER_STATEMENT) {
        let rows = stripe_customers::Entity::find()
            .filter(stripe_customers::Column::CustomerId.is_in(chunk.iter().cloned()))
            .order_by_asc(stripe_customers::Column::StripeCustomerId)
            .all(db)
            .await?;
        for row in rows {
            links
                .entry(row.customer_id)
                .or_insert(row.stripe_customer_id);
        }
    }
    Ok(links)
}

/// Whole overage credits waiting reported to the meter of the plans in `metered`, up to `limit`
/// customers (`Store::report_overage`): how many it looked at.
struct ReportOverage {
    now: Timestamp,
    limit: u64,
    metered: Vec<String>,
}

impl Write for ReportOverage {
    type Written = usize;

    async fn carry_out(&self, txn: &DatabaseTransaction, store: &Store) -> Result<usize> {
        let (now, limit, metered) = (self.now, self.limit, self.metered.clone());
        let catalog = store.catalog();
        let linked = Query::select()
            .column(stripe_customers::Column::CustomerId)
            .from(stripe_customers::Entity)
            .to_owned();
        let on_metered_plan = Query::select()
            .column(customers::Column::Id)
            .from(customers::Entity)
            .and_where(Expr::col(customers::Column::PlanId).is_in(metered))
            .to_owned();
        let due = overage_accruals::Entity::find()
            .filter(
                Expr::col(overage_accruals::Column::Credits)
                    .sub(Expr::col(overage_accruals::Column::Reported))
                    .gte(ONE_CREDIT_MICROS),
            )
            .filter(overage_accruals::Column::CustomerId.in_subquery(linked))
            .filter(overage_accruals::Column::CustomerId.in_subquery(on_metered_plan))
            .order_by_asc(overage_accruals::Column::CustomerId)
            .limit(limit)
            .all(txn)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = due.iter().map(|r| r.customer_id.clone()).collect();
        let plans = customer_plans(txn, &ids).await?;
        let links = stripe_links(txn, &ids).await?;
        let mut reports: Vec<MeterReport> = Vec::new();
        for row in &due {
            let meter = plans
                .get(&row.customer_id)
                .and_then(|p| p.as_deref())
                .and_then(|p| catalog.plan(p))
                .and_then(|p| p.overage_meter.as_ref());
            let (Some(meter), Some(stripe_customer)) = (meter, links.get(&row.customer_id)) else {
                continue;
            };
            let Some(report) = meter_report(
                &CustomerId::known(row.customer_id.clone()),
                stripe_customer,
                &meter.event_name,
                Credits::from_micros(row.credits),
                Credits::from_micros(row.reported),
                now,
            ) else {
                continue;
            };
            // Moved from what was read: another instance's run that got here first wins.
            let moved = overage_accruals::Entity::update_many()
                .col_expr(
                    overage_accruals::Column::Reported,
                    Expr::value(super::rows::micros(report.reported)?),
                )
                .filter(overage_accruals::Column::CustomerId.eq(row.customer_id.clone()))
                .filter(overage_accruals::Column::Currency.eq(row.currency.clone()))
                .filter(overage_accruals::Column::Reported.eq(row.reported))
                .exec(txn)
                .await?;
            if moved.rows_affected == 1 {
                reports.push(report);
            }
        }
        super::outbox::enqueue_meter_events(txn, &reports).await?;
        let messages: Vec<_> = reports.iter().map(MeterReport::message).collect();
        super::outbox::enqueue(txn, &catalog.webhooks, &messages).await?;
        Ok(due.len())
    }
}
