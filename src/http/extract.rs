//! The edge: JSON bodies, API keys and the small value types requests are parsed into.

use super::AppState;
use crate::error::Error;
use crate::store::keys::{Principal, Scope};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body parsed into `T`, whose refusals are problem+json errors naming the field: the
/// field of a wrong type, a missing field, or an unknown one (request types deny unknown fields,
/// so that a misspelled optional field is refused rather than silently dropped). `LIMIT` is the
/// body limit the route is served with (its `DefaultBodyLimit`), named in `payload_too_large`.
pub struct ApiJson<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge(LIMIT)
                } else {
                    Error::MalformedJson(e.body_text())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// `Content-Type: application/json`, or another `application/…+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a whole JSON document into `T`: a syntax error is `malformed_json`; a value that does
/// not fit is `invalid_request` naming the field (`body` when it is the document itself).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // serde reads a struct from an array of its fields in order; a request body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(invalid_field(
            ".",
            "the body must be a JSON object, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => invalid_field(&path, &inner.to_string()),
            _ => Error::MalformedJson(inner.to_string()),
        }
    })?;
    de.end().map_err(|e| Error::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// A JSON value at `at` (a field path such as `usages[3]`) parsed into `T`; a refusal names the
/// field within it.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        invalid_field(&path, &e.into_inner().to_string())
    })
}

/// The field a serde message names (`unknown field `x``, `missing field `x``).
fn named_field(message: &str) -> Option<&str> {
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.split_once(prefix))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name)
}

/// An `invalid_request` about the field at `path` (serde's path, `.` for the root) that
/// `message` describes.
fn invalid_field(path: &str, message: &str) -> Error {
    let parent = if path == "." { "" } else { path };
    let field = match named_field(message) {
        // An unknown field's path already ends with it; a missing one's is its parent's.
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_owned(),
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_owned(),
        None => parent.to_owned(),
    };
    Error::invalid(field, message)
}

/// Query parameters parsed into `T`: refusals are `invalid_request` naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                invalid_field(&path, &e.into_inner().to_string())
            })
    }
}

/// A caller authenticated with a key of one scope.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .ok_or(Error::Unauthorized)?
            .trim();
        let principal = state
            .store
            .authenticate(key)
            .await?
            .ok_or(Error::Unauthorized)?;
        super::note_key(&principal.key_id);
        Ok(Caller(principal))
    }
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.0.scope == scope {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope.as_str()))
        }
    }

    /// The app (on a customer's behalf) or an operator may call.
    pub fn require_app_or_admin(&self) -> Result<(), Error> {
        match self.0.scope {
            Scope::App | Scope::Admin => Ok(()),
            Scope::Finance => Err(Error::InsufficientScope("app or admin")),
        }
    }

    /// The id of the caller's key: who did it, for the record.
    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }
}

/// A decimal from a JSON string ("1.5") or integer (3). JSON numbers with a fraction are refused:
/// they are binary floats on most clients, and credits must be exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal string such as \"1.5\", or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Amount, E> {
                let trimmed = s.trim();
                if trimmed.is_empty() || trimmed.len() > 40 || trimmed.contains(['e', 'E']) {
                    return Err(E::custom(format!("{s:?} is not a plain decimal number")));
                }
                Decimal::from_str_exact(trimmed).map(Amount).map_err(|_| {
                    E::custom(format!(
                        "{s:?} is not a decimal number of at most 28 digits"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                // An integral number written with a fraction (`5.0`) is that integer, exactly,
                // as JSON Schema counts it; any other fraction is a binary float.
                const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
                if v.fract() == 0.0 && v.abs() < EXACT {
                    #[allow(clippy::cast_possible_truncation)]
                    return Ok(Amount(Decimal::from(v as i64)));
                }
                Err(E::custom(format!(
                    "{v} is a JSON float; send decimals as strings"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl FromStr for Amount {
    type Err = rust_decimal::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s).map(Amount)
    }
}

pub use crate::domain::customer::MAX_ID_LENGTH;
use crate::domain::customer::{CustomerId, check_id};

/// An identifier supplied by a caller: 1 to 255 characters, no control characters.
pub fn identifier(field: &str, value: &str) -> Result<String, Error> {
    check_id(value).map_err(|e| Error::invalid(field, e.to_string()))?;
    Ok(value.to_owned())
}

/// A customer's id supplied by a caller, by the same rule.
pub fn customer_id(field: &str, value: &str) -> Result<CustomerId, Error> {
    CustomerId::parse(value).map_err(|e| Error::invalid(field, e.to_string()))
}

/// A `cursor` that is the id of a time-ordered row (a hyphenated UUID, as the API returns them).
pub fn time_ordered_cursor(cursor: Option<String>) -> Result<Option<String>, Error> {
    cursor
        .map(|c| {
            uuid::Uuid::try_parse(&c)
                .ok()
                .filter(|u| u.hyphenated().to_string() == c)
                .map(|_| c)
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()
}

/// A hex SHA-256 of the parts of a request that define it, for idempotency conflicts.
pub fn request_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// An `i32` that JSON may write as `5` or `5.0` (JSON Schema's integers); null, a string or a
/// fraction is refused.
pub fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    optional_integer(d)?.ok_or_else(|| serde::de::Error::custom("expected an integer, not null"))
}

/// An optional `i32` that JSON may write as `5` or `5.0` (JSON Schema's integers); a string or a
/// fraction is refused.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<i32>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            i32::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i32::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && v.abs() <= f64::from(i32::MAX) {
                #[allow(clippy::cast_possible_truncation)]
                return Ok(Some(v as i32));
            }
            Err(E::custom(format!("{v} is not an integer")))
        }
    }
    d.deserialize_any(Visitor)
}

/// The most rows one page of a list answers.
pub const MAX_PAGE: u64 = 200;

/// A page's `limit`: 1 to [`MAX_PAGE`], 50 when absent.
pub fn page_limit(limit: Option<u64>) -> Result<u64, Error> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}
