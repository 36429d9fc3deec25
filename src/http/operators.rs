//! Who did it: operators' writes with the key that made each, for admin and finance.

use super::AppState;
use super::extract::page_limit;
use super::extract::{ApiQuery, Caller, customer_id, time_ordered_cursor};
use crate::error::{Error, Result};
use crate::store::keys::Scope;
use crate::store::outbox::row_time;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct OperatorActionView {
    id: String,
    /// When it was done (business time).
    at: DateTime<Utc>,
    /// The id of the API key that did it (never the key).
    key_id: String,
    /// `grant`, `adjustment`, `plan`, `limits`, `alert_thresholds`, `auto_topup`, `override`,
    /// `period_close` or `outbox_replay`.
    action: String,
    customer: Option<String>,
    /// What it acted on besides the customer: a grant, a period, an outbox row.
    subject: Option<String>,
    /// The request as the operator made it.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OperatorActionsQuery {
    /// Only this customer's.
    customer: Option<String>,
    /// Actions per page, 1 to 200 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OperatorActionsPage {
    actions: Vec<OperatorActionView>,
    /// Pass as `cursor` for the next (newer) page; absent on the last page.
    next_cursor: Option<String>,
}

/// Operators' writes, oldest first, each with the id of the key that made it (admin or finance).
#[utoipa::path(get, path = "/v1/operator-actions", params(OperatorActionsQuery),
    responses((status = 200, body = OperatorActionsPage)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<OperatorActionsQuery>,
) -> Result<Json<OperatorActionsPage>> {
    if caller.require(Scope::Admin).is_err() {
        caller.require(Scope::Finance)?;
    }
    let limit = page_limit(query.limit)?;
    let customer = query
        .customer
        .map(|c| customer_id("customer", &c))
        .transpose()?;
    let after = time_ordered_cursor(query.cursor)?;
    let rows = state
        .store
        .operator_actions(customer.as_ref(), after.as_deref(), limit + 1)
        .await?;
    let more = rows.len() as u64 > limit;
    let actions = rows
        .into_iter()
        .take(limit as usize)
        .map(|row| {
            Ok(OperatorActionView {
                at: row_time(row.at)?,
                detail: serde_json::from_str(&row.detail)
                    .map_err(|e| Error::Internal(format!("operator action detail: {e}")))?,
                id: row.id,
                key_id: row.key_id,
                action: row.action,
                customer: row.customer_id,
                subject: row.subject,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(OperatorActionsPage {
        next_cursor: more.then(|| actions.last().map(|a| a.id.clone())).flatten(),
        actions,
    }))
}
