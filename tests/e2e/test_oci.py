"""`make oci` (oci/build.py): the module as an OCI image layout Istio and Envoy Gateway pull.

1. The layout itself: `oci-layout`, `index.json`, every blob under `blobs/sha256/` named by the
   sha256 of its bytes and described with its exact size; media types of the "compat" image
   (one tar.gz layer holding `plugin.wasm`) and of the Wasm OCI artifact (config + two layers,
   as Istio's fetcher requires); the module inside byte-identical to the built .wasm; and the
   build reproducible (same .wasm, same digests).
2. A round trip through a real registry: Debian's `docker-registry` on 127.0.0.1 (temp config
   and storage, started and stopped here), `skopeo copy --preserve-digests` of both images to
   it and back into another layout: same manifest digests, byte-identical blobs. skopeo and
   docker-registry come from `make oci-deps` (part of `make deps`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import free_port, processes
from harness.paths import REPO_ROOT

BUILD = REPO_ROOT / "oci" / "build.py"
TAG = "0.1.0-test"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
DIGEST_LINE = re.compile(r"^(\S+) sha256:([a-f0-9]{64})$", re.M)


def build(wasm: Path, out: Path) -> dict[str, str]:
    """Run oci/build.py; return {ref: manifest hex digest} from its output."""
    result = subprocess.run(
        [sys.executable, str(BUILD), "--wasm", str(wasm), "--out", str(out), "--tag", TAG],
        capture_output=True, text=True, check=True,
    )
    return dict(DIGEST_LINE.findall(result.stdout))


def read_blob(layout: Path, descriptor: dict) -> bytes:
    algo, hexdigest = descriptor["digest"].split(":", 1)
    assert algo == "sha256"
    data = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {hexdigest}: content does not match its digest"
    assert len(data) == descriptor["size"], f"blob {hexdigest}: size {len(data)} != descriptor size {descriptor['size']}"
    return data


def manifests_by_ref(layout: Path) -> dict[str, tuple[dict, dict]]:
    """{ref name: (index descriptor, parsed manifest)}."""
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    out = {}
    for desc in index["manifests"]:
        assert desc["mediaType"] == MANIFEST
        out[desc["annotations"][REF_NAME]] = (desc, json.loads(read_blob(layout, desc)))
    return out


def plugin_wasm_from_tar_gz(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"], [m.name for m in members]
        assert members[0].isfile()
        return tar.extractfile(members[0]).read()


@pytest.fixture(scope="module")
def layout(wasm_path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("oci") / "layout"
    return out, build(wasm_path, out)


# ------------------------------------------------------------------------------- the layout


def test_layout_has_oci_layout_index_and_only_referenced_blobs(layout):
    root, digests = layout
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index.get("mediaType", INDEX) == INDEX
    refs = manifests_by_ref(root)
    assert set(refs) == {TAG, f"{TAG}-wasm"}
    # What the script prints is what the index holds.
    assert {ref: desc["digest"] for ref, (desc, _) in refs.items()} == {r: f"sha256:{d}" for r, d in digests.items()}
    referenced = set()
    for desc, manifest in refs.values():
        referenced.add(desc["digest"])
        for d in [manifest["config"], *manifest["layers"]]:
            read_blob(root, d)  # digest and size match
            referenced.add(d["digest"])
    on_disk = {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}
    assert on_disk == referenced, f"unreferenced or missing blobs: {on_disk ^ referenced}"


def test_compat_image_is_one_tar_gz_layer_with_the_built_plugin_wasm(layout, wasm_path):
    root, _ = layout
    _, manifest = manifests_by_ref(root)[TAG]
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MANIFEST
    assert manifest["config"]["mediaType"] == IMAGE_CONFIG
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == OCI_LAYER
    layer_bytes = read_blob(root, layer)
    wasm = plugin_wasm_from_tar_gz(layer_bytes)
    assert wasm == wasm_path.read_bytes(), "plugin.wasm in the layer differs from the built .wasm"
    config = json.loads(read_blob(root, manifest["config"]))
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer_bytes)).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}


def test_wasm_artifact_has_the_wasm_config_and_the_raw_module_layer(layout, wasm_path):
    root, _ = layout
    _, manifest = manifests_by_ref(root)[f"{TAG}-wasm"]
    assert manifest["mediaType"] == MANIFEST
    assert manifest["config"]["mediaType"] == WASM_CONFIG
    runtime = json.loads(read_blob(root, manifest["config"]))
    assert runtime["type"] == "envoy_proxy"
    # Istio's extractOCIArtifactImage requires exactly two layers, one of them the module.
    assert [l["mediaType"] for l in manifest["layers"]] == [WASM_CONFIG, WASM_LAYER]
    module = read_blob(root, manifest["layers"][1])
    assert module == wasm_path.read_bytes(), "the wasm layer differs from the built .wasm"
    assert module[:4] == b"\0asm"


def test_build_is_reproducible(layout, wasm_path, tmp_path):
    root, digests = layout
    again = build(wasm_path, tmp_path / "again")
    assert again == digests
    for blob in (root / "blobs" / "sha256").iterdir():
        assert (tmp_path / "again" / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()


def test_make_oci_target_prints_the_pinned_digest():
    """`make oci` runs the same script into target/oci and prints `<tag> sha256:<hex>` lines."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^oci:", makefile, re.M) and "oci/build.py" in makefile
    assert re.search(r"^oci-deps:", makefile, re.M)


# ---------------------------------------------------------------- through a real registry


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on 127.0.0.1:<free port>, storage in a temp dir."""
    binary = shutil.which("docker-registry")
    if binary is None or shutil.which("skopeo") is None:
        pytest.skip("skopeo and docker-registry are not installed (make oci-deps installs both)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = processes.spawn([binary, "serve", str(config)], log=tmp_path / "registry.log")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {(tmp_path / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        processes.stop(process)


def skopeo(*args: str) -> None:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"skopeo {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def registry_digest(registry: str, repo: str, ref: str) -> str:
    request = urllib.request.Request(
        f"http://{registry}/v2/{repo}/manifests/{ref}", method="HEAD", headers={"Accept": MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.headers["Docker-Content-Digest"]


@pytest.mark.parametrize("ref", [TAG, f"{TAG}-wasm"], ids=["compat", "wasm-artifact"])
def test_push_to_a_registry_and_pull_back_byte_identical(layout, registry, ref, tmp_path):
    root, digests = layout
    repo = "mcp/mcp-oauth-filter"
    skopeo("copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{root}:{ref}", f"docker://{registry}/{repo}:{ref}")
    # The registry serves the manifest under the digest `make oci` printed: what sha256 pins.
    assert registry_digest(registry, repo, ref) == f"sha256:{digests[ref]}"

    back = tmp_path / "pulled"
    skopeo("copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{registry}/{repo}:{ref}", f"oci:{back}:{ref}")
    desc, manifest = manifests_by_ref(root)[ref]
    back_desc, back_manifest = manifests_by_ref(back)[ref]
    assert back_desc["digest"] == desc["digest"]
    assert read_blob(back, back_desc) == read_blob(root, desc)
    for original, pulled in zip([manifest["config"], *manifest["layers"]], [back_manifest["config"], *back_manifest["layers"]]):
        assert read_blob(back, pulled) == read_blob(root, original)
