"""Protected Resource Metadata (RFC 9728; README, Protected Resource Metadata) served by the
filter itself."""
from __future__ import annotations

import pytest

import expect
import scenario
from scenario import (
    MCP_METADATA,
    MCP_METADATA_PATH,
    ROOT_METADATA_PATH,
    TOOLS_METADATA,
    TOOLS_METADATA_PATH,
)


def assert_metadata_headers(reply) -> None:
    assert reply.status == 200, reply.describe()
    assert (reply.header("content-type") or "").split(";")[0].strip().lower() == "application/json"
    assert reply.header("access-control-allow-origin") == "*"
    assert "max-age=" in (reply.header("cache-control") or ""), reply.headers


@pytest.mark.parametrize(
    "path, document",
    [(MCP_METADATA_PATH, MCP_METADATA), (TOOLS_METADATA_PATH, TOOLS_METADATA)],
    ids=["mcp", "tools-without-optional-fields"],
)
def test_serves_metadata_at_path_suffixed_well_known(client, path, document):
    reply = client.get(path)
    assert_metadata_headers(reply)
    assert reply.json() == document
    expect.not_forwarded(reply)


def test_serves_metadata_when_the_request_has_a_query_string(client):
    reply = client.get(MCP_METADATA_PATH + "?x=1")
    assert_metadata_headers(reply)
    assert reply.json() == MCP_METADATA
    expect.not_forwarded(reply)


def test_answers_head_on_metadata_with_headers_and_no_body(client):
    reply = client.request("HEAD", MCP_METADATA_PATH)
    assert_metadata_headers(reply)
    assert reply.body == b""
    expect.not_forwarded(reply)


def test_metadata_includes_resource_documentation_when_configured(single_resource_client):
    reply = single_resource_client.get(MCP_METADATA_PATH)
    assert_metadata_headers(reply)
    assert reply.json() == {**MCP_METADATA, "resource_documentation": "https://mcp.example.com/docs"}


def test_root_metadata_is_not_found_when_the_host_matches_no_single_resource(client):
    reply = client.get(ROOT_METADATA_PATH)
    assert reply.status == 404, reply.describe()
    expect.not_forwarded(reply)


@pytest.mark.parametrize(
    "host, document",
    [("mcp.example.com", MCP_METADATA), ("other.example.com", TOOLS_METADATA)],
)
def test_root_metadata_picks_the_resource_whose_host_matches_the_authority(client, host, document):
    reply = client.get(ROOT_METADATA_PATH, host_header=host)
    assert_metadata_headers(reply)
    assert reply.json() == document
    expect.not_forwarded(reply)


def test_root_metadata_serves_the_only_configured_resource(single_resource_client):
    reply = single_resource_client.get(ROOT_METADATA_PATH)
    assert_metadata_headers(reply)
    assert reply.json()["resource"] == MCP_METADATA["resource"]
    expect.not_forwarded(reply)


SHARED_A = "https://a.example.com/mcp"
SHARED_B = "https://b.example.com:8443/mcp"


@pytest.fixture
def shared_path_client(envoys):
    """Two resources on the same path /mcp, on different hosts."""
    config = scenario.single_resource_config()
    config["resources"] = [
        {"resource": SHARED_A, "authorization_servers": [scenario.ISSUER]},
        {"resource": SHARED_B, "authorization_servers": [scenario.ISSUER]},
    ]
    return envoys.client(config)


@pytest.mark.parametrize("host, resource", [("a.example.com", SHARED_A), ("b.example.com:8443", SHARED_B)])
def test_metadata_of_a_shared_path_is_the_one_for_the_requests_host(shared_path_client, host, resource):
    reply = shared_path_client.get(MCP_METADATA_PATH, host_header=host)
    assert_metadata_headers(reply)
    assert reply.json()["resource"] == resource
    expect.not_forwarded(reply)


@pytest.mark.parametrize("host", ["c.example.com", "b.example.com"])
def test_metadata_of_a_shared_path_is_not_found_for_a_host_naming_none_of_them(shared_path_client, host):
    reply = shared_path_client.get(MCP_METADATA_PATH, host_header=host)
    assert reply.status == 404, reply.describe()
    expect.not_forwarded(reply)
