//! `mcp-oauth-filter` on the command line (README, "Command line"): `check` a plugin configuration, or
//! `explain` the decision the filter would make for a token, step by step. It runs the very
//! same core as the filter (`Config::from_json`, `decide`, `decide_body`), natively.

use mcp_oauth_filter::cache::TokenCache;
use mcp_oauth_filter::config::{ClientAuth, Config, Introspection, KeySource};
use mcp_oauth_filter::decide::{decide, decide_body, Decision, Request};
use mcp_oauth_filter::json::decode_object;
use mcp_oauth_filter::keyring::KeyRing;
use mcp_oauth_filter::keys::KeySet;
use mcp_oauth_filter::paths;
use mcp_oauth_filter::reason::{Outcome, Reason};
use mcp_oauth_filter::remote::{self, FetchState};
use mcp_oauth_filter::route::{self, Route};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage:
  mcp-oauth-filter check CONFIG.json
  mcp-oauth-filter explain --config CONFIG.json --token TOKEN [--method POST] [--path /mcp]
                           [--authority HOST] [--body FILE] [--jwks FILE] [--now UNIX]

check    validates a plugin configuration: exit 0 and a summary, or exit 1 and the field at fault.
explain  prints the decision the filter would make for a request with TOKEN (a token, or @FILE
         to read it from a file), and why: exit 0 if allowed, 1 if denied, 2 on usage errors.
         --jwks gives the key set of issuers whose keys the filter would fetch.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") if args.len() == 2 => check(&args[1]),
        Some("explain") => match ExplainArgs::parse(&args[1..]) {
            Ok(a) => explain(&a),
            Err(e) => Err(e),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Failure::Usage("expected a command".into())),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Invalid(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    /// The configuration (or an input file) is invalid: exit 1.
    Invalid(String),
}

fn read(path: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))
}

/// A configuration that cannot be read is as unusable as one that does not parse: exit 1.
fn load_config(path: &str) -> Result<Config, Failure> {
    let text =
        std::fs::read(path).map_err(|e| Failure::Invalid(format!("cannot read {path}: {e}")))?;
    Config::from_json(&text)
        .map_err(|e| Failure::Invalid(format!("{path}: {e} [{}]", e.kind.code())))
}

fn check(path: &str) -> Result<ExitCode, Failure> {
    let config = load_config(path)?;
    println!("{path}: configuration OK");
    println!("resources:");
    for r in &config.resources {
        let prefix = if r.path_prefix.is_empty() {
            "/"
        } else {
            &r.path_prefix
        };
        println!("  {}", r.resource);
        println!("    protected paths:       {prefix} and below");
        println!("    metadata URL:          {}", r.metadata_url);
        let servers: Vec<&str> = r
            .issuers
            .iter()
            .filter_map(|id| config.issuers.get(*id))
            .map(|i| i.issuer.as_str())
            .collect();
        println!("    authorization servers: {}", servers.join(", "));
        println!("    accepted audiences:    {}", r.audiences.join(", "));
        println!(
            "    required scopes:       {}",
            list_or_none(&r.required_scopes)
        );
        let mut tools: Vec<_> = r.tool_scopes.iter().collect();
        tools.sort();
        for (tool, scopes) in tools {
            println!("    tool {tool:<17} {}", scopes.join(" "));
        }
        let mut methods: Vec<_> = r.method_scopes.iter().collect();
        methods.sort();
        for (method, scopes) in methods {
            println!("    method {method:<15} {}", scopes.join(" "));
        }
        if r.filter_tools_list {
            println!(
                "    tools/list results:    filtered to the caller's tools, cacheScope private"
            );
        }
    }
    if !config.origin_documents.is_empty() {
        println!("authorization server metadata at resource origins (clients of MCP 2025-03-26):");
    }
    for d in &config.origin_documents {
        let Some(issuer) = config.issuers.get(d.issuer) else {
            continue;
        };
        let origin = config
            .resources
            .get(d.resource)
            .map_or(String::new(), |r| r.url.origin());
        for path in route::AS_METADATA_PATHS {
            println!("  {origin}{path}");
        }
        println!(
            "    answers: the metadata of {:?}, fetched through Envoy cluster {:?} from the first of: {}",
            issuer.issuer,
            issuer.cluster.as_deref().unwrap_or_default(),
            FetchState::discovery_urls(&issuer.issuer).join(", ")
        );
    }
    match &config.allowed_origins {
        None => println!("browser origins: any (allowed_origins not set)"),
        Some(origins) => println!(
            "browser origins: only {} (others get 403; MCP 2026-07-28 transport security)",
            origins.join(", ")
        ),
    }
    println!("issuers:");
    for i in &config.issuers {
        let algs: Vec<&str> = i.algorithms.iter().map(|a| a.name()).collect();
        println!("  {}", i.issuer);
        println!("    algorithms:  {}", algs.join(" "));
        match &i.keys {
            KeySource::Inline(set) => {
                let keys: Vec<String> = set
                    .keys()
                    .iter()
                    .map(|k| {
                        format!(
                            "{} ({})",
                            k.kid.as_deref().unwrap_or("no kid"),
                            k.material.kind()
                        )
                    })
                    .collect();
                println!(
                    "    key source:  inline jwks, {} key(s): {}",
                    set.len(),
                    keys.join(", ")
                );
            }
            KeySource::Remote {
                cluster,
                jwks_uri,
                policy,
            } => {
                match jwks_uri {
                    Some(uri) => println!(
                        "    key source:  fetched from {}{} through Envoy cluster {cluster:?}",
                        uri.origin(),
                        uri.path
                    ),
                    None => println!(
                        "    key source:  discovered through Envoy cluster {cluster:?}, from the first of: {}",
                        FetchState::discovery_urls(&i.issuer).join(", ")
                    ),
                }
                println!(
                    "    fetching:    cache {} s without max-age, unknown-kid refetch at most every {} s, timeout {} ms, first-load wait {} ms",
                    policy.cache_seconds, policy.refetch_interval_seconds, policy.fetch_timeout_ms, policy.wait_ms
                );
            }
            KeySource::None => {
                println!("    key source:  none: its tokens, JWTs included, are introspected")
            }
        }
        if let Some(intro) = &i.introspection {
            println!(
                "    introspection: {}",
                introspection_endpoint(&i.issuer, intro)
            );
            println!(
                "    introspection client: {} ({}), secret from {}",
                intro.client_id,
                match intro.auth_method {
                    ClientAuth::Basic => "client_secret_basic",
                    ClientAuth::Post => "client_secret_post",
                },
                intro.secret.describe()
            );
            println!(
                "    introspection cache: active answers {} s (never past exp), inactive {} s; timeout {} ms; at most {} calls in flight per worker",
                intro.cache_seconds, intro.negative_cache_seconds, intro.timeout_ms, intro.max_in_flight
            );
        }
    }
    for w in &config.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where an issuer's tokens are introspected: the configured endpoint, or where it is found.
fn introspection_endpoint(issuer: &str, intro: &Introspection) -> String {
    match &intro.endpoint {
        Some(url) => format!(
            "{}{} through Envoy cluster {:?}",
            url.origin(),
            url.path,
            intro.cluster
        ),
        None => format!(
            "the introspection_endpoint of the issuer's metadata, discovered through Envoy cluster {:?} from the first of: {}",
            intro.cluster,
            FetchState::discovery_urls(issuer).join(", ")
        ),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(" ")
    }
}

struct ExplainArgs {
    config: String,
    token: String,
    method: String,
    path: Option<String>,
    authority: Option<String>,
    body: Option<String>,
    jwks: Option<String>,
    now: Option<u64>,
}

impl ExplainArgs {
    fn parse(args: &[String]) -> Result<ExplainArgs, Failure> {
        let mut out = ExplainArgs {
            config: String::new(),
            token: String::new(),
            method: "POST".into(),
            path: None,
            authority: None,
            body: None,
            jwks: None,
            now: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--config" => out.config = value()?,
                "--token" => out.token = value()?,
                "--method" => out.method = value()?.to_ascii_uppercase(),
                "--path" => out.path = Some(value()?),
                "--authority" => out.authority = Some(value()?),
                "--body" => out.body = Some(value()?),
                "--jwks" => out.jwks = Some(value()?),
                "--now" => {
                    let v = value()?;
                    out.now = Some(
                        v.parse()
                            .map_err(|_| Failure::Usage(format!("--now {v}: not a UNIX time")))?,
                    );
                }
                other => return Err(Failure::Usage(format!("unknown option {other}"))),
            }
        }
        if out.config.is_empty() || out.token.is_empty() {
            return Err(Failure::Usage("explain needs --config and --token".into()));
        }
        if let Some(file) = out.token.strip_prefix('@') {
            out.token = String::from_utf8_lossy(&read(file)?).trim().to_string();
        }
        Ok(out)
    }
}

/// The token's header and claims as sent (not verified): what a person reads first.
fn describe_token(token: &str, now: u64) {
    let parts: Vec<&str> = token.split('.').collect();
    println!("  token: {} bytes, {} part(s)", token.len(), parts.len());
    if parts.len() != 3 {
        return;
    }
    if let Ok(header) = decode_object(parts[0]) {
        println!("  header (unverified): {}", Value::Object(header));
    }
    let Ok(claims) = decode_object(parts[1]) else {
        return;
    };
    for name in ["iss", "aud", "sub", "scope", "scp", "client_id"] {
        if let Some(v) = claims.get(name) {
            println!("  {name}: {v}");
        }
    }
    for name in ["exp", "nbf", "iat"] {
        if let Some(t) = claims.get(name).and_then(Value::as_f64) {
            let delta = t - now as f64;
            let when = if delta >= 0.0 {
                format!("in {delta:.0} s")
            } else {
                format!("{:.0} s ago", -delta)
            };
            println!("  {name}: {t} ({when})");
        }
    }
}

fn explain(a: &ExplainArgs) -> Result<ExitCode, Failure> {
    let config = load_config(&a.config)?;
    let now = a.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let mut keys = KeyRing::new(&config);
    if let Some(file) = &a.jwks {
        let (set, skipped) = remote::read_jwks(200, &read(file)?)
            .map_err(|e| Failure::Invalid(format!("{file}: {e}")))?;
        for line in skipped {
            println!("note: {file}: {line}");
        }
        install_remote(&config, &mut keys, set, now);
    }
    let first = &config.resources[0];
    let path = a
        .path
        .clone()
        .unwrap_or_else(|| match first.path_prefix.as_str() {
            "" => "/".into(),
            p => p.into(),
        });
    // Without --authority, the host of the first resource the path falls under.
    let authority = a.authority.clone().unwrap_or_else(|| {
        let bare = paths::split_query(&path).0;
        config
            .resources
            .iter()
            .find(|r| paths::is_under(bare, &r.path_prefix))
            .unwrap_or(first)
            .url
            .authority
            .clone()
    });
    let authorization = format!("Bearer {}", a.token);
    let req = Request {
        method: &a.method,
        path: &path,
        authority: &authority,
        authorization: vec![&authorization],
        has_body: a.body.is_some(),
        ..Request::default()
    };

    println!("1. request: {} {path} (authority {authority})", a.method);
    let bare = paths::split_query(&path).0;
    match route::route(&config, bare, &authority) {
        _ if route::origin_document(&config, bare, &authority).is_some() => println!(
            "2. resource: none; the origin answers its authorization server's metadata here"
        ),
        Route::Protected(r) | Route::BadPath(r, _) => {
            println!("2. resource: {} (metadata {})", r.resource, r.metadata_url)
        }
        Route::Metadata(_) => println!("2. resource: none; a metadata path the filter answers"),
        Route::Misdirected => println!(
            "2. resource: none; several resources share the path and the authority names none of them"
        ),
        Route::Outside => println!("2. resource: none; the path is not protected"),
    }
    println!("3. credential: Bearer token");
    describe_token(&a.token, now);
    let mut decision = decide(&config, &keys, None, &req, now);
    if let Decision::OriginMetadata { issuer } = &decision {
        let name = config
            .issuers
            .get(*issuer)
            .map_or("", |i| i.issuer.as_str());
        println!(
            "decision: 200 with the RFC 8414 metadata of {name:?} as fetched (503 before the first fetch): a client of MCP 2025-03-26 looks for it at the MCP server's origin"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Decision::Introspect { issuers, .. } = &decision {
        // The filter would ask the authorization server: explain says where, and stops.
        let places: Vec<String> = issuers
            .iter()
            .filter_map(|id| config.issuers.get(*id))
            .filter_map(|i| Some(introspection_endpoint(&i.issuer, i.introspection.as_ref()?)))
            .collect();
        println!(
            "4. opaque token: would be introspected at {}",
            places.join(", then ")
        );
        println!("decision: depends on the introspection answer (RFC 7662): not decided offline");
        return Ok(ExitCode::FAILURE);
    }
    let mut body_checked = false;
    if let Decision::ReadBody { check, .. } = &decision {
        let body = match &a.body {
            Some(file) => read(file)?,
            None => Vec::new(),
        };
        println!(
            "   the resource has per-tool/method scopes, so the body decides ({} bytes{})",
            body.len(),
            if a.body.is_none() {
                ", none given: use --body"
            } else {
                ""
            }
        );
        decision = decide_body(&config, check, &req, &body);
        body_checked = true;
    }
    println!(
        "4. checks, in the filter's order (clock skew {} s):",
        config.clock_skew
    );
    print_checks(&decision, body_checked);
    Ok(report(&decision))
}

/// The token checks in the order the filter runs them, with the reasons that stop each.
const CHECKS: &[(&str, &[Reason])] = &[
    (
        "credential and token structure (header, claims, size)",
        &[
            Reason::InvalidRequest,
            Reason::BadPath,
            Reason::MisdirectedRequest,
            Reason::MalformedToken,
            Reason::TokenTooLarge,
            Reason::EncryptedToken,
            Reason::UnsupportedHeader,
            Reason::WrongTokenType,
        ],
    ),
    (
        "issuer (iss) among the resource's authorization servers",
        &[Reason::IssuerNotAccepted],
    ),
    (
        "algorithm (alg) on the issuer's allow-list",
        &[Reason::AlgNotAllowed],
    ),
    (
        "audience (aud) is the resource or an extra audience",
        &[Reason::AudienceNotAccepted],
    ),
    (
        "expiry (exp) present and not past",
        &[Reason::MissingExp, Reason::TokenExpired],
    ),
    ("not before (nbf)", &[Reason::TokenNotYetValid]),
    (
        "signing key chosen by kid, fitting alg",
        &[
            Reason::UnknownKid,
            Reason::AlgKeyMismatch,
            Reason::AmbiguousKey,
            Reason::KeysUnavailable,
        ],
    ),
    ("signature", &[Reason::BadSignature]),
    (
        BODY_CHECK,
        &[
            Reason::InvalidBody,
            Reason::McpHeaderMismatch,
            Reason::BodyTooLarge,
            Reason::BodyNotDelivered,
            Reason::BodyIncomplete,
        ],
    ),
    (
        "scopes (required, per method, per tool; hierarchy applied)",
        &[Reason::InsufficientScope],
    ),
];

const BODY_CHECK: &str = "request body (JSON-RPC, Mcp-Method/Mcp-Name, size)";

/// Prints each check as passed, failed (with the filter's description) or not reached.
fn print_checks(decision: &Decision<'_>, body_checked: bool) {
    let (failed, description) = match decision {
        Decision::Respond(r) => match r.outcome {
            Outcome::Denied(reason) => {
                let description = serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|b| b["error_description"].as_str().map(str::to_string))
                    .unwrap_or_default();
                (
                    CHECKS.iter().position(|(_, stops)| stops.contains(&reason)),
                    description,
                )
            }
            _ => return,
        },
        Decision::WaitForKeys { .. } => (
            CHECKS
                .iter()
                .position(|(_, stops)| stops.contains(&Reason::KeysUnavailable)),
            "the issuer's keys are not loaded".into(),
        ),
        Decision::PassThrough => return,
        _ => (None, String::new()),
    };
    for (i, (check, _)) in CHECKS.iter().enumerate() {
        let is_body = *check == BODY_CHECK;
        let mark = match failed {
            Some(f) if i == f => format!("FAILED: {description}"),
            Some(f) if i > f => "not reached".into(),
            _ if is_body && !body_checked => "not needed".into(),
            _ => "ok".into(),
        };
        println!("   - {check}: {mark}");
    }
}

/// Fetched-key issuers get the `--jwks` set, as if the filter had fetched it.
fn install_remote(config: &Config, keys: &mut KeyRing, set: KeySet, now: u64) {
    for (id, issuer) in config.issuers.iter().enumerate() {
        if let KeySource::Remote { policy, .. } = &issuer.keys {
            let mut state = FetchState::default();
            state.succeed(now, None, 1, policy);
            keys.install(id, set.clone(), state, &TokenCache::new(0));
        }
    }
}

/// A response header's name as RFC 6750 and most documentation spell it (`WWW-Authenticate`,
/// `Content-Type`); the filter sends them in lower case, which HTTP/2 requires.
fn display_name(name: &str) -> String {
    if name == "www-authenticate" {
        return "WWW-Authenticate".into();
    }
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn report(decision: &Decision<'_>) -> ExitCode {
    match decision {
        Decision::PassThrough => {
            println!("decision: PASS THROUGH (not a protected path: forwarded untouched)");
            ExitCode::SUCCESS
        }
        Decision::Allow(allow) => {
            println!("decision: ALLOW (forwarded to the upstream)");
            if allow.strip_authorization {
                println!("  authorization: removed before the upstream");
            } else {
                println!("  authorization: forwarded");
            }
            for (name, value) in &allow.set_headers {
                println!("  {name}: {value}");
            }
            if let Some(filter) = &allow.tools_list {
                println!(
                    "  tools/list results in the response: cacheScope private, hidden: {}",
                    list_or_none(filter.hidden())
                );
            }
            ExitCode::SUCCESS
        }
        Decision::Respond(r) => {
            println!("decision: {} ({})", r.status, r.outcome.code());
            println!("  status: {}", r.status);
            for (name, value) in &r.headers {
                println!("  {}: {value}", display_name(name));
            }
            if !r.body.is_empty() {
                println!("  body: {}", r.body);
            }
            if matches!(r.outcome, Outcome::Denied(_)) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Decision::WaitForKeys { .. } => {
            println!("decision: 503 after waiting (the issuer's keys are fetched: pass them with --jwks FILE)");
            ExitCode::FAILURE
        }
        Decision::ReadBody { .. } => {
            println!("decision: needs the request body (--body FILE)");
            ExitCode::FAILURE
        }
        Decision::Introspect { .. } => ExitCode::FAILURE,
        Decision::OriginMetadata { .. } => ExitCode::SUCCESS,
    }
}
