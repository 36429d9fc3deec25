//! The unit of work for what is not a customer's book. A book changes only through commands
//! (`Store::execute`: the runner's batches, `book::run_commands`), a Stripe event's records in
//! the event's own transaction (`store::stripe`). Everything else written — the outbox's
//! claims, attempts and replays, the expiry warnings, overage reports to Stripe's meter, auto
//! top-up attempts, the Stripe backfill's cursors, retention, period close — is a [`Write`]: a
//! value a job or a handler builds, carried out by [`Store::write`] in one transaction under the
//! writer permit, committed once, and run again from the start on a transient failure.

use super::Store;
use crate::error::{Error, Result};
use sea_orm::DatabaseTransaction;
use std::future::Future;
use std::time::Duration;

/// Attempts of one write when the database reports a transient failure.
const TRANSIENT_ATTEMPTS: u32 = 5;

/// One write outside the books: what it does inside its transaction, and what it answers.
pub(crate) trait Write: Sync {
    type Written: Send;

    /// Carries the write out inside `txn`, which [`Store::write`] commits when it succeeds (and
    /// rolls back otherwise). May run again, in a new transaction, after a transient failure.
    fn carry_out(
        &self,
        txn: &DatabaseTransaction,
        store: &Store,
    ) -> impl Future<Output = Result<Self::Written>> + Send;
}

impl Store {
    /// Carries `write` out in a transaction of its own (see the module doc); after the last
    /// attempt of a transient failure, fails closed with `Unavailable`.
    pub(crate) async fn write<W: Write>(&self, write: &W) -> Result<W::Written> {
        let mut attempt = 1;
        loop {
            match self.write_once(write).await {
                Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(e) if e.is_transient() => return Err(Error::Unavailable),
                other => return other,
            }
        }
    }

    async fn write_once<W: Write>(&self, write: &W) -> Result<W::Written> {
        let engine = self.engine();
        // SQLite: one writer per process, so a write never contends with the batch writer.
        let _permit = engine.write_permit().await;
        let txn = engine.begin().await?;
        let written = write.carry_out(&txn, self).await?;
        txn.commit().await?;
        Ok(written)
    }
}
