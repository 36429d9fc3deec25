//! Revenue recognition through the real stack: Stripe events and app usage in, the journal,
//! roll-forward, waterfall and schedules out. Every amount asserted here was worked out by hand
//! from README, Revenue recognition (the working is in the comments); every scenario ends by reconciling the
//! reports with each other and with the ledger.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{Engine, TestApp};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Every scenario starts here.
const T0: &str = "2026-01-10T00:00:00Z";

macro_rules! per_engine {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = common::spawn_app_at(Engine::Sqlite, t(T0), |_| {}).await;
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let app = common::spawn_app_at(Engine::Postgres, t(T0), |_| {}).await;
                super::$name(app).await;
            }
        }
    };
}

fn money(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_else(|_| panic!("{text:?} is not an amount"))
}

async fn deliver(app: &TestApp, id: &str, kind: &str, object: Value) {
    let body = json!({"id": id, "object": "event", "api_version": "2025-08-27.basil",
        "created": app.now().timestamp(), "livemode": false, "type": kind, "data": {"object": object}})
    .to_string();
    let (status, value) = app.webhook(&body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], "applied", "{value}");
}

/// A pack bought at checkout; returns the grant's id.
async fn buy_pack(app: &TestApp, account: &str, pack: &str, cents: i64, payment: &str) -> String {
    deliver(
        app,
        &format!("evt_{payment}"),
        "checkout.session.completed",
        json!({"id": format!("cs_{payment}"), "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "customer": format!("cus_{account}"),
               "client_reference_id": account, "amount_total": cents, "currency": "usd",
               "payment_intent": payment, "metadata": {"creditbook_pack": pack}}),
    )
    .await;
    newest_grant(app, account).await
}

async fn newest_grant(app: &TestApp, account: &str) -> String {
    let lots = app.store.connection().clone();
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    entity::grants::Entity::find()
        .filter(entity::grants::Column::CustomerId.eq(account))
        .order_by_desc(entity::grants::Column::CreatedAt)
        .order_by_desc(entity::grants::Column::Id)
        .one(&lots)
        .await
        .unwrap()
        .expect("a grant")
        .id
}

/// A paid subscription invoice with one plan line for `period` (Unix seconds).
#[allow(clippy::too_many_arguments)]
async fn pay_invoice(
    app: &TestApp,
    account: &str,
    invoice: &str,
    reason: &str,
    price: &str,
    cents: i64,
    seats: i64,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> String {
    let line = json!({
        "id": format!("il_{invoice}"), "object": "line_item", "amount": cents, "currency": "usd",
        "quantity": seats, "period": {"start": period.0.timestamp(), "end": period.1.timestamp()},
        "discount_amounts": [], "taxes": [],
        "pricing": {"type": "price_details", "unit_amount_decimal": (cents / seats).to_string(),
                    "price_details": {"price": price, "product": "prod_x"}},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": format!("sub_{account}"), "subscription_item": "si_x", "proration": false}}
    });
    deliver(
        app,
        &format!("evt_{invoice}"),
        "invoice.paid",
        json!({"id": invoice, "object": "invoice", "customer": format!("cus_{account}"),
               "currency": "usd", "status": "paid", "billing_reason": reason,
               "parent": {"type": "subscription_details", "subscription_details": {
                   "subscription": format!("sub_{account}"),
                   "metadata": {"creditbook_customer": account}}},
               "payments": {"object": "list", "data": [{"payment": {"type": "payment_intent",
                   "payment_intent": format!("pi_{invoice}")}}]},
               "lines": {"object": "list", "has_more": false, "data": [line]}}),
    )
    .await;
    newest_grant(app, account).await
}

/// Stripe's running total of what a payment's charge has refunded.
async fn refunded_so_far(app: &TestApp, payment: &str, cents: i64) {
    deliver(
        app,
        &format!("evt_refund_{payment}_{cents}"),
        "charge.refunded",
        json!({"id": format!("ch_{payment}"), "object": "charge", "payment_intent": payment,
               "amount_refunded": cents, "currency": "usd"}),
    )
    .await;
}

async fn spend(app: &TestApp, account: &str, credits: i64) {
    let (status, value) = app
        .usage(
            account,
            "chat.request",
            json!(credits.to_string()),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
}

async fn finance(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.call(reqwest::Method::GET, path, Some(&app.finance_key), None)
        .await
}

async fn journal(app: &TestApp, from: &str, to: &str) -> Vec<Value> {
    let (status, value) = finance(app, &format!("/v1/revenue/journal?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value["lines"].as_array().unwrap().clone()
}

async fn rollforward(app: &TestApp, from: &str, to: &str) -> Vec<Value> {
    let (status, value) =
        finance(app, &format!("/v1/revenue/rollforward?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value["rows"].as_array().unwrap().clone()
}

async fn schedule(app: &TestApp, grant: &str) -> Value {
    let (status, value) = finance(app, &format!("/v1/revenue/grants/{grant}/schedule")).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

/// (kind, account, debit, credit) of every line of the journal, in order.
fn lines(journal: &[Value]) -> Vec<(String, String, String, String)> {
    journal
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_owned();
            (s("kind"), s("account"), s("debit"), s("credit"))
        })
        .collect()
}

fn line(kind: &str, account: &str, debit: &str, credit: &str) -> (String, String, String, String) {
    (kind.into(), account.into(), debit.into(), credit.into())
}

/// The reports reconcile with each other and with the ledger, to the cent:
/// - every journal entry balances per currency;
/// - each roll-forward row: opening + billings - recognized - breakage - refunds = closing, and
///   each row opens where the one before closed;
/// - the roll-forward's closing equals the deferred accounts' balance in the journal;
/// - its recognized is its usage part plus its platform part, the platform part being the
///   journal's `subscription_revenue` of the month;
/// - each waterfall column adds up to the roll-forward's recognized + breakage of its month;
/// - each paid grant: paid = deferred + recognized + breakage + refunded + transferred;
/// - the ledger audit (lots against grants, journal against lots) finds nothing.
async fn reconcile(app: &TestApp, from: &str, to: &str) {
    let journal_lines = journal(app, "1970-01-01", "2999-12-31").await;
    let mut entries: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    let mut deferred_by_period: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut platform_by_period: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut grants = std::collections::BTreeSet::new();
    for l in &journal_lines {
        let net = money(l["credit"].as_str().unwrap()) - money(l["debit"].as_str().unwrap());
        if l["account"] == "subscription_revenue" && l["kind"] != "overage" {
            *platform_by_period
                .entry(l["period"].as_str().unwrap().into())
                .or_default() += net;
        }
        *entries
            .entry((
                l["entry_id"].as_str().unwrap().into(),
                l["currency"].as_str().unwrap().into(),
            ))
            .or_default() += net;
        if ["contract_liability", "deferred_platform"].contains(&l["account"].as_str().unwrap()) {
            *deferred_by_period
                .entry(l["period"].as_str().unwrap().into())
                .or_default() += net;
        }
        if let Some(grant) = l["grant"].as_str() {
            grants.insert(grant.to_owned());
        }
    }
    for (entry, sum) in &entries {
        assert_eq!(*sum, Decimal::ZERO, "entry {entry:?} does not balance");
    }
    let rows = rollforward(app, from, to).await;
    let mut previous: Option<Decimal> = None;
    for row in &rows {
        let m = |k: &str| money(row[k].as_str().unwrap());
        assert_eq!(
            m("opening") + m("billings") - m("recognized") - m("breakage") - m("refunds"),
            m("closing"),
            "roll-forward identity: {row}"
        );
        if let Some(previous) = previous {
            assert_eq!(previous, m("opening"), "{row}");
        }
        previous = Some(m("closing"));
        let through: Decimal = deferred_by_period
            .iter()
            .filter(|(p, _)| p.as_str() <= row["period"].as_str().unwrap())
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(through, m("closing"), "closing vs the journal: {row}");
        assert_eq!(
            m("usage_recognized") + m("platform_recognized"),
            m("recognized"),
            "{row}"
        );
        assert_eq!(
            platform_by_period
                .get(row["period"].as_str().unwrap())
                .copied()
                .unwrap_or_default(),
            m("platform_recognized"),
            "platform vs the journal: {row}"
        );
    }
    let (status, waterfall) =
        finance(app, &format!("/v1/revenue/waterfall?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK, "{waterfall}");
    for row in &rows {
        let period = row["period"].as_str().unwrap();
        let column: Decimal = waterfall["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| money(w["recognized"][period].as_str().unwrap_or("0")))
            .sum();
        let m = |k: &str| money(row[k].as_str().unwrap());
        assert_eq!(
            column,
            m("recognized") + m("breakage"),
            "waterfall {period}"
        );
    }
    for grant in grants {
        let s = schedule(app, &grant).await;
        let m = |k: &str| money(s["totals"][k].as_str().unwrap());
        assert_eq!(
            money(s["paid"].as_str().unwrap()),
            m("deferred") + m("recognized") + m("breakage") + m("refunded") + m("transferred"),
            "grant identity: {s}"
        );
        let last = s["periods"].as_array().unwrap().last().cloned();
        if let Some(last) = last {
            assert_eq!(
                money(last["deferred"].as_str().unwrap()),
                m("deferred"),
                "{s}"
            );
        }
    }
    reconcile_margin(app, &journal_lines, &rows, from, to).await;
    app.assert_audit_clean().await;
}

/// The margin report, by each grouping, adds up per month to the journal's usage revenue from
/// grants (every `usage_revenue` line but overage's) and to the roll-forward's overage; its CSV has
/// the same rows.
async fn reconcile_margin(
    app: &TestApp,
    journal: &[Value],
    rollforward: &[Value],
    from: &str,
    to: &str,
) {
    let mut usage: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in journal
        .iter()
        .filter(|l| l["account"] == "usage_revenue" && l["kind"] != "overage")
    {
        *usage
            .entry(l["period"].as_str().unwrap().into())
            .or_default() +=
            money(l["credit"].as_str().unwrap()) - money(l["debit"].as_str().unwrap());
    }
    for by in ["action", "feature", "plan", "customer", "subject"] {
        let path = format!("/v1/revenue/margin?from={from}&to={to}&by={by}");
        let (status, report) = finance(app, &path).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let report_rows = report["rows"].as_array().unwrap();
        for row in rollforward {
            let period = row["period"].as_str().unwrap();
            let in_month = report_rows.iter().filter(|r| r["month"] == period);
            let (revenue, overage) = in_month.fold((Decimal::ZERO, Decimal::ZERO), |(r, o), m| {
                let margin = money(m["margin"].as_str().unwrap());
                let (rv, ov, cost) = (
                    money(m["revenue"].as_str().unwrap()),
                    money(m["overage"].as_str().unwrap()),
                    money(m["vendor_cost"].as_str().unwrap()),
                );
                assert_eq!(margin, rv + ov - cost, "{m}");
                (r + rv, o + ov)
            });
            assert_eq!(
                revenue,
                usage.get(period).copied().unwrap_or_default(),
                "margin by {by} vs the journal's usage revenue in {period}"
            );
            assert_eq!(
                overage,
                money(row["overage"].as_str().unwrap()),
                "{by} {period}"
            );
        }
        let text = csv(app, &format!("{path}&format=csv")).await;
        assert_eq!(text.lines().count(), report_rows.len() + 1, "{text}");
    }
}

/// Stable ids for snapshots: every generated id becomes its kind and order of appearance.
fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for prefix in ["je_", "grant_", "usage_"] {
        let mut seen: Vec<String> = Vec::new();
        let mut index = 0;
        while let Some(found) = out[index..].find(prefix) {
            let start = index + found;
            let end = start + prefix.len() + 32;
            if end <= out.len()
                && out[start + prefix.len()..end]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
            {
                let id = out[start..end].to_owned();
                let n = seen.iter().position(|s| s == &id).unwrap_or_else(|| {
                    seen.push(id.clone());
                    seen.len() - 1
                });
                let label = format!("[{}{}]", prefix.trim_end_matches('_'), n + 1);
                out.replace_range(start..end, &label);
                index = start + label.len();
            } else {
                index = start + prefix.len();
            }
        }
    }
    out
}

async fn csv(app: &TestApp, path: &str) -> String {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(&app.finance_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    response.text().await.unwrap()
}

/// Remote breakage. $100 for 12,000 credits; 3,000 used: 100 x 3000 / 12000 = 25.00 usage. At
/// expiry (365 days) the 75.00 still deferred is breakage.
async fn top_up_used_in_part_then_expired(app: TestApp) {
    let grant = buy_pack(&app, "acct_a", "topup_large", 10_000, "pi_a").await;
    spend(&app, "acct_a", 3000).await;
    app.advance(t("2027-01-11T00:00:00Z")).await;
    assert_eq!(
        lines(&journal(&app, "2026-01-01", "2027-12-31").await),
        vec![
            line("pack_payment", "cash", "100.00", "0.00"),
            line("pack_payment", "contract_liability", "0.00", "100.00"),
            line("consumption", "contract_liability", "25.00", "0.00"),
            line("consumption", "usage_revenue", "0.00", "25.00"),
            line("breakage", "contract_liability", "75.00", "0.00"),
            line("breakage", "breakage_revenue", "0.00", "75.00"),
        ]
    );
    let rows = rollforward(&app, "2026-01", "2027-01").await;
    assert_eq!(
        (
            &rows[0]["billings"],
            &rows[0]["recognized"],
            &rows[0]["closing"]
        ),
        (&json!("100.00"), &json!("25.00"), &json!("75.00"))
    );
    assert_eq!(
        (&rows[12]["breakage"], &rows[12]["closing"]),
        (&json!("75.00"), &json!("0.00"))
    );
    let s = schedule(&app, &grant).await;
    assert_eq!(s["totals"]["breakage"], "75.00");
    reconcile(&app, "2026-01", "2027-01").await;
    let journal_csv = csv(
        &app,
        "/v1/revenue/journal?from=2026-01-01&to=2027-12-31&format=csv",
    )
    .await;
    insta::assert_snapshot!("top_up_journal_csv", redact(&journal_csv));
    let rollforward_csv = csv(
        &app,
        "/v1/revenue/rollforward?from=2026-01&to=2026-03&format=csv",
    )
    .await;
    insta::assert_snapshot!("top_up_rollforward_csv", rollforward_csv);
}
per_engine!(top_up_used_in_part_then_expired);

/// Proportional breakage, expected_unused 0.15. $10 for 1,000 credits; 170 used: recognized to
/// date = 10 x 170 / (1000 x 0.85) = 2.00, of which usage 10 x 170 / 1000 = 1.70 and breakage
/// 0.30. At expiry the remaining 8.00 is trued up to breakage (8.30 in all).
async fn proportional_breakage_trued_up_at_expiry(app: TestApp) {
    let grant = buy_pack(&app, "acct_b", "topup_small", 1_000, "pi_b").await;
    spend(&app, "acct_b", 170).await;
    app.advance(t("2027-01-11T00:00:00Z")).await;
    assert_eq!(
        lines(&journal(&app, "2026-01-01", "2027-12-31").await)[2..],
        [
            line("consumption", "contract_liability", "2.00", "0.00"),
            line("consumption", "usage_revenue", "0.00", "1.70"),
            line("consumption", "breakage_revenue", "0.00", "0.30"),
            line("breakage", "contract_liability", "8.00", "0.00"),
            line("breakage", "breakage_revenue", "0.00", "8.00"),
        ]
    );
    let s = schedule(&app, &grant).await;
    assert_eq!(
        (
            &s["totals"]["recognized"],
            &s["totals"]["breakage"],
            &s["totals"]["deferred"]
        ),
        (&json!("1.70"), &json!("8.30"), &json!("0.00"))
    );
    reconcile(&app, "2026-01", "2027-01").await;
}
per_engine!(proportional_breakage_trued_up_at_expiry);

/// `pro`: platform_share 0.2, remote breakage. $29.00 for Jan 10 - Feb 10 (31 days): platform
/// 5.80 (daily round(5.80 / 31) = 0.19), credits 23.20 for 2,000. 500 used: 5.80 usage.
/// January's 22 days recognize 4.18 of platform access; February's 9 days the rest, 1.62. At the
/// period's end the unused 17.40 is breakage.
async fn subscription_with_platform_share(app: TestApp) {
    let grant = pay_invoice(
        &app,
        "acct_c",
        "in_c1",
        "subscription_create",
        "price_pro_monthly",
        2900,
        1,
        (t(T0), t("2026-02-10T00:00:00Z")),
    )
    .await;
    spend(&app, "acct_c", 500).await;
    app.advance(t("2026-02-01T00:00:01Z")).await;
    app.advance(t("2026-02-11T00:00:00Z")).await;
    let all = lines(&journal(&app, "2026-01-01", "2026-12-31").await);
    assert_eq!(
        all,
        vec![
            line("plan_payment", "cash", "29.00", "0.00"),
            line("plan_payment", "contract_liability", "0.00", "23.20"),
            line("plan_payment", "deferred_platform", "0.00", "5.80"),
            line("consumption", "contract_liability", "5.80", "0.00"),
            line("consumption", "usage_revenue", "0.00", "5.80"),
            line("platform_recognition", "deferred_platform", "4.18", "0.00"),
            line(
                "platform_recognition",
                "subscription_revenue",
                "0.00",
                "4.18"
            ),
            line("platform_recognition", "deferred_platform", "1.62", "0.00"),
            line(
                "platform_recognition",
                "subscription_revenue",
                "0.00",
                "1.62"
            ),
            line("breakage", "contract_liability", "17.40", "0.00"),
            line("breakage", "breakage_revenue", "0.00", "17.40"),
        ]
    );
    let rows = rollforward(&app, "2026-01", "2026-02").await;
    let pick = |r: &Value| {
        [
            "opening",
            "billings",
            "recognized",
            "breakage",
            "refunds",
            "closing",
        ]
        .map(|k| r[k].as_str().unwrap().to_owned())
    };
    assert_eq!(
        pick(&rows[0]),
        ["0.00", "29.00", "9.98", "0.00", "0.00", "19.02"]
    );
    assert_eq!(
        pick(&rows[1]),
        ["19.02", "0.00", "1.62", "17.40", "0.00", "0.00"]
    );
    let s = schedule(&app, &grant).await;
    assert_eq!(
        (&s["price"], &s["platform"]),
        (&json!("23.20"), &json!("5.80"))
    );
    reconcile(&app, "2026-01", "2026-02").await;
    let schedule_csv = csv(
        &app,
        &format!("/v1/revenue/grants/{grant}/schedule?format=csv"),
    )
    .await;
    insta::assert_snapshot!("plan_schedule_csv", redact(&schedule_csv));
}
per_engine!(subscription_with_platform_share);

/// A customer's grants in the order they start (the first month has no start).
async fn grants_in_order(app: &TestApp, account: &str) -> Vec<entity::grants::Model> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let mut grants = entity::grants::Entity::find()
        .filter(entity::grants::Column::CustomerId.eq(account))
        .all(app.store.connection())
        .await
        .unwrap();
    grants.sort_by_key(|g| g.starts_at.unwrap_or(0));
    grants
}

/// (available, scheduled, next_grant_at) of a customer.
async fn month_view(app: &TestApp, account: &str) -> (String, String, Option<DateTime<Utc>>) {
    let c = app.customer(account).await;
    (
        c["available"].as_str().unwrap().to_owned(),
        c["scheduled"].as_str().unwrap().to_owned(),
        c["next_grant_at"].as_str().map(t),
    )
}

/// `pro` paid for a year with the example's `price_pro_yearly`: $290.00, 2,000 credits a month,
/// platform 0.2, no rollover. Twelve grants, each a twelfth: 290.00 / 12 = 24.1666…, so eleven
/// of 24.16 and the last 24.24 (the rest). Each month: platform round(24.16 x 0.2) = 4.83,
/// credits 19.33 (the last: 4.85 and 19.39). All deferred at payment. 600 used in January:
/// 19.33 x 600 / 2000 = 5.80 usage, the 1,400 left lapse at the month's end: 13.53 breakage.
/// February is a fresh 2,000, used whole: 19.33 usage. Nothing after the paid year.
async fn annual_plan_grants_monthly(app: TestApp) {
    let year_end = t("2027-01-10T00:00:00Z");
    pay_invoice(
        &app,
        "acct_y",
        "in_y1",
        "subscription_create",
        "price_pro_yearly",
        29_000,
        1,
        (t(T0), year_end),
    )
    .await;
    assert_eq!(
        month_view(&app, "acct_y").await,
        (
            "2000".into(),
            "22000".into(),
            Some(t("2026-02-10T00:00:00Z"))
        )
    );
    let paid = lines(&journal(&app, "2026-01-01", "2026-01-31").await);
    let mut expected = Vec::new();
    for (price, credit_part, platform) in [("24.16", "19.33", "4.83"); 11]
        .into_iter()
        .chain([("24.24", "19.39", "4.85")])
    {
        expected.push(line("plan_payment", "cash", price, "0.00"));
        expected.push(line(
            "plan_payment",
            "contract_liability",
            "0.00",
            credit_part,
        ));
        expected.push(line("plan_payment", "deferred_platform", "0.00", platform));
    }
    let mut payments: Vec<_> = paid.into_iter().filter(|l| l.0 == "plan_payment").collect();
    let mut wanted = expected.clone();
    payments.sort();
    wanted.sort();
    assert_eq!(payments, wanted, "the whole year deferred at payment");
    let january = &rollforward(&app, "2026-01", "2026-01").await[0];
    assert_eq!(january["billings"], "290.00");

    spend(&app, "acct_y", 600).await;
    app.advance(t("2026-02-10T00:00:01Z")).await;
    assert_eq!(
        month_view(&app, "acct_y").await,
        (
            "2000".into(),
            "20000".into(),
            Some(t("2026-03-10T00:00:00Z"))
        ),
        "January's use does not shrink February"
    );
    spend(&app, "acct_y", 2000).await;
    app.advance(t("2026-03-10T00:00:01Z")).await;
    assert_eq!(month_view(&app, "acct_y").await.0, "2000");
    app.advance(t("2026-12-10T00:00:01Z")).await;
    assert_eq!(
        month_view(&app, "acct_y").await,
        ("2000".into(), "0".into(), Some(year_end)),
        "the last month, then the renewal invoice"
    );
    app.advance(t("2027-03-01T00:00:00Z")).await;
    assert_eq!(
        month_view(&app, "acct_y").await.0,
        "0",
        "nothing after the paid year"
    );

    let grants = grants_in_order(&app, "acct_y").await;
    assert_eq!(grants.len(), 12);
    let mut starts = Vec::new();
    for (k, grant) in grants.iter().enumerate() {
        let s = schedule(&app, &grant.id).await;
        let paid = if k == 11 { "24.24" } else { "24.16" };
        assert_eq!(s["paid"], paid, "{s}");
        starts.push(grant.starts_at);
    }
    assert_eq!(starts[0], None);
    assert_eq!(
        starts[1],
        Some(t("2026-02-10T00:00:00Z").timestamp_micros())
    );
    let january = schedule(&app, &grants[0].id).await;
    assert_eq!(
        (
            &january["totals"]["recognized"],
            &january["totals"]["breakage"]
        ),
        (&json!("10.63"), &json!("13.53")),
        "5.80 usage and 4.83 platform; 1,400 lapsed"
    );
    let february = schedule(&app, &grants[1].id).await;
    assert_eq!(
        (
            &february["totals"]["recognized"],
            &february["totals"]["breakage"]
        ),
        (&json!("24.16"), &json!("0.00"))
    );
    reconcile(&app, "2026-01", "2027-03").await;
}
per_engine!(annual_plan_grants_monthly);

/// A $100.00 refund of the $290.00 year, right after payment, takes the months not started
/// first, the latest first: December (24.24), November, October, September (24.16 each) whole,
/// then 3.28 of August: 2,000 x 3.28 / 24.16 = 271.523178 credits. January stays whole.
async fn annual_plan_refund_takes_the_months_not_started_first(app: TestApp) {
    pay_invoice(
        &app,
        "acct_z",
        "in_z1",
        "subscription_create",
        "price_pro_yearly",
        29_000,
        1,
        (t(T0), t("2027-01-10T00:00:00Z")),
    )
    .await;
    refunded_so_far(&app, "pi_in_z1", 10_000).await;
    assert_eq!(
        month_view(&app, "acct_z").await.0,
        "2000",
        "the month in use is untouched"
    );
    assert_eq!(month_view(&app, "acct_z").await.1, "13728.476822");
    app.advance(t("2026-08-10T00:00:01Z")).await;
    assert_eq!(month_view(&app, "acct_z").await.0, "1728.476822");
    app.advance(t("2026-09-10T00:00:01Z")).await;
    assert_eq!(
        month_view(&app, "acct_z").await.0,
        "0",
        "September was refunded"
    );
    let grants = grants_in_order(&app, "acct_z").await;
    let refunded: Vec<i64> = grants.iter().map(|g| g.refunded).collect();
    assert_eq!(
        refunded,
        [
            0, 0, 0, 0, 0, 0, 0, 3_280_000, 24_160_000, 24_160_000, 24_160_000, 24_240_000
        ]
    );
    reconcile(&app, "2026-01", "2026-09").await;
}
per_engine!(annual_plan_refund_takes_the_months_not_started_first);

/// `team` (1 seat): $100.00, platform 0.3 -> credits 70.00 for 5,000, proportional 0.1,
/// rollover up to 10,000. 1,000 used: usage 70 x 1000 / 5000 = 14.00, recognized to date
/// round(70 x 1000 / 4500) = 15.56, so 1.56 breakage. At the period's end 4,000 lapse: trued up
/// to 56.00 breakage (+54.44). The renewal carries the 4,000 over: breakage back to 1.56
/// (-54.44, a rollover entry), the grant's deferral is 54.44 again.
async fn rollover_reverses_breakage(app: TestApp) {
    let first = pay_invoice(
        &app,
        "acct_d",
        "in_d1",
        "subscription_create",
        "price_team_monthly",
        10_000,
        1,
        (t(T0), t("2026-02-10T00:00:00Z")),
    )
    .await;
    spend(&app, "acct_d", 1000).await;
    app.advance(t("2026-02-10T01:00:00Z")).await;
    pay_invoice(
        &app,
        "acct_d",
        "in_d2",
        "subscription_cycle",
        "price_team_monthly",
        10_000,
        1,
        (t("2026-02-10T00:00:00Z"), t("2026-03-10T00:00:00Z")),
    )
    .await;
    let mine: Vec<_> = journal(&app, "2026-01-01", "2026-12-31")
        .await
        .into_iter()
        .filter(|l| l["grant"] == json!(first) && l["kind"] != "platform_recognition")
        .collect();
    assert_eq!(
        lines(&mine),
        vec![
            line("plan_payment", "cash", "100.00", "0.00"),
            line("plan_payment", "contract_liability", "0.00", "70.00"),
            line("plan_payment", "deferred_platform", "0.00", "30.00"),
            line("consumption", "contract_liability", "15.56", "0.00"),
            line("consumption", "usage_revenue", "0.00", "14.00"),
            line("consumption", "breakage_revenue", "0.00", "1.56"),
            line("breakage", "contract_liability", "54.44", "0.00"),
            line("breakage", "breakage_revenue", "0.00", "54.44"),
            line("rollover", "contract_liability", "0.00", "54.44"),
            line("rollover", "breakage_revenue", "54.44", "0.00"),
        ]
    );
    let s = schedule(&app, &first).await;
    assert_eq!(s["totals"]["breakage"], "1.56");
    assert_eq!(app.customer("acct_d").await["balance"], "9000");
    reconcile(&app, "2026-01", "2026-03").await;
}
per_engine!(rollover_reverses_breakage);

/// $100 for 12,000 credits. $25 refunded before use: out of the deferral, 3,000 credits taken
/// back. The other 9,000 used: 75.00 recognized, nothing left deferred. $10 more refunded after
/// use: nothing is deferred, so it reverses revenue (`refunds`). The grant: 100 = 0 deferred +
/// 65 recognized (75 - 10) + 0 breakage + 35 refunded.
async fn refunds_before_and_after_use(app: TestApp) {
    let grant = buy_pack(&app, "acct_e", "topup_large", 10_000, "pi_e").await;
    refunded_so_far(&app, "pi_e", 2_500).await;
    assert_eq!(app.customer("acct_e").await["balance"], "9000");
    spend(&app, "acct_e", 9000).await;
    refunded_so_far(&app, "pi_e", 3_500).await;
    assert_eq!(
        lines(&journal(&app, "2026-01-01", "2026-12-31").await)[2..],
        [
            line("refund", "cash", "0.00", "25.00"),
            line("refund", "contract_liability", "25.00", "0.00"),
            line("consumption", "contract_liability", "75.00", "0.00"),
            line("consumption", "usage_revenue", "0.00", "75.00"),
            line("refund", "cash", "0.00", "10.00"),
            line("refund", "refunds", "10.00", "0.00"),
        ]
    );
    // The ledger shows the money each clawback carried.
    let clawbacks: Vec<Decimal> = app
        .ledger("acct_e")
        .await
        .iter()
        .filter(|e| e["kind"] == "clawback")
        .map(|e| money(e["money"].as_str().unwrap()))
        .collect();
    assert_eq!(clawbacks, vec![money("10"), money("25")]);
    let s = schedule(&app, &grant).await;
    let totals = ["deferred", "recognized", "breakage", "refunded"]
        .map(|k| s["totals"][k].as_str().unwrap().to_owned());
    assert_eq!(totals, ["0.00", "65.00", "0.00", "35.00"]);
    let row = &rollforward(&app, "2026-01", "2026-01").await[0];
    assert_eq!(
        (&row["refunds"], &row["revenue_reversed"], &row["closing"]),
        (&json!("25.00"), &json!("10.00"), &json!("0.00"))
    );
    reconcile(&app, "2026-01", "2026-01").await;
}
per_engine!(refunds_before_and_after_use);

/// A refund in the state Stripe reports it.
async fn refund_state(
    app: &TestApp,
    event: &str,
    refund: &str,
    payment: &str,
    cents: i64,
    status: &str,
) -> Value {
    let body = json!({"id": event, "object": "event", "api_version": "2025-08-27.basil",
        "created": app.now().timestamp(), "livemode": false, "type": format!("refund.{}", if status == "failed" { "failed" } else { "updated" }),
        "data": {"object": {"id": refund, "object": "refund", "amount": cents, "currency": "usd",
            "status": status, "payment_intent": payment, "charge": format!("ch_{payment}")}}})
    .to_string();
    let (status, value) = app.webhook(&body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], "applied", "{value}");
    value
}

/// A refund Stripe later reports failed or canceled gives the credits and the money back, the
/// inverse of the refund: 12,000 credits for 100.00. A refund of 25.00 (seen as a refund and in
/// the charge's total) takes 3,000 credits, and its failure gives them back. After 11,000 are
/// used, a refund of 50.00 can take only the 1,000 left (8.33 out of the deferral, 41.67
/// reversing revenue); its cancelation gives back those 1,000 credits and undoes both parts.
/// A failure learnt before the refund itself takes nothing at all.
async fn failed_refunds_give_back(app: TestApp) {
    let grant = buy_pack(&app, "acct_f", "topup_large", 10_000, "pi_f").await;
    refund_state(&app, "evt_f1", "re_f1", "pi_f", 2_500, "succeeded").await;
    refunded_so_far(&app, "pi_f", 2_500).await;
    assert_eq!(app.customer("acct_f").await["balance"], "9000");
    let failed = refund_state(&app, "evt_f2", "re_f1", "pi_f", 2_500, "failed").await;
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("3000 credits given back"),
        "{failed}"
    );
    assert_eq!(app.customer("acct_f").await["balance"], "12000");
    // A stale state delivered late changes nothing: a refund's state only moves forward.
    refund_state(&app, "evt_f3", "re_f1", "pi_f", 2_500, "succeeded").await;
    assert_eq!(app.customer("acct_f").await["balance"], "12000");
    spend(&app, "acct_f", 11_000).await;
    refund_state(&app, "evt_f4", "re_f2", "pi_f", 5_000, "succeeded").await;
    assert_eq!(app.customer("acct_f").await["balance"], "0");
    refund_state(&app, "evt_f5", "re_f2", "pi_f", 5_000, "canceled").await;
    assert_eq!(app.customer("acct_f").await["balance"], "1000");
    assert_eq!(
        lines(&journal(&app, "2026-01-01", "2026-12-31").await)[2..],
        [
            line("refund", "cash", "0.00", "25.00"),
            line("refund", "contract_liability", "25.00", "0.00"),
            line("refund_reversal", "cash", "25.00", "0.00"),
            line("refund_reversal", "contract_liability", "0.00", "25.00"),
            line("consumption", "contract_liability", "91.67", "0.00"),
            line("consumption", "usage_revenue", "0.00", "91.67"),
            line("refund", "cash", "0.00", "50.00"),
            line("refund", "contract_liability", "8.33", "0.00"),
            line("refund", "refunds", "41.67", "0.00"),
            line("refund_reversal", "cash", "50.00", "0.00"),
            line("refund_reversal", "refunds", "0.00", "41.67"),
            line("refund_reversal", "contract_liability", "0.00", "8.33"),
        ]
    );
    let kinds: Vec<(String, String)> = app
        .ledger("acct_f")
        .await
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("clawback"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["credits"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(
        kinds.contains(&("clawback_reversal".into(), "1000".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("clawback_reversal".into(), "3000".into())),
        "{kinds:?}"
    );
    let s = schedule(&app, &grant).await;
    let totals = ["deferred", "recognized", "breakage", "refunded"]
        .map(|k| s["totals"][k].as_str().unwrap().to_owned());
    assert_eq!(totals, ["8.33", "91.67", "0.00", "0.00"]);
    let row = &rollforward(&app, "2026-01", "2026-01").await[0];
    assert_eq!(
        (&row["refunds"], &row["revenue_reversed"], &row["closing"]),
        (&json!("0.00"), &json!("0.00"), &json!("8.33"))
    );

    // The failure first, then the refund and the charge's total from before it: nothing taken.
    buy_pack(&app, "acct_g", "topup_large", 10_000, "pi_g").await;
    refund_state(&app, "evt_g1", "re_g1", "pi_g", 4_000, "failed").await;
    refund_state(&app, "evt_g2", "re_g1", "pi_g", 4_000, "succeeded").await;
    refunded_so_far(&app, "pi_g", 4_000).await;
    assert_eq!(app.customer("acct_g").await["balance"], "12000");
    reconcile(&app, "2026-01", "2026-01").await;
}
per_engine!(failed_refunds_give_back);

async fn adjust(
    app: &TestApp,
    account: &str,
    credits: &str,
    reason: &str,
    key: &str,
) -> (StatusCode, Value) {
    app.post_admin(
        &format!("/v1/customers/{account}/adjustments"),
        json!({"credits": credits, "reason": reason, "idempotency_key": key}),
    )
    .await
}

/// Adjustments. $100 for 12,000 credits (remote breakage). +500 adds an adjustment grant, which
/// carries no revenue. -2,500 takes the 500 unpaid credits first, then 2,000 of the pack, whose
/// money is kept: they are forfeited, 100 x 2000 / 12000 = 16.67 breakage. The other 10,000 used:
/// 100 x 10000 / 12000 = 83.33 usage, and the lot is finished: 100 = 0 deferred + 83.33
/// recognized + 16.67 breakage.
async fn adjustments_add_and_take_back(app: TestApp) {
    let pack = buy_pack(&app, "acct_adj", "topup_large", 10_000, "pi_adj").await;
    let (status, added) = adjust(&app, "acct_adj", "500", "goodwill for an outage", "adj-1").await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(
        (&added["credits"], &added["balance"]),
        (&json!("500"), &json!("12500"))
    );
    let bonus = added["grants"][0]["grant"].as_str().unwrap().to_owned();
    let (status, taken) = adjust(&app, "acct_adj", "-2500", "granted twice", "adj-2").await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(
        taken["grants"],
        json!([{"grant": bonus, "credits": "-500"}, {"grant": pack, "credits": "-2000"}])
    );
    assert_eq!(
        (&taken["balance"], &taken["available"]),
        (&json!("10000"), &json!("10000"))
    );
    // A replay answers the same and takes nothing more; the key with another amount is refused.
    let (status, replayed) = adjust(&app, "acct_adj", "-2500", "granted twice", "adj-2").await;
    assert_eq!((status, &replayed), (StatusCode::CREATED, &taken));
    let (status, conflict) = adjust(&app, "acct_adj", "-2000", "granted twice", "adj-2").await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["type"], "idempotency_conflict");
    // More than is available: refused, saying how much is, and nothing changes.
    let ledger = app.ledger("acct_adj").await;
    let (status, refused) = adjust(&app, "acct_adj", "-10000.01", "too much", "adj-3").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(
        (
            &refused["type"],
            &refused["requested"],
            &refused["available"]
        ),
        (
            &json!("adjustment_exceeds_available"),
            &json!("10000.01"),
            &json!("10000")
        )
    );
    assert_eq!(app.ledger("acct_adj").await, ledger);
    // The ledger keeps the reason with each grant's entry, newest first.
    let adjustments: Vec<(Value, Value, Value)> = ledger
        .iter()
        .filter(|e| e["kind"] == "adjustment")
        .map(|e| {
            (
                e["grant"].clone(),
                e["credits"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        adjustments,
        [
            (json!(pack), json!("-2000"), json!("granted twice")),
            (json!(bonus), json!("-500"), json!("granted twice")),
        ]
    );
    let journal_lines = journal(&app, "2026-01-01", "2026-12-31").await;
    assert_eq!(
        lines(&journal_lines)[2..],
        [
            line("forfeiture", "contract_liability", "16.67", "0.00"),
            line("forfeiture", "breakage_revenue", "0.00", "16.67"),
        ]
    );
    assert!(
        journal_lines[2]["memo"]
            .as_str()
            .unwrap()
            .ends_with("reason: granted twice"),
        "{}",
        journal_lines[2]
    );
    spend(&app, "acct_adj", 10_000).await;
    let s = schedule(&app, &pack).await;
    let totals = ["deferred", "recognized", "breakage", "refunded"]
        .map(|k| s["totals"][k].as_str().unwrap().to_owned());
    assert_eq!(totals, ["0.00", "83.33", "16.67", "0.00"]);
    let row = &rollforward(&app, "2026-01", "2026-01").await[0];
    assert_eq!(
        (&row["billings"], &row["breakage"], &row["closing"]),
        (&json!("100.00"), &json!("16.67"), &json!("0.00"))
    );
    // Credits may be added to a customer not seen before.
    let (status, created) = adjust(&app, "acct_new", "5", "welcome", "adj-4").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(app.customer("acct_new").await["balance"], "5");
    reconcile(&app, "2026-01", "2026-01").await;
}
per_engine!(adjustments_add_and_take_back);

/// Promotional credits carry no price: using them posts nothing.
async fn promotional_credits_carry_no_revenue(app: TestApp) {
    app.promo("acct_f", "100").await;
    spend(&app, "acct_f", 50).await;
    app.advance(t("2027-06-01T00:00:00Z")).await;
    assert!(journal(&app, "2026-01-01", "2027-12-31").await.is_empty());
    reconcile(&app, "2026-01", "2026-02").await;
}
per_engine!(promotional_credits_carry_no_revenue);

/// `team` bills overage at 0.01 a credit: 5,333 used of 5,000 -> the grant's 70.00 is all usage
/// revenue, and 333 x 0.01 = 3.33 accrues as unbilled receivable.
async fn overage_billed_as_unbilled_receivable(app: TestApp) {
    pay_invoice(
        &app,
        "acct_g",
        "in_g1",
        "subscription_create",
        "price_team_monthly",
        10_000,
        1,
        (t(T0), t("2026-02-10T00:00:00Z")),
    )
    .await;
    spend(&app, "acct_g", 5333).await;
    let all = lines(&journal(&app, "2026-01-01", "2026-12-31").await);
    assert_eq!(
        all[3..],
        [
            line("consumption", "contract_liability", "70.00", "0.00"),
            line("consumption", "usage_revenue", "0.00", "70.00"),
            line("overage", "unbilled_receivable", "3.33", "0.00"),
            line("overage", "usage_revenue", "0.00", "3.33"),
        ]
    );
    let row = &rollforward(&app, "2026-01", "2026-01").await[0];
    assert_eq!(
        (&row["recognized"], &row["overage"]),
        (&json!("70.00"), &json!("3.33"))
    );
    reconcile(&app, "2026-01", "2026-01").await;
}
per_engine!(overage_billed_as_unbilled_receivable);

/// January is closed on February 2nd; a usage of January 31st reported after that is booked in
/// February as an adjustment, and January's reports do not change. 1,200 of 12,000 credits at
/// $100: 10.00.
async fn late_usage_after_close_lands_in_next_period(app: TestApp) {
    buy_pack(&app, "acct_h", "topup_large", 10_000, "pi_h").await;
    spend(&app, "acct_h", 600).await;
    app.advance(t("2026-02-02T00:00:00Z")).await;
    let close = |period: &'static str| {
        let app = &app;
        async move {
            app.call(
                reqwest::Method::POST,
                &format!("/v1/revenue/periods/{period}/close"),
                Some(&app.finance_key),
                None,
            )
            .await
        }
    };
    let (status, value) = close("2026-02").await;
    assert_eq!(status, StatusCode::CONFLICT, "{value}");
    assert_eq!(value["type"], "period_not_ended");
    let (status, value) = close("2026-01").await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["status"], "closed");
    // Closing again changes nothing.
    let (status, again) = close("2026-01").await;
    assert_eq!(
        (status, &again["closed_at"]),
        (StatusCode::OK, &value["closed_at"])
    );
    let january = rollforward(&app, "2026-01", "2026-01").await;
    let january_journal = journal(&app, "2026-01-01", "2026-01-31").await;

    let (status, value) = app
        .post_app(
            "/v1/usage",
            json!({"customer": "acct_h", "action": "chat.request", "quantity": "1200",
                   "idempotency_key": "late-1", "occurred_at": "2026-01-31T12:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    assert_eq!(rollforward(&app, "2026-01", "2026-01").await, january);
    assert_eq!(
        journal(&app, "2026-01-01", "2026-01-31").await,
        january_journal
    );
    let february = journal(&app, "2026-02-01", "2026-02-28").await;
    assert_eq!(february.len(), 2);
    for l in &february {
        assert_eq!(
            (&l["period"], &l["adjustment"], &l["date"]),
            (&json!("2026-02"), &json!(true), &json!("2026-02-01"))
        );
        assert_eq!(l["effective_at"], "2026-01-31T12:00:00Z");
        assert!(l["source"].as_str().unwrap().starts_with("usage_"));
    }
    assert_eq!(february[1]["credit"], "10.00");
    assert_eq!(
        rollforward(&app, "2026-02", "2026-02").await[0]["recognized"],
        "10.00"
    );
    // Usage reported too late, or from the future, is refused and changes nothing.
    for occurred_at in ["2025-12-01T00:00:00Z", "2026-02-03T00:00:00Z"] {
        let (status, value) = app
            .post_app(
                "/v1/usage",
                json!({"customer": "acct_h", "action": "chat.request", "quantity": "1",
                       "idempotency_key": format!("bad-{occurred_at}"), "occurred_at": occurred_at}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
        assert_eq!(value["field"], "occurred_at");
    }
    reconcile(&app, "2026-01", "2026-02").await;
}
per_engine!(late_usage_after_close_lands_in_next_period);

/// Bad report requests get a problem with a stable type and change nothing.
async fn bad_report_requests(app: TestApp) {
    let cases = [
        ("/v1/revenue/journal?from=2026-01-01", "invalid_request"),
        (
            "/v1/revenue/journal?from=2026-02-01&to=2026-01-01",
            "invalid_request",
        ),
        (
            "/v1/revenue/journal?from=2026-1-1&to=2026-01-31",
            "invalid_request",
        ),
        (
            "/v1/revenue/journal?from=2026-01-01&to=2026-01-31&format=xml",
            "invalid_request",
        ),
        (
            "/v1/revenue/rollforward?from=2026-13&to=2026-12",
            "invalid_request",
        ),
        (
            "/v1/revenue/rollforward?from=1990-01&to=2200-01",
            "invalid_request",
        ),
        (
            "/v1/revenue/waterfall?from=2026-03&to=2026-01",
            "invalid_request",
        ),
        ("/v1/revenue/grants/grant_nope/schedule", "grant_not_found"),
    ];
    for (path, kind) in cases {
        let (status, value) = finance(&app, path).await;
        assert!(status.is_client_error(), "{path}: {status} {value}");
        assert_eq!(value["type"], kind, "{path}: {value}");
    }
    let (status, value) = app
        .get_app("/v1/revenue/rollforward?from=2026-01&to=2026-01")
        .await;
    assert_eq!(
        (status, &value["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
    let (status, value) = app
        .call(
            reqwest::Method::POST,
            "/v1/revenue/periods/2026-13/close",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(
        (status, &value["type"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_request"))
    );
}
per_engine!(bad_report_requests);

/// The CLI writes the same journal the API serves, and the two reports beside it.
async fn cli_export_matches_the_api(app: TestApp) {
    buy_pack(&app, "acct_i", "topup_small", 1_000, "pi_i").await;
    spend(&app, "acct_i", 100).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_example_config(dir.path(), &app.database_url);
    let out = dir.path().join("books.csv");
    let output = common::run_cli(
        &config,
        &[
            "revenue",
            "export",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&out).unwrap();
    let served = csv(
        &app,
        "/v1/revenue/journal?from=2026-01-01&to=2026-01-31&format=csv",
    )
    .await;
    assert_eq!(written, served);
    assert_eq!(written.lines().count(), 1 + 5);
    let rollforward = std::fs::read_to_string(dir.path().join("books.rollforward.csv")).unwrap();
    assert!(
        rollforward.starts_with("period,currency,opening"),
        "{rollforward}"
    );
    assert!(dir.path().join("books.waterfall.csv").exists());
    assert!(String::from_utf8_lossy(&output.stderr).contains("100%"));
}
per_engine!(cli_export_matches_the_api);

/// Random histories (seeded): packs bought, used, refunded in part, left to expire, plans paid
/// and renewed, promotional credits, periods closed along the way. Whatever happens, the
/// reports reconcile and every paid grant's identity holds to the cent.
async fn random_histories_reconcile(engine: Engine, seed: u64) {
    use rand::{Rng, SeedableRng};
    let app = common::spawn_app_at(engine, t(T0), |_| {}).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let accounts = ["acct_r1", "acct_r2", "acct_r3"];
    let mut payments: Vec<(String, i64, i64)> = Vec::new();
    let mut day = 0;
    let mut closed = Vec::new();
    let mut invoices = 0;
    for step in 0..40 {
        let account = accounts[rng.gen_range(0..accounts.len())];
        match rng.gen_range(0..10) {
            0 | 1 => {
                let (pack, cents) = if rng.gen_bool(0.5) {
                    ("topup_small", 1_000)
                } else {
                    ("topup_large", 10_000)
                };
                let payment = format!("pi_{seed}_{step}");
                buy_pack(&app, account, pack, cents, &payment).await;
                payments.push((payment, cents, 0));
            }
            2 => {
                invoices += 1;
                let start = app.now();
                pay_invoice(
                    &app,
                    account,
                    &format!("in_{seed}_{invoices}"),
                    "subscription_create",
                    if rng.gen_bool(0.5) {
                        "price_team_monthly"
                    } else {
                        "price_pro_monthly"
                    },
                    rng.gen_range(1_000..20_000),
                    1,
                    (start, start + chrono::Duration::days(rng.gen_range(20..40))),
                )
                .await;
            }
            3 if !payments.is_empty() => {
                let index = rng.gen_range(0..payments.len());
                let (payment, cents, refunded) = payments[index].clone();
                if refunded < cents {
                    let more = rng.gen_range(1..=cents - refunded);
                    refunded_so_far(&app, &payment, refunded + more).await;
                    payments[index].2 = refunded + more;
                }
            }
            4 => {
                app.promo(account, &rng.gen_range(1..200).to_string()).await;
            }
            5..=7 => {
                let credits = rng.gen_range(1..3000);
                let _ = app
                    .usage(
                        account,
                        "chat.request",
                        json!(credits.to_string()),
                        &format!("u_{seed}_{step}"),
                    )
                    .await;
            }
            _ => {
                day += rng.gen_range(1..120);
                let now = t(T0) + chrono::Duration::days(day);
                app.advance(now).await;
                if rng.gen_bool(0.5) {
                    let last = creditbook::domain::revrec::Period::of(now);
                    let mut period = creditbook::domain::revrec::Period::of(t(T0));
                    while period.next() <= last {
                        if !closed.contains(&period) {
                            let (status, value) = app
                                .call(
                                    reqwest::Method::POST,
                                    &format!("/v1/revenue/periods/{period}/close"),
                                    Some(&app.finance_key),
                                    None,
                                )
                                .await;
                            assert_eq!(status, StatusCode::OK, "{value}");
                            closed.push(period);
                        }
                        period = period.next();
                    }
                }
            }
        }
    }
    let end = creditbook::domain::revrec::Period::of(app.now())
        .next()
        .next();
    reconcile(&app, "2026-01", &end.to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_histories_reconcile_sqlite() {
    for seed in 1..=4 {
        random_histories_reconcile(Engine::Sqlite, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_histories_reconcile_postgres() {
    for seed in 11..=13 {
        random_histories_reconcile(Engine::Postgres, seed).await;
    }
}

#[test]
fn redaction_is_stable() {
    let id = "je_0123456789abcdef0123456789abcdef";
    assert_eq!(redact(&format!("{id},{id},x")), "[je1],[je1],x");
    let _ = Utc.timestamp_opt(0, 0);
}

/// A paid grant from before revenue recognition was installed (no lot) never blocks spending;
/// nothing is posted for it and the audit names it.
async fn grant_without_a_lot_still_spends(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let grant = buy_pack(&app, "acct_j", "topup_small", 1_000, "pi_j").await;
    let db = app.store.connection();
    // The journal refuses deletes (triggers): the data of an older version is made as its
    // owner would, with the trigger out of the way.
    let lift = match app.engine {
        Engine::Sqlite => "DROP TRIGGER journal_lines_no_delete",
        Engine::Postgres => "ALTER TABLE journal_lines DISABLE TRIGGER journal_lines_append_only",
    };
    db.execute_unprepared(lift).await.unwrap();
    for table in ["journal_lines", "revenue_lots"] {
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            format!("DELETE FROM {table} WHERE grant_id = '{grant}'"),
        ))
        .await
        .unwrap();
    }
    spend(&app, "acct_j", 10).await;
    assert!(journal(&app, "2026-01-01", "2026-12-31").await.is_empty());
    let problems = app.store.audit().await.unwrap();
    assert_eq!(
        problems,
        vec![format!("paid grant {grant} has no revenue lot")]
    );
}
per_engine!(grant_without_a_lot_still_spends);

/// `topup_small`'s expected_unused goes from 0.15 to 0.05 after 170 of 1,000 credits were used:
/// recognized to date becomes round(10 x 170 / 950) = 1.79, so 0.21 of the 0.30 breakage is
/// reversed at once (an `estimate_change` entry), and later uses follow the new estimate.
async fn changed_estimate_is_caught_up(app: TestApp) {
    use creditbook::domain::catalog::Breakage;
    let grant = buy_pack(&app, "acct_k", "topup_small", 1_000, "pi_k").await;
    spend(&app, "acct_k", 170).await;
    let mut catalog = app.config.catalog.clone();
    catalog.packs.get_mut("topup_small").unwrap().breakage = Breakage::Proportional {
        expected_unused: Decimal::from_str("0.05").unwrap(),
    };
    // The same database, served with the new catalog.
    let store = creditbook::store::Store::connect(&app.database_url)
        .await
        .unwrap()
        .with_catalog(std::sync::Arc::new(catalog));
    assert_eq!(
        creditbook::jobs::recognize_due(&store, app.now(), 100)
            .await
            .unwrap(),
        1
    );
    // Once caught up, nothing more is due.
    assert_eq!(
        creditbook::jobs::recognize_due(&store, app.now(), 100)
            .await
            .unwrap(),
        0
    );
    let all = lines(&journal(&app, "2026-01-01", "2026-12-31").await);
    assert_eq!(
        all[5..],
        [
            line("estimate_change", "contract_liability", "0.00", "0.21"),
            line("estimate_change", "breakage_revenue", "0.21", "0.00"),
        ]
    );
    let s = schedule(&app, &grant).await;
    assert_eq!(
        (&s["expected_unused"], &s["totals"]["breakage"]),
        (&json!("0.05"), &json!("0.09"))
    );
    reconcile(&app, "2026-01", "2026-01").await;
}
per_engine!(changed_estimate_is_caught_up);

/// From January 20th `chat.request` costs 2 credits a unit (was 1) and 0.001 at the vendor (was
/// 0.002): what was used before keeps its terms, including a usage reported late.
fn chat_repriced(config: &mut creditbook::config::Config) {
    let chat = config.catalog.actions.get_mut("chat.request").unwrap();
    chat.changes
        .push(creditbook::domain::catalog::ActionChange {
            from: t("2026-01-20T00:00:00Z"),
            credits: Some(creditbook::domain::Credits::new(money("2")).unwrap()),
            vendor_cost: Some(money("0.001")),
        });
}

/// One pack of 12,000 credits for $100 (1/120 a credit), used by three actions, one capture by
/// credits, a promotional grant on `pro` and a repricing:
/// - chat 1,200 units x 1 = 1,200 credits: 10.00 revenue, 1,200 x 0.002 = 2.40 cost;
/// - image.standard 24 units x 5 = 120 credits: 1.00, 24 x 0.04 = 0.96;
/// - image.hd held for 10 units, captured at 120 credits (8 units): 1.00, 8 x 0.12 = 0.96;
/// - acct_n, on `pro`, 100 chat units from a promotional grant: no revenue, 0.20 cost;
/// - after the repricing, chat 600 units x 2 = 1,200 credits: 10.00, 600 x 0.001 = 0.60;
/// - chat 100 units reported late, dated before it: 100 credits at 1, 0.20 cost; the pack's
///   cumulative usage 2,740 / 120 = 22.8333 -> 22.83, so 0.83 more revenue.
async fn margin_sets_revenue_against_vendor_cost(app: TestApp) {
    buy_pack(&app, "acct_m", "topup_large", 10_000, "pi_m").await;
    spend(&app, "acct_m", 1200).await;
    let (status, used) = app
        .usage("acct_m", "image.standard", json!("24"), "img")
        .await;
    assert_eq!(
        (status, &used["credits"]),
        (StatusCode::CREATED, &json!("120"))
    );
    let (status, hold) = app.authorize("acct_m", "image.hd", json!("10")).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, captured) = app
        .capture(hold["id"].as_str().unwrap(), json!({"credits": "120"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    app.promo("acct_n", "100").await;
    app.set_plan_without_its_credits("acct_n", "pro").await;
    let (status, used) = app
        .usage("acct_n", "chat.request", json!("100"), "n1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{used}");

    app.advance(t("2026-01-25T00:00:00Z")).await;
    let (status, used) = app
        .usage("acct_m", "chat.request", json!("600"), "m2")
        .await;
    assert_eq!(
        (status, &used["credits"]),
        (StatusCode::CREATED, &json!("1200"))
    );
    let (status, late) = app
        .post_app(
            "/v1/usage",
            json!({"customer": "acct_m", "action": "chat.request", "quantity": "100",
                   "idempotency_key": "m3", "occurred_at": "2026-01-19T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, &late["credits"]),
        (StatusCode::CREATED, &json!("100"))
    );

    let report = |by: &'static str| {
        let app = &app;
        async move {
            let (status, value) = finance(
                app,
                &format!("/v1/revenue/margin?from=2026-01&to=2026-01&by={by}"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{value}");
            value["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                    (
                        s("group"),
                        s("credits"),
                        s("revenue"),
                        s("vendor_cost"),
                        s("margin"),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let row = |g: &str, c: &str, r: &str, v: &str, m: &str| {
        (
            g.to_owned(),
            c.to_owned(),
            r.to_owned(),
            v.to_owned(),
            m.to_owned(),
        )
    };
    assert_eq!(
        report("action").await,
        [
            row("chat.request", "2600", "20.83", "3.40", "17.43"),
            row("image.hd", "120", "1.00", "0.96", "0.04"),
            row("image.standard", "120", "1.00", "0.96", "0.04"),
        ]
    );
    assert_eq!(
        report("feature").await,
        [
            row("chat", "2600", "20.83", "3.40", "17.43"),
            row("image", "240", "2.00", "1.92", "0.08"),
        ]
    );
    assert_eq!(
        report("customer").await,
        [
            row("acct_m", "2740", "22.83", "5.12", "17.71"),
            row("acct_n", "100", "0.00", "0.20", "-0.20"),
        ]
    );
    // acct_m has no plan: its row's group is null.
    assert_eq!(
        report("plan").await,
        [
            row("pro", "100", "0.00", "0.20", "-0.20"),
            row("-", "2740", "22.83", "5.12", "17.71"),
        ]
    );
    let text = csv(
        &app,
        "/v1/revenue/margin?from=2026-01&to=2026-01&by=feature&format=csv",
    )
    .await;
    assert_eq!(
        text,
        "month,currency,group,unattributed,credits,uncosted_credits,revenue,overage,vendor_cost,margin\n\
         2026-01,usd,chat,false,2600,0,20.83,0.00,3.40,17.43\n\
         2026-01,usd,image,false,240,0,2.00,0.00,1.92,0.08\n"
    );

    // Bad requests change nothing and say what is wrong.
    for (query, field) in [
        ("from=2026-01&to=2026-01&by=model", "by"),
        ("from=2026-02&to=2026-01", "to"),
        ("from=2026-13&to=2026-01", "from"),
        ("from=2026-01&to=2026-01&format=xml", "format"),
    ] {
        let (status, problem) = finance(&app, &format!("/v1/revenue/margin?{query}")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/margin?from=2026-01&to=2026-01",
            Some(&app.app_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    reconcile(&app, "2026-01", "2026-01").await;
}

mod margin_sets_revenue_against_vendor_cost {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let app = common::spawn_app_at(Engine::Sqlite, t(T0), chat_repriced).await;
        super::margin_sets_revenue_against_vendor_cost(app).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        let app = common::spawn_app_at(Engine::Postgres, t(T0), chat_repriced).await;
        super::margin_sets_revenue_against_vendor_cost(app).await;
    }
}

/// The team plan reports its billed overage to a Stripe meter and its metered price pays it; the
/// outbox retries quickly.
fn metered_team(base: String) -> impl FnOnce(&mut creditbook::config::Config) {
    move |config| {
        config.stripe.api_key = Some(common::stand_in::API_KEY.into());
        config.stripe.api_base = Some(base);
        config.outbox.poll_interval_ms = 20;
        config.outbox.retry.first_retry_ms = 50;
        config.outbox.retry.max_retry_ms = 200;
        let team = config.catalog.plans.get_mut("team").unwrap();
        team.overage_meter = Some(creditbook::domain::catalog::OverageMeter {
            event_name: "creditbook_overage".into(),
            stripe_price: Some("price_team_overage".into()),
        });
    }
}

/// Waits until `n` meter events are accepted and every outbox row is delivered.
async fn meter_events_settle(app: &TestApp, stand_in: &common::stand_in::StandIn, n: usize) {
    for _ in 0..200 {
        let accepted = stand_in.meter_events.lock().unwrap().len();
        let (_, pending) = app
            .call(
                reqwest::Method::GET,
                "/v1/outbox?status=pending",
                Some(&app.admin_key),
                None,
            )
            .await;
        if accepted >= n && pending["messages"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("meter events did not settle");
}

/// `team` bills overage at 0.01 a credit. 5,002.5 credits used of 5,000: 2 whole credits are
/// reported (the first answer lost, so it is sent again: Stripe keeps one); then 0.7 more makes
/// 3.2, and 1 more is reported; 0.2 waits. A customer on `team` with no Stripe customer keeps
/// its overage accrued and listed. The invoice's metered line (3 credits x 0.01 = 0.03) pays
/// the receivable (3.2 x 0.01 = 0.032, posted 0.03) to zero.
async fn overage_reported_to_a_stripe_meter(engine: Engine) {
    let lists = BTreeMap::from([("invoice_payments".to_owned(), Vec::new())]);
    let (base, stand_in) = common::stand_in::spawn(lists).await;
    // Set before anything is used: the jobs' first run, at start, may come after the usage.
    *stand_in.meter_answers_lost.lock().unwrap() = 1;
    *stand_in.meter_down.lock().unwrap() = 1;
    let app = common::spawn_app_at(engine, t(T0), metered_team(base)).await;
    pay_invoice(
        &app,
        "acct_o",
        "in_o1",
        "subscription_create",
        "price_team_monthly",
        10_000,
        1,
        (t(T0), t("2026-02-10T00:00:00Z")),
    )
    .await;
    let (status, used) = app
        .usage("acct_o", "chat.request", json!("5002.5"), "o1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    // Not linked to Stripe: accrued, never reported.
    app.promo("acct_p", "1").await;
    app.set_plan_without_its_credits("acct_p", "team").await;
    let (status, used) = app.usage("acct_p", "chat.request", json!("4"), "p1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");

    app.advance(t("2026-01-10T01:00:00Z")).await;
    meter_events_settle(&app, &stand_in, 1).await;
    let (status, used) = app
        .usage("acct_o", "chat.request", json!("0.7"), "o2")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    app.advance(t("2026-01-10T02:00:00Z")).await;
    meter_events_settle(&app, &stand_in, 2).await;
    // 0.2 is not a whole credit: nothing more.
    app.advance(t("2026-01-10T03:00:00Z")).await;
    meter_events_settle(&app, &stand_in, 2).await;

    let events = stand_in.meter_events.lock().unwrap().clone();
    let fields = |e: &BTreeMap<String, String>, k: &str| e[k].clone();
    assert_eq!(
        events
            .iter()
            .map(|e| (
                fields(e, "event_name"),
                fields(e, "payload[stripe_customer_id]"),
                fields(e, "payload[value]")
            ))
            .collect::<Vec<_>>(),
        [
            ("creditbook_overage".into(), "cus_acct_o".into(), "2".into()),
            ("creditbook_overage".into(), "cus_acct_o".into(), "1".into()),
        ]
    );
    assert_ne!(events[0]["identifier"], events[1]["identifier"]);
    // Down once, answer lost once, then the first answer replayed: four requests, two events,
    // each request under its event's identifier.
    let requests = stand_in.meter_requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[0], events[0]["identifier"]);
    assert_eq!(requests[2], events[0]["identifier"]);
    // Stripe takes timestamps from the past 35 days: the test clock's January is moved into it.
    let wall = chrono::Utc::now().timestamp();
    for e in &events {
        let at: i64 = e["timestamp"].parse().unwrap();
        assert!(at <= wall && at >= wall - 35 * 86_400, "{e:?}");
    }
    let (status, outbox) = app
        .call(
            reqwest::Method::GET,
            "/v1/outbox?customer=acct_o",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let meter_rows: Vec<&Value> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "stripe_meter_event")
        .collect();
    assert_eq!(meter_rows.len(), 2, "{outbox}");
    assert_eq!(
        (&meter_rows[0]["status"], &meter_rows[0]["attempts"]),
        (&json!("delivered"), &json!(3))
    );
    assert_eq!(meter_rows[0]["needs_reconciling"], false);
    assert!(meter_rows[0]["first_attempt_at"].is_string());
    // Stripe acknowledged it: a replay is refused, however asked, and nothing is sent again.
    let delivered = meter_rows[0]["id"].as_str().unwrap();
    for query in ["", "?absent_in_stripe=true"] {
        let (status, refused) = app
            .post_admin(&format!("/v1/outbox/{delivered}/replay{query}"), json!({}))
            .await;
        assert_eq!(
            (status, refused["type"].as_str()),
            (StatusCode::CONFLICT, Some("outbox_already_delivered")),
            "{refused}"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        stand_in.meter_requests.lock().unwrap().len(),
        4,
        "never sent again"
    );
    assert_eq!(stand_in.meter_events.lock().unwrap().len(), 2);

    let (status, listed) = finance(&app, "/v1/revenue/overage").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let row = |customer: &str| {
        listed["customers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["customer"] == customer)
            .cloned()
            .unwrap()
    };
    let o = row("acct_o");
    assert_eq!(
        (
            &o["credits"],
            &o["reported"],
            &o["unreported"],
            &o["stripe_customer"]
        ),
        (
            &json!("3.2"),
            &json!("3"),
            &json!("0.2"),
            &json!("cus_acct_o")
        )
    );
    let p = row("acct_p");
    assert_eq!(
        (
            &p["credits"],
            &p["reported"],
            &p["unreported"],
            &p["stripe_customer"]
        ),
        (&json!("3"), &json!("0"), &json!("3"), &Value::Null)
    );
    assert_eq!(p["meter_event"], "creditbook_overage");

    // The invoice that bills the meter is paid: the receivable is relieved, once.
    let metered = json!({"id": "in_o2", "object": "invoice", "customer": "cus_acct_o",
        "currency": "usd", "status": "paid", "billing_reason": "subscription_cycle",
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": "sub_acct_o", "metadata": {"creditbook_customer": "acct_o"}}},
        "payments": {"object": "list", "data": [{"payment": {"type": "payment_intent",
            "payment_intent": "pi_in_o2"}}]},
        "lines": {"object": "list", "has_more": false, "data": [{
            "id": "il_o2", "object": "line_item", "amount": 3, "currency": "usd", "quantity": 3,
            "period": {"start": t(T0).timestamp(), "end": t("2026-02-10T00:00:00Z").timestamp()},
            "discount_amounts": [], "taxes": [],
            "pricing": {"type": "price_details", "unit_amount_decimal": "1",
                "price_details": {"price": "price_team_overage", "product": "prod_x"}},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": "sub_acct_o", "subscription_item": "si_m", "proration": false}}}]}});
    deliver(&app, "evt_in_o2", "invoice.paid", metered.clone()).await;
    let body = json!({"id": "evt_in_o2_again", "object": "event",
        "api_version": "2025-08-27.basil", "created": app.now().timestamp(), "livemode": false,
        "type": "invoice.paid", "data": {"object": metered}})
    .to_string();
    let (status, _) = app.webhook(&body).await;
    assert_eq!(status, StatusCode::OK);
    let journal_lines = journal(&app, "2026-01-01", "2026-12-31").await;
    let receivable = |customer: &str| -> Decimal {
        journal_lines
            .iter()
            .filter(|l| l["account"] == "unbilled_receivable" && l["customer"] == customer)
            .map(|l| money(l["debit"].as_str().unwrap()) - money(l["credit"].as_str().unwrap()))
            .sum()
    };
    assert_eq!(receivable("acct_o"), money("0.00"));
    assert_eq!(receivable("acct_p"), money("0.03"));
    let paid: Vec<_> = lines(&journal_lines)
        .into_iter()
        .filter(|l| l.0 == "overage_paid")
        .collect();
    assert_eq!(
        paid,
        [
            line("overage_paid", "cash", "0.03", "0.00"),
            line("overage_paid", "unbilled_receivable", "0.00", "0.03"),
        ]
    );
    reconcile(&app, "2026-01", "2026-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overage_reported_to_a_stripe_meter_sqlite() {
    overage_reported_to_a_stripe_meter(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overage_reported_to_a_stripe_meter_postgres() {
    overage_reported_to_a_stripe_meter(Engine::Postgres).await;
}
