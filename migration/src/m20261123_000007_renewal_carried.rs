sql_migration! {
    up: UP,
    down: DOWN,
}

/// What a renewal has carried over so far (micro-credits), so that plan grants ending at its
/// boundary that arrive in separate events share one `rollover_max`. NULL on renewals rolled over
/// before this migration: their room counts as used.
const UP: [&str; 1] = ["ALTER TABLE stripe_renewals ADD COLUMN carried BIGINT NULL"];

const DOWN: [&str; 1] = ["ALTER TABLE stripe_renewals DROP COLUMN carried"];
