//! OAuth 2.0 Token Introspection (RFC 7662) for opaque access tokens: which tokens are opaque,
//! the request the filter sends (§2.1), the answer it reads (§2.2) and when it accepts one
//! for a resource (RFC 8707 audience), and the record every worker shares in a cache keyed by
//! a SHA-256 of the token, never the token itself.

use crate::config::{ClientAuth, Config, Introspection, IssuerId, ProtectedResource};
use crate::json::{b64url_decode, decode_object};
use crate::token::{Facts, Signed, VerifiedToken};
use crate::url::HttpUrl;
use crate::verify::{self, AuthError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::rc::Rc;

/// A SHA-256 of a token: the cache key, and what logs may show of it.
pub type Digest = [u8; 32];

pub fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a log line may say about a token: the start of its SHA-256.
pub fn log_id(digest: &Digest) -> String {
    hex(&digest[..6])
}

/// Whether a bearer token is a JWS compact serialization (RFC 7515 §7.1): three base64url
/// parts whose first is a JSON object with an `alg`. Anything else is opaque.
pub fn is_jws(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    b64url_decode(header).is_some()
        && decode_object(header).is_ok_and(|h| h.get("alg").is_some_and(Value::is_string))
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2): what RFC 6749 §2.3.1 and RFC 7662
/// §2.1 send.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One issuer's introspection client, ready to call: built at configuration with the secret
/// resolved, so a request only adds its token.
#[derive(Clone)]
pub struct Client {
    pub cluster: String,
    pub timeout_ms: u64,
    pub max_in_flight: usize,
    /// `:method`, `:path`, `:authority`, `:scheme`, then the request headers.
    headers: Vec<(&'static str, String)>,
    /// `client_id`/`client_secret` form members, for `client_secret_post`.
    credentials: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(introspection: &Introspection, endpoint: &HttpUrl, secret: &str) -> Client {
        let mut path = if endpoint.path.is_empty() {
            "/".to_string()
        } else {
            endpoint.path.clone()
        };
        if let Some(q) = &endpoint.query {
            path = format!("{path}?{q}");
        }
        let mut headers = vec![
            (":method", "POST".to_string()),
            (":path", path),
            (":authority", endpoint.authority.clone()),
            (":scheme", endpoint.scheme.clone()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept", "application/json".to_string()),
            ("user-agent", "mcp-oauth-filter".to_string()),
        ];
        let id = form_encode(&introspection.client_id);
        let secret = form_encode(secret);
        let credentials = match introspection.auth_method {
            ClientAuth::Basic => {
                let basic = STANDARD.encode(format!("{id}:{secret}"));
                headers.push(("authorization", format!("Basic {basic}")));
                None
            }
            ClientAuth::Post => Some(format!("&client_id={id}&client_secret={secret}")),
        };
        Client {
            cluster: introspection.cluster.clone(),
            timeout_ms: introspection.timeout_ms,
            max_in_flight: introspection.max_in_flight,
            headers,
            credentials,
        }
    }

    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    /// The form body asking about `token` (RFC 7662 §2.1).
    pub fn body(&self, token: &str) -> Vec<u8> {
        let mut body = format!("token={}&token_type_hint=access_token", form_encode(token));
        if let Some(credentials) = &self.credentials {
            body.push_str(credentials);
        }
        body.into_bytes()
    }
}

/// Why an introspection answer is unusable (then the request gets 503, never 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// No answer: the endpoint was unreachable or the call timed out.
    NoAnswer,
    Status(u16),
    TooLarge,
    NotJson,
    /// `active` missing or not a boolean.
    NotIntrospection,
}

impl AnswerError {
    pub fn code(self) -> &'static str {
        match self {
            AnswerError::NoAnswer => "no_answer",
            AnswerError::Status(_) => "http_status",
            AnswerError::TooLarge => "too_large",
            AnswerError::NotJson => "not_json",
            AnswerError::NotIntrospection => "not_introspection",
        }
    }
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::NoAnswer => f.write_str("no answer (timeout or connection failure)"),
            AnswerError::Status(s) => write!(f, "HTTP status {s}"),
            AnswerError::TooLarge => f.write_str("answer too large"),
            AnswerError::NotJson => f.write_str("answer is not a JSON object"),
            AnswerError::NotIntrospection => {
                f.write_str("answer has no boolean \"active\" (not RFC 7662)")
            }
        }
    }
}

/// An introspection answer (RFC 7662 §2.2): inactive, or active with its members.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Inactive,
    Active(Map<String, Value>),
}

/// Reads an answer; `body` is `None` when it was larger than the filter reads.
pub fn read_answer(status: Option<u16>, body: Option<&[u8]>) -> Result<Answer, AnswerError> {
    let status = status.ok_or(AnswerError::NoAnswer)?;
    if status != 200 {
        return Err(AnswerError::Status(status));
    }
    let body = body.ok_or(AnswerError::TooLarge)?;
    let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(body) else {
        return Err(AnswerError::NotJson);
    };
    match members.get("active") {
        Some(Value::Bool(true)) => Ok(Answer::Active(members)),
        Some(Value::Bool(false)) => Ok(Answer::Inactive),
        _ => Err(AnswerError::NotIntrospection),
    }
}

fn time(members: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, AuthError> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(AuthError::Malformed(match name {
            "exp" => "introspection exp is not a number",
            _ => "introspection nbf is not a number",
        })),
    }
}

/// Accepts an active answer for `resource` at `now` (RFC 7662 §2.2, RFC 8707 §2): `exp` not
/// past and `nbf` not future (with the clock skew), `iss` (when present) the issuer, `aud`
/// present and naming the resource or one of its audiences, not a refresh token. Scopes come
/// from `scope`; claim headers from the answer's members, as from a JWT's claims.
pub fn accept(
    members: &Map<String, Value>,
    issuer: IssuerId,
    resource: &ProtectedResource,
    config: &Config,
    now: u64,
) -> Result<VerifiedToken, AuthError> {
    let skew = config.clock_skew as f64;
    let now_f = now as f64;
    let exp = time(members, "exp")?;
    if exp.is_some_and(|exp| now_f >= exp + skew) {
        return Err(AuthError::Expired);
    }
    let nbf = time(members, "nbf")?;
    if nbf.is_some_and(|nbf| nbf > now_f + skew) {
        return Err(AuthError::NotYetValid);
    }
    let name = config.issuers.get(issuer).map(|i| i.issuer.as_str());
    let iss = match members.get("iss") {
        None => None,
        Some(Value::String(iss)) if Some(iss.as_str()) == name => Some(iss.clone()),
        Some(_) => return Err(AuthError::IssuerNotAccepted),
    };
    let aud: Vec<String> = match members.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if !aud.iter().any(|a| resource.audiences.contains(a)) {
        return Err(AuthError::AudienceNotAccepted);
    }
    if members
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("refresh_token"))
    {
        return Err(AuthError::WrongType);
    }
    let granted = match members.get("scope") {
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let vouched = verify::vouched(config, issuer, members, granted);
    Ok(VerifiedToken(Rc::new(Signed {
        alg: None,
        issuer,
        key: 0,
        exp: exp.unwrap_or(f64::MAX),
        facts: Facts { iss, aud, exp, nbf },
        identity: vouched.identity,
        scopes: vouched.scopes,
        header_values: vouched.header_values,
    })))
}

/// Slots of the shared cache: at most this many entries, a token's slot picked by its digest
/// (two tokens in one slot take turns: an extra call, never a wrong answer).
pub const CACHE_SLOTS: u16 = 8192;

/// Records larger than this are not cached (they are still used once).
const MAX_RECORD_BYTES: usize = 16 * 1024;

/// The shared-data key of the slot for `digest`'s answer at `issuer` (each issuer's answer
/// about a token has its own slot: an inactive answer from one does not evict another's).
pub fn cache_key(issuer: &str, digest: &Digest) -> String {
    let spread = crate::keys::fnv1a(&[issuer.as_bytes()]) as u16;
    let slot = (u16::from_be_bytes([digest[0], digest[1]]) ^ spread) % CACHE_SLOTS;
    format!("mcp-oauth-filter/v1/introspection/{slot}")
}

/// What one cache slot holds: whose answer, until when, and the answer (`None`: inactive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    digest: String,
    issuer: String,
    until: u64,
    answer: Option<Map<String, Value>>,
}

/// What the cache knows about a token at an issuer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The answer's members, and until when (seconds since the epoch) it is kept.
    Active(Map<String, Value>, u64),
    Inactive,
    Unknown,
}

/// Reads a slot's bytes for `digest` at `issuer` at `now`.
pub fn cached(slot: Option<&[u8]>, digest: &Digest, issuer: &str, now: u64) -> Cached {
    let Some(record) = slot.and_then(|b| serde_json::from_slice::<Record>(b).ok()) else {
        return Cached::Unknown;
    };
    if record.digest != hex(digest) || record.issuer != issuer || now >= record.until {
        return Cached::Unknown;
    }
    match record.answer {
        Some(members) => Cached::Active(members, record.until),
        None => Cached::Inactive,
    }
}

/// How long `answer` is kept at `now`: min(`cache_seconds`, `exp` − now) when active,
/// `negative_cache_seconds` when not (0: not at all).
pub fn keep_seconds(answer: &Answer, introspection: &Introspection, now: u64) -> u64 {
    match answer {
        Answer::Inactive => introspection.negative_cache_seconds,
        Answer::Active(members) => {
            let until_exp = match members.get("exp").and_then(Value::as_f64) {
                Some(exp) if exp > now as f64 => (exp - now as f64) as u64,
                Some(_) => 0,
                None => u64::MAX,
            };
            introspection.cache_seconds.min(until_exp)
        }
    }
}

/// The slot's bytes recording `answer` for `digest` at `issuer`, kept for
/// [`keep_seconds`]; `None` when it is not to be kept at all.
pub fn record(
    answer: &Answer,
    digest: &Digest,
    issuer: &str,
    introspection: &Introspection,
    now: u64,
) -> Option<Vec<u8>> {
    let ttl = keep_seconds(answer, introspection, now);
    if ttl == 0 {
        return None;
    }
    let members = match answer {
        Answer::Inactive => None,
        Answer::Active(members) => Some(members.clone()),
    };
    let bytes = serde_json::to_vec(&Record {
        digest: hex(digest),
        issuer: issuer.to_string(),
        until: now.saturating_add(ttl),
        answer: members,
    })
    .ok()?;
    (bytes.len() <= MAX_RECORD_BYTES).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base_json, compile};
    use crate::verify::tests::{good_token, NOW};
    use serde_json::json;

    fn introspecting() -> Config {
        let mut v = base_json();
        v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
            "introspection": {"endpoint": "https://auth.example.com/introspect?x=1",
                "client_id": "mcp gateway", "client_secret": "s3cr:t/+"}});
        compile(&v).unwrap()
    }

    fn intro(c: &Config) -> &Introspection {
        c.issuers[0].introspection.as_ref().unwrap()
    }

    fn active(extra: Value) -> Map<String, Value> {
        let mut m = json!({"active": true, "aud": "https://mcp.example.com/mcp",
            "iss": "https://auth.example.com", "exp": NOW + 300, "scope": "mcp:read mcp:write",
            "sub": "user-9", "client_id": "app"});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m.as_object().unwrap().clone()
    }

    #[test]
    fn tells_opaque_tokens_from_jws() {
        assert!(is_jws(&good_token()));
        for opaque in [
            "abc",
            "a.b",
            "a.b.c",
            "eyJhbGciOiJSUzI1NiJ9.e30",
            "2YotnFZFEjr1zCsicMWpAA",
            "a.b.c.d.e",
        ] {
            assert!(!is_jws(opaque), "{opaque}");
        }
        // A header that is JSON but names no algorithm is not a JWS either.
        assert!(!is_jws("eyJ0eXAiOiJKV1QifQ.e30.c2ln"));
    }

    #[test]
    fn builds_the_rfc7662_request_with_basic_or_post_client_authentication() {
        let c = introspecting();
        let endpoint = intro(&c).endpoint.clone().unwrap();
        let client = Client::new(intro(&c), &endpoint, "s3cr:t/+");
        let headers = client.headers();
        assert!(headers.contains(&(":method", "POST")));
        assert!(headers.contains(&(":path", "/introspect?x=1")));
        assert!(headers.contains(&(":authority", "auth.example.com")));
        assert!(headers.contains(&("content-type", "application/x-www-form-urlencoded")));
        // RFC 6749 §2.3.1: the id and secret form-encoded, then Basic.
        let basic = STANDARD.encode("mcp+gateway:s3cr%3At%2F%2B");
        assert!(headers.contains(&("authorization", format!("Basic {basic}").as_str())));
        assert_eq!(
            client.body("a+b/c="),
            b"token=a%2Bb%2Fc%3D&token_type_hint=access_token"
        );
        let mut post = intro(&c).clone();
        post.auth_method = ClientAuth::Post;
        let client = Client::new(&post, &endpoint, "s3cr:t/+");
        assert!(client.headers().iter().all(|(n, _)| *n != "authorization"));
        assert_eq!(
            String::from_utf8(client.body("t")).unwrap(),
            "token=t&token_type_hint=access_token&client_id=mcp+gateway&client_secret=s3cr%3At%2F%2B"
        );
        assert!(
            !format!("{client:?}").contains("s3cr"),
            "Debug shows no secret"
        );
    }

    #[test]
    fn reads_only_rfc7662_answers() {
        assert_eq!(
            read_answer(Some(200), Some(br#"{"active":false}"#)),
            Ok(Answer::Inactive)
        );
        assert!(matches!(
            read_answer(Some(200), Some(br#"{"active":true,"sub":"x"}"#)),
            Ok(Answer::Active(_))
        ));
        for (status, body, e) in [
            (None, Some(&b"{}"[..]), AnswerError::NoAnswer),
            (Some(500), Some(&b"{}"[..]), AnswerError::Status(500)),
            (Some(200), None, AnswerError::TooLarge),
            (Some(200), Some(&b"<html>"[..]), AnswerError::NotJson),
            (Some(200), Some(&b"[true]"[..]), AnswerError::NotJson),
            (
                Some(200),
                Some(&br#"{"active":"true"}"#[..]),
                AnswerError::NotIntrospection,
            ),
            (
                Some(200),
                Some(&br#"{"sub":"x"}"#[..]),
                AnswerError::NotIntrospection,
            ),
        ] {
            assert_eq!(read_answer(status, body), Err(e), "{status:?}");
        }
    }

    #[test]
    fn accepts_an_active_answer_only_for_this_resource_in_its_lifetime() {
        let c = introspecting();
        let r = &c.resources[0];
        let ok = accept(&active(json!({})), 0, r, &c, NOW).unwrap();
        assert_eq!(ok.scopes, ["mcp:read", "mcp:write"]);
        assert_eq!(ok.header_values, [Some("user-9".to_string())]);
        assert!(accept(
            &active(json!({"aud": ["x", "https://mcp.example.com/mcp"]})),
            0,
            r,
            &c,
            NOW
        )
        .is_ok());
        let no_aud = {
            let mut m = active(json!({}));
            m.remove("aud");
            m
        };
        let no_exp = {
            let mut m = active(json!({}));
            m.remove("exp");
            m
        };
        assert!(accept(&no_exp, 0, r, &c, NOW).is_ok(), "exp is optional");
        for (members, e) in [
            (no_aud, AuthError::AudienceNotAccepted),
            (
                active(json!({"aud": "https://other.example.com/tools"})),
                AuthError::AudienceNotAccepted,
            ),
            (active(json!({"exp": NOW - 61})), AuthError::Expired),
            (active(json!({"nbf": NOW + 61})), AuthError::NotYetValid),
            (
                active(json!({"iss": "https://evil.example.com"})),
                AuthError::IssuerNotAccepted,
            ),
            (
                active(json!({"token_type": "refresh_token"})),
                AuthError::WrongType,
            ),
            (
                active(json!({"exp": "soon"})),
                AuthError::Malformed("introspection exp is not a number"),
            ),
        ] {
            assert_eq!(accept(&members, 0, r, &c, NOW), Err(e));
        }
    }

    #[test]
    fn caches_by_digest_never_past_exp_and_inactive_answers_briefly() {
        let c = introspecting();
        let i = intro(&c);
        let d = digest("opaque-token");
        let iss = "https://auth.example.com";
        let long = Answer::Active(active(json!({"exp": NOW + 3600})));
        let bytes = record(&long, &d, iss, i, NOW).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("opaque-token"));
        assert!(matches!(
            cached(Some(&bytes), &d, iss, NOW + 59),
            Cached::Active(_, until) if until == NOW + 60
        ));
        assert_eq!(
            cached(Some(&bytes), &d, iss, NOW + 60),
            Cached::Unknown,
            "cache_seconds"
        );
        let short = Answer::Active(active(json!({"exp": NOW + 5})));
        let bytes = record(&short, &d, iss, i, NOW).unwrap();
        assert_eq!(
            cached(Some(&bytes), &d, iss, NOW + 5),
            Cached::Unknown,
            "never past exp"
        );
        let bytes = record(&Answer::Inactive, &d, iss, i, NOW).unwrap();
        assert_eq!(cached(Some(&bytes), &d, iss, NOW + 9), Cached::Inactive);
        assert_eq!(cached(Some(&bytes), &d, iss, NOW + 10), Cached::Unknown);
        // Another token in the same slot, or another issuer, is not this answer.
        assert_eq!(
            cached(Some(&bytes), &digest("other"), iss, NOW),
            Cached::Unknown
        );
        assert_eq!(cached(Some(&bytes), &d, "https://x", NOW), Cached::Unknown);
        assert_eq!(cached(Some(b"garbage"), &d, iss, NOW), Cached::Unknown);
        let expired = Answer::Active(active(json!({"exp": NOW - 1})));
        assert_eq!(record(&expired, &d, iss, i, NOW), None);
        assert!(cache_key(iss, &d).starts_with("mcp-oauth-filter/v1/introspection/"));
        assert_eq!(log_id(&d).len(), 12);
    }
}
