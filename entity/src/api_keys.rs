use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub key_hash: String,
    pub scope: String,
    pub created_at: i64,
    /// What the key is for, as its creator said.
    pub label: Option<String>,
    /// When the key was last verified from the database (a process trusts a verified key from
    /// memory for a while, so this is exact to within that bound).
    pub last_used_at: Option<i64>,
    /// When the key was revoked; a revoked key is refused.
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
