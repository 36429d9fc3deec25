//! The API contract served at `/openapi.json`: the document the handlers' annotations describe,
//! completed with what holds for every operation. Each operation lists every status it can
//! answer, each refusal with the `application/problem+json` schema; every request field carries
//! its constraints (lengths, patterns, ranges, the catalog's ids); the paths without annotations
//! (`/livez`, `/metrics`, this document) and the webhook's body are described here.

use super::ApiDoc;
use super::extract::{MAX_BODY_BYTES, MAX_ID_LENGTH};
use crate::domain::adjustment::MAX_REASON_CHARS;
use crate::domain::catalog::{Action, Catalog};
use crate::domain::money::{Quantity, SCALE, max_credits_per_request};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use utoipa::OpenApi;

/// An identifier: 1 to 255 characters, none of them a control character.
fn identifier() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH,
           "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"})
}

/// Why an operator did something: 1 to 500 characters, not all blank, no control characters.
fn reason() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS,
           "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"})
}

/// A month of the books, `YYYY-MM`, 1970 to 9999.
const MONTH: &str = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$";

/// A nonzero fraction of 1 to 6 digits.
/// A decimal above zero and at most `limit` (a power of ten), with at most 6 decimals: a
/// string ("2.5") or an integer. JSON numbers with a fraction are refused (binary floats).
fn positive_amount(limit: Decimal) -> Value {
    amount(limit, "", Value::from(1), "1", SCALE)
}

/// A quantity of an action: at most its `max_quantity`, with at most its `quantity_decimals`
/// places that are not zero (README, The ledger).
fn quantity(action: &Action) -> Value {
    amount(
        action.max_quantity(),
        "",
        Value::from(1),
        "1",
        action.quantity_decimals(),
    )
}

/// A nonzero signed decimal within the per-request limit (an adjustment's credits).
fn signed_amount() -> Value {
    let limit = max_credits_per_request();
    let mut schema = amount(limit, "-?", Value::from(-whole(limit)), "-250", SCALE);
    schema["oneOf"][1]["not"] = json!({"const": 0});
    schema
}

fn whole(limit: Decimal) -> i64 {
    i64::try_from(limit.trunc().mantissa()).unwrap_or(i64::MAX)
}

/// Zeros that may follow `places` decimal places, up to 6 written.
fn trailing_zeros(places: u32) -> String {
    match SCALE - places {
        0 => String::new(),
        zeros => format!("0{{0,{zeros}}}"),
    }
}

/// The decimals after "0." of an amount below one and above zero: a nonzero digit among the
/// first `places` (at least 1), then zeros only.
fn nonzero_fraction(places: u32) -> String {
    let windows: Vec<String> = (0..places)
        .map(|k| {
            let rest = places - 1 - k;
            let zeros = "0".repeat(k as usize);
            match rest {
                0 => format!("{zeros}[1-9]"),
                rest => format!("{zeros}[1-9][0-9]{{0,{rest}}}"),
            }
        })
        .collect();
    format!("(?:{}){}", windows.join("|"), trailing_zeros(places))
}

/// An amount of at most `limit` (a power of ten) with at most `places` decimal places that
/// are not trailing zeros (and 6 written): a string, or an integer.
fn amount(limit: Decimal, sign: &str, minimum: Value, example: &str, places: u32) -> Value {
    let limit_digits = limit.trunc().to_string();
    let below = limit_digits.len() - 1;
    let whole_part = match below {
        0 => None,
        below => Some(format!("[1-9][0-9]{{0,{}}}", below - 1)),
    };
    let fraction = match places {
        0 => "(?:\\.0{1,6})?".to_owned(),
        places => format!("(?:\\.[0-9]{{1,{places}}}{})?", trailing_zeros(places)),
    };
    let mut alternatives: Vec<String> = whole_part
        .map(|w| format!("{w}{fraction}"))
        .into_iter()
        .collect();
    alternatives.push(format!("{limit_digits}(?:\\.0{{1,6}})?"));
    if places > 0 {
        alternatives.push(format!("0\\.{}", nonzero_fraction(places)));
    }
    json!({"oneOf": [
        {"type": "string", "example": example,
         "pattern": format!("^{sign}(?:{})$", alternatives.join("|"))},
        {"type": "integer", "minimum": minimum, "maximum": whole(limit)},
    ]})
}

/// Money in a currency's major unit, zero or more, to `places` decimal places at most (a price
/// in a currency of that minor unit).
fn money(places: u32) -> Value {
    let fraction = match places {
        0 => String::new(),
        _ => format!("(?:\\.[0-9]{{1,{places}}})?"),
    };
    json!({"oneOf": [
        {"type": "string", "pattern": format!("^(?:0|[1-9][0-9]{{0,11}}){fraction}$"), "example": "49"},
        {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_i64},
    ]})
}

/// Three-letter currency codes whose minor unit is `places` (`money::currency_minor_units`), in
/// any case.
fn currencies_of(places: u32) -> Vec<String> {
    const CODES: [&str; 21] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF", "BHD", "JOD", "KWD", "OMR", "TND",
    ];
    CODES
        .iter()
        .filter(|c| crate::domain::money::currency_minor_units(c) == places)
        .map(|c| {
            c.chars()
                .map(|l| format!("[{l}{}]", l.to_ascii_lowercase()))
                .collect()
        })
        .collect()
}

fn ids(ids: impl Iterator<Item = String>) -> Value {
    let ids: Vec<String> = ids.collect();
    json!({"type": "string", "enum": ids})
}

/// The problem document every refusal and failure answers with (RFC 9457).
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "A refusal or failure (RFC 9457). `type` is a stable code to match on; \
                        5xx bodies say nothing about the cause.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "description": "Stable code, e.g. `invalid_request`, \
                     `insufficient_credits`, `customer_not_found`."},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "The field at fault (`invalid_request`)."},
            "required": {"type": "string", "description": "Credits required (`insufficient_credits`)."},
            "requested": {"type": "string", "description": "Credits requested (`adjustment_exceeds_available`)."},
            "available": {"type": "string", "description": "Credits available."},
            "period": {"type": "string", "description": "The limit's window, `day` or `month` (`spend_limit_reached`)."},
            "feature": {"type": ["string", "null"], "description": "The feature the limit caps; null for all (`spend_limit_reached`)."},
            "limit": {"type": "string", "description": "The limit's credits (`spend_limit_reached`)."},
            "spent": {"type": "string", "description": "Credits spent in the window (`spend_limit_reached`)."},
            "held": {"type": "string", "description": "Credits held under the limit (`spend_limit_reached`)."},
            "resets_at": {"type": "string", "format": "date-time", "description": "When the window ends (`spend_limit_reached`)."},
        },
        "additionalProperties": false,
    })
}

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The completed document for a server with `catalog`.
pub fn document(catalog: &Catalog) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    schemas.insert("Problem".into(), problem_schema());
    constrain_requests(schemas, catalog);
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        for operation in item.as_object_mut().expect("a path item").values_mut() {
            complete_operation(path, operation);
        }
    }
    paths["/v1/authorizations"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/AuthorizationRequest"});
    add_unannotated_paths(paths);
    describe_webhook(paths);
    doc
}

/// Constraints of the request bodies' fields, which serde's types alone do not say.
/// Replaces a request field's schema, keeping the description its annotation gave.
fn set(schemas: &mut Map<String, Value>, schema: &str, field: &str, value: Value) {
    let property = &mut schemas[schema]["properties"][field];
    let description = property.get("description").cloned();
    *property = value;
    if let Some(description) = description {
        property["description"] = description;
    }
}

// Long: the constraints of every request body of the OpenAPI document in one list, so that none is missed.
fn constrain_requests(schemas: &mut Map<String, Value>, catalog: &Catalog) {
    let actions = || ids(catalog.actions.keys().cloned());
    // A quantity's places and limit depend on its action's price: one branch per kind of action.
    let mut kinds: BTreeMap<(u32, Decimal), Vec<String>> = BTreeMap::new();
    for action in catalog.actions.values() {
        kinds
            .entry((action.quantity_decimals(), action.max_quantity()))
            .or_default()
            .push(action.id.clone());
    }
    let by_action: Vec<Value> = kinds
        .values()
        .map(|ids| {
            let action = &catalog.actions[&ids[0]];
            json!({"if": {"properties": {"action": {"enum": ids}}, "required": ["action"]},
                   "then": {"properties": {"quantity": quantity(action)}}})
        })
        .collect();
    for schema in ["CheckRequest", "SpendRequest"] {
        set(schemas, schema, "customer", identifier());
        set(schemas, schema, "action", actions());
        set(
            schemas,
            schema,
            "quantity",
            positive_amount(Quantity::max()),
        );
        schemas[schema]["properties"]["quantity"]["description"] = json!(
            "Units of the action: at most as many decimal places as its price allows (6 less \
             those of its credits per unit) and at most its largest quantity."
        );
        if by_action.len() > 1 {
            schemas[schema]["allOf"] = Value::Array(by_action.clone());
        } else if let Some(action) = catalog.actions.values().next() {
            set(schemas, schema, "quantity", quantity(action));
        }
    }
    set(schemas, "SpendRequest", "idempotency_key", identifier());
    // A member's name follows the rule of ids, or is absent.
    let subject = || {
        let mut subject = identifier();
        subject["type"] = json!(["string", "null"]);
        subject
    };
    for schema in ["CheckRequest", "SpendRequest", "LimitRequest"] {
        set(schemas, schema, "subject", subject());
    }
    // A limit caps one member or each, not both.
    schemas["LimitRequest"]["if"] =
        json!({"properties": {"each_subject": {"const": true}}, "required": ["each_subject"]});
    schemas["LimitRequest"]["then"] = json!({"properties": {"subject": {"type": "null"}}});
    set(
        schemas,
        "CaptureRequest",
        "quantity",
        positive_amount(Quantity::max()),
    );
    set(
        schemas,
        "CaptureRequest",
        "credits",
        positive_amount(max_credits_per_request()),
    );
    set(schemas, "CaptureRequest", "idempotency_key", identifier());
    set(
        schemas,
        "GrantRequest",
        "kind",
        json!({"type": "string", "enum": ["promotional", "adjustment", "pack", "plan"]}),
    );
    set(
        schemas,
        "GrantRequest",
        "credits",
        positive_amount(max_credits_per_request()),
    );
    set(schemas, "GrantRequest", "price", money(3));
    set(
        schemas,
        "GrantRequest",
        "pack",
        ids(catalog.packs.keys().cloned()),
    );
    set(
        schemas,
        "GrantRequest",
        "plan",
        ids(catalog.plans.keys().cloned()),
    );
    set(
        schemas,
        "GrantRequest",
        "currency",
        json!({"type": "string", "pattern": "^[A-Za-z]{3}$"}),
    );
    set(
        schemas,
        "GrantRequest",
        "priority",
        json!({"type": "integer", "minimum": -1000, "maximum": 1000}),
    );
    set(schemas, "GrantRequest", "idempotency_key", identifier());
    set(
        schemas,
        "GrantRequest",
        "memo",
        json!({"type": ["string", "null"], "maxLength": super::customers::MAX_MEMO_LENGTH,
               "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"}),
    );
    // What each kind requires and refuses. Stated as `if`/`then` rather than `oneOf` branches,
    // so that a client generated from this document has one type for the request.
    let absent = json!({"type": "null"});
    let kind_is =
        |kinds: Value| json!({"properties": {"kind": {"enum": kinds}}, "required": ["kind"]});
    schemas["GrantRequest"]["allOf"] = json!([
        {"if": kind_is(json!(["promotional", "adjustment"])),
         "then": {"properties": {"pack": absent, "plan": absent, "price": absent},
                  "required": ["credits"]}},
        {"if": kind_is(json!(["pack"])),
         "then": {"properties": {"pack": {"type": "string"}}, "required": ["pack"]}},
        {"if": kind_is(json!(["plan"])),
         "then": {"properties": {"plan": {"type": "string"}}, "required": ["plan"]}},
    ]);
    // A price to its currency's minor unit: the catalog's when the request names none.
    let (none, three) = (currencies_of(0), currencies_of(3));
    let named = |codes: &[String]| {
        json!({"properties": {"currency": {"type": "string",
                                           "pattern": format!("^(?:{})$", codes.join("|"))}},
               "required": ["currency"]})
    };
    let other = json!({"properties": {"currency": {"type": "string",
        "not": {"pattern": format!("^(?:{})$", [none.clone(), three.clone()].concat().join("|"))}}},
        "required": ["currency"]});
    let catalogs = crate::domain::money::currency_minor_units(&catalog.currency);
    let places = [
        (named(&none), 0),
        (named(&three), 3),
        (other, 2),
        (
            json!({"properties": {"currency": {"type": "null"}}}),
            catalogs,
        ),
        (json!({"not": {"required": ["currency"]}}), catalogs),
    ];
    if let Some(all) = schemas["GrantRequest"]["allOf"].as_array_mut() {
        all.extend(places.into_iter().map(
            |(when, places)| json!({"if": when, "then": {"properties": {"price": money(places)}}}),
        ));
    }
    set(schemas, "AdjustmentRequest", "credits", signed_amount());
    set(schemas, "AdjustmentRequest", "reason", reason());
    set(
        schemas,
        "AdjustmentRequest",
        "idempotency_key",
        identifier(),
    );
    set(
        schemas,
        "LimitRequest",
        "period",
        json!({"type": "string", "enum": ["day", "month"]}),
    );
    set(
        schemas,
        "LimitRequest",
        "mode",
        json!({"type": "string", "enum": ["hard", "soft"]}),
    );
    set(
        schemas,
        "LimitRequest",
        "credits",
        positive_amount(max_credits_per_request()),
    );
    let mut feature_or_all = ids(catalog.features.keys().cloned());
    feature_or_all["type"] = json!(["string", "null"]);
    feature_or_all["enum"]
        .as_array_mut()
        .expect("an enum")
        .push(Value::Null);
    set(schemas, "LimitRequest", "feature", feature_or_all);
    schemas["LimitsRequest"]["properties"]["limits"]["maxItems"] =
        json!(crate::domain::limits::MAX_LIMITS);
    constrain_override(schemas, catalog);
    set(
        schemas,
        "ThresholdsRequest",
        "low_balance_consumed_share",
        json!({"anyOf": [positive_amount(Decimal::ONE), {"type": "null"}]}),
    );
    set(
        schemas,
        "ThresholdsRequest",
        "low_balance_credits",
        json!({"anyOf": [positive_amount(max_credits_per_request()), {"type": "null"}]}),
    );
    set(
        schemas,
        "AutoTopupRequest",
        "threshold",
        positive_amount(max_credits_per_request()),
    );
    set(
        schemas,
        "AutoTopupRequest",
        "pack",
        ids(catalog.packs.keys().cloned()),
    );
    set(
        schemas,
        "AutoTopupRequest",
        "monthly_limit",
        json!({"type": "integer", "minimum": 1,
               "maximum": crate::domain::autotopup::MAX_MONTHLY_LIMIT}),
    );
    set(schemas, "OverrideRequest", "reason", reason());
    set(schemas, "OverrideRequest", "idempotency_key", identifier());
    // A plan id, or null: a named enum beside null, which generated clients read as an
    // optional enum.
    let mut plan_id = ids(catalog.plans.keys().cloned());
    plan_id["description"] = json!("A plan of the catalog.");
    schemas.insert("PlanId".into(), plan_id);
    set(
        schemas,
        "PlanRequest",
        "plan",
        json!({"oneOf": [{"$ref": "#/components/schemas/PlanId"}, {"type": "null"}]}),
    );
    // A parent: a customer id, or null; the field is required.
    set(
        schemas,
        "ParentRequest",
        "parent",
        json!({"oneOf": [identifier(), {"type": "null"}]}),
    );
    schemas["ParentRequest"]["required"] = json!(["parent"]);
    // A capture gives exactly one of quantity or credits.
    schemas["CaptureRequest"]["if"] = json!({"required": ["quantity"]});
    schemas["CaptureRequest"]["then"] = json!({"not": {"required": ["credits"]}});
    schemas["CaptureRequest"]["else"] = json!({"required": ["credits"]});
    // An authorization is made now: it takes no `occurred_at`.
    let mut authorization = schemas["SpendRequest"].clone();
    authorization["properties"]
        .as_object_mut()
        .expect("properties")
        .remove("occurred_at");
    schemas.insert("AuthorizationRequest".into(), authorization);
    // Each usage of a batch is answered on its own, a malformed one with its problem in its
    // place: the batch takes any items.
    schemas["UsageBatchRequest"]["properties"]["usages"]["items"] = json!({
        "description": "A usage, as the body of `POST /v1/usage` (`SpendRequest`); one that does \
                        not parse is answered with its problem in its place."});
    schemas["UsageBatchRequest"]["properties"]["usages"]["minItems"] = json!(1);
    schemas["UsageBatchRequest"]["properties"]["usages"]["maxItems"] =
        json!(super::gate::MAX_BATCH_USAGES);
}

/// An id of the catalog, or null.
fn id_or_null(ids: impl Iterator<Item = String>) -> Value {
    let mut schema = self::ids(ids);
    schema["type"] = json!(["string", "null"]);
    schema["enum"]
        .as_array_mut()
        .expect("an enum")
        .push(Value::Null);
    schema
}

fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// An override names exactly one of a feature (with `enabled`), an action (with
/// `credits_per_unit`, of no more places than the action's catalog price) or an overage rule
/// (with the limit of `allow` or the price of `bill`); the fields of the other kinds are absent
/// or null.
// Long: the schema of each kind of override in one place.
fn constrain_override(schemas: &mut Map<String, Value>, catalog: &Catalog) {
    let o = "OverrideRequest";
    set(
        schemas,
        o,
        "feature",
        id_or_null(catalog.features.keys().cloned()),
    );
    set(
        schemas,
        o,
        "action",
        id_or_null(catalog.actions.keys().cloned()),
    );
    set(
        schemas,
        o,
        "credits_per_unit",
        or_null(positive_amount(max_credits_per_request())),
    );
    set(
        schemas,
        o,
        "overage",
        json!({"type": ["string", "null"], "enum": ["block", "allow", "bill", "plan", null]}),
    );
    set(
        schemas,
        o,
        "overage_limit",
        or_null(positive_amount(max_credits_per_request())),
    );
    set(
        schemas,
        o,
        "overage_price",
        or_null(positive_amount(crate::domain::overrides::MAX_OVERAGE_PRICE)),
    );
    let schema = &mut schemas[o];
    let named =
        |field: &str| json!({"required": [field], "properties": {field: {"type": "string"}}});
    let absent = json!({"type": "null"});
    let absent_all = |fields: &[&str]| {
        let properties: Map<String, Value> = fields
            .iter()
            .map(|f| ((*f).to_owned(), absent.clone()))
            .collect();
        Value::Object(properties)
    };
    // A price has no more decimal places than the action's own.
    let mut by_places: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for action in catalog.actions.values() {
        by_places
            .entry(action.credits.value().normalize().scale())
            .or_default()
            .push(action.id.clone());
    }
    let prices: Vec<Value> = by_places
        .into_iter()
        .map(|(places, ids)| {
            let price = amount(max_credits_per_request(), "", Value::from(1), "1", places);
            json!({"if": {"properties": {"action": {"enum": ids}}, "required": ["action"]},
                   "then": {"properties": {"credits_per_unit": or_null(price)}}})
        })
        .collect();
    let rule_is =
        |rules: Value| json!({"properties": {"overage": {"enum": rules}}, "required": ["overage"]});
    schema["oneOf"] = json!([named("feature"), named("action"), named("overage")]);
    schema["allOf"] = json!([
        {"if": named("feature"),
         "then": {"required": ["enabled"],
                  "properties": {
                      "enabled": {"type": "boolean"},
                      "credits_per_unit": absent, "overage_limit": absent,
                      "overage_price": absent}}},
        {"if": named("action"),
         "then": {"required": ["credits_per_unit"],
                  "properties": absent_all(&["enabled", "overage_limit", "overage_price"]),
                  "allOf": prices}},
        {"if": named("overage"),
         "then": {"properties": absent_all(&["enabled", "credits_per_unit"]),
                  "allOf": [
                      {"if": rule_is(json!(["allow"])),
                       "then": {"required": ["overage_limit"],
                                "properties": {"overage_limit": positive_amount(max_credits_per_request()),
                                               "overage_price": absent}}},
                      {"if": rule_is(json!(["bill"])),
                       "then": {"required": ["overage_price"],
                                "properties": {"overage_price": positive_amount(crate::domain::overrides::MAX_OVERAGE_PRICE),
                                               "overage_limit": absent}}},
                      {"if": rule_is(json!(["block", "plan"])),
                       "then": {"properties": absent_all(&["overage_limit", "overage_price"])}},
                  ]}},
    ]);
}

/// Parameters in their place with their constraints, and every status the operation can answer.
// Long: the parameters and problem statuses of every operation in one table.
fn complete_operation(path: &str, operation: &mut Value) {
    // A body that may be `null` (turn it off) is still a body that must be sent.
    if let Some(body) = operation.get_mut("requestBody") {
        body["required"] = json!(true);
    }
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters.iter_mut() {
            constrain_parameter(path, parameter);
        }
    }
    let secured = operation.get("security").is_some();
    let has_body = operation.get("requestBody").is_some();
    let has_parameters = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let csv = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|p| p["name"] == "format"));
    if csv {
        let ok = &mut operation["responses"]["200"];
        let json_schema = ok["content"]["application/json"]["schema"].clone();
        ok["content"] = json!({
            "application/json": {"schema": if json_schema.is_null() { json!({"type": "object"}) } else { json_schema }},
            "text/csv": {"schema": {"type": "string"}},
        });
    }
    let responses = operation["responses"]
        .as_object_mut()
        .expect("an operation has responses");
    let mut add = |status: &str, description: &str| {
        let entry = responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
        if entry["description"].as_str().is_none_or(str::is_empty) {
            entry["description"] = json!(description);
        }
        if status.starts_with(['4', '5']) {
            entry["content"] = problem(description)["content"].clone();
        }
    };
    if secured {
        add(
            "401",
            "No valid API key (`Authorization: Bearer KEY`): `unauthorized`.",
        );
        add(
            "403",
            "The key's scope may not call this operation (`insufficient_scope`); on the gate, \
             also `feature_not_entitled` and `customer_frozen`.",
        );
    }
    if has_body && path != "/webhooks/stripe" {
        add("400", "The body is not JSON: `malformed_json`.");
        add(
            "413",
            &format!("The body is larger than {MAX_BODY_BYTES} bytes: `payload_too_large`."),
        );
        add(
            "415",
            "The body is not sent as `application/json`: `unsupported_media_type`.",
        );
    }
    if has_body || has_parameters {
        add(
            "422",
            "A field is missing, unknown, of the wrong type or out of range; `field` names it \
             (`invalid_request`, or `unknown_action`, `unknown_catalog_item`).",
        );
    }
    if path.contains('{') {
        add("404", "Nothing is known by that id.");
    }
    if matches!(
        path,
        "/v1/authorizations"
            | "/v1/usage"
            | "/v1/customers/{id}/grants"
            | "/v1/customers/{id}/adjustments"
            | "/v1/customers/{id}/overrides"
    ) && has_body
    {
        add(
            "409",
            "This `idempotency_key` was used with a different request: `idempotency_conflict`.",
        );
    }
    if path == "/v1/customers/{id}/auto-topup" && has_body {
        add(
            "409",
            "Auto top-up cannot charge this customer: no `[stripe] api_key`, or the customer is \
             not linked to a Stripe customer (`auto_topup_unavailable`).",
        );
    }
    if path == "/v1/test-clock/advance" {
        add(
            "409",
            "`to` is before the clock's time: the test clock only moves forward \
             (`clock_backwards`).",
        );
    }
    add(
        "500",
        "An internal error, logged; the body says nothing of its cause.",
    );
    add(
        "503",
        "The database is busy (`unavailable`, with `Retry-After`): retry.",
    );
    // Descriptions for the successes the annotations left blank.
    for (status, response) in responses.iter_mut() {
        if response["description"].as_str().is_none_or(str::is_empty) {
            response["description"] = json!(match status.as_str() {
                "200" => "Done.",
                "201" => "Created (or, for a repeated idempotency key, the first answer).",
                "402" =>
                    "Not enough credits (`insufficient_credits`, with `required` and `available`), \
                     or a hard spend limit would be passed (`spend_limit_reached`, with the limit, \
                     `spent`, `held`, `requested` and `resets_at`).",
                "409" =>
                    "Conflicts with the current state (`idempotency_conflict`, `hold_already_resolved`, `hold_expired`, `period_not_ended`, `adjustment_exceeds_available`, `parent_refused`).",
                _ => "See the problem's `type`.",
            });
            if status.starts_with(['4', '5']) {
                response["content"] = problem("")["content"].clone();
            }
        }
    }
}

/// Query parameters are in the query; every parameter has its constraints.
fn constrain_parameter(path: &str, parameter: &mut Value) {
    let name = parameter["name"].as_str().unwrap_or_default().to_owned();
    let in_path = path.contains(&format!("{{{name}}}"));
    if !in_path {
        parameter["in"] = json!("query");
        let nullable = parameter["schema"]["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("null")));
        parameter["required"] = json!(!nullable);
    }
    let schema = match (name.as_str(), path) {
        ("id", _) => identifier(),
        ("period", _) => json!({"type": "string", "pattern": MONTH}),
        ("from" | "to", "/v1/revenue/journal" | "/v1/customers/{id}/usage") => {
            json!({"type": "string", "format": "date",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
        }
        ("from" | "to", _) => json!({"type": "string", "pattern": MONTH}),
        ("format", _) => json!({"type": "string", "enum": ["json", "csv"]}),
        ("by", "/v1/revenue/margin") => {
            json!({"type": "string", "enum": ["action", "feature", "plan", "customer", "subject"]})
        }
        ("by", "/v1/customers/{id}/usage") => {
            json!({"type": "string", "enum": ["action", "feature", "subject", "customer"]})
        }
        ("interval", _) => json!({"type": "string", "enum": ["day", "month"]}),
        ("q", _) => identifier(),
        ("limit", _) => {
            json!({"type": "integer", "minimum": 1, "maximum": super::extract::MAX_PAGE})
        }
        ("cursor", "/v1/outbox" | "/v1/operator-actions") => json!({"type": "string",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}),
        ("cursor", "/v1/revenue/overage" | "/v1/customers") => identifier(),
        ("cursor", _) => json!({"type": "string", "pattern": "^[0-9]{1,18}$"}),
        ("status", "/v1/outbox") => {
            json!({"type": "string", "enum": ["pending", "delivered", "dead"]})
        }
        ("customer", _) => identifier(),
        _ => return,
    };
    parameter["schema"] = schema;
}

fn add_unannotated_paths(paths: &mut Map<String, Value>) {
    let text = |description: &str, media: &str| json!({"description": description, "content": {media: {"schema": {"type": "string"}}}});
    paths.insert(
        "/livez".into(),
        json!({"get": {"tags": ["operations"], "operationId": "livez",
            "description": "The process answers (no database access): for liveness probes.",
            "responses": {"200": text("Alive.", "text/plain")}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"tags": ["operations"], "operationId": "metrics",
            "description": "Prometheus metrics: requests, latencies, the runner's batches, \
                            authorizations, Stripe events and pending refunds.",
            "responses": {"200": text("The metrics, Prometheus text format 0.0.4.", "text/plain")}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"tags": ["operations"], "operationId": "openapi",
            "description": "This document.",
            "responses": {"200": {"description": "The OpenAPI document.",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
}

/// The webhook's body is Stripe's event, checked against `Stripe-Signature`.
fn describe_webhook(paths: &mut Map<String, Value>) {
    let operation = &mut paths["/webhooks/stripe"]["post"];
    operation["description"] = json!(
        "Stripe's events, signed with one of `[stripe] webhook_secrets`. Recorded once per event \
         id; the answer's `outcome` says what it did."
    );
    operation["parameters"] = json!([{"name": "Stripe-Signature", "in": "header", "required": true,
        "description": "`t=UNIX_SECONDS,v1=HEX_HMAC_SHA256` as Stripe sends it.",
        "schema": {"type": "string",
            "pattern": "^t=[0-9]{1,12}(?:,v[0-9]=[0-9a-f]{64})+$"}}]);
    operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["id", "type", "created", "livemode", "data"],
        "description": "A Stripe event. Only the fields below are read; any other is kept with \
                        the event as it came.",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "created": {"type": "integer", "minimum": 0,
                        "maximum": crate::stripe::event::MAX_UNIX_SECONDS},
            "api_version": {"type": ["string", "null"]},
            "livemode": {"type": "boolean",
                         "description": "An event of the mode other than `[stripe] livemode` \
                                         is recorded (`other_mode`) and applies nothing."},
            "data": {"type": "object", "required": ["object"],
                     "properties": {"object": {"type": "object"}}}},
    }}}});
    let responses = operation["responses"].as_object_mut().expect("responses");
    responses.insert(
        "400".into(),
        problem(
            "The signature does not verify (`invalid_signature`) or the body is not a Stripe \
             event (`malformed_event`).",
        ),
    );
    responses.insert(
        "413".into(),
        problem("The body is larger than a Stripe event may be: `payload_too_large`."),
    );
    responses.insert(
        "503".into(),
        problem(
            "No webhook secret is configured (`webhook_not_configured`), or the database is busy \
             (`unavailable`): Stripe retries.",
        ),
    );
    responses.insert(
        "502".into(),
        problem("The Stripe API could not be reached for what the event needs: Stripe retries."),
    );
}
