//! The customers' row locks: every change of a book is made under its customer's lock, taken
//! in id order.

use super::rows;
use crate::domain::Timestamp;
use crate::error::Result;
use entity::customers;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

/// Takes the row locks of `ids` for the rest of the transaction, in id order so that two batches
/// never wait on each other in a cycle (PostgreSQL: `FOR UPDATE`, then the version bump;
/// SQLite: its transactions begin with the database's write lock), and returns their rows as
/// locked (`UPDATE … RETURNING`: one round trip for the bump and the read).
pub(crate) async fn lock_customers(
    txn: &DatabaseTransaction,
    ids: &[String],
) -> Result<Vec<customers::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if txn.get_database_backend() == DbBackend::Postgres && ids.len() > 1 {
        customers::Entity::find()
            .select_only()
            .column(customers::Column::Id)
            .filter(customers::Column::Id.is_in(super::rows::in_list(ids)))
            .order_by_asc(customers::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .all(txn)
            .await?;
    }
    let moved = customers::Entity::update_many()
        .col_expr(
            customers::Column::Version,
            Expr::col(customers::Column::Version).add(1),
        )
        .filter(customers::Column::Id.is_in(super::rows::in_list(ids)));
    // The rows as locked, in the same round trip where the engine returns them.
    if txn.support_returning() {
        return Ok(moved.exec_with_returning(txn).await?);
    }
    moved.exec(txn).await?;
    Ok(customers::Entity::find()
        .filter(customers::Column::Id.is_in(super::rows::in_list(ids)))
        .all(txn)
        .await?)
}

/// Creates the customer's row unless it exists (it may have been created concurrently).
pub(crate) async fn insert_customer_if_absent(
    txn: &DatabaseTransaction,
    customer_id: &str,
    now: Timestamp,
) -> Result<()> {
    insert_customers_if_absent(txn, &[(customer_id, now)]).await
}

/// Creates each customer's row unless it exists, with one statement.
pub(crate) async fn insert_customers_if_absent(
    txn: &DatabaseTransaction,
    customers: &[(&str, Timestamp)],
) -> Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = customers
        .iter()
        .map(|(id, now)| rows::new_customer(id, *now))
        .collect();
    customers::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(customers::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Takes one customer's row lock (PostgreSQL: the row lock of an UPDATE; SQLite: the database
/// write lock). False when the customer does not exist.
pub(crate) async fn lock_customer(txn: &DatabaseTransaction, customer_id: &str) -> Result<bool> {
    let result = customers::Entity::update_many()
        .col_expr(
            customers::Column::Version,
            Expr::col(customers::Column::Version).add(1),
        )
        .filter(customers::Column::Id.eq(customer_id))
        .exec(txn)
        .await?;
    Ok(result.rows_affected == 1)
}
