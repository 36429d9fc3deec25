use sea_orm::entity::prelude::*;

/// Where a backfill (`creditbook stripe sync`) stopped in one source: the last object applied,
/// for the run reading since `since` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_sync_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    pub since: i64,
    pub starting_after: Option<String>,
    pub done: bool,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
