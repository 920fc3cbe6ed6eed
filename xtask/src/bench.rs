//! The benchmark harness. One run measures edgeproxy and its baselines on
//! this machine, back to back, against the same local upstream:
//!
//! - small proxied requests (wrk: requests/s, p50, p99): direct, nginx
//!   `proxy_pass`, edgeproxy on wasmtime, and on real `spin up` when there is
//!   a Spin binary;
//! - streaming a large body each way (curl), with the serving process's peak
//!   RSS: the same targets;
//! - hf-mirror: a 1 GiB LFS file by its `resolve` URL (curl follows the
//!   redirect to the CDN host), straight from the fake hub's CDN and through
//!   edgeproxy;
//! - image-cache: a 1-megapixel WebP decoded, cover-resized to 800×600 and
//!   encoded as JPEG q80, lossy WebP q80 and AVIF q80 through the component (with
//!   its own decode, transform and encode times), against libvips'
//!   `vipsthumbnail` doing the same; cache hits of a stored variant (wrk);
//!   `cargo xtask bench images` runs this part alone;
//! - load: 10,000 requests at 256 connections through each app on one
//!   wasmtime host (errors, p99, peak RSS, descriptors and RSS before and
//!   after);
//! - per-request instantiation of the component;
//! - the component's and the Workers bundle's size, raw and gzip.
//!
//! Results replace the block between the markers in BENCHMARKS.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use edgeproxy_testkit::Upstream;

const WRK_SECONDS: u32 = 10;
const WRK_CONNECTIONS: u32 = 32;
const STREAM_BYTES: u64 = 4 << 30;
const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";
/// image-cache's table, which `cargo xtask bench images` also writes alone.
const IMAGES_START: &str = "<!-- bench:images:start -->";
const IMAGES_END: &str = "<!-- bench:images:end -->";

mod baselines;

/// One server the small-request and streaming runs measure.
struct Target {
    name: &'static str,
    base: String,
    /// The `Host` header to send, where the server routes by it.
    host: Option<&'static str>,
    /// Whose CPU time counts (with its descendants).
    cpu_of: Option<u32>,
    /// Whose peak RSS is reported.
    rss_of: Option<u32>,
}

struct Killed(Child);
impl Drop for Killed {
    /// SIGTERM, so that nginx's master stops its workers too (after SIGKILL
    /// they would outlive the run); to the whole process group when the child
    /// leads one (`spin up` and its trigger process), else to the child.
    fn drop(&mut self) {
        let pid = self.0.id();
        let group = Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        if !group.is_ok_and(|s| s.success()) {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let _ = self.0.wait();
    }
}

#[derive(Clone)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of the serving process (and its children) per request, when measured.
    cpu_us: Option<f64>,
}

impl Load {
    fn mean(loads: &[Load]) -> Load {
        let mean = |f: &dyn Fn(&Load) -> f64| loads.iter().map(f).sum::<f64>() / loads.len() as f64;
        let cpu_us = loads.iter().map(|l| l.cpu_us).collect::<Option<Vec<f64>>>().map(|cpu| cpu.iter().sum::<f64>() / cpu.len() as f64);
        Load { rps: mean(&|l| l.rps), p50_ms: mean(&|l| l.p50_ms), p99_ms: mean(&|l| l.p99_ms), cpu_us }
    }

    fn cpu(&self) -> String {
        self.cpu_us.map_or("–".to_owned(), |us| format!("{us:.0} µs"))
    }
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    crate::ensure_debian_tools(&[("wrk", "wrk"), ("nginx", "nginx-light"), ("curl", "curl")])?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let upstream = rt.block_on(Upstream::start());
    let work = std::env::temp_dir().join(format!("edgeproxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(work.join("logs"))?;

    let nginx_port = free_port()?;
    let nginx_conf = work.join("nginx.conf");
    std::fs::write(&nginx_conf, nginx_config(nginx_port, &upstream.url(), &work))?;
    let _nginx = Killed(
        Command::new("nginx").arg("-p").arg(&work).arg("-c").arg(&nginx_conf).stderr(Stdio::inherit()).spawn().context("start nginx")?,
    );

    let proxy_port = free_port()?;
    let config = work.join("edgeproxy.toml");
    // Every app on its host name, and api-gateway for any other host (curl, Spin's own Host).
    let document = format!("{}\n[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", edgeproxy_testkit::every_app(&upstream.url()), upstream.url());
    std::fs::write(&config, &document)?;
    let proxy = serve(root, proxy_port, &config, &work.join("data"))?;
    // The Spin artifact set up with this document, as `spin build` sets up
    // the manifest's (docs/spin.md).
    let spin_artifact = work.join("edgeproxy-spin.wasm");
    crate::spin::build_with_document(root, &root.join("dist/edgeproxy.wasm"), &document, &spin_artifact)?;
    let nginx_pid = _nginx.0.id();
    let mut targets = vec![
        Target { name: "direct upstream", base: upstream.url(), host: None, cpu_of: Some(std::process::id()), rss_of: None },
        Target { name: "nginx proxy_pass", base: format!("http://127.0.0.1:{nginx_port}"), host: None, cpu_of: Some(nginx_pid), rss_of: None },
        Target { name: "edgeproxy api-gateway (wasmtime)", base: format!("http://127.0.0.1:{proxy_port}"), host: Some("api.test"), cpu_of: Some(proxy.0.id()), rss_of: Some(proxy.0.id()) },
        Target { name: "edgeproxy hf-mirror (wasmtime)", base: format!("http://127.0.0.1:{proxy_port}"), host: Some("hf.test"), cpu_of: Some(proxy.0.id()), rss_of: None },
    ];
    // Real Spin, when this machine has it: `spin up` of the manifest the tests use.
    let spin = match edgeproxy_testkit::host::spin_binary() {
        Some(binary) => {
            let port = free_port()?;
            let dir = work.join("spin");
            std::fs::create_dir_all(&dir)?;
            let mut up = edgeproxy_testkit::host::spin_up_artifact(&binary, &spin_artifact, &config, &dir, &[], None, &format!("127.0.0.1:{port}"));
            let spin = Killed(up.stdout(Stdio::null()).spawn().context("start spin up")?);
            wait_until_up(&format!("http://127.0.0.1:{port}/small")).context("spin up did not come up")?;
            let trigger = edgeproxy_testkit::host::descendant_named(spin.0.id(), "spin").context("spin up's trigger process")?;
            let base = format!("http://127.0.0.1:{port}");
            targets.push(Target { name: "edgeproxy api-gateway (real `spin up`)", base, host: Some("api.test"), cpu_of: Some(trigger), rss_of: Some(trigger) });
            Some((spin, binary))
        }
        None => {
            eprintln!("bench: WARNING: no Spin binary, so no real Spin figures");
            None
        }
    };
    for t in &targets {
        wait_until_up(&format!("{}/small", t.base)).with_context(|| format!("{} did not come up", t.name))?;
    }

    eprintln!("bench: wrk, side by side: {} ...", targets.iter().map(|t| t.name).collect::<Vec<_>>().join(", "));
    let sides: Vec<Side> = targets.iter().map(|t| Side { url: format!("{}/small", t.base), host: t.host, cpu_of: t.cpu_of }).collect();
    let loads: Vec<(&str, Load)> = targets.iter().map(|t| t.name).zip(wrk_side_by_side(&sides)?).collect();
    let mut streams = Vec::new();
    for t in targets.iter().filter(|t| t.host != Some("hf.test")) {
        eprintln!("bench: streaming {} GiB each way through {} ...", STREAM_BYTES >> 30, t.name);
        let down = stream_gib_per_s(&format!("{}/bytes/{STREAM_BYTES}", t.base))?;
        let up = upload_gib_per_s(&format!("{}/sink", t.base))?;
        streams.push((t.name, down, up, t.rss_of.map(peak_rss_mib).transpose()?));
    }
    eprintln!("bench: the document's size: one route against {MANY_ROUTES} ...");
    let sizes_of_document = document_size(root, &work, &upstream.url())?;
    eprintln!("bench: Spin, against a plain spin-sdk proxy ...");
    // Measured again beside the plain proxy, not taken from the table above:
    // on this shared machine, minutes apart can differ by more than the floor.
    let real_spin_ours = targets.iter().find(|t| t.name.contains("real `spin up`")).and_then(|t| Some((t.base.as_str(), t.cpu_of?)));
    let spin_rows = baselines::spin(root, &work, &upstream.url(), &config, &spin_artifact, spin.as_ref().map(|(_, binary)| binary.as_path()), real_spin_ours)?;
    drop(spin);
    drop(proxy);
    eprintln!("bench: Workers, against the JavaScript Workers in the same workerd ...");
    let worker_rows = baselines::workers(root, &work, &upstream.url(), &document)?;
    eprintln!("bench: hf-mirror, 1 GiB LFS file ...");
    let hf = hf_mirror_download(root, &rt, &work)?;
    eprintln!("bench: image-cache ...");
    let images = image_cache(root, &rt, &work)?;
    eprintln!("bench: load, {LOAD_REQUESTS} requests at {LOAD_CONNECTIONS} connections per app ...");
    let load = load_per_app(root, &rt, &work, &upstream)?;
    eprintln!("bench: instantiation ...");
    let instantiate = Command::new(root.join("target/release/edgeproxy")).args(["instantiate-bench", "--component"]).arg(root.join("dist/edgeproxy.wasm")).output()?;
    let instantiate_us: f64 = String::from_utf8_lossy(&instantiate.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("instantiate-bench printed no figure")?;
    let component = std::fs::read(root.join("dist/edgeproxy.wasm"))?;

    let (_, nginx) = &loads[1];
    let (_, direct) = &loads[0];
    let mut report = format!(
        "Run on {} ({} cores), {}.\n\nSmall requests (`GET /small`, 5-byte body; wrk, 1 thread, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s; all on loopback, sharing the cores; what is compared is measured side by side: one warm-up run each, then {ROUNDS} rounds taking each in turn, figures the rounds' mean). \
         CPU per request is the serving process's user and system time (with its children: nginx's workers) over the run, divided by the requests; \
         for the direct upstream it is the harness process that serves it:\n\n\
         | target | requests/s | p50 | p99 | vs nginx | vs direct | server CPU per request |\n|---|---:|---:|---:|---:|---:|---:|\n",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono_free_date()
    );
    for (name, l) in &loads {
        report += &format!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0}% | {:.0}% | {} |\n",
            l.rps,
            l.p50_ms,
            l.p99_ms,
            100.0 * l.rps / nginx.rps,
            100.0 * l.rps / direct.rps,
            l.cpu()
        );
    }
    report += &format!(
        "\nStreaming one {} GiB body each way (curl: a download to /dev/null, then a chunked upload from /dev/zero to the origin's sink); \
         peak RSS is the serving process's over the whole run so far (wrk included):\n\n\
         | target | download GiB/s | vs nginx | upload GiB/s | vs nginx | peak RSS |\n|---|---:|---:|---:|---:|---:|\n",
        STREAM_BYTES >> 30
    );
    let (nginx_down, nginx_up) = (streams[1].1, streams[1].2);
    for (name, down, up, rss) in &streams {
        let rss = rss.map_or("–".to_owned(), |mib| format!("{mib:.0} MiB"));
        report += &format!("| {name} | {down:.2} | {:.0}% | {up:.2} | {:.0}% | {rss} |\n", 100.0 * down / nginx_down, 100.0 * up / nginx_up);
    }
    report += &format!(
        "\nThe document's size (issue #24): `GET /small` through api-gateway with a one-route document, and with {MANY_ROUTES} routes \
         (each with a path and a CORS list of five origins) of which the last, `host = \"*\"`, is the one that matches (testkit's `many_routes`); wrk as above:\n\n\
         | host | one route | {MANY_ROUTES} routes | {MANY_ROUTES} vs one |\n|---|---:|---:|---:|\n"
    );
    for (host, one, many) in &sizes_of_document {
        report += &format!("| {host} | {:.0}/s, {} | {:.0}/s, {} | {:.0}% |\n", one.rps, one.cpu(), many.rps, many.cpu(), 100.0 * many.rps / one.rps);
    }
    report += &baselines::workers_table(&worker_rows);
    report += &baselines::spin_table(&spin_rows);
    let (hf_direct, hf_mirror) = (hf.direct.iter().copied().fold(0f64, f64::max), hf.mirror.iter().copied().fold(0f64, f64::max));
    let ratios: Vec<f64> = hf.direct.iter().zip(&hf.mirror).map(|(d, m)| 100.0 * m / d).collect();
    let hf_kept = hf.kept.iter().copied().fold(0f64, f64::max);
    let kept_ratios: Vec<f64> = hf.direct.iter().zip(&hf.kept).map(|(d, k)| 100.0 * k / d).collect();
    report += &format!(
        "\nhf-mirror: a {} GiB LFS file through `resolve` (curl `-L`: the hub's 302, then the CDN host; fake hub from tests/fixtures/hf), \
         {HF_ROUNDS} rounds, each a direct download, one through the proxy and one from a keeping proxy's store (filled by one download before the rounds), best of each; the proxy's CPU is its user and system time per GiB passed:\n\n\
         | target | GiB/s | vs direct | each round's ratio | CPU per GiB |\n|---|---:|---:|---|---:|\n\
         | direct (the CDN URL, no proxy) | {hf_direct:.2} | 100% | | |\n\
         | edgeproxy hf-mirror (wasmtime) | {hf_mirror:.2} | {:.0}% | {} | {:.2} s |\n\
         | edgeproxy hf-mirror with a store: its first download, kept as it passes | {:.2} | {:.0}% | {:.0}% of the best through the mirror without a store | {:.2} s |\n\
         | edgeproxy hf-mirror with a store: from the store | {hf_kept:.2} | {:.0}% | {} | {:.2} s |\n\n\
         The keeping mirror's resident memory: {:.0} MiB before its first download, a peak of {:.0} MiB over all {} downloads.\n",
        HF_FILE_BYTES >> 30,
        100.0 * hf_mirror / hf_direct,
        ratios.iter().map(|r| format!("{r:.0}%")).collect::<Vec<_>>().join(", "),
        hf.proxy_cpu_seconds_per_gib,
        hf.filling,
        100.0 * hf.filling / hf_direct,
        100.0 * hf.filling / hf_mirror,
        hf.filling_cpu_seconds_per_gib,
        100.0 * hf_kept / hf_direct,
        kept_ratios.iter().map(|r| format!("{r:.0}%")).collect::<Vec<_>>().join(", "),
        hf.kept_cpu_seconds_per_gib,
        hf.kept_rss_mib.0,
        hf.kept_rss_mib.1,
        HF_ROUNDS + 1,
    );
    report += &format!(
        "\nLoad (issue #13): {LOAD_REQUESTS} requests per app at {LOAD_CONNECTIONS} concurrent connections (a Rust client in the harness, keep-alive), \
         one `edgeproxy serve` with all four apps, one after the other. Errors are transport failures and 5xx answers. Descriptors and RSS \
         are the server's: before (after a warm-up), at the end, and after {LOAD_SETTLE_SECONDS} s idle with the clients gone.\n\n\
         | app (path) | errors | statuses | requests/s | p50 | p99 | peak RSS | RSS before / after | fds before / after |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for row in &load {
        report += &format!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} MiB | {:.0} / {:.0} MiB | {} / {} |\n",
            row.app, row.errors, row.statuses, row.rps, row.p50_ms, row.p99_ms, row.peak_rss_mib, row.rss_before_mib, row.rss_after_mib, row.fds_before, row.fds_after
        );
    }
    let (bundle_raw, bundle_gzip) = workers_bundle(root)?;
    let spin_artifact = std::fs::read(root.join("dist/edgeproxy-spin.wasm"))?;
    let sizes = Sizes {
        component: (component.len(), crate::gzip_len(&component)),
        bundle: (bundle_raw, bundle_gzip),
        spin: (spin_artifact.len(), crate::gzip_len(&spin_artifact)),
        instantiate_us,
    };
    report += &format!(
        "\nPer-request instantiation (pooling allocator, pre-instantiated component): **{instantiate_us:.1} µs**.\n\n\
         Core component `dist/edgeproxy.wasm`: **{} bytes raw, {} bytes gzip**. Workers bundle (`workers/worker.js` and `workers/build/`): \
         **{bundle_raw} bytes raw, {bundle_gzip} bytes gzip** (Free plan limit: 3 MB gzip). Spin artifact `dist/edgeproxy-spin.wasm`: **{} bytes raw, {} bytes gzip**. \
         Each run also adds its row to \"Size and instantiation by release\" below.\n",
        sizes.component.0,
        sizes.component.1,
        sizes.spin.0,
        sizes.spin.1,
    );
    println!("{report}");
    let bench_md = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&bench_md).context("read BENCHMARKS.md")?;
    let text = replace_between(&text, START, END, &report)?;
    let text = replace_between(&text, IMAGES_START, IMAGES_END, &images_report(root, &images)?)?;
    let text = record_sizes(root, &text, &sizes)?;
    std::fs::write(&bench_md, text)?;
    eprintln!("bench: results written to BENCHMARKS.md");
    drop(upstream);
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

/// `text` with what lies between the `start` and `end` markers replaced by `block`.
fn replace_between(text: &str, start: &str, end: &str, block: &str) -> anyhow::Result<String> {
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else { bail!("BENCHMARKS.md lacks the {start} / {end} markers") };
    Ok(format!("{}{start}\n{block}{}", &text[..a], &text[b..]))
}

struct Sizes {
    /// (raw, gzip) bytes.
    component: (usize, usize),
    bundle: (usize, usize),
    spin: (usize, usize),
    instantiate_us: f64,
}

const SIZES_START: &str = "<!-- sizes:start -->";
const SIZES_END: &str = "<!-- sizes:end -->";

/// The size table's row for this build (package version and commit, with
/// `+changes` for an uncommitted tree), replacing an earlier row of the same
/// commit, so that growth between releases stays visible.
fn record_sizes(root: &Path, text: &str, sizes: &Sizes) -> anyhow::Result<String> {
    let git = |args: &[&str]| Command::new("git").args(args).current_dir(root).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() { "" } else { "+changes" };
    let commit = format!("{} ({}", env!("CARGO_PKG_VERSION"), git(&["rev-parse", "--short", "HEAD"]));
    let kb = |(raw, gzip): (usize, usize)| format!("{:.0} / {:.0} KB", raw as f64 / 1000.0, gzip as f64 / 1000.0);
    let row = format!(
        "| {commit}{dirty}) | {} | {} | {} | {} | {:.1} µs |",
        chrono_free_date(),
        kb(sizes.component),
        kb(sizes.bundle),
        kb(sizes.spin),
        sizes.instantiate_us
    );
    let (Some(a), Some(b)) = (text.find(SIZES_START), text.find(SIZES_END)) else { bail!("BENCHMARKS.md lacks the {SIZES_START} / {SIZES_END} markers") };
    let earlier = text[a + SIZES_START.len()..b].lines().filter(|l| l.starts_with("| ") && !l.starts_with("| build ") && !l.starts_with(&format!("| {commit}")));
    let rows: Vec<&str> = earlier.chain([row.as_str()]).collect();
    let table = format!(
        "| build | date | core component raw / gzip | Workers bundle raw / gzip | Spin artifact raw / gzip | instantiation (wasmtime) |\n|---|---|---:|---:|---:|---:|\n{}\n",
        rows.join("\n")
    );
    replace_between(text, SIZES_START, SIZES_END, &table)
}

fn nginx_config(port: u16, upstream: &str, work: &Path) -> String {
    let w = work.display();
    format!(
        "daemon off;\nworker_processes auto;\npid {w}/nginx.pid;\nerror_log {w}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_max_body_size 0;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n  fastcgi_temp_path {w}/fcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n\
         \x20 upstream origin {{ server {}; keepalive 64; }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n",
        upstream.trim_start_matches("http://")
    )
}

/// Routes in the large document of the document-size runs.
const MANY_ROUTES: usize = 50;

/// Small requests with a one-route and a [`MANY_ROUTES`]-route document, on
/// the wasmtime host and in workerd: (host, one route, many routes).
fn document_size(root: &Path, work: &Path, origin: &str) -> anyhow::Result<Vec<(&'static str, Load, Load)>> {
    let one = edgeproxy_testkit::many_routes(origin, 1);
    let many = edgeproxy_testkit::many_routes(origin, MANY_ROUTES);
    let mut runs = Vec::new();
    let up = |name: &str, document: &str| -> anyhow::Result<(Killed, Side<'static>)> {
        let config = work.join(format!("document-{name}.toml"));
        std::fs::write(&config, document)?;
        let port = free_port()?;
        let proxy = serve(root, port, &config, &work.join(format!("data-{name}")))?;
        let url = format!("http://127.0.0.1:{port}/small");
        wait_until_up(&url)?;
        let side = Side { url, host: None, cpu_of: Some(proxy.0.id()) };
        Ok((proxy, side))
    };
    let ((_one_server, one_side), (_many_server, many_side)) = (up("one", &one)?, up("many", &many)?);
    let (one_route, many_routes) = wrk_pair([one_side, many_side])?;
    runs.push(("wasmtime (`edgeproxy serve`)", one_route, many_routes));
    let (one, many) = baselines::workers_document_size(root, work, &one, &many)?;
    runs.push(("workerd (our Worker)", one, many));
    Ok(runs)
}

/// `edgeproxy serve` on loopback `port` with `config`, access log off.
fn serve(root: &Path, port: u16, config: &Path, data_dir: &Path) -> anyhow::Result<Killed> {
    serve_with_env(root, port, config, data_dir, &[])
}

fn serve_with_env(root: &Path, port: u16, config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Killed> {
    let child = Command::new(root.join("target/release/edgeproxy"))
        .envs(env.iter().copied())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .spawn()
        .context("start edgeproxy")?;
    Ok(Killed(child))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until_up(url: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        let ok = Command::new("curl").args(["-sf", "-o", "/dev/null", url]).status().is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} not answering after 10 s")
}

/// wrk against `url` (`Host: host` when given); with `cpu_of`, the CPU that
/// process and its descendants spent per request during the run.
fn wrk(url: &str, host: Option<&str>, cpu_of: Option<u32>) -> anyhow::Result<Load> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{WRK_CONNECTIONS}"), &format!("-d{WRK_SECONDS}s"), "--latency"]);
    if let Some(host) = host {
        cmd.args(["-H", &format!("Host: {host}")]);
    }
    let before = cpu_of.map(cpu_seconds);
    let out = cmd.arg(url).output().context("run wrk")?;
    let spent = cpu_of.zip(before).map(|(pid, before)| cpu_seconds(pid) - before);
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success() && !text.contains("Non-2xx"), "wrk against {url} failed:\n{text}");
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()));
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).context("wrk printed no Requests/sec")?;
    let p50 = field("50%").map(|v| duration_ms(&v)).context("wrk printed no p50")?;
    let p99 = field("99%").map(|v| duration_ms(&v)).context("wrk printed no p99")?;
    let requests: f64 = text.lines().find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok()).context("wrk printed no request count")?;
    Ok(Load { rps, p50_ms: p50, p99_ms: p99, cpu_us: spent.map(|s| s * 1e6 / requests) })
}

/// One side of a side-by-side measurement: the URL, its Host header and
/// the serving process whose CPU is counted.
struct Side<'a> {
    url: String,
    host: Option<&'a str>,
    cpu_of: Option<u32>,
}

/// Measured rounds per side in [`wrk_side_by_side`].
const ROUNDS: usize = 2;

/// `sides` measured side by side: each warmed by one wrk run (connections
/// made, code paths warm), then [`ROUNDS`] rounds in which each is measured
/// in turn; each side's figures are its rounds' mean. This machine's speed
/// drifts by more than a floor's margin from one minute to the next, so what
/// is compared is measured in alternation, not one after the other.
fn wrk_side_by_side(sides: &[Side]) -> anyhow::Result<Vec<Load>> {
    for side in sides {
        wrk(&side.url, side.host, None)?;
    }
    let mut rounds: Vec<Vec<Load>> = sides.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (side, loads) in sides.iter().zip(&mut rounds) {
            loads.push(wrk(&side.url, side.host, side.cpu_of)?);
        }
    }
    Ok(rounds.iter().map(|loads| Load::mean(loads)).collect())
}

/// [`wrk_side_by_side`] of two sides.
fn wrk_pair(sides: [Side; 2]) -> anyhow::Result<(Load, Load)> {
    let [first, second]: [Load; 2] = wrk_side_by_side(&sides)?.try_into().map_err(|_| anyhow::anyhow!("a load per side"))?;
    Ok((first, second))
}

/// User and system CPU of `pid` and all its descendants so far, in seconds
/// (`/proc/PID/stat`; nginx's workers and Spin's trigger are children).
fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second: f64 =
        Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0);
    let mut ticks = 0u64;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the `(comm)`: state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        ticks += [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum::<u64>();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pending.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    ticks as f64 / ticks_per_second
}

/// wrk's `812.00us` / `1.23ms` / `2.00s` in milliseconds.
fn duration_ms(v: &str) -> f64 {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn stream_gib_per_s(url: &str) -> anyhow::Result<f64> {
    download_gib_per_s(url, STREAM_BYTES)
}

/// curl `url` (following redirects) to /dev/null; its average speed.
fn download_gib_per_s(url: &str, expected: u64) -> anyhow::Result<f64> {
    let out = Command::new("curl").args(["-sfL", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}", url]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0));
    let (size, speed) = (parts.next().unwrap_or(0.0), parts.next().unwrap_or(0.0));
    ensure!(out.status.success() && size as u64 == expected, "downloading {url} failed: {text}");
    Ok(speed / f64::from(1u32 << 30))
}

/// A chunked upload of `STREAM_BYTES` zero bytes (curl `-T -` from /dev/zero) to `url`; its average speed.
fn upload_gib_per_s(url: &str) -> anyhow::Result<f64> {
    // curl's size_upload counts the chunk framing too: the sink's JSON says what arrived.
    let script = format!("head -c {STREAM_BYTES} /dev/zero | curl -sS -T - -X POST -w '\\n%{{speed_upload}}' '{url}'");
    let out = Command::new("sh").args(["-c", &script]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (sink, speed) = text.rsplit_once('\n').unwrap_or_default();
    let arrived = serde_json::from_str::<serde_json::Value>(sink).ok().and_then(|v| v["bytes"].as_u64());
    ensure!(out.status.success() && arrived == Some(STREAM_BYTES), "uploading to {url} failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    Ok(speed.trim().parse::<f64>().unwrap_or(0.0) / f64::from(1u32 << 30))
}

/// Linux `VmHWM` of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let kib = edgeproxy_testkit::host::peak_rss_kib_of(pid).with_context(|| format!("no peak RSS for process {pid}"))?;
    Ok(kib as f64 / 1024.0)
}

const HF_FILE_BYTES: u64 = 1 << 30;

const HF_ROUNDS: usize = 5;

struct HfFigures {
    /// GiB/s of each round, straight from the CDN URL, through hf-mirror,
    /// and from the store of a mirror that keeps what it fetched.
    direct: Vec<f64>,
    mirror: Vec<f64>,
    kept: Vec<f64>,
    proxy_cpu_seconds_per_gib: f64,
    /// The keeping mirror's first download, which fills its store (GiB/s).
    filling: f64,
    /// The keeping mirror's CPU per GiB: filling (which hashes and writes
    /// every byte as well) and answering from its store.
    filling_cpu_seconds_per_gib: f64,
    kept_cpu_seconds_per_gib: f64,
    /// The keeping mirror's resident memory before its first download and at its peak (MiB).
    kept_rss_mib: (f64, f64),
}

/// The 1 GiB `model.bin` of the fake hub: straight from its CDN URL, and by
/// its `resolve` URL through edgeproxy's hf-mirror, in alternating rounds so
/// that a slow spell of this shared machine falls on both.
fn hf_mirror_download(root: &Path, rt: &tokio::runtime::Runtime, work: &Path) -> anyhow::Result<HfFigures> {
    crate::python::ensure_venv(root)?;
    let hub = rt.block_on(edgeproxy_testkit::hf::FakeHub::start(HF_FILE_BYTES));
    let port = free_port()?;
    let config = work.join("hf-mirror.toml");
    std::fs::write(&config, hub.document(""))?;
    let proxy = serve(root, port, &config, &work.join("hf-data"))?;
    wait_until_up(&format!("http://127.0.0.1:{port}/"))?;
    let resolve = "/org/small/resolve/main/model.bin";
    let head = Command::new("curl").args(["-sI", &format!("{}{resolve}", hub.hub)]).output()?;
    let location = String::from_utf8_lossy(&head.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")).map(|v| v.trim().to_owned()))
        .context("the fake hub's resolve gave no Location")?;
    let direct_url = location.replacen("https://", &format!("{}/", hub.cdn), 1);
    let mirror_url = format!("http://127.0.0.1:{port}{resolve}");
    // A second mirror that keeps what it fetches (issue 26), in its own data directory.
    let keeping_port = free_port()?;
    let keeping_config = work.join("hf-mirror-store.toml");
    std::fs::write(&keeping_config, hub.document("\n[route.hf-mirror.store]\n"))?;
    let keeping = serve(root, keeping_port, &keeping_config, &work.join("hf-store-data"))?;
    wait_until_up(&format!("http://127.0.0.1:{keeping_port}/"))?;
    let kept_url = format!("http://127.0.0.1:{keeping_port}{resolve}");
    let rss_before = edgeproxy_testkit::host::rss_kib_of(keeping.0.id()).unwrap_or(0) as f64 / 1024.0;
    let before = cpu_seconds(keeping.0.id());
    let filling = download_gib_per_s(&kept_url, HF_FILE_BYTES)?;
    let filling_cpu = cpu_seconds(keeping.0.id()) - before;
    let (mut direct, mut mirror, mut kept, mut proxy_cpu, mut kept_cpu) = (Vec::new(), Vec::new(), Vec::new(), 0.0, 0.0);
    for _ in 0..HF_ROUNDS {
        direct.push(download_gib_per_s(&direct_url, HF_FILE_BYTES)?);
        let before = cpu_seconds(proxy.0.id());
        mirror.push(download_gib_per_s(&mirror_url, HF_FILE_BYTES)?);
        proxy_cpu += cpu_seconds(proxy.0.id()) - before;
        let before = cpu_seconds(keeping.0.id());
        kept.push(download_gib_per_s(&kept_url, HF_FILE_BYTES)?);
        kept_cpu += cpu_seconds(keeping.0.id()) - before;
    }
    let kept_rss_mib = (rss_before, peak_rss_mib(keeping.0.id())?);
    let gib = HF_FILE_BYTES as f64 / f64::from(1u32 << 30);
    let per_round_gib = HF_ROUNDS as f64 * gib;
    Ok(HfFigures {
        direct,
        mirror,
        kept,
        proxy_cpu_seconds_per_gib: proxy_cpu / per_round_gib,
        filling,
        filling_cpu_seconds_per_gib: filling_cpu / gib,
        kept_cpu_seconds_per_gib: kept_cpu / per_round_gib,
        kept_rss_mib,
    })
}

/// Rounds of each format's comparison, and requests (and libvips' images) a round.
const IMAGE_ROUNDS: usize = 3;
const IMAGE_RUNS_PER_ROUND: usize = 20;

/// image-cache against libvips, format by format, and cache hits.
struct ImageFigures {
    /// The original: width, height, bytes.
    source: (u32, u32, usize),
    formats: Vec<FormatFigures>,
    hits: Load,
}

/// One output format: ours through the component, and libvips writing the same.
struct FormatFigures {
    name: &'static str,
    /// Whole requests (ms, median), and the component's own steps from its
    /// `Server-Timing`: decode, transform, encode (ms, medians).
    ours_ms: f64,
    steps_ms: [f64; 3],
    ours_bytes: usize,
    /// `None` where this machine's libvips cannot write the format.
    vips: Option<(f64, u64)>,
}

/// The formats the bench compares: label, our query, vipsthumbnail's output suffix.
const IMAGE_FORMATS: &[(&str, &str, &str)] = &[
    ("JPEG q80", "format=jpeg&quality=80", "jpg[Q=80]"),
    ("WebP q80 (lossy)", "format=webp&quality=80", "webp[Q=80]"),
    ("AVIF q80", "format=avif&quality=80", "avif[Q=80]"),
];

/// `cargo xtask bench images`: only image-cache's table.
pub fn images_only(root: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let work = std::env::temp_dir().join(format!("edgeproxy-bench-images-{}", std::process::id()));
    std::fs::create_dir_all(work.join("logs"))?;
    let images = image_cache(root, &rt, &work)?;
    let report = images_report(root, &images)?;
    println!("{report}");
    let bench_md = root.join("BENCHMARKS.md");
    let text = replace_between(&std::fs::read_to_string(&bench_md)?, IMAGES_START, IMAGES_END, &report)?;
    std::fs::write(&bench_md, text)?;
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

fn images_report(root: &Path, images: &ImageFigures) -> anyhow::Result<String> {
    let component = std::fs::read(root.join("dist/edgeproxy.wasm"))?;
    let (bundle_raw, bundle_gzip) = workers_bundle(root)?;
    let mut report = format!(
        "image-cache ({}, {} cores, {}): the 1-megapixel WebP original ({}x{}, {} bytes, flux-schnell's size and format for 4:3, from the Replicate stand-in) \
         cover-resized to 800x600, one image at a time, in {IMAGE_ROUNDS} rounds that alternate ours and libvips, each side's fastest round. Ours: the median of a round's \
         {IMAGE_RUNS_PER_ROUND} HTTP requests to `edgeproxy serve` (wasmtime, variant store off, keep-alive), with the component's own steps from its `Server-Timing` \
         (medians of all rounds); libvips: `vipsthumbnail` (Debian, `VIPS_CONCURRENCY=1`) over {IMAGE_RUNS_PER_ROUND} copies in one process, the fastest of the rounds, \
         less its fastest time for the first copy alone (its start-up), per image, \
         writing the same format. Command: `cargo xtask bench images` (or the whole `cargo xtask bench`).\n\n\
         | output | edgeproxy ms | decode / transform / encode ms | bytes | libvips ms | bytes | ours vs libvips |\n|---|---:|---|---:|---:|---:|---:|\n",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono_free_date(),
        images.source.0,
        images.source.1,
        images.source.2,
    );
    for f in &images.formats {
        let vips = f.vips.map_or("cannot write it | | ".to_owned(), |(ms, bytes)| format!("{ms:.1} | {bytes} | {:.2}x", f.ours_ms / ms));
        report += &format!("| {} | {:.1} | {:.0} / {:.0} / {:.0} | {} | {vips} |\n", f.name, f.ours_ms, f.steps_ms[0], f.steps_ms[1], f.steps_ms[2], f.ours_bytes);
    }
    report += &format!(
        "\n\
         Sizes: core component `dist/edgeproxy.wasm` **{} bytes raw, {} bytes gzip**; Workers bundle **{bundle_raw} bytes raw, {bundle_gzip} bytes gzip** \
         (Free plan limit: 3 MB gzip).\n\n\
         Cache hits of the stored JPEG variant (wrk, 1 thread, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s): **{:.0} requests/s**, p50 {:.2} ms, p99 {:.2} ms.\n",
        component.len(),
        crate::gzip_len(&component),
        images.hits.rps,
        images.hits.p50_ms,
        images.hits.p99_ms,
    );
    Ok(report)
}

/// image-cache against libvips on the same original, then cache hits.
fn image_cache(root: &Path, rt: &tokio::runtime::Runtime, work: &Path) -> anyhow::Result<ImageFigures> {
    use edgeproxy_testkit::images::{FakeReplicate, TOKEN};
    crate::python::ensure_venv(root)?;
    crate::ensure_debian_tools(&[("vipsthumbnail", "libvips-tools"), ("curl", "curl"), ("wrk", "wrk")])?;
    let replicate = rt.block_on(FakeReplicate::start(3600));
    let secret = [("EDGEPROXY_SECRET_REPLICATE_TOKEN", TOKEN)];
    // photo-: a picture with a photo's detail (about 150 KB of lossy WebP at 1 MP).
    let image = "/800x600/photo-bench";
    // Every request transforms: this route stores no variants.
    let uncached = work.join("image-uncached.toml");
    std::fs::write(&uncached, replicate.document("generation = \"open\"\navif = true\n[route.image-cache.variants]\nmax_bytes = 0"))?;
    let port = free_port()?;
    let _proxy = serve_with_env(root, port, &uncached, &work.join("image-data"), &secret)?;
    wait_until_up(&format!("http://127.0.0.1:{port}{image}?{}", IMAGE_FORMATS[0].1))?;
    let created = rt.block_on(replicate.creations("photo-bench"));
    let id = created.first().and_then(|c| c["prediction_id"].as_str()).context("the stand-in logged no prediction")?;
    let original = work.join("original.webp");
    let ok = Command::new("curl").args(["-sf", "-o"]).arg(&original).arg(format!("{}/files/{id}/out-0.webp", replicate.delivery)).status()?;
    ensure!(ok.success(), "could not fetch the original from the stand-in");
    let bytes = std::fs::read(&original)?;
    let (width, height) = webp_size(&bytes).context("the original is not a WebP")?;
    let inputs: Vec<std::path::PathBuf> = (0..IMAGE_RUNS_PER_ROUND)
        .map(|i| {
            let copy = work.join(format!("vips-{i}.webp"));
            std::fs::copy(&original, &copy).map(|_| copy)
        })
        .collect::<Result<_, _>>()?;

    let client = reqwest::Client::builder().no_proxy().build()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut formats = Vec::new();
    for &(name, query, vips_output) in IMAGE_FORMATS {
        let url = format!("http://127.0.0.1:{port}{image}?{query}");
        // libvips per image without its process start (60-100 ms here, which
        // over 30 copies made each image look 2-3 ms slower): one process over
        // a round's copies, less one over the first copy alone.
        let vipsthumbnail = |inputs: &[std::path::PathBuf]| -> anyhow::Result<(f64, bool)> {
            let started = std::time::Instant::now();
            let ran = Command::new("vipsthumbnail")
                .args(inputs)
                .args(["--size", "800x600", "--smartcrop", "centre", "-o", &format!("%s-out.{vips_output}")])
                .env("VIPS_CONCURRENCY", "1")
                .status()?
                .success();
            Ok((started.elapsed().as_secs_f64() * 1000.0, ran))
        };
        // Rounds alternate ours and libvips, and each side's fastest round
        // counts: a burst of load on this shared machine then skews neither.
        let (mut ours_rounds, mut vips_one, mut vips_all, mut vips_ran) = (Vec::new(), Vec::new(), Vec::new(), true);
        let (mut steps, mut ours_bytes) = ([Vec::new(), Vec::new(), Vec::new()], 0);
        for _ in 0..IMAGE_ROUNDS {
            let mut times = Vec::new();
            for _ in 0..IMAGE_RUNS_PER_ROUND {
                let started = std::time::Instant::now();
                let (timing, body) = rt.block_on(async {
                    let r = client.get(&url).send().await?.error_for_status()?;
                    let timing = r.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    anyhow::Ok((timing, r.bytes().await?))
                })?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                ours_bytes = body.len();
                for (i, step) in ["decode", "transform", "encode"].iter().enumerate() {
                    let dur = timing.split(", ").find_map(|t| t.strip_prefix(&format!("{step};dur="))).and_then(|d| d.parse::<f64>().ok());
                    steps[i].push(dur.with_context(|| format!("no {step} in Server-Timing {timing:?}"))?);
                }
            }
            ours_rounds.push(median(times));
            let ((one_ms, one_ran), (all_ms, all_ran)) = (vipsthumbnail(&inputs[..1])?, vipsthumbnail(&inputs)?);
            vips_one.push(one_ms);
            vips_all.push(all_ms);
            vips_ran = vips_ran && one_ran && all_ran;
        }
        let fastest = |v: Vec<f64>| v.into_iter().fold(f64::MAX, f64::min);
        // The fastest whole run less the fastest start (each round's start
        // alone varies by 30 ms here).
        let vips_ms = (fastest(vips_all) - fastest(vips_one)) / (IMAGE_RUNS_PER_ROUND - 1) as f64;
        let extension = vips_output.split('[').next().unwrap_or(vips_output);
        let vips = match std::fs::metadata(work.join(format!("vips-0-out.{extension}"))) {
            Ok(written) if vips_ran => Some((vips_ms, written.len())),
            _ => None,
        };
        let [decode, transform, encode] = steps;
        formats.push(FormatFigures { name, ours_ms: fastest(ours_rounds), steps_ms: [median(decode), median(transform), median(encode)], ours_bytes, vips });
    }

    // Cache hits: a route that stores variants, warmed once.
    let cached = work.join("image-cached.toml");
    std::fs::write(&cached, replicate.document("generation = \"open\""))?;
    let hit_port = free_port()?;
    let _hits = serve_with_env(root, hit_port, &cached, &work.join("image-hit-data"), &secret)?;
    let url = format!("http://127.0.0.1:{hit_port}{image}?{}", IMAGE_FORMATS[0].1);
    wait_until_up(&url)?;
    wait_until_up(&url)?;
    let hits = wrk(&url, None, None)?;
    Ok(ImageFigures { source: (width, height, bytes.len()), formats, hits })
}

/// Width and height from a WebP's VP8/VP8L/VP8X header.
fn webp_size(b: &[u8]) -> Option<(u32, u32)> {
    let le24 = |i: usize| u32::from(b[i]) | u32::from(b[i + 1]) << 8 | u32::from(b[i + 2]) << 16;
    match b.get(12..16)? {
        b"VP8 " => Some((u32::from(u16::from_le_bytes([b[26], b[27]])) & 0x3fff, u32::from(u16::from_le_bytes([b[28], b[29]])) & 0x3fff)),
        b"VP8L" => {
            let bits = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(24) + 1, le24(27) + 1)),
        _ => None,
    }
}

/// The Worker as uploaded: `workers/worker.js` and `workers/build/`, raw and gzip.
fn workers_bundle(root: &Path) -> anyhow::Result<(usize, usize)> {
    let mut files = vec![root.join("workers/worker.js")];
    for entry in std::fs::read_dir(root.join("workers/build")).context("no workers/build: run `cargo xtask workers`")? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    let mut all = Vec::new();
    for file in files {
        all.extend(std::fs::read(file)?);
    }
    Ok((all.len(), crate::gzip_len(&all)))
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_else(|| "unknown CPU".into())
}

fn chrono_free_date() -> String {
    Command::new("date").arg("+%Y-%m-%d").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

const LOAD_REQUESTS: usize = 10_000;
const LOAD_CONNECTIONS: usize = 256;
const LOAD_SETTLE_SECONDS: u64 = 5;

struct LoadRow {
    app: String,
    errors: usize,
    statuses: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    fds_before: usize,
    fds_after: usize,
}

/// Every app behind one `edgeproxy serve`, each app loaded in turn.
fn load_per_app(root: &Path, rt: &tokio::runtime::Runtime, work: &Path, upstream: &Upstream) -> anyhow::Result<Vec<LoadRow>> {
    let origin = upstream.url();
    let document = edgeproxy_testkit::every_app(&origin);
    let config = work.join("load.toml");
    std::fs::write(&config, document)?;
    let port = free_port()?;
    let server = serve(root, port, &config, &work.join("load-data"))?;
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{base}/")).ok();
    let apps = [("api-gateway", "api.test", "/small"), ("hf-mirror", "hf.test", "/small"), ("image-cache", "zoo.test", "/64x48/load-sloth"), ("hub-gateway", "hub.test", "/api/small")];
    let mut rows = Vec::new();
    for (app, host, path) in apps {
        // Warm-up: the first image is generated, connections are made once.
        rt.block_on(hammer(&base, host, path, 200, 8));
        std::thread::sleep(Duration::from_secs(1));
        let (rss_before, fds_before) = (rss_mib(pid)?, open_fds(pid)?);
        let run = rt.block_on(hammer(&base, host, path, LOAD_REQUESTS, LOAD_CONNECTIONS));
        std::thread::sleep(Duration::from_secs(LOAD_SETTLE_SECONDS));
        let (rss_after, fds_after) = (rss_mib(pid)?, open_fds(pid)?);
        rows.push(LoadRow {
            app: format!("{app} (`{path}`)"),
            errors: run.errors,
            statuses: run.statuses,
            rps: run.rps,
            p50_ms: run.p50_ms,
            p99_ms: run.p99_ms,
            peak_rss_mib: peak_rss_mib(pid)?,
            rss_before_mib: rss_before,
            rss_after_mib: rss_after,
            fds_before,
            fds_after,
        });
    }
    drop(server);
    Ok(rows)
}

struct Hammered {
    errors: usize,
    statuses: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `total` GETs of `path` with `Host: host`, `connections` at a time, each
/// connection kept alive; the client is dropped at the end, so its
/// connections close.
async fn hammer(base: &str, host: &str, path: &str, total: usize, connections: usize) -> Hammered {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(connections).timeout(Duration::from_secs(30)).build().expect("a client");
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (client, next, url, host) = (client.clone(), next.clone(), format!("{base}{path}"), host.to_owned());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = std::time::Instant::now();
                let outcome = match client.get(&url).header("host", &host).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if response.bytes().await.is_ok() { Some(status) } else { None }
                    }
                    Err(_) => None,
                };
                seen.push((outcome, sent.elapsed()));
            }
            seen
        }));
    }
    let mut results = Vec::with_capacity(total);
    for worker in workers {
        results.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    drop(client);
    let errors = results.iter().filter(|(o, _)| o.is_none_or(|s| s >= 500)).count();
    let mut by_status = std::collections::BTreeMap::new();
    for (outcome, _) in &results {
        *by_status.entry(outcome.map_or("failed".to_owned(), |s| s.to_string())).or_insert(0usize) += 1;
    }
    let statuses = by_status.iter().map(|(s, n)| format!("{n}× {s}")).collect::<Vec<_>>().join(", ");
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Hammered { errors, statuses, rps: results.len() as f64 / elapsed.as_secs_f64(), p50_ms: at(0.5), p99_ms: at(0.99) }
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let kib = edgeproxy_testkit::host::rss_kib_of(pid).with_context(|| format!("no RSS for process {pid}"))?;
    Ok(kib as f64 / 1024.0)
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
