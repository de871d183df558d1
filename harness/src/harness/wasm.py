"""The filter module: where it is, building it as `make build` does, and trimming a module's
exports with tools/trim_exports.py (run as a script: it is standard-library Python that
`make build` runs with the system python before any venv exists)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .paths import REPO_ROOT, TOOLS, WASM_RELATIVE

TRIM_EXPORTS = TOOLS / "trim_exports.py"


def find_wasm() -> Path:
    """`MCP_OAUTH_WASM`, else the release build under the repo's `target/` (may not exist yet)."""
    override = os.environ.get("MCP_OAUTH_WASM")
    return Path(override) if override else REPO_ROOT / WASM_RELATIVE


def trim_exports(module: Path, out: Path | None = None) -> None:
    """tools/trim_exports.py on `module` (in place, or into `out`): keep only the proxy-wasm
    callbacks the filter implements (see README, design notes)."""
    command = [sys.executable, str(TRIM_EXPORTS), str(module)] + (["--out", str(out)] if out else [])
    subprocess.run(command, check=True)


def build_wasm() -> Path:
    """What `make build` does: `cargo build --release --target wasm32-wasip1` in the repo, then
    tools/trim_exports.py on the module; returns the .wasm path."""
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1"], cwd=REPO_ROOT, check=True)
    trim_exports(REPO_ROOT / WASM_RELATIVE)
    return REPO_ROOT / WASM_RELATIVE
