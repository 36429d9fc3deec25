//! Property tests: random sequences of grants, holds, captures, voids, usages and expiries keep
//! every invariant of the README's ledger rules — in the pure domain, and through the store on both engines.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use creditbook::domain::adjustment::{Change, Reason};
use creditbook::domain::catalog::Overage;
use creditbook::domain::catalog::{Action, Breakage, Catalog, Feature, Plan};
use creditbook::domain::command::{self, Command, Rules};
use creditbook::domain::customer::{CustomerId, Subject};
use creditbook::domain::gate::{Actual, Policy, Standing};
use creditbook::domain::ledger::GrantSource;
use creditbook::domain::ledger::{Book, EntryKind, Grant, GrantKind, HoldStatus, Rejection, Usage};
use creditbook::domain::money::Quantity;
use creditbook::domain::money::{Credits, Money};
use creditbook::domain::overrides::{self, Override};
use creditbook::store::{BatchSettings, Envelope, Store};
use proptest::prelude::*;
use rust_decimal::Decimal;

#[derive(Debug, Clone)]
enum Op {
    Grant {
        micros: i64,
        priority: i32,
        expires_in_minutes: Option<i64>,
        /// Bought ahead: spendable only from this many minutes on.
        starts_in_minutes: Option<i64>,
    },
    Authorize {
        micros: i64,
    },
    Capture {
        hold: usize,
        micros: i64,
    },
    Void {
        hold: usize,
    },
    Debit {
        micros: i64,
    },
    Advance {
        minutes: i64,
    },
    /// The feature of the actions switched on or off for the customer (an override).
    Override {
        enabled: bool,
    },
    /// The free credits of the customer's latest `grants` grants moved to another customer
    /// (through the store: one command on both books).
    Move {
        grants: usize,
    },
}

fn credits(micros: i64) -> Credits {
    Credits::from_micros(micros)
}

fn op() -> impl Strategy<Value = Op> {
    // Amounts with up to 6 decimals, small enough to run out often.
    let amount = prop_oneof![1_i64..=5_000_000, 1_i64..=30_000_000, Just(1)];
    prop_oneof![
        3 => (amount.clone(), 0_i32..3, proptest::option::of(1_i64..60), proptest::option::weighted(0.2, 1_i64..40))
            .prop_map(|(micros, priority, expires_in_minutes, starts_in_minutes)| Op::Grant {
                micros,
                priority,
                expires_in_minutes,
                // A grant starts before it expires.
                starts_in_minutes: starts_in_minutes.filter(|s| expires_in_minutes.is_none_or(|e| *s < e)),
            }),
        4 => amount.clone().prop_map(|micros| Op::Authorize { micros }),
        4 => (0_usize..8, 0_i64..=20_000_000).prop_map(|(hold, micros)| Op::Capture { hold, micros }),
        2 => (0_usize..8).prop_map(|hold| Op::Void { hold }),
        3 => amount.prop_map(|micros| Op::Debit { micros }),
        2 => (1_i64..30).prop_map(|minutes| Op::Advance { minutes }),
        1 => any::<bool>().prop_map(|enabled| Op::Override { enabled }),
        1 => (1_usize..4).prop_map(|grants| Op::Move { grants }),
    ]
}

fn overage() -> impl Strategy<Value = Overage> {
    prop_oneof![
        Just(Overage::Block),
        (1_i64..20_000_000).prop_map(|m| Overage::Allow { limit: credits(m) }),
        Just(Overage::Bill {
            price: Decimal::new(1, 2)
        }),
    ]
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

const HOLD_MINUTES: i64 = 15;

/// Applies one op to the book at `now`; on refusal the book is left as it was.
/// A hold named by index is the index-th hold of `holds` (the model's, when replaying on the
/// store, whose books load only open holds).
fn apply(
    book: &mut Book,
    op: &Op,
    overage: &Overage,
    now: &mut DateTime<Utc>,
    seq: usize,
    holds: Option<&[String]>,
) -> Result<(), Rejection> {
    let own: Vec<String> = book.holds.iter().map(|h| h.id.clone()).collect();
    let holds = holds.unwrap_or(&own);
    let scratch_before = book.clone();
    book.settle_due(*now);
    let usage = Usage {
        action: Some("chat.request".into()),
        quantity: Some("1".into()),
        subject: None,
    };
    let result = match op {
        Op::Grant {
            micros,
            priority,
            expires_in_minutes,
            starts_in_minutes,
        } => {
            book.add_grant(
                Grant {
                    id: format!("{}-g{seq:04}", book.customer_id),
                    kind: GrantKind::Promotional,
                    credits: credits(*micros),
                    remaining: credits(*micros),
                    held: Credits::ZERO,
                    price: None,
                    currency: None,
                    expires_at: expires_in_minutes.map(|m| *now + Duration::minutes(m)),
                    expired: false,
                    priority: *priority,
                    plan_id: None,
                    pack_id: None,
                    source_type: GrantSource::Test,
                    source_id: seq.to_string(),
                    created_at: *now,
                    refunded: Money::ZERO,
                    period_start: None,
                    frozen: false,
                    starts_at: None,
                    scheduled: false,
                    shared: true,
                    lent: None,
                }
                .starting(starts_in_minutes.map(|m| *now + Duration::minutes(m))),
                *now,
            );
            Ok(())
        }
        Op::Authorize { micros } => book.authorize(
            &format!("{}-h{seq:04}", book.customer_id),
            &usage,
            credits(*micros),
            overage,
            *now + Duration::minutes(HOLD_MINUTES),
            *now,
        ),
        Op::Capture { hold, micros } => match holds.get(*hold).cloned() {
            Some(id) => book.capture(&id, credits(*micros), None, overage, *now),
            None => Err(Rejection::HoldNotFound),
        },
        Op::Void { hold } => match holds.get(*hold).cloned() {
            Some(id) => book.void(&id, *now),
            None => Err(Rejection::HoldNotFound),
        },
        Op::Debit { micros } => book.debit(credits(*micros), &usage, overage, *now),
        Op::Advance { minutes } => {
            *now += Duration::minutes(*minutes);
            book.settle_due(*now);
            Ok(())
        }
        // Entitlement is the gate's, not the book's.
        Op::Override { .. } => Ok(()),
        Op::Move { grants } => {
            let latest: Vec<String> = book
                .grants
                .iter()
                .rev()
                .take(*grants)
                .map(|g| g.id.clone())
                .collect();
            for id in latest {
                book.transfer_out(&id, *now);
            }
            Ok(())
        }
    };
    if result.is_err() {
        *book = scratch_before;
    }
    result
}

fn sum_of(book: &Book, kind: EntryKind) -> Credits {
    book.entries
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.credits)
        .sum()
}

/// Everything the README's ledger rules say must hold, from the outside.
fn assert_invariants(book: &Book, overage: &Overage) {
    book.check_invariants().expect("book invariants");
    let (credits, held) = book.entries_delta();
    assert_eq!(book.balance(), credits, "balance is the sum of the ledger");
    assert_eq!(book.held(), held, "held is the sum of the ledger");
    let granted = sum_of(book, EntryKind::Grant);
    let consumed = -sum_of(book, EntryKind::Consume);
    let expired = -sum_of(book, EntryKind::Expire);
    let moved_out = -sum_of(book, EntryKind::Transfer);
    assert_eq!(
        sum_of(book, EntryKind::Settle),
        Credits::ZERO,
        "settlements move debt, not balance"
    );
    assert_eq!(
        book.balance(),
        granted - consumed - expired - moved_out,
        "balance = granted - consumed - expired - moved out"
    );
    assert_eq!(
        book.available(),
        book.balance() - book.held() - book.scheduled()
    );
    for grant in &book.grants {
        assert!(
            !grant.remaining.is_negative(),
            "grant {} below zero",
            grant.id
        );
    }
    match overage {
        Overage::Block => assert!(
            !book.available().is_negative(),
            "available below zero under block"
        ),
        Overage::Allow { limit } => assert!(
            book.available() >= -*limit,
            "available below the overage limit"
        ),
        Overage::Bill { .. } => {
            assert!(!book.balance().is_negative(), "billed overage is not debt")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_invariants(overage in overage(), ops in proptest::collection::vec(op(), 1..60)) {
        let mut book = Book::new(CustomerId::known("c"));
        let mut now = start();
        for (seq, op) in ops.iter().enumerate() {
            let open_before = match op {
                Op::Capture { hold, micros } => book.holds.get(*hold).filter(|h| {
                    h.status == HoldStatus::Held && h.expires_at > now && credits(*micros) <= h.credits
                }).is_some(),
                _ => false,
            };
            let result = apply(&mut book, op, &overage, &mut now, seq, None);
            if open_before {
                // An approved hold can always be captured up to its amount until it expires,
                // even if a grant it draws on expired meanwhile.
                prop_assert!(result.is_ok(), "capture within a live hold refused: {result:?}");
            }
            if let Err(Rejection::InvariantViolated(why)) = &result {
                prop_assert!(false, "invariant violated: {why}");
            }
            assert_invariants(&book, &overage);
        }
    }
}

/// The catalog of the store's histories: one action costing one credit a unit, and a plan per
/// history carrying that history's overage rule.
fn catalog_for(overages: &[Overage]) -> Catalog {
    let feature = Feature {
        id: "chat".into(),
        plan_only: false,
    };
    let action = Action {
        id: "chat.request".into(),
        feature: "chat".into(),
        credits: credits(1_000_000),
        vendor_cost: None,
        changes: Vec::new(),
    };
    let plans = overages
        .iter()
        .enumerate()
        .map(|(n, overage)| {
            let plan = Plan {
                id: format!("plan{n}"),
                stripe_prices: vec![],
                credits: Credits::ZERO,
                credits_interval: Default::default(),
                per_seat: false,
                features: vec![],
                rollover_max: Credits::ZERO,
                overage: overage.clone(),
                platform_share: Decimal::ZERO,
                breakage: Breakage::Remote,
                priority: 10,
                low_balance: None,
                overage_meter: None,
                trial_credits: None,
            };
            (plan.id.clone(), plan)
        })
        .collect();
    Catalog {
        currency: "usd".into(),
        features: [("chat".to_owned(), feature)].into(),
        actions: [("chat.request".to_owned(), action)].into(),
        plans,
        ..Default::default()
    }
}

/// The customer a history's moves take credits to.
fn twin(customer: &str) -> String {
    format!("{customer}-twin")
}

/// The command an op is, on `customer` at `now`: the same kinds of change as [`apply`], made as
/// the service makes them (a hold named by index is the index-th hold authorized so far).
fn command_of(
    catalog: &Catalog,
    customer: &str,
    op: &Op,
    now: DateTime<Utc>,
    seq: usize,
    issued: &[String],
    granted: &[String],
) -> Command {
    let action = catalog.actions["chat.request"].clone();
    let units = |micros: i64| Quantity::try_from(credits(micros).value()).unwrap();
    let hold = |index: usize| {
        issued
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("{customer}-missing"))
    };
    match op {
        Op::Grant {
            micros,
            priority,
            expires_in_minutes,
            starts_in_minutes,
        } => Command::Grant {
            grant: Grant::promotional(
                format!("{customer}-g{seq:04}"),
                credits(*micros),
                (GrantSource::Test, seq.to_string()),
                now,
            )
            .expiring(expires_in_minutes.map(|m| now + Duration::minutes(m)))
            .starting(starts_in_minutes.map(|m| now + Duration::minutes(m)))
            .at_priority(*priority),
        },
        Op::Authorize { micros } => Command::Authorize {
            hold_id: format!("{customer}-h{seq:04}"),
            action,
            quantity: units(*micros),
            // Members spend from the same book: who spent changes no balance.
            subject: seq
                .is_multiple_of(2)
                .then(|| Subject::parse(&format!("member-{}", seq % 5)).unwrap()),
            expires_at: now + Duration::minutes(HOLD_MINUTES),
        },
        Op::Capture {
            hold: index,
            micros,
        } => Command::Capture {
            hold_id: hold(*index),
            actual: if *micros == 0 {
                Actual::Nothing
            } else {
                Actual::Credits(credits(*micros))
            },
        },
        Op::Void { hold: index } => Command::Void {
            hold_id: hold(*index),
        },
        Op::Debit { micros } if seq.is_multiple_of(3) => Command::Adjust {
            change: Change::parse(-credits(*micros).value()).unwrap(),
            grant_id: format!("{customer}-a{seq:04}"),
            reason: Reason::parse("taken back").unwrap(),
            source: (GrantSource::Test, seq.to_string()),
        },
        Op::Debit { micros } => Command::Usage {
            usage_id: format!("{customer}-u{seq:04}"),
            action,
            quantity: units(*micros),
            subject: seq
                .is_multiple_of(2)
                .then(|| Subject::parse(&format!("member-{}", seq % 5)).unwrap()),
            occurred_at: now,
        },
        Op::Advance { .. } => Command::Settle,
        Op::Move { grants } => Command::MoveGrants {
            to: creditbook::domain::customer::CustomerId::parse(&twin(customer)).unwrap(),
            moves: granted
                .iter()
                .rev()
                .take(*grants)
                .enumerate()
                .map(|(i, id)| (id.clone(), format!("{customer}-m{seq:04}-{i}")))
                .collect(),
        },
        Op::Override { enabled } => Command::SetOverride {
            made: Override {
                id: format!("{customer}-o{seq:04}"),
                change: overrides::Change::Feature {
                    feature: "chat".into(),
                    enabled: *enabled,
                },
                until: None,
                reason: "property test".into(),
                actor: "test".into(),
                at: now,
            },
        },
    }
}

/// Histories of commands through the store, compared with the domain's own decisions made one
/// after another. `batched`: every command of a history is queued at once, so they share
/// batches (one transaction, one commit); otherwise each waits for the one before (a batch of
/// one each). Both must reach the domain's books, answer by answer.
async fn store_replays_random_histories(
    store: Store,
    catalog: &Catalog,
    histories: Vec<(Overage, Vec<Op>)>,
    batched: bool,
) {
    let rules = Rules {
        catalog,
        policy: Policy::default(),
    };
    for (n, (overage, ops)) in histories.into_iter().enumerate() {
        let customer = format!("prop{n}");
        let mut now = start();
        let id = creditbook::domain::customer::CustomerId::parse(&customer).unwrap();
        let mut queued = vec![Envelope::new(
            id.clone(),
            Command::SetPlan {
                plan: Some(format!("plan{n}")),
            },
            now,
        )];
        let (mut issued, mut granted) = (Vec::new(), Vec::new());
        for (seq, op) in ops.iter().enumerate() {
            if let Op::Advance { minutes } = op {
                now += Duration::minutes(*minutes);
            }
            let command = command_of(catalog, &customer, op, now, seq, &issued, &granted);
            match &command {
                Command::Authorize { hold_id, .. } => issued.push(hold_id.clone()),
                Command::Grant { grant } => granted.push(grant.id.clone()),
                _ => {}
            }
            queued.push(Envelope::new(id.clone(), command, now));
        }
        // The domain's own replay: each command decided on a copy, kept when approved; a move
        // decided on the customer's and its twin's books together.
        let mut model = Book::new(CustomerId::known(customer.clone()));
        let mut standing = Standing::default();
        let twin_id = creditbook::domain::customer::CustomerId::parse(&twin(&customer)).unwrap();
        let mut twin_model = Book::new(CustomerId::known(twin(&customer)));
        let mut expected = Vec::new();
        for envelope in &queued {
            let (mut book, mut next) = (model.clone(), standing.clone());
            let mut twin_book = twin_model.clone();
            let mut others = Vec::new();
            if !envelope.command.others().is_empty() {
                others.push(command::Other {
                    customer: &twin_id,
                    book: &mut twin_book,
                });
            }
            let decided = command::decide_across(
                rules,
                &mut book,
                &mut next,
                &mut others,
                &envelope.command,
                &command::Read::default(),
                envelope.now,
            );
            drop(others);
            if decided.is_ok() {
                book.entries.clear();
                book.consumed.clear();
                twin_book.entries.clear();
                (model, standing, twin_model) = (book, next, twin_book);
            }
            expected.push(decided);
        }
        let answers = if batched {
            store.execute_all(queued).await
        } else {
            let mut answers = Vec::new();
            for one in queued {
                answers.extend(store.execute_all(vec![one]).await);
            }
            answers
        };
        for (seq, (stored, expected)) in answers.iter().zip(&expected).enumerate() {
            assert_eq!(
                stored.is_ok(),
                expected.is_ok(),
                "command {seq}: store {stored:?} vs domain {expected:?}\nhistory: {overage:?} {ops:?}"
            );
            if let (Ok(stored), Ok(expected)) = (stored, expected) {
                assert_eq!(
                    &stored.value, expected,
                    "command {seq}: {overage:?} {ops:?}"
                );
            }
        }
        model.settle_due(now);
        let book = match store.view(&id, now).await.unwrap() {
            Some((book, _)) => book,
            None => Book::new(CustomerId::known(customer.clone())),
        };
        assert_eq!(
            book.balance(),
            model.balance(),
            "balance of {customer}: {overage:?} {ops:?}"
        );
        assert_eq!(
            book.held(),
            model.held(),
            "held of {customer}: {overage:?} {ops:?}"
        );
        assert_eq!(
            book.overdraft, model.overdraft,
            "overdraft of {customer}: {overage:?} {ops:?}"
        );
        // What moves took to the twin.
        twin_model.settle_due(now);
        let twin_book = match store.view(&twin_id, now).await.unwrap() {
            Some((book, _)) => book,
            None => Book::new(twin_id.clone()),
        };
        assert_eq!(
            (twin_book.balance(), twin_book.available()),
            (twin_model.balance(), twin_model.available()),
            "the twin of {customer}: {overage:?} {ops:?}"
        );
        // `check` decides on the book kept in memory: the same book.
        let kept = match store.check_view(&id, now).await.unwrap() {
            Some((kept, _)) => kept,
            None => Book::new(CustomerId::known(customer.clone())),
        };
        assert_eq!(
            (kept.balance(), kept.held(), kept.overdraft),
            (book.balance(), book.held(), book.overdraft),
            "kept book of {customer}: {overage:?} {ops:?}"
        );
    }
    assert_eq!(store.audit().await.unwrap(), Vec::<String>::new());
}

fn sample_histories(count: usize) -> Vec<(Overage, Vec<Op>)> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config::default());
    let strategy = (overage(), proptest::collection::vec(op(), 10..40));
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// A migrated store on a fresh database, with no server: nothing but the test moves its clock
/// (a server's expiry job would settle these histories at the real time).
/// One batch worker on either engine: the commands of a history, queued at once, run in the
/// order they were queued (several PostgreSQL workers may take later batches first, as they may
/// for concurrent requests).
async fn fresh_store(engine: common::Engine, catalog: &Catalog) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database(engine, dir.path()).await;
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_catalog(std::sync::Arc::new(catalog.clone()))
        .with_batching(BatchSettings {
            postgres_workers: 1,
            ..BatchSettings::default()
        });
    store.migrate().await.unwrap();
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_the_invariants_on_sqlite() {
    let histories = sample_histories(24);
    let overages: Vec<Overage> = histories.iter().map(|(o, _)| o.clone()).collect();
    let catalog = catalog_for(&overages);
    let (store, _dir) = fresh_store(common::Engine::Sqlite, &catalog).await;
    store_replays_random_histories(store, &catalog, histories, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_the_invariants_on_postgres() {
    let histories = sample_histories(24);
    let overages: Vec<Overage> = histories.iter().map(|(o, _)| o.clone()).collect();
    let catalog = catalog_for(&overages);
    let (store, _dir) = fresh_store(common::Engine::Postgres, &catalog).await;
    store_replays_random_histories(store, &catalog, histories, false).await;
}

/// Group commit changes nothing but speed: the same histories, their commands sharing batches,
/// reach the same books as one command per transaction (both equal the domain's replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_commands_reach_the_same_books_on_sqlite() {
    let histories = sample_histories(24);
    let overages: Vec<Overage> = histories.iter().map(|(o, _)| o.clone()).collect();
    let catalog = catalog_for(&overages);
    let (store, _dir) = fresh_store(common::Engine::Sqlite, &catalog).await;
    store_replays_random_histories(store, &catalog, histories, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_commands_reach_the_same_books_on_postgres() {
    let histories = sample_histories(24);
    let overages: Vec<Overage> = histories.iter().map(|(o, _)| o.clone()).collect();
    let catalog = catalog_for(&overages);
    let (store, _dir) = fresh_store(common::Engine::Postgres, &catalog).await;
    store_replays_random_histories(store, &catalog, histories, true).await;
}
