//! Rewriting what the hub and the Xet servers say, so that every URL a
//! client is handed leads back through the mirror: `Link` headers and the
//! JSON documents that carry URLs. `public` maps one upstream URL to its
//! public form, or `None` for a URL the mirror does not serve (left alone).

use serde_json::Value;

/// `Link` relations that only Xet clients use.
const XET_RELATIONS: &[&str] = &["xet-auth", "xet-reconstruction-info"];

/// A `Link` header (RFC 8288) with each target rewritten. With `drop_xet`,
/// the Xet relations are removed; `None` if nothing is left.
pub fn link(value: &str, public: &dyn Fn(&str) -> Option<String>, drop_xet: bool) -> Option<String> {
    let kept: Vec<String> = split_links(value)
        .into_iter()
        .filter_map(|entry| {
            let entry = entry.trim();
            let (target, params) = entry.strip_prefix('<')?.split_once('>')?;
            if drop_xet && relations(params).iter().any(|r| XET_RELATIONS.contains(&r.as_str())) {
                return None;
            }
            let target = public(target).unwrap_or_else(|| target.to_owned());
            Some(format!("<{target}>{params}"))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// Splits at the commas between link values: not inside `<...>` or quotes.
fn split_links(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut in_target, mut in_quotes) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quotes => in_target = true,
            '>' if !in_quotes => in_target = false,
            '"' if !in_target => in_quotes = !in_quotes,
            ',' if !in_target && !in_quotes => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// The lower-cased relation types of `; rel="a b"` parameters.
fn relations(params: &str) -> Vec<String> {
    params
        .split(';')
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("rel")).then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        })
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Which JSON document a response carries, and so what to rewrite in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Document {
    #[default]
    None,
    /// `/api/{type}s/{repo}/xet-{read,write}-token/{rev}`: `casUrl`.
    XetToken,
    /// CAS `/v1/reconstructions/{id}` (`fetch_info.*[].url`) and
    /// `/v2/reconstructions/{id}` (`xorbs.*[].url`).
    Reconstruction,
    /// Git LFS batch response: `objects[].actions.*.href`.
    LfsBatch,
    /// A tree or paths-info listing, served with Xet turned off: `xetHash` removed.
    ListingWithoutXet,
}

impl Document {
    /// Rewrites `body`; `None` if it is not the JSON expected (passed on as is).
    pub fn rewrite(self, body: &[u8], public: &dyn Fn(&str) -> Option<String>) -> Option<Vec<u8>> {
        let mut json: Value = serde_json::from_slice(body).ok()?;
        let mut url = |v: &mut Value| {
            if let Some(new) = v.as_str().and_then(public) {
                *v = Value::String(new);
            }
        };
        match self {
            Document::None => return None,
            Document::XetToken => json.get_mut("casUrl").into_iter().for_each(url),
            Document::Reconstruction => {
                for map in ["fetch_info", "xorbs"] {
                    let entries = json.get_mut(map).and_then(Value::as_object_mut).into_iter().flat_map(|m| m.values_mut());
                    entries.filter_map(Value::as_array_mut).flatten().filter_map(|e| e.get_mut("url")).for_each(&mut url);
                }
            }
            Document::LfsBatch => crate::proxy::git::rewrite_lfs_batch(&mut json, public),
            Document::ListingWithoutXet => {
                let entries: Box<dyn Iterator<Item = &mut Value>> = match &mut json {
                    Value::Array(items) => Box::new(items.iter_mut()),
                    other => Box::new(std::iter::once(other)),
                };
                entries.filter_map(Value::as_object_mut).for_each(|e| drop(e.remove("xetHash")));
            }
        }
        serde_json::to_vec(&json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(url: &str) -> Option<String> {
        url.strip_prefix("https://huggingface.co").map(|rest| format!("http://mirror{rest}")).or_else(|| {
            url.strip_prefix("https://").filter(|r| r.contains(".hf.co/")).map(|rest| format!("http://mirror/_cdn/{rest}"))
        })
    }

    #[test]
    fn link_targets_are_rewritten_and_others_kept() {
        let value = r#"<https://huggingface.co/api/models/a/b/tree/main?cursor=x,y&recursive=True>; rel="next", <https://example.org/x>; rel="other""#;
        assert_eq!(
            link(value, &public, false).unwrap(),
            r#"<http://mirror/api/models/a/b/tree/main?cursor=x,y&recursive=True>; rel="next", <https://example.org/x>; rel="other""#
        );
    }

    #[test]
    fn xet_links_are_dropped_when_xet_is_off() {
        let value = r#"<https://huggingface.co/api/models/a/xet-read-token/abc>; rel="xet-auth", <https://cas-server.xethub.hf.co/v1/reconstructions/h>; rel="xet-reconstruction-info""#;
        assert_eq!(
            link(value, &public, false).unwrap(),
            r#"<http://mirror/api/models/a/xet-read-token/abc>; rel="xet-auth", <http://mirror/_cdn/cas-server.xethub.hf.co/v1/reconstructions/h>; rel="xet-reconstruction-info""#
        );
        assert_eq!(link(value, &public, true), None);
    }

    #[test]
    fn cas_url_is_rewritten_in_the_xet_token() {
        let body = br#"{"accessToken":"t","exp":1,"casUrl":"https://cas-server.xethub.hf.co"}"#;
        let out: Value = serde_json::from_slice(&Document::XetToken.rewrite(body, &|u| public(&format!("{u}/")).map(|p| p.trim_end_matches('/').to_owned())).unwrap()).unwrap();
        assert_eq!(out["casUrl"], "http://mirror/_cdn/cas-server.xethub.hf.co");
        assert_eq!(out["accessToken"], "t");
    }

    #[test]
    fn every_url_of_both_reconstruction_shapes_is_rewritten() {
        let v1 = br#"{"terms":[],"fetch_info":{"h1":[{"range":{"start":0,"end":1},"url":"https://transfer.xethub.hf.co/xorb/default/h1?sig=1","url_range":{"start":0,"end":9}}]}}"#;
        let out: Value = serde_json::from_slice(&Document::Reconstruction.rewrite(v1, &public).unwrap()).unwrap();
        assert_eq!(out["fetch_info"]["h1"][0]["url"], "http://mirror/_cdn/transfer.xethub.hf.co/xorb/default/h1?sig=1");
        assert_eq!(out["fetch_info"]["h1"][0]["url_range"]["end"], 9);
        let v2 = br#"{"xorbs":{"h1":[{"url":"https://transfer.xethub.hf.co/xorbs/default/h1?X-Xet-Signed-Range=bytes%3D0-9","ranges":[]}],"h2":[{"url":"https://transfer.xethub.hf.co/b"}]}}"#;
        let out: Value = serde_json::from_slice(&Document::Reconstruction.rewrite(v2, &public).unwrap()).unwrap();
        assert_eq!(out["xorbs"]["h1"][0]["url"], "http://mirror/_cdn/transfer.xethub.hf.co/xorbs/default/h1?X-Xet-Signed-Range=bytes%3D0-9");
        assert_eq!(out["xorbs"]["h2"][0]["url"], "http://mirror/_cdn/transfer.xethub.hf.co/b");
    }

    #[test]
    fn lfs_batch_hrefs_are_rewritten_and_headers_kept() {
        let body = br#"{"transfer":"basic","objects":[{"oid":"a","size":1,"actions":{"download":{"href":"https://cdn-lfs.hf.co/x?jwt=1","header":{"k":"v"},"expires_in":60}}}]}"#;
        let out: Value = serde_json::from_slice(&Document::LfsBatch.rewrite(body, &public).unwrap()).unwrap();
        assert_eq!(out["objects"][0]["actions"]["download"]["href"], "http://mirror/_cdn/cdn-lfs.hf.co/x?jwt=1");
        assert_eq!(out["objects"][0]["actions"]["download"]["header"]["k"], "v");
    }

    #[test]
    fn listings_lose_xet_hashes_when_xet_is_off() {
        let body = br#"[{"type":"file","path":"w.bin","xetHash":"h","lfs":{"oid":"o","size":1}},{"type":"directory","path":"d"}]"#;
        let out: Value = serde_json::from_slice(&Document::ListingWithoutXet.rewrite(body, &public).unwrap()).unwrap();
        assert!(out[0].get("xetHash").is_none());
        assert_eq!(out[0]["lfs"]["oid"], "o");
    }

    #[test]
    fn a_body_that_is_not_json_is_left_alone() {
        assert_eq!(Document::XetToken.rewrite(b"<html>", &public), None);
    }
}
