//! Spend limits (README, Spend limits): caps on the credits a customer spends per UTC day or
//! month, overall or on one feature. A `hard` limit refuses what would pass it, counting held
//! credits as spent; a `soft` one only says it was reached. Each limit keeps what was spent in
//! its current window; `spend_limit.reached` fires once per limit and window. A limit may cap
//! one member of the customer (a `subject`) or each member apart (README, Members and subjects):
//! a member's spends count towards the customer's limits and its own.

use super::Timestamp;
use super::catalog::Catalog;
use super::customer::{CustomerId, Subject};
use super::ledger::{Book, Entry, EntryKind, HoldStatus};
use super::money::Credits;
use super::outbound::{EventType, Message};
use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most limits a customer may have: one per period and scope is plenty.
pub const MAX_LIMITS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The start of the UTC day or month that holds `at`.
    pub fn window_start(self, at: Timestamp) -> Timestamp {
        let month = match self {
            Period::Day => at.day(),
            Period::Month => 1,
        };
        Utc.with_ymd_and_hms(at.year(), at.month(), month, 0, 0, 0)
            .single()
            .expect("midnight UTC exists")
    }

    /// The end of the window that starts at `start` (the next window's start).
    pub fn window_end(self, start: Timestamp) -> Timestamp {
        match self {
            Period::Day => start + chrono::Duration::days(1),
            Period::Month => start
                .checked_add_months(chrono::Months::new(1))
                .expect("a month after a representable date"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuses with `spend_limit_reached` what would take spent and held credits past the cap.
    Hard,
    /// Never refuses; only tells, once the cap is reached.
    Soft,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "hard" => Some(Mode::Hard),
            "soft" => Some(Mode::Soft),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hard => "hard",
            Mode::Soft => "soft",
        }
    }
}

/// Whose spends a limit counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Members {
    /// The whole customer's, whoever spent.
    #[default]
    All,
    /// One member's only.
    One(Subject),
    /// Each member's apart: a cap per member. Spends naming no member are not counted.
    Each,
}

impl Members {
    fn is_all(&self) -> bool {
        *self == Members::All
    }

    /// Does a spend by `subject` count under it?
    fn counts(&self, subject: Option<&Subject>) -> bool {
        match self {
            Members::All => true,
            Members::One(one) => subject == Some(one),
            Members::Each => subject.is_some(),
        }
    }
}

/// One cap as a customer sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub period: Period,
    /// The feature it caps; every feature when `None`.
    pub feature: Option<String>,
    pub credits: Credits,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Members::is_all")]
    pub members: Members,
}

impl Limit {
    fn applies_to(&self, feature: Option<&str>, subject: Option<&Subject>) -> bool {
        (self.feature.is_none() || self.feature.as_deref() == feature)
            && self.members.counts(subject)
    }

    fn key(&self) -> (Period, Option<&str>, &Members) {
        (self.period, self.feature.as_deref(), &self.members)
    }
}

/// Why a set of limits is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("at most {MAX_LIMITS} limits")]
    TooMany,
    #[error("unknown feature {0:?}")]
    UnknownFeature(String),
    #[error("credits must be positive")]
    NotPositive,
    #[error("two limits for the same period, feature and members ({period}, {feature})")]
    Duplicate {
        period: &'static str,
        feature: String,
    },
}

/// A limit and what was spent under it in its current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub limit: Limit,
    pub window_start: Timestamp,
    /// Credits spent (used, overage included) in the window.
    pub spent: Credits,
    /// `spend_limit.reached` was said for this window.
    pub reached: bool,
    /// A limit on each member: what each member spent in the window, and whether it was told.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_member: BTreeMap<Subject, MemberMeter>,
}

/// What one member spent under a limit on each member, in the window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberMeter {
    pub spent: Credits,
    pub reached: bool,
}

impl Meter {
    /// Starts a new window when `now` is past the current one.
    fn roll(&mut self, now: Timestamp) {
        let start = self.limit.period.window_start(now);
        if start > self.window_start {
            self.window_start = start;
            self.spent = Credits::ZERO;
            self.reached = false;
            self.by_member.clear();
        }
    }

    /// What the spender `subject` has spent under this limit in the window.
    fn spent_by(&self, subject: Option<&Subject>) -> Credits {
        match (&self.limit.members, subject) {
            (Members::Each, Some(subject)) => self
                .by_member
                .get(subject)
                .map_or(Credits::ZERO, |m| m.spent),
            _ => self.spent,
        }
    }

    pub fn resets_at(&self) -> Timestamp {
        self.limit.period.window_end(self.window_start)
    }
}

/// A customer's limits: kept on the customer, changed under its lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Limits {
    meters: Vec<Meter>,
}

/// A hard limit a spend would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    /// The member that would pass it (a limit on one member or each).
    pub subject: Option<Subject>,
    pub spent: Credits,
    pub held: Credits,
    pub requested: Credits,
    pub resets_at: Timestamp,
}

/// Where a limit stands now, to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    pub limit: Limit,
    pub spent: Credits,
    pub held: Credits,
    /// Credits that may still be spent in the window (never below zero).
    pub remaining: Credits,
    pub window_start: Timestamp,
    pub resets_at: Timestamp,
    /// A limit on each member: each member that spent or holds in the window, what it spent,
    /// holds and has left, by subject.
    pub members: Vec<MemberState>,
}

/// Where one member stands under a limit on each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub subject: Subject,
    pub spent: Credits,
    pub held: Credits,
    pub remaining: Credits,
}

/// What a customer spent this UTC month before now, by action and member: `today` on the
/// current day, `earlier` on the days before it. Read from the ledger when limits are set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpentThisMonth {
    pub rows: Vec<SpentRow>,
}

/// What one member spent on one action this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentRow {
    pub action: Option<String>,
    pub subject: Option<Subject>,
    pub today: Credits,
    pub earlier: Credits,
}

impl SpentThisMonth {
    /// Credits spent in the current window of `period` on `feature` (every feature when `None`)
    /// by the members `members` counts, in all and by member. An action the catalog no longer
    /// has counts only towards limits on every feature.
    fn in_window(
        &self,
        catalog: &Catalog,
        period: Period,
        feature: Option<&str>,
        members: &Members,
    ) -> (Credits, BTreeMap<Subject, Credits>) {
        let mut total = Credits::ZERO;
        let mut by_member = BTreeMap::new();
        for row in &self.rows {
            let on_feature = feature.is_none()
                || row
                    .action
                    .as_deref()
                    .and_then(|a| catalog.action(a))
                    .map(|a| a.feature.as_str())
                    == feature;
            if !on_feature || !members.counts(row.subject.as_ref()) {
                continue;
            }
            let spent = match period {
                Period::Day => row.today,
                Period::Month => row.today + row.earlier,
            };
            total += spent;
            if let (Members::Each, Some(subject)) = (members, &row.subject) {
                *by_member.entry(subject.clone()).or_insert(Credits::ZERO) += spent;
            }
        }
        (total, by_member)
    }

    /// Counts what `entries`, recorded at `at` and not yet in the ledger this was read from,
    /// spent by `now`'s month and day (consumption and overage, as the ledger's sum counts them).
    pub fn add(&mut self, entries: &[Entry], at: Timestamp, now: Timestamp) {
        if at < Period::Month.window_start(now) {
            return;
        }
        let today = at >= Period::Day.window_start(now);
        for entry in entries {
            let spent = match entry.kind {
                EntryKind::Consume => -entry.credits,
                EntryKind::Overage => entry.overage,
                _ => continue,
            };
            let row = match self
                .rows
                .iter_mut()
                .find(|r| r.action == entry.action && r.subject == entry.subject)
            {
                Some(row) => row,
                None => {
                    self.rows.push(SpentRow {
                        action: entry.action.clone(),
                        subject: entry.subject.clone(),
                        today: Credits::ZERO,
                        earlier: Credits::ZERO,
                    });
                    self.rows.last_mut().expect("just pushed")
                }
            };
            if today {
                row.today += spent;
            } else {
                row.earlier += spent;
            }
        }
    }
}

/// Credits held by `book`'s open holds on `limit`'s feature (every feature when `None`) by the
/// members it counts (by `subject` alone, for a limit on each member given one). A hold on an
/// action the catalog no longer has counts only towards limits on every feature.
fn held_under(book: &Book, catalog: &Catalog, limit: &Limit, subject: Option<&Subject>) -> Credits {
    book.holds
        .iter()
        .filter(|h| h.status == HoldStatus::Held)
        .filter(|h| {
            limit.feature.is_none()
                || catalog.action(&h.action).map(|a| a.feature.as_str()) == limit.feature.as_deref()
        })
        .filter(|h| match (&limit.members, subject) {
            (Members::Each, Some(_)) => h.subject.as_ref() == subject,
            // All the members' holds, for the whole of a limit on each member.
            (members, _) => members.counts(h.subject.as_ref()),
        })
        .map(|h| h.credits)
        .sum()
}

/// The members of `book` holding credits under a limit on each member, in order.
fn holding_members(book: &Book) -> impl Iterator<Item = &Subject> {
    book.holds
        .iter()
        .filter(|h| h.status == HoldStatus::Held)
        .filter_map(|h| h.subject.as_ref())
}

impl Limits {
    /// Checks a customer's new set of limits against the catalog.
    pub fn validate(limits: &[Limit], catalog: &Catalog) -> Result<(), LimitError> {
        if limits.len() > MAX_LIMITS {
            return Err(LimitError::TooMany);
        }
        let mut seen = std::collections::BTreeSet::new();
        for limit in limits {
            if let Some(feature) = &limit.feature
                && !catalog.features.contains_key(feature)
            {
                return Err(LimitError::UnknownFeature(feature.clone()));
            }
            if !limit.credits.is_positive() {
                return Err(LimitError::NotPositive);
            }
            if !seen.insert(limit.key()) {
                return Err(LimitError::Duplicate {
                    period: limit.period.as_str(),
                    feature: limit.feature.clone().unwrap_or_else(|| "all".into()),
                });
            }
        }
        Ok(())
    }

    /// Replaces the limits with `limits` (validated), each starting from what `spent` says was
    /// spent in its window up to `now`. A limit kept with the same cap keeps
    /// whether it was reached this window (by each member, for a limit on each); a new or
    /// changed one is armed again.
    pub fn replace(
        &mut self,
        limits: Vec<Limit>,
        spent: &SpentThisMonth,
        catalog: &Catalog,
        now: Timestamp,
    ) {
        let window = |p: Period| p.window_start(now);
        let meters = limits
            .into_iter()
            .map(|limit| {
                let start = window(limit.period);
                let kept = self
                    .meters
                    .iter()
                    .find(|m| m.limit == limit && m.window_start == start);
                let (total, by_member) = spent.in_window(
                    catalog,
                    limit.period,
                    limit.feature.as_deref(),
                    &limit.members,
                );
                let by_member = by_member
                    .into_iter()
                    .map(|(subject, spent)| {
                        let reached = kept
                            .and_then(|m| m.by_member.get(&subject))
                            .is_some_and(|m| m.reached);
                        (subject, MemberMeter { spent, reached })
                    })
                    .collect();
                Meter {
                    spent: total,
                    window_start: start,
                    reached: kept.is_some_and(|m| m.reached),
                    by_member,
                    limit,
                }
            })
            .collect();
        self.meters = meters;
    }

    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }

    /// The limits at `now`: what is spent, held and left of each (and of each member, for a
    /// limit on each member).
    pub fn states(&self, book: &Book, catalog: &Catalog, now: Timestamp) -> Vec<LimitState> {
        let left = |cap: Credits, used: Credits| {
            if used >= cap {
                Credits::ZERO
            } else {
                cap - used
            }
        };
        self.meters
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.roll(now);
                let held = held_under(book, catalog, &m.limit, None);
                let members = if m.limit.members == Members::Each {
                    let mut subjects: std::collections::BTreeSet<&Subject> =
                        m.by_member.keys().collect();
                    subjects.extend(holding_members(book));
                    subjects
                        .into_iter()
                        .map(|subject| {
                            let spent = m.spent_by(Some(subject));
                            let held = held_under(book, catalog, &m.limit, Some(subject));
                            MemberState {
                                subject: subject.clone(),
                                spent,
                                held,
                                remaining: left(m.limit.credits, spent + held),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                LimitState {
                    // A cap on each member leaves each its own room; the customer's whole is
                    // not capped by it.
                    remaining: match m.limit.members {
                        Members::Each => m.limit.credits,
                        _ => left(m.limit.credits, m.spent + held),
                    },
                    spent: m.spent,
                    held,
                    window_start: m.window_start,
                    resets_at: m.resets_at(),
                    limit: m.limit,
                    members,
                }
            })
            .collect()
    }

    /// May `credits` more be spent or held on `feature` by `subject` at `now`? Refused by the
    /// first hard limit it would take past its cap (spent and held credits count). Moves
    /// windows on.
    pub fn admit(
        &mut self,
        book: &Book,
        catalog: &Catalog,
        (feature, subject): (Option<&str>, Option<&Subject>),
        credits: Credits,
        now: Timestamp,
    ) -> Result<(), Box<Exceeded>> {
        for meter in &mut self.meters {
            meter.roll(now);
            if meter.limit.mode != Mode::Hard || !meter.limit.applies_to(feature, subject) {
                continue;
            }
            let held = held_under(book, catalog, &meter.limit, subject);
            let spent = meter.spent_by(subject);
            if spent + held + credits > meter.limit.credits {
                return Err(Box::new(Exceeded {
                    limit: meter.limit.clone(),
                    subject: match meter.limit.members {
                        Members::All => None,
                        _ => subject.cloned(),
                    },
                    spent,
                    held,
                    requested: credits,
                    resets_at: meter.resets_at(),
                }));
            }
        }
        Ok(())
    }

    /// Counts `credits` spent on `feature` by `subject` at `now` in every limit it falls under.
    pub fn record(
        &mut self,
        (feature, subject): (Option<&str>, Option<&Subject>),
        credits: Credits,
        now: Timestamp,
    ) {
        for meter in &mut self.meters {
            meter.roll(now);
            if !meter.limit.applies_to(feature, subject) {
                continue;
            }
            meter.spent += credits;
            if let (Members::Each, Some(subject)) = (&meter.limit.members, subject) {
                meter.by_member.entry(subject.clone()).or_default().spent += credits;
            }
        }
    }

    /// Says `spend_limit.reached` for each limit whose cap is reached at `now` (spent and held)
    /// or that refused a command since the last call (`refused`: the limits and members), once
    /// per limit, member and window.
    pub fn reached(
        &mut self,
        customer: &CustomerId,
        book: &Book,
        catalog: &Catalog,
        refused: &[(Limit, Option<Subject>)],
        now: Timestamp,
    ) -> Vec<Message> {
        let mut messages = Vec::new();
        for meter in &mut self.meters {
            meter.roll(now);
            let refusing = |subject: Option<&Subject>| {
                refused
                    .iter()
                    .any(|(l, s)| l.key() == meter.limit.key() && s.as_ref() == subject)
            };
            if meter.limit.members == Members::Each {
                let mut subjects: std::collections::BTreeSet<Subject> =
                    meter.by_member.keys().cloned().collect();
                subjects.extend(holding_members(book).cloned());
                subjects.extend(refused.iter().filter_map(|(l, s)| {
                    (l.key() == meter.limit.key()).then(|| s.clone()).flatten()
                }));
                for subject in subjects {
                    let spent = meter.spent_by(Some(&subject));
                    let held = held_under(book, catalog, &meter.limit, Some(&subject));
                    let told = meter.by_member.get(&subject).is_some_and(|m| m.reached);
                    if told || (spent + held < meter.limit.credits && !refusing(Some(&subject))) {
                        continue;
                    }
                    meter.by_member.entry(subject.clone()).or_default().reached = true;
                    messages.push(reached_message(
                        customer,
                        meter,
                        Some(&subject),
                        (spent, held),
                        now,
                    ));
                }
                continue;
            }
            if meter.reached {
                continue;
            }
            let held = held_under(book, catalog, &meter.limit, None);
            let subject = match &meter.limit.members {
                Members::One(one) => Some(one.clone()),
                _ => None,
            };
            if meter.spent + held < meter.limit.credits && !refusing(subject.as_ref()) {
                continue;
            }
            meter.reached = true;
            let spent = meter.spent;
            messages.push(reached_message(
                customer,
                meter,
                subject.as_ref(),
                (spent, held),
                now,
            ));
        }
        messages
    }
}

/// `spend_limit.reached` for `meter`'s limit (for `subject`, when it caps members).
fn reached_message(
    customer: &CustomerId,
    meter: &Meter,
    subject: Option<&Subject>,
    (spent, held): (Credits, Credits),
    now: Timestamp,
) -> Message {
    let limit = &meter.limit;
    let mut data = serde_json::Map::new();
    data.insert("period".into(), limit.period.as_str().into());
    data.insert(
        "feature".into(),
        limit
            .feature
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    data.insert("mode".into(), limit.mode.as_str().into());
    data.insert("limit".into(), limit.credits.to_string().into());
    data.insert("spent".into(), spent.to_string().into());
    data.insert("held".into(), held.to_string().into());
    data.insert("window_start".into(), rfc3339(meter.window_start).into());
    data.insert("resets_at".into(), rfc3339(meter.resets_at()).into());
    let mut cause = format!(
        "{customer}\n{}\n{}\n{}",
        limit.period.as_str(),
        limit.feature.as_deref().unwrap_or(""),
        meter.window_start.timestamp_micros()
    );
    if let Some(subject) = subject {
        data.insert("subject".into(), subject.as_str().into());
        data.insert(
            "each_subject".into(),
            (limit.members == Members::Each).into(),
        );
        // One limit per member scope: the member and the scope keep each message apart.
        let scope = if limit.members == Members::Each {
            "each"
        } else {
            "one"
        };
        cause.push_str(&format!("\n{scope}\n{subject}"));
    }
    Message {
        event_type: EventType::SpendLimitReached,
        customer: customer.clone(),
        at: now,
        data,
        cause,
    }
}

fn rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Overage;
    use crate::domain::catalog::{Action, Feature};
    use crate::domain::ledger::{Grant, GrantSource, Usage};
    use rust_decimal::Decimal;
    use std::collections::BTreeMap;

    /// The customer these tests are about.
    fn customer() -> CustomerId {
        CustomerId::known("c")
    }

    fn credits(n: i64) -> Credits {
        Credits::new(Decimal::from(n)).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn catalog() -> Catalog {
        let mut features = BTreeMap::new();
        let mut actions = BTreeMap::new();
        for id in ["chat", "images"] {
            features.insert(
                id.to_owned(),
                Feature {
                    id: id.into(),
                    plan_only: false,
                },
            );
            actions.insert(
                format!("{id}.run"),
                Action {
                    id: format!("{id}.run"),
                    feature: id.into(),
                    credits: credits(1),
                    vendor_cost: None,
                    changes: Vec::new(),
                },
            );
        }
        Catalog {
            features,
            actions,
            ..Default::default()
        }
    }

    fn limit(period: Period, feature: Option<&str>, cap: i64, mode: Mode) -> Limit {
        Limit {
            members: Default::default(),
            period,
            feature: feature.map(Into::into),
            credits: credits(cap),
            mode,
        }
    }

    fn limits(set: Vec<Limit>, now: Timestamp) -> Limits {
        let mut l = Limits::default();
        l.replace(set, &SpentThisMonth::default(), &catalog(), now);
        l
    }

    fn book() -> Book {
        let mut book = Book::new(CustomerId::known("c"));
        book.add_grant(
            Grant::promotional(
                "g",
                credits(1000),
                (GrantSource::Test, "t".into()),
                at("2026-03-01T00:00:00Z"),
            ),
            at("2026-03-01T00:00:00Z"),
        );
        book
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        let t = at("2026-03-31T23:59:59Z");
        assert_eq!(Period::Day.window_start(t), at("2026-03-31T00:00:00Z"));
        assert_eq!(Period::Month.window_start(t), at("2026-03-01T00:00:00Z"));
        assert_eq!(
            Period::Month.window_end(at("2026-01-01T00:00:00Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            Period::Day.window_end(at("2026-03-31T00:00:00Z")),
            at("2026-04-01T00:00:00Z")
        );
    }

    #[test]
    fn a_hard_limit_counts_spent_and_held_and_refuses_past_its_cap() {
        let catalog = catalog();
        let now = at("2026-03-02T10:00:00Z");
        let mut l = limits(vec![limit(Period::Day, None, 10, Mode::Hard)], now);
        let mut b = book();
        l.record((Some("chat"), None), credits(6), now);
        b.authorize(
            "h",
            &Usage {
                subject: None,
                action: Some("chat.run".into()),
                quantity: Some("3".into()),
            },
            credits(3),
            &Overage::Block,
            now + chrono::Duration::minutes(5),
            now,
        )
        .unwrap();
        assert!(
            l.admit(&b, &catalog, (Some("chat"), None), credits(1), now)
                .is_ok()
        );
        let refused = l
            .admit(&b, &catalog, (Some("images"), None), credits(2), now)
            .unwrap_err();
        assert_eq!(
            (refused.spent, refused.held, refused.requested),
            (credits(6), credits(3), credits(2))
        );
        assert_eq!(refused.resets_at, at("2026-03-03T00:00:00Z"));
        // The next day starts from nothing.
        let tomorrow = at("2026-03-03T00:00:00Z");
        assert!(
            l.admit(&b, &catalog, (Some("chat"), None), credits(7), tomorrow)
                .is_ok()
        );
    }

    #[test]
    fn a_feature_limit_caps_only_its_feature_and_a_soft_one_never_refuses() {
        let catalog = catalog();
        let now = at("2026-03-02T10:00:00Z");
        let mut l = limits(
            vec![
                limit(Period::Month, Some("images"), 5, Mode::Hard),
                limit(Period::Day, None, 1, Mode::Soft),
            ],
            now,
        );
        let b = book();
        l.record((Some("images"), None), credits(5), now);
        assert!(
            l.admit(&b, &catalog, (Some("chat"), None), credits(100), now)
                .is_ok()
        );
        assert!(
            l.admit(&b, &catalog, (Some("images"), None), credits(1), now)
                .is_err()
        );
        // Reached once each, whatever happens after in the window.
        let said = l.reached(&customer(), &b, &catalog, &[], now);
        assert_eq!(said.len(), 2);
        let first_day = said[1].id();
        assert!(l.reached(&customer(), &b, &catalog, &[], now).is_empty());
        l.record((Some("chat"), None), credits(1), now);
        assert!(l.reached(&customer(), &b, &catalog, &[], now).is_empty());
        // A new day re-arms the day's limit only.
        let tomorrow = at("2026-03-03T01:00:00Z");
        l.record((Some("chat"), None), credits(1), tomorrow);
        let said = l.reached(&customer(), &b, &catalog, &[], tomorrow);
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].data["period"], "day");
        assert_ne!(said[0].id(), first_day, "each window's message is its own");
    }

    #[test]
    fn a_refusal_below_the_cap_is_reached_too() {
        let catalog = catalog();
        let now = at("2026-03-02T10:00:00Z");
        let cap = limit(Period::Day, None, 10, Mode::Hard);
        let mut l = limits(vec![cap.clone()], now);
        let b = book();
        l.record((None, None), credits(8), now);
        assert!(l.reached(&customer(), &b, &catalog, &[], now).is_empty());
        let said = l.reached(&customer(), &b, &catalog, &[(cap, None)], now);
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].data["spent"], "8");
    }

    #[test]
    fn replacing_limits_starts_from_what_was_spent_and_keeps_what_was_said() {
        let now = at("2026-03-02T10:00:00Z");
        let catalog = catalog();
        let cap = limit(Period::Day, None, 10, Mode::Soft);
        let mut l = limits(vec![cap.clone()], now);
        l.record((None, None), credits(10), now);
        assert_eq!(l.reached(&customer(), &book(), &catalog, &[], now).len(), 1);
        let spent = |today: i64, earlier: i64| SpentThisMonth {
            rows: vec![row("chat.run", None, today, earlier)],
        };
        l.replace(vec![cap.clone()], &spent(10, 0), &catalog, now);
        assert!(
            l.reached(&customer(), &book(), &catalog, &[], now)
                .is_empty()
        );
        let raised = limit(Period::Day, None, 20, Mode::Soft);
        l.replace(vec![raised], &spent(12, 30), &catalog, now);
        let s = l.states(&book(), &catalog, now);
        assert_eq!((s[0].spent, s[0].remaining), (credits(12), credits(8)));
    }

    #[test]
    fn what_was_spent_counts_in_the_windows_and_features_it_falls_in() {
        let catalog = catalog();
        let spent = SpentThisMonth {
            rows: vec![
                row("chat.run", None, 3, 4),
                row("images.run", None, 5, 6),
                row("retired.action", None, 7, 0),
            ],
        };
        let all = Members::All;
        let in_window = |period, feature| spent.in_window(&catalog, period, feature, &all).0;
        assert_eq!(in_window(Period::Day, None), credits(15));
        assert_eq!(in_window(Period::Month, None), credits(25));
        assert_eq!(in_window(Period::Day, Some("chat")), credits(3));
        assert_eq!(in_window(Period::Month, Some("images")), credits(11));
    }

    #[test]
    fn a_set_of_limits_is_checked() {
        let catalog = catalog();
        let day = limit(Period::Day, None, 10, Mode::Hard);
        assert_eq!(
            Limits::validate(&[day.clone(), day.clone()], &catalog),
            Err(LimitError::Duplicate {
                period: "day",
                feature: "all".into()
            })
        );
        assert_eq!(
            Limits::validate(
                &[limit(Period::Day, Some("video"), 1, Mode::Hard)],
                &catalog
            ),
            Err(LimitError::UnknownFeature("video".into()))
        );
        assert_eq!(
            Limits::validate(&[limit(Period::Day, None, 0, Mode::Hard)], &catalog),
            Err(LimitError::NotPositive)
        );
        assert_eq!(
            Limits::validate(&vec![day; MAX_LIMITS + 1], &catalog),
            Err(LimitError::TooMany)
        );
    }

    #[test]
    fn spent_in_a_batch_counts_by_the_day_and_month_it_was_recorded() {
        let entry = |kind: EntryKind, credits: Credits, overage: Credits| Entry {
            subject: None,
            kind,
            grant_id: None,
            hold_id: None,
            action: Some("chat.request".into()),
            quantity: None,
            credits,
            held: Credits::ZERO,
            overage,
            effective_at: at("2026-12-03T10:00:00Z"),
            money: None,
            reason: None,
        };
        let consumed = entry(EntryKind::Consume, -credits(4), Credits::ZERO);
        let over = entry(EntryKind::Overage, Credits::ZERO, credits(1));
        let granted = entry(EntryKind::Grant, credits(9), Credits::ZERO);
        let mut spent = SpentThisMonth::default();
        let now = at("2026-12-03T12:00:00Z");
        spent.add(
            &[consumed.clone(), over, granted],
            at("2026-12-03T10:00:00Z"),
            now,
        );
        spent.add(
            std::slice::from_ref(&consumed),
            at("2026-12-02T23:59:59Z"),
            now,
        );
        spent.add(&[consumed], at("2026-11-30T23:59:59Z"), now);
        assert_eq!(spent.rows, vec![row("chat.request", None, 5, 4)]);
    }

    #[test]
    fn a_cap_on_each_member_counts_each_apart_and_tells_each_once_a_window() {
        let catalog = catalog();
        let now = at("2026-03-10T10:00:00Z");
        let each = Limit {
            members: Members::Each,
            ..limit(Period::Month, None, 10, Mode::Hard)
        };
        let one = Limit {
            members: Members::One(Subject::known("intern")),
            ..limit(Period::Day, Some("chat"), 3, Mode::Hard)
        };
        // Alice spent 6 this month before the limits were set; a spend naming nobody is no
        // member's.
        let spent = SpentThisMonth {
            rows: vec![
                row("chat.run", Some("alice"), 2, 4),
                row("chat.run", None, 50, 0),
            ],
        };
        let mut l = Limits::default();
        l.replace(vec![each.clone(), one], &spent, &catalog, now);
        let (alice, bob, intern) = (
            Subject::known("alice"),
            Subject::known("bob"),
            Subject::known("intern"),
        );
        let b = book();
        fn chat(who: &Subject) -> (Option<&'static str>, Option<&Subject>) {
            (Some("chat"), Some(who))
        }
        assert!(l.admit(&b, &catalog, chat(&alice), credits(4), now).is_ok());
        let refused = l
            .admit(&b, &catalog, chat(&alice), credits(5), now)
            .unwrap_err();
        assert_eq!(
            (
                refused.subject.as_ref(),
                refused.spent,
                refused.limit.members.clone()
            ),
            (Some(&alice), credits(6), Members::Each)
        );
        assert!(l.admit(&b, &catalog, chat(&bob), credits(10), now).is_ok());
        assert!(
            l.admit(&b, &catalog, (Some("chat"), None), credits(500), now)
                .is_ok()
        );
        // The intern's own cap of 3 a day on chat, besides its 10 a month.
        let refused = l
            .admit(&b, &catalog, chat(&intern), credits(4), now)
            .unwrap_err();
        assert_eq!(refused.limit.period, Period::Day);
        assert!(
            l.admit(
                &b,
                &catalog,
                (Some("images"), Some(&intern)),
                credits(4),
                now
            )
            .is_ok()
        );
        // Reached by bob's 10, told once; alice's refusal tells too.
        l.record(chat(&bob), credits(10), now);
        let said = l.reached(
            &customer(),
            &b,
            &catalog,
            &[(each.clone(), Some(alice.clone()))],
            now,
        );
        let named: Vec<&serde_json::Value> = said.iter().map(|m| &m.data["subject"]).collect();
        assert_eq!(
            named,
            [&serde_json::json!("alice"), &serde_json::json!("bob")]
        );
        assert!(l.reached(&customer(), &b, &catalog, &[], now).is_empty());
        let states = l.states(&b, &catalog, now);
        let members: Vec<(&str, Credits, Credits)> = states[0]
            .members
            .iter()
            .map(|m| (m.subject.as_str(), m.spent, m.remaining))
            .collect();
        assert_eq!(
            members,
            [
                ("alice", credits(6), credits(4)),
                ("bob", credits(10), Credits::ZERO)
            ]
        );
        // A new month starts every member again, and tells again.
        let april = at("2026-04-01T00:00:01Z");
        assert!(
            l.admit(&b, &catalog, chat(&alice), credits(10), april)
                .is_ok()
        );
        l.record(chat(&alice), credits(10), april);
        let said = l.reached(&customer(), &b, &catalog, &[], april);
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].data["subject"], "alice");
    }

    fn row(action: &str, subject: Option<&str>, today: i64, earlier: i64) -> SpentRow {
        SpentRow {
            action: Some(action.into()),
            subject: subject.map(Subject::known),
            today: credits(today),
            earlier: credits(earlier),
        }
    }
}
