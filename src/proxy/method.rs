//! The client's request method, as the core decides by it. Methods are
//! case-sensitive (RFC 9110, section 9.1): `get` is not `GET`, and is
//! carried as [`Method::Other`], as any method the core has no rule for.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other(String),
}

impl Method {
    pub fn parse(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(other) => other,
        }
    }

    /// GET and HEAD: the methods that read (a page, an image, a cached answer).
    pub fn reads(&self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn a_method_is_its_exact_token() {
        for token in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "get"] {
            assert_eq!(Method::parse(token).as_str(), token);
        }
        assert_eq!(Method::parse("get"), Method::Other("get".into()), "methods are case-sensitive");
        assert!(Method::Head.reads() && !Method::Options.reads());
    }
}
