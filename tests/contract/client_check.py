"""Drives creditbook through a Python client generated from its /openapi.json
(openapi-python-client), as a customer's developer would: typed requests in, typed answers out,
refusals parsed as the Problem schema. Prints what it saw as one JSON object; tests/contract.rs
compares it with the server's own answers.

Usage: client_check.py BASE_URL APP_KEY ADMIN_KEY FINANCE_KEY CUSTOMER
"""

import json
import sys

from creditbook_client import AuthenticatedClient
from creditbook_client.api.customers import create_grant, set_plan, show
from creditbook_client.api.gate import authorize, capture, check, usage, void
from creditbook_client.api.revenue import rollforward
from creditbook_client.models import (
    AuthorizationRequest,
    AuthorizationRequestAction,
    AuthorizationResponse,
    CaptureRequest,
    CheckRequest,
    CheckRequestAction,
    CustomerView,
    GrantRequest,
    GrantRequestKind,
    PlanId,
    PlanRequest,
    PlanResponse,
    Problem,
    ResolutionResponse,
    RollforwardFormat,
    SpendRequest,
    SpendRequestAction,
    UsageResponse,
)


def expect(value, kind):
    if not isinstance(value, kind):
        raise SystemExit(f"expected {kind.__name__}, got {value!r}")
    return value


def main():
    base, app_key, admin_key, finance_key, customer = sys.argv[1:6]
    app = AuthenticatedClient(base_url=base, token=app_key, raise_on_unexpected_status=True)
    admin = AuthenticatedClient(base_url=base, token=admin_key, raise_on_unexpected_status=True)
    finance = AuthenticatedClient(
        base_url=base, token=finance_key, raise_on_unexpected_status=True
    )
    seen = {}

    grant = create_grant.sync(
        customer,
        client=admin,
        body=GrantRequest(
            kind=GrantRequestKind.PROMOTIONAL, credits_="100", idempotency_key="client-promo"
        ),
    )
    seen["grant_kind"] = grant.kind

    # The plan that includes voice, whose 0.5 credits a unit take quantities to 5 places.
    expect(
        set_plan.sync(customer, client=admin, body=PlanRequest(plan=PlanId.PRO)), PlanResponse
    )

    allowed = check.sync(
        client=app,
        body=CheckRequest(customer=customer, action=CheckRequestAction.CHAT_REQUEST, quantity=2),
    )
    seen["check_allowed"] = allowed.allowed

    hold = expect(
        authorize.sync(
            client=app,
            body=AuthorizationRequest(
                customer=customer,
                action=AuthorizationRequestAction.CHAT_REQUEST,
                quantity="2",
                idempotency_key="client-hold",
            ),
        ),
        AuthorizationResponse,
    )
    seen["hold_status"] = hold.status
    seen["hold_credits"] = hold.credits_

    captured = expect(
        capture.sync(hold.id, client=app, body=CaptureRequest(quantity="1")), ResolutionResponse
    )
    seen["captured_credits"] = captured.credits_

    second = expect(
        authorize.sync(
            client=app,
            body=AuthorizationRequest(
                customer=customer,
                action=AuthorizationRequestAction.CHAT_REQUEST,
                quantity=1,
                idempotency_key="client-hold-2",
            ),
        ),
        AuthorizationResponse,
    )
    voided = expect(void.sync(second.id, client=app), ResolutionResponse)
    seen["voided_status"] = voided.status

    used = expect(
        usage.sync(
            client=app,
            body=SpendRequest(
                customer=customer,
                action=SpendRequestAction.VOICE_SPEECH,
                quantity="0.00001",
                idempotency_key="client-usage",
            ),
        ),
        UsageResponse,
    )
    seen["usage_credits"] = used.credits_

    # A refusal is parsed as the Problem schema.
    refused = expect(
        usage.sync(
            client=app,
            body=SpendRequest(
                customer=customer,
                action=SpendRequestAction.VOICE_SPEECH,
                quantity="0.000002",
                idempotency_key="client-usage-refused",
            ),
        ),
        Problem,
    )
    seen["refused_type"] = refused.type_
    seen["refused_field"] = refused.field

    view = expect(show.sync(customer, client=app), CustomerView)
    seen["available"] = view.available
    seen["balance"] = view.balance

    report = rollforward.sync(client=finance, from_="2000-01", to="2000-01", format_=RollforwardFormat.JSON)
    seen["rollforward"] = type(report).__name__

    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
