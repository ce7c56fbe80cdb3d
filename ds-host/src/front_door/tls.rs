//! TLS for the front door (rustls, with the `ring` provider): certificates
//! from files, or in dev mode a self-signed one for `localhost` and every
//! appspace's domain, generated (rcgen) and kept in the state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Errors loading or making certificates, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// rcgen could not make a certificate.
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its private key, PEM, as read from their
/// files (the supervisor reads them; the front door, which can open no
/// file, gets the bytes).
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The chain.
    pub certificate: String,
    /// The key.
    pub private_key: String,
}

/// Reads PEM certificate-chain and key files and checks that they make a
/// server configuration.
pub fn read_pem(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })
    };
    let pair = PemPair {
        certificate: read(cert)?,
        private_key: read(key)?,
    };
    from_pem(&pair, cert, key)?;
    Ok(pair)
}

/// A server configuration from a PEM chain and key; `cert` and `key`
/// name where they came from in errors.
pub fn from_pem(pair: &PemPair, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path, why: String| TlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.certificate.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| pem(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(pair.private_key.as_bytes())
        .map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes a new self-signed certificate for `names` and its key to
/// `dir/cert.pem` and `dir/key.pem` (the key owner-only before it holds
/// anything); returns the certificate's path. Dev mode's certificate, and
/// the Debian package's first one (`ds-host --self-signed-certificate`).
pub fn write_self_signed(dir: &Path, names: &[String]) -> Result<PathBuf, TlsError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let params = rcgen::CertificateParams::new(names.to_vec())?;
    let key_pair = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key_pair)?;
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create(true).truncate(true), 0o600);
    let mut file = options.open(&key).map_err(io("writing", &key))?;
    std::io::Write::write_all(&mut file, key_pair.serialize_pem().as_bytes())
        .map_err(io("writing", &key))?;
    std::fs::write(&cert, certificate.pem()).map_err(io("writing", &cert))?;
    Ok(cert)
}

/// The dev certificate in `dir` (`cert.pem`, `key.pem`) for `names`, made
/// on first use and again whenever the names change. Each appspace domain
/// is named explicitly: certificate verifiers refuse `*.localhost`, a
/// wildcard directly above a single label.
pub fn dev_certificate(dir: &Path, names: &[String]) -> Result<(PemPair, PathBuf), TlsError> {
    let (cert, key, listed) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("names.txt"),
    );
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&listed).unwrap_or_default();
    if !(cert.is_file() && key.is_file()) || current != wanted {
        write_self_signed(dir, names)?;
        std::fs::write(&listed, &wanted).map_err(|source| TlsError::Io {
            what: "writing",
            path: listed.clone(),
            source,
        })?;
    }
    Ok((read_pem(&cert, &key)?, cert))
}
