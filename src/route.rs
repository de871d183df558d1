//! Which resource a request is for (README, "Which requests are checked"), and which Protected
//! Resource Metadata document a well-known path asks for (RFC 9728 §3.1).
//!
//! A request path is matched to a resource first by path: the longest protected prefix that
//! covers it, ASCII letters compared case-insensitively, because Express, ASP.NET and other
//! upstreams route `/MCP` to their `/mcp` handler. Only where several resources share that
//! path (on different hosts) does the `:authority` pick among them, normalized first (lower
//! case, no trailing dot, the scheme's default port explicit: RFC 9110 §4.2.3); an authority
//! that names none of them picks none, so no token is accepted on behalf of a tenant the
//! upstream may route the request to instead.
//!
//! A path that is not plainly normalized is matched under every reading an upstream might
//! make of it (`paths`): protected if any reading is, refused when readings disagree.

use crate::config::{Config, OriginDocument, ProtectedResource};
use crate::metadata;
use crate::paths::{self, Normalized};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'c> {
    /// Outside every resource: forwarded untouched.
    Outside,
    /// A metadata path: the document it names, or none for this authority (404).
    Metadata(Option<&'c ProtectedResource>),
    Protected(&'c ProtectedResource),
    /// Several resources share the path and the `:authority` names none of them (421).
    Misdirected,
    /// Refused with 400 on behalf of this resource, for this reason.
    BadPath(&'c ProtectedResource, &'static str),
}

/// What a path alone, in one reading, points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick<'c> {
    Outside,
    Resource(&'c ProtectedResource),
    Misdirected,
}

const NOT_NORMALIZED: &str =
    "request path is not normalized (encoded slash, backslash or escaped escape)";
const SPLIT: &str = "request path reads as more than one protected resource";

/// Routes a request by its path (without the query) and `:authority`.
pub fn route<'c>(config: &'c Config, path: &str, authority: &str) -> Route<'c> {
    let normalized = paths::normalize(path);
    if let Normalized::Plain(plain) = normalized {
        if let Some(found) = metadata_document(config, plain, authority) {
            return Route::Metadata(found);
        }
        return match pick(config, plain, authority) {
            Pick::Outside => Route::Outside,
            Pick::Resource(resource) => Route::Protected(resource),
            Pick::Misdirected => Route::Misdirected,
        };
    }
    let ambiguous = matches!(normalized, Normalized::Ambiguous(_));
    if !ambiguous {
        if let Some(found) = metadata_document(config, normalized.as_str(), authority) {
            return Route::Metadata(found);
        }
    }
    // Fail closed: protected however an upstream reads it, refused when readings disagree.
    let readings = paths::partial_readings(path);
    let mut found: Option<&ProtectedResource> = None;
    let mut split = false;
    let mut misdirected = false;
    for reading in [normalized.as_str(), path]
        .into_iter()
        .chain(readings.iter().map(String::as_str))
    {
        match pick(config, reading, authority) {
            Pick::Outside => {}
            Pick::Misdirected => misdirected = true,
            Pick::Resource(r) => match found {
                None => found = Some(r),
                Some(first) => split |= !std::ptr::eq(first, r),
            },
        }
    }
    match found {
        _ if misdirected => Route::Misdirected,
        None => Route::Outside,
        Some(resource) if ambiguous => Route::BadPath(resource, NOT_NORMALIZED),
        Some(resource) if split => Route::BadPath(resource, SPLIT),
        Some(resource) => Route::Protected(resource),
    }
}

/// The resource protecting `path` (one reading, no query): the longest covering prefix;
/// among resources sharing it, the one `authority` names.
fn pick<'c>(config: &'c Config, path: &str, authority: &str) -> Pick<'c> {
    let path = paths::fold_case_lookalikes(path);
    let covers = |r: &&ProtectedResource| paths::is_under(&path, &r.path_prefix);
    let Some(longest) = config
        .resources
        .iter()
        .filter(covers)
        .map(|r| r.path_prefix.len())
        .max()
    else {
        return Pick::Outside;
    };
    // Paths differing only in case are refused at configuration, so these share one path.
    let sharing = || {
        config
            .resources
            .iter()
            .filter(covers)
            .filter(move |r| r.path_prefix.len() == longest)
    };
    let mut all = sharing();
    match (all.next(), all.next()) {
        (Some(only), None) => Pick::Resource(only),
        _ => by_authority(sharing(), authority).map_or(Pick::Misdirected, Pick::Resource),
    }
}

/// What a request for a metadata path gets: the resource whose metadata path it is, or for
/// the root well-known path the one resource it unambiguously means (RFC 9728 §3.1). `None`
/// for a path that is not a metadata path; `Some(None)` for "metadata path, but no document
/// for this authority" (404).
pub fn metadata_document<'c>(
    config: &'c Config,
    path: &str,
    authority: &str,
) -> Option<Option<&'c ProtectedResource>> {
    if !path.starts_with(metadata::WELL_KNOWN) {
        return None;
    }
    // Several resources share a path on different hosts: the document is the one for the
    // request's host, and none (404) when the host names none of them or several.
    let exact = || config.resources.iter().filter(|r| r.metadata_path == path);
    let mut count = exact();
    match (count.next(), count.next()) {
        (Some(only), None) => return Some(Some(only)),
        (Some(_), Some(_)) => return Some(by_authority(exact(), authority)),
        (None, _) => {}
    }
    if path != metadata::WELL_KNOWN {
        return None;
    }
    if let [only] = config.resources.as_slice() {
        return Some(Some(only));
    }
    Some(by_authority(config.resources.iter(), authority))
}

/// RFC 8414 §3 and OpenID Connect Discovery §4 at an origin's root: where a client of MCP
/// 2025-03-26 looks for the authorization server of an MCP server.
pub const AS_METADATA_PATHS: [&str; 2] = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
];

/// The origin document a request for `path` (no query) at `authority` asks for: on the two
/// root paths, the one origin that answers them, when that is unambiguous (the only resource
/// configured set the flag, or the request's authority names a flagged origin), as for the
/// root Protected Resource Metadata (RFC 9728 §3.1).
pub fn origin_document<'c>(
    config: &'c Config,
    path: &str,
    authority: &str,
) -> Option<&'c OriginDocument> {
    if config.origin_documents.is_empty() || !AS_METADATA_PATHS.contains(&path) {
        return None;
    }
    if config.resources.len() == 1 {
        return config.origin_documents.first();
    }
    config.origin_documents.iter().find(|d| {
        config
            .resources
            .get(d.resource)
            .is_some_and(|r| r.url.matches_authority(authority))
    })
}

/// The one candidate whose URL names `authority`, if exactly one does.
fn by_authority<'c>(
    candidates: impl Iterator<Item = &'c ProtectedResource>,
    authority: &str,
) -> Option<&'c ProtectedResource> {
    let mut matching = candidates.filter(|r| r.url.matches_authority(authority));
    match (matching.next(), matching.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, base_json, compile};
    use serde_json::json;

    fn resource_of<'c>(route: Route<'c>) -> Option<&'c str> {
        match route {
            Route::Protected(r) => Some(r.resource.as_str()),
            _ => None,
        }
    }

    /// Three resources: /mcp on two hosts, and /mcp/admin on the first.
    fn shared_path() -> Config {
        let mut v = base_json();
        v["resources"][1]["resource"] = json!("https://other.example.com/mcp");
        v["resources"].as_array_mut().unwrap().push(json!({
            "resource": "https://mcp.example.com/mcp/admin",
            "authorization_servers": ["https://auth.example.com"]
        }));
        compile(&v).unwrap()
    }

    #[test]
    fn matches_paths_to_resources_by_longest_prefix_then_authority() {
        let c = shared_path();
        let pick = |path, authority| resource_of(route(&c, path, authority));
        assert_eq!(
            pick("/mcp", "mcp.example.com"),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(
            pick("/mcp/x", "other.example.com"),
            Some("https://other.example.com/mcp")
        );
        assert_eq!(
            pick("/mcp/admin/x", "other.example.com"),
            Some("https://mcp.example.com/mcp/admin"),
            "only one resource has the longest prefix"
        );
        assert_eq!(route(&c, "/mcpx", "mcp.example.com"), Route::Outside);
    }

    #[test]
    fn an_authority_naming_none_of_the_resources_sharing_a_path_is_misdirected() {
        let c = shared_path();
        for authority in [
            "unknown.example.com",
            "mcp.example.com:8443",
            "",
            "127.0.0.1:10000",
        ] {
            assert_eq!(
                route(&c, "/mcp", authority),
                Route::Misdirected,
                "{authority}"
            );
            assert_eq!(
                route(&c, "/MCP/x", authority),
                Route::Misdirected,
                "{authority}"
            );
        }
        // Normalized before comparing: case, a trailing dot, the default port.
        for authority in [
            "MCP.example.com",
            "mcp.example.com.",
            "mcp.example.com:443",
            "mcp.example.com.:443",
        ] {
            assert_eq!(
                resource_of(route(&c, "/mcp", authority)),
                Some("https://mcp.example.com/mcp"),
                "{authority}"
            );
        }
        // Readings of an unnormalized path that reach the shared path are misdirected too.
        assert_eq!(
            route(&c, "//mcp", "unknown.example.com"),
            Route::Misdirected
        );
        // A path only one resource covers needs no authority.
        let single = base();
        assert_eq!(
            resource_of(route(&single, "/mcp", "127.0.0.1:10000")),
            Some("https://mcp.example.com/mcp")
        );
    }

    #[test]
    fn protects_paths_that_differ_only_in_case() {
        let c = base();
        for path in ["/MCP", "/Mcp/", "/mCp/x", "/%4DCP", "//MCP", "/mc\u{17F}x"] {
            let expected = (path != "/mc\u{17F}x").then_some("https://mcp.example.com/mcp");
            assert_eq!(resource_of(route(&c, path, "x")), expected, "{path}");
        }
        assert_eq!(
            resource_of(route(&c, "/TOOL\u{17F}", "x")),
            Some("https://other.example.com/tools")
        );
        assert_eq!(route(&c, "/MCPX", "x"), Route::Outside);
        // The metadata path is exact: another case is not a metadata request.
        assert_eq!(
            route(&c, "/.well-known/OAUTH-protected-resource/mcp", "x"),
            Route::Outside
        );
    }

    #[test]
    fn refuses_ambiguous_and_split_readings_under_the_resource_they_reach() {
        let c = base();
        for path in ["/mcp%2Fx", "/MCP%5cx", "/mcp\\x"] {
            assert!(
                matches!(route(&c, path, "x"), Route::BadPath(r, NOT_NORMALIZED) if r.resource == "https://mcp.example.com/mcp"),
                "{path}"
            );
        }
        assert!(matches!(
            route(&c, "/mcp//../tools", "x"),
            Route::BadPath(_, SPLIT)
        ));
        assert_eq!(route(&c, "/a%2Fb", "x"), Route::Outside);
    }

    #[test]
    fn serves_the_metadata_document_the_path_and_authority_name() {
        let c = shared_path();
        let doc = |authority| {
            metadata_document(&c, "/.well-known/oauth-protected-resource/mcp", authority)
                .map(|found| found.map(|r| r.resource.as_str()))
        };
        assert_eq!(
            doc("other.example.com"),
            Some(Some("https://other.example.com/mcp"))
        );
        assert_eq!(
            doc("mcp.example.com.:443"),
            Some(Some("https://mcp.example.com/mcp"))
        );
        assert_eq!(doc("unknown.example.com"), Some(None), "ambiguous: 404");
    }

    #[test]
    fn answers_the_root_metadata_path_only_when_unambiguous() {
        let c = base();
        let doc = |path, authority| {
            metadata_document(&c, path, authority).map(|found| found.map(|r| r.resource.as_str()))
        };
        let root = "/.well-known/oauth-protected-resource";
        assert_eq!(
            doc(root, "mcp.example.com"),
            Some(Some("https://mcp.example.com/mcp"))
        );
        assert_eq!(
            doc(root, "other.example.com:443"),
            Some(Some("https://other.example.com/tools"))
        );
        assert_eq!(doc(root, "127.0.0.1:8000"), Some(None));
        assert_eq!(
            doc("/.well-known/oauth-protected-resource/tools", "x"),
            Some(Some("https://other.example.com/tools"))
        );
        assert_eq!(doc("/.well-known/oauth-protected-resource/nope", "x"), None);
        assert_eq!(doc("/mcp", "x"), None);
        let mut single = base_json();
        single["resources"].as_array_mut().unwrap().pop();
        let single = compile(&single).unwrap();
        assert!(matches!(
            metadata_document(&single, root, "anything"),
            Some(Some(_))
        ));
    }

    #[test]
    fn answers_the_origin_paths_only_for_an_origin_that_asked_to() {
        let mut v = base_json();
        v["issuers"][0]["cluster"] = json!("auth");
        v["resources"][0]["origin_authorization_server_metadata"] = json!(true);
        let c = compile(&v).unwrap();
        for path in AS_METADATA_PATHS {
            assert!(origin_document(&c, path, "mcp.example.com").is_some());
            assert!(origin_document(&c, path, "MCP.example.com:443").is_some());
            // The other resource's host did not set the flag: its upstream answers.
            assert!(origin_document(&c, path, "other.example.com").is_none());
        }
        assert!(origin_document(
            &c,
            "/.well-known/oauth-authorization-server/x",
            "mcp.example.com"
        )
        .is_none());
        assert!(origin_document(&c, "/mcp", "mcp.example.com").is_none());
        // One resource only: whatever the authority, as for the root metadata.
        v["resources"].as_array_mut().unwrap().truncate(1);
        let single = compile(&v).unwrap();
        assert!(origin_document(&single, AS_METADATA_PATHS[0], "mcp.internal:8080").is_some());
    }
}
