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

/// How long a verified key is trusted from memory before the database is asked again: the bound
/// on how stale the hot path's view of the keys may be (a key removed from the database keeps
/// working this long in a process that used it).
pub const KEY_CACHE_SECONDS: u64 = 30;
/// Verified keys kept in memory at most; the cache starts over when full.
const KEY_CACHE_ENTRIES: usize = 10_000;

/// Keys verified recently, by their SHA-256: the gate's hot path makes no database round trip
/// to authenticate. Unknown keys are never cached, so a new key works at once.
#[derive(Debug, Default)]
pub struct KeyCache {
    verified: std::sync::RwLock<std::collections::HashMap<[u8; 32], (Scope, std::time::Instant)>>,
}

impl KeyCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Scope> {
        let verified = self.verified.read().unwrap_or_else(|e| e.into_inner());
        verified
            .get(digest)
            .filter(|(_, at)| at.elapsed().as_secs() < KEY_CACHE_SECONDS)
            .map(|(scope, _)| *scope)
    }

    fn put(&self, digest: [u8; 32], scope: Scope) {
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= KEY_CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(digest, (scope, std::time::Instant::now()));
    }
}

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
        if let Some(scope) = self.keys.get(&wanted) {
            return Ok(Some(scope));
        }
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(hex::encode(wanted)))
            .one(self.connection())
            .await?;
        let scope = row.and_then(|row| {
            let stored = hex::decode(&row.key_hash).ok()?;
            bool::from(stored.ct_eq(&wanted)).then(|| Scope::parse(&row.scope))?
        });
        if let Some(scope) = scope {
            self.keys.put(wanted, scope);
        }
        Ok(scope)
    }
}
