//! TLS material shared by both sides: reading PEM certificates, private keys and CA bundles, and
//! checking a configuration's TLS settings before anything listens.
//!
//! Errors name the file and what was wrong with it, never its contents (a key file's bytes are
//! a secret). The backend connector lives in `backend::tls`, the client listener's acceptor in
//! `client::tls`; both build their rustls configurations once, at start-up.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// A TLS setting that cannot be used. Every variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} '{path}': {reason}")]
    File {
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
}

/// The one crypto provider of the proxy: ring, because aws-lc-rs needs cmake and builds far
/// longer, for no difference that matters to a proxy.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file, in order (a leaf then its intermediates for a chain).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        setting,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(describe(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(describe(&e)))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no private key.
pub fn load_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        setting,
        path: path.display().to_string(),
        reason: match e {
            pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            other => describe(&other),
        },
    })
}

/// Trust anchors from a CA bundle file.
///
/// # Errors
/// As [`load_certs`], or a certificate that is not a usable CA.
pub fn load_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(setting, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            setting,
            path: path.display().to_string(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The operating system's trust store (`/etc/ssl/certs` on Debian; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override it), for clusters whose certificates come from a public CA.
///
/// # Errors
/// No usable certificate was found.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = match found.errors.first() {
            Some(error) => format!("no system CA certificate could be loaded ({error})"),
            None => {
                "no system CA certificate found (install ca-certificates, or set a CA file)".into()
            }
        };
        return Err(TlsError::Setting {
            setting: "backend.tls.ca_file",
            reason,
        });
    }
    Ok(roots)
}

/// A PEM error in words, without quoting the file (which may be a key).
fn describe(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "nothing usable in the file".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// Loads every TLS file the configuration names and builds both sides' rustls configurations,
/// as start-up would, so `--check-config` reports bad TLS material too.
///
/// # Errors
/// Every problem found, one line each.
pub fn check(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if config.backend_tls_enabled() {
        if let Err(e) = crate::backend::tls::BackendTls::new(&config.tls.backend, config.seeds()) {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = crate::client::tls::acceptor(&config.tls.client) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
