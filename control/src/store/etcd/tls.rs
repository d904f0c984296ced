//! TLS for `etcds://`: the rustls client configuration built from `--store-ca` and the
//! optional `--store-cert`/`--store-key`, the name each endpoint's certificate is checked
//! against, and the hints that make a refused handshake readable.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3. The server certificate must chain to a
//! certificate of the CA bundle and name the endpoint's host (a DNS name, or an IP address
//! as an IP SAN); the system's roots are never used. PEM files are read once, at open, and
//! every failure names its file. This module does no I/O on sockets.

use crate::store::{SecurityError, StoreOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

/// The client configuration for `options` (already checked: a CA is there, and a client
/// certificate comes with its key).
pub(super) fn client_config(options: &StoreOptions) -> Result<Arc<ClientConfig>, SecurityError> {
    let ca = options.ca.as_deref().ok_or(SecurityError::NoCa)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in read_certificates(ca, "CA file")?.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|source| SecurityError::BadCa {
                path: ca.to_owned(),
                index: index + 1,
                source,
            })?;
    }
    // rustls 0.23.48 deprecates ring's provider because it has no post-quantum key
    // exchange; etcd 3.4 (Go 1.19) offers none either, and ring builds with no system
    // packages beyond a C compiler, which aws-lc-rs does not promise.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| SecurityError::TlsSetup { source })?
        .with_root_certificates(roots);
    let config = match (options.cert.as_deref(), options.key.as_deref()) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, "client certificate")?;
            let private = read_key(key)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|source| SecurityError::BadClientCert {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file `path` (at least one).
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SecurityError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(SecurityError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM certificate",
        });
    }
    Ok(certificates)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    const WHAT: &str = "client key";
    let pem = read(path, WHAT)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => SecurityError::Empty {
            what: WHAT,
            path: path.to_owned(),
            expected: "PEM private key",
        },
        source => SecurityError::Pem {
            what: WHAT,
            path: path.to_owned(),
            source,
        },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The name an endpoint's certificate must carry: the host of `HOST:PORT` (brackets of an
/// IPv6 address removed; an IP address is checked against the certificate's IP SANs).
pub(super) fn server_name(endpoint: &str) -> Option<ServerName<'static>> {
    let host = endpoint.rsplit_once(':').map(|(host, _)| host)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

/// What to add to a TLS failure's message so that the usual causes are named; `client_cert`
/// says whether a client certificate was offered.
pub(crate) fn tls_hint(error: &rustls::Error, client_cert: bool) -> &'static str {
    use rustls::{CertificateError, Error};
    match error {
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) if !client_cert => {
            " (etcd wants a client certificate: give --store-cert and --store-key)"
        }
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => " (etcd refused our client certificate: is it signed by etcd's --trusted-ca-file?)",
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => " (etcd's certificate is not signed by the --store-ca bundle)",
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => " (etcd's certificate does not name the host of the store URL)",
        Error::InvalidMessage(_) => " (is this endpoint serving TLS?)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(
            server_name("198.18.0.9:2379").unwrap().to_str(),
            "198.18.0.9"
        );
        assert_eq!(server_name("[fd00::1]:2379").unwrap().to_str(), "fd00::1");
        assert_eq!(
            server_name("etcd-1.example:2379").unwrap().to_str(),
            "etcd-1.example"
        );
        assert!(server_name("no-port").is_none());
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not-pem.txt");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let options = |ca: PathBuf| StoreOptions {
            ca: Some(ca),
            ..StoreOptions::default()
        };
        for (path, expect) in [
            (dir.path().join("missing.pem"), "cannot read the CA file"),
            (not_pem.clone(), "holds no PEM certificate"),
            (broken.clone(), "is not valid PEM"),
        ] {
            let err = client_config(&options(path.clone())).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expect), "{message}");
            assert!(message.contains(&*path.to_string_lossy()), "{message}");
        }
        // A key file without a key.
        assert!(matches!(
            read_key(&not_pem),
            Err(SecurityError::Empty {
                expected: "PEM private key",
                ..
            })
        ));
    }
}
