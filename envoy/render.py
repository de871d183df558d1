#!/usr/bin/env python3
"""Print an Envoy bootstrap from this folder with the .wasm path (and optionally the plugin
configuration) replaced, for `make validate`.

    render.py envoy/envoy.yaml --wasm target/.../mcp_oauth_filter.wasm [--plugin-config FILE.json]

With --plugin-config, every wasm filter's `configuration` becomes that file's JSON, so the
examples are checked by the real filter (Envoy's validate mode runs its on_configure).
"""
import argparse
import json
import pathlib
import sys

import yaml

from harness.envoy import wasm_configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bootstrap", type=pathlib.Path)
    parser.add_argument("--wasm", type=pathlib.Path, required=True)
    parser.add_argument("--plugin-config", type=pathlib.Path)
    args = parser.parse_args()

    bootstrap = yaml.safe_load(args.bootstrap.read_text())
    plugin = json.loads(args.plugin_config.read_text()) if args.plugin_config else None
    found = 0
    for config in wasm_configs(bootstrap):
        found += 1
        config["vm_config"]["code"]["local"]["filename"] = str(args.wasm.resolve())
        if plugin is not None:
            config["configuration"]["value"] = json.dumps(plugin, indent=2)
    if not found:
        print(f"{args.bootstrap}: no envoy.filters.http.wasm filter", file=sys.stderr)
        return 1
    yaml.safe_dump(bootstrap, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
