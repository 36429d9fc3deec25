//! Conversions between rows (integers of scale 6, Unix microseconds) and domain values.

use crate::domain::Timestamp;
use crate::domain::customer::{CustomerId, Subject};
use crate::domain::gate::Standing;
use crate::domain::ledger::{Entry, Grant, GrantKind, GrantSource, Hold, HoldStatus};
use crate::domain::margin::Consumption;
use crate::domain::money::{Credits, Micros, Money};
use crate::domain::overrides::{Flat, Override};
use crate::error::{Error, Result};
use chrono::DateTime;
use entity::{consumptions, customers, grants, holds, ledger_entries, override_history};
use sea_orm::ActiveValue::{NotSet, Set};

/// Rows per multi-row statement (and ids per `IN` list): under both engines' limits on the bound
/// values of one statement.
pub const ROWS_PER_STATEMENT: usize = 500;

/// Rows that one statement carries as they are, whatever their number up to this: each length
/// is a statement text of its own, and the statement cache holds every length a table sees in
/// batches this small (`STATEMENT_CACHE_CAPACITY`).
pub const ONE_STATEMENT_ROWS: usize = 64;

/// `rows` cut for multi-row statements: up to [`ONE_STATEMENT_ROWS`] in one statement; more in
/// runs as long as the largest power of two that fits in what is left and in `max`. Large
/// batches then bring a few statement texts, prepared once per connection and kept, where a run
/// as long as each batch happens to be would be a new statement to prepare almost every time;
/// small ones pay one statement (a round trip on PostgreSQL), not one per power of two.
pub fn statement_chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let floor_pow2 = |n: usize| 1_usize << (usize::BITS - 1 - n.max(1).leading_zeros());
    let cap = floor_pow2(max);
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = if rest.len() <= ONE_STATEMENT_ROWS.min(max) {
            rest.len()
        } else {
            cap.min(floor_pow2(rest.len()))
        };
        let (run, tail) = rest.split_at(take);
        rest = tail;
        Some(run)
    })
}

/// The row a primary or unique key names, if any: `select.by_key(db)` where `.one(db)` would be.
/// `.one()` adds `LIMIT ?`, and SQLite's planner reads that bound value, so such a statement is
/// prepared again every time it runs; without the limit a key lookup stays prepared in the
/// connection's statement cache. A key names one row at most, so the limit adds nothing.
pub trait ByKey: Sized + Send {
    type Item: Send;

    fn all_rows<C: sea_orm::ConnectionTrait>(
        self,
        db: &C,
    ) -> impl Future<Output = std::result::Result<Vec<Self::Item>, sea_orm::DbErr>> + Send;

    fn by_key<C: sea_orm::ConnectionTrait>(
        self,
        db: &C,
    ) -> impl Future<Output = std::result::Result<Option<Self::Item>, sea_orm::DbErr>> + Send {
        async move {
            let mut rows = self.all_rows(db).await?;
            assert!(rows.len() <= 1, "a key names one row at most");
            Ok(rows.pop())
        }
    }
}

impl<E: sea_orm::EntityTrait> ByKey for sea_orm::Select<E> {
    type Item = E::Model;

    fn all_rows<C: sea_orm::ConnectionTrait>(
        self,
        db: &C,
    ) -> impl Future<Output = std::result::Result<Vec<E::Model>, sea_orm::DbErr>> + Send {
        self.all(db)
    }
}

impl<S: sea_orm::SelectorTrait + Send> ByKey for sea_orm::Selector<S>
where
    S::Item: Send,
{
    type Item = S::Item;

    fn all_rows<C: sea_orm::ConnectionTrait>(
        self,
        db: &C,
    ) -> impl Future<Output = std::result::Result<Vec<S::Item>, sea_orm::DbErr>> + Send {
        self.all(db)
    }
}

pub fn micros(c: impl Micros) -> Result<i64> {
    c.to_micros()
        .map_err(|e| Error::invalid("amount", format!("{c} {e}")))
}

pub fn time(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub fn timestamp(us: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Internal(format!("stored time {us} out of range")))
}

pub fn grant_from_row(row: grants::Model) -> Result<Grant> {
    Ok(Grant {
        kind: GrantKind::parse(&row.kind)
            .ok_or_else(|| Error::Internal(format!("grant kind {:?}", row.kind)))?,
        credits: Credits::from_micros(row.credits),
        remaining: Credits::from_micros(row.remaining),
        held: Credits::from_micros(row.held),
        price: row.price.map(Money::from_micros),
        currency: row.currency,
        expires_at: row.expires_at.map(timestamp).transpose()?,
        expired: row.expired,
        priority: row.priority,
        plan_id: row.plan_id,
        pack_id: row.pack_id,
        source_type: GrantSource::parse(&row.source_type).ok_or_else(|| {
            Error::Internal(format!(
                "grant {}: source_type {:?}",
                row.id, row.source_type
            ))
        })?,
        source_id: row.source_id,
        created_at: timestamp(row.created_at)?,
        refunded: Money::from_micros(row.refunded),
        period_start: None,
        frozen: row.frozen,
        starts_at: row.starts_at.map(timestamp).transpose()?,
        scheduled: row.scheduled,
        shared: row.shared,
        lent: None,
        id: row.id,
    })
}

pub fn grant_to_row(customer: &str, g: &Grant) -> Result<grants::ActiveModel> {
    Ok(grants::ActiveModel {
        id: Set(g.id.clone()),
        customer_id: Set(customer.to_owned()),
        kind: Set(g.kind.as_str().to_owned()),
        credits: Set(micros(g.credits)?),
        remaining: Set(micros(g.remaining)?),
        held: Set(micros(g.held)?),
        price: Set(g.price.map(micros).transpose()?),
        currency: Set(g.currency.clone()),
        expires_at: Set(g.expires_at.map(time)),
        expired: Set(g.expired),
        priority: Set(g.priority),
        plan_id: Set(g.plan_id.clone()),
        pack_id: Set(g.pack_id.clone()),
        source_type: Set(g.source_type.as_str().to_owned()),
        source_id: Set(g.source_id.clone()),
        created_at: Set(time(g.created_at)),
        refunded: Set(micros(g.refunded)?),
        expiry_warned_for: Set(None),
        frozen: Set(g.frozen),
        starts_at: Set(g.starts_at.map(time)),
        scheduled: Set(g.scheduled),
        shared: Set(g.shared),
    })
}

pub fn hold_from_row(row: holds::Model, allocations: Vec<(String, Credits)>) -> Result<Hold> {
    Ok(Hold {
        status: HoldStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(format!("hold status {:?}", row.status)))?,
        credits: Credits::from_micros(row.credits),
        overdraft: Credits::from_micros(row.overdraft),
        expires_at: timestamp(row.expires_at)?,
        captured: row.captured.map(Credits::from_micros),
        created_at: timestamp(row.created_at)?,
        resolved_at: row.resolved_at.map(timestamp).transpose()?,
        action: row.action,
        quantity: row.quantity,
        subject: row.subject.map(Subject::known),
        allocations,
        id: row.id,
    })
}

pub fn hold_to_row(customer: &str, h: &Hold) -> Result<holds::ActiveModel> {
    Ok(holds::ActiveModel {
        id: Set(h.id.clone()),
        customer_id: Set(customer.to_owned()),
        action: Set(h.action.clone()),
        quantity: Set(h.quantity.clone()),
        credits: Set(micros(h.credits)?),
        overdraft: Set(micros(h.overdraft)?),
        status: Set(h.status.as_str().to_owned()),
        expires_at: Set(time(h.expires_at)),
        captured: Set(h.captured.map(micros).transpose()?),
        created_at: Set(time(h.created_at)),
        resolved_at: Set(h.resolved_at.map(time)),
        subject: Set(h.subject.as_ref().map(|s| s.as_str().to_owned())),
    })
}

pub fn entry_to_row(
    customer: &str,
    operation_id: &str,
    position: usize,
    e: &Entry,
    recorded_at: Timestamp,
    actor: Option<&str>,
) -> Result<ledger_entries::ActiveModel> {
    Ok(ledger_entries::ActiveModel {
        id: NotSet,
        operation_id: Set(operation_id.to_owned()),
        position: Set(
            i32::try_from(position).map_err(|_| Error::Internal("too many entries".into()))?
        ),
        customer_id: Set(customer.to_owned()),
        kind: Set(e.kind.as_str().to_owned()),
        grant_id: Set(e.grant_id.clone()),
        hold_id: Set(e.hold_id.clone()),
        action: Set(e.action.clone()),
        quantity: Set(e.quantity.clone()),
        credits: Set(micros(e.credits)?),
        held: Set(micros(e.held)?),
        overage: Set(micros(e.overage)?),
        effective_at: Set(time(e.effective_at)),
        recorded_at: Set(time(recorded_at)),
        money: Set(e.money.map(micros).transpose()?),
        reason: Set(e.reason.clone()),
        actor: Set(actor.map(str::to_owned)),
        subject: Set(e.subject.as_ref().map(|s| s.as_str().to_owned())),
    })
}

/// A consumption's row: `source` is the usage or hold id its revenue posts under.
pub fn consumption_to_row(
    customer: &str,
    source: &str,
    c: &Consumption,
    recorded_at: Timestamp,
) -> Result<consumptions::ActiveModel> {
    let vendor_cost = c.vendor_cost.map(micros).transpose()?;
    Ok(consumptions::ActiveModel {
        customer_id: Set(customer.to_owned()),
        source: Set(source.to_owned()),
        action: Set(c.action.clone()),
        feature: Set(c.feature.clone()),
        plan_id: Set(c.plan.clone()),
        quantity: Set(c.quantity.map(|q| q.to_string())),
        credits: Set(micros(c.credits)?),
        vendor_cost: Set(vendor_cost),
        effective_at: Set(time(c.at)),
        period: Set(crate::domain::revrec::Period::of(c.at).to_string()),
        recorded_at: Set(time(recorded_at)),
        subject: Set(c.subject.as_ref().map(|s| s.as_str().to_owned())),
    })
}

/// A new customer's row: no plan, not frozen, nothing owed.
pub fn new_customer(id: &str, now: Timestamp) -> customers::ActiveModel {
    customers::ActiveModel {
        id: Set(id.to_owned()),
        plan_id: Set(None),
        frozen: Set(false),
        overdraft: Set(0),
        overdraft_held: Set(0),
        version: Set(0),
        past_due_since: Set(None),
        renews_at: Set(None),
        created_at: Set(time(now)),
        alert_state: Set(0),
        alert_arming: Set(0),
        limits: Set(None),
        overrides: Set(None),
        low_balance: Set(None),
        auto_topup: Set(None),
        credit_cycle: Set(None),
        next_grant_at: Set(None),
        parent_id: Set(None),
    }
}

/// A JSON column of the customer (limits, overrides): `None` when empty.
pub fn json_column<T: serde::Serialize>(value: &T, empty: bool) -> Result<Option<String>> {
    if empty {
        return Ok(None);
    }
    serde_json::to_string(value)
        .map(Some)
        .map_err(|e| Error::Internal(format!("writing a customer's JSON column: {e}")))
}

/// Reads a JSON column of the customer; the default when absent.
pub fn from_json_column<T: serde::de::DeserializeOwned + Default>(
    column: Option<&str>,
) -> Result<T> {
    column.map_or(Ok(T::default()), |text| {
        serde_json::from_str(text)
            .map_err(|e| Error::Internal(format!("reading a customer's JSON column: {e}")))
    })
}

/// A customer's standing as its row keeps it.
pub fn standing_from_row(row: &customers::Model) -> Result<Standing> {
    Ok(Standing {
        plan_id: row.plan_id.clone(),
        frozen: row.frozen,
        past_due_since: row.past_due_since.map(timestamp).transpose()?,
        renews_at: row.renews_at.map(timestamp).transpose()?,
        limits: from_json_column(row.limits.as_deref())?,
        overrides: from_json_column(row.overrides.as_deref())?,
        low_balance: from_json_column(row.low_balance.as_deref())?,
        auto_topup: from_json_column(row.auto_topup.as_deref())?,
        cycle: from_json_column(row.credit_cycle.as_deref())?,
        parent: row.parent_id.clone().map(CustomerId::known),
    })
}

/// A value as a load reads it back once written: amounts in micros, times in microseconds,
/// the customer's settings through their JSON columns.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
    value: &T,
    empty: bool,
) -> Result<T> {
    from_json_column(json_column(value, empty)?.as_deref())
}

fn stored_time(t: Timestamp) -> Result<Timestamp> {
    timestamp(time(t))
}

/// A grant as a load reads it back once written.
pub fn grant_as_stored(customer: &str, g: &Grant) -> Result<Grant> {
    use sea_orm::TryIntoModel;
    let row = grant_to_row(customer, g)?
        .try_into_model()
        .map_err(|e| Error::Internal(format!("grant {} as a row: {e}", g.id)))?;
    grant_from_row(row)
}

/// A hold, with its reservations, as a load reads it back once written.
pub fn hold_as_stored(customer: &str, h: &Hold) -> Result<Hold> {
    use sea_orm::TryIntoModel;
    let row = hold_to_row(customer, h)?
        .try_into_model()
        .map_err(|e| Error::Internal(format!("hold {} as a row: {e}", h.id)))?;
    let allocations = h
        .allocations
        .iter()
        .map(|(grant, held)| Ok((grant.clone(), Credits::from_micros(micros(*held)?))))
        .collect::<Result<Vec<_>>>()?;
    hold_from_row(row, allocations)
}

/// A standing as a load reads it back once written.
pub fn standing_as_stored(s: &Standing) -> Result<Standing> {
    Ok(Standing {
        plan_id: s.plan_id.clone(),
        frozen: s.frozen,
        past_due_since: s.past_due_since.map(stored_time).transpose()?,
        renews_at: s.renews_at.map(stored_time).transpose()?,
        limits: round_trip(&s.limits, s.limits.is_empty())?,
        overrides: round_trip(&s.overrides, s.overrides.is_empty())?,
        low_balance: round_trip(&s.low_balance, s.low_balance.is_none())?,
        auto_topup: round_trip(&s.auto_topup, s.auto_topup.is_unset())?,
        cycle: round_trip(&s.cycle, s.cycle.is_none())?,
        parent: s.parent.clone(),
    })
}

/// An override as its history row: the fields of its kind, the others empty.
pub(crate) fn override_row(
    made: &Override,
    customer: &str,
    idempotency_key: &str,
    request_hash: &str,
) -> Result<override_history::ActiveModel> {
    let flat = Flat::from(made.clone());
    let micros = |c: Option<Credits>| c.map(micros).transpose();
    Ok(override_history::ActiveModel {
        id: Set(flat.id),
        customer_id: Set(customer.to_owned()),
        kind: Set(made.change.kind().to_owned()),
        feature: Set(flat.feature),
        enabled: Set(flat.enabled),
        action: Set(flat.action),
        credits_per_unit: Set(micros(flat.credits_per_unit)?),
        overage: Set(flat.overage),
        overage_limit: Set(micros(flat.overage_limit)?),
        overage_price: Set(flat.overage_price.map(|p| p.to_string())),
        until_at: Set(flat.until.map(time)),
        reason: Set(flat.reason),
        actor: Set(flat.actor),
        idempotency_key: Set(idempotency_key.to_owned()),
        request_hash: Set(request_hash.to_owned()),
        created_at: Set(time(made.at)),
    })
}

pub(crate) fn override_from_row(row: override_history::Model) -> Result<Override> {
    let overage_price = row
        .overage_price
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| Error::Internal(format!("override {}: overage_price {e}", row.id)))?;
    let flat = Flat {
        id: row.id.clone(),
        kind: Some(row.kind),
        feature: row.feature,
        enabled: row.enabled,
        action: row.action,
        credits_per_unit: row.credits_per_unit.map(Credits::from_micros),
        overage: row.overage,
        overage_limit: row.overage_limit.map(Credits::from_micros),
        overage_price,
        until: row.until_at.map(timestamp).transpose()?,
        reason: row.reason,
        actor: row.actor,
        at: timestamp(row.created_at)?,
    };
    Override::try_from(flat).map_err(|e| Error::Internal(format!("override {}: {e}", row.id)))
}

/// `ids` for an `IN` list (or a `VALUES` list that is joined): as long as the next power of two,
/// the last repeated, so that the statement's text is one of a few (see [`statement_chunks`]);
/// a repeated id finds nothing more.
pub fn in_list<T: Clone>(ids: &[T]) -> Vec<T> {
    let mut padded = ids.to_vec();
    if let Some(last) = ids.last() {
        padded.resize(ids.len().next_power_of_two(), last.clone());
    }
    padded
}

/// `ids` cut in runs of at most `max`, each padded by [`in_list`].
pub fn in_lists<T: Clone>(ids: &[T], max: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    ids.chunks(max).map(in_list)
}

#[cfg(test)]
mod tests {
    use super::{in_list, in_lists, statement_chunks};

    #[test]
    fn an_in_list_repeats_its_last_id_up_to_a_power_of_two() {
        assert_eq!(in_list::<u8>(&[]), Vec::<u8>::new());
        assert_eq!(in_list(&[1]), [1]);
        assert_eq!(in_list(&[1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(in_list(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5, 5, 5, 5]);
        let lists: Vec<Vec<u16>> = in_lists(&(0..600).collect::<Vec<u16>>(), 500).collect();
        assert_eq!(
            lists.iter().map(Vec::len).collect::<Vec<_>>(),
            [512, 128],
            "under both engines' limits on bound values"
        );
    }

    fn lengths(n: usize, max: usize) -> Vec<usize> {
        let rows: Vec<usize> = (0..n).collect();
        let runs: Vec<&[usize]> = statement_chunks(&rows, max).collect();
        let joined: Vec<usize> = runs.concat();
        assert_eq!(joined, rows, "every row once, in order");
        runs.iter().map(|r| r.len()).collect()
    }

    #[test]
    fn few_rows_go_in_one_statement_many_in_powers_of_two_under_the_limit() {
        assert_eq!(lengths(0, 500), Vec::<usize>::new());
        assert_eq!(lengths(1, 500), [1]);
        assert_eq!(lengths(37, 500), [37]);
        assert_eq!(lengths(64, 500), [64]);
        assert_eq!(lengths(100, 500), [64, 36]);
        assert_eq!(lengths(256, 500), [256]);
        assert_eq!(lengths(600, 500), [256, 256, 64, 24]);
        assert_eq!(lengths(600, 250), [128, 128, 128, 128, 64, 24]);
        assert_eq!(lengths(3, 1), [1, 1, 1]);
        assert_eq!(lengths(40, 32), [32, 8]);
    }
}
