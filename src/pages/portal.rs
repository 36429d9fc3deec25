//! The customer's credits page, opened from a portal link: that customer only.

use super::Render;
use super::chart::{self, StackedBars};
use super::when;
use crate::domain::alerts::{self, Balance};
use crate::domain::customer::CustomerId;
use crate::domain::ledger::Grant;
use crate::domain::limits::Members;
use crate::domain::money::{Credits, currency_minor_units};
use crate::domain::summary::Summary;
use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::ApiQuery;
use crate::service::portal_link::{self as link, Refused};
use crate::store::ledger::EntryView;
use crate::store::reads::{Interval, UsageBy};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct PortalQuery {
    token: Option<String>,
    /// The ledger page: entries older than this entry.
    before: Option<i64>,
}

/// Ledger entries per page of the portal.
const LEDGER_PAGE: u64 = 20;
/// Days of usage the chart shows.
const USAGE_DAYS: usize = 30;

struct GrantRow {
    kind: String,
    credits: Credits,
    remaining: Credits,
    expires: String,
    /// Credits left that expire within the alert window.
    expiring_soon: bool,
}

struct LimitRow {
    period: &'static str,
    feature: String,
    /// Whose spends it counts: everyone, one member, or each member apart.
    who: String,
    credits: Credits,
    spent: Credits,
    remaining: Credits,
    mode: &'static str,
    resets: String,
}

struct TopUp {
    pack: String,
    credits: Credits,
    price: String,
    url: String,
}

/// The alerts that watch the customer's balance, and whether they hold now.
struct AlertsInForce {
    /// Low once this share (in percent) of the granted credits is used.
    low_used_percent: String,
    /// Also low at or below this many credits available.
    low_credits: Option<Credits>,
    expiring_days: u32,
    low_now: bool,
    depleted_now: bool,
    /// The auto top-up: the pack bought when available credits fall below the threshold.
    auto_topup: Option<(String, Credits, u32)>,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    customer: String,
    plan: Option<String>,
    balance: Credits,
    held: Credits,
    available: Credits,
    granted: Credits,
    used_percent: u32,
    renews: Option<String>,
    next_grant: Option<String>,
    grants: Vec<GrantRow>,
    expiring_days: u32,
    chart: StackedBars,
    usage_from: String,
    usage_to: String,
    entries: Vec<EntryView>,
    older: Option<String>,
    newer: bool,
    token: String,
    limits: Vec<LimitRow>,
    /// Credits used by each member over the usage chart's days (none named: left out).
    members: Vec<(String, Credits)>,
    /// An organization's: credits used by it and by each customer below it over those days
    /// (empty when nobody below spent).
    accounts: Vec<(String, Credits)>,
    /// What it can spend with its organization's shared grants, when it has a parent.
    pool_available: Option<Credits>,
    alerts: AlertsInForce,
    top_ups: Vec<TopUp>,
}

fn refused(
    state: &AppState,
    status: StatusCode,
    title: &'static str,
    message: &'static str,
) -> Result<Response> {
    state
        .pages
        .embeddable_page(status, &super::Message { title, message })
}

/// `/portal?token=`: the customer's balance, grants, usage, ledger and limits.
// Long: gathers each figure the portal shows from its read, in the page's order.
pub async fn page(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PortalQuery>,
) -> Result<Response> {
    let now = state.clock.now();
    let Some(token) = query.token else {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "No link",
            "Open this page from the link your provider gave you.",
        );
    };
    let customer = match link::verify(state.pages.key(), &token, now) {
        // Signed by this server for an account that was found when the link was made.
        Ok(customer) => CustomerId::known(customer),
        Err(Refused::Expired) => {
            return refused(
                &state,
                StatusCode::FORBIDDEN,
                "Link expired",
                "This link has expired. Ask for a new one where you found it.",
            );
        }
        Err(Refused::Invalid) => {
            return refused(
                &state,
                StatusCode::FORBIDDEN,
                "Link not valid",
                "This link is not valid.",
            );
        }
    };
    let Some((book, standing)) = state.store.view(&customer, now).await? else {
        return refused(
            &state,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing to show for this link.",
        );
    };
    // The share the low-balance alert judges: what of the live grants' credits is no longer
    // available (held credits count as used).
    let balance = Balance::of(&book);
    let used_percent = if balance.live_credits.is_positive() {
        (balance.consumed_share() * Decimal::ONE_HUNDRED)
            .round()
            .to_u32()
            .unwrap_or(0)
    } else {
        0
    };
    let rule = &state.catalog.alert_rule(
        standing.plan_id.as_deref(),
        alerts::current_pack(&book),
        standing.low_balance.as_ref(),
    );
    let mut live: Vec<&Grant> = book.grants.iter().filter(|g| g.is_live()).collect();
    // Soonest expiry first, those that never expire last.
    live.sort_by_key(|g| (g.expires_at.is_none(), g.expires_at, g.created_at));
    let grants = live
        .into_iter()
        .map(|g| GrantRow {
            kind: g.kind.as_str().to_owned(),
            credits: g.credits,
            remaining: g.remaining,
            expires: g.expires_at.map_or_else(|| "never".to_owned(), when),
            expiring_soon: alerts::expires_soon(g, rule, now),
        })
        .collect();
    // Usage by feature, the last 30 days with today.
    let first_day = (now - chrono::Duration::days(USAGE_DAYS as i64 - 1)).date_naive();
    let start = first_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = (now.date_naive() + chrono::Days::new(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let usage = state
        .store
        .usage(&customer, start, end, Interval::Day, UsageBy::Feature)
        .await?
        .unwrap_or_default();
    // Every consumption has a feature.
    let feature = |u: &crate::store::reads::UsageRow| u.group.clone().unwrap_or_default();
    let mut groups: Vec<String> = usage.iter().map(feature).collect();
    groups.sort();
    groups.dedup();
    let points: Vec<(usize, String, Decimal)> = usage
        .iter()
        .filter_map(|u| {
            let day = chrono::NaiveDate::parse_from_str(&u.period, "%Y-%m-%d").ok()?;
            let index = usize::try_from((day - first_day).num_days()).ok()?;
            (index < USAGE_DAYS).then(|| (index, feature(u), u.credits.value()))
        })
        .collect();
    let chart = chart::stacked(USAGE_DAYS, &groups, &points);
    // Who inside the customer used them, over the same days.
    let mut members: std::collections::BTreeMap<String, Credits> = Default::default();
    for u in state
        .store
        .usage(&customer, start, end, Interval::Day, UsageBy::Subject)
        .await?
        .unwrap_or_default()
    {
        if let Some(subject) = u.group {
            *members.entry(subject).or_insert(Credits::ZERO) += u.credits;
        }
    }
    // An organization's accounts below it, over the same days.
    let mut accounts: Vec<(String, Credits)> = state
        .store
        .usage(&customer, start, end, Interval::Day, UsageBy::Customer)
        .await?
        .unwrap_or_default()
        .into_iter()
        .fold(
            std::collections::BTreeMap::<String, Credits>::new(),
            |mut by, u| {
                *by.entry(u.group.unwrap_or_default())
                    .or_insert(Credits::ZERO) += u.credits;
                by
            },
        )
        .into_iter()
        .collect();
    if accounts
        .iter()
        .all(|(account, _)| account == customer.as_str())
    {
        accounts.clear();
    }
    let pool_available = match standing.parent {
        Some(_) => state.store.pool_available(&customer, now).await?,
        None => None,
    };
    let (entries, next) = state
        .store
        .ledger_page(&customer, query.before, LEDGER_PAGE)
        .await?
        .unwrap_or_default();
    let limits = standing
        .limits
        .states(&book, &state.catalog, now)
        .into_iter()
        .map(|s| LimitRow {
            period: s.limit.period.as_str(),
            feature: s
                .limit
                .feature
                .clone()
                .unwrap_or_else(|| "all features".to_owned()),
            who: match &s.limit.members {
                Members::All => "everyone".to_owned(),
                Members::One(subject) => format!("member {subject}"),
                Members::Each => "each member".to_owned(),
            },
            credits: s.limit.credits,
            spent: s.spent,
            remaining: s.remaining,
            mode: s.limit.mode.as_str(),
            resets: when(s.resets_at),
        })
        .collect();
    let alerts = AlertsInForce {
        low_used_percent: (rule.low_consumed_share * Decimal::ONE_HUNDRED)
            .normalize()
            .to_string(),
        low_credits: rule.low_credits,
        expiring_days: rule.grant_expiring_days,
        low_now: balance.is_low(rule),
        depleted_now: book.available() <= Credits::ZERO,
        auto_topup: standing
            .auto_topup
            .setting
            .as_ref()
            .map(|s| (s.pack.clone(), s.threshold, s.monthly_limit)),
    };
    let top_ups = state
        .catalog
        .packs
        .values()
        .filter_map(|p| {
            Some(TopUp {
                url: p.top_up_link(customer.as_str())?,
                pack: p.id.clone(),
                credits: p.credits,
                price: {
                    let mut amount = p.price.amount;
                    amount.rescale(currency_minor_units(&p.price.currency));
                    format!("{amount} {}", p.price.currency.to_uppercase())
                },
            })
        })
        .collect();
    let summary = Summary::of(&state.catalog, state.policy(), &book, &standing, now);
    let page = PortalPage {
        customer: customer.to_string(),
        plan: summary.plan.map(str::to_owned),
        balance: summary.balance,
        held: summary.held,
        available: summary.available,
        granted: balance.live_credits,
        used_percent,
        renews: summary.renews_at.map(when),
        next_grant: super::next_grant(&summary),
        grants,
        expiring_days: rule.grant_expiring_days,
        chart,
        usage_from: first_day.to_string(),
        usage_to: now.date_naive().to_string(),
        entries,
        older: next.map(|n| n.to_string()),
        newer: query.before.is_some(),
        token,
        limits,
        members: members.into_iter().collect(),
        accounts,
        pool_available,
        alerts,
        top_ups,
    };
    state.pages.embeddable_page(StatusCode::OK, &page)
}
