//! image-cache ("Placeholder Zoo") through the real host: the original's URL
//! grammar, generation through a faithful Replicate stand-in
//! (tests/fixtures/images/fake_replicate.py) or the built-in generator,
//! transforms checked against Pillow (tests/fixtures/images/reference.py),
//! abuse control, bad input, HTTP semantics and the gallery in Chromium.

use edgeproxy_testkit::browser::chromium_dom;
use edgeproxy_testkit::hf::tempdir;
use edgeproxy_testkit::images::{FakeReplicate, TOKEN, libwebp_bytes, reference};
use edgeproxy_testkit::Host;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The zoo with the built-in generator on every host name, `extra` TOML added.
fn zoo(extra: &str) -> String {
    format!("[[route]]\nhost = \"*\"\n\n[route.image-cache]\n{extra}\n")
}

async fn get(host: &Host, path: &str) -> reqwest::Response {
    client().get(host.url(path)).send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Width, height and format of an image, decoded independently of the proxy.
fn image_info(bytes: &[u8]) -> (u32, u32, image::ImageFormat) {
    let format = image::guess_format(bytes).expect("an image format by magic bytes");
    let decoded = image::load_from_memory(bytes).expect("a decodable image");
    (decoded.width(), decoded.height(), format)
}

/// A JSON error with `code`, not cached, its message in the header too.
async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "{code}: {:?}", r.headers());
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(header(&r, "content-type"), "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    body
}

#[tokio::test]
async fn the_originals_urls_answer_an_image_of_that_size_generated_once() {
    let host = Host::start(&zoo("generation = \"open\"")).await;
    let first = get(&host, "/800x600/sunglasses-sloth").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-image-source"), "generated");
    assert_eq!(header(&first, "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(header(&first, "content-type"), "image/png", "the built-in generator's original, as stored");
    let etag = header(&first, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "a strong ETag: {etag}");
    let bytes = first.bytes().await.unwrap();
    assert_eq!(image_info(&bytes), (800, 600, image::ImageFormat::Png));

    // Case and a trailing slash do not make another image.
    let again = get(&host, "/800X600/Sunglasses-Sloth/").await;
    assert_eq!((again.status().as_u16(), header(&again, "x-image-source"), header(&again, "etag")), (200, "stored", etag.as_str()));
    assert_eq!(again.bytes().await.unwrap(), bytes);

    let revalidated = client().get(host.url("/800x600/sunglasses-sloth")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(&revalidated, "etag"), etag);
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let jpeg_only = client().get(host.url("/800x600/sunglasses-sloth")).header("accept", "image/jpeg").send().await.unwrap();
    assert_eq!(header(&jpeg_only, "content-type"), "image/jpeg", "a client that takes only JPEG gets no PNG original");
    assert_ne!(header(&jpeg_only, "etag"), etag, "another representation, another ETag");
    assert_eq!(image_info(&jpeg_only.bytes().await.unwrap()), (800, 600, image::ImageFormat::Jpeg));

    let head = client().head(host.url("/800x600/sunglasses-sloth")).send().await.unwrap();
    assert_eq!((head.status().as_u16(), header(&head, "content-length")), (200, bytes.len().to_string().as_str()));
    assert_eq!(header(&head, "etag"), etag);

    let post = client().post(host.url("/800x600/sunglasses-sloth")).send().await.unwrap();
    assert_eq!(header(&post, "allow"), "GET, HEAD");
    expect_error(post, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn every_malformed_size_slug_and_option_is_a_400_that_names_it() {
    let host = Host::start(&zoo("generation = \"open\"\nmax_output_pixels = 1000000")).await;
    for (path, code, option) in [
        ("/800/sloth", "bad_size", ""),
        ("/800x/sloth", "bad_size", ""),
        ("/abcxdef/sloth", "bad_size", ""),
        ("/0x0/sloth", "bad_size", ""),
        ("/15x600/sloth", "bad_size", ""),
        ("/800x4096/sloth", "bad_size", ""),
        ("/800x600x5/sloth", "bad_size", ""),
        ("/-800x600/sloth", "bad_size", ""),
        ("/800x600/sloth_bear", "bad_slug", ""),
        ("/800x600/sl%C3%B6th", "bad_slug", ""),
        ("/800x600/sloth.png", "bad_slug", ""),
        ("/800x600/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bad_slug", ""),
        ("/800x600/sloth?blur=0", "bad_option", "blur"),
        ("/800x600/sloth?fit=stretch", "bad_option", "fit"),
        ("/800x600/sloth?zoom=0.5", "bad_option", "zoom"),
        ("/800x600/sloth?format=svg", "bad_option", "format"),
        ("/800x600/sloth?gravity=face", "bad_option", "gravity"),
        ("/800x600/sloth?rotate=45", "bad_option", "rotate"),
        ("/800x600/sloth?background=nope", "bad_option", "background"),
        ("/800x600/sloth?trim=300;0;300;0", "bad_option", "trim"),
        ("/800x600/sloth?width=2000&height=2000&fit=squeeze", "bad_option", "width"),
        ("/800x600/sloth?width=800&height=800&fit=squeeze&dpr=2", "bad_option", "dpr"),
        ("/cdn-cgi/image/width=abc/800x600/sloth", "bad_option", "width"),
        ("/cdn-cgi/image/quality=101/800x600/sloth", "bad_option", "quality"),
        ("/cdn-cgi/image/width=100/https://example.com/cat.png", "bad_source", ""),
        ("/800x600/sloth/extra", "not_found", ""),
    ] {
        let r = get(&host, path).await;
        let bad_option = header(&r, "x-bad-option").to_owned();
        let body = expect_error(r, if code == "not_found" { 404 } else { 400 }, code).await;
        assert_eq!(bad_option, option, "{path}: {body}");
        if !option.is_empty() {
            assert!(body["message"].as_str().unwrap().contains(option), "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn transforms_match_pillow_within_stated_tolerances() {
    let host = Host::start(&zoo("generation = \"open\"")).await;
    let dir = tempdir::Dir::new("transforms");
    let base = dir.path().join("base.png");
    let source = get(&host, "/400x300/reference-panda?format=png").await.bytes().await.unwrap();
    assert_eq!(image_info(&source), (400, 300, image::ImageFormat::Png));
    std::fs::write(&base, &source).unwrap();
    // Mean absolute difference per channel (0-255) allowed against Pillow:
    // both resize with Lanczos3, but kernels, edge handling and rounding differ.
    const RESIZE: f64 = 1.5;
    const FILTER: f64 = 0.5;
    const EXACT: f64 = 0.5;
    for (options, tolerance) in [
        ("width=200", RESIZE),
        // Reductions of 4x and more: a box filter first, then Lanczos3 (as Pillow's `thumbnail`).
        ("width=50", RESIZE),
        ("width=60,height=60,fit=cover", RESIZE),
        ("width=800", EXACT),
        ("width=600,height=600,fit=contain", RESIZE),
        ("width=200,height=200,fit=scale-down", RESIZE),
        ("width=200,height=200,fit=cover", RESIZE),
        ("width=200,height=200,fit=cover,gravity=left", RESIZE),
        ("width=100,height=300,fit=cover,gravity=0.2x0.8", RESIZE),
        ("width=400,height=100,fit=cover,gravity=bottom", RESIZE),
        ("width=200,height=500,fit=crop", RESIZE),
        ("width=300,height=300,fit=pad,background=red", RESIZE),
        ("width=100,height=250,fit=squeeze", RESIZE),
        ("width=150,dpr=2", RESIZE),
        ("rotate=90,width=150", RESIZE),
        ("flip=h", EXACT),
        ("flip=v,rotate=270", EXACT),
        ("trim=10;20;30;40", EXACT),
        ("blur=8", FILTER),
        ("sharpen=2", FILTER),
        ("brightness=1.3", EXACT),
        ("contrast=1.5", EXACT),
        ("gamma=2", EXACT),
        ("saturation=0", EXACT),
        ("width=200,saturation=0.5,contrast=0.8", RESIZE),
    ] {
        let r = get(&host, &format!("/cdn-cgi/image/{options},format=png/400x300/reference-panda")).await;
        assert_eq!(r.status(), 200, "{options}");
        let actual = dir.path().join("actual.png");
        std::fs::write(&actual, r.bytes().await.unwrap()).unwrap();
        let cmp = reference(&base, options, &actual).await;
        assert_eq!((&cmp["actual_width"], &cmp["actual_height"]), (&cmp["expected_width"], &cmp["expected_height"]), "{options}: {cmp}");
        let diff = cmp["mean_abs_diff"].as_f64().unwrap();
        eprintln!("{options}: {}x{}, mean |diff| {diff:.3}", cmp["actual_width"], cmp["actual_height"]);
        assert!(diff <= tolerance, "{options}: mean |diff| {diff} > {tolerance}: {cmp}");
    }
    // gravity=auto keeps the requested size; where it crops is the proxy's choice.
    let auto = get(&host, "/cdn-cgi/image/width=100,height=300,fit=cover,gravity=auto/400x300/reference-panda").await.bytes().await.unwrap();
    assert_eq!((image_info(&auto).0, image_info(&auto).1), (100, 300));
}

/// What browsers send for an `<img>` (Chromium 131, Firefox 133, Safari 18) and curl.
const CHROMIUM: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
const FIREFOX: &str = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
const SAFARI: &str = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
const CURL: &str = "*/*";

/// The chunks of a WebP file after `RIFF....WEBP`: `VP8 ` is lossy, `VP8L` lossless.
fn webp_chunks(bytes: &[u8]) -> Vec<String> {
    assert!(bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP", "a WebP file");
    let (mut chunks, mut at) = (Vec::new(), 12);
    while at + 8 <= bytes.len() {
        chunks.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len + (len & 1);
    }
    chunks
}

#[tokio::test]
async fn formats_are_what_was_asked_or_what_accept_allows() {
    let host = Host::start(&zoo("generation = \"open\"")).await;
    let transparent = "width=100&fit=pad&height=300&background=transparent";
    for (query, accept, format, vary) in [
        ("format=jpeg&quality=70", CURL, image::ImageFormat::Jpeg, ""),
        ("format=png", CURL, image::ImageFormat::Png, ""),
        ("format=webp", CURL, image::ImageFormat::WebP, ""),
        ("width=100", CHROMIUM, image::ImageFormat::WebP, "Accept"),
        ("width=100", FIREFOX, image::ImageFormat::WebP, "Accept"),
        ("width=100", SAFARI, image::ImageFormat::WebP, "Accept"),
        ("width=100", CURL, image::ImageFormat::Jpeg, "Accept"),
        ("width=100", "image/jpeg", image::ImageFormat::Jpeg, "Accept"),
        (transparent, CHROMIUM, image::ImageFormat::WebP, "Accept"),
        (transparent, "image/png,*/*", image::ImageFormat::Png, "Accept"),
    ] {
        let r = client().get(host.url(&format!("/320x240/format-fox?{query}"))).header("accept", accept).send().await.unwrap();
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(header(&r, "vary"), vary, "{query}");
        let content_type = header(&r, "content-type").to_owned();
        let bytes = r.bytes().await.unwrap();
        let (_, _, actual) = image_info(&bytes);
        assert_eq!(actual, format, "{query} with Accept {accept}");
        assert_eq!(content_type, actual.to_mime_type(), "Content-Type from the bytes sent");
        if actual == image::ImageFormat::WebP {
            assert!(webp_chunks(&bytes).contains(&"VP8 ".to_owned()), "{query} with Accept {accept}: lossy WebP, {:?}", webp_chunks(&bytes));
        }
    }
    let lossless = get(&host, "/320x240/format-fox?format=webp&quality=100").await.bytes().await.unwrap();
    assert_eq!(webp_chunks(&lossless), ["VP8L"], "quality=100 is lossless, as on Cloudflare");
    // A variant is stored once and then served from key-value.
    let first = get(&host, "/320x240/format-fox?width=64").await;
    let second = get(&host, "/320x240/format-fox?width=64").await;
    assert_eq!((header(&first, "x-cache"), header(&second, "x-cache")), ("MISS", "HIT"));
    let timing = header(&first, "server-timing");
    assert!(timing.starts_with("decode;dur=") && timing.contains(", transform;dur=") && timing.contains(", encode;dur="), "what rendering took: {timing}");
    assert_eq!(header(&second, "server-timing"), "", "nothing was rendered");
}

/// A WebP original decodes to exactly the pixels libwebp (Pillow) decodes
/// it to: at a low quality, where the loop filter smooths hardest, at the
/// default and at a high one. `format=png` of the original at its own size
/// is those pixels, losslessly.
#[tokio::test]
async fn a_webp_original_decodes_to_exactly_libwebps_pixels() {
    let replicate = FakeReplicate::start(3600).await;
    let dir = tempdir::Dir::new("webp-decode");
    for quality in [5, 80, 95] {
        // flux-schnell's 1:1 at 0.25 megapixels is 512x512.
        let input = format!("[route.image-cache.replicate.input]\noutput_format = \"webp\"\noutput_quality = {quality}\nmegapixels = \"0.25\"\n");
        let host = Host::start_with_secrets(&replicate.document(&format!("generation = \"open\"\n{input}")), &[("replicate-token", TOKEN)]).await;
        let original = client().get(host.url("/512x512/photo-lynx")).header("accept", "image/webp").send().await.unwrap();
        assert_eq!((header(&original, "content-type"), header(&original, "x-image-source")), ("image/webp", "generated"), "q{quality}: the original as stored");
        let (webp, png) = (dir.path().join(format!("q{quality}.webp")), dir.path().join(format!("q{quality}.png")));
        std::fs::write(&webp, original.bytes().await.unwrap()).unwrap();
        std::fs::write(&png, get(&host, "/512x512/photo-lynx?format=png").await.bytes().await.unwrap()).unwrap();
        let cmp = reference(&webp, "format=png", &png).await;
        assert_eq!((&cmp["actual_width"], &cmp["actual_format"]), (&Value::from(512), &Value::from("PNG")), "q{quality}: {cmp}");
        assert_eq!(cmp["mean_abs_diff"], 0.0, "q{quality}: not libwebp's pixels: {cmp}");
    }
}

/// Our lossy WebP of a photograph against Pillow's: decoded, within a
/// stated distance of Pillow's own resize of the same source, and no more
/// than 1.3x the bytes of Pillow's (libwebp's) WebP of the same pixels at
/// the same quality.
#[tokio::test]
async fn lossy_webp_of_a_photograph_is_near_pillows_in_pixels_and_bytes() {
    /// Mean absolute difference per channel (0-255) from Pillow's Lanczos
    /// resize: the resize's own tolerance (1.5) plus lossy coding's error.
    const LOSSY_RESIZE: f64 = 6.0;
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    let dir = tempdir::Dir::new("lossy-webp");
    let base = dir.path().join("base.png");
    let source = get(&host, "/800x600/photo-otter?format=png").await.bytes().await.unwrap();
    assert_eq!(image_info(&source), (800, 600, image::ImageFormat::Png));
    std::fs::write(&base, &source).unwrap();

    let ours = get(&host, "/cdn-cgi/image/width=400,format=webp,quality=80/800x600/photo-otter").await.bytes().await.unwrap();
    assert_eq!(webp_chunks(&ours), ["VP8 "], "lossy, not VP8L");
    let actual = dir.path().join("ours.webp");
    std::fs::write(&actual, &ours).unwrap();
    let cmp = reference(&base, "width=400", &actual).await;
    assert_eq!((&cmp["actual_width"], &cmp["actual_height"]), (&cmp["expected_width"], &cmp["expected_height"]), "{cmp}");
    let diff = cmp["mean_abs_diff"].as_f64().unwrap();
    eprintln!("lossy WebP q80 of 400x300: {} bytes, mean |diff| {diff:.2}, PSNR {}", ours.len(), cmp["psnr"]);
    assert!(diff <= LOSSY_RESIZE, "mean |diff| {diff} > {LOSSY_RESIZE}: {cmp}");

    let pixels = dir.path().join("pixels.png");
    std::fs::write(&pixels, get(&host, "/cdn-cgi/image/width=400,format=png/800x600/photo-otter").await.bytes().await.unwrap()).unwrap();
    let pillows = libwebp_bytes(&pixels, 80).await;
    let ratio = ours.len() as f64 / pillows as f64;
    eprintln!("Pillow's (libwebp) WebP q80 of the same pixels: {pillows} bytes; ours {ratio:.2}x");
    assert!(ratio <= 1.3, "ours {} bytes, {ratio:.2}x Pillow's {pillows}", ours.len());
}

/// AVIF where the route allows it: `format=avif`, and first in `auto` for
/// the browsers that take it; opaque and at most 1,200 pixels a side, else
/// WebP, which is also what `format=avif` gets on other routes (as on
/// Cloudflare). Pillow decodes ours close to its own resize of the source.
#[tokio::test]
async fn avif_where_the_route_allows_it_and_webp_in_its_place_elsewhere() {
    /// Mean absolute difference per channel (0-255) from Pillow's Lanczos
    /// resize: the resize's own tolerance (1.5) plus lossy coding's error.
    const LOSSY_RESIZE: f64 = 6.0;
    let host = Host::start(&zoo("generation = \"open\"\navif = true")).await;
    let dir = tempdir::Dir::new("avif");
    let base = dir.path().join("base.png");
    std::fs::write(&base, get(&host, "/320x240/avif-owl?format=png").await.bytes().await.unwrap()).unwrap();

    let r = get(&host, "/320x240/avif-owl?format=avif&width=160").await;
    assert_eq!((r.status().as_u16(), header(&r, "content-type")), (200, "image/avif"));
    let avif = r.bytes().await.unwrap();
    assert_eq!(&avif[4..12], b"ftypavif", "an AVIF file");
    let actual = dir.path().join("ours.avif");
    std::fs::write(&actual, &avif).unwrap();
    let cmp = reference(&base, "width=160", &actual).await;
    assert_eq!((&cmp["actual_format"], &cmp["actual_width"], &cmp["actual_height"]), (&Value::from("AVIF"), &Value::from(160), &Value::from(120)), "{cmp}");
    let diff = cmp["mean_abs_diff"].as_f64().unwrap();
    eprintln!("AVIF of 160x120: {} bytes, mean |diff| {diff:.2}", avif.len());
    assert!(diff <= LOSSY_RESIZE, "mean |diff| {diff} > {LOSSY_RESIZE}: {cmp}");

    let kind = |r: &reqwest::Response| header(r, "content-type").to_owned();
    for (accept, expected) in [(CHROMIUM, "image/avif"), (FIREFOX, "image/avif"), (SAFARI, "image/avif"), (CURL, "image/jpeg")] {
        let r = client().get(host.url("/320x240/avif-owl?width=100")).header("accept", accept).send().await.unwrap();
        assert_eq!((kind(&r), header(&r, "vary")), (expected.to_owned(), "Accept"), "{accept}");
    }
    let transparent = client().get(host.url("/320x240/avif-owl?width=100&height=300&fit=pad&background=transparent")).header("accept", CHROMIUM).send().await.unwrap();
    assert_eq!(kind(&transparent), "image/webp", "AVIF here is for opaque images");
    let large = get(&host, "/1600x1200/avif-big?format=avif").await;
    assert_eq!(kind(&large), "image/webp", "over 1,200 pixels a side, WebP");

    let elsewhere = Host::start(&zoo("generation = \"open\"")).await;
    assert_eq!(kind(&get(&elsewhere, "/320x240/avif-owl?format=avif").await), "image/webp", "a route without avif falls back to WebP");
    let chromium = client().get(elsewhere.url("/320x240/avif-owl?width=100")).header("accept", CHROMIUM).send().await.unwrap();
    assert_eq!(kind(&chromium), "image/webp");
}

/// `format=json`: Cloudflare's answer about the image instead of the image.
#[tokio::test]
async fn format_json_describes_the_output_and_the_original() {
    let host = Host::start(&zoo("generation = \"open\"")).await;
    let original = get(&host, "/320x240/json-jay").await.bytes().await.unwrap().len();
    let r = get(&host, "/320x240/json-jay?format=json&width=160").await;
    assert_eq!((r.status().as_u16(), header(&r, "content-type")), (200, "application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!((&body["width"], &body["height"]), (&Value::from(160), &Value::from(120)), "{body}");
    assert_eq!(body["original"]["format"], "image/png", "{body}");
    assert_eq!((&body["original"]["width"], &body["original"]["height"]), (&Value::from(320), &Value::from(240)), "{body}");
    assert_eq!(body["original"]["file_size"].as_u64(), Some(original as u64), "{body}");
}

#[tokio::test]
async fn replicate_generates_once_with_its_documented_api_and_the_token_goes_only_to_it() {
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    let r = get(&host, "/800x600/sunglasses-sloth").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = get(&host, "/800x600/sunglasses-sloth").await;
    assert_eq!((r.status().as_u16(), header(&r, "x-image-source"), header(&r, "content-type")), (200, "stored", "image/jpeg"));
    assert_eq!(image_info(&r.bytes().await.unwrap()).0, 800);

    let created = replicate.creations("sunglasses-sloth").await;
    assert_eq!(created.len(), 1, "one prediction: {created:?}");
    let call = &created[0];
    assert_eq!(call["path"], "/v1/models/black-forest-labs/flux-schnell/predictions");
    assert_eq!(call["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(call["prefer"], "wait=1");
    assert_eq!(call["cancel_after"], "120s");
    let input = &call["input"];
    assert_eq!(input["prompt"], "A high-quality image of a sunglasses-sloth holding up a sign with the words \"800 by 600\"");
    assert_eq!((&input["aspect_ratio"], &input["output_format"]), (&Value::from("4:3"), &Value::from("webp")));
    assert!(input["seed"].is_u64(), "a seed derived from the key: {input}");
    let calls = replicate.calls().await;
    let downloads: Vec<&Value> = calls.iter().filter(|c| c["server"] == "delivery").collect();
    assert_eq!(downloads.len(), 1, "{calls:?}");
    assert!(downloads.iter().all(|c| c["authorization"].is_null()), "the token never reaches the output host: {downloads:?}");
}

/// Coming from the placeholder Worker: its `REPLICATE_API_TOKEN` is the
/// token, and a token alone (no `replicate` table) switches Replicate on.
#[tokio::test]
async fn the_placeholder_workers_replicate_api_token_alone_switches_replicate_on() {
    let replicate = FakeReplicate::start(3600).await;
    let setting = edgeproxy_testkit::original_setting("REPLICATE_API_TOKEN", TOKEN);
    let env: Vec<(&str, &str)> = setting.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let host = Host::start_with_env(&replicate.document("generation = \"open\""), &env).await;
    let r = get(&host, "/800x600/sunglasses-sloth").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let created = replicate.creations("sunglasses-sloth").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["authorization"], format!("Bearer {TOKEN}"));

    // No table at all: Replicate's own API is tried (unreachable here), not the built-in generator.
    let untabled = Host::start_with_env("[[route]]\nhost = \"*\"\n\n[route.image-cache]\ngeneration = \"open\"\n", &env).await;
    let r = get(&untabled, "/64x64/no-table").await;
    assert_eq!(r.status(), 502, "{:?}", r.headers());
    let body: Value = r.json().await.unwrap();
    assert!(["bad_gateway", "generation_failed"].contains(&body["error"].as_str().unwrap_or_default()), "{body}");
}

#[tokio::test]
async fn eight_concurrent_first_requests_make_one_prediction() {
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    let requests = (0..8).map(|_| async { get(&host, "/640x480/slow-herd").await });
    let responses = futures_util::future::join_all(requests).await;
    let etags: Vec<String> = responses.iter().map(|r| format!("{} {}", r.status(), header(r, "etag"))).collect();
    assert!(etags.iter().all(|e| e == &etags[0] && e.starts_with("200")), "{etags:?}");
    assert_eq!(replicate.creations("slow-herd").await.len(), 1);
}

#[tokio::test]
async fn slow_throttled_and_early_output_predictions_still_deliver() {
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    for slug in ["slow-koala", "throttle-lemur", "throttlehint-otter", "processingoutput-yak"] {
        let r = get(&host, &format!("/300x200/{slug}")).await;
        assert_eq!(r.status(), 200, "{slug}: {:?}", r.text().await);
    }
    let calls = replicate.calls().await;
    let polls = calls.iter().filter(|c| c["method"] == "GET" && c["path"].as_str().unwrap_or_default().starts_with("/v1/predictions/")).count();
    assert!(polls >= 1, "a prediction still running after Prefer: wait is polled at urls.get");
    let throttled = calls.iter().filter(|c| c["status"] == 429).count();
    assert_eq!(throttled, 2, "each throttled create was waited out and retried once");
    assert_eq!(replicate.creations("throttle-lemur").await.len(), 1);
}

#[tokio::test]
async fn failed_or_bad_generations_are_502_and_nothing_is_stored() {
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    for (slug, code, says) in [
        ("fail-mole", "generation_failed", "failed: CUDA out of memory (stand-in)"),
        ("cancel-mole", "generation_failed", "canceled"),
        ("abort-mole", "generation_failed", "aborted"),
        ("notimage-mole", "bad_generated_image", "not a PNG, JPEG or WebP"),
        ("truncated-mole", "bad_generated_image", "broke off"),
        ("bomb-mole", "bad_generated_image", "30000x30000"),
    ] {
        for _ in 0..2 {
            let body = expect_error(get(&host, &format!("/200x200/{slug}")).await, 502, code).await;
            assert!(body["message"].as_str().unwrap().contains(says), "{slug}: {body}");
            assert!(!body["message"].as_str().unwrap().contains(TOKEN));
        }
        assert_eq!(replicate.creations(slug).await.len(), 2, "{slug}: nothing was stored, so the second request generated again");
    }
}

#[tokio::test]
async fn jpeg_and_png_outputs_of_the_model_are_decoded_too() {
    let replicate = FakeReplicate::start(3600).await;
    for format in ["jpg", "png"] {
        let document = replicate.document("generation = \"open\"").replace("wait_seconds = 1", &format!("wait_seconds = 1\ninput = {{ output_format = \"{format}\" }}"));
        let host = Host::start_with_secrets(&document, &[("replicate-token", TOKEN)]).await;
        let r = get(&host, &format!("/300x200/{format}-gecko?format=png")).await;
        assert_eq!(r.status(), 200, "{format}: {:?}", r.text().await);
        assert_eq!(image_info(&r.bytes().await.unwrap()), (300, 200, image::ImageFormat::Png));
    }
    let created = replicate.creations("-gecko").await;
    assert_eq!(created.iter().map(|c| c["input"]["output_format"].as_str().unwrap()).collect::<Vec<_>>(), ["jpg", "png"]);
}

#[tokio::test]
async fn an_output_that_has_expired_is_a_502() {
    let replicate = FakeReplicate::start(0).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    let body = expect_error(get(&host, "/200x200/late-mole").await, 502, "bad_generated_image").await;
    assert!(body["message"].as_str().unwrap().contains("404"), "{body}");
}

#[tokio::test]
async fn an_original_larger_than_a_value_is_stored_in_parts_and_served_whole() {
    let replicate = FakeReplicate::start(3600).await;
    let host = Host::start_with_secrets(&replicate.document("generation = \"open\""), &[("replicate-token", TOKEN)]).await;
    let first = get(&host, "/1024x1024/big-whale?format=png").await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    let again = get(&host, "/1024x1024/big-whale?format=png&width=1024").await;
    assert_eq!((again.status().as_u16(), header(&again, "x-image-source")), (200, "stored"));
    assert_eq!(again.bytes().await.unwrap(), first, "the stored original (over 1 MiB) came back intact");
    assert_eq!(replicate.creations("big-whale").await.len(), 1);
}

#[tokio::test]
async fn a_quota_limits_new_images_per_client_but_never_stored_ones() {
    let host = Host::start(&zoo("generation = \"quota\"\n[route.image-cache.quota]\nper_client = 2\nglobal = 100\n")).await;
    for slug in ["quota-one", "quota-two"] {
        assert_eq!(get(&host, &format!("/64x64/{slug}")).await.status(), 200);
    }
    let refused = get(&host, "/64x64/quota-three").await;
    assert!(header(&refused, "retry-after").parse::<u32>().unwrap() >= 1);
    expect_error(refused, 429, "generation_quota").await;
    let stored = get(&host, "/64x64/quota-one?width=32").await;
    assert_eq!(stored.status(), 200, "serving what is stored is never limited");
}

/// `edgeproxy sign`, the CLI a site owner signs URLs with.
fn signed(path: &str, secret: &str) -> String {
    let out = std::process::Command::new(edgeproxy_testkit::edgeproxy_binary())
        .args(["sign", path, "--secret", "image-signing-key", "--expires-in", "600"])
        .env("EDGEPROXY_SECRET_IMAGE_SIGNING_KEY", secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn signed_generation_and_redo_need_a_valid_signature() {
    let secret = "s3cret-signing-key";
    let document = zoo("generation = \"signed\"\nsigning_secret = \"image-signing-key\"");
    let host = Host::start_with_secrets(&document, &[("image-signing-key", secret)]).await;
    expect_error(get(&host, "/120x90/signed-owl").await, 403, "signature_required").await;

    let url = signed("/120x90/signed-owl", secret);
    let tampered = url.replace("sig=", "sig=00");
    expect_error(get(&host, &tampered).await, 403, "bad_signature").await;
    let other_path = url.replace("signed-owl", "signed-emu");
    expect_error(get(&host, &other_path).await, 403, "bad_signature").await;
    let expired = format!("/120x90/signed-owl?{}", edgeproxy_signing::query(secret.as_bytes(), "/120x90/signed-owl", 1000));
    expect_error(get(&host, &expired).await, 403, "signature_expired").await;

    let r = get(&host, &url).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-image-source")), (200, "generated"));
    let r = get(&host, "/120x90/signed-owl?width=60").await;
    assert_eq!((r.status().as_u16(), header(&r, "x-image-source")), (200, "stored"), "stored images need no signature");

    let with_options = signed("/120x90/signed-fox?width=60&format=png", secret);
    assert!(with_options.starts_with("/120x90/signed-fox?width=60&format=png&expires="), "{with_options}");
    let r = get(&host, &with_options).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-image-source")), (200, "generated"), "a signed URL keeps the image's options");

    expect_error(get(&host, "/120x90/signed-owl?redo").await, 403, "signature_required").await;
    let r = get(&host, &format!("{url}&redo")).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-image-source")), (200, "generated"), "a signed ?redo regenerates");
}

#[tokio::test]
async fn redo_needs_a_signature_under_every_policy() {
    let host = Host::start(&zoo("generation = \"open\"")).await;
    assert_eq!(get(&host, "/64x64/redo-rat").await.status(), 200);
    let body = expect_error(get(&host, "/64x64/redo-rat?redo").await, 403, "signature_required").await;
    assert!(body["message"].as_str().unwrap().contains("no signing secret"), "{body}");
}

#[tokio::test]
async fn the_gallery_shows_every_example_at_its_natural_size_in_a_browser() {
    // AVIF allowed: Chromium takes it, so `auto` images arrive as AVIF too.
    let host = Host::start(&zoo("generation = \"open\"\navif = true\nexamples = [\"/300x120/banner-bat\"]")).await;
    let page = get(&host, "/").await;
    assert_eq!((page.status().as_u16(), header(&page, "content-type")), (200, "text/html; charset=utf-8"));
    let dom = chromium_dom(&host.url("/")).await;
    let images: Vec<&str> = dom.split("<img ").skip(1).collect();
    assert_eq!(images.len(), 14, "5 examples and 9 variants, WebP lossy and lossless and AVIF among them: {dom}");
    for img in images {
        let attr = |name: &str| img.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_owned();
        assert_eq!(attr("data-natural"), format!("{}x{}", attr("data-width"), attr("data-height")), "{}", attr("src"));
    }
}
