//! The key-value store: one redb file in the data directory (the default),
//! or Redis (`--kv redis://...`, redis.rs) when instances share it. In the
//! redb file each value is stored behind its expiry time, so TTLs hold
//! across restarts.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

pub const MAX_KEY_BYTES: u32 = 1024;
pub const MAX_VALUE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Kv {
    db: Database,
}

/// The store `serve` gives the component: [`Kv`] or Redis.
pub enum Store {
    Local(std::sync::Arc<Kv>),
    Redis(crate::redis::Redis),
}

impl Store {
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key)?;
        match self {
            Store::Local(kv) => kv.get(&key),
            Store::Redis(redis) => redis.get(&key).await.map_err(KvError::Unavailable),
        }
    }

    pub async fn set(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<(), KvError> {
        check_key(&key)?;
        check_value(&value)?;
        match self {
            // A redb commit is blocking file I/O: keep it off the async workers.
            Store::Local(kv) => blocking(kv, move |kv| kv.set(&key, &value, ttl_seconds)).await,
            Store::Redis(redis) => redis.set(&key, &value, ttl_seconds).await.map_err(KvError::Unavailable),
        }
    }

    pub async fn delete(&self, key: String) -> Result<(), KvError> {
        check_key(&key)?;
        match self {
            Store::Local(kv) => blocking(kv, move |kv| kv.delete(&key)).await,
            Store::Redis(redis) => redis.delete(&key).await.map_err(KvError::Unavailable),
        }
    }

    pub async fn set_if_absent(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<bool, KvError> {
        check_key(&key)?;
        check_value(&value)?;
        match self {
            Store::Local(kv) => blocking(kv, move |kv| kv.set_if_absent(&key, &value, ttl_seconds)).await,
            Store::Redis(redis) => redis.set_if_absent(&key, &value, ttl_seconds).await.map_err(KvError::Unavailable),
        }
    }

    /// Drops expired entries from the redb file (Redis expires its own).
    pub async fn purge_expired(&self) {
        if let Store::Local(kv) = self {
            let _ = blocking(kv, |kv| kv.purge_expired()).await;
        }
    }

    /// Whether the store answers (`/readyz`).
    pub async fn ready(&self) -> Result<(), String> {
        match self {
            Store::Local(_) => Ok(()),
            Store::Redis(redis) => redis.ping().await,
        }
    }
}

async fn blocking<T: Send + 'static>(kv: &std::sync::Arc<Kv>, f: impl FnOnce(&Kv) -> Result<T, KvError> + Send + 'static) -> Result<T, KvError> {
    let kv = kv.clone();
    tokio::task::spawn_blocking(move || f(&kv)).await.unwrap_or_else(|e| Err(KvError::Unavailable(format!("the store's thread failed: {e}"))))
}

#[derive(Debug)]
pub enum KvError {
    InvalidKey(String),
    TooLarge(u64),
    Unavailable(String),
}

/// What redb keeps of the store's pages in memory.
const KV_CACHE_BYTES: usize = 32 << 20;

impl Kv {
    pub fn open(dir: &Path) -> anyhow::Result<Kv> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let path = dir.join("kv.redb");
        // redb caches up to 1 GiB of pages by default; its values here are
        // small or parts read once (Spin's blobs in `edgeproxy spin`), so a
        // large object read through it would stay in that cache.
        let db = Database::builder()
            .set_cache_size(KV_CACHE_BYTES)
            .create(&path)
            .with_context(|| format!("cannot open {} (is another edgeproxy using this --data-dir?)", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.commit()?;
        Ok(Kv { db })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(ENTRIES).map_err(unavailable)?;
        let Some(entry) = table.get(key).map_err(unavailable)? else { return Ok(None) };
        Ok(live_value(entry.value(), now_ms()).map(<[u8]>::to_vec))
    }

    /// Every live key starting with `prefix`, in order (Spin's `list-keys`
    /// in `edgeproxy spin`).
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(ENTRIES).map_err(unavailable)?;
        let now = now_ms();
        let mut keys = Vec::new();
        for entry in table.range(prefix..).map_err(unavailable)? {
            let (key, value) = entry.map_err(unavailable)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            if live_value(value.value(), now).is_some() {
                keys.push(key.value().to_owned());
            }
        }
        Ok(keys)
    }

    pub fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        check_key(key)?;
        check_value(value)?;
        let entry = encode(expiry(ttl_seconds, now_ms()), value);
        self.write(|table| table.insert(key, entry.as_slice()).map(drop))
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.write(|table| table.remove(key).map(drop))
    }

    /// Sets `key` unless it holds a live value, in one write transaction;
    /// `true` if it was set.
    pub fn set_if_absent(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool, KvError> {
        check_key(key)?;
        check_value(value)?;
        let now = now_ms();
        let mut set = false;
        self.write(|table| {
            let live = table.get(key)?.is_some_and(|e| live_value(e.value(), now).is_some());
            if !live {
                table.insert(key, encode(expiry(ttl_seconds, now), value).as_slice())?;
                set = true;
            }
            Ok(())
        })?;
        Ok(set)
    }

    /// Reads and rewrites one entry in a single write transaction (what
    /// compare-and-swap and increment need): `f` sees the live value and
    /// returns the new one (`None` leaves the entry as it is) and a result.
    pub fn update<T>(&self, key: &str, f: impl FnOnce(Option<&[u8]>) -> (Option<Vec<u8>>, T)) -> Result<T, KvError> {
        check_key(key)?;
        let mut result = None;
        self.write(|table| {
            let current = table.get(key)?.and_then(|e| live_value(e.value(), now_ms()).map(<[u8]>::to_vec));
            let (new, out) = f(current.as_deref());
            if let Some(value) = new {
                table.insert(key, encode(NO_EXPIRY, &value).as_slice())?;
            }
            result = Some(out);
            Ok(())
        })?;
        Ok(result.expect("the transaction ran"))
    }

    /// Removes expired entries; run now and then so the file does not grow
    /// with dead cache entries.
    pub fn purge_expired(&self) -> Result<usize, KvError> {
        let now = now_ms();
        let mut purged = 0;
        self.write(|table| {
            table
                .extract_if(|_, v| live_value(v, now).is_none())?
                .for_each(|_| purged += 1);
            Ok(())
        })?;
        Ok(purged)
    }

    fn write(&self, f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>) -> Result<(), KvError> {
        let mut txn = self.db.begin_write().map_err(unavailable)?;
        // A cache may lose its last writes in a crash; it must not pay an
        // fsync per request. redb stays consistent either way.
        txn.set_durability(Durability::None).map_err(unavailable)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(unavailable)?;
            f(&mut table).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)
    }
}

/// An entry as stored: when it expires (ms since the Unix epoch, 8 bytes
/// big-endian; [`NO_EXPIRY`] for never), then the value.
fn encode(expires_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(8 + value.len());
    entry.extend_from_slice(&expires_ms.to_be_bytes());
    entry.extend_from_slice(value);
    entry
}

const NO_EXPIRY: u64 = 0;

fn expiry(ttl_seconds: Option<u32>, now_ms: u64) -> u64 {
    ttl_seconds.map_or(NO_EXPIRY, |ttl| now_ms + u64::from(ttl) * 1000)
}

/// The value of a stored entry, unless it has expired at `now_ms` (or is
/// not an entry at all: shorter than its expiry).
fn live_value(entry: &[u8], now_ms: u64) -> Option<&[u8]> {
    let (expires, value) = entry.split_first_chunk::<8>()?;
    let expires_ms = u64::from_be_bytes(*expires);
    (expires_ms == NO_EXPIRY || expires_ms > now_ms).then_some(value)
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() as u64 > MAX_VALUE_BYTES {
        return Err(KvError::TooLarge(MAX_VALUE_BYTES));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES as usize {
        return Err(KvError::InvalidKey(format!("keys are 1 to {MAX_KEY_BYTES} bytes; this one has {}", key.len())));
    }
    Ok(())
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgeproxy-kv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn values_survive_a_restart() {
        let dir = scratch("restart");
        Kv::open(&dir).unwrap().set("k", b"v", None).unwrap();
        assert_eq!(Kv::open(&dir).unwrap().get("k").unwrap(), Some(b"v".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_entry_is_gone_after_its_ttl_and_purged() {
        let dir = scratch("ttl");
        let kv = Kv::open(&dir).unwrap();
        kv.set("short", b"1", Some(1)).unwrap();
        kv.set("forever", b"2", None).unwrap();
        assert_eq!(kv.get("short").unwrap(), Some(b"1".to_vec()));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(kv.get("short").unwrap(), None);
        assert_eq!(kv.purge_expired().unwrap(), 1);
        assert_eq!(kv.get("forever").unwrap(), Some(b"2".to_vec()));
        kv.delete("forever").unwrap();
        assert_eq!(kv.get("forever").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn update_reads_and_writes_in_one_transaction() {
        let dir = scratch("update");
        let kv = Kv::open(&dir).unwrap();
        assert!(kv.update("n", |v| (Some(b"1".to_vec()), v.is_none())).unwrap());
        assert_eq!(kv.update("n", |v| (None, v.map(<[u8]>::to_vec))).unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("n").unwrap(), Some(b"1".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_keys_and_huge_values_are_refused() {
        let dir = scratch("limits");
        let kv = Kv::open(&dir).unwrap();
        assert!(matches!(kv.get(""), Err(KvError::InvalidKey(_))));
        assert!(matches!(kv.set(&"k".repeat(2000), b"", None), Err(KvError::InvalidKey(_))));
        assert!(matches!(kv.set("k", &vec![0; MAX_VALUE_BYTES as usize + 1], None), Err(KvError::TooLarge(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A fault the store is made to have (`edgeproxy serve --kv-fault`), to test
/// how the apps degrade when key-value is down or slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvFault {
    /// Every operation fails with `unavailable`.
    Unavailable,
    /// Every operation takes an extra 500 ms.
    Slow,
}
