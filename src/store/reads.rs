//! Reads for people and dashboards: customers found by id (or Stripe customer) a page at a time,
//! and a customer's credits used per day or month. Each reads on an index, its work bounded by
//! the page or the range, however long the ledger grows.

use super::Store;
use super::book::placeholder;
use super::rows::ByKey;
use super::rows::time;
use crate::domain::Timestamp;
use crate::domain::customer::CustomerId;
use crate::domain::gate::Standing;
use crate::domain::ledger::Book;
use crate::domain::money::Credits;
use crate::error::Result;
use chrono::NaiveDate;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement, Value};

/// How usage is bucketed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// UTC days, `YYYY-MM-DD`.
    Day,
    /// UTC months, `YYYY-MM`.
    Month,
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Action,
    Feature,
    /// The member that spent (README, Members and subjects).
    Subject,
    /// The customer that spent: the customer and the customers below it (README,
    /// Organizations).
    Customer,
}

/// Credits used in one interval by one action or feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The interval: `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    /// The action, feature or member; none for spends that named no member.
    pub group: Option<String>,
    pub credits: Credits,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Store {
    /// Up to `limit` customers after `after` (by id), whose id contains `q` or who are linked to
    /// the Stripe customer `q`, with their books as of `now` (as `view` reads them); and whether
    /// there are more. One query for the page's ids, then the page's books together.
    pub async fn customers_page(
        &self,
        q: Option<&str>,
        after: Option<&str>,
        limit: u64,
        now: Timestamp,
    ) -> Result<(Vec<(String, Book, Standing)>, bool)> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let mut values: Vec<Value> = Vec::new();
        let mut conditions = Vec::new();
        if let Some(after) = after {
            values.push(after.into());
            conditions.push(format!("id > {}", placeholder(backend, values.len())));
        }
        if let Some(q) = q {
            values.push(q.into());
            let n = values.len();
            let contains = match backend {
                DbBackend::Postgres => format!("strpos(id, {}) > 0", placeholder(backend, n)),
                _ => format!("instr(id, {}) > 0", placeholder(backend, n)),
            };
            conditions.push(format!(
                "({contains} OR id IN (SELECT customer_id FROM stripe_customers \
                 WHERE stripe_customer_id = {}))",
                placeholder(backend, n)
            ));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT id FROM customers {filter} ORDER BY id LIMIT {}",
            limit + 1
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let more = rows.len() as u64 > limit;
        let ids = rows
            .into_iter()
            .take(limit as usize)
            .map(|row| row.try_get::<String>("", "id"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut books = self.view_many(&ids, now).await?;
        let page = ids
            .into_iter()
            .filter_map(|id| {
                let (book, standing) = books.remove(id.as_str())?;
                Some((id, book, standing))
            })
            .collect();
        Ok((page, more))
    }

    /// Credits `customer` used from `from` to `to` (half-open), per interval and action,
    /// feature or member, in order (spends naming no member first); none when the customer is unknown.
    pub async fn usage(
        &self,
        customer: &CustomerId,
        from: Timestamp,
        to: Timestamp,
        interval: Interval,
        by: UsageBy,
    ) -> Result<Option<Vec<UsageRow>>> {
        let customer = customer.as_str();
        let db = self.connection();
        if entity::customers::Entity::find_by_id(customer.to_owned())
            .by_key(db)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let backend = db.get_database_backend();
        let bucket = match interval {
            Interval::Day => {
                format!("CAST(effective_at / {MICROS_PER_DAY} AS BIGINT)")
            }
            Interval::Month => "period".to_owned(),
        };
        let group = match by {
            UsageBy::Action => "action",
            UsageBy::Feature => "feature",
            UsageBy::Subject => "subject",
            UsageBy::Customer => "customer_id",
        };
        // By customer: the customer and those below it, two levels down at most (the
        // customer bound once per mention).
        let (whose, mentions) = match by {
            UsageBy::Customer => (
                format!(
                    "(customer_id = {} OR customer_id IN (SELECT id FROM customers WHERE \
                     parent_id = {}) OR customer_id IN (SELECT c.id FROM customers c JOIN \
                     customers p ON c.parent_id = p.id WHERE p.parent_id = {}))",
                    placeholder(backend, 1),
                    placeholder(backend, 2),
                    placeholder(backend, 3)
                ),
                3,
            ),
            _ => (format!("customer_id = {}", placeholder(backend, 1)), 1),
        };
        let sql = format!(
            "SELECT {bucket} AS bucket, {group} AS grp, CAST(SUM(credits) AS BIGINT) AS credits \
             FROM consumptions WHERE {whose} AND effective_at >= {} \
             AND effective_at < {} GROUP BY {bucket}, {group} \
             ORDER BY bucket, CASE WHEN {group} IS NULL THEN 0 ELSE 1 END, grp",
            placeholder(backend, mentions + 1),
            placeholder(backend, mentions + 2),
        );
        let mut values: Vec<sea_orm::Value> = vec![customer.into(); mentions];
        values.extend([time(from).into(), time(to).into()]);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let mut usage = Vec::with_capacity(rows.len());
        for row in rows {
            let period = match interval {
                Interval::Day => {
                    let day: i64 = row.try_get("", "bucket")?;
                    day_of(day).to_string()
                }
                Interval::Month => row.try_get("", "bucket")?,
            };
            usage.push(UsageRow {
                period,
                group: row.try_get::<Option<String>>("", "grp")?,
                credits: Credits::from_micros(row.try_get("", "credits")?),
            });
        }
        Ok(Some(usage))
    }
}

/// The UTC date of the `day`-th day since 1970-01-01.
fn day_of(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date") + chrono::Days::new(day.max(0) as u64)
}
