//! `Error` -> `application/problem+json` (RFC 9457). `type` is a stable code clients match on;
//! 5xx bodies say nothing about the cause, which is logged here, once.

use crate::domain::ledger::Rejection;
use crate::error::Error;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

impl Error {
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Error::Rejected(r) => match r {
                Rejection::InsufficientCredits { .. } => {
                    (S::PAYMENT_REQUIRED, "insufficient_credits")
                }
                Rejection::ExceedsAvailable { .. } => (S::CONFLICT, "adjustment_exceeds_available"),
                Rejection::HoldNotFound => (S::NOT_FOUND, "hold_not_found"),
                Rejection::HoldResolved(_) => (S::CONFLICT, "hold_already_resolved"),
                Rejection::HoldExpired => (S::CONFLICT, "hold_expired"),
                Rejection::InvariantViolated(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
            },
            Error::Invalid { .. } => (S::UNPROCESSABLE_ENTITY, "invalid_request"),
            Error::MalformedJson(_) => (S::BAD_REQUEST, "malformed_json"),
            Error::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Error::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            Error::InsufficientScope(_) => (S::FORBIDDEN, "insufficient_scope"),
            Error::FormTokenInvalid => (S::FORBIDDEN, "form_token_invalid"),
            Error::FeatureNotEntitled(_) => (S::FORBIDDEN, "feature_not_entitled"),
            Error::CustomerFrozen => (S::FORBIDDEN, "customer_frozen"),
            Error::SpendLimitReached(_) => (S::PAYMENT_REQUIRED, "spend_limit_reached"),
            Error::UnknownAction(_) => (S::UNPROCESSABLE_ENTITY, "unknown_action"),
            Error::UnknownCatalogItem { .. } => (S::UNPROCESSABLE_ENTITY, "unknown_catalog_item"),
            Error::CustomerNotFound(_) => (S::NOT_FOUND, "customer_not_found"),
            Error::IdempotencyConflict => (S::CONFLICT, "idempotency_conflict"),
            Error::ParentRefused(_) => (S::CONFLICT, "parent_refused"),
            Error::TestClockDisabled => (S::NOT_FOUND, "test_clock_disabled"),
            Error::ClockBackwards(_) => (S::CONFLICT, "clock_backwards"),
            Error::NotFound => (S::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::PeriodNotEnded(_) => (S::CONFLICT, "period_not_ended"),
            Error::GrantNotFound(_) => (S::NOT_FOUND, "grant_not_found"),
            Error::OutboxMessageNotFound(_) => (S::NOT_FOUND, "outbox_message_not_found"),
            Error::ReplayRefused(crate::domain::outbound::ReplayRefusal::Delivered) => {
                (S::CONFLICT, "outbox_already_delivered")
            }
            Error::ReplayRefused(crate::domain::outbound::ReplayRefusal::Unconfirmed) => {
                (S::CONFLICT, "stripe_write_unconfirmed")
            }
            Error::AutoTopupUnavailable(_) => (S::CONFLICT, "auto_topup_unavailable"),
            Error::InvalidSignature(_) => (S::BAD_REQUEST, "invalid_signature"),
            Error::WebhookNotConfigured => (S::SERVICE_UNAVAILABLE, "webhook_not_configured"),
            Error::MalformedEvent(_) => (S::BAD_REQUEST, "malformed_event"),
            Error::StripeUnavailable(_) => (S::BAD_GATEWAY, "stripe_unavailable"),
            Error::Unavailable | Error::WriteConflict | Error::Deferred => {
                (S::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::Overloaded(_) | Error::TimedOut(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            Error::WorkersFailing(_) => (S::SERVICE_UNAVAILABLE, "workers_failing"),
            // The database down, restarting or out of connections: retry, never a fault.
            Error::Database(_) if self.is_unavailable() => (S::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Database(_) | Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl Error {
    /// A server-side fault whose cause is logged and never shown. Other 5xx are conditions the
    /// client or operator can act on, and say so (an unconfigured webhook secret).
    fn is_fault(&self) -> bool {
        !matches!(
            self,
            Error::WebhookNotConfigured
                | Error::Overloaded(_)
                | Error::TimedOut(_)
                | Error::WorkersFailing(_)
        )
    }

    /// Worth retrying after a moment: the database was busy.
    fn is_transient_refusal(&self) -> bool {
        self.is_unavailable()
    }

    /// The problem document of this error, and its status. A 5xx is logged here, once, and its
    /// body says nothing of the cause.
    pub fn problem(&self) -> (StatusCode, Value) {
        let (status, kind) = self.status_and_type();
        let mut body = json!({
            "type": kind,
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
        });
        if status.is_server_error() && self.is_fault() {
            tracing::error!(error = %self, "request failed");
            body["detail"] = Value::from(if self.is_transient_refusal() {
                "temporarily unavailable; retry"
            } else {
                "internal error"
            });
        } else {
            if status.is_server_error() {
                tracing::warn!(error = %self, "request refused");
            }
            body["detail"] = Value::from(self.to_string());
        }
        match &self {
            Error::Rejected(Rejection::InsufficientCredits {
                required,
                available,
            }) => {
                body["required"] = Value::from(required.to_string());
                body["available"] = Value::from(available.to_string());
            }
            Error::Rejected(Rejection::ExceedsAvailable {
                requested,
                available,
            }) => {
                body["requested"] = Value::from(requested.to_string());
                body["available"] = Value::from(available.to_string());
            }
            Error::SpendLimitReached(exceeded) => {
                let limit = &exceeded.limit;
                body["period"] = Value::from(limit.period.as_str());
                body["feature"] = limit.feature.clone().map_or(Value::Null, Value::from);
                body["limit"] = Value::from(limit.credits.to_string());
                body["spent"] = Value::from(exceeded.spent.to_string());
                body["held"] = Value::from(exceeded.held.to_string());
                body["requested"] = Value::from(exceeded.requested.to_string());
                body["resets_at"] = serde_json::to_value(exceeded.resets_at).unwrap_or_default();
                // A cap on one member or on each: the member it refused.
                if let Some(subject) = &exceeded.subject {
                    body["subject"] = Value::from(subject.as_str());
                    body["each_subject"] =
                        Value::from(limit.members == crate::domain::limits::Members::Each);
                }
            }
            Error::Invalid { field, .. } => body["field"] = Value::from(field.as_str()),
            _ => {}
        }
        (status, body)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = self.problem();
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.is_transient_refusal() || matches!(self, Error::Overloaded(_) | Error::TimedOut(_))
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
