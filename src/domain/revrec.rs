//! Revenue recognition (README, Revenue recognition): the double-entry postings that paid credits produce as they
//! are bought, consumed, expire, roll over, move or are refunded. Pure: the store feeds each lot
//! the ledger's movements and writes the postings it returns.
//!
//! Every amount a lot has recognized is a cumulative catch-up: the lot computes what should be
//! recognized to date from its counters and posts the difference from what it posted before, so
//! rounding never drifts and a changed estimate corrects the past in one posting.

use super::Timestamp;
use super::catalog::Breakage;
use super::money::{Credits, Money, currency_minor_units};
use chrono::{Datelike, NaiveDate, TimeZone};
use rust_decimal::{Decimal, RoundingStrategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    Cash,
    ContractLiability,
    DeferredPlatform,
    SubscriptionRevenue,
    UsageRevenue,
    BreakageRevenue,
    Refunds,
    UnbilledReceivable,
}

impl Account {
    pub const ALL: [Account; 8] = [
        Account::Cash,
        Account::ContractLiability,
        Account::DeferredPlatform,
        Account::SubscriptionRevenue,
        Account::UsageRevenue,
        Account::BreakageRevenue,
        Account::Refunds,
        Account::UnbilledReceivable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Account::Cash => "cash",
            Account::ContractLiability => "contract_liability",
            Account::DeferredPlatform => "deferred_platform",
            Account::SubscriptionRevenue => "subscription_revenue",
            Account::UsageRevenue => "usage_revenue",
            Account::BreakageRevenue => "breakage_revenue",
            Account::Refunds => "refunds",
            Account::UnbilledReceivable => "unbilled_receivable",
        }
    }

    pub fn parse(s: &str) -> Option<Account> {
        Account::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Deferred revenue: what the roll-forward carries from period to period.
    pub fn is_deferred(self) -> bool {
        matches!(self, Account::ContractLiability | Account::DeferredPlatform)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostingKind {
    PackPayment,
    PlanPayment,
    PlatformRecognition,
    Consumption,
    Breakage,
    Rollover,
    Refund,
    /// A refund that failed or was canceled, given back: the inverse of a `Refund`.
    RefundReversal,
    Transfer,
    Overage,
    EstimateChange,
    Forfeiture,
    /// Billed overage paid on a Stripe invoice: the receivable relieved.
    OveragePaid,
}

impl PostingKind {
    pub const ALL: [PostingKind; 13] = [
        PostingKind::PackPayment,
        PostingKind::PlanPayment,
        PostingKind::PlatformRecognition,
        PostingKind::Consumption,
        PostingKind::Breakage,
        PostingKind::Rollover,
        PostingKind::Refund,
        PostingKind::RefundReversal,
        PostingKind::Transfer,
        PostingKind::Overage,
        PostingKind::EstimateChange,
        PostingKind::Forfeiture,
        PostingKind::OveragePaid,
    ];

    pub fn parse(s: &str) -> Option<PostingKind> {
        PostingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PostingKind::PackPayment => "pack_payment",
            PostingKind::PlanPayment => "plan_payment",
            PostingKind::PlatformRecognition => "platform_recognition",
            PostingKind::Consumption => "consumption",
            PostingKind::Breakage => "breakage",
            PostingKind::Rollover => "rollover",
            PostingKind::Refund => "refund",
            PostingKind::RefundReversal => "refund_reversal",
            PostingKind::Transfer => "transfer",
            PostingKind::Overage => "overage",
            PostingKind::EstimateChange => "estimate_change",
            PostingKind::Forfeiture => "forfeiture",
            PostingKind::OveragePaid => "overage_paid",
        }
    }

    /// Money paid in: the roll-forward's billings.
    pub fn is_billing(self) -> bool {
        matches!(self, PostingKind::PackPayment | PostingKind::PlanPayment)
    }
}

/// One line of a journal entry: a debit or a credit (never both, never negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub account: Account,
    pub debit: Money,
    pub credit: Money,
    /// The lot the line moves; none for cash, overage and money in transit between accounts.
    pub grant_id: Option<String>,
}

/// A journal entry: lines that balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub kind: PostingKind,
    pub currency: String,
    pub effective_at: Timestamp,
    pub lines: Vec<Line>,
    pub memo: String,
}

impl Posting {
    pub fn new(kind: PostingKind, currency: &str, effective_at: Timestamp) -> Self {
        Posting {
            kind,
            currency: currency.to_owned(),
            effective_at,
            lines: Vec::new(),
            memo: String::new(),
        }
    }

    /// Debits `account` by `amount`; a negative amount is a credit of its opposite.
    pub fn debit(&mut self, account: Account, amount: Money, grant: Option<&str>) {
        self.push(account, amount, grant);
    }

    /// Credits `account` by `amount`; a negative amount is a debit of its opposite.
    pub fn credit(&mut self, account: Account, amount: Money, grant: Option<&str>) {
        self.push(account, -amount, grant);
    }

    fn push(&mut self, account: Account, debit: Money, grant: Option<&str>) {
        if debit.is_zero() {
            return;
        }
        let (debit, credit) = if debit.is_positive() {
            (debit, Money::ZERO)
        } else {
            (Money::ZERO, -debit)
        };
        self.lines.push(Line {
            account,
            debit,
            credit,
            grant_id: grant.map(str::to_owned),
        });
    }

    pub fn with_memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = memo.into();
        self
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Cala's rule: an entry whose lines do not sum to zero is refused before it is written.
    /// Amounts are exact to the currency's minor unit, and no line is negative.
    pub fn check(&self) -> Result<(), String> {
        let minor = currency_minor_units(&self.currency);
        let mut debits = Money::ZERO;
        let mut credits = Money::ZERO;
        for line in &self.lines {
            if line.debit.is_negative() || line.credit.is_negative() {
                return Err(format!(
                    "{} line on {} is negative",
                    self.kind.as_str(),
                    line.account.as_str()
                ));
            }
            if line.debit.value().scale() > minor || line.credit.value().scale() > minor {
                return Err(format!(
                    "{} line on {} is finer than the {} minor unit",
                    self.kind.as_str(),
                    line.account.as_str(),
                    self.currency
                ));
            }
            debits += line.debit;
            credits += line.credit;
        }
        if debits != credits {
            return Err(format!(
                "{} entry does not balance: debits {debits}, credits {credits} {}",
                self.kind.as_str(),
                self.currency
            ));
        }
        Ok(())
    }

    /// The lines of `other` (same kind of movement, same instant) appended to this entry.
    fn absorb(&mut self, other: Option<Posting>) {
        if let Some(other) = other {
            self.lines.extend(other.lines);
        }
    }
}

/// Money to the currency's minor unit, half away from zero (README, Revenue recognition).
pub fn round_money(value: Decimal, currency: &str) -> Money {
    Money::new(value.round_dp_with_strategy(
        currency_minor_units(currency),
        RoundingStrategy::MidpointAwayFromZero,
    ))
    .expect("rounded to at most three places")
}

/// `money` x `part` / `whole` credits: the price of `part` of `whole`, rounded to the currency;
/// zero when `whole` is zero.
pub fn share(money: Money, part: Credits, whole: Credits, currency: &str) -> Money {
    prorate(money, part.value(), whole.value(), currency)
}

/// `money` x `part` / `whole` of money (a platform part's share of a refund), rounded to the
/// currency; zero when `whole` is zero.
pub fn share_of_money(money: Money, part: Money, whole: Money, currency: &str) -> Money {
    prorate(money, part.value(), whole.value(), currency)
}

fn prorate(money: Money, part: Decimal, whole: Decimal, currency: &str) -> Money {
    if whole.is_zero() {
        return Money::ZERO;
    }
    round_money(money.value() * part / whole, currency)
}

/// The platform part of a plan invoice line (README, Revenue recognition): recognized to `subscription_revenue`
/// ratably by day over the line's period. Every day but the last recognizes the daily amount
/// (rounded), never more than is left; the last day takes what rounding left over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub amount: Money,
    pub first_day: NaiveDate,
    /// Days in the period, at least 1.
    pub days: u32,
    /// Days whose share has been recognized.
    pub days_done: u32,
    pub recognized: Money,
    /// Money refunded out of the platform part's deferral.
    pub refunded: Money,
    /// Money refunded beyond what was still deferred (contra-revenue).
    pub contra: Money,
}

impl Platform {
    /// The calendar days (UTC) a period `[start, end)` covers; at least one.
    pub fn new(amount: Money, start: Timestamp, end: Timestamp) -> Platform {
        let first_day = start.date_naive();
        // Stripe's periods run from one clock time to the same clock time (10:00 on the 15th to
        // 10:00 on the 15th): their days are counted from the start's date to the end's date.
        let days = (end.date_naive() - first_day).num_days().max(1);
        Platform {
            amount,
            first_day,
            days: u32::try_from(days).unwrap_or(u32::MAX),
            days_done: 0,
            recognized: Money::ZERO,
            refunded: Money::ZERO,
            contra: Money::ZERO,
        }
    }

    pub fn deferred(&self) -> Money {
        self.amount - self.recognized - self.refunded
    }

    /// Recognized through `days` days: the daily amount each day, capped at what is left to
    /// recognize; all of it on the last day.
    fn target(&self, days: u32, currency: &str) -> Money {
        let base = self.amount - self.refunded;
        if days >= self.days {
            return base;
        }
        let daily = round_money(base.value() / Decimal::from(self.days), currency);
        let through = Money::new(daily.value() * Decimal::from(days)).expect("money times days");
        through.min(base).max(self.recognized)
    }

    /// The day after the last day recognized, at 00:00 UTC: when the next day's share is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        (self.days_done < self.days)
            .then(|| day_end(self.first_day + chrono::Days::new(u64::from(self.days_done))))
    }
}

/// The first instant after `day` (UTC).
fn day_end(day: NaiveDate) -> Timestamp {
    chrono::Utc.from_utc_datetime(&(day + chrono::Days::new(1)).and_time(chrono::NaiveTime::MIN))
}

/// The last microsecond of `day` (UTC): when a day's share of the platform part is dated.
fn last_instant_of(day: NaiveDate) -> Timestamp {
    day_end(day) - chrono::Duration::microseconds(1)
}

/// A paid grant's revenue: its price (the part of it paid for credits), the counters of what
/// became of its credits, and what has been posted so far. A lot keeps the identity
/// price = deferred + recognized + breakage + refunded + transferred (README, The ledger), where
/// recognized is usage revenue net of refunds beyond the deferral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub grant_id: String,
    pub currency: String,
    /// Price of the credits (net of tax, and of the platform part for plans).
    pub price: Money,
    pub credits: Credits,
    pub breakage: Breakage,
    /// Credits consumed.
    pub consumed: Credits,
    /// Credits that lapsed at expiry, less those a rollover revived.
    pub lapsed: Credits,
    /// Credits taken back by refunds or moved to another account.
    pub removed: Credits,
    /// Credits an adjustment took back while the money was kept: the customer's right to them
    /// ended, so their share of the price is breakage.
    pub forfeited: Credits,
    pub usage: Money,
    pub breakage_recognized: Money,
    /// Refunded money taken out of the deferral.
    pub refunded: Money,
    /// Refunded money beyond the deferral: reversed revenue (`refunds`).
    pub contra: Money,
    /// Money moved with credits to another account's lot.
    pub transferred: Money,
    pub platform: Option<Platform>,
}

impl Lot {
    fn new(
        grant_id: &str,
        currency: &str,
        price: Money,
        credits: Credits,
        breakage: Breakage,
    ) -> Lot {
        assert!(!price.is_negative(), "a price is not negative");
        assert!(credits.is_positive(), "a lot holds credits");
        Lot {
            grant_id: grant_id.to_owned(),
            currency: currency.to_owned(),
            price,
            credits,
            breakage,
            consumed: Credits::ZERO,
            lapsed: Credits::ZERO,
            removed: Credits::ZERO,
            forfeited: Credits::ZERO,
            usage: Money::ZERO,
            breakage_recognized: Money::ZERO,
            refunded: Money::ZERO,
            contra: Money::ZERO,
            transferred: Money::ZERO,
            platform: None,
        }
    }

    /// A pack bought: Dr cash / Cr contract_liability, the price net of tax.
    pub fn pack(
        grant_id: &str,
        currency: &str,
        price: Money,
        credits: Credits,
        breakage: Breakage,
        at: Timestamp,
    ) -> (Lot, Posting) {
        let lot = Lot::new(grant_id, currency, price, credits, breakage);
        let mut posting = Posting::new(PostingKind::PackPayment, currency, at);
        posting.debit(Account::Cash, price, None);
        posting.credit(Account::ContractLiability, price, Some(grant_id));
        (
            lot,
            posting.with_memo("pack paid: its price deferred until the credits are used"),
        )
    }

    /// A plan invoice line paid: the platform part (`platform_share` of the price, rounded) is
    /// deferred to `deferred_platform`; the rest is the price of the plan's credits.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        grant_id: &str,
        currency: &str,
        price: Money,
        credits: Credits,
        breakage: Breakage,
        platform_share: Decimal,
        period: (Timestamp, Timestamp),
        at: Timestamp,
    ) -> (Lot, Posting) {
        let platform_amount = round_money(price.value() * platform_share, currency).min(price);
        let mut lot = Lot::new(
            grant_id,
            currency,
            price - platform_amount,
            credits,
            breakage,
        );
        if platform_amount.is_positive() {
            lot.platform = Some(Platform::new(platform_amount, period.0, period.1));
        }
        let mut posting = Posting::new(PostingKind::PlanPayment, currency, at);
        posting.debit(Account::Cash, price, None);
        posting.credit(Account::ContractLiability, lot.price, Some(grant_id));
        posting.credit(Account::DeferredPlatform, platform_amount, Some(grant_id));
        let memo = if platform_amount.is_positive() {
            "plan line paid: platform access deferred by day, credits until used"
        } else {
            "plan line paid: its price deferred until the credits are used"
        };
        (lot, posting.with_memo(memo))
    }

    /// Credits moved here from another account's lot, with `money` of its deferral.
    pub fn transferred_in(
        grant_id: &str,
        currency: &str,
        money: Money,
        credits: Credits,
        breakage: Breakage,
        at: Timestamp,
    ) -> (Lot, Posting) {
        let lot = Lot::new(grant_id, currency, money, credits, breakage);
        let mut posting = Posting::new(PostingKind::Transfer, currency, at);
        posting.debit(Account::ContractLiability, money, None);
        posting.credit(Account::ContractLiability, money, Some(grant_id));
        (
            lot,
            posting.with_memo("credits moved in from the Stripe customer's own account"),
        )
    }

    /// Price + platform part: what the customer paid for this line, net of tax.
    pub fn paid(&self) -> Money {
        self.price + self.platform.as_ref().map_or(Money::ZERO, |p| p.amount)
    }

    pub fn deferred(&self) -> Money {
        self.price - self.usage - self.breakage_recognized - self.refunded - self.transferred
    }

    /// Credits still in the lot (free or held).
    pub fn remaining(&self) -> Credits {
        self.credits - self.consumed - self.lapsed - self.removed - self.forfeited
    }

    /// Usage revenue net of refunds that reversed revenue.
    pub fn recognized(&self) -> Money {
        self.usage - self.contra
    }

    /// What should be recognized to date, as (usage, breakage), per README, Revenue recognition.
    fn targets(&self) -> (Money, Money) {
        let currency = self.currency.as_str();
        // Money that may still become revenue: the price less what left the deferral otherwise.
        let cap = self.price - self.refunded - self.transferred;
        let used = share(self.price, self.consumed, self.credits, currency).min(cap);
        // The price of forfeited credits: breakage now, whatever the method.
        let forfeit = share(self.price, self.forfeited, self.credits, currency);
        if self.remaining().is_zero() {
            // Finished: nothing stays deferred. What lapsed or was forfeited is breakage; a lot
            // used up entirely puts its rounding into usage.
            return if self.lapsed.is_positive() || self.forfeited.is_positive() {
                (used, cap - used)
            } else {
                (cap, Money::ZERO)
            };
        }
        let expected = match &self.breakage {
            _ if self.lapsed.is_positive() => share(
                self.price,
                self.lapsed + self.forfeited,
                self.credits,
                currency,
            ),
            Breakage::Remote => forfeit,
            Breakage::Proportional { expected_unused } => {
                // The estimate applies to the credits not forfeited, at their part of the price.
                let rest = self.credits - self.forfeited;
                let redeemable = rest.value() * (Decimal::ONE - expected_unused);
                let total = if redeemable.is_zero() {
                    cap
                } else {
                    forfeit
                        + round_money(
                            (self.price - forfeit).value() * self.consumed.value() / redeemable,
                            currency,
                        )
                };
                total.min(cap) - used
            }
        };
        (used, expected.max(Money::ZERO).min(cap - used))
    }

    /// Posts the difference between what should be recognized to date and what was.
    fn catch_up(&mut self, kind: PostingKind, at: Timestamp) -> Option<Posting> {
        let (usage, breakage) = self.targets();
        let usage_delta = usage - self.usage;
        let breakage_delta = breakage - self.breakage_recognized;
        if usage_delta.is_zero() && breakage_delta.is_zero() {
            return None;
        }
        self.usage = usage;
        self.breakage_recognized = breakage;
        let grant = Some(self.grant_id.as_str());
        let mut posting = Posting::new(kind, &self.currency, at);
        posting.debit(
            Account::ContractLiability,
            usage_delta + breakage_delta,
            grant,
        );
        posting.credit(Account::UsageRevenue, usage_delta, grant);
        posting.credit(Account::BreakageRevenue, breakage_delta, grant);
        let memo = match kind {
            PostingKind::Consumption => "credits used, at the grant's price (cumulative catch-up)",
            PostingKind::Breakage => "credits lapsed at expiry: breakage",
            PostingKind::Rollover => {
                "lapsed credits carried into the next period: breakage reversed"
            }
            PostingKind::EstimateChange => "expected_unused changed: cumulative catch-up",
            PostingKind::Refund => "refund",
            PostingKind::RefundReversal => "refund failed or canceled: given back",
            PostingKind::Forfeiture => {
                "credits taken back by an adjustment, the money kept: their price is breakage"
            }
            _ => "",
        };
        Some(posting.with_memo(memo))
    }

    pub fn consume(&mut self, credits: Credits, at: Timestamp) -> Option<Posting> {
        assert!(credits.is_positive(), "consumption takes credits");
        self.consumed += credits;
        self.catch_up(PostingKind::Consumption, at)
    }

    /// Credits lapsed at expiry: breakage, or the true-up of the breakage recognized in advance.
    pub fn lapse(&mut self, credits: Credits, at: Timestamp) -> Option<Posting> {
        assert!(credits.is_positive(), "a lapse takes credits");
        self.lapsed += credits;
        self.catch_up(PostingKind::Breakage, at)
    }

    /// Credits taken back by an adjustment while the money is kept: the obligation to deliver
    /// them ends, so their share of the price leaves the deferral as breakage.
    pub fn forfeit(&mut self, credits: Credits, at: Timestamp) -> Option<Posting> {
        assert!(credits.is_positive(), "a forfeiture takes credits");
        self.forfeited += credits;
        self.catch_up(PostingKind::Forfeiture, at)
    }

    /// Lapsed credits carried into the next period: their breakage is reversed.
    pub fn revive(&mut self, credits: Credits, at: Timestamp) -> Option<Posting> {
        assert!(
            credits.is_positive() && credits <= self.lapsed,
            "only lapsed credits revive"
        );
        self.lapsed -= credits;
        self.catch_up(PostingKind::Rollover, at)
    }

    /// A new estimate of the unused share: from now on, and by catch-up for what was consumed.
    pub fn reestimate(&mut self, breakage: Breakage, at: Timestamp) -> Option<Posting> {
        self.breakage = breakage;
        self.catch_up(PostingKind::EstimateChange, at)
    }

    /// A refund of `money` on this grant, which took `credits` back (README, Revenue recognition). For a plan
    /// line, the platform part takes its share of the refund. Each part comes out of what is
    /// still deferred first; any excess reverses revenue (`refunds`). Cr cash.
    pub fn refund(&mut self, money: Money, credits: Credits, at: Timestamp) -> Posting {
        assert!(money.is_positive(), "a refund moves money");
        let currency = self.currency.clone();
        let grant = self.grant_id.clone();
        let grant = Some(grant.as_str());
        let mut posting = Posting::new(PostingKind::Refund, &currency, at);
        posting.credit(Account::Cash, money, None);
        let paid = self.paid();
        let mut for_credits = money;
        if let Some(platform) = self.platform.as_mut() {
            let part = share_of_money(money, platform.amount, paid, &currency).min(money);
            for_credits = money - part;
            let from_deferral = part.min(platform.deferred());
            platform.refunded += from_deferral;
            platform.contra += part - from_deferral;
            posting.debit(Account::DeferredPlatform, from_deferral, grant);
            posting.debit(Account::Refunds, part - from_deferral, grant);
        }
        let from_deferral = for_credits.min(self.deferred());
        self.refunded += from_deferral;
        self.contra += for_credits - from_deferral;
        self.removed += credits;
        posting.debit(Account::ContractLiability, from_deferral, grant);
        posting.debit(Account::Refunds, for_credits - from_deferral, grant);
        let caught_up = self.catch_up(PostingKind::Refund, at);
        posting.absorb(caught_up);
        posting.with_memo("refund: out of the deferral first, any excess reverses revenue")
    }

    /// A refund of `money` that failed or was canceled, which gives `credits` back: the inverse
    /// of [`Lot::refund`]. The money comes back (Dr cash). For a plan line the platform part
    /// takes its share, as the refund did. Each part first undoes what refunds took beyond the
    /// deferral (Cr refunds), then returns to the deferral; a platform part whose period has
    /// ended is recognized at once.
    pub fn refund_reversed(&mut self, money: Money, credits: Credits, at: Timestamp) -> Posting {
        assert!(money.is_positive(), "a reversal moves money");
        let currency = self.currency.clone();
        let grant = self.grant_id.clone();
        let grant = Some(grant.as_str());
        let lot_room = self.refunded + self.contra;
        let platform_room = self
            .platform
            .as_ref()
            .map_or(Money::ZERO, |p| p.refunded + p.contra);
        assert!(
            money <= lot_room + platform_room,
            "a reversal never gives back more than was refunded"
        );
        let mut posting = Posting::new(PostingKind::RefundReversal, &currency, at);
        posting.debit(Account::Cash, money, None);
        let paid = self.paid();
        let mut for_credits = money;
        if let Some(platform) = self.platform.as_mut() {
            // The platform's share, as the refund took it; rounding never leaves either part
            // giving back more than it took.
            let part = share_of_money(money, platform.amount, paid, &currency)
                .max(money - lot_room)
                .min(platform_room)
                .min(money);
            for_credits = money - part;
            let undo_contra = part.min(platform.contra);
            platform.contra -= undo_contra;
            platform.refunded -= part - undo_contra;
            posting.credit(Account::Refunds, undo_contra, grant);
            posting.credit(Account::DeferredPlatform, part - undo_contra, grant);
            if platform.days_done >= platform.days {
                let due = platform.target(platform.days, &currency) - platform.recognized;
                platform.recognized += due;
                posting.debit(Account::DeferredPlatform, due, grant);
                posting.credit(Account::SubscriptionRevenue, due, grant);
            }
        }
        let undo_contra = for_credits.min(self.contra);
        self.contra -= undo_contra;
        self.refunded -= for_credits - undo_contra;
        assert!(
            !self.refunded.is_negative(),
            "a reversal never gives back more than was refunded"
        );
        assert!(
            credits <= self.removed,
            "a reversal gives back only credits taken"
        );
        self.removed -= credits;
        posting.credit(Account::Refunds, undo_contra, grant);
        posting.credit(Account::ContractLiability, for_credits - undo_contra, grant);
        let caught_up = self.catch_up(PostingKind::RefundReversal, at);
        posting.absorb(caught_up);
        posting.with_memo("refund failed or canceled: the money and the credits come back")
    }

    /// `credits` moved to another account. Their share of the price leaves this lot's deferral
    /// (breakage recognized in advance for them is reversed first, if the deferral falls short)
    /// and is in transit to the receiving lot. Returns the money moved.
    pub fn transfer_out(&mut self, credits: Credits, at: Timestamp) -> (Posting, Money) {
        assert!(credits.is_positive(), "a transfer moves credits");
        let money = share(self.price, credits, self.credits, &self.currency);
        let grant = self.grant_id.clone();
        let grant = Some(grant.as_str());
        let mut posting = Posting::new(PostingKind::Transfer, &self.currency, at);
        let short = (money - self.deferred()).max(Money::ZERO);
        let from_breakage = short.min(self.breakage_recognized);
        let from_usage = short - from_breakage;
        self.breakage_recognized -= from_breakage;
        self.usage -= from_usage;
        self.transferred += money;
        self.removed += credits;
        posting.debit(Account::BreakageRevenue, from_breakage, grant);
        posting.debit(Account::UsageRevenue, from_usage, grant);
        posting.debit(Account::ContractLiability, money - short, grant);
        posting.credit(Account::ContractLiability, money, None);
        let caught_up = self.catch_up(PostingKind::Transfer, at);
        posting.absorb(caught_up);
        (
            posting.with_memo("credits moved to the account the Stripe customer is linked to"),
            money,
        )
    }

    /// Recognizes the platform part's days that ended by `now`: one entry per calendar month,
    /// dated at the last microsecond of its last day.
    pub fn recognize_platform(&mut self, now: Timestamp) -> Vec<Posting> {
        let currency = self.currency.clone();
        let grant = self.grant_id.clone();
        let Some(platform) = self.platform.as_mut() else {
            return Vec::new();
        };
        let mut postings = Vec::new();
        while let Some(due) = platform.next_due() {
            if due > now {
                break;
            }
            // Every day of this month that has ended.
            let day = platform.first_day + chrono::Days::new(u64::from(platform.days_done));
            let mut done = platform.days_done + 1;
            let mut last = day;
            while done < platform.days {
                let next = platform.first_day + chrono::Days::new(u64::from(done));
                if next.month() != day.month() || day_end(next) > now {
                    break;
                }
                last = next;
                done += 1;
            }
            let target = platform.target(done, &currency);
            let amount = target - platform.recognized;
            platform.days_done = done;
            platform.recognized = target;
            let mut posting = Posting::new(
                PostingKind::PlatformRecognition,
                &currency,
                last_instant_of(last),
            );
            posting.debit(Account::DeferredPlatform, amount, Some(&grant));
            posting.credit(Account::SubscriptionRevenue, amount, Some(&grant));
            if !posting.is_empty() {
                postings.push(posting.with_memo(format!("platform access through {last}")));
            }
        }
        postings
    }

    /// The lot's own promises, checked before anything is written.
    pub fn check(&self) -> Result<(), String> {
        let fail = |what: &str| Err(format!("lot {}: {what}", self.grant_id));
        if self.deferred().is_negative() {
            return fail("deferral below zero");
        }
        if self.remaining().is_negative() {
            return fail("more credits used than granted");
        }
        if self.remaining().is_zero() && !self.deferred().is_zero() {
            return fail("finished with money still deferred");
        }
        if let Some(p) = &self.platform
            && (p.deferred().is_negative() || p.days_done > p.days)
        {
            return fail("platform part overdrawn");
        }
        Ok(())
    }
}

/// Billed overage of one customer in one currency (`bill`): Dr unbilled_receivable /
/// Cr usage_revenue as it is used. `exact` is the sum of credits x price at use, to the credit
/// scale; the posted total is its rounding, caught up at each use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverageAccrual {
    pub currency: String,
    pub exact: Money,
    pub posted: Money,
    /// Overage credits accrued in all (what is reported to a Stripe meter, in whole credits).
    pub credits: Credits,
}

impl OverageAccrual {
    /// A new, empty accrual in `currency`.
    pub fn new(currency: &str) -> OverageAccrual {
        OverageAccrual {
            currency: currency.to_owned(),
            exact: Money::ZERO,
            posted: Money::ZERO,
            credits: Credits::ZERO,
        }
    }

    /// `credits` of overage billed for `money`.
    pub fn accrue(&mut self, money: Money, credits: Credits, at: Timestamp) -> Option<Posting> {
        self.credits += credits;
        self.exact += money;
        let target = round_money(self.exact.value(), &self.currency);
        let amount = target - self.posted;
        self.posted = target;
        let mut posting = Posting::new(PostingKind::Overage, &self.currency, at);
        posting.debit(Account::UnbilledReceivable, amount, None);
        posting.credit(Account::UsageRevenue, amount, None);
        (!posting.is_empty())
            .then(|| posting.with_memo("overage billed at the plan's overage price"))
    }
}

/// Billed overage paid on an invoice: Dr cash / Cr unbilled_receivable for what the invoice's
/// metered line charged. None for nothing paid.
pub fn overage_paid(money: Money, currency: &str, at: Timestamp) -> Option<Posting> {
    let mut posting = Posting::new(PostingKind::OveragePaid, currency, at);
    posting.debit(Account::Cash, money, None);
    posting.credit(Account::UnbilledReceivable, money, None);
    (!posting.is_empty()).then(|| posting.with_memo("billed overage paid on a Stripe invoice"))
}

/// A calendar month (UTC), the accounting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn of(at: Timestamp) -> Period {
        Period {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn start(self) -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .expect("the first of a month exists")
    }

    /// The first instant of the next period.
    pub fn end(self) -> Timestamp {
        self.next().start()
    }

    /// Where a posting dated `at` is booked: its own period unless that is closed, else the
    /// first open period after it (as an adjustment). `closed` is sorted.
    pub fn booking(at: Timestamp, closed: &[Period]) -> (Period, bool) {
        let own = Period::of(at);
        let mut period = own;
        while closed.binary_search(&period).is_ok() {
            period = period.next();
        }
        (period, period != own)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl std::str::FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a month written YYYY-MM");
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Period { year, month })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// Credits or money, whichever the place asks for.
    fn d<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn at(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn proportional(expected_unused: &str) -> Breakage {
        Breakage::Proportional {
            expected_unused: Decimal::from_str(expected_unused).unwrap(),
        }
    }

    fn revenue(lot: &Lot) -> Money {
        lot.usage + lot.breakage_recognized
    }

    /// price = deferred + recognized + breakage + refunded + transferred, to the cent.
    fn assert_identity(lot: &Lot) {
        assert_eq!(
            lot.price,
            lot.deferred() + lot.usage + lot.breakage_recognized + lot.refunded + lot.transferred
        );
        lot.check().unwrap();
    }

    #[test]
    fn forfeited_credits_are_breakage_and_a_finished_lot_defers_nothing() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "usd", d("10"), d("3"), Breakage::Remote, t);
        let posting = lot.forfeit(d("1"), t).unwrap();
        assert_eq!(posting.kind, PostingKind::Forfeiture);
        assert_eq!(lot.breakage_recognized, d("3.33"));
        assert_identity(&lot);
        lot.consume(d("2"), t).unwrap();
        // Finished: nothing stays deferred.
        assert_eq!((lot.usage, lot.breakage_recognized), (d("6.67"), d("3.33")));
        assert_eq!(lot.deferred(), Money::ZERO);
        assert_identity(&lot);
    }

    #[test]
    fn proportional_breakage_applies_to_the_credits_not_forfeited() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "usd", d("100"), d("100"), proportional("0.2"), t);
        lot.forfeit(d("20"), t).unwrap();
        assert_eq!((lot.usage, lot.breakage_recognized), (d("0"), d("20")));
        // 40 of the 80 left used; 64 expected redeemed: 80 x 40/64 = 50 recognized, 40 usage.
        lot.consume(d("40"), t).unwrap();
        assert_eq!(revenue(&lot), d("70"));
        assert_eq!(lot.usage, d("40"));
        assert_identity(&lot);
        // The rest lapses: everything left of the price is recognized.
        lot.lapse(d("40"), t).unwrap();
        assert_eq!((lot.usage, lot.breakage_recognized), (d("40"), d("60")));
        assert_identity(&lot);
    }

    #[test]
    fn a_refund_after_a_forfeiture_reverses_revenue_beyond_the_deferral() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "usd", d("10"), d("10"), Breakage::Remote, t);
        lot.forfeit(d("10"), t).unwrap();
        assert_eq!(lot.deferred(), Money::ZERO);
        let posting = lot.refund(d("10"), Credits::ZERO, t);
        let reversed: Money = posting
            .lines
            .iter()
            .filter(|l| l.account == Account::Refunds)
            .map(|l| l.debit)
            .sum();
        assert_eq!(reversed, d("10"));
        // Usage net of the refund, plus breakage: nothing of the price stays revenue.
        assert_eq!(lot.recognized() + lot.breakage_recognized, d("0"));
        lot.check().unwrap();
    }

    /// KPMG IFRS 15 handbook, example 10A: 10,000 points, 9,000 allocated to them. The handbook
    /// works in whole currency units, so the oracle runs in a currency without minor units.
    #[test]
    fn kpmg_10a_change_of_estimate_by_cumulative_catch_up() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "jpy", d("9000"), d("10000"), proportional("0.03"), t);
        // Year 1: 4,500 redeemed of 9,700 expected.
        lot.consume(d("4500"), t).unwrap();
        assert_eq!(revenue(&lot), d("4175"));
        // Year 2: 8,500 redeemed in all, 9,900 now expected.
        let postings: Vec<Posting> = [
            lot.reestimate(proportional("0.01"), t),
            lot.consume(d("4000"), t),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(revenue(&lot), d("7727"));
        let recognized_in_year_2: Money = postings
            .iter()
            .flat_map(|p| &p.lines)
            .filter(|l| l.account != Account::ContractLiability)
            .map(|l| l.credit - l.debit)
            .sum();
        assert_eq!(recognized_in_year_2, d("3552"));
    }

    /// Example 10B: the estimate falls to 9,200 points redeemed.
    #[test]
    fn kpmg_10b_fewer_points_expected() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "jpy", d("9000"), d("10000"), proportional("0.03"), t);
        lot.consume(d("4500"), t);
        lot.reestimate(proportional("0.08"), t);
        lot.consume(d("4000"), t);
        assert_eq!(revenue(&lot) - d("4175"), d("4140"));
    }

    #[test]
    fn every_posting_balances_and_the_lot_identity_holds() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, payment) = Lot::pack("g", "usd", d("10.00"), d("3"), proportional("0.1"), t);
        payment.check().unwrap();
        for posting in [lot.consume(d("1"), t), lot.consume(d("0.5"), t)]
            .into_iter()
            .flatten()
        {
            posting.check().unwrap();
        }
        lot.refund(d("2.00"), d("0.6"), t).check().unwrap();
        lot.lapse(d("0.9"), t).unwrap().check().unwrap();
        lot.check().unwrap();
        assert_eq!(lot.deferred(), Money::ZERO);
        assert_eq!(
            lot.price,
            lot.deferred() + lot.recognized() + lot.breakage_recognized + lot.refunded + lot.contra
        );
    }

    #[test]
    fn a_lot_used_up_puts_the_rounding_into_usage() {
        let t = at("2026-01-01T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "usd", d("10.00"), d("3"), Breakage::Remote, t);
        lot.consume(d("1"), t);
        assert_eq!(lot.usage, d("3.33"));
        lot.consume(d("1"), t);
        assert_eq!(lot.usage, d("6.67"));
        lot.consume(d("1"), t);
        assert_eq!(lot.usage, d("10.00"));
        assert_eq!(lot.deferred(), Money::ZERO);
    }

    #[test]
    fn the_platform_part_is_recognized_by_day_and_month() {
        let start = at("2026-01-30T10:00:00Z");
        let end = at("2026-02-02T10:00:00Z");
        let (mut lot, payment) = Lot::plan(
            "g",
            "usd",
            d("100.00"),
            d("1000"),
            Breakage::Remote,
            Decimal::from_str("0.1").unwrap(),
            (start, end),
            start,
        );
        payment.check().unwrap();
        assert_eq!(lot.price, d("90.00"));
        let platform = lot.platform.clone().unwrap();
        assert_eq!((platform.amount, platform.days), (d("10.00"), 3));
        assert!(
            lot.recognize_platform(at("2026-01-30T23:59:59Z"))
                .is_empty()
        );
        let january = lot.recognize_platform(at("2026-02-01T00:00:00Z"));
        assert_eq!(january.len(), 1);
        assert_eq!(january[0].lines[0].debit, d("6.66"));
        assert_eq!(january[0].effective_at, at("2026-01-31T23:59:59.999999Z"));
        let february = lot.recognize_platform(at("2026-03-01T00:00:00Z"));
        assert_eq!(february[0].lines[0].debit, d("3.34"));
        assert_eq!(lot.platform.unwrap().deferred(), Money::ZERO);
    }

    #[test]
    fn a_refund_reversed_is_undone_exactly() {
        let t = at("2026-01-10T00:00:00Z");
        let (mut lot, _) = Lot::pack("g", "usd", d("100"), d("12000"), Breakage::Remote, t);
        lot.consume(d("11000"), t);
        let before = lot.clone();
        // 50.00 refunded when only 8.33 is deferred: 41.67 reverses revenue.
        let refund = lot.refund(d("50"), d("1000"), t);
        assert_eq!((lot.refunded, lot.contra), (d("8.33"), d("41.67")));
        let reversal = lot.refund_reversed(d("50"), d("1000"), t);
        refund.check().unwrap();
        reversal.check().unwrap();
        assert_eq!(lot, before);
        let lines: Vec<(Account, Money, Money)> = reversal
            .lines
            .iter()
            .map(|l| (l.account, l.debit, l.credit))
            .collect();
        assert_eq!(
            lines,
            [
                (Account::Cash, d("50"), Money::ZERO),
                (Account::Refunds, Money::ZERO, d("41.67")),
                (Account::ContractLiability, Money::ZERO, d("8.33")),
            ]
        );
    }

    #[test]
    fn periods_skip_closed_months() {
        let closed = [
            Period::from_str("2026-01").unwrap(),
            Period::from_str("2026-02").unwrap(),
        ];
        let (period, adjustment) = Period::booking(at("2026-01-31T12:00:00Z"), &closed);
        assert_eq!(
            (period.to_string(), adjustment),
            ("2026-03".to_owned(), true)
        );
        assert!(Period::from_str("2026-13").is_err());
        assert!(Period::from_str("26-01").is_err());
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Move {
        Consume(u32),
        Lapse(u32),
        Revive(u32),
        Refund(u32, u32),
        Reverse(u32, u32),
        Transfer(u32),
        Reestimate(u32),
        Platform(u32),
    }

    fn moves() -> impl Strategy<Value = Vec<Move>> {
        prop::collection::vec(
            prop_oneof![
                (1u32..5_000).prop_map(Move::Consume),
                (1u32..5_000).prop_map(Move::Lapse),
                (1u32..5_000).prop_map(Move::Revive),
                ((1u32..5_000), (0u32..5_000)).prop_map(|(m, c)| Move::Refund(m, c)),
                ((1u32..5_000), (0u32..5_000)).prop_map(|(m, c)| Move::Reverse(m, c)),
                (1u32..5_000).prop_map(Move::Transfer),
                (0u32..90).prop_map(Move::Reestimate),
                (0u32..40).prop_map(Move::Platform),
            ],
            0..40,
        )
    }

    proptest! {
        /// Whatever happens to a lot, in any order: every posting balances and is exact to the
        /// cent, the deferral never goes below zero, the identity price = deferred + recognized
        /// + breakage + refunded + transferred holds, and a lot with no credits left defers
        /// nothing.
        #[test]
        fn lots_keep_their_identity(
            price_cents in 0i64..1_000_000,
            credits in 1u32..20_000,
            share in 0u32..60,
            proportional_share in prop::option::of(0u32..90),
            moves in moves(),
        ) {
            let start = at("2026-01-10T00:00:00Z");
            let breakage = proportional_share.map_or(Breakage::Remote, |e| Breakage::Proportional {
                expected_unused: Decimal::new(i64::from(e), 2),
            });
            let price = Money::new(Decimal::new(price_cents, 2)).unwrap();
            let credits = Credits::new(Decimal::from(credits)).unwrap();
            let (mut lot, payment) = Lot::plan(
                "g", "usd", price, credits, breakage,
                Decimal::new(i64::from(share), 2),
                (start, start + chrono::Duration::days(31)),
                start,
            );
            payment.check().unwrap();
            let mut postings = vec![payment];
            let mut refunded_cash = Money::ZERO;
            let mut refunded_credits = Credits::ZERO;
            for m in moves {
                let free = lot.remaining();
                let n = |x: u32| Credits::new(Decimal::from(x)).unwrap().min(free);
                match m {
                    Move::Consume(x) if n(x).is_positive() => postings.extend(lot.consume(n(x), start)),
                    Move::Lapse(x) if n(x).is_positive() => postings.extend(lot.lapse(n(x), start)),
                    Move::Revive(x) => {
                        let x = Credits::new(Decimal::from(x)).unwrap().min(lot.lapsed);
                        if x.is_positive() {
                            postings.extend(lot.revive(x, start));
                        }
                    }
                    Move::Refund(cents, c) => {
                        let left = lot.paid() - refunded_cash;
                        let money = Money::new(Decimal::new(i64::from(cents), 2)).unwrap().min(left);
                        if money.is_positive() {
                            refunded_cash += money;
                            refunded_credits += n(c);
                            postings.push(lot.refund(money, n(c), start));
                        }
                    }
                    Move::Reverse(cents, c) => {
                        let money = Money::new(Decimal::new(i64::from(cents), 2))
                            .unwrap()
                            .min(refunded_cash);
                        let back = Credits::new(Decimal::from(c)).unwrap().min(refunded_credits);
                        if money.is_positive() {
                            refunded_cash -= money;
                            refunded_credits -= back;
                            postings.push(lot.refund_reversed(money, back, start));
                        }
                    }
                    Move::Transfer(x) if n(x).is_positive() => postings.push(lot.transfer_out(n(x), start).0),
                    Move::Reestimate(e) => postings.extend(lot.reestimate(
                        Breakage::Proportional { expected_unused: Decimal::new(i64::from(e), 2) },
                        start,
                    )),
                    Move::Platform(days) => postings.extend(
                        lot.recognize_platform(start + chrono::Duration::days(i64::from(days))),
                    ),
                    _ => {}
                }
                lot.check().unwrap();
            }
            for posting in &postings {
                prop_assert!(posting.check().is_ok(), "{:?}", posting.check());
            }
            let platform = lot.platform.clone();
            let (p_amount, p_recognized, p_refunded, p_contra) = platform.map_or(
                (Money::ZERO, Money::ZERO, Money::ZERO, Money::ZERO),
                |p| (p.amount, p.recognized, p.refunded, p.contra),
            );
            let deferred = lot.deferred() + (p_amount - p_recognized - p_refunded);
            let recognized = lot.recognized() + p_recognized - p_contra;
            let refunded = lot.refunded + lot.contra + p_refunded + p_contra;
            prop_assert_eq!(refunded, refunded_cash);
            prop_assert_eq!(
                lot.paid(),
                deferred + recognized + lot.breakage_recognized + refunded + lot.transferred
            );
            // The journal says the same: contract_liability's balance is the lot's deferral.
            let liability: Money = postings
                .iter()
                .flat_map(|p| &p.lines)
                .filter(|l| l.account == Account::ContractLiability && l.grant_id.is_some())
                .map(|l| l.credit - l.debit)
                .sum();
            prop_assert_eq!(liability, lot.deferred());
        }
    }
}
