//! HTTPS for `edgeproxy serve`: rustls with a certificate chain and key
//! read from PEM files, HTTP/2 or HTTP/1.1 as the client picks by ALPN.
//! SIGHUP reads the files again (a renewed certificate), and a pair that does
//! not load is refused with the old one kept, as the config document is.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN name a client that chose HTTP/2 negotiated.
pub const H2: &[u8] = b"h2";

pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// What new connections are accepted with; replaced by [`Tls::reload`].
    /// A connection keeps the configuration it was accepted with.
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let config = server_config(cert, key)?;
        Ok(Tls { cert: cert.to_owned(), key: key.to_owned(), config: RwLock::new(Arc::new(config)) })
    }

    /// Reads the certificate and key again. On an error the current pair stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write().expect("the TLS lock is never poisoned") = Arc::new(config);
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().expect("the TLS lock is never poisoned").clone())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read the certificate chain {} (PEM)", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read the private key {} (PEM: PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    // ring, the provider the outbound client (upstream.rs) uses, not a second one.
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| format!("the key {} does not fit the certificate {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![H2.to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
