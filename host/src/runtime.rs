//! wasmtime glue: compiles the component once, instantiates it per request,
//! and implements the WIT imports with [`Shared`]'s services.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::blob::{self, BlobError};
use crate::body::{HostBody, ReadError};
use crate::kv;
use crate::limiter::Limiter;
use crate::limits::{GuestLimits, LimitHit, MemoryCap};
use crate::server::{ClientBody, Handler, REQUEST_ID, internal_error, json_error};
use crate::metrics::{Answered, Metrics, Routed};
use crate::preinit::{self, FunctionCache};
use crate::upstream::{Upstream, UpstreamError};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "edgeproxy",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "edgeproxy:platform/body.body": crate::body::HostBody },
});

use edgeproxy::platform::{blob as wit_blob, body, clock, config, http_client, kv as wit_kv, limiter, telemetry, types};

/// Bytes of each instance's linear memory kept resident between requests:
/// the set-up snapshot's memory (the core's initial memory, set in
/// .cargo/config.toml, plus what set-up took and the request headroom above
/// it, src/arena.rs), with room for a larger document's set-up. With
/// PAGEMAP_SCAN only the pages a request wrote are reset, so a generous
/// figure costs nothing per request; memory past it would be given back to
/// the kernel after every request, and faulted in again by the next. An
/// image render writes 10-20 MiB, and faulting that in again costs it about
/// 3.5 ms (32 MiB measured 52.2 -> 48.5 ms a JPEG render); but what is kept
/// stays resident in every pool slot that once held a large guest, and
/// tests/limits.rs holds that a runaway guest's memory goes back.
const KEEP_RESIDENT: usize = 2 << 20;

/// The core component this binary was built with (host/build.rs embeds
/// dist/edgeproxy.wasm), and its SHA-256 in hex.
const BUILT_IN_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edgeproxy.wasm"));
pub const BUILT_IN_SHA256: &str = env!("EDGEPROXY_COMPONENT_SHA256");

/// What `serve` runs: the built-in component, or the file `--component` names.
pub struct ComponentSource {
    pub bytes: Cow<'static, [u8]>,
    /// For messages: "the built-in component (sha256 …)" or the file's path.
    pub name: String,
}

impl ComponentSource {
    pub fn new(file: Option<&Path>) -> anyhow::Result<ComponentSource> {
        Ok(match file {
            None => ComponentSource { bytes: Cow::Borrowed(BUILT_IN_COMPONENT), name: format!("the built-in component (sha256 {})", &BUILT_IN_SHA256[..16]) },
            Some(path) => ComponentSource {
                bytes: Cow::Owned(std::fs::read(path).with_context(|| format!("cannot read the component {}", path.display()))?),
                name: path.display().to_string(),
            },
        })
    }
}

/// What every request's store shares.
pub struct Shared {
    pub blobs: Arc<blob::Store>,
    pub kv: kv::Store,
    pub kv_fault: Option<kv::KvFault>,
    pub limiter: Limiter,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
}

/// A config document and the version the core knows it by.
#[derive(Clone)]
pub struct Document {
    text: Arc<str>,
    /// None for a snapshot made for a host that gives no version (Spin).
    version: Option<Arc<str>>,
}

impl Document {
    /// A document with a version no other document of this process has.
    fn new(text: Arc<str>) -> Document {
        static VERSIONS: AtomicU64 = AtomicU64::new(1);
        Document { text, version: Some(VERSIONS.fetch_add(1, Ordering::Relaxed).to_string().into()) }
    }

    /// A document as a host that names no version gives it.
    pub fn unversioned(text: &str) -> Document {
        Document { text: text.into(), version: None }
    }
}

/// One request's state.
pub struct State {
    table: ResourceTable,
    shared: Arc<Shared>,
    document: Document,
    /// The client request's id, added to each upstream request that has none.
    request_id: Option<String>,
    memory: MemoryCap,
    /// The route the core named (`telemetry.routed`), for the metrics.
    routed: Option<Routed>,
    /// How the core answered (`telemetry.answered`), for the metrics and the log.
    answered: Option<Answered>,
    /// Time the guest spent blocked on host operations (upstreams, the
    /// store, the limiter, bodies, sleeps): not the guest's own time.
    host_wait: Duration,
}

/// Awaits a host operation the guest is blocked on, and how long it took.
async fn timed<T>(operation: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = operation.await;
    (out, started.elapsed())
}

pub struct Runtime {
    /// The pool instances come from, with the document it is set up for;
    /// replaced on reload ([`Runtime::reload`]), and by a fresh one when
    /// idle (see [`Runtime::start_pool_recycler`]). A request keeps the pool
    /// (and so the document) it started with: a store keeps its pool's
    /// engine alive until the store is gone.
    pool: RwLock<Arc<Pool>>,
    /// The core as built, which each new document's snapshot starts from.
    component: Cow<'static, [u8]>,
    shared: Arc<Shared>,
    limits: GuestLimits,
    /// When the last instance was made, in ms since `started`.
    last_instance_ms: AtomicU64,
    started: Instant,
}

/// An engine with its own instance pool, and the component, set up for
/// one document, ready in it.
struct Pool {
    engine: Engine,
    pre: EdgeproxyPre<State>,
    /// The document its instances were set up with, which `config.get`
    /// gives them too, and its version (`config.get("document-version")`),
    /// under which the snapshot's set-up was built: the core sees it
    /// unchanged and serves at once, without fetching the document.
    document: Document,
    /// The set-up snapshot (`preinit.rs`) this pool compiled.
    snapshot: Arc<[u8]>,
}

/// A pool with more warm unused slots than this (each about 0.3 to 0.5 MiB:
/// its resident pages, the image pages it read, its async stack), after
/// [`POOL_IDLE`] without a new instance, is replaced. Counted in slots, not
/// in wasmtime's resident bytes, which with PAGEMAP_SCAN are only the pages
/// the last request wrote.
const POOL_WARM_TRIM: u32 = 32;
const POOL_IDLE: Duration = Duration::from_secs(2);

/// A request for the guest, with its body already a host resource.
pub struct GuestRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<HostBody>,
    pub client_ip: Option<String>,
    /// Sent upstream as `X-Request-Id` with every request the guest makes.
    pub request_id: Option<String>,
}

pub struct GuestResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<HostBody>,
    pub routed: Option<Routed>,
    pub answered: Option<Answered>,
}

impl Pool {
    fn engine(limits: GuestLimits) -> anyhow::Result<Engine> {
        let mut config = Config::new();
        GuestLimits::configure(&mut config);
        // For profiling the guest: `perf record` then names its functions
        // from /tmp/perf-<pid>.map (BENCHMARKS.md, "Profiling the guest").
        if std::env::var_os("EDGEPROXY_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Instances come from a pool of pre-reserved slots with copy-on-write
        // memory images: that is what makes one instance per request cheap.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1000).total_memories(1000).total_tables(1000).max_memory_size(limits.memory);
        // Reset a finished instance's memory with memset, not madvise:
        // madvise costs a TLB shootdown across cores and a page fault per
        // page on the next request, which profiling showed dominating small
        // requests. The guest's initial memory (.cargo/config.toml) is sized
        // to fit.
        pool.linear_memory_keep_resident(KEEP_RESIDENT).table_keep_resident(64 << 10).async_stack_keep_resident(64 << 10);
        // With PAGEMAP_SCAN (Linux 6.7+), only the pages that were written
        // are reset, not all of KEEP_RESIDENT: without it every request
        // copied back the 164 KiB data image and zeroed the rest, about 13%
        // of the host's CPU on a small proxied request (BENCHMARKS.md,
        // "Profile"). Older kernels get the memset.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // A set-up snapshot is the core with other data: its functions come
        // from this cache instead of Cranelift (preinit.rs).
        if let Some(dir) = compile_cache_dir() {
            config.enable_incremental_compilation(Arc::new(FunctionCache::new(dir.join("functions"))))?;
        }
        let engine = Engine::new(&config)?;
        GuestLimits::start_ticker(&engine);
        Ok(engine)
    }

    fn linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
        let mut linker = Linker::<State>::new(engine);
        Edgeproxy::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        Ok(linker)
    }

    /// A pool of the set-up `snapshot` of `document`, compiled in a new
    /// engine: its functions from the function cache, so in a fraction of
    /// a second. (Not kept in the component cache: one per document would
    /// pile up there, one per reload.)
    fn new(snapshot: Arc<[u8]>, document: Document, limits: GuestLimits) -> anyhow::Result<Pool> {
        Self::in_engine(Self::engine(limits)?, snapshot, document)
    }

    fn in_engine(engine: Engine, snapshot: Arc<[u8]>, document: Document) -> anyhow::Result<Pool> {
        let component = Component::new(&engine, &snapshot)?;
        let pre = EdgeproxyPre::new(Self::linker(&engine)?.instantiate_pre(&component)?)?;
        Ok(Pool { engine, pre, document, snapshot })
    }

    /// A pool whose instances start with `document` set up: `component`'s
    /// `init` run once and snapshotted (preinit.rs).
    async fn set_up(component: &[u8], document: Arc<str>, shared: &Arc<Shared>, limits: GuestLimits) -> anyhow::Result<Pool> {
        let document = Document::new(document);
        let engine = Self::engine(limits)?;
        let snapshot = snapshot_in(&engine, component, &document, shared.clone(), limits).await?;
        Self::in_engine(engine, snapshot.into(), document)
    }
}

/// `component` with `document` set up: its `init` run and the instance
/// snapshotted (preinit.rs).
pub async fn snapshot(component: &[u8], document: &Document, shared: Arc<Shared>, limits: GuestLimits) -> anyhow::Result<Vec<u8>> {
    snapshot_in(&Pool::engine(limits)?, component, document, shared, limits).await
}

async fn snapshot_in(engine: &Engine, component: &[u8], document: &Document, shared: Arc<Shared>, limits: GuestLimits) -> anyhow::Result<Vec<u8>> {
    let store = State::new_store(engine, shared, document.clone(), limits);
    preinit::snapshot(engine, &Pool::linker(engine)?, component, store, compile_cached).await
}

impl State {
    fn new_store(engine: &Engine, shared: Arc<Shared>, document: Document, limits: GuestLimits) -> Store<State> {
        let mut store = Store::new(engine, State { table: ResourceTable::new(), shared, document, request_id: None, memory: limits.memory_cap(), routed: None, answered: None, host_wait: Duration::ZERO });
        limits.arm(&mut store, |state| &mut state.memory);
        store
    }
}

impl Runtime {
    /// The runtime serving `document`, set up once ahead of the requests.
    pub async fn new(component: ComponentSource, document: String, shared: Shared, limits: GuestLimits) -> anyhow::Result<Runtime> {
        let shared = Arc::new(shared);
        let pool = Pool::set_up(&component.bytes, document.into(), &shared, limits).await.with_context(|| format!("cannot load {}", component.name))?;
        Ok(Runtime {
            pool: RwLock::new(Arc::new(pool)),
            component: component.bytes,
            shared,
            limits,
            last_instance_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Pool slots stay resident after use (the pages a request wrote are reset
    /// in place, which is what makes an instance per request cheap), so a burst of N
    /// concurrent requests leaves N slots' worth of memory behind: about
    /// 0.5 MiB each. Once the server has been idle for [`POOL_IDLE`] with more
    /// than [`POOL_WARM_TRIM`] such slots, a fresh pool takes over and the
    /// old one is unmapped when its last request ends; RSS goes back to where
    /// it started. The thread ends with the runtime.
    pub fn start_pool_recycler(self: &Arc<Self>) {
        let runtime = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("edgeproxy-pool".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(POOL_IDLE / 2);
                    let Some(runtime) = runtime.upgrade() else { break };
                    if let Err(e) = runtime.recycle_idle_pool() {
                        eprintln!("edgeproxy: could not replace the instance pool; the old one serves on: {e:#}");
                    }
                }
            })
            .expect("spawn the pool thread");
    }

    fn recycle_idle_pool(&self) -> anyhow::Result<()> {
        let idle_ms = self.started.elapsed().as_millis() as u64 - self.last_instance_ms.load(Ordering::Relaxed);
        let warm = {
            let pool = self.pool.read().expect("the pool lock is never poisoned");
            pool.engine.pooling_allocator_metrics().expect("the engine pools instances").unused_warm_memories()
        };
        if idle_ms < POOL_IDLE.as_millis() as u64 || warm <= POOL_WARM_TRIM {
            return Ok(());
        }
        let current = self.pool.read().expect("the pool lock is never poisoned").clone();
        let fresh = Arc::new(Pool::new(current.snapshot.clone(), current.document.clone(), self.limits)?);
        drop(current);
        // A reload in between wins: its pool is as fresh.
        let mut pool = self.pool.write().expect("the pool lock is never poisoned");
        if Arc::ptr_eq(&pool.snapshot, &fresh.snapshot) {
            *pool = fresh;
        }
        drop(pool);
        // The burst's request and response buffers are free by now, but
        // glibc keeps freed memory in its arenas; give it back too.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A fresh store and instance, as each request gets.
    pub async fn instantiate(&self) -> anyhow::Result<(Store<State>, Edgeproxy)> {
        self.last_instance_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let pool = self.pool.read().expect("the pool lock is never poisoned").clone();
        let mut store = State::new_store(&pool.engine, self.shared.clone(), pool.document.clone(), self.limits);
        let instance = pool.pre.instantiate_async(&mut store).await?;
        Ok((store, instance))
    }

    /// The component's problems with a config document (`edgeproxy check`).
    pub async fn check_config(&self, document: &str) -> anyhow::Result<Vec<String>> {
        let (mut store, instance) = self.instantiate().await?;
        Ok(instance.edgeproxy_platform_checker().call_check_config(&mut store, document).await?)
    }

    /// Makes `document` the one new requests get, set up ahead as at start,
    /// if the component finds no problem with it; otherwise keeps the
    /// current one and returns the problems.
    pub async fn reload(&self, document: String) -> anyhow::Result<Result<(), Vec<String>>> {
        let problems = self.check_config(&document).await?;
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        let pool = Pool::set_up(&self.component, document.into(), &self.shared, self.limits).await?;
        *self.pool.write().expect("the pool lock is never poisoned") = Arc::new(pool);
        Ok(Ok(()))
    }

    /// Runs the guest's handler on one request in a fresh instance. `Err` is a
    /// trap, which the server turns into a 503 when a guest limit caused it
    /// and a 500 otherwise.
    pub async fn handle(&self, request: GuestRequest) -> anyhow::Result<GuestResponse> {
        let started = Instant::now();
        let (mut store, instance) = self.instantiate().await?;
        store.data_mut().request_id = request.request_id;
        let body = match request.body {
            Some(b) => Some(store.data_mut().table.push(b)?),
            None => None,
        };
        let wit_request = types::Request { method: request.method, url: request.url, headers: request.headers, body };
        let response = instance
            .edgeproxy_platform_handler()
            .call_handle(&mut store, &wit_request, request.client_ip.as_deref())
            .await?;
        let body = match response.body {
            Some(b) => Some(store.data_mut().table.delete(b)?),
            None => None,
        };
        let state = store.data_mut();
        self.shared.metrics.guest_ran(state.routed.as_ref(), started.elapsed().saturating_sub(state.host_wait));
        Ok(GuestResponse { status: response.status, headers: response.headers, body, routed: state.routed.take(), answered: state.answered.take() })
    }
}

impl types::Host for State {}

impl body::Host for State {}

impl body::HostBody for State {
    async fn new(&mut self, bytes: Vec<u8>) -> wasmtime::Result<Resource<HostBody>> {
        Ok(self.table.push(HostBody::from_bytes(bytes))?)
    }

    async fn read(&mut self, this: Resource<HostBody>, max: u32) -> wasmtime::Result<Result<Option<Vec<u8>>, body::BodyError>> {
        let body = self.table.get_mut(&this)?;
        let (read, waited) = timed(body.read(max as usize)).await;
        self.host_wait += waited;
        Ok(match read {
            Ok(chunk) => Ok(chunk.map(|b| b.to_vec())),
            Err(ReadError::Broken(why)) => Err(body::BodyError::Broken(why)),
            Err(ReadError::Timeout) => Err(body::BodyError::Timeout),
        })
    }

    async fn known_length(&mut self, this: Resource<HostBody>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&this)?.known_length())
    }

    async fn prepend(&mut self, head: Vec<u8>, tail: Resource<HostBody>) -> wasmtime::Result<Resource<HostBody>> {
        let tail = self.table.delete(tail)?;
        Ok(self.table.push(HostBody::prepend(head, tail))?)
    }

    async fn drop(&mut self, this: Resource<HostBody>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl http_client::Host for State {
    async fn send(
        &mut self,
        request: types::Request,
        options: http_client::SendOptions,
    ) -> wasmtime::Result<Result<types::Response, http_client::HttpError>> {
        let body = match request.body {
            Some(b) => Some(self.table.delete(b)?),
            None => None,
        };
        let mut headers = request.headers;
        if let Some(id) = &self.request_id
            && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(REQUEST_ID))
        {
            headers.push((REQUEST_ID.to_owned(), id.clone()));
        }
        let (sent, waited) = timed(self.shared.upstream.send(&request.method, &request.url, headers, body, options.timeout_ms)).await;
        self.host_wait += waited;
        Ok(match sent {
            Ok(response) => {
                let body = match response.body {
                    Some(b) => Some(self.table.push(b)?),
                    None => None,
                };
                Ok(types::Response { status: response.status, headers: response.headers, body })
            }
            Err(e) => {
                self.shared.metrics.upstream_error(e.kind());
                Err(wit_http_error(e))
            }
        })
    }
}

fn wit_http_error(e: UpstreamError) -> http_client::HttpError {
    use http_client::HttpError as Wit;
    match e {
        UpstreamError::InvalidUrl(why) => Wit::InvalidUrl(why),
        UpstreamError::DnsError(why) => Wit::DnsError(why),
        UpstreamError::ConnectionFailed(why) => Wit::ConnectionFailed(why),
        UpstreamError::Timeout => Wit::Timeout,
        UpstreamError::TlsError(why) => Wit::TlsError(why),
        UpstreamError::ProtocolError(why) => Wit::ProtocolError(why),
    }
}

impl wit_kv::Host for State {
    async fn limits(&mut self) -> wasmtime::Result<wit_kv::KvLimits> {
        Ok(wit_kv::KvLimits { max_key_bytes: kv::MAX_KEY_BYTES, max_value_bytes: kv::MAX_VALUE_BYTES, min_ttl_seconds: 1 })
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, wit_kv::KvError>> {
        let shared = self.shared.clone();
        Ok(self.kv_operation("get", shared.kv.get(key)).await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> wasmtime::Result<Result<(), wit_kv::KvError>> {
        let shared = self.shared.clone();
        Ok(self.kv_operation("set", shared.kv.set(key, value, ttl_seconds)).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), wit_kv::KvError>> {
        let shared = self.shared.clone();
        Ok(self.kv_operation("delete", shared.kv.delete(key)).await)
    }

    async fn set_if_absent(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> wasmtime::Result<Result<bool, wit_kv::KvError>> {
        let shared = self.shared.clone();
        Ok(self.kv_operation("set_if_absent", shared.kv.set_if_absent(key, value, ttl_seconds)).await)
    }
}

impl State {
    /// A store operation as the guest sees it: the `--kv-fault` switch
    /// first, its time counted as a wait, a failure counted in the metrics.
    async fn kv_operation<T>(&mut self, name: &'static str, operation: impl Future<Output = Result<T, kv::KvError>>) -> Result<T, wit_kv::KvError> {
        let fault = self.shared.kv_fault;
        let (result, waited) = timed(async move {
            match injected_kv_fault(fault).await {
                Some(e) => Err(e),
                None => operation.await.map_err(kv_error),
            }
        })
        .await;
        self.host_wait += waited;
        if let Err(e) = &result {
            self.shared.metrics.kv_error(name, &format!("{e:?}"));
        }
        result
    }
}

/// The `--kv-fault` switch: the error every operation gets, or a delay.
async fn injected_kv_fault(fault: Option<kv::KvFault>) -> Option<wit_kv::KvError> {
    match fault? {
        kv::KvFault::Unavailable => Some(wit_kv::KvError::Unavailable("the store is switched off (--kv-fault unavailable)".into())),
        kv::KvFault::Slow => {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            None
        }
    }
}

fn kv_error(e: kv::KvError) -> wit_kv::KvError {
    match e {
        kv::KvError::InvalidKey(why) => wit_kv::KvError::InvalidKey(why),
        kv::KvError::TooLarge(max) => wit_kv::KvError::TooLarge(max),
        kv::KvError::Unavailable(why) => wit_kv::KvError::Unavailable(why),
    }
}

impl config::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config::ConfigError>> {
        match key.as_str() {
            "document" => return Ok(Ok(Some(self.document.text.to_string()))),
            "document-version" => return Ok(Ok(self.document.version.as_deref().map(str::to_owned))),
            _ => {}
        }
        Ok(Ok(std::env::var(secret_env_var(&key)).ok()))
    }
}

/// Secrets are environment variables: the config key `hf-token` is
/// `EDGEPROXY_SECRET_HF_TOKEN`. Only that prefix is visible to the guest.
pub fn secret_env_var(key: &str) -> String {
    let name: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("EDGEPROXY_SECRET_{name}")
}

impl clock::Host for State {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(kv::now_ms())
    }

    async fn sleep_ms(&mut self, ms: u32) -> wasmtime::Result<()> {
        let ((), waited) = timed(tokio::time::sleep(std::time::Duration::from_millis(u64::from(ms)))).await;
        self.host_wait += waited;
        Ok(())
    }
}

impl limiter::Host for State {
    async fn check(
        &mut self,
        policy: String,
        key: String,
        limit: u32,
        period_seconds: u32,
    ) -> wasmtime::Result<Result<limiter::Decision, limiter::LimiterError>> {
        let shared = self.shared.clone();
        let (checked, waited) = timed(shared.limiter.check(&policy, &key, limit, period_seconds)).await;
        self.host_wait += waited;
        Ok(match checked {
            Ok(d) => Ok(limiter::Decision { allowed: d.allowed, retry_after_seconds: d.retry_after_seconds }),
            Err(why) => {
                shared.metrics.limiter_error(&policy, &why);
                Err(limiter::LimiterError::Unavailable(why))
            }
        })
    }
}

impl wit_blob::Host for State {
    async fn limits(&mut self) -> wasmtime::Result<wit_blob::BlobLimits> {
        Ok(wit_blob::BlobLimits { max_object_bytes: blob::MAX_OBJECT_BYTES, max_key_bytes: blob::MAX_KEY_BYTES })
    }

    async fn put(
        &mut self,
        key: String,
        content: Resource<HostBody>,
        size: u64,
        sha256: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), wit_blob::BlobError>> {
        let content = self.table.delete(content)?;
        let shared = self.shared.clone();
        let (put, waited) = timed(shared.blobs.put(&key, content, size, sha256.as_deref(), metadata)).await;
        self.host_wait += waited;
        Ok(put.map_err(wit_blob_error))
    }

    async fn put_through(
        &mut self,
        key: String,
        content: Resource<HostBody>,
        size: u64,
        sha256: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> wasmtime::Result<Resource<HostBody>> {
        let content = self.table.delete(content)?;
        let shared = self.shared.clone();
        let (passed, waited) = timed(shared.blobs.put_through(&key, content, size, sha256.as_deref(), metadata)).await;
        self.host_wait += waited;
        Ok(self.table.push(passed)?)
    }

    async fn get(&mut self, key: String, range: Option<(u64, u64)>) -> wasmtime::Result<Result<Option<(wit_blob::Object, Resource<HostBody>)>, wit_blob::BlobError>> {
        let shared = self.shared.clone();
        let (got, waited) = timed(shared.blobs.get(&key, range)).await;
        self.host_wait += waited;
        Ok(match got {
            Ok(Some((object, body))) => Ok(Some((wit_object(object), self.table.push(body)?))),
            Ok(None) => Ok(None),
            Err(e) => Err(wit_blob_error(e)),
        })
    }

    async fn head(&mut self, key: String) -> wasmtime::Result<Result<Option<wit_blob::Object>, wit_blob::BlobError>> {
        let shared = self.shared.clone();
        let (head, waited) = timed(shared.blobs.head(&key)).await;
        self.host_wait += waited;
        Ok(head.map(|o| o.map(wit_object)).map_err(wit_blob_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), wit_blob::BlobError>> {
        let shared = self.shared.clone();
        let (deleted, waited) = timed(shared.blobs.delete(&key)).await;
        self.host_wait += waited;
        Ok(deleted.map_err(wit_blob_error))
    }

    async fn list(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> wasmtime::Result<Result<wit_blob::Listing, wit_blob::BlobError>> {
        let shared = self.shared.clone();
        let (listed, waited) = timed(shared.blobs.list(&prefix, cursor.as_deref(), limit)).await;
        self.host_wait += waited;
        Ok(listed
            .map(|page| wit_blob::Listing {
                objects: page.objects.into_iter().map(|o| wit_blob::Listed { key: o.key, size: o.size, used_ms: o.used_ms }).collect(),
                cursor: page.cursor,
            })
            .map_err(wit_blob_error))
    }
}

fn wit_object(object: blob::Object) -> wit_blob::Object {
    wit_blob::Object { size: object.size, metadata: object.metadata }
}

fn wit_blob_error(e: BlobError) -> wit_blob::BlobError {
    match e {
        BlobError::InvalidKey(why) => wit_blob::BlobError::InvalidKey(why),
        BlobError::Mismatch(why) => wit_blob::BlobError::Mismatch(why),
        BlobError::TooLarge(max) => wit_blob::BlobError::TooLarge(max),
        BlobError::Unavailable(why) => wit_blob::BlobError::Unavailable(why),
    }
}

impl telemetry::Host for State {
    async fn routed(&mut self, route: u32, app: String) -> wasmtime::Result<()> {
        self.routed = Some(Routed { route, app });
        Ok(())
    }

    async fn answered(&mut self, error_code: Option<String>, cache: Option<String>) -> wasmtime::Result<()> {
        self.answered = Some(Answered { error_code, cache });
        Ok(())
    }
}

// The server's side of a request (server.rs knows nothing of the guest).
impl Handler for Runtime {
    type Body = HostBody;

    async fn handle(&self, req: hyper::Request<ClientBody>, url: String, peer: SocketAddr) -> hyper::Response<HostBody> {
        let (parts, body) = req.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = if hyper::body::Body::is_end_stream(&body) { None } else { Some(HostBody::from_stream(body)) };
        let request_id = parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request = GuestRequest { method: parts.method.to_string(), url: url.clone(), headers, body, client_ip: Some(peer.ip().to_string()), request_id };
        match Runtime::handle(self, request).await {
            Ok(r) => {
                let mut builder = hyper::Response::builder().status(r.status);
                if let Some(routed) = r.routed {
                    builder = builder.extension(routed);
                }
                if let Some(answered) = r.answered {
                    builder = builder.extension(answered);
                }
                for (name, value) in &r.headers {
                    builder = builder.header(name, value);
                }
                builder
                    .body(r.body.unwrap_or_else(|| HostBody::from_bytes(Vec::new())))
                    .unwrap_or_else(|e| internal_error(&format!("the app produced an invalid response: {e}")))
            }
            Err(trap) => guest_failure(&format!("{} {url}", parts.method), &trap),
        }
    }
}

/// What a client gets when its request's guest failed: a 503 naming the
/// limit it hit, or a 500 for a trap (whose details go to the log only).
pub fn guest_failure(request: &str, error: &anyhow::Error) -> hyper::Response<HostBody> {
    match LimitHit::of(error) {
        Some(hit) => {
            eprintln!("edgeproxy: stopped {request}: {hit}");
            json_error(503, hit.code(), &format!("{hit}; the request was stopped"))
        }
        None => {
            eprintln!("edgeproxy: the component trapped on {request}: {error:?}");
            internal_error("the proxy failed on this request")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_key_maps_to_a_prefixed_upper_case_variable() {
        assert_eq!(super::secret_env_var("hf-token"), "EDGEPROXY_SECRET_HF_TOKEN");
        assert_eq!(super::secret_env_var("replicate.api_key"), "EDGEPROXY_SECRET_REPLICATE_API_KEY");
    }
}

/// The component at `path`, compiled once per engine configuration and
/// content: a start costs a cache read, not a second of Cranelift. The cache
/// is `$XDG_CACHE_HOME/edgeproxy` (or `~/.cache/edgeproxy`); a file named by
/// the hash of the engine's compatibility data and the component's bytes,
/// written by this program only, so loading it (which trusts its machine
/// code, as wasmtime's own cache does) is sound. Without a usable cache
/// directory, the component is simply compiled.
pub fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    compile_cached(engine, &std::fs::read(path)?)
}

/// The component compiled for `engine`, from the on-disk cache when it was
/// compiled before with the same configuration.
fn compile_cached(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    bytes.hash(&mut hasher);
    let cached = compile_cache_dir().map(|dir| dir.join(format!("{:016x}.cwasm", hasher.finish())));
    if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
        // SAFETY: the file was serialised by this function for this engine
        // configuration and these bytes (both are in its name).
        if let Ok(component) = unsafe { Component::deserialize_file(engine, file) } {
            return Ok(component);
        }
    }
    let component = Component::new(engine, bytes)?;
    if let (Some(file), Ok(serialized)) = (cached, component.serialize()) {
        // Written aside and renamed, so a concurrent start never reads half a file.
        let partial = file.with_extension(format!("{}.partial", std::process::id()));
        if std::fs::create_dir_all(file.parent().expect("in the cache dir")).and_then(|()| std::fs::write(&partial, serialized)).and_then(|()| std::fs::rename(&partial, &file)).is_err() {
            let _ = std::fs::remove_file(&partial);
        }
    }
    Ok(component)
}

fn compile_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME").map(std::path::PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("edgeproxy"))
}

