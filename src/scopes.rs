//! Scopes a token grants (RFC 8693 §4.2 `scope`, space-delimited; and `scp`, a string or an
//! array, as Entra and Okta issue it), the scope hierarchy (`scope_implies`, applied
//! transitively: MCP 2026-07-28 asks servers to account for hierarchies), and the check
//! against what an operation needs (RFC 6750 §3.1 `insufficient_scope`; README, "MCP-aware authorization").

use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// For each scope, every scope it implies, directly or not (computed once, at configuration).
pub type Implications = HashMap<String, Vec<String>>;

/// The transitive closure of `scope_implies`, or the cycle that makes it meaningless.
pub fn closure(implies: &BTreeMap<String, Vec<String>>) -> Result<Implications, Vec<String>> {
    fn visit(
        scope: &str,
        implies: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        for next in implies.get(scope).into_iter().flatten() {
            if let Some(start) = path.iter().position(|p| p == next) {
                let mut cycle = path[start..].to_vec();
                cycle.push(next.clone());
                return Err(cycle);
            }
            if !out.contains(next) {
                out.push(next.clone());
            }
            path.push(next.clone());
            visit(next, implies, path, out)?;
            path.pop();
        }
        Ok(())
    }
    let mut result = Implications::new();
    for scope in implies.keys() {
        let mut out = Vec::new();
        visit(scope, implies, &mut vec![scope.clone()], &mut out)?;
        result.insert(scope.clone(), out);
    }
    Ok(result)
}

/// The granted scopes with everything they imply.
pub fn expand(mut granted: Vec<String>, implications: &Implications) -> Vec<String> {
    if implications.is_empty() {
        return granted;
    }
    let direct = granted.len();
    for i in 0..direct {
        for implied in implications.get(&granted[i]).into_iter().flatten() {
            if !granted.contains(implied) {
                granted.push(implied.clone());
            }
        }
    }
    granted
}

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

    fn implies(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn applies_scope_hierarchies_transitively() {
        let c = closure(&implies(&[
            ("mcp:admin", &["mcp:write"]),
            ("mcp:write", &["mcp:read"]),
        ]))
        .unwrap();
        assert_eq!(c["mcp:admin"], ["mcp:write", "mcp:read"]);
        assert_eq!(
            expand(vec!["mcp:admin".into()], &c),
            ["mcp:admin", "mcp:write", "mcp:read"]
        );
        assert_eq!(
            expand(vec!["mcp:write".into(), "x".into()], &c),
            ["mcp:write", "x", "mcp:read"]
        );
        assert_eq!(expand(vec!["mcp:read".into()], &c), ["mcp:read"]);
        let diamond = closure(&implies(&[
            ("a", &["b", "c"]),
            ("b", &["d"]),
            ("c", &["d"]),
        ]))
        .unwrap();
        assert_eq!(diamond["a"], ["b", "d", "c"]);
    }

    #[test]
    fn rejects_cycles_in_the_hierarchy() {
        assert_eq!(closure(&implies(&[("a", &["a"])])).unwrap_err(), ["a", "a"]);
        assert_eq!(
            closure(&implies(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])).unwrap_err(),
            ["a", "b", "c", "a"]
        );
    }

    #[test]
    fn lists_what_is_missing() {
        let needed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(missing(&needed, &["b".to_string()]), ["a"]);
        assert!(missing(&needed, &["a".to_string(), "b".to_string()]).is_empty());
        assert!(missing(&[], &[]).is_empty());
    }
}
