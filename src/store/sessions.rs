//! Sessions of the finance and admin pages: started from an API key of that scope, ended by
//! logout, by going idle, or by the key's revocation.

use super::Store;
use super::keys::Scope;
use super::rows::ByKey;
use super::rows::time;
use crate::domain::Timestamp;
use crate::error::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::{api_keys, page_sessions};
use rand::RngCore;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key_id: String,
    pub scope: Scope,
    /// What the session's forms must post back.
    pub csrf: String,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn session_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Starts a session for the key `key_id` of `scope`; the cookie's token.
    pub async fn start_session(
        &self,
        key_id: &str,
        scope: Scope,
        now: Timestamp,
    ) -> Result<String> {
        let token = random_token();
        page_sessions::Entity::insert(page_sessions::ActiveModel {
            id: Set(session_id(&token)),
            key_id: Set(key_id.to_owned()),
            scope: Set(scope.as_str().to_owned()),
            csrf: Set(random_token()),
            created_at: Set(time(now)),
            last_seen_at: Set(time(now)),
            ended_at: Set(None),
        })
        .exec_without_returning(self.connection())
        .await?;
        Ok(token)
    }

    /// The live session of `token` at `now`, marked as used: none when unknown, ended, idle for
    /// `idle_seconds` or more, older than `max_seconds`, or when its key was revoked.
    pub async fn session(
        &self,
        token: &str,
        idle_seconds: u64,
        max_seconds: u64,
        now: Timestamp,
    ) -> Result<Option<Session>> {
        if token.is_empty() || token.len() > 100 {
            return Ok(None);
        }
        let db = self.connection();
        let id = session_id(token);
        let Some(row) = page_sessions::Entity::find_by_id(id.clone())
            .by_key(db)
            .await?
        else {
            return Ok(None);
        };
        let idle_micros = i64::try_from(idle_seconds).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        let max_micros = i64::try_from(max_seconds).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        if row.ended_at.is_some()
            || time(now) - row.last_seen_at >= idle_micros
            || time(now) - row.created_at >= max_micros
        {
            return Ok(None);
        }
        let key_live = api_keys::Entity::find_by_id(row.key_id.clone())
            .filter(api_keys::Column::RevokedAt.is_null())
            .by_key(db)
            .await?
            .is_some();
        let Some(scope) = Scope::parse(&row.scope).filter(|_| key_live) else {
            return Ok(None);
        };
        page_sessions::Entity::update_many()
            .col_expr(page_sessions::Column::LastSeenAt, Expr::value(time(now)))
            .filter(page_sessions::Column::Id.eq(id))
            .exec(db)
            .await?;
        Ok(Some(Session {
            key_id: row.key_id,
            scope,
            csrf: row.csrf,
        }))
    }

    /// Ends the session of `token` (logout); ending an unknown or ended one does nothing.
    pub async fn end_session(&self, token: &str, now: Timestamp) -> Result<()> {
        page_sessions::Entity::update_many()
            .col_expr(page_sessions::Column::EndedAt, Expr::value(time(now)))
            .filter(page_sessions::Column::Id.eq(session_id(token)))
            .filter(page_sessions::Column::EndedAt.is_null())
            .exec(self.connection())
            .await?;
        Ok(())
    }
}
