//! Header hygiene between client, edge and upstream.

use crate::platform::Headers;

/// RFC 9110 §7.6.1 connection-specific headers, plus the non-standard ones
/// proxies still meet. They describe one hop and never travel on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that a CDN or edge platform adds about the client's connection
/// (and every `cf-*` and `spin-*` header, see [`is_platform`]: Workers and
/// Spin add those, `spin-client-addr` among them); forwarding them would let
/// a client forge them (`cf-access-authenticated-user-email`) or leak
/// platform internals.
const PLATFORM: &[&str] = &[
    "cdn-loop",
    "true-client-ip",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

/// Removes hop-by-hop headers, and any header the `connection` header names.
pub fn remove_hop_by_hop(headers: &mut Headers) {
    let named = list_tokens(headers, "connection");
    headers.retain(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()) && !named.iter().any(|token| n == token.as_str()));
}

fn is_platform(name: &str) -> bool {
    name.starts_with("cf-") || name.starts_with("spin-") || PLATFORM.contains(&name)
}

/// The client's headers as an upstream should see them: no hop-by-hop, no
/// platform headers, no `host` (the HTTP client sets it from the URL), and
/// `x-forwarded-for/proto/host` describing this hop.
pub fn for_upstream(mut headers: Headers, client_ip: Option<&str>, proto: &str, host: &str) -> Headers {
    remove_hop_by_hop(&mut headers);
    headers.retain(|(n, _)| n != "host" && !is_platform(n));
    // Append to a client-supplied X-Forwarded-For (as nginx's
    // $proxy_add_x_forwarded_for does): the origin trusts only the right-most entries.
    let prior: Vec<String> = headers.iter().filter(|(n, _)| n == "x-forwarded-for").map(|(_, v)| v.clone()).collect();
    headers.retain(|(n, _)| n != "x-forwarded-for");
    let mut chain = prior.join(", ");
    if let Some(ip) = client_ip {
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(ip);
    }
    if !chain.is_empty() {
        headers.push(("x-forwarded-for".into(), chain));
    }
    headers.push(("x-forwarded-proto".into(), proto.to_owned()));
    headers.push(("x-forwarded-host".into(), host.to_owned()));
    headers
}

/// Replaces every `name` header with one `value`.
/// Whether the request's `If-None-Match` (a list, or `*`) matches `etag`:
/// the answer is then a 304. Compared weakly (`W/` ignored on both sides),
/// as RFC 9110 says for this header.
pub fn not_modified(request: &Headers, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    crate::platform::header(request, "if-none-match").is_some_and(|inm| inm.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == "*" || t == etag))
}

pub fn set(headers: &mut Headers, name: &str, value: impl Into<String>) {
    headers.retain(|(n, _)| n != name);
    headers.push((name.into(), value.into()));
}

/// The lower-cased tokens of a comma-separated list header (`connection`,
/// `vary`), across all its lines, as RFC 9110 §5.3 combines them.
pub fn list_tokens(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Adds `token` to a comma-separated header such as `vary`, once.
pub fn append_token(headers: &mut Headers, name: &str, token: &str) {
    if !list_tokens(headers, name).iter().any(|t| t.eq_ignore_ascii_case(token)) {
        headers.push((name.into(), token.to_owned()));
    }
}

/// Points an absolute `location` at `upstream_base` back at `public_base`,
/// so redirects keep the client on the edge. Relative ones stay relative.
pub fn rewrite_location(headers: &mut Headers, upstream_base: &str, public_base: &str) {
    for (name, value) in headers.iter_mut().filter(|(n, _)| n == "location") {
        debug_assert_eq!(name, "location");
        if let Some(rest) = value.strip_prefix(upstream_base)
            && (rest.is_empty() || rest.starts_with(['/', '?', '#']))
        {
            *value = format!("{public_base}{rest}");
        }
    }
}

/// Total size of the header block, as a server limit counts it.
pub fn block_size(headers: &Headers) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| ((*n).into(), v.to_string())).collect()
    }

    #[test]
    fn if_none_match_is_compared_weakly_against_each_tag_in_its_list() {
        // (If-None-Match, or none; the response's ETag; a 304?)
        let cases = [
            (None, "\"a\"", false),
            (Some("\"a\""), "\"a\"", true),
            (Some("W/\"a\""), "\"a\"", true),
            (Some("\"a\""), "W/\"a\"", true),
            (Some("\"b\", \"a\""), "\"a\"", true),
            (Some("*"), "\"a\"", true),
            (Some("\"b\""), "\"a\"", false),
            (Some("\"ab\""), "\"a\"", false),
        ];
        for (inm, etag, expected) in cases {
            let request = h(&inm.map(|v| ("if-none-match", v)).into_iter().collect::<Vec<_>>());
            assert_eq!(not_modified(&request, etag), expected, "{inm:?} against {etag}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = h(&[("connection", "close, x-secret"), ("x-secret", "1"), ("te", "trailers"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, h(&[("accept", "*/*")]));
    }

    #[test]
    fn forwarded_headers_describe_this_hop() {
        let headers = h(&[("host", "api.example.com"), ("cf-ray", "x"), ("cf-access-jwt-assertion", "forged"), ("spin-client-addr", "10.9.9.9:1"), ("spin-full-url", "http://x/"), ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-host", "forged")]);
        let out = for_upstream(headers, Some("192.0.2.7"), "https", "api.example.com");
        assert_eq!(
            out,
            h(&[("x-forwarded-for", "10.0.0.1, 192.0.2.7"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "api.example.com")])
        );
    }
}
