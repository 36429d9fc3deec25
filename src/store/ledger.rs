//! Reading the ledger: a customer's entries, newest first, a bounded page at a time.

use super::Store;
use super::rows::ByKey;
use super::rows::timestamp;
use crate::domain::customer::CustomerId;
use crate::domain::money::{Credits, Money};
use crate::error::Result;
use entity::{customers, grants, ledger_entries};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    /// Also the cursor position: entries are numbered in the order they were written.
    pub id: i64,
    /// Entries written by one command share an operation.
    pub operation: String,
    /// Order within the operation: for consumption, the order grants were drawn in.
    pub position: i32,
    pub kind: String,
    pub grant: Option<String>,
    pub hold: Option<String>,
    pub action: Option<String>,
    pub quantity: Option<String>,
    /// Change of the balance.
    #[schema(value_type = String)]
    pub credits: Credits,
    /// Change of the held credits.
    #[schema(value_type = String)]
    pub held: Credits,
    /// Billable overage credits.
    #[schema(value_type = String)]
    pub overage: Credits,
    /// Money moved with the entry, in the grant's currency: a clawback's refund, an overage's
    /// billed amount at the overage price.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub money: Option<Money>,
    /// Why an operator adjusted the credits (adjustments only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The id of the API key whose request wrote it: an operator's grant or adjustment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Who inside the customer spent (holds, captures and usages that named a subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The customer whose grant paid, when it is not this customer's own: a parent's or a
    /// grandparent's shared grant (README, Organizations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_by: Option<String>,
    pub effective_at: chrono::DateTime<chrono::Utc>,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Up to `limit` entries older than `before` (all when none); and the cursor of the next page.
    /// `None` when the customer is unknown.
    pub async fn ledger_page(
        &self,
        customer_id: &CustomerId,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Option<(Vec<EntryView>, Option<i64>)>> {
        let customer_id = customer_id.as_str();
        let db = self.connection();
        if customers::Entity::find_by_id(customer_id.to_owned())
            .by_key(db)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let mut query = ledger_entries::Entity::find()
            .filter(ledger_entries::Column::CustomerId.eq(customer_id));
        if let Some(before) = before {
            query = query.filter(ledger_entries::Column::Id.lt(before));
        }
        let mut rows = query
            .order_by_desc(ledger_entries::Column::Id)
            .limit(limit + 1)
            .all(db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|r| r.id)
        } else {
            None
        };
        // Whose grants paid, where the page names grants of other customers (their pools).
        let named: Vec<String> = rows
            .iter()
            .filter_map(|r| r.grant_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut owners = std::collections::HashMap::new();
        for chunk in super::rows::in_lists(&named, super::rows::ROWS_PER_STATEMENT) {
            let found: Vec<(String, String)> = grants::Entity::find()
                .select_only()
                .column(grants::Column::Id)
                .column(grants::Column::CustomerId)
                .filter(grants::Column::Id.is_in(chunk.iter().cloned()))
                .filter(grants::Column::CustomerId.ne(customer_id))
                .into_tuple()
                .all(db)
                .await?;
            owners.extend(found);
        }
        let entries = rows
            .into_iter()
            .map(|r| {
                Ok(EntryView {
                    paid_by: r.grant_id.as_ref().and_then(|g| owners.get(g).cloned()),
                    id: r.id,
                    operation: r.operation_id,
                    position: r.position,
                    kind: r.kind,
                    grant: r.grant_id,
                    hold: r.hold_id,
                    action: r.action,
                    quantity: r.quantity,
                    credits: Credits::from_micros(r.credits),
                    held: Credits::from_micros(r.held),
                    overage: Credits::from_micros(r.overage),
                    money: r.money.map(Money::from_micros),
                    reason: r.reason,
                    actor: r.actor,
                    subject: r.subject,
                    effective_at: timestamp(r.effective_at)?,
                    recorded_at: timestamp(r.recorded_at)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((entries, next)))
    }
}
