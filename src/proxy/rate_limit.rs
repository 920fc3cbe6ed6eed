//! Per-client rate limiting. The host counts (token bucket, Workers binding,
//! shared store); the app only asks, and turns a refusal into a 429 that
//! always carries `Retry-After` (git-lfs crashes on a 429 without one).

use serde::Deserialize;

use super::{ErrorCode, ProxyError, Session};
use crate::platform::Platform;

/// `[route.<app>.rate_limit]`, the same keys in every app; what is left out
/// comes from the app's [`Defaults`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOptions {
    /// Requests each client IP may make per period.
    pub requests: Option<u32>,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    /// The host limiter's name for this policy (a Workers binding name).
    pub policy: Option<String>,
}

fn default_period() -> u32 {
    60
}

/// What an app's rate limit is when its table leaves a key out.
pub struct Defaults {
    pub policy: &'static str,
    /// `None`: the key must be given.
    pub requests: Option<u32>,
}

impl RateLimitOptions {
    pub fn validate(&self, defaults: &Defaults) -> Result<(), String> {
        if self.requests.or(defaults.requests).is_none() {
            return Err("rate_limit: requests is required".into());
        }
        let policy = self.policy(defaults);
        if policy.requests == 0 || policy.period_seconds == 0 {
            return Err("rate_limit: requests and period_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// The policy to ask the host about (the options checked by `validate`).
    pub fn policy<'a>(&'a self, defaults: &Defaults) -> Policy<'a> {
        Policy {
            name: self.policy.as_deref().unwrap_or(defaults.policy),
            requests: self.requests.or(defaults.requests).unwrap_or(0),
            period_seconds: self.period_seconds,
        }
    }
}

/// One app's limit: `requests` per `period_seconds` per client IP, counted
/// by the host limiter named `name` (a Workers binding name).
pub struct Policy<'a> {
    pub name: &'a str,
    pub requests: u32,
    pub period_seconds: u32,
}

impl Policy<'_> {
    /// `Err(429)` if the client is over the limit.
    pub fn check<P: Platform>(&self, s: &Session<P>) -> Result<(), ProxyError> {
        let client = s.client_ip.as_deref().unwrap_or("unknown");
        match s.platform.rate_limit(self.name, client, self.requests, self.period_seconds) {
            Ok(d) if !d.allowed => {
                let retry = d.retry_after_seconds.max(1);
                Err(ProxyError::new(ErrorCode::RateLimited, format!("too many requests; retry in {retry} s"))
                    .with_header("retry-after", retry.to_string()))
            }
            // A limiter outage must not take the proxy down with it: fail open
            // (the host counts and logs it: edgeproxy_limiter_errors_total).
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Decision;
    use crate::platform::fake::Fake;
    use crate::proxy::Incoming;

    const API: Defaults = Defaults { policy: "api", requests: None };
    const HF: Defaults = Defaults { policy: "hf", requests: Some(20_000) };

    fn options(toml: &str) -> RateLimitOptions {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn what_a_table_leaves_out_comes_from_the_app() {
        // (table, app defaults, the policy asked for, or the problem)
        let cases: &[(&str, &Defaults, Result<(&str, u32, u32), &str>)] = &[
            ("requests = 5", &API, Ok(("api", 5, 60))),
            ("requests = 5\nperiod_seconds = 10\npolicy = \"burst\"", &API, Ok(("burst", 5, 10))),
            ("", &HF, Ok(("hf", 20_000, 60))),
            ("", &API, Err("rate_limit: requests is required")),
            ("requests = 0", &HF, Err("rate_limit: requests and period_seconds must be at least 1")),
            ("requests = 1\nperiod_seconds = 0", &API, Err("rate_limit: requests and period_seconds must be at least 1")),
        ];
        for (table, defaults, expected) in cases {
            let o = options(table);
            let got = o.validate(defaults).map(|()| {
                let p = o.policy(defaults);
                (p.name, p.requests, p.period_seconds)
            });
            assert_eq!(got, expected.map_err(str::to_owned), "{table:?}");
        }
        assert!(toml::from_str::<RateLimitOptions>("request = 5").is_err(), "a misspelt key is refused");
    }

    #[test]
    fn a_refusal_is_a_429_with_retry_after_and_a_limiter_outage_lets_the_request_through() {
        // (what the host's limiter answers, what the request gets)
        let cases: [(Result<Decision, String>, Option<&str>); 4] = [
            (Ok(Decision { allowed: true, retry_after_seconds: 0 }), None),
            (Ok(Decision { allowed: false, retry_after_seconds: 7 }), Some("7")),
            (Ok(Decision { allowed: false, retry_after_seconds: 0 }), Some("1")),
            (Err("the store is down".into()), None),
        ];
        for (answer, retry_after) in cases {
            let platform = Fake { limiter: Some(answer.clone()), ..Fake::new(1 << 20) };
            let session = Session {
                platform: &platform,
                incoming: Incoming::parse("http://a.test/").unwrap(),
                method: crate::proxy::Method::Get,
                headers: Vec::new(),
                client_ip: Some("192.0.2.1".into()),
            };
            let outcome = options("requests = 1").policy(&API).check(&session);
            match (outcome, retry_after) {
                (Ok(()), None) => {}
                (Err(e), Some(retry)) => {
                    assert_eq!((e.status, e.code), (429, ErrorCode::RateLimited));
                    assert_eq!(e.headers, vec![("retry-after".into(), retry.to_string())]);
                }
                (outcome, _) => panic!("{answer:?}: {outcome:?}"),
            }
        }
    }
}
