//! The per-bottle CA the intercepting sidecars mint leaf certificates with.
//!
//! ECDSA P-256, key written as SEC1 `EC PRIVATE KEY` PEM: pipelock parses the key with
//! `x509.ParseECPrivateKey` and rejects PKCS#8, so rcgen's PKCS#8 output is converted.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::meta;
use crate::contract::api::Bottle;
use crate::contract::config::layout;

/// How long a bottle CA is valid. Bottles are long-lived workspaces; rotating means deleting
/// the Secret, which the operator then re-creates (and rolls the Pod).
pub const VALIDITY: Duration = Duration::days(3650);

/// A freshly made CA.
#[derive(Clone)]
pub struct CaMaterial {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, SEC1 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Errors making or reading a CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen failed.
    #[error("generating the bottle CA: {0}")]
    Generate(#[from] rcgen::Error),
    /// Key conversion failed.
    #[error("converting the CA key to SEC1: {0}")]
    Key(String),
    /// The stored certificate is not PEM.
    #[error("the CA Secret's {file} is not a PEM certificate: {0}", file = layout::CA_CERT_FILE)]
    Pem(#[from] pem::PemError),
}

/// Makes a new CA for `namespace/name`.
pub fn generate(namespace: &str, name: &str) -> Result<CaMaterial, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bottle-operator");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("bottle {namespace}/{name} CA"));
    // Only leaf certificates are signed with it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: sec1_pem(&key.serialize_der())?,
    })
}

/// Re-encodes a PKCS#8 P-256 key as SEC1 with the named-curve parameters present: Go's
/// `x509.ParseECPrivateKey` (and OpenSSL) cannot tell the curve without them, and the
/// encoders that treat them as optional leave them out.
fn sec1_pem(pkcs8_der: &[u8]) -> Result<String, CaError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::AssociatedOid;
    use sec1::der::Encode;

    let secret =
        p256::SecretKey::from_pkcs8_der(pkcs8_der).map_err(|e| CaError::Key(e.to_string()))?;
    let private = secret.to_bytes();
    let public = secret.public_key().to_encoded_point(false);
    let key = sec1::EcPrivateKey {
        private_key: &private,
        parameters: Some(sec1::EcParameters::NamedCurve(p256::NistP256::OID)),
        public_key: Some(public.as_bytes()),
    };
    let der = key.to_der().map_err(|e| CaError::Key(e.to_string()))?;
    Ok(pem::encode_config(
        &pem::Pem::new("EC PRIVATE KEY", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// SHA-256 fingerprint of a PEM certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(cert_pem: &str) -> Result<String, CaError> {
    let der = pem::parse(cert_pem)?;
    let digest = Sha256::digest(der.contents());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The CA Secret object for a Bottle.
pub fn secret(b: &Bottle, ca: &CaMaterial) -> Secret {
    Secret {
        metadata: meta::owned(b, meta::ca_secret_name(b)),
        type_: Some("Opaque".into()),
        data: Some(
            [
                (
                    layout::CA_CERT_FILE.to_string(),
                    ByteString(ca.cert_pem.clone().into_bytes()),
                ),
                (
                    layout::CA_KEY_FILE.to_string(),
                    ByteString(ca.key_pem.clone().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}
