//! A whole customer life through Stripe webhooks — subscribe, use, renew with rollover, top up,
//! upgrade with seats, refund the top-up, dispute, cancel — delivered in order, shuffled, every
//! event twice, and all at once, ends in the same state; and a backfill from a Stripe stand-in reaches the
//! state webhooks reached, and changes nothing after them.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::stand_in::StandIn;
use common::{Engine, TestApp, spawn_app_at, spawn_app_with};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const ACCOUNT: &str = "acct_life";
const STRIPE_CUSTOMER: &str = "cus_life";
const SUBSCRIPTION: &str = "sub_life";
/// The team plan's price per seat and period, in cents.
const SEAT_CENTS: i64 = 3000;

/// The Stripe objects of the life, each with the time of its event.
struct Life {
    t0: DateTime<Utc>,
}

impl Life {
    fn at(&self, days: i64, hours: i64) -> i64 {
        (self.t0 + Duration::days(days) + Duration::hours(hours)).timestamp()
    }

    fn p1(&self) -> (i64, i64) {
        (self.at(0, 0), self.at(30, 0))
    }

    fn p2(&self) -> (i64, i64) {
        (self.at(30, 0), self.at(60, 0))
    }

    fn subscription(&self, status: &str, seats: i64) -> Value {
        json!({
            "id": SUBSCRIPTION, "object": "subscription", "customer": STRIPE_CUSTOMER,
            "status": status, "cancel_at_period_end": false,
            "metadata": {"creditbook_customer": ACCOUNT},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": "si_life", "object": "subscription_item", "quantity": seats,
                "current_period_start": self.p2().0, "current_period_end": self.p2().1,
                "price": {"id": "price_team_monthly", "object": "price", "unit_amount": SEAT_CENTS,
                          "unit_amount_decimal": SEAT_CENTS.to_string()}
            }]}
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn line(
        &self,
        id: &str,
        amount: i64,
        seats: i64,
        period: (i64, i64),
        proration: bool,
        credited: Option<&str>,
    ) -> Value {
        json!({
            "id": id, "object": "line_item", "amount": amount, "currency": "usd",
            "quantity": seats, "period": {"start": period.0, "end": period.1},
            "discount_amounts": [], "taxes": [],
            "pricing": {"type": "price_details", "unit_amount_decimal": SEAT_CENTS.to_string(),
                        "price_details": {"price": "price_team_monthly", "product": "prod_team"}},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": SUBSCRIPTION, "subscription_item": "si_life", "proration": proration,
                "proration_details": {"credited_items": credited.map(|c| json!({"invoice": "in_renewal", "invoice_line_items": [c]}))}
            }}
        })
    }

    fn invoice(&self, id: &str, reason: &str, payment_intent: &str, lines: Vec<Value>) -> Value {
        json!({
            "id": id, "object": "invoice", "customer": STRIPE_CUSTOMER, "currency": "usd",
            "status": "paid", "billing_reason": reason,
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": SUBSCRIPTION, "metadata": {"creditbook_customer": ACCOUNT}}},
            "payments": {"object": "list", "data": [{"payment": {"type": "payment_intent", "payment_intent": payment_intent}}]},
            "lines": {"object": "list", "has_more": false, "data": lines}
        })
    }

    fn first_invoice(&self) -> Value {
        let line = self.line("il_first", 3 * SEAT_CENTS, 3, self.p1(), false, None);
        self.invoice("in_first", "subscription_create", "pi_first", vec![line])
    }

    fn renewal_invoice(&self) -> Value {
        let line = self.line("il_renewal", 3 * SEAT_CENTS, 3, self.p2(), false, None);
        self.invoice("in_renewal", "subscription_cycle", "pi_renewal", vec![line])
    }

    /// From 3 to 5 seats half-way through the second period: 3 seats' half given back, 5 seats'
    /// half charged.
    fn upgrade_invoice(&self) -> Value {
        let half = (self.at(45, 0), self.p2().1);
        let credit = self.line(
            "il_unused",
            -3 * SEAT_CENTS / 2,
            3,
            half,
            true,
            Some("il_renewal"),
        );
        let charge = self.line("il_upgrade", 5 * SEAT_CENTS / 2, 5, half, true, None);
        self.invoice(
            "in_upgrade",
            "subscription_update",
            "pi_upgrade",
            vec![credit, charge],
        )
    }

    fn subscription_checkout(&self) -> Value {
        json!({
            "id": "cs_subscribe", "object": "checkout.session", "mode": "subscription",
            "payment_status": "paid", "status": "complete", "customer": STRIPE_CUSTOMER,
            "client_reference_id": ACCOUNT, "subscription": SUBSCRIPTION, "currency": "usd",
            "amount_total": 3 * SEAT_CENTS, "created": self.at(0, 0), "metadata": {}
        })
    }

    /// A top-up without pack metadata: the pack is found from its line items, read from the API.
    fn topup_checkout(&self) -> Value {
        json!({
            "id": "cs_topup", "object": "checkout.session", "mode": "payment",
            "payment_status": "paid", "status": "complete", "customer": STRIPE_CUSTOMER,
            "client_reference_id": ACCOUNT, "payment_intent": "pi_topup", "currency": "usd",
            "amount_total": 1080, "total_details": {"amount_tax": 80, "amount_discount": 0},
            "created": self.at(31, 0), "metadata": {}
        })
    }

    fn refund(&self) -> Value {
        json!({"id": "re_topup", "object": "refund", "amount": 400, "currency": "usd",
               "status": "succeeded", "payment_intent": "pi_topup", "charge": "ch_topup"})
    }

    fn dispute(&self, status: &str) -> Value {
        json!({"id": "dp_renewal", "object": "dispute", "amount": 9000, "currency": "usd",
               "status": status, "payment_intent": "pi_renewal", "charge": "ch_renewal"})
    }

    fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
        json!({"id": id, "object": "event", "api_version": "2025-08-27.basil", "created": created, "livemode": false,
               "type": kind, "data": {"object": object}, "livemode": false})
        .to_string()
    }

    /// Before the customer uses anything: the subscription starts.
    fn window_a(&self) -> Vec<String> {
        vec![
            Self::event(
                "evt_a1",
                "checkout.session.completed",
                self.at(0, 0),
                self.subscription_checkout(),
            ),
            Self::event("evt_a2", "customer.subscription.created", self.at(0, 0), {
                let mut s = self.subscription("active", 3);
                s["items"]["data"][0]["current_period_start"] = json!(self.p1().0);
                s["items"]["data"][0]["current_period_end"] = json!(self.p1().1);
                s
            }),
            Self::event(
                "evt_a3",
                "invoice.paid",
                self.at(0, 1),
                self.first_invoice(),
            ),
        ]
    }

    /// The rest of the life, after the customer used 3000 credits in the first period.
    fn window_b(&self) -> Vec<String> {
        vec![
            Self::event(
                "evt_b1",
                "customer.subscription.updated",
                self.at(30, 0),
                self.subscription("active", 3),
            ),
            Self::event(
                "evt_b2",
                "invoice.paid",
                self.at(30, 1),
                self.renewal_invoice(),
            ),
            Self::event(
                "evt_b3",
                "checkout.session.completed",
                self.at(31, 0),
                self.topup_checkout(),
            ),
            Self::event(
                "evt_b4",
                "customer.subscription.updated",
                self.at(45, 0),
                self.subscription("active", 5),
            ),
            Self::event(
                "evt_b5",
                "invoice.paid",
                self.at(45, 0),
                self.upgrade_invoice(),
            ),
            Self::event("evt_b6", "refund.created", self.at(46, 0), self.refund()),
            Self::event(
                "evt_b7",
                "charge.dispute.created",
                self.at(47, 0),
                self.dispute("needs_response"),
            ),
            Self::event(
                "evt_b8",
                "charge.dispute.closed",
                self.at(48, 0),
                self.dispute("won"),
            ),
            Self::event(
                "evt_b9",
                "customer.subscription.deleted",
                self.at(49, 0),
                self.subscription("canceled", 5),
            ),
        ]
    }
}

/// A stand-in for the Stripe API: list endpoints with cursor pagination (two objects a page, so
/// every list takes several pages), and a checkout session's line items.
async fn spawn_stand_in(life: &Life) -> (String, StandIn) {
    let mut lists = BTreeMap::new();
    // Newest first, as Stripe lists them.
    lists.insert(
        "checkout/sessions".into(),
        vec![life.topup_checkout(), life.subscription_checkout()],
    );
    lists.insert(
        "subscriptions".into(),
        vec![life.subscription("canceled", 5)],
    );
    lists.insert(
        "invoices".into(),
        vec![
            life.upgrade_invoice(),
            life.renewal_invoice(),
            life.first_invoice(),
        ],
    );
    lists.insert("refunds".into(), vec![life.refund()]);
    lists.insert("disputes".into(), vec![life.dispute("won")]);
    lists.insert(
        "checkout/sessions/cs_topup/line_items".into(),
        vec![json!({"id": "li_1", "object": "item", "quantity": 1,
                    "price": {"id": "price_topup_small", "object": "price"}})],
    );
    common::stand_in::spawn(lists).await
}

/// What the customer's state is, without ids or times of recording.
async fn state(app: &TestApp) -> Value {
    let c = app.customer(ACCOUNT).await;
    let mut grants: Vec<Value> = c["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            json!({"kind": g["kind"], "plan": g["plan"], "pack": g["pack"], "credits": g["credits"],
                   "remaining": g["remaining"], "expires_at": g["expires_at"], "price": g["price"],
                   "currency": g["currency"], "source": g["source"]})
        })
        .collect();
    grants.sort_by_key(|g| g["source"].as_str().unwrap().to_owned());
    json!({"balance": c["balance"], "available": c["available"], "plan": c["plan"],
           "frozen": c["frozen"], "renews_at": c["renews_at"], "grants": grants})
}

async fn deliver(app: &TestApp, events: &[String]) {
    for body in events {
        let (status, outcome) = app.webhook(body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {outcome}");
    }
}

/// Every event at once (and each twice), as Stripe's retries after an outage deliver them.
async fn deliver_at_once(app: &TestApp, events: &[String]) {
    let sent = events
        .iter()
        .flat_map(|body| [body, body])
        .map(|body| async move {
            let (status, outcome) = app.webhook(body).await;
            assert_eq!(status, StatusCode::OK, "{body}: {outcome}");
        });
    futures::future::join_all(sent).await;
}

async fn live(engine: Engine, t0: DateTime<Utc>, order: &str, seed: u64) -> Value {
    let life = Life { t0 };
    let (base, _) = spawn_stand_in(&life).await;
    let app = spawn_app_at(engine, t0 + Duration::hours(2), |config| {
        config.stripe.api_key = Some("sk_test_standin".into());
        config.stripe.api_base = Some(base.clone());
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let arrange = |mut events: Vec<String>, rng: &mut rand::rngs::StdRng| {
        match order {
            "shuffled" => events.shuffle(rng),
            "in_order" | "at_once" => {}
            "twice" => {
                let mut doubled: Vec<String> =
                    events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
                doubled.shuffle(rng);
                events = doubled;
            }
            other => panic!("{other}"),
        }
        events
    };
    let send = |events: Vec<String>| {
        let app = &app;
        async move {
            if order == "at_once" {
                deliver_at_once(app, &events).await;
            } else {
                deliver(app, &events).await;
            }
        }
    };
    send(arrange(life.window_a(), &mut rng)).await;
    let (status, used) = app
        .usage(ACCOUNT, "chat.request", json!(3000), "use-3000")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    // Into the second period, past the upgrade, refund, dispute and cancellation.
    app.advance(t0 + Duration::days(50)).await;
    send(arrange(life.window_b(), &mut rng)).await;
    app.assert_audit_clean().await;
    state(&app).await
}

/// First period: 15000 credits (3 seats), 3000 used, so 12000 unused at its end; 10000 roll over
/// (the team plan's cap) and 2000 expire. Second period: 15000, of which the upgrade gives back
/// half (7500 credits for 45.00 of 90.00); the upgrade's half period of 5 seats gives 12500.
/// Top-up: 1000 credits for 10.00 net of tax (10.80 paid); a refund of 4.00 is 3.70 of price (the
/// rest its tax share) and takes back 370. The dispute was
/// won and the subscription canceled.
fn expected_balance() -> &'static str {
    "30630"
}

async fn whole_life(engine: Engine) {
    let t0 = Utc::now() - Duration::days(400);
    let reference = live(engine, t0, "in_order", 0).await;
    assert_eq!(reference["balance"], expected_balance(), "{reference:#}");
    assert_eq!(reference["plan"], Value::Null, "canceled: {reference:#}");
    assert_eq!(reference["frozen"], false);
    for (order, seed) in [
        ("shuffled", 1),
        ("shuffled", 2),
        ("shuffled", 3),
        ("twice", 4),
        ("twice", 5),
        ("at_once", 6),
        ("at_once", 7),
    ] {
        let other = live(engine, t0, order, seed).await;
        assert_eq!(other, reference, "{order} (seed {seed}) differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_life_sqlite() {
    whole_life(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_life_postgres() {
    whole_life(Engine::Postgres).await;
}

fn sync_cli(app: &TestApp, base: &str, since: DateTime<Utc>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_example_config(dir.path(), &app.database_url);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "webhook_secrets = []",
        &format!("webhook_secrets = []\napi_key = \"sk_test_standin\"\napi_base = \"{base}\""),
    );
    std::fs::write(&config, text).unwrap();
    let since = since.format("%Y-%m-%d").to_string();
    let output = common::run_cli(&config, &["stripe", "sync", "--since", &since]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "sync failed: {stderr}");
    assert!(
        stderr.contains("invoices: 3 read"),
        "progress shown: {stderr}"
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn backfill(engine: Engine) {
    // The life, over by now: no usage, every period already reached.
    let life = Life {
        t0: Utc::now() - Duration::days(50),
    };
    let (base, stand_in) = spawn_stand_in(&life).await;
    let configure = |config: &mut creditbook::config::Config| {
        config.stripe.api_key = Some("sk_test_standin".into());
        config.stripe.api_base = Some(base.clone());
    };
    let by_webhooks = spawn_app_with(engine, configure).await;
    let mut events = life.window_a();
    events.extend(life.window_b());
    deliver(&by_webhooks, &events).await;
    let webhook_state = state(&by_webhooks).await;
    // 15000 unused at the first period's end: 10000 roll over, then as in the life with usage.
    assert_eq!(
        webhook_state["balance"],
        expected_balance(),
        "{webhook_state:#}"
    );

    let report = sync_cli(&by_webhooks, &base, life.t0 - Duration::days(1));
    assert!(report.contains("synced 8 objects"), "{report}");
    assert_eq!(
        state(&by_webhooks).await,
        webhook_state,
        "a sync after webhooks changes nothing"
    );

    let by_sync = spawn_app_with(engine, configure).await;
    sync_cli(&by_sync, &base, life.t0 - Duration::days(1));
    assert_eq!(
        state(&by_sync).await,
        webhook_state,
        "a sync instead of webhooks"
    );
    by_sync.assert_audit_clean().await;

    let requests = stand_in.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("invoices?") && r.contains("starting_after")),
        "lists were read page by page: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_sqlite() {
    backfill(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_postgres() {
    backfill(Engine::Postgres).await;
}
