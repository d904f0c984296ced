//! etcd user/password authentication through the gateway: `POST /v3/auth/authenticate`
//! trades the user's password for a token, which every later request carries in its
//! `Authorization` header (the watch and the lease keep-alives included).
//!
//! etcd's simple tokens expire after `--auth-token-ttl` without use (300 s by default), and
//! every change to users or roles makes older tokens stale ("revision of auth store is
//! old"). A request refused for either reason is sent once more with a new token; two
//! threads that find the same token stale authenticate once between them. A wrong password
//! is an error, never retried. This module owns the password and the token and never lets
//! either out: both have redacted `Debug` output and neither appears in an error.

use super::http::{Client, Replay};
use super::{json, status_error, CallError};
use crate::store::Password;
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// An etcd auth token (a bearer secret).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token(String);

impl Token {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `AuthenticateResponse`, the part we use.
#[derive(Default, Deserialize)]
#[serde(default)]
struct AuthenticateResponse {
    token: String,
}

/// The credentials of a store handle and the token they bought.
#[derive(Debug)]
pub(super) struct Auth {
    /// The etcd user.
    pub(super) user: String,
    password: Password,
    /// The current token; `None` until the first authentication.
    token: Mutex<Option<Token>>,
    /// How many tokens were obtained.
    count: AtomicU64,
}

impl Auth {
    pub(super) fn new(user: String, password: Password) -> Auth {
        Auth {
            user,
            password,
            token: Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// The current token, authenticating first if there is none yet.
    pub(super) fn token(&self, client: &Client) -> Result<Token, CallError> {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        let fresh = self.authenticate(client)?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// A new token in place of `stale`, unless another thread already replaced it.
    pub(super) fn renew(&self, client: &Client, stale: &Token) -> Result<Token, CallError> {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = token.as_ref().filter(|current| *current != stale) {
            return Ok(current.clone());
        }
        let fresh = self.authenticate(client)?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// How many tokens this handle obtained (1 after opening; more after renewals).
    pub(super) fn authentications(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// `POST /v3/auth/authenticate`.
    fn authenticate(&self, client: &Client) -> Result<Token, CallError> {
        let request = json!({ "name": self.user, "password": self.password.expose() });
        let response = client
            .post(
                "/v3/auth/authenticate",
                request.to_string().as_bytes(),
                None,
                // Authenticating twice only makes one more token.
                Replay::Safe,
            )
            .map_err(CallError::Http)?;
        if response.status != 200 {
            return Err(status_error(response.status, &response.body));
        }
        let answer: AuthenticateResponse =
            json::decode(&response.body).map_err(CallError::Decode)?;
        check_token(&answer.token)?;
        self.count.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(user = %self.user, "authenticated to etcd");
        Ok(Token(answer.token))
    }
}

/// A token goes into a header line: it must be visible ASCII, and there must be one.
fn check_token(token: &str) -> Result<(), CallError> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        // Its content is not shown: it may be a secret, even when malformed.
        Err(CallError::Decode(format!(
            "etcd answered the authentication with an unusable token ({} bytes)",
            token.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_fit_a_header() {
        check_token("cVDTeWTkFAGfzQwd.21").unwrap();
        for bad in ["", "a b", "a\r\nX-Evil: 1", "é"] {
            let err = check_token(bad).unwrap_err();
            assert!(!format!("{err:?}").contains("Evil"), "{err:?}");
        }
    }

    #[test]
    fn secrets_stay_redacted() {
        let auth = Auth::new("vxtap".to_owned(), Password::new("s3cret".to_owned()));
        *auth.token.lock().unwrap() = Some(Token("tok3n.1".to_owned()));
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("tok3n"),
            "{debug}"
        );
        assert!(debug.contains("vxtap"), "{debug}");
    }
}
