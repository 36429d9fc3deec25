//! Time-driven work: holds and grants past their expiry are settled, customer by customer, in the
//! same transactions as any command.

use crate::domain::Timestamp;
use crate::domain::customer::CustomerId;
use crate::error::Result;
use crate::store::{Command, Envelope, Store};

/// Customers settled per query, and passes per run: a limit on one run's work.
const BATCH: u64 = 500;
const MAX_PASSES: usize = 1_000;

/// Every time-driven job, up to `now`: holds and grants settled, paid grants about to expire
/// warned of (`credit.grant_expiring`), then the revenue due (the platform part's days, changed
/// breakage estimates). Returns the customers settled and the
/// lots moved.
pub async fn run_due(store: &Store, now: Timestamp) -> Result<(usize, usize)> {
    let settled = settle_due(store, now).await?;
    for _ in 0..MAX_PASSES {
        if (store.warn_expiring(now, BATCH).await? as u64) < BATCH {
            break;
        }
    }
    for _ in 0..MAX_PASSES {
        if (store.report_overage(now, BATCH).await? as u64) < BATCH {
            break;
        }
    }
    let mut moved = 0;
    for _ in 0..MAX_PASSES {
        let batch = recognize_due(store, now, BATCH).await?;
        moved += batch;
        if (batch as u64) < BATCH {
            break;
        }
    }
    Ok((settled, moved))
}

/// Time-driven revenue due at `now` (the platform part's days, changed breakage estimates) of up
/// to about `limit` lots, as one `Command::Recognize` per customer, batched like any command:
/// each customer's lots move under its row lock. Returns the lots named.
pub async fn recognize_due(store: &Store, now: Timestamp, limit: u64) -> Result<usize> {
    let due = store.due_for_recognition(now, limit).await?;
    let named = due.values().map(Vec::len).sum();
    let commands = due
        .into_iter()
        .map(|(customer, grant_ids)| {
            Envelope::new(
                CustomerId::known(customer),
                Command::Recognize { grant_ids },
                now,
            )
        })
        .collect();
    for answer in store.execute_all(commands).await {
        match answer {
            // Gone since it was read: nothing of it to recognize.
            Ok(_) | Err(crate::error::Error::CustomerNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(named)
}

/// Settles everything due at `now`; returns how many customers it touched.
pub async fn settle_due(store: &Store, now: Timestamp) -> Result<usize> {
    let mut settled = 0;
    for _ in 0..MAX_PASSES {
        let due = store.customers_due(now, BATCH).await?;
        if due.is_empty() {
            break;
        }
        // Every due customer in one go: they share batches.
        let commands = due
            .iter()
            .map(|customer| Envelope::new(CustomerId::known(customer), Command::Settle, now))
            .collect();
        for answer in store.execute_all(commands).await {
            match answer {
                // Gone since it was listed: nothing to settle.
                Err(crate::error::Error::CustomerNotFound(_)) => {}
                other => {
                    other?;
                }
            }
        }
        settled += due.len();
        if (due.len() as u64) < BATCH {
            break;
        }
    }
    Ok(settled)
}
