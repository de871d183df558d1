"""The shipped module exports only the proxy-wasm callbacks the filter implements
(tools/trim_exports.py, run by `make build`): the host then skips a VM entry per request for
each callback left out. Every other test in this suite runs against that trimmed module, so
they are what proves the trimmed filter behaves; these tests pin the trim itself."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from harness.wasm import TRIM_EXPORTS, find_wasm

# The tool is a standalone script (`make build` runs it with the system python): load it from
# its file, as the module under test.
_spec = importlib.util.spec_from_file_location("trim_exports", TRIM_EXPORTS)
trim_exports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trim_exports)

PER_REQUEST_CALLBACKS_WE_IGNORE = {
    "proxy_on_log",
    "proxy_on_done",
}


@pytest.fixture(scope="module")
def module() -> bytes:
    path = find_wasm()
    if not path.exists():
        pytest.skip(f"{path} not built (make build)")
    return path.read_bytes()


def test_the_built_module_exports_only_what_the_filter_implements(module):
    if os.environ.get("MCP_OAUTH_WASM"):
        pytest.skip("MCP_OAUTH_WASM points at another module")
    exports = set(trim_exports.exports_of(module))
    assert exports == trim_exports.KEEP, "run `make build` (it trims the exports)"
    assert not exports & PER_REQUEST_CALLBACKS_WE_IGNORE


def test_trimming_keeps_every_callback_the_filter_needs_and_is_idempotent(module):
    trimmed, _ = trim_exports.trim(module)
    exports = set(trim_exports.exports_of(trimmed))
    assert trim_exports.REQUIRED <= exports
    assert exports <= trim_exports.KEEP
    # proxy_on_delete frees each request's context: without it every request would leak.
    assert "proxy_on_delete" in exports
    # Without its trailers callback the host continues a held request at its trailers.
    assert "proxy_on_request_trailers" in exports
    again, dropped = trim_exports.trim(trimmed)
    assert again == trimmed and dropped == []


def test_trimming_touches_nothing_but_the_export_section(module):
    trimmed, _ = trim_exports.trim(module)
    before = [(sid, payload) for sid, payload in trim_exports.sections(module) if sid != trim_exports.EXPORT_SECTION]
    after = [(sid, payload) for sid, payload in trim_exports.sections(trimmed) if sid != trim_exports.EXPORT_SECTION]
    assert before == after


def test_a_module_missing_a_required_callback_is_refused(tmp_path, module):
    # Keep everything but proxy_on_delete: the tool must refuse it rather than ship a leak.
    out = bytearray(module[:8])
    for sid, payload in trim_exports.sections(module):
        if sid == trim_exports.EXPORT_SECTION:
            exports = [e for e in trim_exports.parse_exports(payload) if e[0] != "proxy_on_delete"]
            payload = trim_exports.encode_exports(exports)
        out += bytes([sid]) + trim_exports.write_leb(len(payload)) + payload
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(bytes(out))
    sys_argv = sys.argv
    try:
        sys.argv = ["trim_exports.py", str(broken)]
        assert trim_exports.main() == 1
    finally:
        sys.argv = sys_argv
