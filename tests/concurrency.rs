//! No overspend, whatever the concurrency: in one server, and in two server processes sharing one
//! database (which no in-process lock could protect).

mod common;

use common::process::{
    Prepared, audited, credits_used, customer_on, grant_each, prepare, start_server, terminate,
};
use common::{Engine, TestApp};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ATTEMPTS: usize = 50;
const CREDITS: &str = "20";
/// Two processes on one database: 200 authorizations race for 50 credits.
const SHARED_ATTEMPTS: usize = 200;
const SHARED_CREDITS: &str = "50";

/// Counts (approved, refused) among the answers; anything else fails the test.
fn tally(answers: &[(StatusCode, Value)]) -> (usize, usize) {
    let mut approved = 0;
    let mut refused = 0;
    for (status, body) in answers {
        match *status {
            StatusCode::CREATED => approved += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(body["type"], "insufficient_credits");
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    (approved, refused)
}

async fn fifty_authorizations_against_twenty_credits(app: TestApp) {
    let c = "race";
    app.promo(c, CREDITS).await;
    let answers = join_all((0..ATTEMPTS).map(|_| app.authorize(c, "chat.request", json!(1)))).await;
    assert_eq!(tally(&answers), (20, 30));
    assert_eq!(
        app.balances(c).await,
        ("20".into(), "20".into(), "0".into())
    );
    let app = &app;
    let captures = join_all(
        answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .map(|(_, hold)| {
                let id = hold["id"].as_str().unwrap().to_owned();
                async move { app.capture(&id, json!({"quantity": 1})).await }
            }),
    )
    .await;
    assert!(captures.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));
    app.assert_audit_clean().await;
}
on_both_engines!(fifty_authorizations_against_twenty_credits);

async fn fifty_usages_against_twenty_credits(app: TestApp) {
    let c = "race-usage";
    app.promo(c, "12").await;
    app.grant(c, json!({"kind": "adjustment", "credits": "8"}))
        .await;
    let answers = join_all((0..ATTEMPTS).map(|i| {
        app.post_app(
            "/v1/usage",
            json!({"customer": c, "action": "chat.request", "quantity": 1, "idempotency_key": format!("u{i}")}),
        )
    }))
    .await;
    assert_eq!(tally(&answers), (20, 30));
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));
    app.assert_audit_clean().await;
}
on_both_engines!(fifty_usages_against_twenty_credits);

/// Take-backs race with usage for the same 20 credits: every credit goes to exactly one of them,
/// and none is taken twice or below zero available.
async fn take_backs_and_usage_race_for_twenty_credits(app: TestApp) {
    let c = "race-adjust";
    app.promo(c, CREDITS).await;
    let app = &app;
    let answers = join_all((0..ATTEMPTS).map(|i| async move {
        if i % 2 == 0 {
            app.post_admin(
                &format!("/v1/customers/{c}/adjustments"),
                json!({"credits": "-1", "reason": "race", "idempotency_key": format!("a{i}")}),
            )
            .await
        } else {
            app.post_app(
                "/v1/usage",
                json!({"customer": c, "action": "chat.request", "quantity": 1, "idempotency_key": format!("u{i}")}),
            )
            .await
        }
    }))
    .await;
    let mut done = 0;
    for (status, body) in &answers {
        match (status.as_u16(), body["type"].as_str()) {
            (201, _) => done += 1,
            (402, Some("insufficient_credits")) | (409, Some("adjustment_exceeds_available")) => {}
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(done, 20);
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));
    app.assert_audit_clean().await;
}
on_both_engines!(take_backs_and_usage_race_for_twenty_credits);

/// Commands on two books (credits moved between two customers, both ways at once) race with
/// authorizations on both: every batch locks its customers in id order, so none waits on another
/// in a cycle; no credit is made or lost, and neither customer spends more than it holds.
async fn moves_between_two_customers_race_with_spends(app: TestApp) {
    use creditbook::domain::command::{Answer, Command};
    use creditbook::domain::customer::CustomerId;
    use creditbook::store::Envelope;
    let (a, b) = ("move-a", "move-b");
    let grant_a = app.promo(a, CREDITS).await;
    let grant_b = app.promo(b, CREDITS).await;
    let app = &app;
    let moving = |from: &str, to: &str, grant: &str, n: usize| {
        let envelope = Envelope::new(
            CustomerId::parse(from).unwrap(),
            Command::MoveGrants {
                to: CustomerId::parse(to).unwrap(),
                moves: vec![(grant.to_owned(), format!("{grant}-moved-{n}"))],
            },
            app.now(),
        );
        async move { app.store.execute(envelope).await }
    };
    let moves = join_all((0..20).map(|n| {
        if n % 2 == 0 {
            moving(a, b, &grant_a, n)
        } else {
            moving(b, a, &grant_b, n)
        }
    }));
    let spends = join_all(
        (0..ATTEMPTS)
            .map(|i| app.authorize(if i % 2 == 0 { a } else { b }, "chat.request", json!(1))),
    );
    let (moved, answers) = futures::join!(moves, spends);
    let mut credits_moved = 0;
    for answer in moved {
        match answer.expect("a move is never refused or failed").value {
            Answer::Transferred(moved) => credits_moved += moved.len(),
            other => panic!("a move answered {other:?}"),
        }
    }
    assert!(credits_moved > 0, "the first moves find free credits");
    let (approved, _) = tally(&answers);
    let parse = |v: String| v.parse::<rust_decimal::Decimal>().unwrap();
    let (mut balance, mut held) = (rust_decimal::Decimal::ZERO, rust_decimal::Decimal::ZERO);
    for customer in [a, b] {
        let (bal, h, available) = app.balances(customer).await;
        assert!(!parse(available).is_sign_negative(), "{customer} overspent");
        balance += parse(bal);
        held += parse(h);
    }
    // Nothing is spent yet (holds only): the 40 credits are all there, and every hold approved
    // holds one of them.
    assert_eq!(balance, rust_decimal::Decimal::from(40));
    assert_eq!(held, rust_decimal::Decimal::from(approved));
    assert!(approved <= 40);
    app.assert_audit_clean().await;
}
on_both_engines!(moves_between_two_customers_race_with_spends);

/// Stripe events and gate commands race on the same accounts. An account's events go to the
/// worker of its Stripe customer and its commands to the worker of its own id, so on PostgreSQL
/// a batch of events (a refund locks its account when it is applied, in the order the batch's
/// events come) and a batch of commands (its accounts in id order) may wait on each other in a
/// cycle: the database breaks it, the loser runs again, and every event and every usage is
/// answered as if it were alone. Checkouts race with usages, then refunds of every checkout do.
async fn stripe_events_and_spends_race_on_shared_accounts(app: TestApp) {
    const ACCOUNTS: usize = 6;
    const CHECKOUTS: usize = 5;
    const USAGES: usize = 30;
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("shared-{i}")).collect();
    for account in &accounts {
        app.promo(account, CREDITS).await;
    }
    let now = app.now().timestamp();
    // In an order that crosses accounts: account 5's, then 4's, then 3's...
    let account_of = |n: usize| &accounts[(ACCOUNTS - 1 + n * 5) % ACCOUNTS];
    let event = |n: usize, kind: &str, object: Value| {
        json!({"id": format!("evt_race_{kind}_{n}"), "object": "event",
               "api_version": "2025-08-27.basil", "created": now, "livemode": false,
               "type": kind, "data": {"object": object}})
        .to_string()
    };
    let checkouts: Vec<String> = (0..ACCOUNTS * CHECKOUTS)
        .map(|n| {
            let account = account_of(n);
            event(
                n,
                "checkout.session.completed",
                json!({"id": format!("cs_race_{n}"),
                "object": "checkout.session", "mode": "payment", "payment_status": "paid",
                "customer": format!("cus_{account}"), "client_reference_id": account,
                "amount_total": 1000, "currency": "usd", "payment_intent": format!("pi_race_{n}"),
                "metadata": {"creditbook_pack": "topup_small"}}),
            )
        })
        .collect();
    // A quarter of each checkout refunded: 250 of its 1,000 credits taken back.
    let refunds: Vec<String> = (0..ACCOUNTS * CHECKOUTS)
        .map(|n| {
            event(
                n,
                "refund.created",
                json!({"id": format!("re_race_{n}"), "object": "refund",
                "amount": 250, "currency": "usd", "status": "succeeded",
                "payment_intent": format!("pi_race_{n}")}),
            )
        })
        .collect();
    let app = &app;
    let accounts = &accounts;
    let usages = |round: usize| {
        join_all((0..ACCOUNTS * USAGES).map(move |n| {
            let account = &accounts[n % ACCOUNTS];
            app.post_app(
                "/v1/usage",
                json!({"customer": account, "action": "chat.request", "quantity": 1,
                       "idempotency_key": format!("race-u{round}-{n}")}),
            )
        }))
    };
    let mut used = [0_i64; ACCOUNTS];
    for (round, bodies) in [&checkouts, &refunds].into_iter().enumerate() {
        let events = join_all(bodies.iter().map(|body| app.webhook(body)));
        let (events, spent) = futures::join!(events, usages(round));
        for (status, body) in &events {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(body["outcome"], "applied", "{body}");
        }
        for (n, (status, body)) in spent.iter().enumerate() {
            match status.as_u16() {
                201 => used[n % ACCOUNTS] += 1,
                402 => assert_eq!(body["type"], "insufficient_credits"),
                _ => panic!("unexpected answer {status}: {body}"),
            }
        }
    }
    for (i, account) in accounts.iter().enumerate() {
        let expected = 20 + (1000 - 250) * CHECKOUTS as i64 - used[i];
        assert_eq!(
            app.balances(account).await.0,
            expected.to_string(),
            "{account}"
        );
    }
    app.assert_audit_clean().await;
}
on_both_engines!(stripe_events_and_spends_race_on_shared_accounts);

/// A `creditbook serve` process; killed on drop.
async fn two_processes_never_overspend(engine: Engine) {
    let Prepared {
        _dir,
        database_url,
        config,
        admin,
        app,
    } = prepare(engine).await;

    let servers = [start_server(&config).await, start_server(&config).await];
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/customers/shared/grants", servers[0].address))
        .bearer_auth(&admin)
        .json(&json!({"kind": "promotional", "credits": SHARED_CREDITS, "idempotency_key": "g"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Both processes answer, so that neither starts cold inside the race.
    for server in &servers {
        let warm = client
            .post(format!("{}/v1/check", server.address))
            .bearer_auth(&app)
            .json(&json!({"customer": "shared", "action": "chat.request", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(warm.status(), StatusCode::OK);
    }
    let answers = join_all((0..SHARED_ATTEMPTS).map(|i| {
        let url = format!("{}/v1/authorizations", servers[i % 2].address);
        let request = client
            .post(url)
            .bearer_auth(&app)
            .json(&json!({"customer": "shared", "action": "chat.request", "quantity": 1, "idempotency_key": format!("k{i}")}));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    // Exactly the credits there are, whichever process's batches took them.
    assert_eq!(tally(&answers), (50, SHARED_ATTEMPTS - 50));
    let customer = customer_on(&client, &servers[1], &app, "shared").await;
    assert_eq!(
        (customer["balance"].as_str(), customer["available"].as_str()),
        (Some(SHARED_CREDITS), Some("0"))
    );
    audited(&database_url).await;
}

/// A database and a config for `creditbook serve` that accepts webhooks signed with the tests'
/// secret.
async fn prepare_for_stripe(engine: Engine) -> Prepared {
    let prepared = prepare(engine).await;
    let text = std::fs::read_to_string(&prepared.config).unwrap().replace(
        "webhook_secrets = []",
        &format!("webhook_secrets = [\"{}\"]", common::WEBHOOK_SECRET),
    );
    std::fs::write(&prepared.config, text).unwrap();
    prepared
}

/// A webhook delivery of `body` to the server at `address`, signed now.
fn signed(client: &reqwest::Client, address: &str, body: String) -> reqwest::RequestBuilder {
    let header = creditbook::stripe::signature::sign(
        body.as_bytes(),
        common::WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
    );
    client
        .post(format!("{address}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body)
}

/// Two processes receive the same Stripe checkouts at once (Stripe retries, two instances
/// behind one endpoint): each session grants once, whichever process and whichever run of
/// checkouts applies it, and every delivery is answered as applied or a duplicate.
async fn two_processes_grant_each_checkout_once(engine: Engine) {
    let Prepared {
        _dir,
        database_url,
        config,
        app,
        ..
    } = prepare_for_stripe(engine).await;
    let servers = [start_server(&config).await, start_server(&config).await];
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    // 30 sessions of 6 Stripe customers; each session by two events, each event to both.
    let mut deliveries = Vec::new();
    for n in 0..30 {
        let object = json!({"id": format!("cs_{n}"), "object": "checkout.session",
            "mode": "payment", "payment_status": "paid", "customer": format!("cus_{}", n % 6),
            "amount_total": 1000, "currency": "usd", "payment_intent": format!("pi_{n}"),
            "metadata": {"creditbook_pack": "topup_small"}});
        for (event, kind) in [
            ("a", "checkout.session.completed"),
            ("b", "checkout.session.async_payment_succeeded"),
        ] {
            let body = common::stripe_event(&format!("evt_{n}_{event}"), kind, now, object.clone());
            for server in &servers {
                deliveries.push((server.address.clone(), body.clone()));
            }
        }
    }
    let answers = join_all(deliveries.into_iter().map(|(address, body)| {
        let request = signed(&client, &address, body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let mut granted = 0;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        match body["outcome"].as_str() {
            Some("applied") if detail.contains("credits of pack") => granted += 1,
            Some("applied") => assert!(detail.ends_with("applied before"), "{body}"),
            Some("duplicate") => {}
            _ => panic!("{body}"),
        }
    }
    assert_eq!(granted, 30, "each session grants once");
    for c in 0..6 {
        let customer = customer_on(&client, &servers[c % 2], &app, &format!("cus_{c}")).await;
        assert_eq!(customer["balance"], "5000", "{customer}");
    }
    audited(&database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_grant_each_checkout_once() {
    two_processes_grant_each_checkout_once(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_sqlite_file_grant_each_checkout_once() {
    two_processes_grant_each_checkout_once(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_never_overspend() {
    two_processes_never_overspend(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_sqlite_file_never_overspend() {
    two_processes_never_overspend(Engine::Sqlite).await;
}

/// kill -9 of the server while batches are in flight loses no acknowledged command: after a
/// restart, every acknowledged idempotency key replays to the same result, and the books audit
/// clean.
async fn kill_9_loses_no_acknowledged_command(engine: Engine) {
    let Prepared {
        _dir,
        database_url,
        config,
        admin,
        app,
    } = prepare(engine).await;
    let mut server = start_server(&config).await;
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..20).map(|c| format!("k{c}")).collect();
    let pack =
        json!({"kind": "pack", "pack": "topup_small", "credits": "100", "idempotency_key": "g"});
    grant_each(&client, &server, &admin, &ids, &pack).await;
    let usage = |i: usize| {
        json!({"customer": format!("k{}", i % 20), "action": "chat.request", "quantity": 1,
               "idempotency_key": format!("kill-{i}")})
    };
    // Usages stream in on 32 connections; the server is killed while they are in flight.
    let (address, racing_client, racing_app) =
        (server.address.clone(), client.clone(), app.clone());
    let requests = (0..3_000).map(move |i| {
        let (client, app, address, body) = (
            racing_client.clone(),
            racing_app.clone(),
            address.clone(),
            usage(i),
        );
        async move {
            let response = client
                .post(format!("{address}/v1/usage"))
                .bearer_auth(&app)
                .json(&body)
                .send()
                .await
                .ok()?;
            if response.status() != StatusCode::CREATED {
                return None;
            }
            Some((i, response.json::<Value>().await.ok()?))
        }
    });
    let in_flight = tokio::spawn(async move {
        use futures::StreamExt;
        futures::stream::iter(requests)
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let acknowledged: Vec<(usize, Value)> =
        in_flight.await.unwrap().into_iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "some usages were acknowledged before the kill"
    );
    assert!(
        acknowledged.len() < 3_000,
        "the kill came while usages were in flight"
    );

    let server = start_server(&config).await;
    for (i, first) in &acknowledged {
        let response = client
            .post(format!("{}/v1/usage", server.address))
            .bearer_auth(&app)
            .json(&usage(*i))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let replayed: Value = response.json().await.unwrap();
        assert_eq!(
            &replayed, first,
            "usage {i} replays its acknowledged result"
        );
    }
    audited(&database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_sqlite_loses_no_acknowledged_command() {
    kill_9_loses_no_acknowledged_command(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_postgres_loses_no_acknowledged_command() {
    kill_9_loses_no_acknowledged_command(Engine::Postgres).await;
}

/// kill -9 of the server while Stripe events are in flight (checkouts, and refunds of some of
/// them, on 16 senders): after a restart, every event acknowledged before the kill is known (a
/// duplicate when Stripe delivers it again), every event delivered again applies once, and each
/// customer holds exactly what its sessions bought less what was refunded.
async fn kill_9_loses_no_acknowledged_stripe_event(engine: Engine) {
    let Prepared {
        _dir,
        database_url,
        config,
        app,
        ..
    } = prepare_for_stripe(engine).await;
    const SESSIONS: usize = 240;
    const CUSTOMERS: usize = 12;
    let now = chrono::Utc::now().timestamp();
    let mut bodies = Vec::new();
    for n in 0..SESSIONS {
        let object = json!({"id": format!("cs_{n}"), "object": "checkout.session",
            "mode": "payment", "payment_status": "paid",
            "customer": format!("cus_{}", n % CUSTOMERS), "amount_total": 1000,
            "currency": "usd", "payment_intent": format!("pi_{n}"),
            "metadata": {"creditbook_pack": "topup_small"}});
        bodies.push(common::stripe_event(
            &format!("evt_cs_{n}"),
            "checkout.session.completed",
            now,
            object,
        ));
        if n % 4 == 0 {
            bodies.push(common::stripe_event(
                &format!("evt_re_{n}"),
                "refund.created",
                now,
                json!({"id": format!("re_{n}"), "object": "refund", "amount": 500,
                       "currency": "usd", "status": "succeeded",
                       "payment_intent": format!("pi_{n}")}),
            ));
        }
    }
    let deliver = |client: reqwest::Client, address: String, body: String| async move {
        let response = signed(&client, &address, body).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json::<Value>().await.ok()
    };
    let mut server = start_server(&config).await;
    let client = reqwest::Client::new();
    let sent = bodies.clone();
    let (address, racing) = (server.address.clone(), client.clone());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = answered.clone();
    let in_flight = tokio::spawn(async move {
        use futures::StreamExt;
        futures::stream::iter(sent.into_iter().enumerate().map(move |(i, body)| {
            let delivered = deliver(racing.clone(), address.clone(), body);
            let counted = counted.clone();
            async move {
                let answer = delivered.await?;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some((i, answer))
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
    });
    // Killed once a few dozen events are answered, whatever this machine's speed.
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 40 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("events are answered");
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let acknowledged: Vec<(usize, Value)> =
        in_flight.await.unwrap().into_iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "some events were acknowledged before the kill"
    );
    assert!(
        acknowledged.len() < bodies.len(),
        "the kill came while events were in flight"
    );

    // Stripe delivers every event again: the acknowledged ones are known, the others apply.
    let server = start_server(&config).await;
    let acknowledged: std::collections::BTreeMap<usize, Value> = acknowledged.into_iter().collect();
    for (i, body) in bodies.iter().enumerate() {
        let again = deliver(client.clone(), server.address.clone(), body.clone())
            .await
            .expect("answered after the restart");
        if let Some(first) = acknowledged.get(&i) {
            assert_eq!(again["outcome"], "duplicate", "{i}: {first} then {again}");
        }
    }
    for c in 0..CUSTOMERS {
        let bought: usize = (0..SESSIONS)
            .filter(|n| n % CUSTOMERS == c)
            .map(|n| if n % 4 == 0 { 500 } else { 1000 })
            .sum();
        let customer = customer_on(&client, &server, &app, &format!("cus_{c}")).await;
        assert_eq!(customer["available"], bought.to_string(), "{customer}");
    }
    audited(&database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_sqlite_loses_no_acknowledged_stripe_event() {
    kill_9_loses_no_acknowledged_stripe_event(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_postgres_loses_no_acknowledged_stripe_event() {
    kill_9_loses_no_acknowledged_stripe_event(Engine::Postgres).await;
}

/// SIGTERM while usages stream in on 32 connections: the server stops accepting, answers every
/// request it accepted, and exits 0. Afterwards the ledger holds exactly the usages that were
/// answered: none was applied and left unanswered.
async fn sigterm_answers_every_accepted_request(engine: Engine) {
    let Prepared {
        _dir,
        database_url,
        config,
        admin,
        app,
    } = prepare(engine).await;
    let mut server = start_server(&config).await;
    let client = reqwest::Client::new();
    let customers = 10;
    let ids: Vec<String> = (0..customers).map(|c| format!("t{c}")).collect();
    let promotional = json!({"kind": "promotional", "credits": "100000", "idempotency_key": "g"});
    grant_each(&client, &server, &admin, &ids, &promotional).await;
    // Once a request finds the listener closed, no new one is sent; every request sent is
    // awaited to its end (none is dropped while in flight).
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (address, racing_client, racing_app, racing_closed) = (
        server.address.clone(),
        client.clone(),
        app.clone(),
        closed.clone(),
    );
    let requests = (0..100_000).map(move |i| {
        let (client, app, address, closed) = (
            racing_client.clone(),
            racing_app.clone(),
            address.clone(),
            racing_closed.clone(),
        );
        async move {
            use std::sync::atomic::Ordering;
            if closed.load(Ordering::SeqCst) {
                return None;
            }
            let body = json!({"customer": format!("t{}", i % customers), "action": "chat.request",
                              "quantity": 1, "idempotency_key": format!("term-{i}")});
            match client
                .post(format!("{address}/v1/usage"))
                .bearer_auth(&app)
                .json(&body)
                .send()
                .await
            {
                // An answer: it must be the usage's result, never a 5xx from the drain.
                Ok(response) => Some(response.status()),
                // Not accepted (the listener had closed).
                Err(_) => {
                    closed.store(true, Ordering::SeqCst);
                    None
                }
            }
        }
    });
    let in_flight = tokio::spawn(async move {
        use futures::StreamExt;
        futures::stream::iter(requests)
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    terminate(&server.child);
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (server, status)
    });
    let (_server, status) = tokio::time::timeout(std::time::Duration::from_secs(30), exit)
        .await
        .expect("the server exits within its drain")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let answers: Vec<StatusCode> = in_flight.await.unwrap().into_iter().flatten().collect();
    assert!(answers.len() > 10, "usages were answered before SIGTERM");
    assert!(
        answers.len() < 100_000,
        "SIGTERM came while usages streamed"
    );
    assert!(
        answers.iter().all(|s| *s == StatusCode::CREATED),
        "every answer is the usage's result: {:?}",
        answers
            .iter()
            .filter(|s| **s != StatusCode::CREATED)
            .collect::<Vec<_>>()
    );

    // The books hold exactly the answered usages (1 credit each).
    let store = audited(&database_url).await;
    let used = credits_used(&store, &ids, 100_000).await;
    let answered = i64::try_from(answers.len()).unwrap();
    assert_eq!(
        used, answered,
        "usages applied and usages answered differ: a request was accepted and dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_on_sqlite_answers_every_accepted_request() {
    sigterm_answers_every_accepted_request(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_on_postgres_answers_every_accepted_request() {
    sigterm_answers_every_accepted_request(Engine::Postgres).await;
}

/// `POST /v1/check` of `quantity` chat requests for customer `m`: (allowed, available).
async fn check(app: &TestApp, quantity: i64) -> (bool, Value) {
    let body = json!({"customer": "m", "action": "chat.request", "quantity": quantity});
    let (status, value) = app.post_app("/v1/check", body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    (
        value["allowed"].as_bool().unwrap(),
        value["available"].clone(),
    )
}

/// `creditbook_gate_books_total{from="memory"}` of `app`.
async fn books_from_memory(app: &TestApp) -> u64 {
    metric(app, "creditbook_gate_books_total{from=\"memory\"} ").await
}

/// The value of the `/metrics` line of `app` that starts with `name` (labels and a space
/// included).
async fn metric(app: &TestApp, name: &str) -> u64 {
    let (_, metrics) = app.call(reqwest::Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap()
}

/// A customer that `check`s keep asking for has its kept book confirmed in the background
/// before it grows stale, so a check past the bound needs no read of its own; a book whose
/// version moved elsewhere is never confirmed, and checks see the write within the bound.
async fn checks_keep_asking_books_are_confirmed_in_the_background(engine: Engine) {
    use std::time::{Duration, Instant};
    const BACKGROUND: &str = "creditbook_gate_books_confirmed_total{by=\"background\"} ";
    const BY_CHECK: &str = "creditbook_gate_books_confirmed_total{by=\"check\"} ";
    let staleness = Duration::from_millis(400);
    let app = common::spawn_app_with(engine, |c| c.batching.check_staleness = staleness).await;
    app.promo("m", "5").await;
    // The grant's batch kept the book as of its commit, before now.
    let kept_at = Instant::now();
    assert_eq!(check(&app, 1).await, (true, json!("5")));
    tokio::time::sleep(staleness * 5 / 8).await;
    // Past half the bound: noted, and confirmed by the next background round.
    assert_eq!(check(&app, 1).await, (true, json!("5")));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, BACKGROUND).await == 0 {
        assert!(
            Instant::now() < deadline,
            "never confirmed in the background"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the bound of the book as kept, a check decides on it without a read of its own.
    let past_bound = kept_at + staleness + Duration::from_millis(50);
    tokio::time::sleep_until(past_bound.max(Instant::now()).into()).await;
    assert_eq!(check(&app, 1).await, (true, json!("5")));
    assert_eq!(metric(&app, BY_CHECK).await, 0);

    // A write elsewhere moves the version: the book is not confirmed again, and checks show
    // the write once the bound has passed.
    let other = app.another_instance().await;
    other.promo("m", "10").await;
    let written = Instant::now();
    loop {
        let (_, available) = check(&app, 1).await;
        if available == json!("15") {
            break;
        }
        assert_eq!(available, json!("5"));
        assert!(
            written.elapsed() < staleness + Duration::from_secs(1),
            "the write elsewhere stays hidden past the bound"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_asking_books_are_confirmed_in_the_background_on_sqlite() {
    checks_keep_asking_books_are_confirmed_in_the_background(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_asking_books_are_confirmed_in_the_background_on_postgres() {
    checks_keep_asking_books_are_confirmed_in_the_background(Engine::Postgres).await;
}

/// The books a server keeps in memory never hide a write made elsewhere from a command: a grant
/// made through another instance is spent at once. `check` decides on the kept book for at most
/// `[ledger] check_staleness_ms`; this instance's own writes it sees at once.
async fn a_book_kept_in_memory_yields_to_a_write_elsewhere(engine: Engine) {
    let app = common::spawn_app_with(engine, |c| {
        c.batching.check_staleness = std::time::Duration::from_secs(10);
    })
    .await;
    let other = app.another_instance().await;
    app.promo("m", "5").await;
    assert_eq!(check(&app, 1).await, (true, json!("5")));
    other.promo("m", "10").await;
    // Within the bound, this instance's check still decides on the book it keeps...
    assert_eq!(check(&app, 12).await, (false, json!("5")));
    // ...but a command reads the version under its lock and spends the other's grant.
    let (status, hold) = app.authorize("m", "chat.request", json!(12)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    // Its own write is seen at once, and the next command starts from the book it kept.
    assert_eq!(check(&app, 3).await, (true, json!("3")));
    let (status, value) = app.authorize("m", "chat.request", json!(3)).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let (status, value) = app.authorize("m", "chat.request", json!(1)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{value}");
    assert!(books_from_memory(&app).await >= 2);
    // The other instance never kept the customer's latest book: it reads it.
    let (status, value) = other.authorize("m", "chat.request", json!(1)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{value}");
    app.assert_audit_clean().await;

    // With a bound of 0, check confirms the version every time: a write elsewhere shows at once.
    let fresh =
        common::spawn_app_with(engine, |c| c.batching.check_staleness = Default::default()).await;
    let elsewhere = fresh.another_instance().await;
    fresh.promo("m", "5").await;
    assert_eq!(check(&fresh, 1).await, (true, json!("5")));
    // The book its grant kept, confirmed by the version: decided from memory.
    assert!(books_from_memory(&fresh).await >= 1);
    elsewhere.promo("m", "10").await;
    assert_eq!(check(&fresh, 12).await, (true, json!("15")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_kept_in_memory_yields_to_a_write_elsewhere_on_sqlite() {
    a_book_kept_in_memory_yields_to_a_write_elsewhere(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_kept_in_memory_yields_to_a_write_elsewhere_on_postgres() {
    a_book_kept_in_memory_yields_to_a_write_elsewhere(Engine::Postgres).await;
}

/// A cap on each member holds under concurrency, through two instances: 60 holds of one credit
/// by five members (12 each) against a cap of 10 a member pass exactly 10 for each.
async fn each_member_s_cap_holds_under_concurrency(app: TestApp) {
    let c = "team";
    app.promo(c, "1000").await;
    let (status, set) = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/customers/{c}/limits"),
            Some(&app.app_key),
            Some(json!({"limits": [
                {"period": "month", "credits": "10", "mode": "hard", "each_subject": true}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let other = app.another_instance().await;
    let answers = join_all((0..60).map(|i| {
        let server = if i % 2 == 0 { &app } else { &other };
        let member = format!("m{}", i % 5);
        async move {
            let answer = server
                .post_app(
                    "/v1/authorizations",
                    json!({"customer": c, "action": "chat.request", "quantity": 1,
                        "subject": member, "idempotency_key": format!("k{i}")}),
                )
                .await;
            (member, answer)
        }
    }))
    .await;
    let mut passed = std::collections::BTreeMap::<String, usize>::new();
    for (member, (status, body)) in &answers {
        match *status {
            StatusCode::CREATED => *passed.entry(member.clone()).or_default() += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(body["type"], "spend_limit_reached", "{body}");
                assert_eq!(body["subject"], json!(member));
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(
        passed.into_iter().collect::<Vec<_>>(),
        (0..5).map(|m| (format!("m{m}"), 10)).collect::<Vec<_>>()
    );
    assert_eq!(
        app.balances(c).await,
        ("1000".into(), "50".into(), "950".into())
    );
    app.assert_audit_clean().await;
}
on_both_engines!(each_member_s_cap_holds_under_concurrency);

/// 60 holds at once by five children of one organization, through two instances, on the
/// organization's 1,000-credit pool: 20 credits each, so exactly 50 fit and the pool is never
/// overspent (each child's book locks the pool above it, in id order).
async fn children_never_overspend_their_organization_s_pool(app: TestApp) {
    app.promo("org", "1000").await;
    for child in 0..5 {
        let (status, body) = app
            .set_parent(&format!("org-team-{child}"), json!("org"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let other = app.another_instance().await;
    let answers = join_all((0..60).map(|i| {
        let server = if i % 2 == 0 { &app } else { &other };
        let child = format!("org-team-{}", i % 5);
        async move {
            server
                .post_app(
                    "/v1/authorizations",
                    json!({"customer": child, "action": "image.standard", "quantity": 4,
                        "idempotency_key": format!("k{i}")}),
                )
                .await
        }
    }))
    .await;
    let mut held = 0;
    for (status, body) in &answers {
        match *status {
            StatusCode::CREATED => held += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(body["type"], "insufficient_credits", "{body}")
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(held, 50);
    assert_eq!(
        app.balances("org").await,
        ("1000".into(), "1000".into(), "0".into())
    );
    app.assert_audit_clean().await;
}
on_both_engines!(children_never_overspend_their_organization_s_pool);
