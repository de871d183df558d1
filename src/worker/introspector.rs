//! One worker's introspection calls (RFC 7662): a client per introspecting issuer, built once
//! its endpoint is known (configured, or discovered from the issuer's metadata) with the
//! secret resolved at configuration; at most one call per token per worker, at most
//! `max_in_flight` outstanding per issuer.

use crate::config::{Config, ConfigError, ConfigErrorKind, IssuerId, SecretSource};
use crate::introspect::{self, Client, Digest};
use crate::url::HttpUrl;
use crate::worker::host::Host;
use std::collections::HashMap;

/// Why no call went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// `max_in_flight` calls are outstanding for the issuer on this worker.
    Busy,
    /// The host refused the call (no such cluster), with its status.
    Refused(u32),
}

#[derive(Debug)]
struct Slot {
    secret: String,
    /// The client for the configured endpoint, or for the last discovered one.
    client: Option<(String, Client)>,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    issuer: IssuerId,
    digest: Digest,
    sent_ms: u64,
    timeout_ms: u64,
    /// The request whose callback sent it (`None`: the root's): the proxy-wasm SDK hands the
    /// answer to that context, so it is lost when the request ends first.
    owner: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Introspector {
    slots: HashMap<IssuerId, Slot>,
    in_flight: HashMap<u32, Call>,
}

impl Introspector {
    /// Resolves every introspecting issuer's secret: a variable missing from the VM's
    /// environment is a configuration error naming the field.
    pub fn new(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Introspector, ConfigError> {
        let mut slots = HashMap::new();
        for (id, issuer) in config.issuers.iter().enumerate() {
            let Some(spec) = &issuer.introspection else {
                continue;
            };
            let secret = match &spec.secret {
                SecretSource::Inline(secret) => secret.clone(),
                SecretSource::Env(name) => {
                    env(name)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| ConfigError {
                            path: format!("issuers[{id}].introspection.client_secret_env"),
                            kind: ConfigErrorKind::MissingEnv(name.clone()),
                        })?
                }
            };
            let client = spec.endpoint.as_ref().map(|url| {
                (
                    format!("{}{}", url.origin(), url.path),
                    Client::new(spec, url, &secret),
                )
            });
            slots.insert(id, Slot { secret, client });
        }
        Ok(Introspector {
            slots,
            in_flight: HashMap::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The client for `issuer`: its configured endpoint, else `discovered` (from the issuer's
    /// metadata), else none yet.
    fn client(
        &mut self,
        config: &Config,
        issuer: IssuerId,
        discovered: Option<&str>,
    ) -> Option<&Client> {
        let spec = config.issuers.get(issuer)?.introspection.as_ref()?;
        let slot = self.slots.get_mut(&issuer)?;
        if spec.endpoint.is_none() {
            let url = discovered?;
            if slot.client.as_ref().is_none_or(|(known, _)| known != url) {
                let endpoint = HttpUrl::parse(url).ok()?;
                slot.client = Some((url.to_string(), Client::new(spec, &endpoint, &slot.secret)));
            }
        }
        slot.client.as_ref().map(|(_, c)| c)
    }

    /// Whether a client for `issuer` can be had (its endpoint is configured or discovered).
    pub fn ready(&mut self, config: &Config, issuer: IssuerId, discovered: Option<&str>) -> bool {
        self.client(config, issuer, discovered).is_some()
    }

    /// Asks `issuer` about `token`, unless this worker already asked about it and waits for
    /// the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn ask<H: Host>(
        &mut self,
        host: &H,
        config: &Config,
        issuer: IssuerId,
        discovered: Option<&str>,
        token: &str,
        digest: Digest,
        owner: Option<u32>,
    ) -> Result<(), CallError> {
        if self.asking(issuer, &digest) {
            return Ok(());
        }
        let outstanding = self
            .in_flight
            .values()
            .filter(|c| c.issuer == issuer)
            .count();
        let now_ms = host.now_ms();
        let Some(client) = self.client(config, issuer, discovered) else {
            return Err(CallError::Refused(0));
        };
        if outstanding >= client.max_in_flight {
            return Err(CallError::Busy);
        }
        let (timeout_ms, cluster, headers, body) = (
            client.timeout_ms,
            client.cluster.clone(),
            client
                .headers()
                .iter()
                .map(|(n, v)| (*n, v.to_string()))
                .collect::<Vec<_>>(),
            client.body(token),
        );
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match host.http_call(&cluster, &headers, Some(&body), timeout_ms) {
            Ok(call) => {
                log::debug!(
                    "mcp-oauth-filter: introspecting token {} at {:?}",
                    introspect::log_id(&digest),
                    config.issuers.get(issuer).map(|i| i.issuer.as_str())
                );
                self.in_flight.insert(
                    call,
                    Call {
                        issuer,
                        digest,
                        sent_ms: now_ms,
                        timeout_ms,
                        owner,
                    },
                );
                Ok(())
            }
            Err(status) => Err(CallError::Refused(status)),
        }
    }

    /// Whether a call about `digest` at `issuer` is outstanding on this worker.
    pub fn asking(&self, issuer: IssuerId, digest: &Digest) -> bool {
        self.in_flight
            .values()
            .any(|c| c.issuer == issuer && c.digest == *digest)
    }

    /// The request `context` ended: the answers to the calls its callbacks sent will not come
    /// back (the SDK hands them to that context); whoever else waits for them asks again.
    pub fn forget_owner(&mut self, context: u32) {
        if !self.in_flight.is_empty() {
            self.in_flight.retain(|_, c| c.owner != Some(context));
        }
    }

    /// The issuer and token a call answered, if it was one of ours.
    pub fn answered(&mut self, call: u32) -> Option<(IssuerId, Digest)> {
        self.in_flight.remove(&call).map(|c| (c.issuer, c.digest))
    }

    /// Calls the host never answered (twice their timeout) stop counting as outstanding.
    pub fn forget_unanswered(&mut self, now_ms: u64) {
        self.in_flight
            .retain(|_, c| now_ms < c.sent_ms + 2 * c.timeout_ms + 1000);
    }
}
