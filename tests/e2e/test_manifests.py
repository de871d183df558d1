"""The deployment examples say what the README says they say, and their plugin configurations
really load: every YAML under examples/ parses; the Istio WasmPlugin / TrafficExtension and the
Envoy Gateway EnvoyExtensionPolicy carry phase AUTHN, fail-closed, a sha256 pin and a plugin
configuration that a real Envoy with the built .wasm accepts and enforces; the ServiceEntry and
DestinationRule create the cluster the issuers name, with TLS; and every Envoy bootstrap in
envoy/ passes `envoy --mode validate`.

Each plugin configuration is run as it is: its issuers' `cluster` (e.g.
`outbound|443||auth.example.com`) becomes a STATIC cluster to a local key server serving the
fixture keys at the `jwks_uri` path (plain HTTP: in the mesh the DestinationRule adds TLS).
The Istio EnvoyFilter + ECDS variant's Wasm config is delivered to a real Envoy by ECDS and
enforces its per-tool scopes.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from expect import forwarded_with_body, insufficient_scope, nothing_upstream
from harness import Client, Envoy, tokens, validate_config
from harness.keyserver import KeyServer
from harness.paths import REPO_ROOT
from scenario import MCP_METADATA_URL, body_of, chunks_of, mcp_token, post, raw_post, read_resource, tool_call

EXAMPLES = REPO_ROOT / "examples"
ISTIO = EXAMPLES / "istio"
ENVOY_GATEWAY = EXAMPLES / "envoy-gateway"
AUTH_HOST = "auth.example.com"
AUTH_CLUSTER = "outbound|443||auth.example.com"
SHA256_HEX = re.compile(r"^[a-f0-9]{64}$")
RESOURCE = "https://mcp.example.com/mcp"


def yaml_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents(root: Path = EXAMPLES) -> list[tuple[Path, dict]]:
    return [(p, d) for p in yaml_files() if root in p.parents for d in documents(p)]


def of_kind(kind: str, root: Path = EXAMPLES) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in all_documents(root) if d.get("kind") == kind]


def wasm_plugins():
    return of_kind("WasmPlugin", ISTIO)


def traffic_extensions():
    return of_kind("TrafficExtension", ISTIO)


def extension_policies():
    return of_kind("EnvoyExtensionPolicy", ENVOY_GATEWAY)


def plugin_configs() -> list[tuple[str, dict]]:
    """(label, plugin configuration) of every example that carries one."""
    out = []
    for path, doc in wasm_plugins():
        out.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]["pluginConfig"]))
    for path, doc in traffic_extensions():
        out.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]["wasm"]["pluginConfig"]))
    for path, doc in extension_policies():
        for i, wasm in enumerate(doc["spec"]["wasm"]):
            out.append((f"{path.name}:{doc['metadata']['name']}:wasm[{i}]", wasm["config"]))
    return out


# --------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_example_yaml_parses_into_named_kubernetes_objects(path):
    docs = documents(path)
    assert docs, f"{path}: no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: document without apiVersion/kind"
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without metadata.name"
        assert isinstance(doc.get("spec"), dict), f"{path}: {doc['kind']} without spec"


def test_the_examples_cover_istio_and_envoy_gateway():
    plugins = wasm_plugins()
    assert any("selector" in d["spec"] for _, d in plugins), "no WasmPlugin with selector.matchLabels"
    assert any("targetRefs" in d["spec"] for _, d in plugins), "no WasmPlugin with targetRefs"
    assert traffic_extensions(), "no TrafficExtension"
    assert of_kind("ServiceEntry", ISTIO) and of_kind("DestinationRule", ISTIO)
    assert extension_policies(), "no EnvoyExtensionPolicy"
    assert (ISTIO / "wasmplugin.yaml").exists()


@pytest.mark.parametrize("label,config", plugin_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_hosts_that_cannot_hold_headers_for_a_body_say_so(label, config):
    """WasmPlugin, TrafficExtension and EnvoyExtensionPolicy cannot set Envoy's
    `allow_on_headers_stop_iteration`: their configurations let headers go first, or a
    tool-scoped request would wait `body_wait_ms` for a body Envoy never hands over (503)."""
    assert config.get("hold_headers_for_body") is False, f"{label}: hold_headers_for_body is not false"


# ------------------------------------------------------------------------------------ Istio


def _check_pin(where: str, url: str, sha256) -> None:
    assert url.startswith("oci://"), f"{where}: url {url!r} is not an oci:// image"
    assert isinstance(sha256, str) and SHA256_HEX.match(sha256), (
        f"{where}: sha256 {sha256!r} is not 64 lowercase hex digits (the manifest digest `make oci` prints)"
    )


def _check_targeting(where: str, spec: dict) -> None:
    has_selector, has_refs = "selector" in spec, "targetRefs" in spec
    assert has_selector != has_refs, f"{where}: exactly one of selector and targetRefs"
    if has_selector:
        assert spec["selector"].get("matchLabels"), f"{where}: selector without matchLabels"
    else:
        for ref in spec["targetRefs"]:
            assert ref.get("kind") and ref.get("name"), f"{where}: targetRef {ref}"
    ports = [p.get("number") for m in spec.get("match", []) for p in m.get("ports", [])]
    assert ports and all(isinstance(n, int) for n in ports), f"{where}: no match on a port"


@pytest.mark.parametrize("path,doc", wasm_plugins(), ids=lambda v: getattr(v, "name", None) or v["metadata"]["name"])
def test_wasmplugin_is_authn_fail_closed_pinned_and_targeted(path, doc):
    spec = doc["spec"]
    where = f"{path.name}:{doc['metadata']['name']}"
    assert doc["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert spec["phase"] == "AUTHN", where
    assert spec["failStrategy"] == "FAIL_CLOSE", where
    _check_pin(where, spec["url"], spec.get("sha256"))
    _check_targeting(where, spec)
    assert isinstance(spec["pluginConfig"], dict)


@pytest.mark.parametrize("path,doc", traffic_extensions(), ids=lambda v: getattr(v, "name", None) or v["metadata"]["name"])
def test_trafficextension_is_authn_fail_closed_pinned_and_targeted(path, doc):
    spec = doc["spec"]
    where = f"{path.name}:{doc['metadata']['name']}"
    assert doc["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert spec["phase"] == "AUTHN", where
    assert "lua" not in spec
    wasm = spec["wasm"]
    assert wasm["failStrategy"] == "FAIL_CLOSE", where
    _check_pin(where, wasm["url"], wasm.get("sha256"))
    _check_targeting(where, spec)
    assert isinstance(wasm["pluginConfig"], dict)


def istio_clusters() -> set[str]:
    """`outbound|<port>||<host>` for every ServiceEntry port; asserts each has TLS (SIMPLE, SNI)."""
    rules = {d["spec"]["host"]: d["spec"] for _, d in of_kind("DestinationRule", ISTIO)}
    clusters = set()
    for _, entry in of_kind("ServiceEntry", ISTIO):
        for host in entry["spec"]["hosts"]:
            for port in entry["spec"]["ports"]:
                clusters.add(f"outbound|{port['number']}||{host}")
                rule = rules.get(host)
                assert rule, f"no DestinationRule for {host}"
                tls = [
                    s["tls"] for s in rule["trafficPolicy"].get("portLevelSettings", [])
                    if s["port"]["number"] == port["number"]
                ] or [rule["trafficPolicy"].get("tls")]
                assert tls[0] and tls[0]["mode"] == "SIMPLE" and tls[0]["sni"] == host, (host, port, tls)
    return clusters


def test_serviceentry_and_destinationrule_make_the_issuer_cluster_with_tls():
    clusters = istio_clusters()
    assert AUTH_CLUSTER in clusters
    named = {
        issuer["cluster"]
        for _, config in plugin_configs()
        for issuer in config["issuers"]
        if "cluster" in issuer
    }
    assert AUTH_CLUSTER in named
    assert named <= clusters, f"issuer clusters {named - clusters} are not created by any ServiceEntry"


def test_istio_plugin_configs_fetch_keys_through_the_mesh_cluster():
    for label, config in plugin_configs():
        if label.startswith("extensionpolicy"):
            continue
        assert [r["resource"] for r in config["resources"]] == [RESOURCE], label
        for issuer in config["issuers"]:
            assert issuer["cluster"] == AUTH_CLUSTER, label
            introspection = issuer.get("introspection")
            url = issuer.get("jwks_uri") or (introspection or {}).get("endpoint")
            assert url and urlsplit(url).hostname == AUTH_HOST, label


def test_introspecting_examples_take_the_secret_from_the_proxy_environment():
    """README, Opaque tokens: the secret is never in a manifest; Istio hands the VM the
    sidecar's variable (`vmConfig.env` `valueFrom: HOST`), which a Kubernetes Secret fills."""
    found = 0
    for path, doc in wasm_plugins():
        for issuer in doc["spec"]["pluginConfig"]["issuers"]:
            introspection = issuer.get("introspection")
            if not introspection:
                continue
            found += 1
            assert "client_secret" not in introspection, path.name
            name = introspection["client_secret_env"]
            assert {"name": name, "valueFrom": "HOST"} in doc["spec"]["vmConfig"]["env"], path.name
            proxies = [c for _, d in all_documents(ISTIO) if d["kind"] == "Deployment"
                       for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy"]
            assert any(e["name"] == name and "secretKeyRef" in e["valueFrom"] for c in proxies for e in c["env"]), path.name
    assert found, "no example introspects"


# ---------------------------------------------------------------------------- Envoy Gateway


@pytest.mark.parametrize("path,doc", extension_policies(), ids=lambda v: getattr(v, "name", None) or v["metadata"]["name"])
def test_envoyextensionpolicy_is_fail_closed_pinned_and_targets_an_httproute(path, doc):
    spec = doc["spec"]
    assert doc["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    refs = spec["targetRefs"]
    assert any(r["kind"] == "HTTPRoute" and r["group"] == "gateway.networking.k8s.io" for r in refs)
    routes = {d["metadata"]["name"] for _, d in of_kind("HTTPRoute", ENVOY_GATEWAY)}
    assert {r["name"] for r in refs if r["kind"] == "HTTPRoute"} <= routes, "targetRefs name an HTTPRoute not in the example"
    assert spec["wasm"]
    for wasm in spec["wasm"]:
        assert wasm["failOpen"] is False
        code = wasm["code"]
        assert code["type"] in ("Image", "HTTP")
        source = code["image"] if code["type"] == "Image" else code["http"]
        assert source["url"]
        assert SHA256_HEX.match(str(source.get("sha256"))), source
        assert isinstance(wasm["config"], dict)


# ---------------------------------------------------- the plugin configurations, in Envoy


def _keyserver_clusters(config: dict, keys: KeyServer) -> list[dict]:
    """A STATIC cluster to `keys` for every issuer `cluster`; the key server answers each
    `jwks_uri` path with the fixture keys, and each introspection endpoint with an active
    answer for the first resource (a stand-in for the authorization server)."""
    clusters = {}
    resource = config["resources"][0]
    for issuer in config["issuers"]:
        if "cluster" not in issuer:
            continue
        if "jwks_uri" in issuer:
            path = urlsplit(issuer["jwks_uri"]).path
            keys.serve_jwks(path, ["rsa-a", "rsa-b", "ec-p256"], cache_control="max-age=300")
        if "introspection" in issuer:
            active = {"active": True, "iss": issuer["issuer"], "aud": resource["resource"], "sub": "user-1",
                      "scope": " ".join(resource.get("required_scopes", [])), "exp": int(time.time()) + 600}
            keys.serve_json(urlsplit(issuer["introspection"]["endpoint"]).path, active)
        clusters[issuer["cluster"]] = keys.cluster(issuer["cluster"])
    return list(clusters.values())


def _secret_env(config: dict) -> dict:
    """What the proxy's environment must hold for `config`: a made-up secret for every
    `client_secret_env` (Envoy options: its own environment, handed to the VM)."""
    names = [i["introspection"]["client_secret_env"] for i in config["issuers"]
             if "client_secret_env" in i.get("introspection", {})]
    if not names:
        return {}
    return {"process_env": {name: "example-secret" for name in names}, "vm_host_env": names}


@pytest.mark.parametrize("label,config", plugin_configs(), ids=[label for label, _ in plugin_configs()])
def test_example_plugin_config_passes_envoy_validate(label, config, wasm_path, upstream):
    with KeyServer() as keys:
        result = validate_config(
            json.dumps(config), upstream.port, wasm_path=wasm_path, extra_clusters=_keyserver_clusters(config, keys),
            **_secret_env(config),
        )
    assert result.returncode == 0, f"{label}: envoy --mode validate failed:\n{result.stdout[-3000:]}"


@pytest.mark.parametrize("label,config", plugin_configs(), ids=[label for label, _ in plugin_configs()])
def test_example_plugin_config_runs_in_envoy(label, config, wasm_path, upstream):
    """The configuration as Istio / Envoy Gateway hands it over (JSON text): Envoy starts, serves
    the metadata, challenges a token-less request, and forwards a good token."""
    with KeyServer() as keys:
        envoy = Envoy(
            json.dumps(config), upstream.port, wasm_path=wasm_path, extra_clusters=_keyserver_clusters(config, keys),
            **_secret_env(config),
        )
        with envoy:
            client = Client(envoy.port, upstream)
            client.envoy = envoy
            resource = config["resources"][0]
            path = urlsplit(resource["resource"]).path
            meta = client.get("/.well-known/oauth-protected-resource" + path)
            assert meta.status == 200, envoy.log_tail()
            assert json.loads(meta.body)["resource"] == resource["resource"]
            assert json.loads(meta.body)["authorization_servers"] == resource["authorization_servers"]

            challenge = client.get(path)
            assert challenge.status == 401
            assert "resource_metadata=" in (challenge.header("www-authenticate") or "")

            if all("introspection" in i and "jwks" not in i and "jwks_uri" not in i for i in config["issuers"]):
                # Opaque tokens: the stand-in authorization server says this one is active.
                allowed = client.get(path, token="2YotnFZFEjr1zCsicMWpAA")
                assert allowed.status == 200, (label, allowed.status, allowed.body, envoy.log_tail())
                return
            claims = tokens.claims(
                resource["authorization_servers"][0], resource["resource"],
                scope=" ".join(resource.get("required_scopes", [])) or None,
            )
            good = tokens.mint(claims, key="rsa-a")
            allowed = client.get(path, token=good)
            assert allowed.status == 200, (label, allowed.status, allowed.body, envoy.log_tail())
            wrong_audience = client.get(path, token=tokens.mint({**claims, "aud": "https://other.example"}, key="rsa-a"))
            assert wrong_audience.status == 401


# -------------------------------------- examples/istio/envoyfilter-ecds.yaml: its Wasm config over ECDS


def _ecds_example():
    documents = [doc for doc in yaml.safe_load_all((ISTIO / "envoyfilter-ecds.yaml").read_text()) if doc]
    envoy_filter = next(doc for doc in documents if doc["kind"] == "EnvoyFilter")
    patches = envoy_filter["spec"]["configPatches"]
    extension = next(p for p in patches if p["applyTo"] == "EXTENSION_CONFIG")["patch"]["value"]
    http_filter = next(p for p in patches if p["applyTo"] == "HTTP_FILTER")["patch"]["value"]
    return extension, http_filter


def test_istio_ecds_example_is_consistent():
    extension, http_filter = _ecds_example()
    wasm_type = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    assert extension["typed_config"]["@type"] == wasm_type
    config = extension["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["fail_open"] is False
    assert config["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert config["vm_config"]["code"]["remote"]["http_uri"]["uri"]
    assert config["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    plugin = json.loads(config["configuration"]["value"])
    assert plugin["resources"][0]["tool_scopes"]
    # The HTTP filter discovers exactly that extension config.
    assert http_filter["name"] == extension["name"]
    discovery = http_filter["config_discovery"]
    assert discovery["type_urls"] == [wasm_type]
    assert "ads" in discovery["config_source"]


def test_istio_ecds_example_wasm_config_runs_in_envoy_through_ecds(upstream, wasm_path):
    """The example's Wasm config, delivered to a real Envoy by ECDS (from a file here instead
    of istiod's ADS, and with the local .wasm instead of the remote module the Istio agent
    would download), with the example's HTTP filter (`config_discovery`) in the chain."""
    extension, http_filter = _ecds_example()
    typed_config = copy.deepcopy(extension["typed_config"])
    typed_config["config"]["vm_config"]["code"] = {"local": {"filename": str(wasm_path)}}
    plugin = json.loads(typed_config["config"]["configuration"]["value"])
    cluster_name = plugin["issuers"][0]["cluster"]
    jwks_path = "/" + plugin["issuers"][0]["jwks_uri"].split("/", 3)[3]
    with KeyServer() as keys:
        keys.serve_jwks(jwks_path, ["rsa-a"])
        envoy = Envoy("{}", upstream.port, wasm_path=wasm_path, extra_clusters=[keys.cluster(cluster_name)])
        ecds_path = envoy.workdir / "ecds.yaml"
        ecds_path.write_text(yaml.safe_dump({"resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": extension["name"],
            "typed_config": typed_config,
        }]}))
        discovered = copy.deepcopy(http_filter)
        discovered["config_discovery"]["config_source"] = {
            "path_config_source": {"path": str(ecds_path)},
            "resource_api_version": "V3",
            "initial_fetch_timeout": "0s",
        }
        hcm = envoy.http_connection_manager()
        assert hcm["http_filters"][0]["name"] == "envoy.filters.http.wasm"
        hcm["http_filters"][0] = discovered
        envoy.bootstrap["node"] = {"id": "mcp-server-sidecar", "cluster": "mcp"}  # xDS needs a node
        envoy.start()
        try:
            client = Client(envoy.port, upstream, timeout=8.0)
            client.envoy = envoy
            reply = post(client, tool_call("delete_all"), token=None)
            assert reply.status == 401, reply.describe()
            assert reply.challenge().get("resource_metadata") == MCP_METADATA_URL
            read, admin = mcp_token("mcp:read"), mcp_token("mcp:admin")
            reply = post(client, tool_call("delete_all"), token=read)
            insufficient_scope(reply, "mcp:read mcp:admin")
            nothing_upstream(client, reply)
            # Chunked and slow: held headers still get the body (allow_on_headers_stop_iteration).
            body = body_of(tool_call("write_file")).encode()
            reply = raw_post(client, token=read, chunks=chunks_of(body, 10))
            insufficient_scope(reply, "mcp:read mcp:write")
            nothing_upstream(client, reply)
            body = body_of(tool_call("delete_all"))
            forwarded_with_body(post(client, body, token=admin), body)
            reply = post(client, read_resource(), token=admin)
            insufficient_scope(reply, "mcp:read files:read")
            nothing_upstream(client, reply)
        finally:
            envoy.stop()


# ----------------------------------------------------------------- Envoy bootstraps in envoy/


@pytest.mark.parametrize("bootstrap", sorted((REPO_ROOT / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_every_envoy_config_in_the_repo_passes_validate(bootstrap, wasm_path):
    rendered = subprocess.run(
        [sys.executable, str(REPO_ROOT / "envoy" / "render.py"), str(bootstrap), "--wasm", str(wasm_path)],
        check=True, capture_output=True, text=True,
    ).stdout
    # A bootstrap whose filter takes a secret from Envoy's environment gets a made-up one.
    env = {"MCP_INTROSPECTION_SECRET": "validate-only"} if "host_env_keys" in rendered else None
    result = validate_config(bootstrap=yaml.safe_load(rendered), timeout=120, process_env=env)
    assert result.returncode == 0, f"{bootstrap.name}: envoy --mode validate failed:\n{result.stdout[-3000:]}"


def test_placeholder_image_digests_are_documented():
    """Each placeholder image sha256 (WasmPlugin, TrafficExtension, EnvoyExtensionPolicy) sits
    next to the instructions for the real one (`make oci`)."""
    paths = {p for p, _ in [*wasm_plugins(), *traffic_extensions(), *extension_policies()]}
    assert paths
    for path in sorted(paths):
        text = path.read_text()
        if "0" * 64 in text:
            assert "PLACEHOLDER" in text and "make oci" in text, path
