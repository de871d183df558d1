//! Property: nothing held is released except by its decision.

use super::*;
use proptest::prelude::*;

/// What one request carries.
#[derive(Debug, Clone, Copy)]
enum Credential {
    Good,
    /// The issuer's `kid`, another key's signature.
    Forged,
    /// A `kid` the issuer never publishes.
    UnknownKid,
    Missing,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Allowed,
    Forbidden,
    NotJson,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The next piece of the request (headers, a chunk, the end or the trailers).
    Advance(usize),
    Tick,
    Clock(u64),
    /// Every call in flight is answered with the issuer's keys (rsa-a).
    KeysArrive,
    Done(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize).prop_map(Step::Advance),
        2 => Just(Step::Tick),
        1 => (0..3_000u64).prop_map(Step::Clock),
        1 => Just(Step::KeysArrive),
        1 => (0..4usize).prop_map(Step::Done),
    ]
}

fn request() -> impl Strategy<Value = (Credential, Body, bool)> {
    (
        prop_oneof![
            Just(Credential::Good),
            Just(Credential::Forged),
            Just(Credential::UnknownKid),
            Just(Credential::Missing)
        ],
        prop_oneof![
            Just(Body::Allowed),
            Just(Body::Forbidden),
            Just(Body::NotJson)
        ],
        any::<bool>(),
    )
}

/// What the host has let through of one request.
#[derive(Debug, Default)]
struct Seen {
    /// Pieces sent so far: 0 none, 1 headers, 2 first chunk, 3 second chunk, 4 ended.
    sent: usize,
    done: bool,
    headers_released: bool,
    /// Chunks the filter paused (the host holds them until the request is resumed).
    paused_chunks: usize,
    body_released: bool,
    answered: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_pending_request_is_released_except_by_its_decision(
        hold in any::<bool>(),
        remote in any::<bool>(),
        requests in prop::collection::vec(request(), 4),
        steps in prop::collection::vec(step(), 0..60),
    ) {
        let mut v = tools_json(hold);
        if remote {
            v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
                "jwks_uri": "https://auth.example.com/jwks", "jwks_wait_ms": 2000});
        }
        let mut w = worker(&v, FakeHost::new());
        let mut seen: Vec<Seen> = (0..4).map(|_| Seen::default()).collect();
        let mut calls: Vec<Dispatched> = Vec::new();
        let tokens: Vec<Option<String>> = requests.iter().map(|(c, _, _)| match c {
            Credential::Good => Some(bearer("rsa-a", "rsa-a", "mcp:read")),
            Credential::Forged => Some(bearer("rsa-b", "rsa-a", "mcp:read")),
            Credential::UnknownKid => Some(bearer("rsa-b", "rsa-z", "mcp:read")),
            Credential::Missing => None,
        }).collect();
        // Everything the steps do, then enough time and keys for every request to end.
        let tail = [Step::KeysArrive, Step::Tick, Step::Clock(20_000), Step::Tick, Step::KeysArrive, Step::Tick];
        let all: Vec<Step> = steps.iter().copied().chain((0..4).flat_map(|i| [Step::Advance(i); 4])).chain(tail).collect();
        for step in all {
            match step {
                Step::Advance(i) => {
                    let ctx = i as u32 + 1;
                    let s = &mut seen[i];
                    if s.done || s.sent >= 4 {
                        continue;
                    }
                    let (_, body, trailers) = requests[i];
                    let bytes = match body {
                        Body::Allowed => tool_call("echo"),
                        Body::Forbidden => tool_call("delete_all"),
                        Body::NotJson => b"not json at all".to_vec(),
                    };
                    let (first, second) = bytes.split_at(bytes.len() / 2);
                    let flow = match s.sent {
                        0 => {
                            let flow = w.on_request_headers(ctx, &headers("POST", tokens[i].as_deref()), false);
                            s.headers_released |= flow == Flow::Continue;
                            flow
                        }
                        1 | 2 => {
                            let chunk = if s.sent == 1 { first } else { second };
                            let size = w.host().buffer_body(ctx, chunk);
                            let last = s.sent == 2 && !trailers;
                            w.on_request_body(ctx, size, last)
                        }
                        _ if trailers => w.on_request_trailers(ctx),
                        _ => {
                            s.sent += 1; // already ended with its last chunk
                            continue;
                        }
                    };
                    if s.sent > 0 {
                        match flow {
                            // Continuing the body continues the held headers too.
                            Flow::Continue => {
                                s.body_released = true;
                                s.headers_released = true;
                            }
                            Flow::Pause => s.paused_chunks += 1,
                        }
                    }
                    s.sent += 1;
                }
                Step::Tick => w.on_tick(),
                Step::Clock(ms) => w.host().advance_ms(ms),
                Step::KeysArrive => {
                    calls.extend(w.host().take_calls());
                    for call in std::mem::take(&mut calls) {
                        answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
                    }
                }
                Step::Done(i) => {
                    w.on_done(i as u32 + 1);
                    seen[i].done = true;
                }
            }
            calls.extend(w.host().take_calls());
            for action in w.host().take_actions() {
                match action {
                    Action::Resume(ctx) => {
                        let s = &mut seen[ctx as usize - 1];
                        prop_assert!(!s.done && !s.answered, "resumed after its end: {s:?}");
                        s.headers_released = true;
                        s.body_released |= s.paused_chunks > 0;
                    }
                    Action::Respond { context, .. } => {
                        let s = &mut seen[context as usize - 1];
                        prop_assert!(!s.done && !s.answered && !s.body_released, "answered twice or after release: {s:?}");
                        s.answered = true;
                    }
                    _ => {}
                }
            }
        }
        for (i, (credential, body, _)) in requests.iter().enumerate() {
            let s = &seen[i];
            let allowed = matches!((credential, body), (Credential::Good, Body::Allowed));
            if !allowed {
                prop_assert!(!s.body_released, "request {i} {credential:?} {body:?}: body released");
                if hold || !matches!(credential, Credential::Good) {
                    prop_assert!(!s.headers_released, "request {i} {credential:?} {body:?}: headers released");
                }
            } else if !s.done && !s.answered {
                // Not refused for its keys or its body taking too long: then let go, whole.
                prop_assert!(s.headers_released && s.body_released, "request {i} allowed but still held: {s:?}");
            }
            prop_assert!(s.done || s.answered || s.body_released, "request {i} never ended: {s:?}");
        }
        for i in 0..4 {
            w.on_done(i + 1);
        }
        prop_assert_eq!(w.pending_len(), 0);
    }
}
