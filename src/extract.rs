//! Where the token is (RFC 6750 §2): only the `Authorization: Bearer` header. A token in the
//! query (`access_token`, §2.3) or several credentials are refused as `invalid_request`
//! rather than ignored, so a client learns its mistake instead of looping on 401s.

/// What the request carries, before any look at the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No `Authorization`, or a scheme other than Bearer: challenge without an error.
    Missing,
    Bearer(&'a str),
    /// A request error, with the `error_description` to send.
    Invalid(&'static str),
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn query_has_access_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        name == "access_token" || name.eq_ignore_ascii_case("access%5Ftoken")
    })
}

/// Reads the credential from the `Authorization` value(s) and the query string. Envoy joins
/// repeated `Authorization` headers with `,`, which no single Bearer credential contains; the
/// glue also passes every value it saw, so several values are caught either way.
pub fn extract<'a>(authorization: &[&'a str], query: Option<&str>) -> Credential<'a> {
    if query.is_some_and(query_has_access_token) {
        return Credential::Invalid(
            "access_token in the query string is not accepted; use the Authorization header",
        );
    }
    let value = match authorization {
        [] => return Credential::Missing,
        [one] => one.trim_matches([' ', '\t']),
        _ => return Credential::Invalid("several Authorization headers"),
    };
    if value.is_empty() {
        return Credential::Missing;
    }
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme; but "Basic x, Bearer y" is two credentials joined by Envoy.
        let joined_bearer = value.split(',').skip(1).any(|part| {
            let part = part.trim_start_matches([' ', '\t']);
            // Byte-wise: the value may hold any UTF-8, and slicing it could split a character.
            let b = part.as_bytes();
            b.len() > 6 && b[..6].eq_ignore_ascii_case(b"bearer") && b[6] == b' '
        });
        return if joined_bearer {
            Credential::Invalid("several Authorization headers")
        } else {
            Credential::Missing
        };
    }
    if rest.is_empty() {
        return Credential::Invalid("Bearer scheme without a token");
    }
    if rest.contains(',') {
        return Credential::Invalid("several Authorization headers");
    }
    Credential::Bearer(rest)
}

/// Checks the token's RFC 6750 syntax (after the length cap was applied).
pub fn check_syntax(token: &str) -> Result<(), &'static str> {
    if is_b64token(token) {
        Ok(())
    } else {
        Err("malformed Bearer credential")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Credential::*;

    #[test]
    fn reads_bearer_tokens_with_any_scheme_case() {
        assert_eq!(
            extract(&["Bearer abc.def.ghi"], None),
            Bearer("abc.def.ghi")
        );
        assert_eq!(extract(&["bearer abc"], None), Bearer("abc"));
        assert_eq!(extract(&["BEARER   abc"], None), Bearer("abc"));
        assert_eq!(extract(&["Bearer abc",], Some("x=1&y")), Bearer("abc"));
    }

    #[test]
    fn treats_absent_or_foreign_credentials_as_missing() {
        assert_eq!(extract(&[], None), Missing);
        assert_eq!(extract(&[""], None), Missing);
        assert_eq!(extract(&["Basic dXNlcjpwYXNz"], None), Missing);
        assert_eq!(extract(&["Digest realm=\"a\", nonce=\"b\""], None), Missing);
        assert_eq!(extract(&["Bearerabc"], None), Missing);
        // Multi-byte characters where a scheme name would end must not split a character.
        assert_eq!(extract(&["Basic x, abcde\u{e9}"], None), Missing);
        assert_eq!(
            extract(&["Basic x, \u{e9}\u{e9}\u{e9}\u{e9}"], None),
            Missing
        );
    }

    #[test]
    fn refuses_broken_or_multiple_credentials_as_invalid_request() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["Bearer"], None),
            (&["Bearer   "], None),
            (&["Bearer a,Bearer b"], None),
            (&["Bearer a, Bearer b"], None),
            (&["Basic x, Bearer y"], None),
            (&["Bearer a", "Bearer b"], None),
            (&[], Some("access_token=abc")),
            (&["Bearer a"], Some("x=1&access_token=abc")),
            (&[], Some("access%5Ftoken=abc")),
        ];
        for (values, query) in cases {
            assert!(
                matches!(extract(values, *query), Invalid(_)),
                "{values:?} {query:?}"
            );
        }
    }

    #[test]
    fn checks_b64token_syntax() {
        assert!(check_syntax("abc.DEF-_~+/==").is_ok());
        for bad in ["a b", "a\"b", "=", "a=b", "a;b", "é"] {
            assert!(check_syntax(bad).is_err(), "{bad}");
        }
    }
}
