//! edgeproxy side by side with what it replaces, on the same origin in the
//! same run (issue 15):
//!
//! - Workers: our Worker and the original JavaScript Workers
//!   (`../shared/baselines/`, or `EDGEPROXY_BASELINES`) in one `workerd
//!   serve` of a generated `config.capnp`, with no Miniflare entry worker in
//!   front, so workerd's CPU time is the Workers' own;
//! - Spin: our Spin artifact and a plain spin-sdk proxy
//!   (`bench/spin-plain-proxy`), on real `spin up` when there is a Spin
//!   binary and on the Spin-compatible `edgeproxy spin`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

use super::{Killed, Load, Side, free_port, wait_until_up, wrk_pair, wrk_side_by_side};

pub struct Row {
    name: String,
    load: Load,
    /// The row this one is compared with: the program it replaces.
    baseline: Option<usize>,
}

/// The compatibility date `workers/serve-local.mjs` runs the Worker with.
const COMPATIBILITY_DATE: &str = "2026-07-01";

fn baselines_dir(root: &Path) -> PathBuf {
    std::env::var_os("EDGEPROXY_BASELINES").map_or_else(|| root.join("../shared/baselines"), PathBuf::from)
}

/// One Worker of the generated `config.capnp`.
struct Worker {
    id: &'static str,
    /// `(name, kind, file)`; the first is the main module.
    modules: Vec<(String, &'static str, String)>,
    /// `(name, capnp value)`.
    bindings: Vec<(&'static str, String)>,
}

pub fn workers(root: &Path, work: &Path, origin: &str, document: &str) -> anyhow::Result<Vec<Row>> {
    let dir = work.join("workerd");
    std::fs::create_dir_all(&dir)?;
    // capnp `embed` paths are relative to the config file.
    std::os::unix::fs::symlink(root.join("workers"), dir.join("ours"))?;
    std::fs::write(dir.join("document.toml"), document)?;
    let mut workers = vec![Worker { id: "ours", modules: our_modules(root)?, bindings: vec![("EDGEPROXY_CONFIG", "embed \"document.toml\"".into())] }];

    let baselines = baselines_dir(root);
    let javascript = baselines.join("seed003-api-proxy.js").exists();
    if javascript {
        std::fs::copy(baselines.join("seed003-api-proxy.js"), dir.join("seed003-api-proxy.js"))?;
        workers.push(Worker {
            id: "seed",
            modules: vec![("worker.js".into(), "esModule", "seed003-api-proxy.js".into())],
            bindings: vec![("TARGET", format!("{origin:?}"))],
        });
        workers.push(Worker { id: "hfproxy", modules: hfproxy(&baselines.join("hfproxy"), &dir.join("hfproxy"), origin)?, bindings: Vec::new() });
    } else {
        eprintln!("bench: WARNING: no JavaScript baselines at {} (set EDGEPROXY_BASELINES): our Worker alone", baselines.display());
    }

    let ports: Vec<u16> = workers.iter().map(|_| free_port()).collect::<Result<_, _>>()?;
    std::fs::write(dir.join("config.capnp"), capnp(&workers, &ports))?;
    let log = std::fs::File::create(dir.join("workerd.log"))?;
    let workerd = Killed(
        Command::new(root.join("node_modules/.bin/workerd"))
            .args(["serve", "config.capnp"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start workerd (node_modules/.bin/workerd; `cargo xtask workers` installs it)")?,
    );
    for port in &ports {
        wait_until_up(&format!("http://127.0.0.1:{port}/small")).with_context(|| format!("workerd did not come up: see {}", dir.join("workerd.log").display()))?;
    }
    let pid = workerd.0.id();
    let url = |i: usize| format!("http://127.0.0.1:{}/small", ports[i]);
    // (name, url, Host, baseline row)
    let mut runs = Vec::new();
    if javascript {
        runs.push(("the API proxy Worker (`seed003-api-proxy.js`, JavaScript)", url(1), None, None));
        runs.push(("edgeproxy api-gateway (our Worker)", url(0), Some("api.test"), Some(0)));
        runs.push(("HuggingfaceProxy (`hfproxy/`, JavaScript)", url(2), None, None));
        runs.push(("edgeproxy hf-mirror (our Worker)", url(0), Some("hf.test"), Some(2)));
    } else {
        runs.push(("edgeproxy api-gateway (our Worker)", url(0), Some("api.test"), None));
        runs.push(("edgeproxy hf-mirror (our Worker)", url(0), Some("hf.test"), None));
    }
    let sides: Vec<Side> = runs.iter().map(|(_, url, host, _)| Side { url: url.clone(), host: *host, cpu_of: Some(pid) }).collect();
    let loads = wrk_side_by_side(&sides)?;
    Ok(runs.into_iter().zip(loads).map(|((name, _, _, baseline), load)| Row { name: name.into(), load, baseline }).collect())
}

/// The HuggingfaceProxy Worker copied to `to`, with the substitutions its
/// README names for a local origin; its modules, the entry first.
fn hfproxy(from: &Path, to: &Path, origin: &str) -> anyhow::Result<Vec<(String, &'static str, String)>> {
    let authority = origin.trim_start_matches("http://");
    let mut modules = vec![("src/index.js".to_owned(), "esModule", "hfproxy/src/index.js".to_owned())];
    for (file, kind) in [("handlers.js", "esModule"), ("utils.js", "esModule"), ("config.js", "esModule"), ("templates/home.html", "text"), ("scripts/hf_downloader.py", "text")] {
        modules.push((format!("src/{file}"), kind, format!("hfproxy/src/{file}")));
    }
    for (_, _, path) in &modules {
        let (source, target) = (from.join(path.trim_start_matches("hfproxy/")), to.join(path.trim_start_matches("hfproxy/")));
        std::fs::create_dir_all(target.parent().expect("a file in a directory"))?;
        let text = std::fs::read_to_string(&source).with_context(|| format!("read {}", source.display()))?;
        let text = match path.rsplit('/').next() {
            Some("config.js") => {
                ensure!(text.matches("'huggingface.co'").count() == 2, "{}: the upstream to substitute is not where the baseline README says", source.display());
                text.replace("'huggingface.co'", &format!("'{authority}'"))
            }
            Some("handlers.js") => {
                ensure!(text.contains("`https://${upstream}`"), "{}: the URL scheme to substitute is not where the baseline README says", source.display());
                text.replace("`https://${upstream}`", "`http://${upstream}`")
            }
            _ => text,
        };
        std::fs::write(target, text)?;
    }
    Ok(modules)
}

fn capnp(workers: &[Worker], ports: &[u16]) -> String {
    let services: String = workers.iter().map(|w| format!("    (name = \"{0}\", worker = .{0}),\n", w.id)).collect();
    let sockets: String =
        workers.iter().zip(ports).map(|(w, port)| format!("    (name = \"{0}\", address = \"127.0.0.1:{port}\", http = (), service = \"{0}\"),\n", w.id)).collect();
    let mut out = format!(
        "using Workerd = import \"/workerd/workerd.capnp\";\n\nconst config :Workerd.Config = (\n  services = [\n{services}\
         \x20   (name = \"internet\", network = (allow = [\"local\", \"private\", \"public\"])),\n  ],\n  sockets = [\n{sockets}  ],\n);\n"
    );
    for w in workers {
        let modules: String = w.modules.iter().map(|(name, kind, file)| format!("    (name = \"{name}\", {kind} = embed \"{file}\"),\n")).collect();
        let bindings: String = w.bindings.iter().map(|(name, value)| format!("    (name = \"{name}\", text = {value}),\n")).collect();
        out += &format!(
            "\nconst {} :Workerd.Worker = (\n  modules = [\n{modules}  ],\n  bindings = [\n{bindings}  ],\n  compatibilityDate = \"{COMPATIBILITY_DATE}\",\n  globalOutbound = \"internet\",\n);\n",
            w.id
        );
    }
    out
}

/// `bench/spin-plain-proxy`'s component, built for Spin.
fn plain_spin_proxy(root: &Path) -> anyhow::Result<PathBuf> {
    crate::run(crate::cargo().args(["build", "--package", "edgeproxy-bench-spin-proxy", "--release", "--target", "wasm32-wasip2"]))?;
    Ok(crate::target_dir(root).join("wasm32-wasip2/release/edgeproxy_bench_spin_proxy.wasm"))
}

/// `ours_on_real_spin`: the base URL and serving process of our artifact on
/// real Spin, measured right after the plain proxy.
pub fn spin(root: &Path, work: &Path, origin: &str, config: &Path, ours: &Path, spin_binary: Option<&Path>, ours_on_real_spin: Option<(&str, u32)>) -> anyhow::Result<Vec<Row>> {
    let plain = plain_spin_proxy(root)?;
    let mut rows = Vec::new();
    if let (Some(binary), Some((ours_base, ours_pid))) = (spin_binary, ours_on_real_spin) {
        let dir = work.join("spin-plain");
        std::fs::create_dir_all(&dir)?;
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"plain-proxy\"\n[variables]\norigin = {{ required = true }}\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"proxy\"\n[component.proxy]\nsource = {:?}\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n\
             [component.proxy.variables]\norigin = \"{{{{ origin }}}}\"\n",
            plain.display().to_string()
        );
        std::fs::write(dir.join("spin.toml"), manifest)?;
        let port = free_port()?;
        let mut up = edgeproxy_testkit::host::spin_up(binary, &dir.join("spin.toml"), &format!("127.0.0.1:{port}"), &dir.join("state"));
        let up = Killed(up.env("SPIN_VARIABLE_ORIGIN", origin).stdout(Stdio::null()).spawn().context("start spin up")?);
        let plain_base = format!("http://127.0.0.1:{port}");
        wait_until_up(&format!("{plain_base}/small"))?;
        let sides = [
            Side { url: format!("{plain_base}/small"), host: None, cpu_of: Some(up.0.id()) },
            Side { url: format!("{ours_base}/small"), host: Some("api.test"), cpu_of: Some(ours_pid) },
        ];
        let (plain_load, ours) = wrk_pair(sides)?;
        rows.push(Row { name: "plain spin-sdk proxy on real `spin up`".into(), load: plain_load, baseline: None });
        rows.push(Row { name: "edgeproxy api-gateway on real `spin up`".into(), load: ours, baseline: Some(rows.len() - 1) });
    }
    let binary = root.join("target/release/edgeproxy");
    let mut servers = Vec::new();
    let mut sides = Vec::new();
    let mut names = Vec::new();
    for (name, component, host, data) in [
        ("plain spin-sdk proxy on `edgeproxy spin`", plain.clone(), None, "spin-data-plain"),
        ("edgeproxy api-gateway on `edgeproxy spin`", ours.to_path_buf(), Some("api.test"), "spin-data-ours"),
    ] {
        let port = free_port()?;
        let server = Killed(
            Command::new(&binary)
                .args(["spin", "--listen", &format!("127.0.0.1:{port}"), "--allowed-outbound-host", "http://127.0.0.1:*", "--component"])
                .arg(&component)
                .arg("--config")
                .arg(config)
                .arg("--data-dir")
                .arg(work.join(data))
                .env("SPIN_VARIABLE_ORIGIN", origin)
                .stdout(Stdio::null())
                .spawn()
                .context("start edgeproxy spin")?,
        );
        let url = format!("http://127.0.0.1:{port}/small");
        wait_until_up(&url)?;
        sides.push(Side { url, host, cpu_of: Some(server.0.id()) });
        names.push(name);
        servers.push(server);
    }
    for (name, load) in names.into_iter().zip(wrk_side_by_side(&sides)?) {
        let baseline = name.starts_with("edgeproxy").then(|| rows.len() - 1);
        rows.push(Row { name: name.into(), load, baseline });
    }
    Ok(rows)
}

fn table(rows: &[Row], first_column: &str, cpu_column: &str) -> String {
    let mut out = format!("| {first_column} | requests/s | p50 | p99 | {cpu_column} | requests/s vs the baseline | CPU vs the baseline |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let l = &row.load;
        let (rps, cpu) = match row.baseline.map(|i| &rows[i].load) {
            Some(b) => (format!("{:.0}%", 100.0 * l.rps / b.rps), l.cpu_us.zip(b.cpu_us).map_or("–".into(), |(a, b)| format!("{:.2}×", a / b))),
            None => ("baseline".into(), "baseline".into()),
        };
        out += &format!("| {} | {:.0} | {:.2} ms | {:.2} ms | {} | {rps} | {cpu} |\n", row.name, l.rps, l.p50_ms, l.p99_ms, l.cpu());
    }
    out
}

/// Our Worker's modules, as a config.capnp beside an `ours` link to `workers/` names them.
fn our_modules(root: &Path) -> anyhow::Result<Vec<(String, &'static str, String)>> {
    let mut modules = vec![
        ("worker.js".to_owned(), "esModule", "ours/worker.js".to_owned()),
        ("build/edgeproxy.js".to_owned(), "esModule", "ours/build/edgeproxy.js".to_owned()),
    ];
    let mut wasm: Vec<String> = std::fs::read_dir(root.join("workers/build"))?.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|f| f.ends_with(".wasm")).collect();
    wasm.sort();
    modules.extend(wasm.into_iter().map(|f| (format!("build/{f}"), "wasm", format!("ours/build/{f}"))));
    Ok(modules)
}

/// Our Worker in one workerd with the document `one` and, as a second
/// service, `many`: small requests through each (the document-size runs).
pub fn workers_document_size(root: &Path, work: &Path, one: &str, many: &str) -> anyhow::Result<(Load, Load)> {
    let dir = work.join("workerd-document-size");
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink(root.join("workers"), dir.join("ours"))?;
    std::fs::write(dir.join("one.toml"), one)?;
    std::fs::write(dir.join("many.toml"), many)?;
    let modules = our_modules(root)?;
    let workers = [
        Worker { id: "one", modules: modules.clone(), bindings: vec![("EDGEPROXY_CONFIG", "embed \"one.toml\"".into())] },
        Worker { id: "many", modules, bindings: vec![("EDGEPROXY_CONFIG", "embed \"many.toml\"".into())] },
    ];
    let ports: Vec<u16> = workers.iter().map(|_| free_port()).collect::<Result<_, _>>()?;
    std::fs::write(dir.join("config.capnp"), capnp(&workers, &ports))?;
    let log = std::fs::File::create(dir.join("workerd.log"))?;
    let workerd = Killed(
        Command::new(root.join("node_modules/.bin/workerd")).args(["serve", "config.capnp"]).current_dir(&dir).stdout(Stdio::null()).stderr(log).spawn().context("start workerd")?,
    );
    let side = |port: u16| -> anyhow::Result<Side<'static>> {
        let url = format!("http://127.0.0.1:{port}/small");
        wait_until_up(&url).with_context(|| format!("workerd did not come up: see {}", dir.join("workerd.log").display()))?;
        Ok(Side { url, host: None, cpu_of: Some(workerd.0.id()) })
    };
    wrk_pair([side(ports[0])?, side(ports[1])?])
}

pub fn workers_table(rows: &[Row]) -> String {
    format!(
        "\nWorkers (issue #15): every Worker in one `workerd serve` (the npm package's workerd, from our package-lock) of a generated `config.capnp`, \
         one service per Worker and no Miniflare entry worker in front, against the same origin; wrk as above. \
         The JavaScript Workers are `../shared/baselines/` with the local origin substituted as its README says. \
         CPU per request is workerd's user and system time over the run:\n\n{}",
        table(rows, "Worker", "workerd CPU per request")
    )
}

pub fn spin_table(rows: &[Row]) -> String {
    format!(
        "\nSpin (issue #15): edgeproxy's Spin artifact (the core between the Spin adapters, its core set up with the bench's document as `spin build` sets up the manifest's) against a plain spin-sdk 5.2 proxy \
         doing the same forwarding (`bench/spin-plain-proxy`: spin-sdk's `Request`/`send`/`Response`), on each Spin host; wrk as above, CPU of the \
         serving process (real Spin: `spin up` and its trigger process):\n\n{}",
        table(rows, "component on host", "CPU per request")
    )
}
