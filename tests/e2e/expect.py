"""Assertions shared by the wire tests: the challenge shapes (README, Challenges and decisions;
RFC 6750 §3), "the upstream saw nothing", the answers of the body checks (README, MCP-aware
authorization)."""
from __future__ import annotations

import time

from harness import Client, Reply
from harness.scenario import MCP_METADATA_URL, SUBJECT_HEADER


def not_forwarded(reply: Reply) -> None:
    """No denied request reaches the upstream, in whole or in part (README, Challenges and
    decisions)."""
    assert not reply.upstream_requests, f"upstream received a request that should have been stopped: {reply.upstream_requests}"


def forwarded_once(reply: Reply):
    assert reply.status == 200, reply.describe()
    assert len(reply.upstream_requests) == 1, f"upstream saw {len(reply.upstream_requests)} requests"
    return reply.upstream_requests[0]


def error_body(reply: Reply, error: str) -> str:
    """A JSON error body `{"error": error, "error_description": "<non-empty>"}`; returns the description."""
    content_type = (reply.header("content-type") or "").split(";")[0].strip().lower()
    assert content_type == "application/json", reply.describe()
    body = reply.json()
    assert body.get("error") == error, reply.describe()
    description = body.get("error_description")
    assert isinstance(description, str) and description.strip(), reply.describe()
    return description


def challenge(reply: Reply, status: int, expected_params: list[tuple[str, str | None]]) -> dict[str, str]:
    """`reply` has `status` and exactly one Bearer challenge whose parameters are exactly
    `expected_params`, in that order; a None value means "present, any non-empty value"."""
    assert reply.status == status, reply.describe()
    found = reply.challenge()
    assert found.scheme.lower() == "bearer", found
    assert found.param_names() == [name for name, _ in expected_params], f"parameters (in order) of {found}"
    for name, value in expected_params:
        if value is None:
            assert found.get(name), f"{name} empty in {found}"
        else:
            assert found.get(name) == value, f"{name} of {found}"
    return found.as_dict()


def does_not_echo_token(text: str, token: str) -> None:
    assert token not in text, f"token echoed in {text!r}"
    for part in token.split("."):
        if len(part) >= 16:
            assert part not in text, f"token part echoed in {text!r}"


def invalid_token(reply: Reply, token: str, metadata_url: str, required_scope: str) -> None:
    """A 401 `invalid_token` challenge (its parameters in the README's order) and JSON body,
    neither echoing the token."""
    params = challenge(
        reply,
        401,
        [
            ("error", "invalid_token"),
            ("error_description", None),
            ("resource_metadata", metadata_url),
            ("scope", required_scope),
        ],
    )
    description = error_body(reply, "invalid_token")
    does_not_echo_token(params["error_description"], token)
    does_not_echo_token(description, token)


# ------------------------------------------------------------------------------------------
# Body checks (README, MCP-aware authorization)


def settled_upstream(client: Client, test_id: str, settle: float = 0.25):
    """What the upstream received for `test_id`, after a short pause: a request the filter let
    through by mistake is only recorded once the upstream gave up reading its body."""
    time.sleep(settle)
    return client.upstream.requests_with_test_id(test_id)


def nothing_upstream(client: Client, reply) -> None:
    seen = settled_upstream(client, reply.test_id)
    assert not seen, f"upstream received (part of) a denied request: {[r.to_json() for r in seen]}"


def forwarded_with_body(reply: Reply, body: str | bytes):
    seen = forwarded_once(reply)
    sent = body.encode() if isinstance(body, str) else body
    assert seen.body == sent, f"upstream got body {seen.body!r}, client sent {sent!r}"
    # The header edits of an allowed request apply on this path too (README, Configuration defaults).
    assert seen.header_values("authorization") == [], seen.headers
    assert seen.header_values(SUBJECT_HEADER) == ["user-123"], seen.headers
    return seen


def insufficient_scope(reply, scope: str, metadata_url: str = MCP_METADATA_URL) -> None:
    challenge(
        reply,
        403,
        [("error", "insufficient_scope"), ("scope", scope), ("resource_metadata", metadata_url), ("error_description", None)],
    )
    error_body(reply, "insufficient_scope")


def invalid_request(reply, metadata_url: str = MCP_METADATA_URL) -> None:
    challenge(reply, 400, [("error", "invalid_request"), ("error_description", None), ("resource_metadata", metadata_url)])
    error_body(reply, "invalid_request")


def too_large(reply) -> None:
    assert reply.status == 413, reply.describe()
    content_type = (reply.header("content-type") or "").split(";")[0].strip().lower()
    assert content_type == "application/json", reply.describe()
    payload = reply.json()
    assert isinstance(payload.get("error"), str) and payload["error"], reply.describe()
    assert isinstance(payload.get("error_description"), str) and payload["error_description"], reply.describe()
