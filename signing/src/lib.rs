//! image-cache's signed URLs: `?expires=<unix seconds>&sig=<hex>`, where
//! `sig` is HMAC-SHA256 with the route's secret over
//! `<canonical path>\n<expires>`. A signature is what lets a request spend
//! generation credit (the `signed` policy) or regenerate a stored image
//! (`?redo`). The component checks them; `edgeproxy sign` makes them. A crate
//! of its own so that the host binary need not link the whole core.

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Expired,
    Wrong,
}

fn mac(secret: &[u8], path: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{path}\n{expires}").as_bytes());
    mac
}

/// `/800X600/Sloth/` as `/800x600/sloth`: the form a signature covers
/// (the route's prefix left out). `None` if it is not `/{size}/{slug}`.
pub fn canonical_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [size, slug] => Some(format!("/{}/{}", size.to_ascii_lowercase(), slug.to_ascii_lowercase())),
        _ => None,
    }
}

/// The hex signature of `path` (canonical: `/800x600/sloth`) until `expires`.
pub fn signature(secret: &[u8], path: &str, expires: u64) -> String {
    hex(&mac(secret, path, expires).finalize().into_bytes())
}

/// The query that signs `path` until `expires`.
pub fn query(secret: &[u8], path: &str, expires: u64) -> String {
    format!("expires={expires}&sig={}", signature(secret, path, expires))
}

/// Checks `expires` and `sig` (as they came in the query) in constant time.
pub fn verify(secret: &[u8], path: &str, expires: Option<&str>, sig: Option<&str>, now_seconds: u64) -> Result<(), SignatureError> {
    let (Some(expires), Some(sig)) = (expires, sig) else { return Err(SignatureError::Missing) };
    let expires: u64 = expires.parse().map_err(|_| SignatureError::Malformed)?;
    let sig = unhex(sig).ok_or(SignatureError::Malformed)?;
    mac(secret, path, expires).verify_slice(&sig).map_err(|_| SignatureError::Wrong)?;
    if expires < now_seconds {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_until_it_expires_and_only_for_its_path() {
        let sig = signature(b"secret", "/800x600/sloth", 2000);
        assert_eq!(verify(b"secret", "/800x600/sloth", Some("2000"), Some(&sig), 1999), Ok(()));
        assert_eq!(verify(b"secret", "/800x600/sloth", Some("2000"), Some(&sig), 2001), Err(SignatureError::Expired));
        assert_eq!(verify(b"secret", "/800x600/goat", Some("2000"), Some(&sig), 1999), Err(SignatureError::Wrong));
        assert_eq!(verify(b"other", "/800x600/sloth", Some("2000"), Some(&sig), 1999), Err(SignatureError::Wrong));
        assert_eq!(verify(b"secret", "/800x600/sloth", Some("2001"), Some(&sig), 1999), Err(SignatureError::Wrong));
        assert_eq!(verify(b"secret", "/800x600/sloth", None, Some(&sig), 1999), Err(SignatureError::Missing));
        assert_eq!(verify(b"secret", "/800x600/sloth", Some("x"), Some(&sig), 1999), Err(SignatureError::Malformed));
        assert_eq!(verify(b"secret", "/800x600/sloth", Some("2000"), Some("zz"), 1999), Err(SignatureError::Malformed));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_path_newline_expires() {
        // An independent computation:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"/16x16/a\n1",hashlib.sha256).hexdigest())'
        assert_eq!(signature(b"key", "/16x16/a", 1), "e3511c98cbfdaae26979ec369c6348658b7e0d89a1ca4507e6746a306ab26475");
    }
}
