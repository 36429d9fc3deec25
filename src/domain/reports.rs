//! The accountants' reports as rules over the journal's sums (README, Revenue recognition): which
//! account and kind of posting moves which figure of the roll-forward, the waterfall and a grant's
//! schedule. The store sums journal lines by the keys a report groups by; [`Movement::add`]
//! classifies every sum, once for the three reports, and the functions here shape the rows.

use super::money::{Credits, Money};
use super::revrec::{Account, Lot, Period, PostingKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// The journal lines of one account and kind of posting in some group, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSum {
    pub kind: PostingKind,
    pub account: Account,
    pub debit: Money,
    pub credit: Money,
}

impl JournalSum {
    /// Credit less debit: what a liability or revenue account gained.
    fn net(&self) -> Money {
        self.credit - self.debit
    }
}

/// What journal lines moved, by the figures the reports show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Movement {
    /// Into the deferral (`contract_liability` and `deferred_platform`), net.
    pub deferred: Money,
    /// Of `deferred`, money paid in (pack and plan payments).
    pub billings: Money,
    /// Out of the deferral with credits moved to another account's lot.
    pub transferred: Money,
    /// Usage revenue recognized as credits were consumed (`usage_revenue`, overage aside).
    pub usage: Money,
    /// The platform part recognized over its period (`subscription_revenue`, overage aside).
    pub platform: Money,
    pub breakage: Money,
    /// Overage billed in arrears, outside the deferral.
    pub overage: Money,
    /// Cash paid back by refunds, less refunds given back.
    pub refunded: Money,
    /// Of the refunds, what left the deferral: cash paid back less the revenue it reversed.
    pub refunds: Money,
    /// Revenue reversed by refunds beyond the deferral (contra-revenue `refunds`).
    pub reversed: Money,
}

impl Movement {
    /// The one classification of a journal sum.
    pub fn add(&mut self, sum: &JournalSum) {
        let net = sum.net();
        if sum.account.is_deferred() {
            self.deferred += net;
            if sum.kind.is_billing() {
                self.billings += net;
            }
            if sum.kind == PostingKind::Transfer {
                self.transferred -= net;
            }
        }
        match sum.account {
            Account::UsageRevenue | Account::SubscriptionRevenue
                if sum.kind == PostingKind::Overage =>
            {
                self.overage += net;
            }
            Account::UsageRevenue => self.usage += net,
            Account::SubscriptionRevenue => self.platform += net,
            Account::BreakageRevenue => self.breakage += net,
            Account::Refunds => self.reversed -= net,
            _ => {}
        }
        if matches!(sum.kind, PostingKind::Refund | PostingKind::RefundReversal) {
            match sum.account {
                Account::Cash => {
                    self.refunded += net;
                    self.refunds += net;
                }
                Account::Refunds => self.refunds += net,
                _ => {}
            }
        }
    }

    /// Revenue recognized from the deferral: usage and the platform part.
    pub fn recognized(&self) -> Money {
        self.usage + self.platform
    }
}

/// The months `from` to `to`, inclusive.
pub fn months(from: Period, to: Period) -> Vec<Period> {
    let mut months = Vec::new();
    let mut period = from;
    while period <= to {
        months.push(period);
        period = period.next();
    }
    months
}

/// One period and currency of the roll-forward: opening deferred + billings - recognized -
/// breakage - refunds = closing. `closing` is summed from the deferred accounts themselves, so the
/// identity is a check, not a definition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RollforwardRow {
    pub period: String,
    pub currency: String,
    pub opening: Money,
    pub billings: Money,
    pub recognized: Money,
    pub breakage: Money,
    pub refunds: Money,
    pub closing: Money,
    /// Revenue reversed by refunds beyond the deferral (contra-revenue `refunds`).
    pub revenue_reversed: Money,
    /// Overage billed in arrears (`unbilled_receivable` / `usage_revenue`), outside deferral.
    pub overage: Money,
    /// Of `recognized`, what credits consumed recognized (`usage_revenue`).
    pub usage_recognized: Money,
    /// Of `recognized`, the platform part recognized over the period (`subscription_revenue`).
    pub platform_recognized: Money,
}

/// The roll-forward per currency and period from `from` to `to`, from the journal summed by
/// period and currency up to `to` (earlier periods make the opening balance).
pub fn rollforward(
    sums: impl IntoIterator<Item = (Period, String, JournalSum)>,
    from: Period,
    to: Period,
) -> Vec<RollforwardRow> {
    let mut by_key: BTreeMap<(String, Period), Movement> = BTreeMap::new();
    for (period, currency, sum) in sums {
        by_key.entry((currency, period)).or_default().add(&sum);
    }
    let currencies: Vec<String> = by_key
        .keys()
        .map(|(c, _)| c.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    for currency in currencies {
        let mut balance: Money = by_key
            .iter()
            .filter(|((c, p), _)| *c == currency && *p < from)
            .map(|(_, m)| m.deferred)
            .sum();
        for period in months(from, to) {
            let m = by_key
                .get(&(currency.clone(), period))
                .copied()
                .unwrap_or_default();
            let opening = balance;
            balance += m.deferred;
            let shown = |v: Money| v.shown(&currency);
            rows.push(RollforwardRow {
                period: period.to_string(),
                opening: shown(opening),
                billings: shown(m.billings),
                recognized: shown(m.recognized()),
                breakage: shown(m.breakage),
                refunds: shown(m.refunds),
                closing: shown(balance),
                revenue_reversed: shown(m.reversed),
                overage: shown(m.overage),
                usage_recognized: shown(m.usage),
                platform_recognized: shown(m.platform),
                currency: currency.clone(),
            });
        }
    }
    rows
}

/// Revenue of lots booked in one period, by the period it was recognized in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaterfallRow {
    pub booked_period: String,
    pub currency: String,
    pub billed: Money,
    /// Recognized (usage, platform access and breakage), per period from `from` to `to`.
    pub recognized: BTreeMap<String, Money>,
    /// Still deferred at the end of `to`.
    pub deferred: Money,
}

/// The waterfall from the journal lines of lots summed by the period each lot was booked in, the
/// period of the line and the currency, up to `to`. Rows with nothing in them are left out.
pub fn waterfall(
    sums: impl IntoIterator<Item = (Period, Period, String, JournalSum)>,
    from: Period,
    to: Period,
) -> Vec<WaterfallRow> {
    // Per currency and booking period: all that moved up to `to`, and what moved in each month.
    type Moved = (Movement, BTreeMap<Period, Movement>);
    let mut rows: BTreeMap<(String, Period), Moved> = BTreeMap::new();
    for (booked, period, currency, sum) in sums.into_iter().filter(|s| s.1 <= to) {
        let (total, by_month) = rows.entry((currency, booked)).or_default();
        total.add(&sum);
        if period >= from {
            by_month.entry(period).or_default().add(&sum);
        }
    }
    let months = months(from, to);
    rows.into_iter()
        .map(|((currency, booked), (total, by_month))| {
            let recognized = months
                .iter()
                .map(|p| {
                    let m = by_month.get(p).copied().unwrap_or_default();
                    (
                        p.to_string(),
                        (m.recognized() + m.breakage).shown(&currency),
                    )
                })
                .collect();
            WaterfallRow {
                booked_period: booked.to_string(),
                billed: total.billings.shown(&currency),
                deferred: total.deferred.shown(&currency),
                recognized,
                currency,
            }
        })
        .filter(|r| {
            !r.billed.is_zero()
                || !r.deferred.is_zero()
                || r.recognized.values().any(|v| !v.is_zero())
        })
        .collect()
}

/// One period of a grant's schedule.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScheduleRow {
    pub period: String,
    pub billed: Money,
    pub usage_recognized: Money,
    pub platform_recognized: Money,
    pub breakage: Money,
    pub refunded: Money,
    pub revenue_reversed: Money,
    pub transferred: Money,
    /// Deferred (credits and platform part) at the end of the period.
    pub deferred: Money,
}

/// price + platform = deferred + recognized + breakage + refunded + transferred, where
/// recognized is net of refunds beyond the deferral: the lot's own counters, which must equal
/// the journal's.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScheduleTotals {
    pub deferred: Money,
    pub recognized: Money,
    pub breakage: Money,
    pub refunded: Money,
    pub transferred: Money,
}

/// One grant's schedule: its price and, per period, what was billed, recognized, broken, refunded
/// and left deferred; and the lot's totals.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Schedule {
    pub grant: String,
    pub customer: String,
    pub currency: String,
    /// What was paid for the grant, net of tax.
    pub paid: Money,
    /// The part of it paid for credits.
    pub price: Money,
    /// The platform part (plans with `platform_share`).
    pub platform: Money,
    pub credits: Credits,
    pub breakage_method: String,
    pub expected_unused: Option<String>,
    pub periods: Vec<ScheduleRow>,
    pub totals: ScheduleTotals,
}

impl Schedule {
    /// The schedule of `lot` (owned by `customer`), from its journal lines summed by period.
    pub fn of(
        lot: &Lot,
        customer: &str,
        (breakage_method, expected_unused): (String, Option<String>),
        sums: impl IntoIterator<Item = (Period, JournalSum)>,
    ) -> Schedule {
        let currency = lot.currency.as_str();
        let shown = |v: Money| v.shown(currency);
        let mut by_period: BTreeMap<Period, Movement> = BTreeMap::new();
        for (period, sum) in sums {
            by_period.entry(period).or_default().add(&sum);
        }
        let mut running = Money::ZERO;
        let periods = by_period
            .into_iter()
            .map(|(period, m)| {
                running += m.deferred;
                ScheduleRow {
                    period: period.to_string(),
                    billed: shown(m.billings),
                    usage_recognized: shown(m.usage),
                    platform_recognized: shown(m.platform),
                    breakage: shown(m.breakage),
                    refunded: shown(m.refunded),
                    revenue_reversed: shown(m.reversed),
                    transferred: shown(m.transferred),
                    deferred: shown(running),
                }
            })
            .collect();
        let platform = lot.platform.as_ref();
        let of_platform =
            |f: fn(&super::revrec::Platform) -> Money| platform.map_or(Money::ZERO, f);
        let contra = lot.contra + of_platform(|p| p.contra);
        Schedule {
            grant: lot.grant_id.clone(),
            customer: customer.to_owned(),
            currency: currency.to_owned(),
            paid: shown(lot.paid()),
            price: shown(lot.price),
            platform: shown(of_platform(|p| p.amount)),
            credits: lot.credits,
            breakage_method,
            expected_unused,
            periods,
            totals: ScheduleTotals {
                deferred: shown(lot.deferred() + of_platform(|p| p.deferred())),
                recognized: shown(lot.usage + of_platform(|p| p.recognized) - contra),
                breakage: shown(lot.breakage_recognized),
                refunded: shown(lot.refunded + of_platform(|p| p.refunded) + contra),
                transferred: shown(lot.transferred),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(kind: PostingKind, account: Account, debit: i64, credit: i64) -> JournalSum {
        JournalSum {
            kind,
            account,
            debit: Money::from_micros(debit * 10_000),
            credit: Money::from_micros(credit * 10_000),
        }
    }

    fn period(text: &str) -> Period {
        text.parse().unwrap()
    }

    /// Amounts in cents.
    fn cents(m: Money) -> i64 {
        i64::try_from((m.value() * rust_decimal::Decimal::from(100)).trunc()).unwrap()
    }

    #[test]
    fn each_line_moves_the_figures_its_account_and_kind_name() {
        use Account::*;
        use PostingKind::*;
        let cases = [
            // A pack paid: billed into the deferral; the cash line moves no figure.
            (
                sum(PackPayment, ContractLiability, 0, 5000),
                "deferred billings",
                5000,
            ),
            (sum(PackPayment, Cash, 5000, 0), "", 0),
            (
                sum(PlanPayment, DeferredPlatform, 0, 1000),
                "deferred billings",
                1000,
            ),
            // Consumption: out of the deferral into usage revenue.
            (
                sum(Consumption, ContractLiability, 300, 0),
                "deferred",
                -300,
            ),
            (sum(Consumption, UsageRevenue, 0, 300), "usage", 300),
            (
                sum(PlatformRecognition, SubscriptionRevenue, 0, 40),
                "platform",
                40,
            ),
            (sum(Breakage, BreakageRevenue, 0, 70), "breakage", 70),
            // Overage is billed in arrears: never usage revenue of the deferral.
            (sum(Overage, UsageRevenue, 0, 90), "overage", 90),
            // A refund: cash paid back; beyond the deferral it reverses revenue.
            (sum(Refund, Cash, 0, 200), "refunded refunds", 200),
            (sum(Refund, Refunds, 50, 0), "reversed", 50),
            (sum(RefundReversal, Cash, 200, 0), "refunded refunds", -200),
            (
                sum(Transfer, ContractLiability, 120, 0),
                "deferred transferred",
                -120,
            ),
        ];
        for (s, figures, amount) in cases {
            let mut m = Movement::default();
            m.add(&s);
            let moved = [
                ("deferred", m.deferred),
                ("billings", m.billings),
                ("transferred", m.transferred),
                ("usage", m.usage),
                ("platform", m.platform),
                ("breakage", m.breakage),
                ("overage", m.overage),
                ("refunded", m.refunded),
                ("reversed", m.reversed),
            ];
            for (name, value) in moved {
                let expected = match name {
                    "transferred" if figures.contains(name) => -amount,
                    _ if figures.split(' ').any(|f| f == name) => amount,
                    _ => 0,
                };
                assert_eq!(cents(value), expected, "{s:?}: {name}");
            }
        }
        // What left the deferral: the cash paid back less the revenue it reversed.
        let mut m = Movement::default();
        m.add(&sum(Refund, Cash, 0, 200));
        m.add(&sum(Refund, Refunds, 50, 0));
        m.add(&sum(Refund, ContractLiability, 150, 0));
        assert_eq!(cents(m.refunds), 150);
        assert_eq!(cents(m.refunded), 200);
        assert_eq!(cents(m.deferred), -150);
    }

    #[test]
    fn the_rollforward_opens_with_what_earlier_periods_left_deferred() {
        use Account::*;
        use PostingKind::*;
        let at = |month: &str, sum: JournalSum| (period(month), "usd".to_owned(), sum);
        let sums = vec![
            at("2026-01", sum(PackPayment, ContractLiability, 0, 10000)),
            at("2026-02", sum(Consumption, ContractLiability, 2500, 0)),
            at("2026-02", sum(Consumption, UsageRevenue, 0, 2500)),
            at("2026-03", sum(Breakage, ContractLiability, 1000, 0)),
            at("2026-03", sum(Breakage, BreakageRevenue, 0, 1000)),
        ];
        let rows = rollforward(sums, period("2026-02"), period("2026-03"));
        assert_eq!(rows.len(), 2);
        let (feb, mar) = (&rows[0], &rows[1]);
        assert_eq!(feb.opening.to_string(), "100.00");
        assert_eq!(feb.recognized.to_string(), "25.00");
        assert_eq!(feb.closing.to_string(), "75.00");
        assert_eq!(mar.opening, feb.closing);
        assert_eq!(mar.breakage.to_string(), "10.00");
        assert_eq!(mar.closing.to_string(), "65.00");
        for r in &rows {
            assert_eq!(
                r.opening + r.billings - r.recognized - r.breakage - r.refunds,
                r.closing,
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_waterfall_spreads_a_booking_periods_revenue_over_the_months_shown() {
        use Account::*;
        use PostingKind::*;
        let jan = period("2026-01");
        let at = |month: &str, sum: JournalSum| (jan, period(month), "usd".to_owned(), sum);
        let sums = vec![
            at("2026-01", sum(PackPayment, ContractLiability, 0, 10000)),
            at("2026-02", sum(Consumption, ContractLiability, 4000, 0)),
            at("2026-02", sum(Consumption, UsageRevenue, 0, 4000)),
            at("2026-03", sum(Consumption, UsageRevenue, 0, 1000)),
            // After the last month shown: not in the figures.
            at("2026-04", sum(Consumption, ContractLiability, 1000, 0)),
        ];
        let rows = waterfall(sums, period("2026-02"), period("2026-03"));
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.booked_period, "2026-01");
        assert_eq!(row.billed.to_string(), "100.00");
        assert_eq!(row.deferred.to_string(), "60.00");
        assert_eq!(row.recognized["2026-02"].to_string(), "40.00");
        assert_eq!(row.recognized["2026-03"].to_string(), "10.00");
        assert!(waterfall(Vec::new(), jan, jan).is_empty());
    }
}
