//! Where a request goes and how an upstream URL looks to the client: the
//! upstream allow-list and the two addressing schemes.
//!
//! - **Subdomains** (the original Worker's scheme): `hf.<root>` is the hub and
//!   `<label>.<root>` is a CDN host, the label being the host name with each
//!   `.` written `---` and a trailing `.hf.co` implied
//!   (`cas-bridge---xethub` is `cas-bridge.xethub.hf.co`,
//!   `cdn-lfs---huggingface---co` is `cdn-lfs.huggingface.co`).
//! - **Path prefix**, for a single host (`*.workers.dev`, `localhost`):
//!   `/_cdn/<host>/<path>` is `https://<host>/<path>`; every other path is the hub.
//!   HuggingfaceProxy's `/redirect_to_<host>/<path>` is accepted for it, so
//!   that its users' URLs keep working; answers use `/_cdn/`.
//!
//! The scheme is read off each request; URLs in responses are rewritten in
//! the scheme that request used. Nothing about the domain is configured.

/// The path prefix of the single-host scheme.
pub const CDN_PREFIX: &str = "/_cdn/";
/// HuggingfaceProxy's path prefix for the same, accepted as an alias.
const ORIGINAL_CDN_PREFIX: &str = "/redirect_to_";
/// The subdomain label of the hub in the subdomain scheme.
const HUB_LABEL: &str = "hf";
/// A `.` inside a subdomain label.
const DOT: &str = "---";
/// Implied at the end of a decoded label unless the label names an allowed host itself.
const IMPLIED_SUFFIX: &str = ".hf.co";
/// Names of the hub: URLs on these hosts come back to the mirror's hub address.
pub const HUB_HOSTS: &[&str] = &["huggingface.co", "hf.co"];

/// An upstream the mirror may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Hub,
    /// A CDN, Xet or configured extra host, lower-case.
    Host(String),
}

/// Upstream host names the mirror may reach besides the hub: exact names
/// and `*.suffix` patterns. Everything else is refused, so the mirror is
/// never an open relay.
pub struct AllowList<'a>(pub &'a [String]);

impl AllowList<'_> {
    pub fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|pattern| crate::proxy::host_matches(pattern, host))
    }
}

/// How the client addressed the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `hf.<root>` and `<label>.<root>`; `root` keeps the port.
    Subdomain { root: String },
    /// One host; CDN hosts under [`CDN_PREFIX`].
    PathPrefix,
}

/// The mirror as this client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `http` or `https`.
    pub proto: String,
    /// The authority the client used.
    pub authority: String,
    pub scheme: Scheme,
}

/// Reads the upstream and its path off a request's authority and path.
/// Returns `Err(host)` for a host outside the allow-list.
pub fn route(proto: &str, authority: &str, path: &str, allowed: &AllowList) -> Result<(Public, Upstream, String), String> {
    let public = |scheme| Public { proto: proto.to_owned(), authority: authority.to_owned(), scheme };
    if let Some(rest) = path.strip_prefix(CDN_PREFIX).or_else(|| path.strip_prefix(ORIGINAL_CDN_PREFIX)) {
        let (host, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = upstream_named(host, allowed)?;
        return Ok((public(Scheme::PathPrefix), upstream, format!("/{tail}")));
    }
    if let Some((label, root)) = authority.split_once('.') {
        if label == HUB_LABEL {
            return Ok((public(Scheme::Subdomain { root: root.to_owned() }), Upstream::Hub, path.to_owned()));
        }
        if label.contains(DOT) {
            let upstream = upstream_named(&decode_label(label, allowed), allowed)?;
            return Ok((public(Scheme::Subdomain { root: root.to_owned() }), upstream, path.to_owned()));
        }
    }
    Ok((public(Scheme::PathPrefix), Upstream::Hub, path.to_owned()))
}

fn upstream_named(host: &str, allowed: &AllowList) -> Result<Upstream, String> {
    let host = host.to_ascii_lowercase();
    // A host name and nothing else: no port, userinfo or escapes that a URL
    // parser could read differently from the allow-list.
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(host);
    }
    if HUB_HOSTS.contains(&host.as_str()) {
        Ok(Upstream::Hub)
    } else if allowed.allows(&host) {
        Ok(Upstream::Host(host))
    } else {
        Err(host)
    }
}

impl Public {
    /// The public base URL (no trailing `/`) under which `upstream`'s paths appear.
    pub fn base(&self, upstream: &Upstream) -> String {
        let Public { proto, authority, scheme } = self;
        match (scheme, upstream) {
            (Scheme::PathPrefix, Upstream::Hub) => format!("{proto}://{authority}"),
            (Scheme::PathPrefix, Upstream::Host(host)) => format!("{proto}://{authority}{CDN_PREFIX}{host}"),
            (Scheme::Subdomain { root }, Upstream::Hub) => format!("{proto}://{HUB_LABEL}.{root}"),
            (Scheme::Subdomain { root }, Upstream::Host(host)) => match encode_label(host) {
                Some(label) => format!("{proto}://{label}.{root}"),
                // Not expressible as one DNS label: the hub host's path prefix still works.
                None => format!("{proto}://{HUB_LABEL}.{root}{CDN_PREFIX}{host}"),
            },
        }
    }
}

impl Public {
    /// The path under which `upstream`'s paths appear on its public host:
    /// empty, or `/_cdn/<host>`.
    pub fn path_prefix(&self, upstream: &Upstream) -> String {
        let base = self.base(upstream);
        let authority_and_path = base.split_once("://").map_or("", |(_, rest)| rest);
        authority_and_path.find('/').map_or_else(String::new, |i| authority_and_path[i..].to_owned())
    }
}

/// `cas-bridge.xethub.hf.co` -> `cas-bridge---xethub`; `cdn-lfs.hf.co` ->
/// `cdn-lfs---hf---co` (a label without `---` would read as an ordinary
/// subdomain). `None` if the result is no valid DNS label.
fn encode_label(host: &str) -> Option<String> {
    if host.contains(DOT) {
        return None;
    }
    let shortened = host.strip_suffix(IMPLIED_SUFFIX).filter(|stem| stem.contains('.'));
    let label = shortened.unwrap_or(host).replace('.', DOT);
    (label.len() <= 63).then_some(label)
}

fn decode_label(label: &str, allowed: &AllowList) -> String {
    let name = label.replace(DOT, ".");
    let names_a_hub_host = HUB_HOSTS.iter().any(|hub| name == *hub || name.ends_with(&format!(".{hub}")));
    if names_a_hub_host || allowed.allows(&name) {
        name
    } else {
        format!("{name}{IMPLIED_SUFFIX}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        ["*.hf.co", "cdn-lfs.huggingface.co", "cdn-lfs-us-1.huggingface.co", "cdn.example.org"].map(String::from).to_vec()
    }

    #[test]
    fn allow_list_matches_exact_names_and_subdomains_of_wildcards() {
        let list = defaults();
        let allowed = AllowList(&list);
        assert!(allowed.allows("cas-bridge.xethub.hf.co"));
        assert!(allowed.allows("CDN-LFS.huggingface.co"));
        assert!(!allowed.allows("hf.co"), "the wildcard needs a subdomain");
        assert!(!allowed.allows("evilhf.co"));
        assert!(!allowed.allows("hf.co.evil.net"));
        assert!(!allowed.allows("datasets-server.huggingface.co"));
    }

    #[test]
    fn path_prefix_scheme_names_the_cdn_host_in_the_path() {
        let list = defaults();
        let (public, upstream, path) = route("https", "mirror.workers.dev", "/_cdn/cdn-lfs.hf.co/repos/a/b?x", &AllowList(&list)).unwrap();
        assert_eq!(public.scheme, Scheme::PathPrefix);
        assert_eq!(upstream, Upstream::Host("cdn-lfs.hf.co".into()));
        assert_eq!(path, "/repos/a/b?x");
        let (_, upstream, path) = route("https", "mirror.workers.dev", "/gpt2/resolve/main/x", &AllowList(&list)).unwrap();
        assert_eq!((upstream, path.as_str()), (Upstream::Hub, "/gpt2/resolve/main/x"));
        assert_eq!(route("https", "m.dev", "/_cdn/evil.net/x", &AllowList(&list)).unwrap_err(), "evil.net");
        for tricky in ["/_cdn/evil.net%3f.hf.co/x", "/_cdn/evil.net@x.hf.co/", "/_cdn/x.hf.co:8443/", "/_cdn//x"] {
            assert!(route("https", "m.dev", tricky, &AllowList(&list)).is_err(), "{tricky}");
        }
    }

    #[test]
    fn huggingface_proxys_redirect_to_prefix_is_the_path_prefix_scheme() {
        let list = vec!["*.hf.co".to_owned()];
        let (public, upstream, path) = route("https", "m.dev", "/redirect_to_cdn-lfs.hf.co/repos/a/b?x", &AllowList(&list)).unwrap();
        assert_eq!((public.scheme, upstream, path.as_str()), (Scheme::PathPrefix, Upstream::Host("cdn-lfs.hf.co".into()), "/repos/a/b?x"));
        assert_eq!(route("https", "m.dev", "/redirect_to_huggingface.co/api/models", &AllowList(&list)).unwrap().1, Upstream::Hub);
        assert_eq!(route("https", "m.dev", "/redirect_to_evil.net/x", &AllowList(&list)).unwrap_err(), "evil.net", "no open relay by the alias either");
    }

    #[test]
    fn subdomain_scheme_reads_the_root_off_the_hub_or_a_cdn_label() {
        let list = defaults();
        let allowed = AllowList(&list);
        let (public, upstream, _) = route("https", "hf.example.com:8443", "/api/models/gpt2", &allowed).unwrap();
        assert_eq!(public.scheme, Scheme::Subdomain { root: "example.com:8443".into() });
        assert_eq!(upstream, Upstream::Hub);
        for (label, host) in [
            ("cas-bridge---xethub", "cas-bridge.xethub.hf.co"),
            ("cdn-lfs---hf---co", "cdn-lfs.hf.co"),
            ("cdn-lfs---huggingface---co", "cdn-lfs.huggingface.co"),
            ("cdn---example---org", "cdn.example.org"),
        ] {
            let (_, upstream, _) = route("https", &format!("{label}.example.com"), "/x", &allowed).unwrap();
            assert_eq!(upstream, Upstream::Host(host.into()), "{label}");
        }
        assert!(route("https", "evil---com.example.com", "/", &allowed).is_ok_and(|(_, u, _)| u == Upstream::Host("evil.com.hf.co".into())), "unknown names stay under hf.co");
    }

    #[test]
    fn a_host_without_a_known_label_is_the_single_host_scheme() {
        let list = defaults();
        for authority in ["127.0.0.1:8787", "localhost:3000", "mirror.user.workers.dev", "[::1]:80"] {
            let (public, upstream, _) = route("http", authority, "/", &AllowList(&list)).unwrap();
            assert_eq!((public.scheme, upstream), (Scheme::PathPrefix, Upstream::Hub), "{authority}");
        }
    }

    #[test]
    fn labels_round_trip_through_public_urls() {
        let list = defaults();
        let allowed = AllowList(&list);
        let public = Public { proto: "https".into(), authority: "hf.example.com".into(), scheme: Scheme::Subdomain { root: "example.com".into() } };
        for host in ["cas-bridge.xethub.hf.co", "cdn-lfs.hf.co", "us.aws.cdn.hf.co", "cdn-lfs-us-1.huggingface.co", "cdn.example.org"] {
            let base = public.base(&Upstream::Host(host.into()));
            let authority = base.strip_prefix("https://").unwrap();
            let (_, upstream, _) = route("https", authority, "/", &allowed).unwrap();
            assert_eq!(upstream, Upstream::Host(host.into()), "{base}");
        }
        assert_eq!(public.base(&Upstream::Hub), "https://hf.example.com");
        assert_eq!(public.base(&Upstream::Host("cas-bridge.xethub.hf.co".into())), "https://cas-bridge---xethub.example.com");
    }

    #[test]
    fn a_host_too_long_for_a_label_falls_back_to_the_path_prefix() {
        let public = Public { proto: "https".into(), authority: "hf.example.com".into(), scheme: Scheme::Subdomain { root: "example.com".into() } };
        let host = format!("{}.cdn.hf.co", "a".repeat(60));
        assert_eq!(public.base(&Upstream::Host(host.clone())), format!("https://hf.example.com/_cdn/{host}"));
    }
}
