sql_migration! {
    up: UP,
    down: DOWN,
}

/// Organizations: a customer may have a parent (at most three levels, no cycles), and spends its
/// own grants, then its ancestors' shared ones. A grant is shared with the customers below its
/// owner unless it was made unshared. The index finds a customer's children (the console's
/// tree, usage of a customer and those below it, the depth of a subtree).
const UP: [&str; 3] = [
    "ALTER TABLE customers ADD COLUMN parent_id TEXT NULL",
    "ALTER TABLE grants ADD COLUMN shared BOOLEAN NOT NULL DEFAULT TRUE",
    "CREATE INDEX customers_parent ON customers (parent_id)",
];

const DOWN: [&str; 3] = [
    "DROP INDEX customers_parent",
    "ALTER TABLE grants DROP COLUMN shared",
    "ALTER TABLE customers DROP COLUMN parent_id",
];
