//! `edgeproxy`: serves the edgeproxy component with wasmtime (the one built
//! into the binary, or `--component`). All proxy logic is in the component;
//! this binary only provides its imports (see runtime.rs).

// The host in layers: a module uses only modules in layers below its own
// (`the_host_imports_only_downwards` checks it). ARCHITECTURE.md, "host/".
mod assets;
mod blob;
mod body;
mod framing;
mod kv;
mod limiter;
mod limits;
mod metrics;
mod prefetch;
mod preinit;
mod redis;
mod runtime;
mod server;
mod spin;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::{Parser, Subcommand};

const DEFAULT_DOCUMENT: &str = include_str!("default.toml");

/// `edgeproxy --version`: the binary's version and the component it carries.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (component sha256 ", env!("EDGEPROXY_COMPONENT_SHA256"), ")");

#[derive(Parser)]
#[command(name = "edgeproxy", version = VERSION, about = "Serve the edgeproxy component with wasmtime", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default when no command is given).
    Serve(ServeArgs),
    /// Run dist/edgeproxy-spin.wasm as Spin 4.0.x would (for tests without the Spin binary).
    Spin(SpinArgs),
    /// Sign an image-cache URL path, so that it may generate (`generation =
    /// "signed"`) or regenerate (`?redo`). Prints the path with its query.
    Sign {
        /// The canonical image path, relative to the route: /800x600/sunglasses-sloth
        path: String,
        /// The secret's name in the document (`signing_secret`); its value is
        /// read from the same environment variable `serve` reads.
        #[arg(long, default_value = "image-signing-key")]
        secret: String,
        /// Seconds the signature stays valid.
        #[arg(long, default_value_t = 86_400)]
        expires_in: u64,
    },
    /// Hugging Face tools for an hf-mirror route.
    #[command(subcommand)]
    Hf(HfCommand),
    /// Check a config document as serving it would, without serving: prints
    /// each problem with its route and key and exits with status 1, or says
    /// the document is valid.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Check with this component file instead of the built-in one.
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// Set a document up ahead in a component, for a host that makes an
    /// instance per request and gives the document as a variable (Spin):
    /// runs the core's `init` with the document and writes the snapshot.
    /// A request whose document differs sets itself up, as without it.
    Preinit {
        #[arg(long)]
        config: PathBuf,
        /// The core component to set up (the built-in one when not given).
        #[arg(long)]
        component: Option<PathBuf>,
        #[arg(long)]
        output: PathBuf,
    },
    /// Measure per-request instantiation of the component (for the benchmark harness).
    InstantiateBench {
        /// Another component than the built-in one.
        #[arg(long)]
        component: Option<PathBuf>,
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
    },
}

#[derive(clap::Subcommand)]
enum HfCommand {
    /// Fill a running mirror's store with a repo: every file (or those
    /// --include names) at a revision, asked for through the mirror.
    Prefetch(prefetch::PrefetchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The config document (TOML). Without it, a huggingface.co API mirror.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Serve this component file instead of the one built into the binary.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Where the key-value store keeps its file (without --kv), and the
    /// blob store its objects (`blobs/`).
    #[arg(long, default_value = ".edgeproxy")]
    data_dir: PathBuf,
    /// The most the blob store holds (bytes, or with K, M, G or T: 1024s);
    /// past it, objects least recently used are removed. Unbounded without it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    blob_max_bytes: Option<u64>,
    /// Keep the blob store on S3-compatible storage, s3://BUCKET[/PREFIX],
    /// shared by every instance pointed at it (AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Without it: --data-dir.
    #[arg(long, value_name = "URL", env = "EDGEPROXY_BLOB_STORE", conflicts_with = "blob_max_bytes")]
    blob_store: Option<String>,
    /// Put the key-value store and the rate limiter on Redis,
    /// redis://[:PASSWORD@]HOST[:PORT][/DB], so that every instance pointed
    /// at it shares the cache, stored images and leases, and the limits.
    /// Without it: a redb file in --data-dir and this process's memory.
    #[arg(long, value_name = "URL")]
    kv: Option<String>,
    /// The scheme clients use to reach this server: `https` behind a TLS
    /// terminator. With --tls-cert it is always `https`.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    scheme: String,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate
    /// chain, leaf first. SIGHUP reads it and the key again.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The access log: `line` (CLIENT "METHOD URL" STATUS TIMEms) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = server::LogFormat::Line)]
    log_format: server::LogFormat,
    /// Serve Prometheus metrics (/metrics) and health checks (/healthz,
    /// /readyz) on this address, apart from client traffic. Off without it.
    #[arg(long, value_name = "ADDRESS")]
    admin_listen: Option<SocketAddr>,
    /// hub-gateway's web UI as static files from this directory (the built
    /// UI, its index.html at the top), as Workers Static Assets serves it:
    /// the gateway's own routes go to the component, every other path is a
    /// file here, or index.html for the app's routes.
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Make the key-value store fail or be slow (for testing how apps degrade).
    #[arg(long, hide = true, value_enum)]
    kv_fault: Option<kv::KvFault>,
}

/// Bounds on clients and guests (docs/wasmtime.md, "Limits of the wasmtime host").
#[derive(clap::Args)]
struct LimitArgs {
    /// Open client connections; one more gets a 503 and is closed.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from the
    /// connection's start or its previous response (so also the idle
    /// keep-alive timeout).
    #[arg(long, default_value_t = 30)]
    header_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is broken off.
    #[arg(long, default_value_t = 60)]
    body_timeout_secs: u64,
    /// Seconds an upstream's response body may send nothing before it is broken off.
    #[arg(long, default_value_t = 120)]
    upstream_body_timeout_secs: u64,
    /// Seconds open requests may take to finish after SIGINT or SIGTERM
    /// (new connections are refused meanwhile).
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,
    /// Milliseconds of guest time per request before it is stopped with a 503.
    #[arg(long, default_value_t = 30_000)]
    guest_time_ms: u64,
    /// MiB of linear memory per request's guest before it is stopped with a 503.
    #[arg(long, default_value_t = 512)]
    guest_memory_mib: usize,
}

impl LimitArgs {
    fn server(&self) -> server::ServerLimits {
        server::ServerLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        }
    }

    fn upstream_body_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_body_timeout_secs.max(1))
    }

    fn guest(&self) -> limits::GuestLimits {
        limits::GuestLimits { cpu: Duration::from_millis(self.guest_time_ms.max(1)), memory: self.guest_memory_mib.max(1) << 20 }
    }
}

#[derive(clap::Args)]
struct SpinArgs {
    /// The config document (TOML): the Spin variable `document`.
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[arg(long, default_value = "dist/edgeproxy-spin.wasm")]
    component: PathBuf,
    /// Where the `default` key-value store keeps its file.
    #[arg(long, default_value = ".spin")]
    data_dir: PathBuf,
    /// An `allowed_outbound_hosts` entry, as in spin.toml (repeatable).
    #[arg(long = "allowed-outbound-host")]
    allowed_outbound_hosts: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// `1048576`, `512M`, `50G`: bytes, or K, M, G, T of 1024s.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.trim().split_at(text.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(text.trim().len()));
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: a size is bytes, or a number with K, M, G or T")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?}: a size starts with a number"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        None => rt.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => rt.block_on(serve(args)),
        Some(Command::Spin(args)) => rt.block_on(serve_spin(args)),
        Some(Command::Sign { path, secret, expires_in }) => sign(&path, &secret, expires_in),
        Some(Command::Hf(HfCommand::Prefetch(args))) => rt.block_on(prefetch::run(args)),
        Some(Command::Check { config, component }) => {
            if !rt.block_on(check(&config, component))? {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Preinit { config, component, output }) => rt.block_on(preinit(&config, component, &output)),
        Some(Command::InstantiateBench { component, iterations }) => rt.block_on(instantiate_bench(component, iterations)),
    }
}

/// What requests share, with the store in `data_dir` and limits in memory.
fn shared(data_dir: &std::path::Path, upstream_body_timeout: Duration) -> anyhow::Result<runtime::Shared> {
    shared_with(local_state(data_dir)?, BlobPlace::Directory(data_dir, None), upstream_body_timeout)
}

/// The default store and limiter: a redb file in `data_dir`, buckets in memory.
fn local_state(data_dir: &std::path::Path) -> anyhow::Result<(kv::Store, limiter::Limiter)> {
    Ok((kv::Store::Local(Arc::new(kv::Kv::open(data_dir)?)), limiter::Limiter::Local(limiter::Buckets::new())))
}

/// Where the blob store keeps objects: a directory (with a cap), or S3.
enum BlobPlace<'a> {
    Directory(&'a std::path::Path, Option<u64>),
    S3(&'a str),
}

fn shared_with((kv, limiter): (kv::Store, limiter::Limiter), blobs: BlobPlace, upstream_body_timeout: Duration) -> anyhow::Result<runtime::Shared> {
    let metrics = Arc::new(metrics::Metrics::new());
    let upstream = upstream::Upstream::new(upstream_body_timeout, metrics.upstream_received_bytes.clone())?;
    let blobs = match blobs {
        BlobPlace::Directory(dir, cap) => blob::Store::open(dir, cap, metrics.blobs.clone()).with_context(|| format!("cannot make the blob store in {}", dir.display()))?,
        BlobPlace::S3(url) => blob::Store::on_s3(url, upstream.clone(), metrics.blobs.clone()).map_err(|e| anyhow::anyhow!("--blob-store: {e}"))?,
    };
    Ok(runtime::Shared { blobs: Arc::new(blobs), kv, kv_fault: None, limiter, upstream, metrics })
}

/// `serve`'s shared state: the store and the limiter local, or on Redis (`--kv`).
async fn serve_shared(args: &ServeArgs) -> anyhow::Result<runtime::Shared> {
    let state = match &args.kv {
        None => local_state(&args.data_dir)?,
        Some(url) => {
            let redis = redis::Redis::connect(url)?;
            if let Err(e) = redis.ping().await {
                eprintln!("edgeproxy: warning: Redis at {} does not answer ({e}); serving without it (cache misses, limits open) until it does", redis.name);
            }
            (kv::Store::Redis(redis.clone()), limiter::Limiter::Redis(redis))
        }
    };
    Ok(runtime::Shared { kv_fault: args.kv_fault, ..shared_with(state, blob_place(args), args.limits.upstream_body_timeout())? })
}

fn blob_place(args: &ServeArgs) -> BlobPlace<'_> {
    match &args.blob_store {
        Some(url) => BlobPlace::S3(url),
        None => BlobPlace::Directory(&args.data_dir, args.blob_max_bytes),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let document = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read the config document {}", path.display()))?,
        None => DEFAULT_DOCUMENT.to_owned(),
    };
    let shared = serve_shared(&args).await?;
    let component = runtime::ComponentSource::new(args.component.as_deref())?;
    let name = component.name.clone();
    let runtime = Arc::new(runtime::Runtime::new(component, document.clone(), shared, args.limits.guest()).await?);
    if let Some(path) = &args.config {
        refuse_a_document_with_problems(&runtime, path, &document).await?;
    }
    runtime.start_pool_recycler();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Tls::load(cert, key)?)),
        _ => None,
    };
    let scheme = if tls.is_some() { "https".to_owned() } else { args.scheme };
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = shutdown_signal();
    if args.config.is_some() || tls.is_some() {
        tokio::spawn(reload_on_hangup(runtime.clone(), args.config.clone(), tls.clone()));
    }
    let admin = match args.admin_listen {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} (--admin-listen)"))?),
        None => None,
    };
    // The listener's own scheme: `--scheme https` names what clients use in
    // front of a TLS terminator, not what this socket speaks.
    let listening = if tls.is_some() { "https" } else { "http" };
    if scheme == listening {
        eprintln!("edgeproxy: serving {name} on {listening}://{}", listener.local_addr()?);
    } else {
        eprintln!("edgeproxy: serving {name} on {listening}://{} (clients reach it as {scheme}, through a TLS terminator)", listener.local_addr()?);
    }
    if let Some(dir) = &args.assets {
        ensure!(dir.is_dir(), "--assets {}: not a directory", dir.display());
        if !dir.join("index.html").is_file() {
            eprintln!("edgeproxy: WARNING: --assets {} has no index.html: the web UI's pages will answer 502 ui_missing", dir.display());
        }
        eprintln!("edgeproxy: the web UI from {}, for every path but hub-gateway's own routes", dir.display());
    }
    if let Some(admin) = admin {
        eprintln!("edgeproxy: metrics and health checks on http://{}", admin.local_addr()?);
        let shared = runtime.shared().clone();
        let store: metrics::StoreCheck = Arc::new(move || {
            let shared = shared.clone();
            Box::pin(async move { shared.kv.ready().await })
        });
        tokio::spawn(metrics::serve_admin(admin, runtime.shared().metrics.clone(), store));
    }

    let purger = runtime.shared().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            every.tick().await;
            purger.kv.purge_expired().await;
        }
    });
    let metrics = runtime.shared().metrics.clone();
    let front = Arc::new(assets::WithAssets { dir: args.assets.clone(), inner: runtime });
    server::serve(listener, front, server::ServerOptions { scheme, tls, limits: args.limits.server(), log_format: args.log_format, metrics }, shutdown).await
}

/// `serve` starts only with a document `edgeproxy check` passes, each
/// problem printed as `check` prints it: served, it would answer every
/// request with a 500 (as SIGHUP refuses such a document, so does start-up).
async fn refuse_a_document_with_problems(runtime: &runtime::Runtime, path: &std::path::Path, document: &str) -> anyhow::Result<()> {
    let problems = runtime.check_config(document).await?;
    for problem in &problems {
        eprintln!("{}: {problem}", path.display());
    }
    ensure!(problems.is_empty(), "refused to start: the config document {} has the problems above (`edgeproxy check --config {}` lists them too)", path.display(), path.display());
    Ok(())
}

/// SIGHUP: the config document is read again and, if the component finds no
/// problem with it, applies to requests that start from then on; the TLS
/// certificate and key are read again and apply to new connections. A file
/// that cannot be read or has problems is refused, with the reason logged,
/// and the one in use stays. Like [`shutdown_signal`], the handler is
/// installed when this is called (SIGHUP's default is to end the process).
fn reload_on_hangup(runtime: Arc<runtime::Runtime>, config: Option<PathBuf>, tls: Option<Arc<tls::Tls>>) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    async move {
        while hangups.recv().await.is_some() {
            if let Some(config) = &config {
                reload(&runtime, config).await;
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => eprintln!("edgeproxy: reloaded the TLS certificate {}", tls.cert_path().display()),
                    Err(e) => eprintln!("edgeproxy: refused the new TLS certificate (the previous one stays in use): {e:#}"),
                }
            }
        }
    }
}

async fn reload(runtime: &runtime::Runtime, config: &std::path::Path) {
    let outcome = match std::fs::read_to_string(config) {
        Err(e) => Err(vec![format!("cannot read it: {e}")]),
        Ok(document) => runtime.reload(document).await.unwrap_or_else(|e| Err(vec![format!("the check failed: {e:#}")])),
    };
    match outcome {
        Ok(()) => eprintln!("edgeproxy: reloaded the config document {}", config.display()),
        Err(problems) => eprintln!("edgeproxy: refused the new config document {} (the previous one stays in use): {}", config.display(), problems.join("; ")),
    }
}

async fn serve_spin(args: SpinArgs) -> anyhow::Result<()> {
    let mut variables = spin::env_variables();
    let document = std::fs::read_to_string(&args.config).with_context(|| format!("cannot read the config document {}", args.config.display()))?;
    variables.insert("document".into(), document);
    let shared = spin::SpinShared { variables, kv: kv::Kv::open(&args.data_dir)?, allowed: Arc::new(spin::AllowedHosts::parse(&args.allowed_outbound_hosts)?), upstream_body_timeout: args.limits.upstream_body_timeout() };
    let runtime = Arc::new(spin::SpinRuntime::new(&args.component, shared, args.limits.guest())?);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = shutdown_signal();
    eprintln!("edgeproxy: serving {} (Spin-compatible) on http://{}", args.component.display(), listener.local_addr()?);
    server::serve(listener, runtime, server::ServerOptions { scheme: "http".into(), tls: None, limits: args.limits.server(), log_format: server::LogFormat::Line, metrics: Arc::new(metrics::Metrics::new()) }, shutdown).await
}

fn sign(path: &str, secret: &str, expires_in: u64) -> anyhow::Result<()> {
    let var = runtime::secret_env_var(secret);
    let key = std::env::var(&var).with_context(|| format!("set {var} to the signing secret (the value the server has for {secret:?})"))?;
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + expires_in;
    println!("{}", signed_url(path, key.as_bytes(), expires)?);
    Ok(())
}

/// `path` with its signature in the query: the image's own options kept
/// before it (`/800x600/x?width=200` gives `...?width=200&expires=...`),
/// and a route's prefix (`/_zoo/800x600/x`) kept in front but left out of
/// what is signed, as the server checks it.
fn signed_url(path: &str, key: &[u8], expires: u64) -> anyhow::Result<String> {
    use edgeproxy_signing as sign;
    let (path_only, options) = path.split_once('?').unwrap_or((path, ""));
    let segments: Vec<&str> = path_only.split('/').filter(|s| !s.is_empty()).collect();
    let not_an_image = || anyhow::anyhow!("{path:?} is not an image path like /800x600/sunglasses-sloth (or /_zoo/800x600/sunglasses-sloth under a route's prefix)");
    let split = segments.len().checked_sub(2).ok_or_else(not_an_image)?;
    let (prefix, image) = segments.split_at(split);
    let canonical = sign::canonical_path(&image.join("/")).ok_or_else(not_an_image)?;
    let prefix: String = prefix.iter().map(|s| format!("/{s}")).collect();
    let options: String = options.split('&').filter(|o| !o.is_empty() && !o.starts_with("expires=") && !o.starts_with("sig=")).map(|o| format!("{o}&")).collect();
    Ok(format!("{prefix}{canonical}?{options}{}", sign::query(key, &canonical, expires)))
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled: a signal that arrives right after
/// the "serving" line must stop the server, not kill it.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

/// `edgeproxy check`: the component's own check (the `checker` export), so
/// a document it passes is one every host accepts. True when valid.
async fn check(config: &std::path::Path, component: Option<PathBuf>) -> anyhow::Result<bool> {
    let document = std::fs::read_to_string(config).with_context(|| format!("cannot read the config document {}", config.display()))?;
    let dir = std::env::temp_dir().join(format!("edgeproxy-check-{}", std::process::id()));
    let runtime = runtime::Runtime::new(runtime::ComponentSource::new(component.as_deref())?, String::new(), shared(&dir, Duration::from_secs(1))?, limits::GuestLimits { cpu: Duration::from_secs(30), memory: 512 << 20 }).await?;
    let problems = runtime.check_config(&document).await;
    let _ = std::fs::remove_dir_all(dir);
    let problems = problems?;
    for problem in &problems {
        eprintln!("{}: {problem}", config.display());
    }
    if problems.is_empty() {
        println!("{}: valid", config.display());
    }
    Ok(problems.is_empty())
}

/// `edgeproxy preinit`: the component with `config` set up in it.
async fn preinit(config: &std::path::Path, component: Option<PathBuf>, output: &std::path::Path) -> anyhow::Result<()> {
    let document = std::fs::read_to_string(config).with_context(|| format!("cannot read the config document {}", config.display()))?;
    let component = runtime::ComponentSource::new(component.as_deref())?;
    let dir = std::env::temp_dir().join(format!("edgeproxy-preinit-{}", std::process::id()));
    let limits = limits::GuestLimits { cpu: Duration::from_secs(30), memory: 512 << 20 };
    let snapshot = runtime::snapshot(&component.bytes, &runtime::Document::unversioned(&document), Arc::new(shared(&dir, Duration::from_secs(1))?), limits).await;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::write(output, snapshot?).with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!("edgeproxy: {} set up with {} in {}", component.name, config.display(), output.display());
    Ok(())
}

async fn instantiate_bench(component: Option<PathBuf>, iterations: u32) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("edgeproxy-bench-{}", std::process::id()));
    let runtime = runtime::Runtime::new(runtime::ComponentSource::new(component.as_deref())?, String::new(), shared(&dir, Duration::from_secs(120))?, limits::GuestLimits { cpu: Duration::from_secs(30), memory: 512 << 20 }).await?;
    for _ in 0..1000 {
        runtime.instantiate().await?;
    }
    let started = Instant::now();
    for _ in 0..iterations {
        let (store, instance) = runtime.instantiate().await?;
        drop((instance, store));
    }
    let per = started.elapsed() / iterations;
    println!("instantiate_us {:.2}", per.as_secs_f64() * 1e6);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The host's modules, lowest layer first. A module may use a module of a
/// lower layer, never one of its own layer or above.
#[cfg(test)]
const LAYERS: &[&[&str]] = &[
    // Parts that know nothing of each other: bodies, framing, TLS, the
    // snapshot, Redis's connection, the guest's bounds, the metrics.
    &["body", "framing", "tls", "preinit", "redis", "limits", "metrics"],
    // Services the guest's imports are made of; nothing of wasmtime or HTTP serving.
    &["kv", "limiter", "upstream"],
    // The blob store, in a directory or on S3 (blob/s3.rs; its requests go out through `upstream`);
    // `edgeproxy hf prefetch`, a client of a mirror.
    &["blob", "prefetch"],
    // The HTTP server: connections, threads, drain, request URLs and ids, the log; nothing of the guest.
    &["server"],
    // The engine: the component's bindings, its pool and compile cache, the imports (`serve`);
    // beside it, the web UI's files served in front of it (`serve --assets`).
    &["runtime", "assets"],
    // Spin's mode (`spin`): wasi:http and Spin's interfaces, on the runtime's loading and limits.
    &["spin"],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_keeps_the_images_options_and_the_routes_prefix_outside_the_signature() {
        let query = edgeproxy_signing::query(b"k", "/800x600/x", 2000);
        assert_eq!(signed_url("/800x600/x", b"k", 2000).unwrap(), format!("/800x600/x?{query}"));
        assert_eq!(signed_url("/800x600/x?width=200", b"k", 2000).unwrap(), format!("/800x600/x?width=200&{query}"));
        assert_eq!(signed_url("/_zoo/800X600/X?width=200&format=webp", b"k", 2000).unwrap(), format!("/_zoo/800x600/x?width=200&format=webp&{query}"));
        assert!(signed_url("/800x600", b"k", 2000).unwrap_err().to_string().contains("/_zoo/800x600"));
    }

    #[test]
    fn sizes_are_bytes_or_binary_multiples() {
        assert_eq!(super::parse_size("1048576"), Ok(1 << 20));
        assert_eq!((super::parse_size("512M"), super::parse_size("50GiB"), super::parse_size("2t")), (Ok(512 << 20), Ok(50 << 30), Ok(2 << 40)));
        assert!(super::parse_size("lots").is_err() && super::parse_size("5X").is_err() && super::parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_host_imports_only_downwards() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let layer_of = |module: &str| super::LAYERS.iter().position(|layer| layer.contains(&module));
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if module == "main" {
                continue;
            }
            let Some(layer) = layer_of(&module) else {
                problems.push(format!("{module}.rs is in no layer: add it to LAYERS in main.rs"));
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            for used in text.split("crate::").skip(1).map(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("")) {
                match layer_of(used) {
                    Some(l) if l < layer => {}
                    Some(_) => problems.push(format!("{module} (layer {layer}) uses {used}, which is not below it")),
                    None => problems.push(format!("{module} uses crate::{used}, which is in no layer")),
                }
            }
        }
        problems.sort();
        problems.dedup();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
