//! Retention: what may go is pruned in small batches while the gate serves, and only that; the
//! ledger and the journal refuse to be changed or emptied, whoever asks; a page session ends at
//! its absolute lifetime however it is used.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{Engine, TestApp};
use creditbook::store::keys::Scope;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

async fn count(app: &TestApp, sql: &str) -> i64 {
    let backend = app.store.backend();
    let row = app
        .store
        .connection()
        .query_one_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn retention_prunes_under_load_without_a_gate_error(engine: Engine) {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    // Payload bodies kept 30 days here (90 by default); the rest at their defaults (30 days).
    let app = common::spawn_app_at(engine, start, |config| {
        config.retention.stripe_payload_days = 30;
    })
    .await;
    for c in 0..4 {
        app.promo(&format!("r{c}"), "1000000").await;
    }
    // 1,200 idempotency records of 1 March.
    for batch in 0..2 {
        let usages: Vec<Value> = (0..600)
            .map(|i| {
                json!({"customer": format!("r{}", i % 4), "action": "chat.request",
                       "quantity": 1, "idempotency_key": format!("old-{batch}-{i}")})
            })
            .collect();
        let (status, answer) = app
            .post_app("/v1/usage/batch", json!({"usages": usages}))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // A Stripe event of 1 March, with its payload.
    let event = common::stripe_event(
        "evt_old",
        "checkout.session.completed",
        start.timestamp(),
        json!({"id": "cs_old", "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "client_reference_id": "r0", "amount_total": 1000,
               "currency": "usd", "payment_intent": "pi_old",
               "metadata": {"creditbook_pack": "topup_small"}}),
    );
    common::expect_outcome(&app, &event, "applied").await;
    // Outbox rows delivered now (real time): a webhook's and a Stripe write's.
    let wall = Utc::now();
    for (id, kind) in [
        ("ob-webhook", "webhook"),
        ("ob-meter", "stripe_meter_event"),
    ] {
        let sql = format!(
            "INSERT INTO outbox (id, message_id, kind, destination, event_type, customer_id, \
             body, status, attempts, created_at, next_attempt_at, delivered_at) VALUES \
             ('{id}', 'msg-{id}', '{kind}', 'https://x', 'credit.balance_low', 'r0', '{{}}', \
             'delivered', 1, {t}, {t}, {t})",
            t = wall.timestamp_micros()
        );
        app.store
            .connection()
            .execute_unprepared(&sql)
            .await
            .unwrap();
    }
    let admin = app
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.scope == Scope::Admin)
        .unwrap();
    app.store
        .start_session(&admin.id, Scope::Admin, start)
        .await
        .unwrap();
    let entries = count(&app, "SELECT COUNT(*) FROM ledger_entries").await;
    let lines = count(&app, "SELECT COUNT(*) FROM journal_lines").await;

    // 31 days on: spends go on while everything old is pruned, batch by batch.
    let later = start + Duration::days(31);
    app.advance(later).await;
    let load = (0..8).map(|sender| {
        let app = &app;
        async move {
            for n in 0..40 {
                let (status, answer) = app
                    .usage(
                        &format!("r{}", sender % 4),
                        "chat.request",
                        json!(1),
                        &format!("new-{sender}-{n}"),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{answer}");
            }
        }
    });
    let prune = async {
        let mut pruned = creditbook::store::retention::Pruned::default();
        for _ in 0..5 {
            let p = app
                .store
                .prune(later, wall + Duration::days(31))
                .await
                .expect("prune");
            pruned.idempotency_records += p.idempotency_records;
            pruned.outbox_messages += p.outbox_messages;
            pruned.stripe_payloads += p.stripe_payloads;
            pruned.sessions += p.sessions;
        }
        pruned
    };
    let (_, pruned) = tokio::join!(futures::future::join_all(load), prune);
    assert!(
        pruned.idempotency_records >= 1_200,
        "{pruned:?}: the batch records, and the grants' of 1 March"
    );
    assert_eq!(
        (
            pruned.outbox_messages,
            pruned.stripe_payloads,
            pruned.sessions
        ),
        (1, 1, 1),
        "{pruned:?}"
    );
    let cutoff = (later - Duration::days(30)).timestamp_micros();
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) FROM idempotency_records WHERE created_at < {cutoff}")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM idempotency_records WHERE idempotency_key LIKE 'request:new-%'"
        )
        .await,
        320,
        "this month's records stay"
    );
    // The Stripe write stays (it is what refuses a second charge); the webhook's went.
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM outbox WHERE id = 'ob-meter'").await,
        1
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM outbox WHERE id = 'ob-webhook'").await,
        0
    );
    // The event is still known (a redelivery is a duplicate), without its body.
    let events = app.store.stripe_events(10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_events WHERE id = 'evt_old' AND payload = ''"
        )
        .await,
        1
    );
    common::expect_outcome(&app, &event, "duplicate").await;
    // Never the ledger or the journal.
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM ledger_entries").await,
        entries + 320
    );
    assert!(count(&app, "SELECT COUNT(*) FROM journal_lines").await >= lines);
    app.assert_audit_clean().await;
}

for_each_engine!(retention_prunes_under_load_without_a_gate_error);

/// Whoever connects, the ledger and the journal cannot be changed or emptied.
async fn the_ledger_and_the_journal_are_append_only(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let (status, _) = app
        .post_admin(
            "/v1/customers/acme/grants",
            json!({"kind": "pack", "pack": "topup_small", "idempotency_key": "p"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.usage("acme", "chat.request", json!(5), "u").await;
    assert_eq!(status, StatusCode::CREATED);
    let entries = count(&app, "SELECT COUNT(*) FROM ledger_entries").await;
    let lines = count(&app, "SELECT COUNT(*) FROM journal_lines").await;
    assert!(entries > 0 && lines > 0);
    let db = app.store.connection();
    for sql in [
        "UPDATE ledger_entries SET credits = 0",
        "DELETE FROM ledger_entries",
        "UPDATE journal_lines SET debit = 0",
        "DELETE FROM journal_lines",
    ] {
        let refused = db.execute_unprepared(sql).await;
        let error = refused.expect_err(sql).to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    if engine == Engine::Postgres {
        let refused = db.execute_unprepared("TRUNCATE ledger_entries").await;
        assert!(refused.is_err(), "TRUNCATE");
    }
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM ledger_entries").await,
        entries
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM journal_lines").await,
        lines
    );
    app.assert_audit_clean().await;
}

for_each_engine!(the_ledger_and_the_journal_are_append_only);

/// A page session ends after `[pages] session_max_hours`, however recently it was used.
async fn a_session_ends_at_its_absolute_lifetime(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let key = app.store.list_api_keys().await.unwrap().remove(0);
    let now = Utc::now();
    let token = app
        .store
        .start_session(&key.id, key.scope, now)
        .await
        .unwrap();
    let (idle, max) = (3_600, 4 * 3_600);
    for hour in 1..4 {
        let used = app
            .store
            .session(&token, idle, max, now + Duration::minutes(hour * 59))
            .await
            .unwrap();
        assert!(used.is_some(), "used every hour: alive at hour {hour}");
    }
    let after = app
        .store
        .session(&token, idle, max, now + Duration::hours(4))
        .await
        .unwrap();
    assert!(after.is_none(), "four hours after it began, it is over");
}

for_each_engine!(a_session_ends_at_its_absolute_lifetime);
