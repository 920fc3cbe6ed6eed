//! The baseline for edgeproxy on Spin (`cargo xtask bench`): a forwarding
//! proxy as spin-sdk's documentation writes one, to the origin in the Spin
//! variable `origin`. Method, path, query, headers and body pass through;
//! the response comes back as it is. Bodies are buffered, as spin-sdk's
//! `Request`/`Response` types do, which costs nothing on the small
//! requests this baseline is measured with.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn forward(request: Request) -> anyhow::Result<impl IntoResponse> {
    let origin = spin_sdk::variables::get("origin")?;
    let url = format!("{origin}{}", request.path_and_query().unwrap_or("/"));
    let headers: Vec<(String, Vec<u8>)> =
        request.headers().filter(|(name, _)| !name.eq_ignore_ascii_case("host")).map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec())).collect();
    let upstream = Request::builder().method(request.method().clone()).uri(url).headers(headers).body(request.into_body()).build();
    let response: Response = spin_sdk::http::send(upstream).await?;
    Ok(response)
}
