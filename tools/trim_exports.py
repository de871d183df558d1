#!/usr/bin/env python3
"""Keeps only the proxy-wasm callbacks the filter implements in a built module's exports.

The Rust SDK exports every callback of the ABI, and the host calls each exported one for
every request: response headers, response body, trailers, on_log, on_done, ... A filter
that ignores them still pays a VM entry for each (measured: ~3 µs of Envoy CPU per request,
about 5%). proxy-wasm hosts skip a callback the module does not export (proxy-wasm-cpp-host
checks each one before calling it), so removing the export is the whole change: the
functions stay in the code, nothing else in the module moves.

    python3 tools/trim_exports.py MODULE.wasm [--out OUT.wasm] [--check]

Rewrites MODULE.wasm in place (or writes OUT.wasm). Idempotent. --check only verifies that
the module exports exactly KEEP (exit 1 otherwise). Standard library only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# What the filter needs from the ABI; everything else the SDK exports is dropped. Keep in
# step with src/glue/mod.rs: a callback the filter implements must be listed here.
KEEP = {
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",  # trailers end a held body: the SDK's default would release it
    "proxy_on_response_headers",  # tools/list results are rewritten (README, "Tool lists filtered per caller")
    "proxy_on_response_body",
    "proxy_on_response_trailers",  # they end a buffered list: without it the host would release it unread
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_delete",  # the SDK frees the context here: without it every request leaks
}
REQUIRED = KEEP - {"_initialize"}

EXPORT_SECTION = 7


def read_leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def write_leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(module: bytes):
    """(id, payload) for each section after the 8-byte header."""
    if module[:4] != b"\0asm" or module[4:8] != b"\x01\0\0\0":
        raise ValueError("not a wasm module (version 1)")
    pos = 8
    while pos < len(module):
        sid = module[pos]
        size, start = read_leb(module, pos + 1)
        if start + size > len(module):
            raise ValueError("truncated section")
        yield sid, module[start : start + size]
        pos = start + size


def parse_exports(payload: bytes) -> list[tuple[str, int, int]]:
    count, pos = read_leb(payload, 0)
    out = []
    for _ in range(count):
        length, pos = read_leb(payload, pos)
        name = payload[pos : pos + length].decode("utf-8")
        pos += length
        kind = payload[pos]
        index, pos = read_leb(payload, pos + 1)
        out.append((name, kind, index))
    return out


def encode_exports(exports: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(write_leb(len(exports)))
    for name, kind, index in exports:
        raw = name.encode("utf-8")
        out += write_leb(len(raw)) + raw + bytes([kind]) + write_leb(index)
    return bytes(out)


def exports_of(module: bytes) -> list[str]:
    for sid, payload in sections(module):
        if sid == EXPORT_SECTION:
            return [name for name, _, _ in parse_exports(payload)]
    return []


def trim(module: bytes) -> tuple[bytes, list[str]]:
    """The module with only KEEP exported, and the names dropped."""
    out = bytearray(module[:8])
    dropped: list[str] = []
    for sid, payload in sections(module):
        if sid == EXPORT_SECTION:
            exports = parse_exports(payload)
            kept = [e for e in exports if e[0] in KEEP]
            dropped = [e[0] for e in exports if e[0] not in KEEP]
            payload = encode_exports(kept)
        out += bytes([sid]) + write_leb(len(payload)) + payload
    return bytes(out), dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--check", action="store_true", help="only verify the exports")
    args = ap.parse_args()
    module = args.module.read_bytes()
    present = set(exports_of(module))
    missing = sorted(REQUIRED - present)
    if missing:
        print(f"trim_exports: {args.module} lacks required exports: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.check:
        extra = sorted(present - KEEP)
        if extra:
            print(f"trim_exports: {args.module} still exports: {', '.join(extra)}", file=sys.stderr)
            return 1
        return 0
    trimmed, dropped = trim(module)
    out = args.out or args.module
    if trimmed != module or out != args.module:
        out.write_bytes(trimmed)
    if dropped:
        print(f"trim_exports: {out}: dropped {len(dropped)} unused callback exports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
