//! Per-client rate limiting. The host counts (token bucket, Workers binding,
//! shared store); the app only asks, and turns a refusal into a 429 that
//! always carries `Retry-After` (git-lfs crashes on a 429 without one).

use super::{ProxyError, Session};
use crate::platform::Platform;

/// One app's limit: `requests` per `period_seconds` per client IP, counted
/// by the host limiter named `name` (a Workers binding name).
pub struct Policy<'a> {
    pub name: &'a str,
    pub requests: u32,
    pub period_seconds: u32,
}

impl Policy<'_> {
    pub fn validate(&self) -> Result<(), String> {
        if self.requests == 0 || self.period_seconds == 0 {
            return Err("rate_limit: requests and period_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// `Err(429)` if the client is over the limit.
    pub fn check<P: Platform>(&self, s: &Session<P>) -> Result<(), ProxyError> {
        let client = s.client_ip.as_deref().unwrap_or("unknown");
        match s.platform.rate_limit(self.name, client, self.requests, self.period_seconds) {
            Ok(d) if !d.allowed => {
                let retry = d.retry_after_seconds.max(1);
                Err(ProxyError::new(429, "rate_limited", format!("too many requests; retry in {retry} s"))
                    .with_header("retry-after", retry.to_string()))
            }
            // A limiter outage must not take the proxy down with it: fail open.
            _ => Ok(()),
        }
    }
}
