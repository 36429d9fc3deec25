use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "holds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub action: String,
    pub quantity: String,
    pub credits: i64,
    pub overdraft: i64,
    pub status: String,
    pub expires_at: i64,
    pub captured: Option<i64>,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    /// Who inside the customer holds it (README, Members and subjects).
    pub subject: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
