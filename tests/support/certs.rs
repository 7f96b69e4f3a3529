//! Certificates made in the test with rcgen, as a real deployment has them: a root CA, an
//! intermediate, and a server certificate for `localhost` and `127.0.0.1` (ECDSA P-256 or
//! RSA-2048), written as PEM files (the chain file holds the leaf, then the intermediate), and
//! an HTTPS client that trusts only the root.

// Shared by several integration test modules; not each of them uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use patina::policy::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    RsaKeySize, SanType,
};

/// The server's key type.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    Ecdsa,
    Rsa,
}

fn key_pair(key: Key) -> KeyPair {
    match key {
        Key::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        Key::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap(),
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    p
}

/// A PKI of its own: root → intermediate → server certificate.
pub struct Pki {
    /// The root certificate, PEM: what a client trusts.
    pub root_pem: String,
    /// Leaf then intermediate, PEM: what the server sends.
    pub chain_pem: String,
    /// The server's private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl Pki {
    /// A new root, intermediate and server certificate with a `key` key.
    pub fn new(name: &str, key: Key) -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params(&format!("{name} root")),
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        )
        .unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(&format!("{name} intermediate")),
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            &root,
        )
        .unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf.distinguished_name
            .push(DnType::CommonName, format!("{name} server"));
        let leaf_key = key_pair(key);
        let leaf_cert = leaf.signed_by(&leaf_key, &intermediate).unwrap();
        Pki {
            root_pem: root.pem(),
            chain_pem: format!("{}{}", leaf_cert.pem(), intermediate.pem()),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Write the chain and key as `{stem}.crt` / `{stem}.key` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, &self.chain_pem).unwrap();
        std::fs::write(&files.key, &self.key_pem).unwrap();
        files
    }

    /// Replace the files `files` names with this PKI's (as a renewal does).
    pub fn install(&self, files: &TlsFiles) {
        let tmp = |p: &PathBuf| PathBuf::from(format!("{}.new", p.display()));
        std::fs::write(tmp(&files.cert), &self.chain_pem).unwrap();
        std::fs::write(tmp(&files.key), &self.key_pem).unwrap();
        std::fs::rename(tmp(&files.cert), &files.cert).unwrap();
        std::fs::rename(tmp(&files.key), &files.key).unwrap();
    }

    /// An HTTPS client that trusts this PKI's root and nothing else.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.root_pem.as_bytes()).unwrap()])
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }
}
