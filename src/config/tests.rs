use super::*;
use crate::alg::Alg;
use crate::keys::tests::fixture;
use serde_json::json;
use serde_json::Value;

/// A valid configuration with two resources on different hosts, as JSON.
pub fn base_json() -> Value {
    json!({
        "resources": [
            {
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://auth.example.com"],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "required_scopes": ["mcp:read"],
                "resource_name": "Example MCP"
            },
            {
                "resource": "https://other.example.com/tools",
                "authorization_servers": ["https://auth.example.com", "https://second.example.com/tenant"]
            }
        ],
        "issuers": [
            { "issuer": "https://auth.example.com", "jwks": fixture("jwks.json") },
            { "issuer": "https://second.example.com/tenant", "jwks": {"keys": [fixture("ec-p256.jwk.json")]},
              "algorithms": ["ES256"] }
        ],
        "claims_to_headers": { "X-MCP-Subject": "sub" }
    })
}

/// `base_json` with the first issuer's keys fetched (discovery through cluster `auth`).
pub fn remote_json() -> Value {
    let mut v = base_json();
    v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth"});
    v
}

pub fn compile(value: &Value) -> Result<Config, ConfigError> {
    Config::from_json(value.to_string().as_bytes())
}

pub fn base() -> Config {
    compile(&base_json()).unwrap()
}

fn error_of(value: Value) -> (String, &'static str) {
    let e = compile(&value).unwrap_err();
    (e.path.clone(), e.kind.code())
}

/// `value` with the member or element at `pointer` set (created if missing).
fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match value.pointer_mut(parent).unwrap() {
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = new,
        Value::Object(map) => {
            map.insert(last.to_string(), new);
        }
        other => panic!("cannot set {pointer} in {other}"),
    }
    value
}

#[test]
fn compiles_the_example_with_documented_defaults() {
    let c = base();
    assert_eq!(c.clock_skew, 60);
    assert_eq!(c.max_token_bytes, 8192);
    assert!(!c.forward_authorization);
    assert_eq!(c.token_cache_size, 4096);
    assert!(c.hold_headers_for_body);
    assert_eq!(c.body_wait_ms, 10_000);
    assert_eq!(
        c.claim_headers,
        vec![("x-mcp-subject".to_string(), "sub".to_string())]
    );
    let r = &c.resources[0];
    assert_eq!(r.path_prefix, "/mcp");
    assert_eq!(r.metadata_path, "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(
        r.metadata_url,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(r.audiences, vec!["https://mcp.example.com/mcp"]);
    assert_eq!(c.resources[1].issuers, vec![0, 1]);
    assert!(c.issuers[1].algorithms.contains(Alg::Es256));
    assert!(!c.issuers[1].algorithms.contains(Alg::Rs256));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn rejects_unknown_fields_with_their_path() {
    let mut top = base_json();
    top["extra"] = json!(1);
    assert_eq!(error_of(top), ("extra".into(), "syntax"));
    let nested = with(base_json(), "/resources/0/scope", json!("x"));
    assert_eq!(error_of(nested).0, "resources[0].scope");
    let mut issuer = base_json();
    issuer["issuers"][0]["audience"] = json!("x");
    assert_eq!(error_of(issuer).0, "issuers[0].audience");
}

#[test]
fn rejects_wrong_types_and_missing_fields() {
    assert_eq!(
        error_of(with(base_json(), "/clock_skew_seconds", json!(-1))).1,
        "syntax"
    );
    assert_eq!(
        error_of(with(base_json(), "/forward_authorization", json!("yes"))).1,
        "syntax"
    );
    let mut missing = base_json();
    missing["resources"][0]
        .as_object_mut()
        .unwrap()
        .remove("resource");
    let e = compile(&missing).unwrap_err();
    assert_eq!(e.path, "resources[0]");
    assert!(e.to_string().contains("missing field `resource`"), "{e}");
    assert_eq!(
        Config::from_json(b"not json").unwrap_err().kind.code(),
        "syntax"
    );
}

#[test]
fn each_authorization_server_must_name_a_configured_issuer() {
    let e = compile(&with(
        base_json(),
        "/resources/1/authorization_servers/1",
        json!("https://second.example.com/tenant/"),
    ))
    .unwrap_err();
    assert_eq!(e.path, "resources[1].authorization_servers[1]");
    assert_eq!(e.kind.code(), "unknown_issuer");
    assert!(e
        .to_string()
        .contains("no issuer entry \"https://second.example.com/tenant/\""));
    assert_eq!(
        error_of(with(
            base_json(),
            "/resources/0/authorization_servers",
            json!([])
        )),
        ("resources[0].authorization_servers".into(), "empty")
    );
}

#[test]
fn validates_resource_urls() {
    let cases = [
        ("mcp.example.com/mcp", "invalid_url"),
        ("https://mcp.example.com/mcp#x", "invalid_url"),
        ("https://mcp.example.com/mcp?x=1", "resource_path"),
        ("https://mcp.example.com/a/../mcp", "resource_path"),
        ("https://mcp.example.com/%6Dcp", "resource_path"),
    ];
    for (url, code) in cases {
        let e = compile(&with(base_json(), "/resources/0/resource", json!(url))).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("resources[0].resource", code),
            "{url}"
        );
    }
    assert_eq!(
        error_of(with(base_json(), "/resources", json!([]))),
        ("resources".into(), "empty")
    );
    let same = with(
        base_json(),
        "/resources/1/resource",
        json!("https://mcp.example.com/mcp/"),
    );
    assert_eq!(
        error_of(same),
        ("resources[1].resource".into(), "duplicate")
    );
}

#[test]
fn validates_scopes_as_rfc6749_tokens() {
    for bad in ["", "a b", "a\"b", "a\\b", "é"] {
        let e = compile(&with(
            base_json(),
            "/resources/0/required_scopes/0",
            json!(bad),
        ))
        .unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("resources[0].required_scopes[0]", "invalid_scope")
        );
    }
    let dup = with(
        base_json(),
        "/resources/0/scopes_supported/1",
        json!("mcp:read"),
    );
    assert_eq!(
        error_of(dup),
        ("resources[0].scopes_supported[1]".into(), "duplicate")
    );
}

#[test]
fn refuses_none_hmac_and_unknown_algorithms() {
    let cases = [
        ("HS256", "forbidden_algorithm"),
        ("none", "forbidden_algorithm"),
        ("ES512", "unsupported_algorithm"),
    ];
    for (alg, code) in cases {
        let e = compile(&with(base_json(), "/issuers/1/algorithms/0", json!(alg))).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("issuers[1].algorithms[0]", code)
        );
    }
    assert_eq!(
        error_of(with(base_json(), "/issuers/1/algorithms", json!([]))),
        ("issuers[1].algorithms".into(), "empty")
    );
    // The only key is EC P-256: allowing just RS256 leaves nothing usable.
    assert_eq!(
        error_of(with(base_json(), "/issuers/1/algorithms", json!(["RS256"]))),
        ("issuers[1].jwks".into(), "invalid_jwks")
    );
}

#[test]
fn needs_exactly_one_key_source() {
    let issuer = |extra: Value| {
        let mut v = base_json();
        let mut entry = json!({"issuer": "https://auth.example.com"});
        for (k, val) in extra.as_object().unwrap() {
            entry[k] = val.clone();
        }
        v["issuers"][0] = entry;
        v
    };
    assert_eq!(
        error_of(issuer(json!({}))),
        ("issuers[0]".into(), "key_source")
    );
    assert_eq!(
        error_of(issuer(json!({"jwks_uri": "https://auth.example.com/jwks"}))),
        ("issuers[0].cluster".into(), "key_source")
    );
    assert_eq!(
        error_of(issuer(
            json!({"jwks": fixture("jwks.json"), "cluster": "auth"})
        )),
        ("issuers[0].jwks".into(), "key_source")
    );
    let remote = compile(&issuer(
        json!({"jwks_uri": "https://auth.example.com/jwks", "cluster": "auth"}),
    ))
    .unwrap();
    assert!(
        matches!(&remote.issuers[0].keys, KeySource::Remote { cluster, jwks_uri: Some(_), policy } if cluster == "auth" && *policy == FetchPolicy::default())
    );
    let discovered = compile(&issuer(json!({"cluster": "auth"}))).unwrap();
    assert!(matches!(
        &discovered.issuers[0].keys,
        KeySource::Remote { jwks_uri: None, .. }
    ));
}

#[test]
fn inline_keys_must_be_valid_and_unsupported_ones_are_skipped_with_a_warning() {
    let mut broken = fixture("rsa-a.jwk.json");
    broken["n"] = json!("%%%");
    let e = compile(&with(base_json(), "/issuers/0/jwks/keys/1", broken)).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.kind.code()),
        ("issuers[0].jwks.keys[1].n", "invalid_key")
    );
    let c = compile(&with(
        base_json(),
        "/issuers/0/jwks/keys/1",
        json!({"kty": "oct", "k": "AA"}),
    ))
    .unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("issuers[0].jwks.keys[1]: skipped"),
        "{:?}",
        c.warnings
    );
    assert_eq!(
        error_of(with(base_json(), "/issuers/0/jwks", json!({"keys": []}))),
        ("issuers[0].jwks".into(), "invalid_jwks")
    );
    assert_eq!(
        error_of(with(base_json(), "/issuers/0/jwks", json!([]))),
        ("issuers[0].jwks".into(), "invalid_jwks")
    );
}

#[test]
fn fetch_tunables_are_bounded_and_only_for_fetched_keys() {
    let mut v = base_json();
    v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
            "jwks_cache_seconds": 120, "jwks_refetch_interval_seconds": 5, "jwks_fetch_timeout_ms": 900, "jwks_wait_ms": 0});
    let c = compile(&v).unwrap();
    let KeySource::Remote { policy, .. } = &c.issuers[0].keys else {
        panic!()
    };
    assert_eq!(
        *policy,
        FetchPolicy {
            cache_seconds: 120,
            refetch_interval_seconds: 5,
            fetch_timeout_ms: 900,
            wait_ms: 0
        }
    );
    v["issuers"][0]["jwks_cache_seconds"] = json!(10);
    assert_eq!(
        error_of(v),
        ("issuers[0].jwks_cache_seconds".into(), "out_of_range")
    );
    let inline = with(base_json(), "/issuers/0/jwks_wait_ms", json!(100));
    assert_eq!(
        error_of(inline),
        ("issuers[0].jwks_wait_ms".into(), "key_source")
    );
}

#[test]
fn compiles_per_tool_and_method_scopes_and_the_scope_hierarchy() {
    let mut v = base_json();
    v["resources"][0]["tool_scopes"] = json!({"delete_all": ["mcp:admin"]});
    v["resources"][0]["method_scopes"] = json!({"resources/read": ["mcp:read"]});
    v["scope_implies"] = json!({"mcp:admin": ["mcp:write"], "mcp:write": ["mcp:read"]});
    let c = compile(&v).unwrap();
    assert!(c.resources[0].inspects_body());
    assert!(!c.resources[1].inspects_body());
    assert_eq!(c.implications["mcp:admin"], ["mcp:write", "mcp:read"]);
    assert_eq!(c.max_body_bytes, 1024 * 1024);
    v["scope_implies"] = json!({"a": ["b"], "b": ["a"]});
    let e = compile(&v).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.kind.code()),
        ("scope_implies.a", "scope_cycle")
    );
    assert!(e.to_string().contains("a -> b -> a"), "{e}");
    v["scope_implies"] = json!({});
    v["resources"][0]["tool_scopes"] = json!({"x": ["bad scope"]});
    assert_eq!(
        error_of(v.clone()),
        ("resources[0].tool_scopes.x[0]".into(), "invalid_scope")
    );
    v["resources"][0]["tool_scopes"] = json!({});
    v["max_body_bytes"] = json!(0);
    assert_eq!(
        error_of(v.clone()),
        ("max_body_bytes".into(), "out_of_range")
    );
    v["max_body_bytes"] = json!(64);
    assert_eq!(compile(&v).map(|c| c.max_body_bytes).ok(), Some(64));
}

#[test]
fn bounds_numeric_settings() {
    assert_eq!(
        error_of(with(base_json(), "/clock_skew_seconds", json!(86_401))).1,
        "out_of_range"
    );
    let skew = compile(&with(base_json(), "/clock_skew_seconds", json!(3600)));
    assert_eq!(skew.map(|c| c.clock_skew).ok(), Some(3600));
    let mut v = base_json();
    v["max_token_bytes"] = json!(0);
    assert_eq!(
        error_of(v.clone()),
        ("max_token_bytes".into(), "out_of_range")
    );
    v["max_token_bytes"] = json!(1024 * 1024 + 1);
    assert_eq!(
        error_of(v.clone()),
        ("max_token_bytes".into(), "out_of_range")
    );
    // Small limits are an operator's choice (and how tests reach "too large" cheaply).
    v["max_token_bytes"] = json!(100);
    assert_eq!(compile(&v).map(|c| c.max_token_bytes).ok(), Some(100));
    let mut v = base_json();
    v["token_cache_size"] = json!(100_001);
    assert_eq!(error_of(v), ("token_cache_size".into(), "out_of_range"));
}

#[test]
fn claim_headers_must_be_valid_unreserved_names() {
    let cases = [
        (json!({"bad name": "sub"}), "invalid_header_name"),
        (json!({":path": "sub"}), "invalid_header_name"),
        (json!({"Authorization": "sub"}), "reserved_header"),
        (json!({"mcp-session-id": "sub"}), "reserved_header"),
        (json!({"x-envoy-original-path": "sub"}), "reserved_header"),
        (json!({"x-a": "sub", "X-A": "iss"}), "duplicate"),
        (json!({"x-a": ""}), "invalid_text"),
    ];
    for (map, code) in cases {
        let mut v = base_json();
        v["claims_to_headers"] = map.clone();
        assert_eq!(error_of(v).1, code, "{map}");
    }
}

#[test]
fn refuses_resource_paths_that_differ_only_in_case() {
    let mut v = base_json();
    v["resources"][1]["resource"] = json!("https://other.example.com/MCP");
    let e = compile(&v).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.kind.code()),
        ("resources[1].resource", "path_case")
    );
    assert!(e.to_string().contains("resources[0]"), "{e}");
    // Nested paths in another case are distinct resources.
    v["resources"][1]["resource"] = json!("https://other.example.com/MCP/admin");
    assert!(compile(&v).is_ok());
}

#[test]
fn body_hold_settings_are_a_bool_and_a_bounded_wait() {
    let mut v = base_json();
    v["hold_headers_for_body"] = json!(false);
    v["body_wait_ms"] = json!(250);
    let c = compile(&v).unwrap();
    assert!(!c.hold_headers_for_body);
    assert_eq!(c.body_wait_ms, 250);
    v["body_wait_ms"] = json!(0);
    assert_eq!(error_of(v.clone()), ("body_wait_ms".into(), "out_of_range"));
    v["body_wait_ms"] = json!(600_001);
    assert_eq!(error_of(v.clone()), ("body_wait_ms".into(), "out_of_range"));
    v["body_wait_ms"] = json!(1);
    v["hold_headers_for_body"] = json!("yes");
    assert_eq!(error_of(v), ("hold_headers_for_body".into(), "syntax"));
}

/// `base_json` with the first issuer introspecting (through cluster `auth`), plus `fields`.
fn introspecting(fields: Value) -> Value {
    let mut v = base_json();
    let mut intro = json!({"client_id": "mcp-gateway", "client_secret_env": "MCP_SECRET"});
    for (k, val) in fields.as_object().unwrap() {
        intro[k] = val.clone();
    }
    v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
        "introspection": intro});
    v
}

#[test]
fn compiles_introspection_with_documented_defaults_and_no_keys() {
    let c = compile(&introspecting(json!({}))).unwrap();
    let issuer = &c.issuers[0];
    assert_eq!(
        issuer.keys,
        KeySource::None,
        "cluster alone does not mean discovered keys"
    );
    let i = issuer.introspection.as_ref().unwrap();
    assert_eq!(i.endpoint, None);
    assert_eq!(i.cluster, "auth");
    assert_eq!(i.secret, SecretSource::Env("MCP_SECRET".into()));
    assert_eq!(i.auth_method, ClientAuth::Basic);
    assert_eq!(
        (
            i.cache_seconds,
            i.negative_cache_seconds,
            i.timeout_ms,
            i.max_in_flight
        ),
        (60, 10, 2000, 64)
    );
    assert_eq!(c.resources[0].introspected_by, [0]);
    assert_eq!(c.resources[1].introspected_by, [0]);
    // Keys may come with it: inline (the cluster is for the endpoint) or fetched.
    let mut inline = introspecting(json!({"endpoint": "https://auth.example.com/introspect"}));
    inline["issuers"][0]["jwks"] = fixture("jwks.json");
    assert!(matches!(
        compile(&inline).unwrap().issuers[0].keys,
        KeySource::Inline(_)
    ));
    let mut fetched = introspecting(json!({}));
    fetched["issuers"][0]["jwks_uri"] = json!("https://auth.example.com/jwks");
    assert!(matches!(
        compile(&fetched).unwrap().issuers[0].keys,
        KeySource::Remote {
            jwks_uri: Some(_),
            ..
        }
    ));
}

#[test]
fn refuses_introspection_settings_with_the_field_at_fault() {
    let cases = [
        (
            json!({"client_secret": "s"}),
            "issuers[0].introspection",
            "secret_source",
        ),
        (
            json!({"client_secret_env": null}),
            "issuers[0].introspection",
            "secret_source",
        ),
        (
            json!({"client_secret_env": "1BAD"}),
            "issuers[0].introspection.client_secret_env",
            "invalid_env_name",
        ),
        (
            json!({"auth_method": "private_key_jwt"}),
            "issuers[0].introspection.auth_method",
            "unsupported_auth_method",
        ),
        (
            json!({"endpoint": "ftp://x/introspect"}),
            "issuers[0].introspection.endpoint",
            "invalid_url",
        ),
        (
            json!({"timeout_ms": 50}),
            "issuers[0].introspection.timeout_ms",
            "out_of_range",
        ),
        (
            json!({"max_in_flight": 0}),
            "issuers[0].introspection.max_in_flight",
            "out_of_range",
        ),
        (
            json!({"cache_seconds": 86_401}),
            "issuers[0].introspection.cache_seconds",
            "out_of_range",
        ),
        (
            json!({"negative_cache_seconds": 3601}),
            "issuers[0].introspection.negative_cache_seconds",
            "out_of_range",
        ),
        (
            json!({"client_id": ""}),
            "issuers[0].introspection.client_id",
            "invalid_text",
        ),
        (
            json!({"extra": 1}),
            "issuers[0].introspection.extra",
            "syntax",
        ),
    ];
    for (fields, path, code) in cases {
        let mut v = introspecting(fields.clone());
        if fields.get("client_secret_env") == Some(&Value::Null) {
            v["issuers"][0]["introspection"]
                .as_object_mut()
                .unwrap()
                .remove("client_secret_env");
        }
        assert_eq!(error_of(v), (path.to_string(), code), "{fields}");
    }
    let mut no_cluster = introspecting(json!({}));
    no_cluster["issuers"][0]
        .as_object_mut()
        .unwrap()
        .remove("cluster");
    no_cluster["issuers"][0]["jwks"] = fixture("jwks.json");
    assert_eq!(
        error_of(no_cluster),
        ("issuers[0].cluster".into(), "key_source")
    );
    let mut tunable = introspecting(json!({}));
    tunable["issuers"][0]["jwks_wait_ms"] = json!(100);
    assert_eq!(
        error_of(tunable),
        ("issuers[0].jwks_wait_ms".into(), "key_source")
    );
}

#[test]
fn never_shows_an_inline_secret() {
    let both = introspecting(json!({"client_secret": "hunter2"}));
    assert_eq!(error_of(both).1, "secret_source", "both given");
    let mut v = introspecting(json!({"client_secret": "hunter2"}));
    v["issuers"][0]["introspection"]
        .as_object_mut()
        .unwrap()
        .remove("client_secret_env");
    let c = compile(&v).unwrap();
    let i = c.issuers[0].introspection.as_ref().unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(
        i.secret.describe(),
        "inline client_secret (for development)"
    );
}

#[test]
fn origin_metadata_needs_a_cluster_and_one_document_per_origin() {
    let flag = "/resources/0/origin_authorization_server_metadata";
    assert!(base().origin_documents.is_empty(), "off by default");
    // The first authorization server has inline keys and no cluster: nothing to fetch with.
    let e = compile(&with(base_json(), flag, json!(true))).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.kind.code()),
        (
            "resources[0].origin_authorization_server_metadata",
            "origin_document"
        )
    );
    assert!(e.to_string().contains("no cluster"), "{e}");
    // Inline keys with a cluster for the document: accepted, and only then.
    let inline = with(base_json(), "/issuers/0/cluster", json!("auth"));
    assert_eq!(
        error_of(inline.clone()),
        ("issuers[0].jwks".to_string(), "key_source")
    );
    let c = compile(&with(inline, flag, json!(true))).unwrap();
    assert_eq!(c.origin_documents.len(), 1);
    assert_eq!(c.origin_documents[0].origin, "https://mcp.example.com:443");
    assert_eq!(c.origin_documents[0].issuer, 0);
    // Two resources of one origin, two first authorization servers: which document?
    let mut two = with(remote_json(), flag, json!(true));
    two["issuers"][1]["cluster"] = json!("second");
    two["issuers"][1].as_object_mut().unwrap().remove("jwks");
    two["resources"][1]["resource"] = json!("https://MCP.example.com:443/tools");
    two["resources"][1]["authorization_servers"] = json!(["https://second.example.com/tenant"]);
    two["resources"][1]["origin_authorization_server_metadata"] = json!(true);
    let e = compile(&two).unwrap_err();
    assert_eq!(e.path, "resources[1].origin_authorization_server_metadata");
    assert!(e.to_string().contains("resources[0]"), "{e}");
    two["resources"][1]["authorization_servers"] = json!(["https://auth.example.com"]);
    assert_eq!(compile(&two).unwrap().origin_documents.len(), 1);
}

#[test]
fn filters_tool_lists_by_default_where_tools_have_scopes() {
    let mut v = base_json();
    v["resources"][0]["tool_scopes"] =
        json!({"delete_all": ["mcp:admin"], "audit": ["mcp:read", "audit:view"]});
    let c = compile(&v).unwrap();
    assert!(c.resources[0].filter_tools_list);
    assert!(!c.resources[1].filter_tools_list, "no tool scopes: off");
    let granted = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        c.resources[0].tools_denied(&granted(&["mcp:read"])),
        ["audit", "delete_all"]
    );
    assert_eq!(
        c.resources[0].tools_denied(&granted(&["mcp:read", "audit:view"])),
        ["delete_all"]
    );
    assert!(c.resources[0]
        .tools_denied(&granted(&["mcp:admin", "audit:view", "mcp:read"]))
        .is_empty());
    v["resources"][0]["filter_tools_list"] = json!(false);
    assert!(!compile(&v).unwrap().resources[0].filter_tools_list);
    // On without tool scopes: lists are marked private, bodies are read.
    v["resources"][1]["filter_tools_list"] = json!(true);
    let c = compile(&v).unwrap();
    assert!(c.resources[1].filter_tools_list && c.resources[1].inspects_body());
    v["resources"][1]["filter_tools_list"] = json!("yes");
    assert!(compile(&v).is_err());
}

#[test]
fn refuses_offline_access_wherever_a_resource_would_ask_for_it() {
    let cases: [(&str, Value); 6] = [
        (
            "resources[0].scopes_supported[1]",
            json!({"scopes_supported": ["mcp:read", "offline_access"]}),
        ),
        (
            "resources[0].required_scopes[0]",
            json!({"required_scopes": ["offline_access"]}),
        ),
        (
            "resources[0].tool_scopes.echo[0]",
            json!({"tool_scopes": {"echo": ["offline_access"]}}),
        ),
        (
            "resources[0].method_scopes.tools/list[0]",
            json!({"method_scopes": {"tools/list": ["offline_access"]}}),
        ),
        (
            "scope_implies.mcp:admin[0]",
            json!({"scope_implies": {"mcp:admin": ["offline_access"]}}),
        ),
        (
            "scope_implies.offline_access",
            json!({"scope_implies": {"offline_access": ["mcp:read"]}}),
        ),
    ];
    for (path, patch) in cases {
        let mut v = base_json();
        for (k, val) in patch.as_object().unwrap() {
            if k == "scope_implies" {
                v[k] = val.clone();
            } else {
                v["resources"][0][k] = val.clone();
            }
        }
        let e = compile(&v).unwrap_err();
        assert_eq!(e.kind.code(), "offline_access", "{path}");
        assert_eq!(e.path, path);
        assert!(e.to_string().contains("MCP 2026-07-28"), "{e}");
    }
}

#[test]
fn reads_allowed_origins_as_browsers_send_them() {
    let mut v = base_json();
    assert_eq!(compile(&v).unwrap().allowed_origins, None);
    let good = [
        "https://app.example.com",
        "http://localhost:6274",
        "https://[::1]:8443",
        "vscode-webview://abc",
    ];
    v["allowed_origins"] = json!(good);
    assert_eq!(compile(&v).unwrap().allowed_origins.unwrap(), good);
    for bad in [
        "https://App.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "null",
        "*",
        "https://",
        "https://a:",
        "https://a:80x",
        "https://[::1",
        "https://a b",
    ] {
        v["allowed_origins"] = json!([bad]);
        let e = compile(&v).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("allowed_origins[0]", "invalid_origin"),
            "{bad}"
        );
    }
    v["allowed_origins"] = json!(["https://a.example", "https://a.example"]);
    assert_eq!(compile(&v).unwrap_err().kind.code(), "duplicate");
}
