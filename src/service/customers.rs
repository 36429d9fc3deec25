//! The customers as a list: the API's `GET /v1/customers` and the console's customer search.

use crate::domain::Timestamp;
use crate::domain::gate::Terms;
use crate::domain::money::Credits;
use crate::error::Result;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A customer in a list: what `GET /v1/customers/{id}` says of its plan and credits.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CustomerRow {
    pub id: String,
    /// The plan in force.
    pub plan: Option<String>,
    pub frozen: bool,
    #[schema(value_type = String)]
    pub balance: Credits,
    #[schema(value_type = String)]
    pub held: Credits,
    #[schema(value_type = String)]
    pub available: Credits,
    #[schema(value_type = String)]
    pub overdraft: Credits,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CustomersPage {
    /// By id.
    pub customers: Vec<CustomerRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Up to `limit` customers after `cursor`, found by `q`, as the customer view reads them; the
/// cursor of the next page. Shared by the API and the console.
pub async fn customers_page(
    store: &Store,
    (q, cursor, limit): (Option<&str>, Option<&str>, u64),
    now: Timestamp,
) -> Result<CustomersPage> {
    let (page, more) = store.customers_page(q, cursor, limit, now).await?;
    let next_cursor = more
        .then(|| page.last().map(|(id, ..)| id.clone()))
        .flatten();
    let customers = page
        .into_iter()
        .map(|(id, book, standing)| CustomerRow {
            plan: Terms::of(store.catalog(), &standing, now, store.policy())
                .plan
                .map(|p| p.id.clone()),
            frozen: standing.frozen || book.frozen().is_positive(),
            balance: book.balance(),
            held: book.held(),
            available: book.available(),
            overdraft: book.overdraft,
            id,
        })
        .collect();
    Ok(CustomersPage {
        customers,
        next_cursor,
    })
}
