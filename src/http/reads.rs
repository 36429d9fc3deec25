//! Reads for people and dashboards: the customers (admin) and a customer's usage over time (app).

use super::AppState;
use super::extract::page_limit;
use super::extract::{ApiQuery, Caller, customer_id, identifier};
use crate::domain::money::Credits;
use crate::error::{Error, Result};
use crate::service::customers::{CustomersPage, customers_page};
use crate::service::revenue::date_range;
use crate::store::keys::Scope;
use crate::store::reads::{Interval, UsageBy};
use axum::Json;
use axum::extract::{Path, State};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CustomersQuery {
    /// Customers whose id contains this (case-sensitive), or who are linked to this Stripe
    /// customer id.
    q: Option<String>,
    /// Customers per page, 1 to 200 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The customers by id, a page at a time: plan, frozen, and balance, held and available
/// credits, as the customer view gives them.
#[utoipa::path(get, path = "/v1/customers", params(CustomersQuery),
    responses((status = 200, body = CustomersPage)), security(("bearer" = [])))]
pub async fn customers(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CustomersQuery>,
) -> Result<Json<CustomersPage>> {
    caller.require(Scope::Admin)?;
    let limit = page_limit(query.limit)?;
    let q = query.q.map(|q| identifier("q", &q)).transpose()?;
    let after = query.cursor.map(|c| identifier("cursor", &c)).transpose()?;
    Ok(Json(
        customers_page(
            &state.store,
            (q.as_deref(), after.as_deref(), limit),
            state.clock.now(),
        )
        .await?,
    ))
}

/// Days one day-by-day usage read may span.
pub const MAX_USAGE_DAYS: i64 = 366;
/// Days one month-by-month usage read may span (about ten years).
pub const MAX_USAGE_MONTH_DAYS: i64 = 3_660;
/// Days read when `from` is not given: the last 30, `to` included.
const DEFAULT_USAGE_DAYS: u64 = 30;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC); 29 days before `to` when absent.
    from: Option<String>,
    /// Last day, inclusive; today when absent.
    to: Option<String>,
    /// `action` (default), `feature`, `subject` (the member that spent) or `customer` (the
    /// customer and the customers below it, each apart).
    by: Option<String>,
    /// `day` (default; at most 366 days) or `month` (at most 3,660 days).
    interval: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsagePoint {
    /// `YYYY-MM-DD` by day, `YYYY-MM` by month.
    period: String,
    /// The action, feature or subject; `null` by subject for usage that named no subject.
    group: Option<String>,
    #[schema(value_type = String)]
    credits: Credits,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    customer: String,
    from: NaiveDate,
    to: NaiveDate,
    /// `day` or `month`.
    interval: String,
    /// `action`, `feature` or `subject`.
    by: String,
    /// Credits used (usages and captures, overage included) per period and group, in order;
    /// periods and groups with none are left out.
    usage: Vec<UsagePoint>,
    #[schema(value_type = String)]
    total: Credits,
}

/// Credits a customer used per day or month, by action, feature or member (subject).
#[utoipa::path(get, path = "/v1/customers/{id}/usage", params(("id" = String, Path), UsageQuery),
    responses((status = 200, body = UsageReport), (status = 404)), security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>> {
    caller.require(Scope::App)?;
    let customer = customer_id("id", &id)?;
    let (interval, interval_name, max_days) = match query.interval.as_deref().unwrap_or("day") {
        "day" => (Interval::Day, "day", MAX_USAGE_DAYS),
        "month" => (Interval::Month, "month", MAX_USAGE_MONTH_DAYS),
        other => {
            return Err(Error::invalid(
                "interval",
                format!("{other:?} is not day or month"),
            ));
        }
    };
    let (by, by_name) = match query.by.as_deref().unwrap_or("action") {
        "action" => (UsageBy::Action, "action"),
        "feature" => (UsageBy::Feature, "feature"),
        "subject" => (UsageBy::Subject, "subject"),
        "customer" => (UsageBy::Customer, "customer"),
        other => {
            return Err(Error::invalid(
                "by",
                format!("{other:?} is not action, feature, subject or customer"),
            ));
        }
    };
    let today = state.clock.now().date_naive().to_string();
    let to_text = query.to.unwrap_or(today);
    let (_, end) = date_range(&to_text, &to_text)?;
    let from_text = match query.from {
        Some(from) => from,
        None => (end.date_naive() - chrono::Days::new(DEFAULT_USAGE_DAYS)).to_string(),
    };
    let (start, end) = date_range(&from_text, &to_text)?;
    if (end - start).num_days() > max_days {
        return Err(Error::invalid(
            "from",
            format!("a {interval_name} by {interval_name} read spans at most {max_days} days"),
        ));
    }
    let usage = state
        .store
        .usage(&customer, start, end, interval, by)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
    let total = usage.iter().map(|u| u.credits).sum();
    Ok(Json(UsageReport {
        customer: customer.to_string(),
        from: start.date_naive(),
        to: end.date_naive() - chrono::Days::new(1),
        interval: interval_name.into(),
        by: by_name.into(),
        usage: usage
            .into_iter()
            .map(|u| UsagePoint {
                period: u.period,
                group: u.group,
                credits: u.credits,
            })
            .collect(),
        total,
    }))
}
