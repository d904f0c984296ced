//! [`StoreOptions`]: how vxtap checks who the store is and proves who it is to it, from the
//! daemon's `--store-ca`, `--store-cert`, `--store-key`, `--store-user` and password flags.
//!
//! This module owns the rules that tie those options to a URL (they apply to `etcds://`
//! only, a client certificate needs its key, a user needs a password) and the reading of
//! the password file. It never reads certificates (the etcd backend does, when it builds its
//! TLS configuration) and never lets a password out: [`Password`] has no `Display`, its
//! `Debug` is redacted, and no error carries it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A store password. Its `Debug` output is redacted and it has no `Display`, so it cannot
/// reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password given in memory (say, from `VXTAP_STORE_PASSWORD`).
    pub fn new(password: String) -> Password {
        Password(password)
    }

    /// Reads a password file: its whole content, less one trailing newline (`\n` or
    /// `\r\n`), as `echo secret > FILE` leaves it.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not UTF-8, or holds an empty password.
    pub fn from_file(path: &Path) -> Result<Password, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            what: "password file",
            path: path.to_owned(),
            source,
        })?;
        let password = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(SecurityError::EmptyPassword {
                path: path.to_owned(),
            });
        }
        Ok(Password(password.to_owned()))
    }

    /// The password itself, for the one request that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Security options of a store (all empty by default: a plain `etcd://` or `dir:` store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// `--store-ca`: PEM CA bundle that etcd's server certificate must chain to.
    pub ca: Option<PathBuf>,
    /// `--store-cert`: PEM client certificate (chain), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// `--store-key`: PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// `--store-user`: etcd user to authenticate as.
    pub user: Option<String>,
    /// The user's password (`--store-password-file` or `VXTAP_STORE_PASSWORD`).
    pub password: Option<Password>,
}

impl StoreOptions {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.given().is_empty()
    }

    /// The flags of the options that are set, for messages.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.ca.is_some() {
            given.push("--store-ca");
        }
        if self.cert.is_some() {
            given.push("--store-cert");
        }
        if self.key.is_some() {
            given.push("--store-key");
        }
        if self.user.is_some() {
            given.push("--store-user");
        }
        if self.password.is_some() {
            given.push("a store password");
        }
        given
    }

    /// Checks the options for a store that is not etcd (`dir:`): there must be none.
    pub(crate) fn check_not_etcd(&self) -> Result<(), SecurityError> {
        match self.given() {
            given if given.is_empty() => Ok(()),
            given => Err(SecurityError::NotEtcd {
                options: given.join(", "),
            }),
        }
    }

    /// Checks the options for an etcd URL, `tls` for `etcds://`.
    ///
    /// Plain `etcd://` takes none of them: a password or a client key sent over plain HTTP
    /// protects nothing, and a CA given for a connection that never checks one is surely a
    /// mistaken URL. `etcds://` needs a CA: vxtap does not fall back to the system's roots,
    /// since an etcd cluster's CA is almost always private.
    pub(crate) fn check_etcd(&self, tls: bool) -> Result<(), SecurityError> {
        if !tls {
            return match self.given() {
                given if given.is_empty() => Ok(()),
                given => Err(SecurityError::NeedsTls {
                    options: given.join(", "),
                }),
            };
        }
        if self.ca.is_none() {
            return Err(SecurityError::NoCa);
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(SecurityError::HalfClientCert {
                    missing: "--store-key",
                })
            }
            (None, Some(_)) => {
                return Err(SecurityError::HalfClientCert {
                    missing: "--store-cert",
                })
            }
            _ => {}
        }
        match (&self.user, &self.password) {
            (Some(user), _) if user.is_empty() => Err(SecurityError::EmptyUser),
            (Some(_), None) => Err(SecurityError::NoPassword),
            (None, Some(_)) => Err(SecurityError::PasswordWithoutUser),
            _ => Ok(()),
        }
    }
}

/// Why security options cannot be used. None of them carries a password.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Security options with a plain `etcd://` URL.
    #[error(
        "{options} need an etcds:// URL (etcd over TLS); etcd:// is plain HTTP, which would \
         send credentials in clear and check no certificate"
    )]
    NeedsTls {
        /// The options given, as flags.
        options: String,
    },
    /// Security options with a store that is not etcd.
    #[error("{options} apply to etcd stores (etcds://) only")]
    NotEtcd {
        /// The options given, as flags.
        options: String,
    },
    /// `etcds://` without a CA.
    #[error(
        "etcds:// needs --store-ca FILE, the PEM CA bundle that signed etcd's server \
         certificate (vxtap does not use the system's CA roots)"
    )]
    NoCa,
    /// A client certificate without its key, or a key without its certificate.
    #[error("--store-cert and --store-key go together: {missing} is missing")]
    HalfClientCert {
        /// The flag that is missing.
        missing: &'static str,
    },
    /// A user without a password.
    #[error("--store-user needs a password: --store-password-file FILE or VXTAP_STORE_PASSWORD")]
    NoPassword,
    /// A password without a user.
    #[error("a store password was given without --store-user")]
    PasswordWithoutUser,
    /// `--store-user ""`.
    #[error("--store-user is empty")]
    EmptyUser,
    /// Both a password file and the password variable.
    #[error(
        "give the store password once: --store-password-file or VXTAP_STORE_PASSWORD, not both"
    )]
    TwoPasswords,
    /// A password file with nothing in it.
    #[error("the password file {path} is empty")]
    EmptyPassword {
        /// The file.
        path: PathBuf,
    },
    /// A file that cannot be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file is (`CA file`, `client certificate`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that is not PEM, or whose PEM is broken.
    #[error("the {what} {path} is not valid PEM: {source}")]
    Pem {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser found.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file without what it should hold.
    #[error("the {what} {path} holds no {expected}")]
    Empty {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for (`PEM certificate`, `PEM private key`).
        expected: &'static str,
    },
    /// A CA certificate that cannot be a trust anchor.
    #[error("the CA file {path}: certificate {index} cannot be used: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Which certificate in it, from 1.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
    /// A client certificate and key that rustls refuses (they do not match, an unsupported
    /// key type).
    #[error("client certificate {cert} with key {key} cannot be used: {source}")]
    BadClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The TLS library refused its own configuration.
    #[error("cannot set up TLS: {source}")]
    TlsSetup {
        /// Why.
        source: rustls::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secure() -> StoreOptions {
        StoreOptions {
            ca: Some("ca.pem".into()),
            cert: Some("client.pem".into()),
            key: Some("client-key.pem".into()),
            user: Some("vxtap".to_owned()),
            password: Some(Password::new("s3cret".to_owned())),
        }
    }

    #[test]
    fn passwords_never_show() {
        let options = secure();
        let debug = format!("{options:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn password_files_lose_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            ("p w\n\n", "p w\n"),
        ] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(Password::from_file(&path).unwrap().expose(), expected);
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Password::from_file(&path),
            Err(SecurityError::EmptyPassword { .. })
        ));
        let missing = dir.path().join("missing");
        let err = Password::from_file(&missing).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn options_must_fit_the_url() {
        secure().check_etcd(true).unwrap();
        StoreOptions::default().check_etcd(false).unwrap();
        StoreOptions::default().check_not_etcd().unwrap();

        let err = secure().check_etcd(false).unwrap_err();
        assert!(matches!(err, SecurityError::NeedsTls { .. }));
        let message = err.to_string();
        assert!(message.contains("etcds://"), "{message}");
        assert!(message.contains("--store-ca"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let ca_only = StoreOptions {
            ca: Some("ca.pem".into()),
            ..StoreOptions::default()
        };
        assert!(matches!(
            ca_only.check_etcd(false),
            Err(SecurityError::NeedsTls { .. })
        ));
        assert!(matches!(
            secure().check_not_etcd(),
            Err(SecurityError::NotEtcd { .. })
        ));
        assert!(matches!(
            StoreOptions::default().check_etcd(true),
            Err(SecurityError::NoCa)
        ));
        let no_key = StoreOptions {
            key: None,
            ..secure()
        };
        assert!(matches!(
            no_key.check_etcd(true),
            Err(SecurityError::HalfClientCert {
                missing: "--store-key"
            })
        ));
        let no_cert = StoreOptions {
            cert: None,
            ..secure()
        };
        assert!(matches!(
            no_cert.check_etcd(true),
            Err(SecurityError::HalfClientCert {
                missing: "--store-cert"
            })
        ));
        let no_password = StoreOptions {
            password: None,
            ..secure()
        };
        assert!(matches!(
            no_password.check_etcd(true),
            Err(SecurityError::NoPassword)
        ));
        let no_user = StoreOptions {
            user: None,
            ..secure()
        };
        assert!(matches!(
            no_user.check_etcd(true),
            Err(SecurityError::PasswordWithoutUser)
        ));
        let empty_user = StoreOptions {
            user: Some(String::new()),
            ..secure()
        };
        assert!(matches!(
            empty_user.check_etcd(true),
            Err(SecurityError::EmptyUser)
        ));
        // TLS alone (server verified, no client identity) is allowed.
        let tls_only = StoreOptions {
            ca: Some("ca.pem".into()),
            ..StoreOptions::default()
        };
        tls_only.check_etcd(true).unwrap();
    }
}
