//! Stripe events applied as facts in batches: random runs of checkouts (new, delivered twice,
//! naming an account, linking late, of payments refunded before they arrived) with refunds,
//! disputes, subscription states, paid and failed invoices between them reach, as one batch with
//! one commit (checkouts and paid invoices in runs), the outcomes and the books they reach
//! applied one at a time, each on its own.

mod common;

use common::{Engine, TestApp, stripe_event};
use creditbook::store::stripe::StripeWork;
use creditbook::stripe::apply::{Context, Fetched, Origin, received};
use creditbook::stripe::event::Event;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One delivery of a random history.
#[derive(Debug, Clone)]
enum Op {
    Checkout {
        session: u8,
        stripe_customer: Option<u8>,
        /// `(account, by client_reference_id rather than metadata)`.
        named: Option<(u8, bool)>,
        subscription: bool,
        paid: bool,
        known_pack: bool,
    },
    /// A refund of half a session's payment.
    Refund { session: u8 },
    /// A dispute of a session's payment, open or closed (won or lost).
    Dispute { session: u8, status: u8 },
    /// A subscription's state as Stripe reports it: active, past due or canceled.
    Subscription { sub: u8, customer: u8, status: u8 },
    /// A subscription's paid invoice for one of its periods (Pro, monthly).
    Invoice { sub: u8, customer: u8, period: u8 },
    /// A subscription's failed payment.
    InvoiceFailed { sub: u8, customer: u8 },
    /// The payment that paid one of a subscription's invoices (`invoice_payment.paid`), by a
    /// payment intent of its own or by the one the invoice names.
    InvoicePayment { sub: u8, period: u8, own: bool },
    /// A Stripe customer's metadata names an account (or an invalid one, or none).
    Customer { customer: u8, named: Option<u8> },
    /// An event of a type creditbook does not act on, or of the other mode.
    Unknown { live: bool },
    /// The delivery before this one (by how far back), again.
    Again { back: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0u8..6,
            proptest::option::weighted(0.85, 0u8..3),
            proptest::option::weighted(0.3, (0u8..3, any::<bool>())),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.9),
            proptest::bool::weighted(0.9),
        )
            .prop_map(
                |(session, stripe_customer, named, subscription, paid, known_pack)| Op::Checkout {
                    session,
                    stripe_customer,
                    named,
                    subscription,
                    paid,
                    known_pack,
                }
            ),
        1 => (0u8..6).prop_map(|session| Op::Refund { session }),
        1 => (0u8..6, 0u8..4).prop_map(|(session, status)| Op::Dispute { session, status }),
        2 => (0u8..2, 0u8..3, 0u8..3)
            .prop_map(|(sub, customer, status)| Op::Subscription { sub, customer, status }),
        2 => (0u8..2, 0u8..3, 0u8..3)
            .prop_map(|(sub, customer, period)| Op::Invoice { sub, customer, period }),
        1 => (0u8..2, 0u8..3).prop_map(|(sub, customer)| Op::InvoiceFailed { sub, customer }),
        1 => (0u8..2, 0u8..3, any::<bool>())
            .prop_map(|(sub, period, own)| Op::InvoicePayment { sub, period, own }),
        1 => (0u8..3, proptest::option::weighted(0.8, 0u8..4))
            .prop_map(|(customer, named)| Op::Customer { customer, named }),
        1 => any::<bool>().prop_map(|live| Op::Unknown { live }),
        1 => (1u8..5).prop_map(|back| Op::Again { back }),
    ]
}

fn histories(count: usize) -> Vec<Vec<Op>> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    // Fixed histories: the test asserts that they reach every kind of outcome (packs, plans,
    // refunds), which a random draw of twelve does not always do.
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 4..40);
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// The signed bodies of a history's deliveries, in order; `h` keeps histories apart.
fn bodies(h: usize, ops: &[Op], now: i64) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let id = format!("evt_{h}_{i}");
        let body = match op {
            Op::Checkout {
                session,
                stripe_customer,
                named,
                subscription,
                paid,
                known_pack,
            } => {
                let mut object = json!({
                    "id": format!("cs_{h}_{session}"), "object": "checkout.session",
                    "mode": if *subscription { "subscription" } else { "payment" },
                    "payment_status": if *paid { "paid" } else { "unpaid" },
                    "amount_total": 1000, "currency": "usd", "created": now,
                    "payment_intent": format!("pi_{h}_{session}"),
                    "metadata": {"creditbook_pack": if *known_pack { "topup_small" } else { "nonesuch" }},
                });
                if let Some(c) = stripe_customer {
                    object["customer"] = json!(format!("cus_{h}_{c}"));
                }
                match named {
                    Some((account, true)) => {
                        object["client_reference_id"] = json!(format!("acct_{h}_{account}"));
                    }
                    Some((account, false)) => {
                        object["metadata"]["creditbook_customer"] =
                            json!(format!("acct_{h}_{account}"));
                    }
                    None => {}
                }
                stripe_event(&id, "checkout.session.completed", now, object)
            }
            Op::Refund { session } => stripe_event(
                &id,
                "refund.created",
                now,
                json!({"id": format!("re_{h}_{i}"), "object": "refund", "amount": 500,
                       "currency": "usd", "status": "succeeded",
                       "payment_intent": format!("pi_{h}_{session}")}),
            ),
            Op::Dispute { session, status } => stripe_event(
                &id,
                if *status == 0 {
                    "charge.dispute.created"
                } else {
                    "charge.dispute.closed"
                },
                now + i as i64,
                json!({"id": format!("dp_{h}_{session}"), "object": "dispute", "amount": 1000,
                       "currency": "usd",
                       "status": (["needs_response", "won", "lost", "under_review"][usize::from(*status)]),
                       "payment_intent": format!("pi_{h}_{session}")}),
            ),
            Op::Subscription {
                sub,
                customer,
                status,
            } => stripe_event(
                &id,
                if *status == 2 {
                    "customer.subscription.deleted"
                } else {
                    "customer.subscription.updated"
                },
                now + i as i64,
                json!({"id": format!("sub_{h}_{sub}"), "object": "subscription",
                       "customer": format!("cus_{h}_{customer}"),
                       "status": (["active", "past_due", "canceled"][usize::from(*status)]),
                       "items": {"data": [{"quantity": 1, "price": {"id": "price_pro_monthly"},
                                           "current_period_end": now + 30 * 86_400}]}}),
            ),
            Op::Invoice {
                sub,
                customer,
                period,
            } => {
                let start = now + i64::from(*period) * 30 * 86_400;
                let line = json!({
                    "id": format!("il_{h}_{sub}_{period}"), "object": "line_item", "amount": 2000,
                    "currency": "usd", "quantity": 1,
                    "period": {"start": start, "end": start + 30 * 86_400},
                    "pricing": {"type": "price_details",
                                "price_details": {"price": "price_pro_monthly", "product": "prod_pro"}},
                    "parent": {"type": "subscription_item_details", "subscription_item_details": {
                        "subscription": format!("sub_{h}_{sub}"), "proration": false}}});
                stripe_event(
                    &id,
                    "invoice.paid",
                    now + i as i64,
                    json!({"id": format!("in_{h}_{sub}_{period}"), "object": "invoice",
                           "customer": format!("cus_{h}_{customer}"), "currency": "usd",
                           "status": "paid", "billing_reason": "subscription_cycle",
                           "amount_paid": 2000, "total": 2000,
                           "parent": {"type": "subscription_details", "subscription_details": {
                               "subscription": format!("sub_{h}_{sub}")}},
                           "payments": {"object": "list", "data": [{"payment": {
                               "type": "payment_intent",
                               "payment_intent": format!("pi_in_{h}_{sub}_{period}")}}]},
                           "lines": {"object": "list", "has_more": false, "data": [line]}}),
                )
            }
            Op::InvoiceFailed { sub, customer } => stripe_event(
                &id,
                "invoice.payment_failed",
                now + i as i64,
                json!({"id": format!("in_{h}_{sub}_failed_{i}"), "object": "invoice",
                       "customer": format!("cus_{h}_{customer}"), "status": "open",
                       "parent": {"subscription_details": {
                           "subscription": format!("sub_{h}_{sub}")}}}),
            ),
            Op::InvoicePayment { sub, period, own } => {
                let key = format!("{h}_{sub}_{period}");
                let payment = if *own {
                    format!("pi_ip_{key}")
                } else {
                    format!("pi_in_{key}")
                };
                stripe_event(
                    &id,
                    "invoice_payment.paid",
                    now + i as i64,
                    json!({"id": format!("inpay_{key}_{i}"), "object": "invoice_payment",
                           "invoice": format!("in_{key}"), "status": "paid",
                           "payment": {"type": "payment_intent", "payment_intent": payment}}),
                )
            }
            Op::Customer { customer, named } => {
                // Account 3 is no valid account id.
                let metadata = match named {
                    Some(3) => json!({"creditbook_customer": "bad\u{7}id"}),
                    Some(n) => json!({"creditbook_customer": format!("acct_{h}_{n}")}),
                    None => json!({}),
                };
                stripe_event(
                    &id,
                    "customer.updated",
                    now + i as i64,
                    json!({"id": format!("cus_{h}_{customer}"), "object": "customer",
                           "metadata": metadata}),
                )
            }
            Op::Unknown { live } => {
                let mut body: Value = serde_json::from_str(&stripe_event(
                    &id,
                    "product.created",
                    now + i as i64,
                    json!({"id": format!("prod_{h}_{i}"), "object": "product"}),
                ))
                .unwrap();
                body["livemode"] = json!(*live);
                body.to_string()
            }
            Op::Again { back } => match out.len().checked_sub(usize::from(*back)) {
                Some(j) => out[j].clone(),
                None => continue,
            },
        };
        out.push(body);
    }
    out
}

/// Every account a history can name, and what the API says of it (or that it is unknown).
async fn books(app: &TestApp, h: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for prefix in ["cus", "acct"] {
        for n in 0..3 {
            let id = format!("{prefix}_{h}_{n}");
            let (status, value) = app.get_app(&format!("/v1/customers/{id}")).await;
            let seen = if status.is_success() {
                json!({"balance": value["balance"], "available": value["available"],
                       "frozen_credits": value["frozen_credits"], "plan": value["plan"]})
            } else {
                json!(status.as_u16())
            };
            out.push((id, seen));
        }
    }
    out
}

/// An event applied on its own, never in a run with others (as every event was before runs):
/// it says it is no checkout and no paid invoice, so its batch applies it by itself.
struct Alone(Arc<dyn StripeWork>);

impl StripeWork for Alone {
    fn apply(
        self: Arc<Self>,
        tx: creditbook::store::stripe::StripeTx,
    ) -> futures_util::future::BoxFuture<
        'static,
        creditbook::error::Result<creditbook::domain::billing::Outcome>,
    > {
        self.0.clone().apply(tx)
    }

    fn shard(&self) -> &str {
        self.0.shard()
    }
}

fn outcome(answer: creditbook::error::Result<creditbook::domain::billing::Outcome>) -> String {
    match answer {
        Ok(o) => format!("{}: {}", o.outcome, o.detail),
        Err(e) => format!("error: {e}"),
    }
}

fn ctx(app: &TestApp) -> Context<'_> {
    Context {
        store: &app.store,
        now: app.now(),
        livemode: false,
    }
}

async fn batches_reach_what_one_at_a_time_reaches(engine: Engine) {
    let batched = common::spawn_app(engine).await;
    let single = common::spawn_app(engine).await;
    let now = batched.now().timestamp();
    let mut granted = 0;
    let (mut planned, mut settled, mut paid_by) = (0, 0, 0);
    for (h, ops) in histories(32).iter().enumerate() {
        let bodies = bodies(h, ops, now);
        let mut works: Vec<Arc<dyn StripeWork>> = Vec::new();
        let mut one_at_a_time = Vec::new();
        for body in &bodies {
            let event: Event = serde_json::from_str(body).unwrap();
            works.push(
                received(
                    &ctx(&batched),
                    &event,
                    body,
                    Origin::Webhook,
                    Fetched::default(),
                )
                .unwrap(),
            );
            let alone = received(
                &ctx(&single),
                &event,
                body,
                Origin::Webhook,
                Fetched::default(),
            )
            .unwrap();
            let answer = single
                .store
                .stripe_transaction(Arc::new(Alone(alone)))
                .await;
            one_at_a_time.push(outcome(answer));
        }
        let together: Vec<String> = batched
            .store
            .stripe_batch(&works)
            .await
            .into_iter()
            .map(outcome)
            .collect();
        for (i, (a, b)) in together.iter().zip(&one_at_a_time).enumerate() {
            assert_eq!(a, b, "history {h}, delivery {i}: {ops:?}");
        }
        granted += together
            .iter()
            .filter(|o| o.contains("credits of pack"))
            .count();
        planned += together
            .iter()
            .filter(|o| o.contains("credits of plan"))
            .count();
        settled += together
            .iter()
            .filter(|o| o.contains("credits taken back"))
            .count();
        paid_by += together
            .iter()
            .filter(|o| o.contains(" paid by ") && o.contains("nothing taken back"))
            .count();
        assert_eq!(books(&batched, h).await, books(&single, h).await, "{ops:?}");
    }
    assert!(granted > 12, "the histories grant packs: {granted}");
    let stats = batched.store.runner_stats();
    assert_eq!(stats.stripe_runs_split.load(Relaxed), 0, "no run failed");
    assert!(planned > 8, "the histories grant plans: {planned}");
    assert!(settled > 4, "the histories take back: {settled}");
    assert!(
        paid_by > 2,
        "invoice payments name what was granted: {paid_by}"
    );
    assert!(stats.stripe_events_together.load(Relaxed) > 30);
    batched.assert_audit_clean().await;
    single.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_reach_what_one_at_a_time_reaches_on_sqlite() {
    batches_reach_what_one_at_a_time_reaches(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_reach_what_one_at_a_time_reaches_on_postgres() {
    batches_reach_what_one_at_a_time_reaches(Engine::Postgres).await;
}

/// The outcomes of `bodies` applied as one batch, in order.
async fn one_batch(app: &TestApp, bodies: &[String]) -> Vec<String> {
    let works: Vec<Arc<dyn StripeWork>> = bodies
        .iter()
        .map(|body| {
            let event: Event = serde_json::from_str(body).unwrap();
            received(&ctx(app), &event, body, Origin::Webhook, Fetched::default()).unwrap()
        })
        .collect();
    app.store
        .stripe_batch(&works)
        .await
        .into_iter()
        .map(outcome)
        .collect()
}

/// Stripe tells of a refund of `amount` (minor units) of `payment_intent` before its purchase.
async fn refunded_before(app: &TestApp, amount: i64, payment_intent: &str) {
    let refund = stripe_event(
        "r0",
        "refund.created",
        app.now().timestamp(),
        json!({"id": "re_0", "object": "refund", "amount": amount, "currency": "usd",
               "status": "succeeded", "payment_intent": payment_intent}),
    );
    common::expect_outcome(app, &refund, "pending").await;
}

/// A batch as the SQLite worker takes it from 16 senders: one session delivered twice and by
/// two events grants once, a late link moves what arrived before it, a payment refunded before
/// its checkout is settled as it is granted.
async fn a_batch_of_checkouts(app: TestApp) {
    let now = app.now().timestamp();
    let checkout = |id: &str, session: &str, customer: &str, named: Option<&str>| {
        let mut object = json!({"id": session, "object": "checkout.session", "mode": "payment",
            "payment_status": "paid", "customer": customer, "amount_total": 1000,
            "currency": "usd", "payment_intent": format!("pi_{session}"),
            "metadata": {"creditbook_pack": "topup_small"}});
        if let Some(account) = named {
            object["client_reference_id"] = json!(account);
        }
        stripe_event(id, "checkout.session.completed", now, object)
    };
    // Refunded before its purchase arrives.
    refunded_before(&app, 1000, "pi_cs_r").await;
    let bodies = [
        checkout("e1", "cs_1", "cus_a", None),
        checkout("e1", "cs_1", "cus_a", None),
        checkout("e2", "cs_1", "cus_a", None),
        checkout("e3", "cs_2", "cus_b", None),
        checkout("e4", "cs_3", "cus_b", Some("acme")),
        checkout("e5", "cs_4", "cus_b", Some("globex")),
        checkout("e6", "cs_r", "cus_c", None),
        checkout("e7", "cs_5", "cus_c", None),
    ];
    let answers = one_batch(&app, &bodies).await;
    assert_eq!(
        answers,
        [
            "applied: 1000 credits of pack topup_small to cus_a (checkout:cs_1)",
            "duplicate: event already received",
            "applied: checkout:cs_1 applied before",
            "applied: 1000 credits of pack topup_small to cus_b (checkout:cs_2)",
            "applied: 1000 credits of pack topup_small to acme (checkout:cs_3)",
            "applied: 1000 credits of pack topup_small to acme (checkout:cs_4)",
            "applied: 1000 credits of pack topup_small to cus_c (checkout:cs_r)",
            "applied: 1000 credits of pack topup_small to cus_c (checkout:cs_5)",
        ]
    );
    assert_eq!(app.customer("cus_a").await["available"], "1000");
    assert_eq!(
        app.customer("acme").await["available"],
        "3000",
        "cs_2 moved"
    );
    assert_eq!(app.customer("cus_b").await["available"], "0");
    assert_eq!(
        app.customer("cus_c").await["available"],
        "1000",
        "cs_r refunded"
    );
    let (status, _) = app.get_app("/v1/customers/globex").await;
    assert_eq!(status.as_u16(), 404, "the first link wins");
    let stats = app.store.runner_stats();
    assert_eq!(stats.stripe_runs_split.load(Relaxed), 0, "no run failed");
    // Six decided together; the late link (e4) and the refunded payment (e6) each alone.
    assert_eq!(stats.stripe_events_together.load(Relaxed), 6);
    // What the batch recorded reads as events received one at a time do.
    let events = app.store.stripe_events(20).await.unwrap();
    assert_eq!(events.len(), 8, "seven new events and the refund");
    assert!(events.iter().all(|e| e.outcome != "received"));
    app.assert_audit_clean().await;
}

on_both_engines!(a_batch_of_checkouts);

/// A batch of paid invoices and a subscription event as the worker takes it: they are decided
/// together, a second invoice of a customer on what the first decided, the subscription's end on
/// what its invoice recorded; a duplicate answers as one; one whose payment was
/// refunded before it arrived is applied on its own; a link the invoice names is recorded.
async fn a_batch_of_paid_invoices_and_subscriptions(app: TestApp) {
    let now = app.now().timestamp();
    let invoice = |id: &str, customer: &str, period: i64, named: Option<&str>| {
        let start = now + period * 30 * 86_400;
        let key = format!("{customer}_{period}");
        let line = json!({
            "id": format!("il_{key}"), "object": "line_item", "amount": 2000, "currency": "usd",
            "quantity": 1, "period": {"start": start, "end": start + 30 * 86_400},
            "pricing": {"type": "price_details",
                        "price_details": {"price": "price_pro_monthly", "product": "prod_pro"}},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": format!("sub_{customer}"), "proration": false}}});
        let reason = if period == 0 {
            "subscription_create"
        } else {
            "subscription_cycle"
        };
        let mut object = json!({
            "id": format!("in_{key}"), "object": "invoice", "customer": customer,
            "currency": "usd", "status": "paid", "billing_reason": reason,
            "amount_paid": 2000, "total": 2000,
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": format!("sub_{customer}")}},
            "payments": {"object": "list", "data": [{"payment": {
                "type": "payment_intent", "payment_intent": format!("pi_{key}")}}]},
            "lines": {"object": "list", "has_more": false, "data": [line]}});
        if let Some(account) = named {
            object["metadata"] = json!({"creditbook_customer": account});
        }
        stripe_event(id, "invoice.paid", now, object)
    };
    // Refunded before its invoice arrives.
    refunded_before(&app, 2000, "pi_cus_c_0").await;
    let canceled = stripe_event(
        "s1",
        "customer.subscription.deleted",
        now + 5,
        json!({"id": "sub_cus_b", "object": "subscription", "customer": "cus_b",
               "status": "canceled", "items": {"object": "list", "data": [
                   {"id": "si_b", "object": "subscription_item", "quantity": 1,
                    "price": {"id": "price_pro_monthly", "object": "price"}}]}}),
    );
    let bodies = [
        invoice("i1", "cus_a", 0, None),
        invoice("i1", "cus_a", 0, None),
        invoice("i2", "cus_b", 0, None),
        canceled,
        invoice("i3", "cus_a", 1, None),
        invoice("i4", "cus_c", 0, None),
        invoice("i5", "cus_d", 0, Some("acme")),
        invoice("i6", "cus_e", 0, None),
    ];
    let answers = one_batch(&app, &bodies).await;
    let granted = |key: &str| {
        format!(
            "applied: invoice_line:il_{key}: 2000 credits of plan pro (0 rolled over into a \
             later period)"
        )
    };
    assert_eq!(
        answers,
        [
            granted("cus_a_0"),
            "duplicate: event already received".into(),
            granted("cus_b_0"),
            "applied: cus_b: canceled, plan pro".into(),
            granted("cus_a_1"),
            granted("cus_c_0"),
            granted("cus_d_0"),
            granted("cus_e_0"),
        ]
    );
    assert_eq!(app.customer("cus_a").await["available"], "4000");
    assert_eq!(
        app.customer("cus_b").await["plan"],
        Value::Null,
        "its subscription was canceled after its invoice"
    );
    assert_eq!(
        app.customer("cus_c").await["available"],
        "0",
        "its payment was refunded"
    );
    assert_eq!(app.customer("acme").await["available"], "2000");
    let (status, _) = app.get_app("/v1/customers/cus_d").await;
    assert_eq!(status.as_u16(), 404, "linked to acme");
    let stats = app.store.runner_stats();
    assert_eq!(stats.stripe_runs_split.load(Relaxed), 0, "no run failed");
    // Seven decided together (cus_a's second invoice on what its first decided, cus_b's
    // subscription on what its invoice recorded); cus_c's, whose payment was refunded before,
    // alone.
    assert_eq!(stats.stripe_events_together.load(Relaxed), 7);
    let events = app.store.stripe_events(20).await.unwrap();
    assert_eq!(events.len(), 8, "seven new events and the refund");
    assert!(events.iter().all(|e| e.outcome != "received"));
    app.assert_audit_clean().await;
}

on_both_engines!(a_batch_of_paid_invoices_and_subscriptions);
