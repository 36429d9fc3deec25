//! The one error type of the service. Every failure has a stable `type` code; `http::problem`
//! turns it into `application/problem+json`.

use crate::domain::ledger::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a valid API key is required (Authorization: Bearer KEY)")]
    Unauthorized,
    #[error("this API key's scope may not call this endpoint (needs {0})")]
    InsufficientScope(&'static str),
    /// A page's form posted a token that is not its session's (a cross-site request).
    #[error("the form's token is not this session's: reload the page and try again")]
    FormTokenInvalid,
    #[error("the customer's plan does not include the feature of action {0:?}")]
    FeatureNotEntitled(String),
    #[error("the customer is frozen by an open dispute")]
    CustomerFrozen,
    #[error(
        "this would pass the customer's {} spend limit of {} credits{}: {} spent and {} held this \
         window, {} requested; it resets at {}",
        .0.limit.period.as_str(),
        .0.limit.credits,
        .0.limit.feature.as_deref().map(|f| format!(" on {f}")).unwrap_or_default(),
        .0.spent,
        .0.held,
        .0.requested,
        .0.resets_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )]
    SpendLimitReached(Box<crate::domain::limits::Exceeded>),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("unknown {kind} {id:?}")]
    UnknownCatalogItem { kind: &'static str, id: String },
    #[error("customer {0:?} not found")]
    CustomerNotFound(String),
    #[error("this idempotency_key was used with a different request")]
    IdempotencyConflict,
    #[error("the test clock is not enabled (start with --test-clock)")]
    TestClockDisabled,
    #[error("the test clock only moves forward (now {0})")]
    ClockBackwards(String),
    #[error("the Stripe-Signature header does not verify: {0}")]
    InvalidSignature(SignatureError),
    #[error(
        "this server has no Stripe webhook secret configured: set [stripe] webhook_secrets or \
         CREDITBOOK_STRIPE_WEBHOOK_SECRET and restart; Stripe keeps retrying the event until then"
    )]
    WebhookNotConfigured,
    #[error("the body is not a Stripe event: {0}")]
    MalformedEvent(String),
    #[error("the Stripe API could not be reached: {0}")]
    StripeUnavailable(String),
    #[error("period {0} has not ended yet; a period closes once it is over")]
    PeriodNotEnded(String),
    #[error("grant {0:?} has no revenue schedule (unknown, or not paid)")]
    GrantNotFound(String),
    #[error("auto top-up cannot charge this customer: {0}")]
    AutoTopupUnavailable(String),
    #[error("no outbox message {0:?}")]
    OutboxMessageNotFound(String),
    #[error("{}", match .0 {
        crate::domain::outbound::ReplayRefusal::Delivered =>
            "Stripe acknowledged this message: sending it again could bill twice",
        crate::domain::outbound::ReplayRefusal::Unconfirmed =>
            "this Stripe write may have reached Stripe more than 23 hours ago, past the window in \
             which Stripe answers a resend as the first: look it up in Stripe by its idempotency \
             key (the message_id); if it is not there, replay with absent_in_stripe=true",
    })]
    ReplayRefused(crate::domain::outbound::ReplayRefusal),
    #[error("no route for this path")]
    NotFound,
    #[error("this path does not take this method")]
    MethodNotAllowed,
    #[error("the database is busy; retry")]
    Unavailable,
    /// A parent that would make a cycle or a fourth level (README, Organizations).
    #[error("{0}")]
    ParentRefused(crate::domain::organization::ParentRefusal),
    /// Background workers that keep panicking (`/healthz`).
    #[error(
        "background workers keep failing: {0} (each panicked repeatedly within minutes; the log \
         has why)"
    )]
    WorkersFailing(String),
    /// More requests than `[server] max_concurrent_requests` at once.
    #[error("the server is answering as many requests as it may at once ({0}); retry shortly")]
    Overloaded(usize),
    /// Not answered within `[server] request_timeout_seconds`.
    #[error(
        "the request was not answered within {0} seconds; a write may have completed: retry it \
         with the same idempotency_key"
    )]
    TimedOut(u64),
    /// A row changed between read and write; the command is run again.
    #[error("concurrent write conflict")]
    WriteConflict,
    /// A Stripe event behind others in its batch found a lock taken: it is applied on its own
    /// once the batch commits, rather than wait while holding the batch's locks.
    #[error("a lock is taken; applied after its batch")]
    Deferred,
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// Worth running the whole transaction again: lock waits that timed out, serialization
    /// failures and deadlocks, on either engine (by SQLSTATE or SQLite result code, never by
    /// message text, which depends on the server's locale).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::WriteConflict | Error::Deferred => true,
            Error::Database(e) => db_failure(e) == DbFailure::Transient,
            _ => false,
        }
    }

    /// The database cannot answer now (down, restarting, out of connections, or busy past the
    /// retries): the request is refused with 503 and `Retry-After`, never 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable | Error::WriteConflict | Error::Deferred => true,
            Error::Database(e) => db_failure(e) != DbFailure::Other,
            _ => false,
        }
    }
}

/// What a database error means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A conflict between transactions: run the whole transaction again.
    Transient,
    /// The database is unreachable, restarting or out of resources: refuse, retry later.
    Unavailable,
    /// Anything else: a fault.
    Other,
}

/// Classifies a database error by its SQLSTATE (PostgreSQL) or result code (SQLite), or by the
/// kind of connection failure.
pub fn db_failure(e: &sea_orm::DbErr) -> DbFailure {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    let sqlx = match e {
        DbErr::ConnectionAcquire(_) => return DbFailure::Unavailable,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        DbErr::Conn(_) => return DbFailure::Unavailable,
        _ => return DbFailure::Other,
    };
    match &**sqlx {
        Sqlx::Database(_) => database_code(e).map_or(DbFailure::Other, |(engine, code)| {
            classify_code(engine, &code)
        }),
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => DbFailure::Unavailable,
        _ => DbFailure::Other,
    }
}

/// The engine and the code of an error the database itself reported, if `e` is one.
fn database_code(e: &sea_orm::DbErr) -> Option<(Engine, String)> {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Conn(RuntimeErr::SqlxError(sqlx))
    | DbErr::Exec(RuntimeErr::SqlxError(sqlx))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx))) = e
    else {
        return None;
    };
    let sea_orm::sqlx::Error::Database(db) = &**sqlx else {
        return None;
    };
    let engine = if db
        .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
        .is_some()
    {
        Engine::Sqlite
    } else {
        Engine::Postgres
    };
    Some((engine, db.code()?.into_owned()))
}

/// Which engine reported an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A PostgreSQL SQLSTATE, or a SQLite (extended) result code as its decimal number.
pub fn classify_code(engine: Engine, code: &str) -> DbFailure {
    if engine == Engine::Sqlite {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        return match code.parse::<i32>().map(|c| c & 0xff) {
            Ok(5 | 6) => DbFailure::Transient,
            _ => DbFailure::Other,
        };
    }
    match code {
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => DbFailure::Transient,
        // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped;
        // query_canceled (a statement timeout); read_only_sql_transaction (a standby)
        "57P01" | "57P02" | "57P03" | "57P04" | "57014" | "25006" => DbFailure::Unavailable,
        // connection_exception (08…), insufficient_resources (53…: too many connections, disk
        // full), system_error (58…)
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
            DbFailure::Unavailable
        }
        _ => DbFailure::Other,
    }
}

/// Whether the database refused a wait for a lock (PostgreSQL `lock_not_available`, 55P03:
/// `lock_timeout` passed, or `NOWAIT`).
pub fn is_lock_not_available(e: &Error) -> bool {
    matches!(e, Error::Database(db)
        if database_code(db).is_some_and(|(engine, code)| engine == Engine::Postgres && code == "55P03"))
}

impl Error {
    /// A command answered with an answer of another kind: a broken invariant of the runner.
    pub fn unexpected(answer: &crate::domain::command::Answer) -> Error {
        Error::Internal(format!("unexpected answer {answer:?}"))
    }
}

impl From<crate::domain::gate::Refusal> for Error {
    fn from(refusal: crate::domain::gate::Refusal) -> Self {
        use crate::domain::gate::Refusal;
        use crate::domain::organization::ParentRefusal;
        match refusal {
            Refusal::FeatureNotEntitled(action) => Error::FeatureNotEntitled(action),
            Refusal::CustomerFrozen => Error::CustomerFrozen,
            Refusal::SpendLimitReached(exceeded) => Error::SpendLimitReached(exceeded),
            Refusal::UnknownAction(action) => Error::UnknownAction(action),
            Refusal::Cost { field, error } => Error::invalid(field, error),
            Refusal::Parent(ParentRefusal::UnknownParent(parent)) => {
                Error::CustomerNotFound(parent.to_string())
            }
            Refusal::Parent(refusal) => Error::ParentRefused(refusal),
            Refusal::Book(rejection) => Error::Rejected(rejection),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_are_classified_by_code_not_by_text() {
        use DbFailure::*;
        for (engine, code, failure) in [
            (Engine::Postgres, "40001", Transient),
            (Engine::Postgres, "40P01", Transient),
            (Engine::Postgres, "55P03", Transient),
            (Engine::Sqlite, "5", Transient),
            (Engine::Sqlite, "517", Transient),
            (Engine::Sqlite, "262", Transient),
            (Engine::Sqlite, "6", Transient),
            (Engine::Postgres, "57P01", Unavailable),
            (Engine::Postgres, "57P03", Unavailable),
            (Engine::Postgres, "08006", Unavailable),
            (Engine::Postgres, "08001", Unavailable),
            (Engine::Postgres, "53300", Unavailable),
            (Engine::Postgres, "23505", Other),
            (Engine::Postgres, "22003", Other),
            (Engine::Sqlite, "19", Other),
            (Engine::Sqlite, "2067", Other),
            // A SQLSTATE is never read as a SQLite code, nor the other way.
            (Engine::Sqlite, "40001", Other),
            (Engine::Postgres, "5", Other),
        ] {
            assert_eq!(classify_code(engine, code), failure, "{engine:?} {code}");
        }
        let acquire = Error::Database(sea_orm::DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout,
        ));
        assert!(acquire.is_unavailable() && !acquire.is_transient());
        let io = Error::Database(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
            std::sync::Arc::new(sea_orm::sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            ))),
        )));
        assert!(io.is_unavailable());
        // Text that merely looks like a code is not one.
        let text = Error::Database(sea_orm::DbErr::Custom("40001 deadlock detected".into()));
        assert!(!text.is_transient() && !text.is_unavailable());
    }
}

/// Why a Stripe webhook's signature is refused (`stripe::signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("the signature's timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("no v1 signature matches any webhook secret")]
    NoMatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}
