//! What real Stripe accounts send beyond the common shapes: legacy `plan` instead of `price`,
//! refunds with tax, invoices with more lines than their event carries, and subscription
//! invoices under API version 2025-03-31.basil, whose refunds name a payment the invoice does not.

mod common;

use common::{expect_outcome as expect, stripe_event as event};

use common::stand_in::{self, API_KEY};
use common::{Engine, TestApp, spawn_app_with};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A basil plan line of `price` for a month from `start`.
fn line(id: &str, price: &str, amount: i64, quantity: i64, start: i64) -> Value {
    json!({"id": id, "object": "line_item", "amount": amount, "currency": "usd",
           "quantity": quantity, "period": {"start": start, "end": start + 30 * 86_400},
           "pricing": {"type": "price_details", "price_details": {"price": price}},
           "parent": {"type": "subscription_item_details", "subscription_item_details": {
               "subscription": "sub_g", "proration": false}}})
}

/// A paid basil subscription invoice of `cus_g` (account `acct_g`) that names no payment.
fn invoice(id: &str, lines: Vec<Value>, has_more: bool, paid: i64) -> Value {
    json!({"id": id, "object": "invoice", "customer": "cus_g", "currency": "usd", "status": "paid",
           "billing_reason": "subscription_create", "amount_paid": paid, "total": paid,
           "parent": {"type": "subscription_details", "subscription_details": {
               "subscription": "sub_g", "metadata": {"creditbook_customer": "acct_g"}}},
           "lines": {"object": "list", "has_more": has_more, "data": lines}})
}

fn refund(id: &str, payment_intent: &str, amount: i64) -> Value {
    json!({"id": id, "object": "refund", "amount": amount, "currency": "usd",
           "status": "succeeded", "payment_intent": payment_intent})
}

fn invoice_payment(invoice: &str, payment_intent: &str) -> Value {
    json!({"id": format!("inpay_{invoice}"), "object": "invoice_payment", "invoice": invoice,
           "status": "paid", "amount_paid": 2000, "currency": "usd",
           "payment": {"type": "payment_intent", "payment_intent": payment_intent}})
}

async fn pending_refunds(app: &TestApp) -> String {
    // The gauges are read by the jobs (a scrape reads no table): a run, as the test clock makes.
    app.advance(app.now() + chrono::Duration::seconds(1)).await;
    let (_, metrics) = app.call(reqwest::Method::GET, "/metrics", None, None).await;
    let text = metrics.as_str().expect("the metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("creditbook_stripe_refunds_pending "))
        .expect("the pending refunds gauge")
        .to_owned()
}

async fn app_with_stand_in(engine: Engine, lists: BTreeMap<String, Vec<Value>>) -> TestApp {
    let (base, _) = stand_in::spawn(lists).await;
    spawn_app_with(engine, move |config| {
        config.stripe.api_key = Some(API_KEY.into());
        config.stripe.api_base = Some(base.clone());
    })
    .await
}

/// Lines and subscription items that carry a legacy `plan` and no `price` (older API versions
/// and emulators): a plan id is a price id.
async fn legacy_plans(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let now = app.now().timestamp();
    let legacy_line = json!({"id": "il_legacy", "object": "line_item", "amount": 2000,
        "currency": "usd", "quantity": 1, "subscription": "sub_legacy",
        "period": {"start": now, "end": now + 30 * 86_400},
        "plan": {"id": "price_pro_monthly", "object": "plan", "amount": 2000}, "price": null});
    let invoice = json!({"id": "in_legacy", "object": "invoice", "customer": "cus_legacy",
        "currency": "usd", "status": "paid", "billing_reason": "subscription_create",
        "subscription": "sub_legacy", "payment_intent": "pi_legacy",
        "lines": {"object": "list", "has_more": false, "data": [legacy_line]}});
    expect(
        &app,
        &event("e_l1", "invoice.paid", now, invoice),
        "applied",
    )
    .await;
    let c = app.customer("cus_legacy").await;
    assert_eq!(
        (c["balance"].as_str(), c["plan"].as_str()),
        (Some("2000"), Some("pro")),
        "{c}"
    );
    let subscription = json!({"id": "sub_legacy", "object": "subscription",
        "customer": "cus_legacy", "status": "active",
        "items": {"object": "list", "data": [{"id": "si_legacy", "quantity": 2,
            "plan": {"id": "price_team_monthly", "object": "plan", "amount": 3000}}]}});
    expect(
        &app,
        &event(
            "e_l2",
            "customer.subscription.updated",
            now + 1,
            subscription,
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("cus_legacy").await["plan"], "team");
    app.assert_audit_clean().await;
}

/// A refund counts tax; only the price's share of it takes credits back.
async fn refunds_leave_tax_aside(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let now = app.now().timestamp();
    // 11.00 paid, of which 1.00 tax: 1,000 credits for a price of 10.00.
    let session = json!({"id": "cs_tax", "object": "checkout.session", "mode": "payment",
        "payment_status": "paid", "customer": "cus_tax", "amount_total": 1100,
        "total_details": {"amount_tax": 100}, "currency": "usd", "payment_intent": "pi_tax",
        "metadata": {"creditbook_pack": "topup_small"}});
    expect(
        &app,
        &event("e_t1", "checkout.session.completed", now, session),
        "applied",
    )
    .await;
    let c = app.customer("cus_tax").await;
    assert_eq!(c["grants"][0]["price"], "10", "{c}");
    // Half of what was paid (5.50) is 5.00 of price: 500 credits, not 550.
    expect(
        &app,
        &event(
            "e_t2",
            "refund.created",
            now,
            refund("re_tax1", "pi_tax", 550),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("cus_tax").await["balance"], "500");
    // The rest: everything.
    expect(
        &app,
        &event(
            "e_t3",
            "refund.created",
            now,
            refund("re_tax2", "pi_tax", 550),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("cus_tax").await["balance"], "0");
    app.assert_audit_clean().await;
}

/// An invoice whose event carries one line of three (`lines.has_more`): with an API key the rest
/// is read, by webhooks and by a backfill; without one the line carried applies and the event
/// says what is missing.
async fn invoices_with_more_lines(engine: Engine) {
    let start = chrono::Utc::now().timestamp();
    let lines = vec![
        line("il_m1", "price_pro_monthly", 2000, 1, start),
        line("il_m2", "price_team_monthly", 6000, 2, start),
        line("il_m3", "price_not_sold", 100, 1, start),
    ];
    let lists = BTreeMap::from([("invoices/in_more/lines".to_owned(), lines.clone())]);
    let app = app_with_stand_in(engine, lists).await;
    let now = app.now().timestamp();
    let mut carried = invoice("in_more", vec![lines[0].clone()], true, 8000);
    carried["payments"] = json!({"object": "list", "data": [
        {"payment": {"type": "payment_intent", "payment_intent": "pi_more"}}]});
    let applied = expect(
        &app,
        &event("e_m1", "invoice.paid", now, carried.clone()),
        "applied",
    )
    .await;
    // pro 2,000 + team 2 seats x 5,000.
    assert_eq!(
        app.customer("acct_g").await["balance"],
        "12000",
        "{applied}"
    );

    // A backfill reads the rest of the lines the same way.
    let mut lists = BTreeMap::from([
        ("invoices/in_more/lines".to_owned(), lines.clone()),
        ("invoices".to_owned(), vec![carried.clone()]),
    ]);
    for empty in ["checkout/sessions", "subscriptions", "refunds", "disputes"] {
        lists.insert(empty.to_owned(), vec![]);
    }
    let backfilled = app_with_stand_in(engine, lists).await;
    let api = creditbook::stripe::api::StripeApi::from_config(&backfilled.config.stripe)
        .unwrap()
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    creditbook::stripe::sync::run(
        &backfilled.store,
        &api,
        false,
        since,
        chrono::Utc::now,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(backfilled.customer("acct_g").await["balance"], "12000");
    backfilled.assert_audit_clean().await;

    let without_key = common::spawn_app(engine).await;
    let value = expect(
        &without_key,
        &event("e_m1", "invoice.paid", now, carried),
        "pending",
    )
    .await;
    assert!(
        value["detail"].as_str().unwrap().contains("more lines"),
        "{value}"
    );
    assert_eq!(without_key.customer("acct_g").await["balance"], "2000");
    app.assert_audit_clean().await;
}

/// Basil: the invoice names no payment; its refund names only the payment intent. With an API
/// key the payment is read from `/v1/invoice_payments`; without one the refund waits (said in
/// its outcome and on `/metrics`) until `invoice_payment.paid` links them, in any order.
async fn basil_invoice_refunds(engine: Engine) {
    let start = chrono::Utc::now().timestamp();
    let paid_by = BTreeMap::from([(
        "invoice_payments".to_owned(),
        vec![
            invoice_payment("in_other", "pi_other"),
            invoice_payment("in_api", "pi_api"),
        ],
    )]);
    let app = app_with_stand_in(engine, paid_by).await;
    let now = app.now().timestamp();
    let pro = || vec![line("il_api", "price_pro_monthly", 2000, 1, start)];
    expect(
        &app,
        &event(
            "e_b1",
            "invoice.paid",
            now,
            invoice("in_api", pro(), false, 2000),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_g").await["balance"], "2000");
    expect(
        &app,
        &event(
            "e_b2",
            "refund.created",
            now,
            refund("re_api", "pi_api", 2000),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_g").await["balance"], "0");
    app.assert_audit_clean().await;

    // No API key: the refund waits for the link, which may come before or after the invoice.
    for (n, order) in [
        ["invoice", "refund", "link"],
        ["link", "refund", "invoice"],
        ["refund", "invoice", "link"],
    ]
    .iter()
    .enumerate()
    {
        let app = common::spawn_app(engine).await;
        let now = app.now().timestamp();
        let line = line(&format!("il_k{n}"), "price_pro_monthly", 2000, 1, start);
        for step in order.iter() {
            match *step {
                "invoice" => {
                    let value = expect(
                        &app,
                        &event(
                            "e_k1",
                            "invoice.paid",
                            now,
                            invoice("in_k", vec![line.clone()], false, 2000),
                        ),
                        "applied",
                    )
                    .await;
                    if *order == ["invoice", "refund", "link"] {
                        assert!(
                            value["detail"]
                                .as_str()
                                .unwrap()
                                .contains("invoice_payment.paid"),
                            "{value}"
                        );
                    }
                }
                "refund" => {
                    let (_, value) = app
                        .webhook(&event(
                            "e_k2",
                            "refund.created",
                            now,
                            refund("re_k", "pi_k", 2000),
                        ))
                        .await;
                    assert_eq!(value["outcome"], "pending", "{order:?}: {value}");
                    assert_eq!(pending_refunds(&app).await, "1");
                }
                _ => {
                    expect(
                        &app,
                        &event(
                            "e_k3",
                            "invoice_payment.paid",
                            now,
                            invoice_payment("in_k", "pi_k"),
                        ),
                        "applied",
                    )
                    .await;
                }
            }
        }
        assert_eq!(app.customer("acct_g").await["balance"], "0", "{order:?}");
        assert_eq!(pending_refunds(&app).await, "0", "{order:?}");
        app.assert_audit_clean().await;
    }
}

/// A backfill reads page by page and, stopped by a failure, resumes after the last page it
/// applied; a completed run forgets where it was.
async fn backfill_resumes(engine: Engine) {
    let created = chrono::Utc::now().timestamp() - 3_600;
    let sessions: Vec<Value> = (0..5)
        .map(|n| {
            json!({"id": format!("cs_r{n}"), "object": "checkout.session", "mode": "payment",
                   "payment_status": "paid", "status": "complete", "customer": "cus_r",
                   "amount_total": 1000, "currency": "usd", "created": created,
                   "payment_intent": format!("pi_r{n}"),
                   "metadata": {"creditbook_pack": "topup_small"}})
        })
        .collect();
    let mut lists = BTreeMap::from([("checkout/sessions".to_owned(), sessions)]);
    for empty in ["subscriptions", "invoices", "refunds", "disputes"] {
        lists.insert(empty.to_owned(), vec![]);
    }
    let (base, stand_in) = stand_in::spawn(lists).await;
    let app = spawn_app_with(engine, move |config| {
        config.stripe.api_key = Some(API_KEY.into());
        config.stripe.api_base = Some(base.clone());
    })
    .await;
    let api = creditbook::stripe::api::StripeApi::from_config(&app.config.stripe)
        .unwrap()
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    // Pages of two: the third page (after cs_r3) fails.
    *stand_in.fail_after.lock().unwrap() = Some("cs_r3".into());
    let stopped =
        creditbook::stripe::sync::run(&app.store, &api, false, since, chrono::Utc::now, |_| {})
            .await;
    assert!(stopped.is_err(), "the failing page stops the run");
    assert_eq!(app.customer("cus_r").await["balance"], "4000");
    let cursor = app
        .store
        .sync_cursor("checkout sessions")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cursor.starting_after.as_deref(), cursor.done),
        (Some("cs_r3"), false)
    );

    *stand_in.fail_after.lock().unwrap() = None;
    stand_in.requests.lock().unwrap().clear();
    let mut lines = Vec::new();
    let report =
        creditbook::stripe::sync::run(&app.store, &api, false, since, chrono::Utc::now, |l| {
            lines.push(l.to_owned())
        })
        .await
        .unwrap();
    assert_eq!(report.read, 1, "only what was left: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("resuming after cs_r3")),
        "{lines:?}"
    );
    let first = stand_in.requests.lock().unwrap()[0].clone();
    assert!(
        first.contains("starting_after") && first.contains("cs_r3"),
        "{first}"
    );
    assert_eq!(app.customer("cus_r").await["balance"], "5000");
    assert!(
        app.store
            .sync_cursor("checkout sessions")
            .await
            .unwrap()
            .is_none()
    );
    app.assert_audit_clean().await;
}

/// Plan grants that end at one boundary but arrive in separate events (a second invoice for an
/// added seat, here paid after the renewal) share the renewal's `rollover_max`, in any order.
/// Team: 5,000 credits a seat, 10,000 carried at most. The first period's grants, 5,000 and
/// 10,000, all unused: 10,000 carry over into the renewal's 5,000, the other 5,000 expire.
async fn rollover_across_events(engine: Engine) {
    let orders = [
        ["first", "renewal", "seats"],
        ["first", "seats", "renewal"],
        ["renewal", "first", "seats"],
        ["renewal", "seats", "first"],
        ["seats", "renewal", "first"],
        ["seats", "first", "renewal"],
    ];
    for order in orders {
        let app = common::spawn_app(engine).await;
        let now = app.now().timestamp();
        let start = now - 40 * 86_400;
        let boundary = start + 30 * 86_400;
        let first = invoice(
            "in_r1",
            vec![line("il_r1", "price_team_monthly", 3000, 1, start)],
            false,
            3000,
        );
        let mut seats = invoice(
            "in_r2",
            vec![line("il_r2", "price_team_monthly", 6000, 2, start)],
            false,
            6000,
        );
        seats["billing_reason"] = json!("subscription_update");
        let mut renewal = invoice(
            "in_r3",
            vec![line("il_r3", "price_team_monthly", 3000, 1, boundary)],
            false,
            3000,
        );
        renewal["billing_reason"] = json!("subscription_cycle");
        for step in order {
            let object = match step {
                "first" => first.clone(),
                "seats" => seats.clone(),
                _ => renewal.clone(),
            };
            expect(
                &app,
                &event(&format!("e_{step}"), "invoice.paid", now, object),
                "applied",
            )
            .await;
        }
        let c = app.customer("acct_g").await;
        assert_eq!(c["balance"], "15000", "{order:?}: {c}");
        // What carried over now ends with the renewal's period. (Which of the first period's
        // grants carries depends on which arrived first; the credits do not.)
        let ends: Vec<&Value> = c["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| &g["expires_at"])
            .collect();
        assert!(ends.iter().all(|e| *e == ends[0]), "{order:?}: {c}");
        app.assert_audit_clean().await;
    }
}

for_each_engine!(backfill_resumes);
for_each_engine!(rollover_across_events);
for_each_engine!(legacy_plans);
for_each_engine!(refunds_leave_tax_aside);
for_each_engine!(invoices_with_more_lines);
for_each_engine!(basil_invoice_refunds);
