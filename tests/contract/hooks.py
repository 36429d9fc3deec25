"""Schemathesis hooks for creditbook's contract run.

Stripe's webhook takes only signed events: a generated event that carries a `Stripe-Signature`
is sent signed with the server's secret (`CREDITBOOK_CONTRACT_WEBHOOK_SECRET`), exactly as Stripe
signs (`t=...,v1=HMAC-SHA256(secret, "t.body")`), so that a schema-valid event is one the server
must record. A case without the header (a negative case) is sent as generated.

A usage read's range runs forward over a bounded span, and `to` defaults to today: a valid
`from` is moved to where the range ends.

A usage may be reported late, at most 35 days ago and never in the future: a rule of time that a
JSON Schema cannot state. A generated `occurred_at` that is a valid date-time is moved inside that
window, so that a schema-valid usage is one the server must accept. Nothing else is changed, and
an `occurred_at` that is not a date-time is left as generated (a negative case stays negative).
"""

import hashlib
import hmac
import json
import os
import re
import time
from datetime import datetime, timedelta, timezone

import schemathesis


def _within_window(usage):
    if not isinstance(usage, dict):
        return
    if not _parses(usage.get("occurred_at")):
        return
    late = datetime.now(timezone.utc) - timedelta(days=1)
    usage["occurred_at"] = late.strftime("%Y-%m-%dT%H:%M:%SZ")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # Every phase's cases pass here, examples and coverage included.
    body = case.body
    path = case.operation.path
    if path == "/v1/customers/{id}/grants" and isinstance(body, dict):
        _in_the_future(body, "expires_at")
    elif path == "/v1/customers/{id}/overrides" and isinstance(body, dict):
        _in_the_future(body, "until")
    elif path == "/v1/customers/{id}/limits" and isinstance(body, dict):
        _one_per_window(body)
    elif path.startswith("/v1/revenue/") and case.query:
        _in_order(case.query)
    elif path == "/v1/customers/{id}/usage" and case.query:
        _usage_range(case.query)
    if case.operation.path == "/v1/usage":
        _within_window(body)
    elif case.operation.path == "/v1/usage/batch" and isinstance(body, dict):
        for usage in body.get("usages") or []:
            _within_window(usage)
    elif case.operation.path == "/webhooks/stripe":
        _sign(case, kwargs)


def _parses(value):
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _in_the_future(body, field):
    """A grant expires in the future: a valid date-time is moved a month ahead of now."""
    if _parses(body.get(field)):
        ahead = datetime.now(timezone.utc) + timedelta(days=30)
        body[field] = ahead.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_per_window(body):
    """A customer has at most one limit per period and feature: a later valid limit for the same
    period and feature as an earlier one is dropped."""
    limits = body.get("limits")
    if not isinstance(limits, list):
        return
    seen, kept = set(), []
    for limit in limits:
        if isinstance(limit, dict):
            key = (repr(limit.get("period")), repr(limit.get("feature")))
            if key in seen:
                continue
            seen.add(key)
        kept.append(limit)
    body["limits"] = kept


def _in_order(query):
    """A report's range runs forward, over at most 120 months: a valid `from` after `to` is
    swapped, and a range too long starts where it ends."""
    start, end = query.get("from"), query.get("to")
    if not (isinstance(start, str) and isinstance(end, str)) or len(start) != len(end):
        return
    if start > end:
        query["from"], query["to"] = end, start
    if len(start) == 7:
        query["from"] = query["to"]


def _is_date(value):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _usage_range(query):
    """A usage read runs forward from `from` to `to` (today when absent), over at most 366 days:
    a valid `from` is moved to where the range ends."""
    start, end = query.get("from"), query.get("to")
    if not _is_date(start):
        return
    if _is_date(end):
        query["from"] = end
    elif end is None:
        query["from"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _sign(case, kwargs):
    headers = case.headers or {}
    signature = headers.get("Stripe-Signature")
    # Only a well-formed header is replaced; a malformed one is a negative case.
    if not isinstance(signature, str) or not re.fullmatch(
        r"t=[0-9]{1,12}(?:,v[0-9]=[0-9a-f]{64})+", signature
    ):
        return
    if isinstance(case.body, bytes):
        return
    secret = os.environ["CREDITBOOK_CONTRACT_WEBHOOK_SECRET"]
    # The body stays as generated (Schemathesis revalidates what a hook changes, so a body turned
    # into bytes would count as a negative case); it is sent as `requests` serializes `json=`,
    # which are exactly these bytes.
    try:
        raw = json.dumps(case.body, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    headers["Stripe-Signature"] = f"t={timestamp},v1={digest.hexdigest()}"
    case.headers = headers
