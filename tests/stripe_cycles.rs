//! Credit cycles of plans sold through Stripe, through the real HTTP stack on SQLite and
//! PostgreSQL, driven by the test clock: trials with `trial_credits`, and plan changes as Stripe
//! sends them (prorations, a new billing cycle anchor, a downgrade at the period's end).

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Engine, TestApp};
use creditbook::domain::money::Credits;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

/// The example's prices, in cents a month.
const PRO_CENTS: i64 = 2900;

/// A plan line of subscription `sub` for `period`, charging `cents` of a whole period's
/// `unit_cents`.
fn line(
    id: &str,
    (sub, price): (&str, &str),
    (cents, unit_cents): (i64, i64),
    period: (DateTime<Utc>, DateTime<Utc>),
    proration: bool,
) -> Value {
    json!({
        "id": id, "object": "line_item", "amount": cents, "currency": "usd", "quantity": 1,
        "period": {"start": period.0.timestamp(), "end": period.1.timestamp()},
        "discount_amounts": [], "taxes": [],
        "pricing": {"type": "price_details", "unit_amount_decimal": unit_cents.to_string(),
                    "price_details": {"price": price, "product": "prod_x"}},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": sub, "subscription_item": format!("si_{sub}"), "proration": proration}}
    })
}

/// Delivers `invoice.paid` of subscription `sub` of account `account` with `lines`; returns
/// the outcome's detail.
async fn invoice_paid(
    app: &TestApp,
    (account, sub): (&str, &str),
    id: &str,
    reason: &str,
    lines: Vec<Value>,
) -> String {
    let total: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap()).sum();
    let invoice = json!({
        "id": id, "object": "invoice", "customer": format!("cus_{account}"), "currency": "usd",
        "status": "paid", "billing_reason": reason, "amount_paid": total,
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": sub, "metadata": {"creditbook_customer": account}}},
        "payments": {"object": "list", "data": [{"payment": {"type": "payment_intent",
            "payment_intent": format!("pi_{id}")}}]},
        "lines": {"object": "list", "has_more": false, "data": lines}
    });
    deliver(app, &format!("evt_{id}"), "invoice.paid", invoice).await
}

/// A subscription event (`customer.subscription.created`/`updated`) of `price`.
async fn subscription_event(
    app: &TestApp,
    (account, sub): (&str, &str),
    event: &str,
    status: &str,
    price: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
) {
    let subscription = json!({
        "id": sub, "object": "subscription", "customer": format!("cus_{account}"),
        "status": status, "cancel_at_period_end": false,
        "trial_end": (status == "trialing").then(|| period.1.timestamp()),
        "metadata": {"creditbook_customer": account},
        "items": {"object": "list", "has_more": false, "data": [{
            "id": format!("si_{sub}"), "object": "subscription_item", "quantity": 1,
            "current_period_start": period.0.timestamp(), "current_period_end": period.1.timestamp(),
            "price": {"id": price, "object": "price"}}]}
    });
    let id = format!("evt_{sub}_{status}_{}", app.now().timestamp());
    deliver(app, &id, event, subscription).await;
}

async fn deliver(app: &TestApp, id: &str, kind: &str, object: Value) -> String {
    let body = common::stripe_event(id, kind, app.now().timestamp(), object);
    let (status, value) = app.webhook(&body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], "applied", "{value}");
    value["detail"].as_str().unwrap_or_default().to_owned()
}

fn available(customer: &Value) -> &str {
    customer["available"].as_str().unwrap()
}

/// `pro` with `trial_credits = "100"`: a 14-day trial gets 100 promotional credits, not the
/// 2,000 its $0 invoice would give; a second trial of the same plan gets nothing; the credits
/// end with the trial; the first paid invoice grants the plan's 2,000 as usual.
async fn a_trial_gets_its_trial_credits_once_and_then_the_plan(engine: Engine) {
    let app = common::spawn_app_at(engine, t0(), |config| {
        let pro = config.catalog.plans.get_mut("pro").unwrap();
        pro.trial_credits = Some("100".parse::<Credits>().unwrap());
    })
    .await;
    let trial = (t0(), t0() + Duration::days(14));
    let first = ("acct_t", "sub_t1");
    subscription_event(
        &app,
        first,
        "customer.subscription.created",
        "trialing",
        "price_pro_monthly",
        trial,
    )
    .await;
    let detail = invoice_paid(
        &app,
        first,
        "in_t1",
        "subscription_create",
        vec![line(
            "il_t1",
            ("sub_t1", "price_pro_monthly"),
            (0, PRO_CENTS),
            trial,
            false,
        )],
    )
    .await;
    assert!(detail.contains("100 trial credits of plan pro"), "{detail}");
    let customer = app.customer("acct_t").await;
    assert_eq!(available(&customer), "100");
    assert_eq!(customer["plan"], "pro");
    let grants = customer["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        grants[0]["kind"], "promotional",
        "trial credits carry no revenue"
    );
    assert_eq!(grants[0]["price"], Value::Null);
    assert_eq!(
        grants[0]["expires_at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(trial.1),
        "they end with the trial"
    );
    // A second subscription trialing the same plan: no second taste.
    let second = ("acct_t", "sub_t2");
    let detail = invoice_paid(
        &app,
        second,
        "in_t2",
        "subscription_create",
        vec![line(
            "il_t2",
            ("sub_t2", "price_pro_monthly"),
            (0, PRO_CENTS),
            trial,
            false,
        )],
    )
    .await;
    assert!(detail.contains("given before"), "{detail}");
    assert_eq!(available(&app.customer("acct_t").await), "100");
    app.usage("acct_t", "chat.request", json!("30"), "trial-use")
        .await;
    app.advance(trial.1 + Duration::seconds(1)).await;
    assert_eq!(
        available(&app.customer("acct_t").await),
        "0",
        "the trial's credits ended"
    );
    // The trial converts: the first paid invoice grants the plan as usual.
    let paid = (trial.1, trial.1 + Duration::days(31));
    invoice_paid(
        &app,
        first,
        "in_t3",
        "subscription_cycle",
        vec![line(
            "il_t3",
            ("sub_t1", "price_pro_monthly"),
            (PRO_CENTS, PRO_CENTS),
            paid,
            false,
        )],
    )
    .await;
    assert_eq!(available(&app.customer("acct_t").await), "2000");
    // The books: the trial's credits are promotional, outside revenue; the paid month is not.
    let journal = app.journal_lines("2026-03-01", "2026-03-31").await;
    let cash: Vec<&Value> = journal.iter().filter(|l| l["account"] == "cash").collect();
    assert_eq!(
        cash.len(),
        1,
        "only the paid invoice moves money: {journal:?}"
    );
    assert_eq!(cash[0]["debit"], "29.00");
    app.assert_audit_clean().await;
}
for_each_engine!(a_trial_gets_its_trial_credits_once_and_then_the_plan);

/// Without `trial_credits`, a trial's $0 first invoice grants the plan's allowance at no price,
/// as it always did (README, Credit cycles).
async fn without_trial_credits_a_trial_gets_the_allowance(engine: Engine) {
    let app = common::spawn_app_at(engine, t0(), |_| {}).await;
    let trial = (t0(), t0() + Duration::days(14));
    let first = ("acct_n", "sub_n1");
    invoice_paid(
        &app,
        first,
        "in_n1",
        "subscription_create",
        vec![line(
            "il_n1",
            ("sub_n1", "price_pro_monthly"),
            (0, PRO_CENTS),
            trial,
            false,
        )],
    )
    .await;
    let customer = app.customer("acct_n").await;
    assert_eq!(available(&customer), "2000");
    assert_eq!(customer["grants"][0]["kind"], "plan");
    assert_eq!(customer["grants"][0]["price"], "0");
}
for_each_engine!(without_trial_credits_a_trial_gets_the_allowance);

const TEAM_CENTS: i64 = 10_000;

/// The subscription's first invoice: the whole of March on `price` at `cents`.
async fn first_month(app: &TestApp, sub: (&str, &str), invoice: &str, (price, cents): (&str, i64)) {
    let line_id = invoice.replacen("in_", "il_", 1);
    let period = (day(1), april(1));
    let first = line(&line_id, (sub.1, price), (cents, cents), period, false);
    invoice_paid(app, sub, invoice, "subscription_create", vec![first]).await;
}

/// A proration line crediting `credited` (a line of invoice `of_invoice`): Stripe's "Unused time
/// on …".
fn unused_time(
    id: &str,
    (sub, price): (&str, &str),
    (cents, unit_cents): (i64, i64),
    period: (DateTime<Utc>, DateTime<Utc>),
    (of_invoice, credited): (&str, &str),
) -> Value {
    let mut line = line(id, (sub, price), (-cents, unit_cents), period, true);
    line["parent"]["subscription_item_details"]["proration_details"] =
        json!({"credited_items": {"invoice": of_invoice, "invoice_line_items": [credited]}});
    line
}

/// A line's or a period's start and end.
type Window = (DateTime<Utc>, DateTime<Utc>);

/// The invoice of a plan change made with `always_invoice` over `window` (the rest of the
/// period): the unused time of the earlier line `was` (`(invoice, line)`, of `from_price`:
/// `credited` cents of a `from_unit` price) given back, and `charged`, the new price's rest,
/// billed. The credited line is the invoice's `…a` line (`in_u2` → `il_u2a`).
async fn change_invoiced(
    app: &TestApp,
    sub: (&str, &str),
    id: &str,
    (from_price, credited, from_unit): (&str, i64, i64),
    (was, window): ((&str, &str), Window),
    charged: Value,
) {
    let unused = unused_time(
        &format!("il_{}a", &id["in_".len()..]),
        (sub.1, from_price),
        (credited, from_unit),
        window,
        was,
    );
    invoice_paid(app, sub, id, "subscription_update", vec![unused, charged]).await;
}

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, 9, 0, 0).unwrap()
}

fn april(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, d, 9, 0, 0).unwrap()
}

async fn spend(app: &TestApp, account: &str, credits: &str, key: &str) {
    let (status, value) = app
        .usage(account, "chat.request", json!(credits), key)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
}

/// Upgrades with `proration_behavior = always_invoice`, in a 31-day March period.
/// - `pro` (2,000 for $29.00), 1,900 used on day one. On March 2nd, to `team` (5,000 for
///   $100.00): Stripe credits 30/31 of pro ($28.06: 1,935 credits' worth, but only the 100 free
///   are taken back) and charges 30/31 of team ($96.77: 4,838.5 credits' worth). The period may
///   give no more than team's 5,000: 1,900 are held from pro, so the change gives 3,100, not
///   4,838.5 (no late upgrade buys a second allowance with credits already used).
/// - On March 16th, to 2 seats of team: Stripe credits 16/31 of the first upgrade's line
///   ($51.61 of $96.77: 3,100 x 51.61 / 96.77 = 1,653.311976 taken back) and charges 16/31 of 2
///   seats ($103.23): 10,000 x 10,323 / 20,000 = 5,161.5 credits, counted against the plan's
///   full value ($200.00 a period), not against the net charge of the change ($51.62).
async fn upgrades_grant_from_the_money_collected_and_never_beyond_the_highest_allowance(
    engine: Engine,
) {
    let app = common::spawn_app_at(engine, day(1), |_| {}).await;
    let sub = ("acct_u", "sub_u");
    let period = (day(1), april(1));
    invoice_paid(
        &app,
        sub,
        "in_u1",
        "subscription_create",
        vec![line(
            "il_u1",
            ("sub_u", "price_pro_monthly"),
            (PRO_CENTS, PRO_CENTS),
            period,
            false,
        )],
    )
    .await;
    spend(&app, "acct_u", "1900", "u-1").await;
    app.advance(day(2)).await;
    change_invoiced(
        &app,
        sub,
        "in_u2",
        ("price_pro_monthly", 2806, PRO_CENTS),
        (("in_u1", "il_u1"), (day(2), april(1))),
        line(
            "il_u2b",
            ("sub_u", "price_team_monthly"),
            (9677, TEAM_CENTS),
            (day(2), april(1)),
            true,
        ),
    )
    .await;
    let customer = app.customer("acct_u").await;
    assert_eq!(available(&customer), "3100", "{customer}");
    app.advance(day(16)).await;
    let mut seats = line(
        "il_u3b",
        ("sub_u", "price_team_monthly"),
        (10_323, TEAM_CENTS),
        (day(16), april(1)),
        true,
    );
    seats["quantity"] = json!(2);
    change_invoiced(
        &app,
        sub,
        "in_u3",
        ("price_team_monthly", 5161, TEAM_CENTS),
        (("in_u2", "il_u2b"), (day(16), april(1))),
        seats,
    )
    .await;
    let customer = app.customer("acct_u").await;
    assert_eq!(available(&customer), "6608.188024", "{customer}");
    let credits: Vec<&str> = customer["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["credits"].as_str().unwrap())
        .collect();
    assert!(credits.contains(&"5161.5"), "{credits:?}");
    app.assert_audit_clean().await;
}
for_each_engine!(upgrades_grant_from_the_money_collected_and_never_beyond_the_highest_allowance);

/// A downgrade then an upgrade in one period, each invoiced at once: `team` (5,000 for $100.00)
/// on March 1st; on the 16th to `pro`: 16/31 of team credited ($51.61: 2,580.5 taken back),
/// 16/31 of pro charged ($14.97: 2,000 x 1,497 / 2,900 = 1,032.413793); on the 24th back to
/// team: 8/31 of that pro line credited ($7.48 of $14.97: 515.862068 taken back), 8/31 of team
/// charged ($25.81: 1,290.5). The period never gives a second fresh allowance: what the
/// customer holds is 4,226.551725, under team's 5,000.
async fn a_downgrade_then_an_upgrade_never_gives_a_second_allowance(engine: Engine) {
    let app = common::spawn_app_at(engine, day(1), |_| {}).await;
    let sub = ("acct_d", "sub_d");
    first_month(&app, sub, "in_d1", ("price_team_monthly", TEAM_CENTS)).await;
    app.advance(day(16)).await;
    let period = (day(1), april(1));
    subscription_event(
        &app,
        sub,
        "customer.subscription.updated",
        "active",
        "price_pro_monthly",
        period,
    )
    .await;
    change_invoiced(
        &app,
        sub,
        "in_d2",
        ("price_team_monthly", 5161, TEAM_CENTS),
        (("in_d1", "il_d1"), (day(16), april(1))),
        line(
            "il_d2b",
            ("sub_d", "price_pro_monthly"),
            (1497, PRO_CENTS),
            (day(16), april(1)),
            true,
        ),
    )
    .await;
    let customer = app.customer("acct_d").await;
    assert_eq!(available(&customer), "3451.913793", "{customer}");
    assert_eq!(customer["plan"], "pro");
    app.advance(day(24)).await;
    subscription_event(
        &app,
        sub,
        "customer.subscription.updated",
        "active",
        "price_team_monthly",
        period,
    )
    .await;
    change_invoiced(
        &app,
        sub,
        "in_d3",
        ("price_pro_monthly", 748, PRO_CENTS),
        (("in_d2", "il_d2b"), (day(24), april(1))),
        line(
            "il_d3b",
            ("sub_d", "price_team_monthly"),
            (2581, TEAM_CENTS),
            (day(24), april(1)),
            true,
        ),
    )
    .await;
    let customer = app.customer("acct_d").await;
    assert_eq!(available(&customer), "4226.551725", "{customer}");
    assert_eq!(customer["plan"], "team");
    app.assert_audit_clean().await;
}
for_each_engine!(a_downgrade_then_an_upgrade_never_gives_a_second_allowance);

/// An upgrade with `billing_cycle_anchor = now` on March 16th: Stripe credits 16/31 of `pro`
/// ($14.97: 1,032.413793 of its 2,000 taken back, the rest staying until its period ends) and
/// bills a whole new `team` period from that day (5,000, until April 16th). The same invoice
/// told twice (`invoice.paid` and `invoice.payment_succeeded`) grants once: a period's credits
/// are granted at most once per subscription.
async fn a_new_billing_cycle_grants_its_whole_period_once(engine: Engine) {
    let app = common::spawn_app_at(engine, day(1), |_| {}).await;
    let sub = ("acct_a", "sub_a");
    first_month(&app, sub, "in_a1", ("price_pro_monthly", PRO_CENTS)).await;
    app.advance(day(16)).await;
    let lines = vec![
        unused_time(
            "il_a2a",
            ("sub_a", "price_pro_monthly"),
            (1497, PRO_CENTS),
            (day(16), april(1)),
            ("in_a1", "il_a1"),
        ),
        line(
            "il_a2b",
            ("sub_a", "price_team_monthly"),
            (TEAM_CENTS, TEAM_CENTS),
            (day(16), april(16)),
            false,
        ),
    ];
    let new_cycle = (day(16), april(16));
    subscription_event(
        &app,
        sub,
        "customer.subscription.updated",
        "active",
        "price_team_monthly",
        new_cycle,
    )
    .await;
    invoice_paid(&app, sub, "in_a2", "subscription_update", lines.clone()).await;
    assert_eq!(available(&app.customer("acct_a").await), "5967.586207");
    let again = json!({
        "id": "in_a2", "object": "invoice", "customer": "cus_acct_a", "currency": "usd",
        "status": "paid", "billing_reason": "subscription_update",
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": "sub_a", "metadata": {"creditbook_customer": "acct_a"}}},
        "payments": {"object": "list", "data": [{"payment": {"type": "payment_intent",
            "payment_intent": "pi_in_a2"}}]},
        "lines": {"object": "list", "has_more": false, "data": lines}
    });
    let detail = deliver(&app, "evt_in_a2_again", "invoice.payment_succeeded", again).await;
    assert!(detail.contains("applied before"), "{detail}");
    let customer = app.customer("acct_a").await;
    assert_eq!(available(&customer), "5967.586207");
    assert_eq!(customer["plan"], "team");
    // Pro's rest ends with its period; team's period runs on.
    app.advance(april(1) + Duration::seconds(1)).await;
    assert_eq!(available(&app.customer("acct_a").await), "5000");
    app.assert_audit_clean().await;
}
for_each_engine!(a_new_billing_cycle_grants_its_whole_period_once);

/// A downgrade at the period's end (`team` to `pro` from the renewal): nothing changes until
/// then; the renewal grants pro's 2,000, and team's unused credits expire (a renewal carries
/// over under the new plan's `rollover_max`, which pro does not have).
async fn a_downgrade_at_the_period_end_takes_effect_with_the_renewal(engine: Engine) {
    let app = common::spawn_app_at(engine, day(1), |_| {}).await;
    let sub = ("acct_e", "sub_e");
    first_month(&app, sub, "in_e1", ("price_team_monthly", TEAM_CENTS)).await;
    spend(&app, "acct_e", "1000", "e-1").await;
    app.advance(day(20)).await;
    subscription_event(
        &app,
        sub,
        "customer.subscription.updated",
        "active",
        "price_team_monthly",
        (day(1), april(1)),
    )
    .await;
    assert_eq!(
        available(&app.customer("acct_e").await),
        "4000",
        "the period runs on"
    );
    app.advance(april(1)).await;
    subscription_event(
        &app,
        sub,
        "customer.subscription.updated",
        "active",
        "price_pro_monthly",
        (april(1), Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap()),
    )
    .await;
    invoice_paid(
        &app,
        sub,
        "in_e2",
        "subscription_cycle",
        vec![line(
            "il_e2",
            ("sub_e", "price_pro_monthly"),
            (PRO_CENTS, PRO_CENTS),
            (april(1), Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap()),
            false,
        )],
    )
    .await;
    let customer = app.customer("acct_e").await;
    assert_eq!(available(&customer), "2000", "{customer}");
    assert_eq!(customer["plan"], "pro");
    app.assert_audit_clean().await;
}
for_each_engine!(a_downgrade_at_the_period_end_takes_effect_with_the_renewal);
