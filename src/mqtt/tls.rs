//! TLS for `mqtts://`: builds the rustls client configuration ourselves (ring provider, roots from
//! a CA file or the OS store, optional client certificate), so rumqttc never asks for a process-wide
//! crypto provider and the old rustls-pemfile path in rumqttc is not used.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS problems, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} `{path}`: {reason}")]
    File {
        /// Config key naming the file.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls rejected the configuration.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS options of the broker connection.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) to trust; the OS store when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key for the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// Skip server certificate verification. Only for lab brokers with throw-away certificates.
    pub insecure: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration.
pub(crate) fn client_config(s: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if s.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &s.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| file_error("mqtt.tls.ca_file", path, e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("mqtt.tls.ca_file", path, e.to_string()))?;
                if certs.is_empty() {
                    return Err(file_error("mqtt.tls.ca_file", path, "no certificate in the file".into()));
                }
                for c in certs {
                    roots.add(c)?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for c in native.certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error("mqtt.tls.client_cert_file", cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error("mqtt.tls.client_cert_file", cert, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error("mqtt.tls.client_key_file", key, e.to_string()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn file_error(key: &'static str, path: &std::path::Path, reason: String) -> TlsError {
    TlsError::File { key, path: path.to_owned(), reason }
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_build_with_the_os_roots() {
        assert!(client_config(&TlsSettings::default()).is_ok());
    }

    #[test]
    fn insecure_settings_build_without_roots() {
        let s = TlsSettings { insecure: true, ..Default::default() };
        assert!(client_config(&s).is_ok());
    }

    #[test]
    fn a_missing_ca_file_names_the_key_and_path() {
        let s = TlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = client_config(&s).unwrap_err().to_string();
        assert!(e.contains("mqtt.tls.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
