//! API keys: only the SHA-256 of a key is stored; a presented key is hashed, looked up, and the
//! hashes compared in constant time.

use super::Store;
use super::operators::OperatorAction;
use super::rows::ByKey;
use super::rows::{time, timestamp};
use super::unit::Write;
use crate::domain::Timestamp;
use crate::error::Result;
use entity::api_keys;
use rand::RngCore;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
};
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

/// How long a verified key is trusted from memory before the database is asked again, by default
/// (`[server] key_cache_seconds`): the bound on how stale the hot path's view of the keys may be.
/// A revoked key keeps working at most this long in a process that used it just before.
pub const KEY_CACHE_SECONDS: u64 = 30;
/// Longest label kept with a key, in bytes.
pub const MAX_LABEL_BYTES: usize = 100;

/// What a key is for, as its creator says: 1 to [`MAX_LABEL_BYTES`] bytes, no control
/// characters (so that `keys list` stays one line per key), surrounding blanks trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub fn parse(text: &str) -> std::result::Result<Label, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_LABEL_BYTES || text.chars().any(char::is_control) {
            return Err(format!(
                "a label is 1 to {MAX_LABEL_BYTES} bytes with no control characters"
            ));
        }
        Ok(Label(text.to_owned()))
    }
}

/// A key as `keys list` shows it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub scope: Scope,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Who presented a key: its id and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scope: Scope,
}

/// What `keys revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already(Timestamp),
}
/// Verified keys kept in memory at most; the cache starts over when full.
const KEY_CACHE_ENTRIES: usize = 10_000;

/// Unknown keys remembered at most; the memory starts over when full.
const REFUSED_KEY_ENTRIES: usize = 10_000;

/// Keys verified recently, by their SHA-256: the gate's hot path makes no database round trip
/// to authenticate. Keys refused recently are remembered too (bounded), so a client repeating
/// a wrong key costs no database read either. A new key still works at once: its 256 random
/// bits cannot have been presented, and refused, before it was made.
#[derive(Debug)]
pub struct KeyCache {
    verified:
        std::sync::RwLock<std::collections::HashMap<[u8; 32], (Principal, std::time::Instant)>>,
    refused: std::sync::RwLock<std::collections::HashMap<[u8; 32], std::time::Instant>>,
    ttl: std::time::Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(std::time::Duration::from_secs(KEY_CACHE_SECONDS))
    }
}

impl KeyCache {
    /// Trusts a verified key for `ttl` (zero: asks the database every time).
    pub fn new(ttl: std::time::Duration) -> KeyCache {
        KeyCache {
            verified: std::sync::RwLock::default(),
            refused: std::sync::RwLock::default(),
            ttl,
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.verified.read().unwrap_or_else(|e| e.into_inner());
        verified
            .get(digest)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(principal, _)| principal.clone())
    }

    fn put(&self, digest: [u8; 32], principal: Principal) {
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= KEY_CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(digest, (principal, std::time::Instant::now()));
    }

    /// Trusts key `key_id` no more: it was revoked by this process.
    fn forget(&self, key_id: &str) {
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        verified.retain(|_, (principal, _)| principal.key_id != key_id);
    }

    fn was_refused(&self, digest: &[u8; 32]) -> bool {
        let refused = self.refused.read().unwrap_or_else(|e| e.into_inner());
        refused
            .get(digest)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    fn refuse(&self, digest: [u8; 32]) {
        let mut refused = self.refused.write().unwrap_or_else(|e| e.into_inner());
        if refused.len() >= REFUSED_KEY_ENTRIES {
            refused.clear();
        }
        refused.insert(digest, std::time::Instant::now());
    }
}

/// Whether `presented` has the shape of a key this service makes: `cb_{scope}_` and 64
/// lowercase hex digits. Anything else is refused without hashing or reading.
fn well_formed(presented: &str) -> bool {
    let Some(rest) = presented.strip_prefix("cb_") else {
        return false;
    };
    let Some((scope, secret)) = rest.split_once('_') else {
        return false;
    };
    Scope::parse(scope).is_some()
        && secret.len() == 64
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Store {
    /// Makes a key of `scope` and returns its id and the key; the key is never shown again.
    pub async fn create_api_key(
        &self,
        scope: Scope,
        label: Option<&Label>,
        now: Timestamp,
    ) -> Result<(String, String)> {
        let mut secret = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let key = format!("cb_{}_{}", scope.as_str(), hex::encode(secret));
        let id = format!("key_{}", uuid::Uuid::now_v7().simple());
        api_keys::ActiveModel {
            id: Set(id.clone()),
            key_hash: Set(hex::encode(digest(&key))),
            scope: Set(scope.as_str().to_owned()),
            created_at: Set(time(now)),
            label: Set(label.map(|l| l.0.clone())),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(self.connection())
        .await?;
        Ok((id, key))
    }

    /// Every key, oldest first: never the key itself.
    pub async fn list_api_keys(&self) -> Result<Vec<KeyInfo>> {
        api_keys::Entity::find()
            .order_by_asc(api_keys::Column::CreatedAt)
            .order_by_asc(api_keys::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|row| {
                let scope = Scope::parse(&row.scope).ok_or_else(|| {
                    crate::error::Error::Internal(format!("key scope {:?}", row.scope))
                })?;
                Ok(KeyInfo {
                    id: row.id,
                    scope,
                    label: row.label,
                    created_at: timestamp(row.created_at)?,
                    last_used_at: row.last_used_at.map(timestamp).transpose()?,
                    revoked_at: row.revoked_at.map(timestamp).transpose()?,
                })
            })
            .collect()
    }

    /// Revokes key `id`: refused from now on by every process that asks the database, and within
    /// the key cache's bound by those that trusted it from memory. Revoking again changes
    /// nothing; `None` when there is no such key. An operator's revocation (the console's) is
    /// recorded with it. This process trusts it no more at once.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: Timestamp,
        actor: Option<&OperatorAction>,
    ) -> Result<Option<Revoked>> {
        let revoked = self.write(&RevokeKey { id, now, actor }).await?;
        self.keys.forget(id);
        Ok(revoked)
    }

    /// Who presented a key, if it is one of ours.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>> {
        if presented.len() > MAX_KEY_LENGTH || !well_formed(presented) {
            return Ok(None);
        }
        let wanted = digest(presented);
        if let Some(principal) = self.keys.get(&wanted) {
            return Ok(Some(principal));
        }
        if self.keys.was_refused(&wanted) {
            return Ok(None);
        }
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(hex::encode(wanted)))
            .filter(api_keys::Column::RevokedAt.is_null())
            .by_key(self.connection())
            .await?;
        let Some((id, scope)) = row.and_then(|row| {
            let stored = hex::decode(&row.key_hash).ok()?;
            let scope = bool::from(stored.ct_eq(&wanted)).then(|| Scope::parse(&row.scope))??;
            Some((row.id, scope))
        }) else {
            self.keys.refuse(wanted);
            return Ok(None);
        };
        let principal = Principal {
            key_id: id.clone(),
            scope,
        };
        self.keys.put(wanted, principal.clone());
        // When it was last used, off the request's path: once per cache period per process.
        let db = self.connection().clone();
        let now = time(chrono::Utc::now());
        tokio::spawn(async move {
            let updated = api_keys::Entity::update_many()
                .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
                .filter(api_keys::Column::Id.eq(id))
                .exec(&db)
                .await;
            if let Err(e) = updated {
                tracing::debug!(error = %e, "recording when a key was last used");
            }
        });
        Ok(Some(principal))
    }
}

/// A key revoked (`Store::revoke_api_key`), with the operator who did it when there is one.
struct RevokeKey<'a> {
    id: &'a str,
    now: Timestamp,
    actor: Option<&'a OperatorAction>,
}

impl Write for RevokeKey<'_> {
    type Written = Option<Revoked>;

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<Self::Written> {
        let Some(row) = api_keys::Entity::find_by_id(self.id.to_owned())
            .by_key(txn)
            .await?
        else {
            return Ok(None);
        };
        if let Some(at) = row.revoked_at {
            return Ok(Some(Revoked::Already(timestamp(at)?)));
        }
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Expr::value(time(self.now)))
            .filter(api_keys::Column::Id.eq(self.id))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(txn)
            .await?;
        if let Some(actor) = self.actor {
            super::operators::record(txn, actor, self.now).await?;
        }
        Ok(Some(Revoked::Now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_our_shape_are_looked_up() {
        let secret = "0123456789abcdef".repeat(4);
        assert!(well_formed(&format!("cb_app_{secret}")));
        assert!(well_formed(&format!("cb_finance_{secret}")));
        for bad in [
            String::new(),
            format!("cb_root_{secret}"),
            format!("cb_app_{}", &secret[1..]),
            format!("cb_app_{}", secret.to_uppercase()),
            format!("xx_app_{secret}"),
            "cb_app".to_owned(),
        ] {
            assert!(!well_formed(&bad), "{bad}");
        }
    }

    #[test]
    fn a_refused_key_is_remembered_for_a_while_and_the_memory_is_bounded() {
        let cache = KeyCache::new(std::time::Duration::from_secs(60));
        let wrong = digest("cb_app_wrong");
        assert!(!cache.was_refused(&wrong));
        cache.refuse(wrong);
        assert!(cache.was_refused(&wrong));
        for i in 0..REFUSED_KEY_ENTRIES + 1 {
            cache.refuse(digest(&i.to_string()));
        }
        assert!(cache.refused.read().unwrap().len() <= REFUSED_KEY_ENTRIES);
        let forgetful = KeyCache::new(std::time::Duration::ZERO);
        forgetful.refuse(wrong);
        assert!(
            !forgetful.was_refused(&wrong),
            "no memory with a zero bound"
        );
    }

    #[test]
    fn a_label_is_one_short_printable_line() {
        assert_eq!(
            Label::parse("  billing app ").unwrap(),
            Label("billing app".into())
        );
        assert!(Label::parse("").is_err());
        assert!(Label::parse("a\tb").is_err());
        assert!(Label::parse(&"x".repeat(MAX_LABEL_BYTES + 1)).is_err());
    }
}
