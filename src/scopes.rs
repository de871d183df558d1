//! Scopes a token grants (RFC 8693 §4.2 `scope`, space-delimited; and `scp`, a string or an
//! array, as Entra and Okta issue it) and the check against what an operation needs (SPEC §5).

use serde_json::{Map, Value};

/// Every scope the claims grant, in order of appearance, without duplicates. Claims of the
/// wrong type grant nothing (a missing scope is a 403, never a pass).
pub fn granted(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        for scope in s.split(' ').filter(|s| !s.is_empty()) {
            if !out.iter().any(|o| o == scope) {
                out.push(scope.to_string());
            }
        }
    };
    if let Some(Value::String(s)) = claims.get("scope") {
        add(s);
    }
    match claims.get("scp") {
        Some(Value::String(s)) => add(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut add),
        _ => {}
    }
    out
}

/// The scopes of `needed` that `granted` lacks.
pub fn missing<'a>(needed: &'a [String], granted: &[String]) -> Vec<&'a str> {
    needed
        .iter()
        .filter(|n| !granted.contains(n))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_scope_and_scp_in_every_accepted_shape() {
        assert_eq!(granted(&claims(json!({"scope": "a  b"}))), ["a", "b"]);
        assert_eq!(granted(&claims(json!({"scp": "a b"}))), ["a", "b"]);
        assert_eq!(granted(&claims(json!({"scp": ["a", "b", 3]}))), ["a", "b"]);
        assert_eq!(
            granted(&claims(json!({"scope": "a", "scp": ["a", "c"]}))),
            ["a", "c"]
        );
    }

    #[test]
    fn grants_nothing_for_claims_of_the_wrong_type() {
        assert!(granted(&claims(json!({"scope": ["a"], "scp": {"a": 1}}))).is_empty());
        assert!(granted(&claims(json!({}))).is_empty());
    }

    #[test]
    fn lists_what_is_missing() {
        let needed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(missing(&needed, &["b".to_string()]), ["a"]);
        assert!(missing(&needed, &["a".to_string(), "b".to_string()]).is_empty());
        assert!(missing(&[], &[]).is_empty());
    }
}
