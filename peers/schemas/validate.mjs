// Strict schema validation of Kubernetes documents, as `kubectl apply --validate=strict` would do
// it: every field must be known to the published schema of the document's apiVersion/kind.
//
//   node peers/schemas/validate.mjs < documents.json
//
// stdin: a JSON array of documents (objects with apiVersion and kind). stdout: a JSON array, one
// answer per document, in order:
//   {"covered": true, "schema": "<module>", "errors": [{"path": "spec.match[0].mode", "message": "..."}],
//    "free": ["spec.pluginConfig"], "unresolved": []}
//   {"covered": false, "schema": null, "errors": [{"path": "", "message": "no schema for ..."}], ...}
// `free`: the objects of the document that the schema leaves free-form (their content is not
// checked); `unresolved`: objects the unknown-field walk found no declared type for (a value of
// the wrong type, also in `errors`, or a declaration it does not understand).
// A document is valid when it is covered and has no errors. Exit status 0 unless the input
// itself is unusable.
//
// Two checks on each document, both from the @kubernetes-models packages (generated from the
// Istio CRDs, the Gateway API and Envoy Gateway Go types, and the Kubernetes OpenAPI):
//
// 1. The package's own JSON-schema validator (ajv, precompiled: `Model.validate()`): types,
//    enums, patterns, required fields, formats, bounds. These precompiled validators carry no
//    `additionalProperties` check at all, so they accept any unknown field ...
// 2. ... which is why every object of the document is also walked along the package's
//    TypeScript declaration of the kind (`I<Kind>`, generated from the same schema: a property
//    per schema property, an index signature for `additionalProperties`, the empty type `{}` for
//    a free-form object, i.e. `x-kubernetes-preserve-unknown-fields` / google.protobuf.Struct,
//    e.g. a WasmPlugin's `pluginConfig`). A key that the declared type does not know is an
//    error: "unknown field", the message kubectl's strict field validation gives.
//    The declarations cannot tell an object schema without properties that prunes everything
//    from a preserve-unknown-fields one (both are `{}`: free here), nor an object with both
//    properties and preserve-unknown-fields from a closed one (strict here). Rules written in
//    CEL (x-kubernetes-validations) are in neither check: the packages do not carry them.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const ts = require("typescript");

// API group -> the package that publishes its schemas. Groups of Kubernetes itself (core "",
// apps, batch, *.k8s.io other than the Gateway API) are in kubernetes-models.
function packageOf(group) {
  if (group === "istio.io" || group.endsWith(".istio.io")) return "@kubernetes-models/istio";
  if (group === "gateway.networking.k8s.io" || group === "gateway.networking.x-k8s.io") {
    return "@kubernetes-models/gateway-api";
  }
  if (group === "gateway.envoyproxy.io") return "@kubernetes-models/envoy-gateway";
  if (!group.includes(".") || group.endsWith(".k8s.io")) return "kubernetes-models";
  return null;
}

function splitApiVersion(apiVersion) {
  const i = apiVersion.lastIndexOf("/");
  return i < 0 ? ["", apiVersion] : [apiVersion.slice(0, i), apiVersion.slice(i + 1)];
}

const IDENT = /^[A-Za-z][A-Za-z0-9]*$/;

// The model module of apiVersion/kind, or {error}.
async function resolveModel(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !IDENT.test(kind)) {
    return { error: `document without a usable apiVersion/kind (${JSON.stringify(apiVersion)}, ${JSON.stringify(kind)})` };
  }
  const [group, version] = splitApiVersion(apiVersion);
  const pkg = packageOf(group);
  if (!pkg) return { error: `no schema for ${apiVersion} ${kind}: no package for API group ${group} is installed` };
  if (!IDENT.test(version) || (group && !/^[a-z0-9.-]+$/.test(group))) {
    return { error: `no schema for ${apiVersion} ${kind}: malformed apiVersion` };
  }
  const specifier = `${pkg}/${group ? group + "/" : ""}${version}/${kind}`;
  let mod;
  try {
    mod = await import(specifier);
  } catch (e) {
    if (e.code !== "ERR_MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    let installed = "";
    try {
      installed = "@" + JSON.parse(readFileSync(path.join(HERE, "node_modules", pkg, "package.json"), "utf8")).version;
    } catch {
      return { error: `no schema for ${apiVersion} ${kind}: ${pkg} is not installed (npm ci in peers/schemas)` };
    }
    return { error: `no schema for ${apiVersion} ${kind}: ${pkg}${installed} has no ${specifier}` };
  }
  const Model = mod[kind];
  if (typeof Model !== "function" || Model.apiVersion !== apiVersion || Model.kind !== kind) {
    return { error: `no schema for ${apiVersion} ${kind}: ${specifier} does not export that kind` };
  }
  return { specifier, Model };
}

// "/spec/match/0/ports" -> "spec.match[0].ports" (kubectl's notation).
function fieldPath(segments) {
  let out = "";
  for (const s of segments) {
    if (typeof s === "number" || /^\d+$/.test(s)) out += `[${s}]`;
    else out += out ? `.${s}` : s;
  }
  return out;
}

function pointerSegments(pointer) {
  return pointer.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function schemaErrors(Model, doc) {
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) return [{ path: "", message: `validator failed: ${e.message}` }];
    const seen = new Set();
    const out = [];
    for (const err of e.errors) {
      const segments = pointerSegments(err.instancePath || "");
      if (err.keyword === "required") segments.push(err.params.missingProperty);
      let message = err.message;
      if (err.keyword === "enum") message += `: ${err.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
      if (err.keyword === "required") message = "required field is missing";
      const p = fieldPath(segments);
      const line = `${p}: ${message}`;
      if (seen.has(line)) continue;
      seen.add(line);
      out.push({ path: p, message: `${p || "(document)"}: ${message}` });
    }
    return out;
  }
}

// ----------------------------------------------------------------------- unknown fields

let checker;
const rootTypes = new Map(); // specifier -> ts.Type of I<Kind>

function loadTypes(specifiers) {
  const file = path.join(HERE, "__kinds__.ts");
  const names = [...specifiers];
  const source = names
    .map((s, i) => `import type { I${s.split("/").pop()} as T${i} } from ${JSON.stringify(s)};\nexport type K${i} = T${i};\n`)
    .join("");
  const options = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options, true);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, onError, create) =>
    path.resolve(name) === file ? ts.createSourceFile(name, source, lang, true) : getSourceFile(name, lang, onError, create);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === file || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => (path.resolve(name) === file ? source : readFile(name));
  const program = ts.createProgram([file], options, host);
  const problems = ts.getPreEmitDiagnostics(program, program.getSourceFile(file));
  if (problems.length) {
    const text = problems.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("; ");
    throw new Error(`cannot load the TypeScript declarations of ${names.join(", ")}: ${text}`);
  }
  checker = program.getTypeChecker();
  const sf = program.getSourceFile(file);
  for (const stmt of sf.statements) {
    if (ts.isTypeAliasDeclaration(stmt)) {
      const i = Number(stmt.name.text.slice(1));
      rootTypes.set(names[i], checker.getTypeAtLocation(stmt.name));
    }
  }
}

const FREE = ts.TypeFlags.Any | ts.TypeFlags.Unknown | ts.TypeFlags.NonPrimitive; // any, unknown, object

// The object types a value may have: unions and intersections taken apart.
function constituents(types) {
  const out = [];
  let free = false;
  const visit = (t) => {
    if (t.flags & FREE) free = true;
    else if (t.isUnion() || t.isIntersection()) t.types.forEach(visit);
    else if (t.flags & ts.TypeFlags.Object) out.push(t);
    // Anything else (undefined of an optional field, a primitive) declares no fields.
  };
  types.forEach(visit);
  return { free, objects: out };
}

// Walks `value` along the candidate declared types; fills report.errors (unknown fields),
// report.free (objects taken as they are: free-form in the schema) and report.unresolved
// (objects for which no declared object type was found: a value of the wrong type, which the
// schema check reports, or a declaration this walk does not understand).
function walk(value, types, segments, report) {
  if (value === null || typeof value !== "object") return;
  const { free, objects } = constituents(types);
  if (free) return void report.free.push(fieldPath(segments));
  if (Array.isArray(value)) {
    const items = objects.filter((t) => checker.isArrayType(t) || checker.isTupleType(t)).map((t) => t.getNumberIndexType()).filter(Boolean);
    if (!items.length) return void report.unresolved.push(fieldPath(segments));
    value.forEach((v, i) => walk(v, items, [...segments, i], report));
    return;
  }
  const shapes = objects.filter((t) => !checker.isArrayType(t) && !checker.isTupleType(t));
  if (!shapes.length) return void report.unresolved.push(fieldPath(segments));
  // The empty object type `{}`: a free-form object (x-kubernetes-preserve-unknown-fields, Struct).
  if (shapes.some((t) => checker.getPropertiesOfType(t).length === 0 && !t.getStringIndexType() && !t.getNumberIndexType())) {
    return void report.free.push(fieldPath(segments));
  }
  for (const key of Object.keys(value)) {
    const next = [];
    for (const t of shapes) {
      const prop = t.getProperty(key);
      if (prop) next.push(checker.getTypeOfSymbol(prop));
      const index = t.getStringIndexType();
      if (index) next.push(index);
    }
    const here = [...segments, key];
    if (!next.length) {
      const known = [...new Set(shapes.flatMap((t) => checker.getPropertiesOfType(t).map((p) => p.name)))].sort();
      const p = fieldPath(here);
      report.errors.push({ path: p, message: `unknown field "${p}" (known fields here: ${known.join(", ")})` });
      continue;
    }
    walk(value[key], next, here, report);
  }
}

// ---------------------------------------------------------------------------------- main

const input = JSON.parse(readFileSync(0, "utf8"));
if (!Array.isArray(input)) throw new Error("stdin must be a JSON array of documents");

const models = await Promise.all(input.map((doc) => (doc && typeof doc === "object" && !Array.isArray(doc)
  ? resolveModel(doc.apiVersion, doc.kind)
  : { error: "a document is not a mapping" })));
loadTypes(new Set(models.filter((m) => m.specifier).map((m) => m.specifier)));

const answers = input.map((doc, i) => {
  const m = models[i];
  if (m.error) return { covered: false, schema: null, errors: [{ path: "", message: m.error }], free: [], unresolved: [] };
  const report = { covered: true, schema: m.specifier, errors: schemaErrors(m.Model, doc), free: [], unresolved: [] };
  walk(doc, [rootTypes.get(m.specifier)], [], report);
  return report;
});
process.stdout.write(JSON.stringify(answers) + "\n");
