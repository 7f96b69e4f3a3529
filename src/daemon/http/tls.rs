//! HTTPS: `[daemon] tls_cert` / `tls_key` (PEM; a certificate chain, leaf first; ECDSA, Ed25519
//! or RSA keys in PKCS#8, PKCS#1 or SEC1) served with rustls (HTTP/1.1 over TLS 1.2 and 1.3).
//!
//! The certificate sits behind a resolver whose key can be swapped: [`Tls::reload`] reads the
//! files again (on every policy reload and SIGHUP) and swaps them in for the next handshake,
//! without touching the listener or the connections already open. A file that is missing,
//! unreadable, not PEM, or a key that does not belong to the certificate is an error that
//! changes nothing: at start the daemon refuses to run (exit 2), at a reload the old certificate
//! stays and the reload is refused like an invalid policy (`config_invalid`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::policy::TlsFiles;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "read the TLS certificate {path} (daemon.tls_cert): {detail} — it must be a PEM file \
         (-----BEGIN CERTIFICATE-----, leaf first, then intermediates) readable by the daemon"
    )]
    Cert { path: PathBuf, detail: String },
    #[error(
        "read the TLS key {path} (daemon.tls_key): {detail} — it must be a PEM private key \
         (PKCS#8, RSA or EC) readable by the daemon"
    )]
    Key { path: PathBuf, detail: String },
    #[error(
        "the TLS key {key} does not fit the certificate {cert}: {detail} — point tls_key at \
         the key the certificate was issued for"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("set up TLS: {0}")]
    Config(String),
}

/// The server's certificate, swappable at runtime.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// HTTPS for the server: the acceptor handshakes use, and the resolver reloads swap.
#[derive(Clone)]
pub struct Tls {
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Read and check a certificate chain and its key.
fn load_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_err = |path: &Path, detail: String| TlsError::Cert {
        path: path.to_path_buf(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(&files.cert, pem_detail(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(&files.cert, pem_detail(e)))?;
    if chain.is_empty() {
        return Err(cert_err(&files.cert, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        detail: pem_detail(e),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            detail: e.to_string(),
        },
        other => TlsError::Key {
            path: files.key.clone(),
            detail: other.to_string(),
        },
    })
}

fn pem_detail(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM section of the expected kind in it".into(),
        Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

impl Tls {
    /// Read the files and build the acceptor.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let key = load_key(files, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Read the files again and serve them from the next handshake on. On an error the current
    /// certificate stays. Returns whether the certificate changed.
    pub fn reload(&self, files: &TlsFiles) -> Result<bool, TlsError> {
        let key = load_key(files, &provider())?;
        let mut current = self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let changed = current.cert != key.cert;
        *current = Arc::new(key);
        Ok(changed)
    }

    /// The first 16 hex digits of the leaf certificate's sha256, for logs.
    pub fn fingerprint(&self) -> String {
        let current = self
            .resolver
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        current
            .cert
            .first()
            .map(|c| hex::encode(&Sha256::digest(c.as_ref())[..8]))
            .unwrap_or_default()
    }

    pub(super) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}
