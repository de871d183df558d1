"""Where the harness finds the repository it is checked out in: the fixtures, the peers, the
built filter. The package is installed editable (`-e ./harness`), so its source stays here."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
if not (REPO_ROOT / "Cargo.toml").is_file():
    raise ImportError(f"harness is not inside the mcp-oauth-filter repository ({REPO_ROOT}): "
                      "install it editable, `pip install -e ./harness` from the repository root")

FIXTURES = REPO_ROOT / "tests" / "fixtures"
PEERS = REPO_ROOT / "peers"
TOOLS = REPO_ROOT / "tools"
WASM_RELATIVE = Path("target/wasm32-wasip1/release/mcp_oauth_filter.wasm")
