#!/usr/bin/env python3
"""Package the filter's .wasm as an OCI image layout that Istio (WasmPlugin / TrafficExtension)
and Envoy Gateway (EnvoyExtensionPolicy, code.type Image) can pull, without Docker.

    oci/build.py --wasm target/wasm32-wasip1/release/mcp_oauth_filter.wasm --out target/oci [--tag 0.1.0]

Writes an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):

    target/oci/oci-layout
    target/oci/index.json          two manifests, by reference name:
                                     <tag>        the "compat" image (what to push and pin)
                                     <tag>-wasm   the Wasm OCI artifact variant
    target/oci/blobs/sha256/<hex>  manifests, configs, layers

The two variants are the two formats Istio's (and Envoy Gateway's, which reuses Istio's code)
image fetcher understands (https://github.com/solo-io/wasm/tree/master/spec):

- compat: one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`, a
  standard `application/vnd.oci.image.config.v1+json` config (os wasip1, architecture wasm),
  annotation `module.wasm.image/variant: compat`. Any registry and any OCI tool handles it.
- wasm artifact: config `application/vnd.module.wasm.config.v1+json`, and two layers, the
  runtime config (`application/vnd.module.wasm.config.v1+json`) and the raw module
  (`application/vnd.module.wasm.content.layer.v1+wasm`). Istio's fetcher insists on exactly
  those two layers.

Everything is reproducible: the same .wasm gives the same bytes and the same digests (tar
entries with mtime 0, uid/gid 0, gzip without a timestamp, JSON with sorted keys), so the
digest printed here is what a registry serves after `skopeo copy --preserve-digests`.

The last lines printed are `<ref> sha256:<hex>` for each manifest; the hex (without `sha256:`)
is what `sha256:` in a WasmPlugin / TrafficExtension, or `image.sha256` in an
EnvoyExtensionPolicy, pins. Standard library only.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

OCI_LAYOUT_VERSION = "1.0.0"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
PLUGIN_FILE = "plugin.wasm"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
SOURCE = "https://github.com/example/mcp-oauth-filter"


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.manifests: list[dict] = []

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.blobs.mkdir(parents=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))

    def blob(self, data: bytes, media_type: str, annotations: dict | None = None) -> dict:
        """Store `data`; return its descriptor."""
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc

    def manifest(self, ref: str, config: dict, layers: list[dict], annotations: dict) -> dict:
        body = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": config,
                "layers": layers,
                "annotations": annotations,
            }
        )
        desc = self.blob(body, MANIFEST)
        self.manifests.append({**desc, "annotations": {REF_NAME: ref}})
        return desc

    def finish(self) -> None:
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": self.manifests}
        (self.root / "index.json").write_bytes(canonical_json(index))


def plugin_tar(wasm: bytes) -> bytes:
    """An uncompressed tar with one regular file, plugin.wasm, normalized metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm_path: Path, out: Path, tag: str, version: str) -> dict[str, str]:
    """Write the layout; return {ref: manifest digest}."""
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{wasm_path}: not a WebAssembly module (no \\0asm magic)")
    wasm_digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
    common = {
        "org.opencontainers.image.title": "mcp-oauth-filter",
        "org.opencontainers.image.description": "proxy-wasm filter: MCP servers as OAuth 2.1 resource servers",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.source": SOURCE,
        "io.mcp-oauth-filter.wasm.digest": wasm_digest,
    }

    layout = Layout(out)
    layout.create()

    # compat: a single tar.gz layer with plugin.wasm, standard media types.
    tar = plugin_tar(wasm)
    layer = layout.blob(gzip_bytes(tar), TAR_GZIP_LAYER)
    config = layout.blob(
        canonical_json(
            {
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
            }
        ),
        IMAGE_CONFIG,
    )
    compat = layout.manifest(tag, config, [layer], {**common, VARIANT_ANNOTATION: "compat"})

    # Wasm OCI artifact: runtime config + raw module, custom media types.
    # (solo-io/wasm spec; Istio does not read it). The module exports the proxy-wasm ABI 0.2.1.
    runtime_config = canonical_json({"type": "envoy_proxy", "abiVersions": ["v0.2.1"], "config": {}})
    artifact_config = layout.blob(runtime_config, WASM_CONFIG)
    artifact_layers = [
        layout.blob(runtime_config, WASM_CONFIG, {TITLE: "runtime-config.json"}),
        layout.blob(wasm, WASM_LAYER, {TITLE: PLUGIN_FILE}),
    ]
    artifact = layout.manifest(f"{tag}-wasm", artifact_config, artifact_layers, common)

    layout.finish()
    return {tag: compat["digest"], f"{tag}-wasm": artifact["digest"]}


def cargo_version(repo: Path) -> str:
    try:
        for line in (repo / "Cargo.toml").read_text().splitlines():
            if line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "0.0.0"


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", type=Path, default=repo / "target/wasm32-wasip1/release/mcp_oauth_filter.wasm")
    parser.add_argument("--out", type=Path, default=repo / "target/oci")
    parser.add_argument("--tag", help="reference name of the compat image (default: the crate version)")
    args = parser.parse_args()
    if not args.wasm.is_file():
        print(f"no {args.wasm} (make build first)", file=sys.stderr)
        return 1
    version = cargo_version(repo)
    tag = args.tag or version
    digests = build(args.wasm, args.out, tag, version)
    out = os.path.relpath(args.out)
    print(f"OCI image layout: {out}")
    print(f"  push:  skopeo copy --preserve-digests oci:{out}:{tag} docker://REGISTRY/REPO:{tag}")
    print(f"  pin:   sha256: {digests[tag].split(':', 1)[1]}   (WasmPlugin / TrafficExtension sha256, EnvoyExtensionPolicy image.sha256)")
    for ref, digest in digests.items():
        print(f"{ref} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
