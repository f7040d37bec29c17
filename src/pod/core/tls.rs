//! Leaf certificates for intercepted hosts, minted on demand with the bottle CA and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// Upper bound of cached leaf configs; the cache is cleared when it is reached.
const CACHE_LIMIT: usize = 10_000;

/// The bottle CA, able to sign leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl Authority {
    /// Loads the CA certificate and its SEC1 (or PKCS#8) key from PEM files.
    pub fn load(cert_path: &str, key_path: &str) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert_path)
            .with_context(|| format!("reading CA certificate {cert_path}"))?;
        let key_pem = std::fs::read_to_string(key_path)
            .with_context(|| format!("reading CA key {key_path}"))?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// Builds the authority from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let secret = p256::SecretKey::from_sec1_pem(key_pem)
            .or_else(|_| p256::SecretKey::from_pkcs8_pem(key_pem))
            .context("the CA key must be a P-256 key in SEC1 or PKCS#8 PEM")?;
        let pkcs8 = secret.to_pkcs8_der().context("re-encoding the CA key")?;
        let key = KeyPair::try_from(pkcs8.as_bytes()).context("loading the CA key")?;
        let ca_der = CertificateDer::from(
            pem::parse(cert_pem)
                .context("the CA certificate is not PEM")?
                .into_contents(),
        );
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, key).context("the CA certificate cannot sign")?;
        Ok(Self {
            issuer,
            ca_der,
            cache: Mutex::default(),
        })
    }

    /// A TLS server config presenting a certificate for `host` (offering h2 and HTTP/1.1).
    pub fn server_config(&self, host: &str) -> anyhow::Result<Arc<ServerConfig>> {
        if let Some(c) = self.cache.lock().expect("cache lock").get(host) {
            return Ok(c.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_chain_to_the_bottle_ca_and_are_cached() {
        crate::pod::core::init_crypto();
        let ca = crate::operator::render::ca::generate("ns", "b").unwrap();
        let auth = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let a = auth.server_config("api.example.com").unwrap();
        let b = auth.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(
            &a,
            &auth.server_config("other.example.com").unwrap()
        ));
    }
}
