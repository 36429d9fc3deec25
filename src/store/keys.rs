//! API keys: only the SHA-256 of a key is stored; a presented key is hashed, looked up, and the
//! hashes compared in constant time.

use super::Store;
use super::rows::time;
use crate::domain::Timestamp;
use crate::error::Result;
use entity::api_keys;
use rand::RngCore;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    App,
    Admin,
    Finance,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::App => "app",
            Scope::Admin => "admin",
            Scope::Finance => "finance",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "app" => Some(Scope::App),
            "admin" => Some(Scope::Admin),
            "finance" => Some(Scope::Finance),
            _ => None,
        }
    }
}

/// Longest key accepted in a header; longer input is refused before hashing.
pub const MAX_KEY_LENGTH: usize = 128;

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Store {
    /// Makes a key of `scope` and returns it; it is never shown again.
    pub async fn create_api_key(&self, scope: Scope, now: Timestamp) -> Result<String> {
        let mut secret = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let key = format!("cb_{}_{}", scope.as_str(), hex::encode(secret));
        api_keys::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            key_hash: Set(hex::encode(digest(&key))),
            scope: Set(scope.as_str().to_owned()),
            created_at: Set(time(now)),
        }
        .insert(self.connection())
        .await?;
        Ok(key)
    }

    /// The scope of a presented key, if it is one of ours.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Scope>> {
        if presented.is_empty() || presented.len() > MAX_KEY_LENGTH {
            return Ok(None);
        }
        let wanted = digest(presented);
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(hex::encode(wanted)))
            .one(self.connection())
            .await?;
        Ok(row.and_then(|row| {
            let stored = hex::decode(&row.key_hash).ok()?;
            bool::from(stored.ct_eq(&wanted)).then(|| Scope::parse(&row.scope))?
        }))
    }
}
