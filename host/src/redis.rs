//! `--kv redis://...`: the key-value store and the rate limiter on Redis,
//! so that several `edgeproxy serve` processes behind one load balancer
//! share the cache, image-cache's originals and generation leases, and the
//! limits.
//!
//! Keys are namespaced (`edgeproxy:kv:` and `edgeproxy:limit:`), TTLs are
//! Redis expiry, `set-if-absent` is `SET NX`, and a limiter check is one Lua
//! script (a token bucket on the server's clock), so no two instances can
//! both take the last token. An outage is an `unavailable` error after at
//! most [`TIMEOUT`]: the cache misses, leases are not taken, and the limiter
//! fails open (the core's rule for a limiter outage).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a command may take, and a connection attempt, before the store
/// counts as unavailable for that request.
const TIMEOUT: Duration = Duration::from_millis(500);

const KV_PREFIX: &str = "edgeproxy:kv:";
const LIMIT_PREFIX: &str = "edgeproxy:limit:";

/// A token bucket of `ARGV[1]` tokens that refills `ARGV[1]` per `ARGV[2]`
/// milliseconds, in one hash (`tokens`, `at`). Time is the server's, so
/// instances with skewed clocks count alike. The bucket expires when it
/// would be full again, so idle clients cost no memory. Returns
/// `{allowed (0 or 1), milliseconds until a token is free}`.
const TOKEN_BUCKET: &str = r"
local capacity = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local rate = capacity / period_ms
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed, wait_ms = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1)
return {allowed, wait_ms}
";

#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    bucket: redis::Script,
    /// For messages: the URL without its password.
    pub name: String,
}

impl Redis {
    /// Connects lazily: the server starts while Redis is down, and serves
    /// (degraded) until it is back.
    pub fn connect(url: &str) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("--kv {}: {e} (expected redis://[:PASSWORD@]HOST[:PORT][/DB])", redact(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Redis { connection, bucket: redis::Script::new(TOKEN_BUCKET), name: redact(url) })
    }

    /// Whether Redis answers now (`/readyz`, and the start-up warning).
    pub async fn ping(&self) -> Result<(), String> {
        redis::cmd("PING").query_async::<()>(&mut self.connection.clone()).await.map_err(|e| e.to_string())
    }

    // Errors are the reason Redis did not answer: the store's and the
    // limiter's `unavailable`, which kv.rs and limiter.rs make of them.

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        redis::cmd("GET").arg(format!("{KV_PREFIX}{key}")).query_async(&mut self.connection.clone()).await.map_err(unavailable)
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), String> {
        set_command(key, value, ttl_seconds).query_async::<()>(&mut self.connection.clone()).await.map_err(unavailable)
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        redis::cmd("DEL").arg(format!("{KV_PREFIX}{key}")).query_async::<()>(&mut self.connection.clone()).await.map_err(unavailable)
    }

    /// `SET NX`: true when this call set it.
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool, String> {
        let reply: Option<String> = set_command(key, value, ttl_seconds).arg("NX").query_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        Ok(reply.is_some())
    }

    /// Takes a token from the (policy, key) bucket of `limit` per
    /// `period_seconds`: whether one was free, and if not, the seconds until one is.
    pub async fn take_token(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Result<(bool, u32), String> {
        let (allowed, wait_ms): (u32, u64) = self
            .bucket
            .key(format!("{LIMIT_PREFIX}{policy}:{key}"))
            .arg(limit.max(1))
            .arg(u64::from(period_seconds.max(1)) * 1000)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok((allowed == 1, wait_ms.div_ceil(1000) as u32))
    }
}

/// `SET key value [EX ttl]`, the TTL as Redis expiry (at least 1 s).
fn set_command(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> redis::Cmd {
    let mut set = redis::cmd("SET");
    set.arg(format!("{KV_PREFIX}{key}")).arg(value);
    if let Some(ttl) = ttl_seconds {
        set.arg("EX").arg(ttl.max(1));
    }
    set
}

fn unavailable(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

/// The URL with any password replaced, for messages and logs.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (_, host))) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(super::redact("redis://:hunter2@cache.internal:6379/2"), "redis://***@cache.internal:6379/2");
        assert_eq!(super::redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
