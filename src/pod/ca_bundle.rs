//! `bottle-sidecar ca-bundle`: the init container that builds the agent's trust store,
//! system roots plus the bottle CA, so every TLS client in the agent trusts the interceptors.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::core::atomic_file;
use crate::contract::config::layout;

/// Where Debian/Ubuntu, RHEL/Fedora and Alpine keep their system roots, in that order.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Writes `bottle-ca.crt` (the CA alone) and `ca-bundle.crt` (system roots + CA) into
/// `out_dir`. Each file is written under a temporary name and renamed, so a reader never sees
/// half a bundle. Without system roots the bundle holds just the CA (and says so).
pub fn build(ca: &Path, out_dir: &Path, system_bundles: &[PathBuf]) -> anyhow::Result<usize> {
    let ca_pem = std::fs::read_to_string(ca)
        .with_context(|| format!("reading bottle CA {}", ca.display()))?;
    if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} is not a PEM certificate", ca.display());
    }
    let roots = system_bundles
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    if roots.is_none() {
        tracing::warn!("no system CA bundle found; the agent will trust only the bottle CA");
    }
    let mut bundle = roots.unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str("# bottle CA (bottle-operator)\n");
    bundle.push_str(&ca_pem);
    // World-readable: every container's TLS stack reads them; they hold only public certificates.
    atomic_file::write(
        &out_dir.join(layout::TRUST_CA_FILE),
        ca_pem.as_bytes(),
        0o644,
    )?;
    atomic_file::write(
        &out_dir.join(layout::TRUST_BUNDLE_FILE),
        bundle.as_bytes(),
        0o644,
    )?;
    Ok(bundle.matches("-----BEGIN CERTIFICATE-----").count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_is_roots_then_ca_and_ca_file_is_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::operator::render::ca::generate("ns", "b").unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let roots = dir.path().join("roots.pem");
        let other = crate::operator::render::ca::generate("ns", "other").unwrap();
        std::fs::write(&roots, other.cert_pem.trim_end()).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();

        let n = build(&ca_path, &out, &[dir.path().join("missing.pem"), roots]).unwrap();
        assert_eq!(n, 2);
        let bundle = std::fs::read_to_string(out.join(layout::TRUST_BUNDLE_FILE)).unwrap();
        assert!(bundle.starts_with(other.cert_pem.trim_end()));
        assert!(bundle.ends_with(&ca.cert_pem));
        assert_eq!(
            std::fs::read_to_string(out.join(layout::TRUST_CA_FILE)).unwrap(),
            ca.cert_pem
        );
    }

    #[test]
    fn refuses_a_ca_that_is_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, "not a cert").unwrap();
        assert!(build(&ca_path, dir.path(), &[]).is_err());
    }
}
