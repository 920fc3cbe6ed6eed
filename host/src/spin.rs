//! `edgeproxy spin`: runs `dist/edgeproxy-spin.wasm` the way Spin 4.0.x does,
//! so CI proves the Spin artifact without the Spin binary. It links exactly
//! the `spin-host` world of spin/wit/adapter.wit: WASI 0.2 from wasmtime-wasi
//! and wasmtime-wasi-http (as Spin does), plus Spin's key-value
//! (`wasi:keyvalue@0.2.0-draft2`, label `default`) and variables
//! (`fermyon:spin/variables@2.0.0`, what spin-sdk reads them with), and it mimics what Spin does around a request:
//! `spin-*` headers, `allowed_outbound_hosts`, `SPIN_VARIABLE_*`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::BodyExt;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::body::{BoxError, Stalled};
use crate::kv::Kv;
use crate::limits::{GuestLimits, MemoryCap};
use crate::server::{ClientBody, Handler};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../spin/wit",
        inline: "
            package edgeproxy:spin-host-services;
            world services {
                include wasi:keyvalue/imports@0.2.0-draft2;
                import fermyon:spin/variables@2.0.0;
            }
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::fermyon::spin::variables;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// The only store label spin.toml grants (`key_value_stores = ["default"]`).
const STORE_LABEL: &str = "default";
/// Fermyon Cloud's documented key-value limits, enforced here so a change
/// that would break there fails in CI.
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 1_000_000;

pub struct Bucket;

pub struct Cas {
    key: String,
    seen: Option<Vec<u8>>,
}

/// What every request's store shares.
pub struct SpinShared {
    /// Application variables: `document`, and `SPIN_VARIABLE_*` from the environment.
    pub variables: HashMap<String, String>,
    pub kv: Kv,
    pub allowed: Arc<AllowedHosts>,
    /// The longest wait between an upstream body's frames, whatever the guest asks.
    pub upstream_body_timeout: std::time::Duration,
}

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    shared: Arc<SpinShared>,
    memory: MemoryCap,
}

pub struct SpinRuntime {
    engine: Engine,
    pre: ProxyPre<State>,
    shared: Arc<SpinShared>,
    limits: GuestLimits,
}

impl SpinRuntime {
    pub fn new(component_path: &Path, shared: SpinShared, limits: GuestLimits) -> anyhow::Result<SpinRuntime> {
        let mut config = Config::new();
        GuestLimits::configure(&mut config);
        let engine = Engine::new(&config)?;
        GuestLimits::start_ticker(&engine);
        let component = crate::runtime::load_component(&engine, component_path).with_context(|| {
            format!("cannot load the Spin component {} (build it with `cargo xtask spin`)", component_path.display())
        })?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Services::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component).map_err(anyhow::Error::from).context("the component imports something Spin 4.0.x does not link")?)?;
        Ok(SpinRuntime { engine, pre, shared: Arc::new(shared), limits })
    }
}

/// A client body's failure as wasi:http names it.
fn client_body_error(e: BoxError) -> wasmtime_wasi_http::Error {
    if e.is::<Stalled>() {
        return wasmtime_wasi_http::Error::ConnectionReadTimeout;
    }
    match e.downcast::<hyper::Error>() {
        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
        Err(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
    }
}

/// Variables from `SPIN_VARIABLE_<NAME>` environment variables, as Spin's
/// environment provider reads them: the name lower-cased.
pub fn env_variables() -> HashMap<String, String> {
    std::env::vars().filter_map(|(k, v)| Some((k.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase(), v))).collect()
}

impl Handler for SpinRuntime {
    type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

    async fn handle(&self, mut req: hyper::Request<ClientBody>, url: String, peer: SocketAddr) -> hyper::Response<Self::Body> {
        // What Spin's HTTP trigger adds for a component routed at `/...`.
        let path = req.uri().path().to_owned();
        for (name, value) in [
            ("spin-full-url", url.clone()),
            ("spin-path-info", path.clone()),
            ("spin-matched-route", "/...".to_owned()),
            ("spin-base-path", "/".to_owned()),
            ("spin-raw-component-route", "/...".to_owned()),
            ("spin-component-route", String::new()),
            ("spin-client-addr", peer.to_string()),
        ] {
            if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
                req.headers_mut().insert(name, value);
            }
        }
        match self.call(req).await {
            Ok(response) => response.map(|body| body.map_err(|e| BoxError::from(format!("{e:?}"))).boxed_unsync()),
            Err(e) => crate::runtime::guest_failure(&url, &e).map(|body| body.boxed_unsync()),
        }
    }
}

impl SpinRuntime {
    /// One instance per request, as Spin does; the response is returned as
    /// soon as the guest sets it, while the guest keeps writing the body.
    async fn call(&self, req: hyper::Request<ClientBody>) -> anyhow::Result<hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>> {
        let state = State {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks { allowed: self.shared.allowed.clone(), body_idle: self.shared.upstream_body_timeout },
            shared: self.shared.clone(),
            memory: self.limits.memory_cap(),
        };
        let mut store = Store::new(&self.engine, state);
        self.limits.arm(&mut store, |state| &mut state.memory);
        let req = req.map(|body| body.map_err(client_body_error));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, request, out).await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => anyhow::bail!("the component answered with an error: {code:?}"),
            Err(_) => match task.await {
                Ok(Ok(())) => anyhow::bail!("the component never set a response"),
                Ok(Err(trap)) => Err(anyhow::Error::from(trap).context("the component trapped")),
                Err(join) => Err(join.into()),
            },
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Spin's `allowed_outbound_hosts` check around wasmtime's default client.
struct Hooks {
    allowed: Arc<AllowedHosts>,
    body_idle: std::time::Duration,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (http::Response<wasmtime_wasi_http::WasiBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let allowed = self.allowed.permits(request.uri());
        let mut options = options.unwrap_or_default();
        options.between_bytes_timeout = Some(options.between_bytes_timeout.map_or(self.body_idle, |t| t.min(self.body_idle)));
        let options = Some(options);
        Box::new(async move {
            if !allowed {
                eprintln!("edgeproxy: denied an outbound request to {} (not in allowed_outbound_hosts)", request.uri());
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// `allowed_outbound_hosts` entries: `scheme://host[:port]`, each part may
/// be `*`, a host may be `*.suffix`, and no port means the scheme's default.
pub struct AllowedHosts(Vec<(String, String, String)>);

impl AllowedHosts {
    pub fn parse(patterns: &[String]) -> anyhow::Result<AllowedHosts> {
        let mut parsed = Vec::new();
        for pattern in patterns {
            let (scheme, rest) = pattern.split_once("://").with_context(|| format!("{pattern}: expected scheme://host[:port]"))?;
            let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.to_owned()),
                None => (rest.trim_end_matches('/').to_owned(), default_port(scheme).to_owned()),
            };
            parsed.push((scheme.to_owned(), host, port));
        }
        Ok(AllowedHosts(parsed))
    }

    fn permits(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().map_or_else(|| default_port(scheme).to_owned(), |p| p.to_string());
        self.0.iter().any(|(s, h, p)| {
            let host_ok = h == "*" || h.eq_ignore_ascii_case(host) || h.strip_prefix("*.").is_some_and(|suffix| host.ends_with(&format!(".{suffix}")));
            (s == "*" || s == scheme) && host_ok && (p == "*" || *p == port)
        })
    }
}

fn default_port(scheme: &str) -> &'static str {
    match scheme {
        "http" => "80",
        "https" => "443",
        _ => "*",
    }
}

fn store_error(e: crate::kv::KvError) -> store::Error {
    store::Error::Other(format!("{e:?}"))
}

fn check_key(key: &str) -> Result<(), store::Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(store::Error::Other(format!("key of {} bytes is over the {MAX_KEY_BYTES}-byte limit", key.len())));
    }
    Ok(())
}

impl store::Host for State {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        if identifier != STORE_LABEL {
            return Ok(Err(store::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(Bucket)?))
    }
}

impl store::HostBucket for State {
    async fn get(&mut self, _: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(check_key(&key).and_then(|()| self.shared.kv.get(&key).map_err(store_error)))
    }

    async fn set(&mut self, _: Resource<Bucket>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), store::Error>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(store::Error::Other(format!("value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit", value.len()))));
        }
        let shared = self.shared.clone();
        Ok(tokio::task::spawn_blocking(move || shared.kv.set(&key, &value, None)).await?.map_err(store_error))
    }

    async fn delete(&mut self, _: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), store::Error>> {
        let shared = self.shared.clone();
        Ok(tokio::task::spawn_blocking(move || shared.kv.delete(&key)).await?.map_err(store_error))
    }

    async fn exists(&mut self, _: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, store::Error>> {
        Ok(self.shared.kv.get(&key).map(|v| v.is_some()).map_err(store_error))
    }

    /// Every key in one response, as Spin's own stores answer.
    async fn list_keys(&mut self, _: Resource<Bucket>, _cursor: Option<String>) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let shared = self.shared.clone();
        let keys = tokio::task::spawn_blocking(move || shared.kv.keys("")).await?;
        Ok(keys.map(|keys| store::KeyResponse { keys, cursor: None }).map_err(store_error))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for State {
    async fn increment(&mut self, _: Resource<Bucket>, key: String, delta: i64) -> wasmtime::Result<Result<i64, store::Error>> {
        let updated = self.shared.kv.update(&key, |current| {
            let n = current.and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()).unwrap_or(0) + delta;
            (Some(n.to_string().into_bytes()), n)
        });
        Ok(updated.map_err(store_error))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let (key, seen) = {
            let cas = self.table.get(&cas)?;
            (cas.key.clone(), cas.seen.clone())
        };
        let swapped = self.shared.kv.update(&key, |current| if current == seen.as_deref() { (Some(value), true) } else { (None, false) });
        Ok(match swapped {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(())
            }
            Ok(false) => Err(atomics::CasError::CasFailed(cas)),
            Err(e) => {
                self.table.delete(cas)?;
                Err(atomics::CasError::StoreError(store_error(e)))
            }
        })
    }
}

impl atomics::HostCas for State {
    async fn new(&mut self, _: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(match self.shared.kv.get(&key) {
            Ok(seen) => Ok(self.table.push(Cas { key, seen })?),
            Err(e) => Err(store_error(e)),
        })
    }

    async fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for State {
    async fn get_many(&mut self, _: Resource<Bucket>, keys: Vec<String>) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        Ok(keys.into_iter().map(|k| self.shared.kv.get(&k).map(|v| (k, v))).collect::<Result<_, _>>().map_err(store_error))
    }

    async fn set_many(&mut self, _: Resource<Bucket>, entries: Vec<(String, Vec<u8>)>) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(entries.iter().try_for_each(|(k, v)| self.shared.kv.set(k, v, None)).map_err(store_error))
    }

    async fn delete_many(&mut self, _: Resource<Bucket>, keys: Vec<String>) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(keys.iter().try_for_each(|k| self.shared.kv.delete(k)).map_err(store_error))
    }
}

impl variables::Host for State {
    /// Spin variable names are `[a-z][a-z0-9_]*`; other names are an error,
    /// and a name the component has no value for is `undefined`.
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase()) && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(variables::Error::InvalidName(format!("{name:?} is not a valid Spin variable name"))));
        }
        Ok(self.shared.variables.get(&name).cloned().ok_or_else(|| variables::Error::Undefined(format!("no variable {name:?}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn allowed_outbound_hosts_match_like_spin() {
        let allowed = AllowedHosts::parse(&["https://huggingface.co".into(), "https://*.hf.co".into(), "http://127.0.0.1:*".into()]).unwrap();
        let permits = |uri: &str| allowed.permits(&uri.parse().unwrap());
        assert!(permits("https://huggingface.co/api/models"));
        assert!(permits("https://cas-bridge.xethub.hf.co/x"));
        assert!(permits("http://127.0.0.1:8080/x"));
        assert!(!permits("http://huggingface.co/"), "scheme must match");
        assert!(!permits("https://huggingface.co:8443/"), "no port means the default port");
        assert!(!permits("https://hf.co/"), "*.hf.co is subdomains only");
        assert!(!permits("https://evil.example/"));
    }
}
