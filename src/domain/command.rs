//! Every change of a customer's book is a [`Command`]: a value built at the edge (a request, a
//! job, a Stripe event), decided by [`decide`] on the book and standing loaded under the
//! customer's lock, answered with a typed [`Answer`]. The store's unit of work runs commands in
//! batches and writes what the decisions left on the books; it decides nothing itself.

use super::Timestamp;
use super::adjustment::{self, Change, Reason};
use super::alerts::{self, Armed, Balance};
use super::autotopup::Setting;
use super::autotopup::Start;
use super::catalog::{Action, Catalog};
use super::customer::{CustomerId, Subject};
use super::cycle;
use super::gate::{self, Actual, Policy, Refusal, Standing};
use super::ledger::{Book, Grant, GrantKind, GrantSource, HoldStatus, Rejection};
use super::limits::{Limit, LimitState, SpentThisMonth};
use super::money::{Credits, Money, Quantity};
use super::organization;
use super::outbound::Message;
use super::overrides::Override;
use super::revrec;
use super::thresholds::{AlertRule, LowBalance};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One change of one customer's book.
#[derive(Debug, Clone)]
pub enum Command {
    /// Holds the cost of `quantity` units of `action` until `expires_at`.
    Authorize {
        hold_id: String,
        action: Action,
        quantity: Quantity,
        /// Who inside the customer holds it.
        subject: Option<Subject>,
        expires_at: Timestamp,
    },
    /// Spends what the held call really cost and releases the rest.
    Capture { hold_id: String, actual: Actual },
    /// Releases a hold.
    Void { hold_id: String },
    /// A one-shot debit, spent now, dated `occurred_at`.
    Usage {
        usage_id: String,
        action: Action,
        quantity: Quantity,
        /// Who inside the customer used it.
        subject: Option<Subject>,
        occurred_at: Timestamp,
    },
    /// An operator's grant.
    Grant { grant: Grant },
    /// An operator's signed change of credits, with its reason.
    Adjust {
        change: Change,
        grant_id: String,
        reason: Reason,
        /// The source the new grant (or the taking-back entries) record.
        source: (GrantSource, String),
    },
    /// Sets or clears the customer's plan.
    SetPlan { plan: Option<String> },
    /// Sets or turns off the customer's auto top-up.
    SetAutoTopup { setting: Option<Setting> },
    /// Replaces the customer's spend limits, each starting from what the ledger says was spent
    /// in its current window (read by the unit of work under the customer's lock: [`Read`]).
    SetLimits { limits: Vec<Limit> },
    /// Sets (or, with none, removes) the customer's own low-balance thresholds.
    SetLowBalance { own: Option<LowBalance> },
    /// Puts the customer under `parent` (README, Organizations), or on its own with none. The
    /// unit of work reads the trees of both under their locks ([`Read::tree`]).
    SetParent { parent: Option<CustomerId> },
    /// Makes `made` the override of its feature, action or overage rule for the customer,
    /// replacing the one before it.
    SetOverride { made: Override },
    /// What is due at the command's time, and nothing more: the expiry job.
    Settle,
    /// The revenue job: what is due at the command's time, and the time-driven revenue of these
    /// paid grants' lots (the platform part's days ended by then, a changed breakage estimate).
    Recognize { grant_ids: Vec<String> },
    /// Grants bought through Stripe (a pack, a plan period, credits moved to a linked account).
    AddGrants { grants: Vec<Grant> },
    /// Moves the free credits of these grants of the book to customer `to`, each as a new grant
    /// (its id beside the old one's) of the same kind, expiry and priority, carrying its share
    /// of what the old grant was paid (a Stripe customer's account is now linked to another).
    /// A command on two books: its own and `to`'s, both locked and decided together.
    MoveGrants {
        to: CustomerId,
        moves: Vec<(String, String)>,
    },
    /// Carries the unused credits of plan grants that ended at a period boundary into the next
    /// period (`Book::roll_over`).
    RollOver {
        lapsed: Vec<(String, Credits)>,
        room: Credits,
        period_end: Timestamp,
    },
    /// Takes back credits for money refunded, grant by grant (money per grant).
    ClawBack { money: Vec<(String, Money)> },
    /// Settles one payment's disputes and refunds on the grants it bought: thaws them, takes
    /// back (or gives back, when refunds failed) the money per grant, and freezes them again
    /// while a dispute is open.
    SettlePayment {
        grant_ids: Vec<String>,
        money: Vec<(String, Money)>,
        /// When giving back: what clawbacks took from each grant so far.
        clawed: BTreeMap<String, Credits>,
        giving_back: bool,
        freeze: bool,
    },
}

impl Command {
    /// May the command create its customer when unknown? Spends and settings need a customer
    /// that exists; grants (and Stripe's facts) bring one into being. With a default plan, any
    /// command does: a customer first seen gets its default plan's first grant in that command.
    pub fn creates_customer(&self, catalog: &Catalog) -> bool {
        if catalog.default_plan.is_some() {
            return true;
        }
        match self {
            Command::Authorize { .. }
            | Command::Capture { .. }
            | Command::Void { .. }
            | Command::Usage { .. }
            | Command::SetAutoTopup { .. }
            | Command::SetLimits { .. }
            | Command::SetLowBalance { .. }
            | Command::Settle
            | Command::Recognize { .. } => false,
            // A member account is put under its organization before its first call.
            Command::SetOverride { .. } | Command::SetParent { .. } => true,
            Command::Adjust { change, .. } => change.may_create_customer(),
            Command::Grant { .. }
            | Command::SetPlan { .. }
            | Command::AddGrants { .. }
            | Command::MoveGrants { .. }
            | Command::RollOver { .. }
            | Command::ClawBack { .. }
            | Command::SettlePayment { .. } => true,
        }
    }

    /// The customers it changes besides its own, at most [`MAX_OTHER_CUSTOMERS`]: the unit of
    /// work locks them with the batch's other customers (in id order), loads their books and
    /// decides the command on all of them at once ([`decide_across`]).
    pub fn others(&self) -> &[CustomerId] {
        match self {
            Command::MoveGrants { to, .. } => std::slice::from_ref(to),
            _ => &[],
        }
    }

    /// Does deciding it need what the customer spent this month ([`Read::spent_this_month`])?
    pub fn reads_spent(&self) -> bool {
        matches!(self, Command::SetLimits { .. })
    }

    /// Customers it reads under their locks without changing them: a new parent, whose tree
    /// must not change until the command commits ([`Read::tree`]).
    pub fn locks_too(&self) -> &[CustomerId] {
        match self {
            Command::SetParent { parent: Some(p) } => std::slice::from_ref(p),
            _ => &[],
        }
    }

    /// The hold it resolves, loaded even when no longer open (to say why it cannot be).
    pub fn hold(&self) -> Option<&str> {
        match self {
            Command::Capture { hold_id, .. } | Command::Void { hold_id } => Some(hold_id),
            _ => None,
        }
    }

    /// Lots whose time-driven revenue the command recognizes when it posts.
    pub fn recognizes(&self) -> &[String] {
        match self {
            Command::Recognize { grant_ids } => grant_ids,
            _ => &[],
        }
    }

    /// Grants it acts on that must be loaded even when spent or expired.
    pub fn grants_named(&self) -> Vec<&str> {
        match self {
            Command::SettlePayment { grant_ids, .. } => {
                grant_ids.iter().map(String::as_str).collect()
            }
            Command::MoveGrants { moves, .. } => moves.iter().map(|(id, _)| id.as_str()).collect(),
            Command::RollOver { lapsed, .. } => lapsed.iter().map(|(id, _)| id.as_str()).collect(),
            Command::Recognize { grant_ids } => grant_ids.iter().map(String::as_str).collect(),
            Command::ClawBack { money } => money.iter().map(|(id, _)| id.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The most customers a command changes besides its own ([`Command::others`]): a customer and
/// the pools of its organization above it are at most three books.
pub const MAX_OTHER_CUSTOMERS: usize = 2;

/// Free credits of one grant moved to another customer's new grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Transferred {
    pub from_grant: String,
    pub to_grant: String,
    pub credits: Credits,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Held(AuthorizationResponse),
    Resolved(ResolutionResponse),
    Used(UsageResponse),
    Granted(GrantResponse),
    Adjusted(AdjustmentResponse),
    /// A setting changed, or what was due settled.
    Done,
    /// Credits moved: carried over, taken back or given back.
    Moved(Credits),
    /// Grants' free credits moved to another customer: each move that found free credits.
    Transferred(Vec<Transferred>),
    /// The customer's spend limits as set, and where each stands.
    LimitsSet(Vec<LimitState>),
    /// The low-balance rule now in force for the customer (its own thresholds over its plan's,
    /// its pack's and `[alerts]`').
    Thresholds(AlertRule),
    /// The override as made (replayed: as first made under its key).
    Overridden(Override),
}

/// Why an answer kept for a replay cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoredAnswerError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the command's answer is not kept for replays")]
    NotKept,
}

impl Answer {
    /// The answer as kept under an idempotency key: the response body the caller received.
    pub fn stored(&self) -> Result<String, StoredAnswerError> {
        Ok(match self {
            Answer::Held(a) => serde_json::to_string(a)?,
            Answer::Resolved(a) => serde_json::to_string(a)?,
            Answer::Used(a) => serde_json::to_string(a)?,
            Answer::Granted(a) => serde_json::to_string(a)?,
            Answer::Adjusted(a) => serde_json::to_string(a)?,
            Answer::Done => "null".to_owned(),
            Answer::Overridden(made) => serde_json::to_string(made)?,
            Answer::Moved(_)
            | Answer::Transferred(_)
            | Answer::LimitsSet(_)
            | Answer::Thresholds(_) => {
                return Err(StoredAnswerError::NotKept);
            }
        })
    }

    /// The answer `command` first gave, read back from what [`Answer::stored`] kept.
    pub fn replayed(command: &Command, body: &str) -> Result<Answer, StoredAnswerError> {
        Ok(match command {
            Command::Authorize { .. } => Answer::Held(serde_json::from_str(body)?),
            Command::Capture { .. } | Command::Void { .. } => {
                Answer::Resolved(serde_json::from_str(body)?)
            }
            Command::Usage { .. } => Answer::Used(serde_json::from_str(body)?),
            Command::Grant { .. } => Answer::Granted(serde_json::from_str(body)?),
            Command::Adjust { .. } => Answer::Adjusted(serde_json::from_str(body)?),
            Command::SetOverride { .. } => Answer::Overridden(serde_json::from_str(body)?),
            Command::SetPlan { .. }
            | Command::SetAutoTopup { .. }
            | Command::Settle
            | Command::Recognize { .. } => Answer::Done,
            Command::AddGrants { .. }
            | Command::MoveGrants { .. }
            | Command::RollOver { .. }
            | Command::ClawBack { .. }
            | Command::SettlePayment { .. }
            | Command::SetLimits { .. }
            | Command::SetLowBalance { .. }
            | Command::SetParent { .. } => return Err(StoredAnswerError::NotKept),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuthorizationResponse {
    pub id: String,
    /// `held`.
    #[schema(value_type = String)]
    pub status: HoldStatus,
    #[schema(value_type = String)]
    pub customer: CustomerId,
    pub action: String,
    #[schema(value_type = String)]
    pub credits: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
    pub expires_at: DateTime<Utc>,
    /// Who inside the customer holds it, when the authorization named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub subject: Option<Subject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolutionResponse {
    pub id: String,
    /// `captured` or `voided`.
    #[schema(value_type = String)]
    pub status: HoldStatus,
    #[schema(value_type = String)]
    pub credits: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    pub id: String,
    #[schema(value_type = String)]
    pub customer: CustomerId,
    pub action: String,
    #[schema(value_type = String)]
    pub credits: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
    /// Who inside the customer used it, when the usage named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub subject: Option<Subject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    pub id: String,
    #[schema(value_type = String)]
    pub customer: CustomerId,
    #[schema(value_type = String)]
    pub kind: GrantKind,
    #[schema(value_type = String)]
    pub credits: Credits,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    #[schema(value_type = String)]
    pub balance: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
}

/// One grant an adjustment moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdjustedGrant {
    pub grant: String,
    /// Credits added (positive) or taken back (negative).
    #[schema(value_type = String)]
    pub credits: Credits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentResponse {
    #[schema(value_type = String)]
    pub customer: CustomerId,
    #[schema(value_type = String)]
    pub credits: Credits,
    pub reason: String,
    /// The grant added, or the grants credits were taken from, in the order taken.
    pub grants: Vec<AdjustedGrant>,
    #[schema(value_type = String)]
    pub balance: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
}

/// The rules a decision follows besides the customer's own: the catalog and the gate's policy.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub catalog: &'a Catalog,
    pub policy: Policy,
}

/// What a command needs besides the book and standing, read by the unit of work under the
/// customer's lock when the command asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    /// What the customer spent this month up to the command (ledger and batch), when
    /// [`Command::reads_spent`].
    pub spent_this_month: Option<SpentThisMonth>,
    /// Where the customer would stand, for [`Command::SetParent`]: the new parent and its
    /// ancestors (none when it names none, or none that exists), and how many levels of
    /// customers are below the customer.
    pub tree: Option<Tree>,
}

/// A customer's place in its organization as the unit of work reads it, under the locks of
/// every customer of both trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub above: Option<organization::Above>,
    pub levels_below: usize,
    /// Open holds of the customer and of those below it that reserve credits on grants of its
    /// present pools.
    pub holds_on_pools: usize,
}

/// The one decision of every command: settles what is due at `now`, applies `command` to the
/// book and standing, and checks the book's invariants. On refusal the book and standing may be
/// partly changed: the caller discards them (nothing of a refused command is written).
pub fn decide(
    rules: Rules<'_>,
    book: &mut Book,
    standing: &mut Standing,
    command: &Command,
    now: Timestamp,
) -> Result<Answer, Refusal> {
    decide_with(rules, book, standing, command, &Read::default(), now)
}

/// [`decide`], with what the command needed read beside the book.
pub fn decide_with(
    rules: Rules<'_>,
    book: &mut Book,
    standing: &mut Standing,
    command: &Command,
    read: &Read,
    now: Timestamp,
) -> Result<Answer, Refusal> {
    decide_across(rules, book, standing, &mut [], command, read, now)
}

/// What is due at `now`, before anything a command does and in everything a read shows: holds
/// and grants past their expiry settled, grants bought ahead started (with what the months
/// before them carry over, [`cycle::carry_into_started`]), then the customer's credit cycle
/// moved on ([`cycle::advance`]: a period's grant, a first sight's default plan).
pub fn settle_due(catalog: &Catalog, book: &mut Book, standing: &mut Standing, now: Timestamp) {
    let started = book.settle_due(now);
    cycle::carry_into_started(catalog, book, &started, now);
    cycle::advance(
        catalog,
        book,
        standing.plan_id.as_deref(),
        &mut standing.cycle,
        now,
    );
}

/// Settles at `now` what is due in the books above a customer (`above[0]` its parent's, with
/// its standing), from the top, each with the grants above it lent: a lent grant expires and
/// starts in its owner's book before anyone below spends it.
pub fn settle_above(catalog: &Catalog, above: &mut [(&mut Book, &mut Standing)], now: Timestamp) {
    for at in (0..above.len()).rev() {
        let (here, higher) = above.split_at_mut(at + 1);
        let (book, standing) = &mut here[at];
        let higher_books: Vec<&Book> = higher.iter().map(|(b, _)| &**b).collect();
        let mut lent = organization::lend(book, &higher_books);
        settle_due(catalog, &mut lent, standing, now);
        let mut owners: Vec<&mut Book> = higher.iter_mut().map(|(b, _)| &mut **b).collect();
        organization::give_back(&mut lent, &mut owners, now);
        **book = lent;
    }
}

/// A customer nobody has seen, as its first command would find it: with a default plan, the
/// plan's first grant; `None` without one (an unknown customer has nothing).
pub fn first_sight(
    catalog: &Catalog,
    customer: CustomerId,
    now: Timestamp,
) -> Option<(Book, Standing)> {
    catalog.default_plan.as_ref()?;
    let (mut book, mut standing) = (Book::new(customer), Standing::default());
    settle_due(catalog, &mut book, &mut standing, now);
    Some((book, standing))
}

/// The book of a customer a command changes besides its own ([`Command::others`]).
#[derive(Debug)]
pub struct Other<'a> {
    pub customer: &'a CustomerId,
    pub book: &'a mut Book,
}

/// [`decide_with`] for a command on several books: its customer's, and `others`, one for each
/// of [`Command::others`] in that order. Each book settles what is due at `now` and keeps its
/// invariants, or nothing of the command stands.
pub fn decide_across(
    rules: Rules<'_>,
    book: &mut Book,
    standing: &mut Standing,
    others: &mut [Other<'_>],
    command: &Command,
    read: &Read,
    now: Timestamp,
) -> Result<Answer, Refusal> {
    let named = command.others();
    let given: Vec<&CustomerId> = others.iter().map(|o| o.customer).collect();
    if given.len() != named.len()
        || named.len() > MAX_OTHER_CUSTOMERS
        || given.iter().zip(named).any(|(g, n)| *g != n)
        || named.contains(&book.customer_id)
    {
        return Err(Rejection::InvariantViolated(format!(
            "customer {} and the books of {given:?} for a command naming {named:?}",
            book.customer_id
        ))
        .into());
    }
    settle_due(rules.catalog, book, standing, now);
    for other in others.iter_mut() {
        other.book.settle_due(now);
    }
    let answer = match (command, &mut *others) {
        (Command::MoveGrants { moves, .. }, [to]) => move_grants(book, to.book, moves, now)?,
        (_, _) => apply(rules, book, standing, command, read, now)?,
    };
    book.check_invariants()?;
    for other in others.iter() {
        other.book.check_invariants()?;
    }
    Ok(answer)
}

/// Moves the free credits of grants of `from` to new grants of `to` (README, Stripe: a link
/// learnt late): each new grant keeps the old one's kind, expiry and priority and carries the
/// share of its price that the credits moved are of its credits. Held credits stay.
fn move_grants(
    from: &mut Book,
    to: &mut Book,
    moves: &[(String, String)],
    now: Timestamp,
) -> Result<Answer, Rejection> {
    let mut moved = Vec::new();
    for (grant_id, new_id) in moves {
        if !from.grants.iter().any(|g| &g.id == grant_id) {
            return Err(Rejection::InvariantViolated(format!(
                "grant {grant_id} to move is not customer {}'s",
                from.customer_id
            )));
        }
        let Some((before, free)) = from.transfer_out(grant_id, now) else {
            continue;
        };
        let price = before.price.map(|price| {
            revrec::share(
                price,
                free,
                before.credits,
                before.currency.as_deref().unwrap_or(""),
            )
        });
        to.add_grant(Grant::transferred(new_id, &before, free, price, now), now);
        moved.push(Transferred {
            from_grant: grant_id.clone(),
            to_grant: new_id.clone(),
            credits: free,
        });
    }
    Ok(Answer::Transferred(moved))
}

// Long: one arm per command, each the whole of that command's rule.
fn apply(
    rules: Rules<'_>,
    book: &mut Book,
    standing: &mut Standing,
    command: &Command,
    read: &Read,
    now: Timestamp,
) -> Result<Answer, Refusal> {
    let spend = |book: &mut Book, standing: &mut Standing, spend: &gate::Spend<'_>| {
        gate::decide(rules.catalog, standing, rules.policy, book, spend, now)
    };
    Ok(match command {
        Command::Authorize {
            hold_id,
            action,
            quantity,
            subject,
            expires_at,
        } => {
            let decided = spend(
                book,
                standing,
                &gate::Spend::Authorize {
                    action,
                    quantity: *quantity,
                    subject: subject.as_ref(),
                    hold_id,
                    expires_at: *expires_at,
                },
            )?;
            Answer::Held(AuthorizationResponse {
                id: hold_id.clone(),
                status: HoldStatus::Held,
                customer: book.customer_id.clone(),
                action: action.id.clone(),
                credits: decided.credits,
                available: decided.available,
                expires_at: *expires_at,
                subject: subject.clone(),
            })
        }
        Command::Capture { hold_id, actual } => {
            let decided = spend(
                book,
                standing,
                &gate::Spend::Capture {
                    hold_id,
                    actual: *actual,
                },
            )?;
            Answer::Resolved(ResolutionResponse {
                id: hold_id.clone(),
                status: HoldStatus::Captured,
                credits: decided.credits,
                available: decided.available,
            })
        }
        Command::Void { hold_id } => {
            let decided = spend(book, standing, &gate::Spend::Void { hold_id })?;
            Answer::Resolved(ResolutionResponse {
                id: hold_id.clone(),
                status: HoldStatus::Voided,
                credits: decided.credits,
                available: decided.available,
            })
        }
        Command::Usage {
            usage_id,
            action,
            quantity,
            subject,
            occurred_at,
        } => {
            // Spent now, against what is available now; dated when it happened.
            let decided = spend(
                book,
                standing,
                &gate::Spend::Usage {
                    action,
                    quantity: *quantity,
                    subject: subject.as_ref(),
                    occurred_at: *occurred_at,
                },
            )?;
            Answer::Used(UsageResponse {
                id: usage_id.clone(),
                customer: book.customer_id.clone(),
                action: action.id.clone(),
                credits: decided.credits,
                available: decided.available,
                subject: subject.clone(),
            })
        }
        Command::Grant { grant } => {
            book.add_grant(grant.clone(), now);
            Answer::Granted(GrantResponse {
                id: grant.id.clone(),
                customer: book.customer_id.clone(),
                kind: grant.kind,
                credits: grant.credits,
                expires_at: grant.expires_at,
                priority: grant.priority,
                balance: book.balance(),
                available: book.available(),
            })
        }
        Command::Adjust {
            change,
            grant_id,
            reason,
            source,
        } => {
            let moved = adjustment::apply(book, *change, grant_id, reason, source.clone(), now)?;
            Answer::Adjusted(AdjustmentResponse {
                customer: book.customer_id.clone(),
                credits: change.signed(),
                reason: reason.as_str().to_owned(),
                grants: moved
                    .into_iter()
                    .map(|(grant, credits)| AdjustedGrant { grant, credits })
                    .collect(),
                balance: book.balance(),
                available: book.available(),
            })
        }
        Command::SetPlan { plan } => {
            standing.plan_id = plan.clone();
            cycle::set_plan(
                rules.catalog,
                book,
                plan.as_deref(),
                &mut standing.cycle,
                now,
            );
            Answer::Done
        }
        Command::SetAutoTopup { setting } => {
            standing.auto_topup.set(setting.clone());
            Answer::Done
        }
        Command::SetLimits { limits } => {
            let spent = read
                .spent_this_month
                .as_ref()
                .expect("the unit of work reads what was spent before it decides SetLimits");
            standing
                .limits
                .replace(limits.clone(), spent, rules.catalog, now);
            Answer::LimitsSet(standing.limits.states(book, rules.catalog, now))
        }
        Command::SetLowBalance { own } => {
            standing.low_balance = *own;
            Answer::Thresholds(rules.catalog.alert_rule(
                standing.plan_id.as_deref(),
                alerts::current_pack(book),
                own.as_ref(),
            ))
        }
        Command::SetOverride { made } => {
            standing.overrides.set(made.clone());
            Answer::Overridden(made.clone())
        }
        Command::SetParent { parent } => {
            let tree = read
                .tree
                .as_ref()
                .expect("the unit of work reads the trees before it decides SetParent");
            let above = match (parent, &tree.above) {
                (None, _) => None,
                (Some(p), Some(above)) if above.parent == *p => Some(above),
                (Some(p), _) => {
                    return Err(Refusal::Parent(organization::ParentRefusal::UnknownParent(
                        p.clone(),
                    )));
                }
            };
            if *parent != standing.parent && tree.holds_on_pools > 0 {
                return Err(Refusal::Parent(organization::ParentRefusal::HoldsOnPools {
                    holds: tree.holds_on_pools,
                }));
            }
            organization::check_parent(&book.customer_id, above, tree.levels_below)
                .map_err(Refusal::Parent)?;
            standing.parent = parent.clone();
            Answer::Done
        }
        // The book only settles; the lots move when the unit of work posts (`journal::post`).
        Command::Settle | Command::Recognize { .. } => Answer::Done,
        Command::AddGrants { grants } => {
            for grant in grants {
                book.add_grant(grant.clone(), now);
            }
            Answer::Done
        }
        Command::MoveGrants { .. } => {
            return Err(Rejection::InvariantViolated(
                "a command on two books decided on one".into(),
            )
            .into());
        }
        Command::RollOver {
            lapsed,
            room,
            period_end,
        } => Answer::Moved(book.roll_over(lapsed, *room, *period_end, now)),
        Command::ClawBack { money } => Answer::Moved(
            money
                .iter()
                .map(|(id, money)| book.claw_back(id, *money, now))
                .sum(),
        ),
        Command::SettlePayment {
            grant_ids,
            money,
            clawed,
            giving_back,
            freeze,
        } => {
            // Thawed before anything is taken back (a lost dispute takes what it froze), frozen
            // after anything given back (an open dispute keeps it out of reach).
            let on_book: Vec<&String> = grant_ids
                .iter()
                .filter(|id| book.grants.iter().any(|g| &g.id == *id))
                .collect();
            for id in &on_book {
                book.set_frozen(id, false);
            }
            let moved = money
                .iter()
                .map(|(id, money)| {
                    if *giving_back {
                        let took = clawed.get(id).copied().unwrap_or(Credits::ZERO);
                        book.reverse_claw_back(id, *money, took, now)
                    } else {
                        book.claw_back(id, *money, now)
                    }
                })
                .sum::<Credits>();
            for id in &on_book {
                book.set_frozen(id, *freeze);
            }
            Answer::Moved(moved)
        }
    })
}

/// How a batch left one customer's book, for what follows from it.
#[derive(Debug, Clone, Copy)]
pub struct Moved<'a> {
    pub customer: &'a CustomerId,
    /// The book and standing as loaded, and the book as the batch's commands left it.
    pub before: &'a Book,
    pub after: &'a Book,
    pub standing_before: &'a Standing,
    /// Hard spend limits that refused a command of the batch, and the member they refused.
    pub refused: &'a [(Limit, Option<Subject>)],
}

/// What follows from a batch's change of one customer's book, written with it.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterBatch {
    /// The balance alerts sent since the last recovery, as the batch leaves them.
    pub alerts: Armed,
    /// Spend limit and balance alerts to send.
    pub messages: Vec<Message>,
    /// An auto top-up charge to start.
    pub auto_topup: Option<Start>,
}

/// What follows from a batch's change of one customer's book at `now` (the time of its latest
/// command): spend limits reached, balance alerts crossed (judged by the plan's, the pack's or
/// the customer's own rule), and an auto top-up due. Marks in `standing` what it decided (limit
/// alerts sent, a charge in flight).
pub fn after_batch(
    catalog: &Catalog,
    moved: Moved<'_>,
    standing: &mut Standing,
    armed: Armed,
    now: Timestamp,
) -> AfterBatch {
    let Moved {
        customer,
        before,
        after,
        standing_before,
        refused,
    } = moved;
    let mut messages = Vec::new();
    if !standing.limits.is_empty() {
        messages.extend(
            standing
                .limits
                .reached(customer, after, catalog, refused, now),
        );
    }
    // The pack the customer was on when its balance moved.
    let pack = alerts::current_pack(before).or_else(|| alerts::current_pack(after));
    let rule = catalog.alert_rule(
        standing.plan_id.as_deref(),
        pack,
        standing.low_balance.as_ref(),
    );
    let (alerts, said) = alerts::balance_alerts(
        customer,
        armed,
        Balance::of(before),
        Balance::of(after),
        &rule,
        now,
    );
    messages.extend(said);
    let just_set = standing.auto_topup.set_since(&standing_before.auto_topup);
    let auto_topup = standing.auto_topup.start_if_due(
        customer,
        just_set,
        before.available(),
        after.available(),
        catalog,
        now,
    );
    AfterBatch {
        alerts,
        messages,
        auto_topup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Feature;
    use crate::domain::ledger::{EntryKind, Rejection};
    use chrono::TimeZone;

    fn at(minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, minute, 0).unwrap()
    }

    fn credits(n: i64) -> Credits {
        Credits::from_micros(n * 1_000_000)
    }

    fn catalog() -> Catalog {
        let feature = Feature {
            id: "chat".into(),
            plan_only: false,
        };
        let action = Action {
            id: "chat.request".into(),
            feature: "chat".into(),
            credits: credits(1),
            vendor_cost: None,
            changes: Vec::new(),
        };
        Catalog {
            currency: "usd".into(),
            features: [("chat".to_owned(), feature)].into(),
            actions: [("chat.request".to_owned(), action)].into(),
            ..Default::default()
        }
    }

    fn rules(catalog: &Catalog) -> Rules<'_> {
        Rules {
            catalog,
            policy: Policy {
                past_due_grace_seconds: 0,
            },
        }
    }

    fn promotional(id: &str, n: i64) -> Command {
        Command::Grant {
            grant: Grant::promotional(id, credits(n), (GrantSource::Admin, "test".into()), at(0)),
        }
    }

    #[test]
    fn a_grant_then_an_authorization_and_its_capture_answer_what_moved() {
        let catalog = catalog();
        let action = catalog.actions.values().next().unwrap().clone();
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let granted = decide(
            rules(&catalog),
            &mut book,
            &mut standing,
            &promotional("g1", 10),
            at(0),
        )
        .unwrap();
        let Answer::Granted(g) = granted else {
            panic!("{granted:?}")
        };
        assert_eq!((g.balance, g.available), (credits(10), credits(10)));
        let hold = Command::Authorize {
            subject: None,
            hold_id: "h1".into(),
            action: action.clone(),
            quantity: Quantity::try_from(rust_decimal::Decimal::from(3)).unwrap(),
            expires_at: at(10),
        };
        let Answer::Held(held) =
            decide(rules(&catalog), &mut book, &mut standing, &hold, at(1)).unwrap()
        else {
            panic!()
        };
        assert_eq!(held.customer, "c");
        assert_eq!(held.available, credits(10) - held.credits);
        let capture = Command::Capture {
            hold_id: "h1".into(),
            actual: Actual::Nothing,
        };
        let Answer::Resolved(resolved) =
            decide(rules(&catalog), &mut book, &mut standing, &capture, at(2)).unwrap()
        else {
            panic!()
        };
        assert_eq!(resolved.status, HoldStatus::Captured);
        assert_eq!(resolved.available, credits(10));
        // A second resolution of the same hold is refused.
        let again = decide(
            rules(&catalog),
            &mut book,
            &mut standing,
            &Command::Void {
                hold_id: "h1".into(),
            },
            at(3),
        );
        assert!(matches!(again, Err(Refusal::Book(_))), "{again:?}");
    }

    #[test]
    fn settle_expires_what_is_due_and_nothing_else() {
        let catalog = catalog();
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let Command::Grant { grant } = promotional("g1", 5) else {
            unreachable!()
        };
        let expiring = Command::Grant {
            grant: grant.expiring(Some(at(5))),
        };
        decide(rules(&catalog), &mut book, &mut standing, &expiring, at(0)).unwrap();
        book.entries.clear();
        let answer = decide(
            rules(&catalog),
            &mut book,
            &mut standing,
            &Command::Settle,
            at(6),
        );
        assert_eq!(answer.unwrap(), Answer::Done);
        assert_eq!(book.balance(), Credits::ZERO);
        assert!(book.entries.iter().all(|e| e.kind == EntryKind::Expire));
    }

    #[test]
    fn taking_back_more_than_is_available_is_refused_and_answers_nothing() {
        let catalog = catalog();
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let take = Command::Adjust {
            change: Change::parse(rust_decimal::Decimal::from(-5)).unwrap(),
            grant_id: "g2".into(),
            reason: Reason::parse("test").unwrap(),
            source: (GrantSource::Admin, "k: test".into()),
        };
        let refused = decide(rules(&catalog), &mut book, &mut standing, &take, at(0));
        assert!(
            matches!(
                refused,
                Err(Refusal::Book(Rejection::ExceedsAvailable { .. }))
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn kept_answers_read_back_as_the_same_answer() {
        let answer = Answer::Used(UsageResponse {
            subject: None,
            id: "usage_1".into(),
            customer: CustomerId::known("c"),
            action: "chat".into(),
            credits: credits(2),
            available: credits(8),
        });
        let command = Command::Usage {
            subject: None,
            usage_id: "usage_1".into(),
            action: catalog().actions.values().next().unwrap().clone(),
            quantity: Quantity::try_from(rust_decimal::Decimal::ONE).unwrap(),
            occurred_at: at(0),
        };
        let kept = answer.stored().unwrap();
        assert_eq!(Answer::replayed(&command, &kept).unwrap(), answer);
        assert!(matches!(
            Answer::Moved(credits(1)).stored(),
            Err(StoredAnswerError::NotKept)
        ));
    }

    /// A book with a pack of 100 credits bought for 10.00 usd, 30 of them held.
    fn paid_and_held(catalog: &Catalog) -> (Book, Standing) {
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let paid = crate::domain::ledger::Paid {
            price: Money::from_micros(10_000_000),
            currency: "usd".into(),
        };
        let pack = Grant::pack(
            "g1",
            "small",
            credits(100),
            paid,
            (GrantSource::Test, "cs_1".into()),
            at(0),
        );
        let add = Command::AddGrants { grants: vec![pack] };
        decide(rules(catalog), &mut book, &mut standing, &add, at(0)).unwrap();
        let hold = Command::Authorize {
            subject: None,
            hold_id: "h1".into(),
            action: catalog.actions["chat.request"].clone(),
            quantity: Quantity::try_from(rust_decimal::Decimal::from(30)).unwrap(),
            expires_at: at(30),
        };
        decide(rules(catalog), &mut book, &mut standing, &hold, at(1)).unwrap();
        book.entries.clear();
        (book, standing)
    }

    /// Decides `command` on `book` and one other book, `to`'s.
    fn decide_on_two(
        catalog: &Catalog,
        (book, standing): (&mut Book, &mut Standing),
        (to, other): (&CustomerId, &mut Book),
        command: &Command,
        now: Timestamp,
    ) -> Result<Answer, Refusal> {
        let mut others = [Other {
            customer: to,
            book: other,
        }];
        decide_across(
            rules(catalog),
            book,
            standing,
            &mut others,
            command,
            &Read::default(),
            now,
        )
    }

    #[test]
    fn a_move_takes_the_free_credits_to_the_other_book_with_their_share_of_the_price() {
        let catalog = catalog();
        let (mut book, mut standing) = paid_and_held(&catalog);
        let mut to = Book::new(CustomerId::known("d"));
        let to_id = CustomerId::known("d");
        let move_grants = Command::MoveGrants {
            to: to_id.clone(),
            moves: vec![("g1".into(), "g2".into())],
        };
        let answer = decide_on_two(
            &catalog,
            (&mut book, &mut standing),
            (&to_id, &mut to),
            &move_grants,
            at(2),
        )
        .unwrap();
        assert_eq!(
            answer,
            Answer::Transferred(vec![Transferred {
                from_grant: "g1".into(),
                to_grant: "g2".into(),
                credits: credits(70),
            }])
        );
        // The held 30 stay with the hold; the free 70 move, with 70% of the 10.00 paid.
        assert_eq!(
            (book.balance(), book.available()),
            (credits(30), credits(0))
        );
        assert_eq!(book.entries.len(), 1);
        assert_eq!(book.entries[0].kind, EntryKind::Transfer);
        assert_eq!(book.entries[0].credits, -credits(70));
        let moved = &to.grants[0];
        assert_eq!((moved.id.as_str(), moved.kind), ("g2", GrantKind::Pack));
        assert_eq!(moved.pack_id.as_deref(), Some("small"));
        assert_eq!(moved.credits, credits(70));
        assert_eq!(moved.price, Some(Money::from_micros(7_000_000)));
        assert_eq!(moved.source_type, GrantSource::Transfer);
        assert_eq!(moved.source_id, "g1");
        assert_eq!(to.available(), credits(70));
        assert_eq!(to.entries[0].kind, EntryKind::Grant);
        // Nothing free is left to move: a second move moves nothing.
        book.entries.clear();
        let again = decide_on_two(
            &catalog,
            (&mut book, &mut standing),
            (&to_id, &mut to),
            &move_grants,
            at(3),
        )
        .unwrap();
        assert_eq!(again, Answer::Transferred(Vec::new()));
        assert!(book.entries.is_empty());
    }

    #[test]
    fn a_command_on_two_books_is_refused_without_the_second_or_onto_its_own() {
        let catalog = catalog();
        let (mut book, mut standing) = paid_and_held(&catalog);
        let moving = |to: &str| Command::MoveGrants {
            to: CustomerId::known(to),
            moves: vec![("g1".into(), "g2".into())],
        };
        // Decided on one book only.
        let alone = decide(
            rules(&catalog),
            &mut book,
            &mut standing,
            &moving("d"),
            at(2),
        );
        assert!(matches!(
            alone,
            Err(Refusal::Book(Rejection::InvariantViolated(_)))
        ));
        // Onto the customer's own book.
        let (mut again, own) = (Book::new(CustomerId::known("c")), CustomerId::known("c"));
        let onto_itself = decide_on_two(
            &catalog,
            (&mut book, &mut standing),
            (&own, &mut again),
            &moving("c"),
            at(2),
        );
        assert!(matches!(
            onto_itself,
            Err(Refusal::Book(Rejection::InvariantViolated(_)))
        ));
        // A grant that is not the customer's.
        let (mut to, d) = (Book::new(CustomerId::known("d")), CustomerId::known("d"));
        let foreign = Command::MoveGrants {
            to: d.clone(),
            moves: vec![("g9".into(), "g2".into())],
        };
        let refused = decide_on_two(
            &catalog,
            (&mut book, &mut standing),
            (&d, &mut to),
            &foreign,
            at(2),
        );
        assert!(matches!(
            refused,
            Err(Refusal::Book(Rejection::InvariantViolated(_)))
        ));
    }

    /// A book holding one promotional grant of `amount`, its entries already written.
    fn funded(catalog: &Catalog, amount: i64) -> (Book, Standing) {
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let grant = promotional("g1", amount);
        decide(rules(catalog), &mut book, &mut standing, &grant, at(0)).unwrap();
        book.entries.clear();
        (book, standing)
    }

    /// Records `quantity` chat requests as usage `u1`.
    fn spend_chat(
        catalog: &Catalog,
        book: &mut Book,
        standing: &mut Standing,
        quantity: i64,
        now: Timestamp,
    ) {
        let usage = Command::Usage {
            subject: None,
            usage_id: "u1".into(),
            action: catalog.actions["chat.request"].clone(),
            quantity: Quantity::try_from(rust_decimal::Decimal::from(quantity)).unwrap(),
            occurred_at: now,
        };
        decide(rules(catalog), book, standing, &usage, now).unwrap();
    }

    #[test]
    fn spending_everything_says_depleted_once() {
        use crate::domain::outbound::EventType;
        let catalog = catalog();
        let (before, mut standing) = funded(&catalog, 4);
        let mut after = before.clone();
        spend_chat(&catalog, &mut after, &mut standing, 4, at(1));
        let standing_before = standing.clone();
        let moved = Moved {
            customer: &CustomerId::known("c"),
            before: &before,
            after: &after,
            standing_before: &standing_before,
            refused: &[],
        };
        let first = after_batch(&catalog, moved, &mut standing, Armed::default(), at(1));
        let kinds: Vec<EventType> = first.messages.iter().map(|m| m.event_type).collect();
        assert!(kinds.contains(&EventType::BalanceDepleted), "{kinds:?}");
        assert_eq!(first.auto_topup, None);
        // The same move again, with the alerts as the first left them: nothing more is said.
        let again = after_batch(&catalog, moved, &mut standing, first.alerts, at(2));
        assert!(
            again
                .messages
                .iter()
                .all(|m| m.event_type != EventType::BalanceDepleted),
            "{:?}",
            again.messages
        );
    }

    #[test]
    fn a_limit_set_counts_what_the_ledger_and_the_batch_already_spent() {
        use crate::domain::limits::{Mode, Period};
        let catalog = catalog();
        let (mut book, mut standing) = funded(&catalog, 10);
        spend_chat(&catalog, &mut book, &mut standing, 3, at(1));
        // The ledger said 2 were spent earlier today; the batch's usage of 3 is not in it yet.
        let mut spent = SpentThisMonth {
            rows: vec![crate::domain::limits::SpentRow {
                action: Some("chat.request".into()),
                subject: None,
                today: credits(2),
                earlier: Credits::ZERO,
            }],
        };
        spent.add(&std::mem::take(&mut book.entries), at(1), at(2));
        let read = Read {
            spent_this_month: Some(spent),
            tree: None,
        };
        let set = Command::SetLimits {
            limits: vec![Limit {
                members: Default::default(),
                period: Period::Day,
                feature: None,
                credits: credits(6),
                mode: Mode::Hard,
            }],
        };
        let answer = decide_with(
            rules(&catalog),
            &mut book,
            &mut standing,
            &set,
            &read,
            at(2),
        )
        .unwrap();
        let Answer::LimitsSet(states) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].spent, credits(5));
        assert_eq!(states[0].remaining, credits(1));
        assert!(!standing.limits.is_empty());
    }

    #[test]
    fn the_customers_own_threshold_wins_and_removing_it_falls_back() {
        let catalog = catalog();
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing::default();
        let own = LowBalance {
            consumed_share: None,
            credits: Some(credits(3)),
        };
        let set = Command::SetLowBalance { own: Some(own) };
        let answer = decide(rules(&catalog), &mut book, &mut standing, &set, at(0)).unwrap();
        assert_eq!(
            answer,
            Answer::Thresholds(catalog.alerts.with(Some(&own))),
            "its credits replace the default's"
        );
        assert_eq!(standing.low_balance, Some(own));
        let clear = Command::SetLowBalance { own: None };
        let answer = decide(rules(&catalog), &mut book, &mut standing, &clear, at(1)).unwrap();
        assert_eq!(answer, Answer::Thresholds(catalog.alerts));
        assert_eq!(standing.low_balance, None);
    }

    #[test]
    fn an_override_switches_a_feature_off_and_is_kept_for_replays() {
        use crate::domain::overrides::Change as OverrideChange;
        let catalog = catalog();
        let (mut book, mut standing) = funded(&catalog, 10);
        let made = Override {
            id: "ovr_1".into(),
            change: OverrideChange::Feature {
                feature: "chat".into(),
                enabled: false,
            },
            until: None,
            reason: "abuse".into(),
            actor: "key_1".into(),
            at: at(1),
        };
        let set = Command::SetOverride { made: made.clone() };
        assert!(set.creates_customer(&catalog));
        let answer = decide(rules(&catalog), &mut book, &mut standing, &set, at(1)).unwrap();
        assert_eq!(answer, Answer::Overridden(made.clone()));
        assert_eq!(
            Answer::replayed(&set, &answer.stored().unwrap()).unwrap(),
            answer
        );
        // The gate now refuses the feature, whatever the credits.
        let usage = Command::Usage {
            subject: None,
            usage_id: "u2".into(),
            action: catalog.actions["chat.request"].clone(),
            quantity: Quantity::try_from(rust_decimal::Decimal::ONE).unwrap(),
            occurred_at: at(2),
        };
        let refused = decide(rules(&catalog), &mut book, &mut standing, &usage, at(2));
        assert!(
            matches!(refused, Err(Refusal::FeatureNotEntitled { .. })),
            "{refused:?}"
        );
    }
}
