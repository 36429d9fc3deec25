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
    InvalidSignature(crate::stripe::signature::SignatureError),
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
    #[error("no route for this path")]
    NotFound,
    #[error("this path does not take this method")]
    MethodNotAllowed,
    #[error("the database is busy; retry")]
    Unavailable,
    /// A row changed between read and write; the command is run again.
    #[error("concurrent write conflict")]
    WriteConflict,
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
    /// failures and deadlocks, on either engine.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            Error::WriteConflict => return true,
            Error::Database(e) => e,
            _ => return false,
        };
        let text = e.to_string();
        [
            "database is locked",
            "SQLITE_BUSY",
            "(code: 5)",
            "(code: 517)",
            "40001",
            "40P01",
            "could not serialize",
            "deadlock detected",
        ]
        .iter()
        .any(|needle| text.contains(needle))
    }
}

impl From<crate::domain::gate::Refusal> for Error {
    fn from(refusal: crate::domain::gate::Refusal) -> Self {
        use crate::domain::gate::Refusal;
        match refusal {
            Refusal::FeatureNotEntitled(action) => Error::FeatureNotEntitled(action),
            Refusal::CustomerFrozen => Error::CustomerFrozen,
            Refusal::SpendLimitReached(exceeded) => Error::SpendLimitReached(exceeded),
            Refusal::UnknownAction(action) => Error::UnknownAction(action),
            Refusal::Cost { field, error } => Error::invalid(field, error),
            Refusal::Book(rejection) => Error::Rejected(rejection),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
