//! Set-up once: the core's `init` export run on one instance, and that
//! instance snapshotted into a component whose memory starts set up
//! (wasmtime-wizer's component path). Every request then gets a fresh
//! instance of the snapshot, copy-on-write from its memory image, with the
//! config document already parsed and its routes built.
//!
//! A snapshot is compiled like any component, so two caches keep this to
//! milliseconds: the instrumented component (the same for every document)
//! is in the on-disk component cache, and the snapshot's functions, which
//! are the core's own, unchanged, come from [`FunctionCache`], wasmtime's
//! incremental compilation cache kept on disk beside it.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::Context as _;
use wasmtime::component::{Instance, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// The core's set-up export (`wit/edgeproxy.wit`, world `edgeproxy`).
pub const INIT_EXPORT: &str = "init";

/// The component `component` with `init` run in a store made by `store`
/// (whose `config.get` gives the document), as a new component.
pub async fn snapshot<T: Send + 'static>(
    engine: &Engine,
    linker: &Linker<T>,
    component: &[u8],
    store: Store<T>,
    compile: impl Fn(&Engine, &[u8]) -> anyhow::Result<wasmtime::component::Component>,
) -> anyhow::Result<Vec<u8>> {
    let mut wizer = Wizer::new();
    // The world exports `init`: keep it, so the snapshot is still an
    // `edgeproxy` component (a second call is a cheap no-op).
    wizer.init_func(INIT_EXPORT).keep_init_func(true);
    let (context, instrumented) = wizer.instrument_component(component).map_err(anyhow::Error::from).context("instrument the component for set-up")?;
    let instrumented = compile(engine, &instrumented)?;
    let mut store = store;
    let instance = linker.instantiate_async(&mut store, &instrumented).await.map_err(anyhow::Error::from).context("instantiate the component for set-up")?;
    let init = instance.get_typed_func::<(), ()>(&mut store, INIT_EXPORT).map_err(anyhow::Error::from).context("the component has no `init` export")?;
    init.call_async(&mut store, ()).await.map_err(anyhow::Error::from).context("the component's `init` trapped")?;
    wizer.snapshot_component(&context, &mut Snapshotted { store: &mut store, instance }).await.map_err(anyhow::Error::from).context("snapshot the set-up instance")
}

/// What wasmtime-wizer reads the set-up state through: the accessor
/// functions its instrumentation exported.
struct Snapshotted<'a, T: 'static> {
    store: &'a mut Store<T>,
    instance: Instance,
}

impl<T: Send> Snapshotted<'_, T> {
    async fn call<R: wasmtime::component::Lift + 'static, Out>(&mut self, instance: &str, func: &str, out: impl FnOnce(&mut Store<T>, R) -> Out) -> Out {
        let (_, exported) = self.instance.get_export(&mut *self.store, None, instance).expect("wizer's accessor instance");
        let (_, index) = self.instance.get_export(&mut *self.store, Some(&exported), func).expect("wizer's accessor");
        let accessor = self.instance.get_typed_func::<(), (R,)>(&mut *self.store, index).expect("an accessor of its type");
        // The accessors only read globals and memory: they cannot trap.
        let (value,) = accessor.call_async(&mut *self.store, ()).await.expect("an accessor ran");
        out(self.store, value)
    }
}

impl<T: Send> ComponentInstanceState for Snapshotted<'_, T> {
    async fn call_func_ret_list_u8(&mut self, instance: &str, func: &str, contents: impl FnOnce(&[u8]) + Send) {
        self.call(instance, func, |store, list: WasmList<u8>| contents(list.as_le_slice(&store))).await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, value| value).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, value| value).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, value: f32| value.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, value: f64| value.to_bits()).await
    }
}

/// wasmtime's incremental compilation cache on disk: one file per compiled
/// function, named by a hash of Cranelift's key and holding the whole key,
/// which a read compares (a hash collision is a miss, never wrong code).
/// A snapshot differs from the component only in its data, so compiling it
/// is a cache hit for every function.
#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    pub fn new(dir: PathBuf) -> FunctionCache {
        FunctionCache { dir }
    }

    fn file(&self, key: &[u8]) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        self.dir.join(format!("{:016x}", hasher.finish()))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let stored = std::fs::read(self.file(key)).ok()?;
        let (length, rest) = stored.split_first_chunk::<4>()?;
        let length = u32::from_le_bytes(*length) as usize;
        (rest.len() >= length && &rest[..length] == key).then(|| Cow::Owned(rest[length..].to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Ok(length) = u32::try_from(key.len()) else { return false };
        let file = self.file(key);
        let mut stored = Vec::with_capacity(4 + key.len() + value.len());
        stored.extend_from_slice(&length.to_le_bytes());
        stored.extend_from_slice(key);
        stored.extend_from_slice(&value);
        // Written aside and renamed, so a concurrent compile never reads half a file.
        let partial = file.with_extension(format!("{}.partial", std::process::id()));
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&partial, stored)).and_then(|()| std::fs::rename(&partial, &file));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::CacheStore as _;

    use super::FunctionCache;

    #[test]
    fn the_function_cache_gives_back_what_was_stored_under_the_same_key_only() {
        let dir = std::env::temp_dir().join(format!("edgeproxy-function-cache-{}", std::process::id()));
        let cache = FunctionCache::new(dir.clone());
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"compiled".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"compiled"[..]));
        // A file whose stored key differs (as after a hash collision) is a miss.
        std::fs::write(cache.file(b"other"), [&3u32.to_le_bytes()[..], b"key", b"compiled"].concat()).unwrap();
        assert!(cache.get(b"other").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
