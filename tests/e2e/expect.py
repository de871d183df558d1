"""Assertions shared by the wire tests (SPEC §5 challenge shapes, "the upstream saw nothing")."""
from __future__ import annotations

from harness import Reply


def not_forwarded(reply: Reply) -> None:
    """SPEC §5: no denied request reaches the upstream, in whole or in part."""
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
    """A 401 `invalid_token` challenge (SPEC §5, in order) and JSON body, neither echoing the token."""
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
