//! A customer's id: what the API, the ledger and Stripe's links name a customer by.

use serde::{Deserialize, Serialize};

/// The longest id the API accepts (customers, idempotency keys, holds), in characters.
pub const MAX_ID_LENGTH: usize = 255;

/// Why a text is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LENGTH} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// The rule every id the API is given follows: 1 to [`MAX_ID_LENGTH`] characters, no control
/// characters.
pub fn check_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.chars().count() > MAX_ID_LENGTH {
        return Err(IdError::TooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// A customer's id, parsed where it comes in (a request, a Stripe event) or read back from the
/// books, then trusted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

impl CustomerId {
    /// An id a caller names.
    pub fn parse(value: &str) -> Result<CustomerId, IdError> {
        check_id(value)?;
        Ok(CustomerId(value.to_owned()))
    }

    /// An id read back from the books (only parsed ids are written there), or one Stripe gives
    /// (its own customer ids, and the accounts its objects name, linked as they come).
    pub fn known(value: impl Into<String>) -> CustomerId {
        CustomerId(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CustomerId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        check_id(&value)?;
        Ok(CustomerId(value))
    }
}

impl From<CustomerId> for String {
    fn from(id: CustomerId) -> String {
        id.0
    }
}

impl std::fmt::Display for CustomerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CustomerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for CustomerId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CustomerId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::borrow::Borrow<str> for CustomerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<String> for CustomerId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// Who inside a customer spends (README, Members and subjects): a user, an API key, an agent or
/// a project, named by the app. Same rule as an id: 1 to 255 characters, no control characters.
/// Kept on holds, ledger entries and consumptions; spend limits may cap one member or each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// A subject a caller names.
    pub fn parse(value: &str) -> Result<Subject, IdError> {
        check_id(value)?;
        Ok(Subject(value.to_owned()))
    }

    /// A subject read back from the books (only parsed subjects are written there).
    pub fn known(value: impl Into<String>) -> Subject {
        Subject(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        check_id(&value)?;
        Ok(Subject(value))
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> String {
        subject.0
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_to_255_printable_characters() {
        assert_eq!(CustomerId::parse("acme").unwrap().as_str(), "acme");
        assert_eq!(
            CustomerId::parse(&"é".repeat(255))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            255
        );
        assert_eq!(CustomerId::parse(""), Err(IdError::Empty));
        assert_eq!(CustomerId::parse(&"a".repeat(256)), Err(IdError::TooLong));
        assert_eq!(CustomerId::parse("a\u{0}b"), Err(IdError::ControlCharacter));
        assert_eq!(CustomerId::parse("a/b c").unwrap().to_string(), "a/b c");
    }

    #[test]
    fn books_keyed_by_id_are_found_by_its_text() {
        let mut books = std::collections::BTreeMap::new();
        books.insert(CustomerId::known("acme"), 1);
        books.insert(CustomerId::known("zeta"), 2);
        assert_eq!(books.get("acme"), Some(&1));
        assert_eq!(books.get("nobody"), None);
        assert_eq!(CustomerId::known("acme"), "acme");
        // Ordered as their text is, so locks taken in id order are the same either way.
        let order: Vec<&str> = books.keys().map(CustomerId::as_str).collect();
        assert_eq!(order, ["acme", "zeta"]);
    }

    #[test]
    fn it_reads_and_writes_as_a_string() {
        let id: CustomerId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(id, *"acme");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<CustomerId>("\"\"").is_err());
    }

    #[test]
    fn a_subject_follows_the_rule_of_ids() {
        assert_eq!(Subject::parse("user_42").unwrap().as_str(), "user_42");
        assert_eq!(Subject::parse(""), Err(IdError::Empty));
        assert_eq!(Subject::parse(&"s".repeat(256)), Err(IdError::TooLong));
        assert_eq!(Subject::parse("a\nb"), Err(IdError::ControlCharacter));
        assert!(serde_json::from_str::<Subject>("\"a\\u0007\"").is_err());
        let subject: Subject = serde_json::from_str("\"agent:research\"").unwrap();
        assert_eq!(subject.to_string(), "agent:research");
    }
}
