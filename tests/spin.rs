//! The Spin artifact and manifest: what `dist/edgeproxy-spin.wasm` imports,
//! that it carries the core unchanged, that spin.toml is a complete manifest
//! for it, and (in the Spin pass, on real Spin) that several `spin up`
//! instances share one store. (Its behaviour is the shared suite, run with
//! EDGEPROXY_TEST_HOST=spin.)

use edgeproxy_testkit::host::spin_binary;
use edgeproxy_testkit::redis::Redis;
use edgeproxy_testkit::spin::check_spin_imports;
use edgeproxy_testkit::{Host, Upstream, workspace_root};

fn read(path: &str) -> Vec<u8> {
    let path = workspace_root().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (build first: `cargo xtask test` builds it)", path.display()))
}

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    toml::from_str(&text).expect("spin.toml is TOML")
}

#[test]
fn the_spin_component_imports_only_what_spin_4_0_links() {
    let imports = check_spin_imports(&read("dist/edgeproxy-spin.wasm"), &workspace_root().join("spin/wit")).unwrap_or_else(|problems| panic!("{problems}"));
    for family in ["wasi:http/outgoing-handler@0.2", "wasi:keyvalue/store@0.2.0-draft2", "fermyon:spin/variables@2.0.0"] {
        assert!(imports.iter().any(|i| i.starts_with(family)), "the adapter uses {family}; imports: {imports:?}");
    }
}

#[test]
fn the_import_check_rejects_an_interface_spin_does_not_link() {
    // The bare core imports edgeproxy:platform, which no Spin provides.
    let problems = check_spin_imports(&read("dist/edgeproxy.wasm"), &workspace_root().join("spin/wit")).unwrap_err();
    assert!(problems.contains("edgeproxy:platform/http-client@0.1.0 is not an interface Spin 4.0.x links"), "{problems}");
}

#[test]
fn the_spin_component_exports_only_the_wasi_http_handler() {
    let composed = read("dist/edgeproxy-spin.wasm");
    let wit_component::DecodedWasm::Component(resolve, world) = wit_component::decode(&composed).unwrap() else { panic!("not a component") };
    let exports: Vec<String> = resolve.worlds[world].exports.keys().map(|k| resolve.name_world_key(k)).collect();
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2.0"]);
}

#[test]
fn the_spin_component_contains_the_core_components_code_byte_for_byte() {
    // The core is set up with spin.toml's document (`edgeproxy preinit`),
    // which changes its data and nothing else: every function is the one
    // dist/edgeproxy.wasm has.
    let composed = read("dist/edgeproxy-spin.wasm");
    for code in edgeproxy_testkit::code_sections(&read("dist/edgeproxy.wasm")).unwrap() {
        assert!(composed.windows(code.len()).any(|w| w == code.as_slice()), "a code section of dist/edgeproxy.wasm ({} bytes) is not in the Spin artifact unchanged", code.len());
    }
}

#[test]
fn spin_toml_serves_the_composed_component_on_every_path() {
    let manifest = manifest();
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let trigger = &manifest["trigger"]["http"].as_array().unwrap()[0];
    assert_eq!(trigger["route"].as_str(), Some("/..."));
    let name = trigger["component"].as_str().unwrap();
    let component = &manifest["component"][name];
    assert_eq!(component["source"].as_str(), Some("dist/edgeproxy-spin.wasm"));
    assert_eq!(component["build"]["command"].as_str(), Some("cargo xtask spin"));
    let stores: Vec<&str> = component["key_value_stores"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    assert_eq!(stores, ["default"], "the services component opens the `default` store");
}

#[test]
fn spin_toml_variables_are_declared_and_the_default_document_is_valid() {
    let manifest = manifest();
    let declared = manifest["variables"].as_table().unwrap();
    let component = &manifest["component"]["edgeproxy"];
    for (name, value) in component["variables"].as_table().unwrap() {
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name} is not a Spin variable name");
        let template = value.as_str().unwrap();
        let referenced = template.trim().trim_start_matches("{{").trim_end_matches("}}").trim();
        assert!(declared.contains_key(referenced), "{name} refers to undeclared {referenced}");
    }
    let document = declared["document"]["default"].as_str().unwrap();
    edgeproxy::config::Document::parse(document).expect("the default document is valid");
}

#[test]
fn spin_toml_allows_every_upstream_of_its_default_document() {
    let manifest = manifest();
    let allowed: Vec<&str> = manifest["component"]["edgeproxy"]["allowed_outbound_hosts"].as_array().unwrap().iter().filter_map(|h| h.as_str()).collect();
    let text = manifest["variables"]["document"]["default"].as_str().unwrap();
    let document = edgeproxy::config::Document::parse(text).expect("the default document is valid");
    for route in &document.routes {
        use edgeproxy::config::App;
        let upstreams: Vec<String> = if let App::ApiGateway(gateway) = &route.app {
            gateway.origin.iter().cloned().collect()
        } else if let App::HfMirror(mirror) = &route.app {
            // The hub and every default CDN host pattern.
            std::iter::once(mirror.hub.clone()).chain(mirror.cdn_hosts.iter().map(|h| format!("https://{h}"))).collect()
        } else {
            // image-cache: Replicate's API and output hosts, as when a token is set.
            let replicate: edgeproxy::apps::image_cache::ReplicateOptions = toml::from_str("").unwrap();
            std::iter::once(replicate.api).chain(replicate.output_origins).collect()
        };
        for upstream in upstreams {
            assert!(allowed.contains(&upstream.as_str()), "{upstream} is not in allowed_outbound_hosts {allowed:?}");
        }
    }
}

/// Two `spin up` processes on one Redis, as docs/spin.md sets up
/// more than one instance: what one caches the other serves, and one rate
/// limit counts the requests of both (by compare-and-swap, which Spin's Redis
/// store reports wrongly: see spin/services/src/kv.rs, `swap`).
#[tokio::test(flavor = "multi_thread")]
async fn two_spin_instances_on_one_redis_share_the_cache_and_the_rate_limit() {
    if !edgeproxy_testkit::skip::only_on("spin", "two Spin instances on one store: it runs in the Spin pass") {
        return;
    }
    if spin_binary().is_none() {
        edgeproxy_testkit::skip::skip("no Spin binary: two instances on one store is a test of real Spin");
        return;
    }
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let document = format!(
        "[[route]]\nhost = \"api.test\"\n\n[route.api-gateway]\norigin = \"{}\"\n\n[route.api-gateway.cache]\n\n[route.api-gateway.rate_limit]\nrequests = 6\nperiod_seconds = 600\n",
        upstream.url()
    );
    let runtime_config = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url());
    let (a, b) = tokio::join!(Host::start_spin_with_runtime_config(&document, &runtime_config), Host::start_spin_with_runtime_config(&document, &runtime_config));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |host: &Host, path: &str| client.get(host.url(path)).header("host", "api.test").send();

    let path = "/cacheable/shared?cc=public,%20max-age=600";
    let first = get(&a, path).await.unwrap();
    assert_eq!((first.status().as_u16(), first.headers()["x-cache"].to_str().unwrap()), (200, "MISS"));
    let second = get(&b, path).await.unwrap();
    assert_eq!((second.status().as_u16(), second.headers()["x-cache"].to_str().unwrap()), (200, "HIT"), "the second instance reads the first one's entry");
    assert_eq!(upstream.hits("/cacheable/shared"), 1);

    // Six requests in all are allowed, two of them spent above; alone, each
    // instance would allow six of its own.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(get(if i % 2 == 0 { &a } else { &b }, "/small").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "one limit across both instances");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifests_own_document_serves_the_mirror_and_the_zoo() {
    // On Spin the artifact's core was set up with this very document at
    // build time (`edgeproxy preinit`), so requests take the set-up path;
    // the other tests' documents differ and set up per request.
    let document = edgeproxy_testkit::spin::manifest_document(&std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap()).unwrap();
    let host = edgeproxy_testkit::Host::start(&document).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let home = client.get(host.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("HF_ENDPOINT"), "the mirror's home page");
    let image = client.get(host.url("/_zoo/64x48/set-up-sloth")).send().await.unwrap();
    assert_eq!(image.status(), 200);
    let image = image::load_from_memory(&image.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (64, 48));
}
