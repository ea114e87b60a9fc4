//! SASL/PLAIN authentication (KIP-43, KIP-152), as Kafka's SASL listeners
//! do it: a connection sends SaslHandshake naming the mechanism, then the
//! PLAIN token (RFC 4616: `authzid NUL user NUL password`) in a
//! SaslAuthenticate request (handshake v1) or as a bare size-prefixed frame
//! (handshake v0, the pre-KIP-152 framing). Until it has authenticated, a
//! connection is answered ApiVersions and the SASL requests only; any other
//! request closes it. A failed authentication is answered
//! SASL_AUTHENTICATION_FAILED (with Kafka's message) and closes the
//! connection.
//!
//! Passwords are compared in constant time by [`constant_time_eq`], a
//! plain loop (no crate): its time depends on the lengths only, never on
//! where the bytes differ. An unknown user is compared against a dummy
//! password, so that the answer's timing does not tell which users exist.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::{Error, Result};

/// The one mechanism offered: `PLAIN`.
pub(crate) const PLAIN: &str = "PLAIN";

/// Kafka's `sasl.server.max.receive.size` default (512 KiB): the largest
/// request a connection may send before it has authenticated.
pub(crate) const SASL_SERVER_MAX_RECEIVE_SIZE: usize = 512 * 1024;

/// Kafka's ILLEGAL_SASL_STATE error code.
const ILLEGAL_SASL_STATE: i16 = 34;
/// Kafka's UNSUPPORTED_SASL_MECHANISM error code.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's SASL_AUTHENTICATION_FAILED error code.
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// SASL/PLAIN's users and their passwords. Its `Debug` shows the user
/// names only.
#[derive(Clone, Default)]
pub(crate) struct SaslPlainUsers {
    users: BTreeMap<String, String>,
}

impl std::fmt::Debug for SaslPlainUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslPlainUsers")
            .field("users", &self.usernames())
            .finish_non_exhaustive()
    }
}

impl SaslPlainUsers {
    /// Adds `user` (or replaces its password).
    pub(crate) fn insert(&mut self, user: String, password: String) {
        self.users.insert(user, password);
    }

    /// Whether no user is configured: no SASL.
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user names, sorted.
    pub(crate) fn usernames(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    /// Every name and password can be sent in a PLAIN token.
    pub(crate) fn validate(&self) -> Result<()> {
        for (user, password) in &self.users {
            if user.is_empty() || user.contains('\0') {
                return Err(Error::InvalidConfig(format!(
                    "SASL/PLAIN user name {user:?} is empty or holds a NUL"
                )));
            }
            if password.is_empty() || password.contains('\0') {
                return Err(Error::InvalidConfig(format!(
                    "the SASL/PLAIN password of user {user:?} is empty or holds a NUL"
                )));
            }
        }
        Ok(())
    }

    /// Whether `password` is `user`'s, compared in constant time.
    fn check(&self, user: &str, password: &[u8]) -> bool {
        // An unknown user costs the same comparison, against a password
        // that a token cannot carry (it holds a NUL).
        const NOBODY: &[u8] = b"\0logbus: no such user\0";
        match self.users.get(user) {
            Some(expected) => constant_time_eq(expected.as_bytes(), password),
            None => {
                let _ = constant_time_eq(NOBODY, password);
                false
            }
        }
    }
}

/// Whether `a` equals `b`, in time that depends on their lengths only: every
/// byte of the longer one is visited, and differences are OR-ed together
/// without a branch on them.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Where one connection is in SASL authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    /// The listener has no SASL: every request is answered.
    Open,
    /// Waiting for SaslHandshake.
    Handshake,
    /// After SaslHandshake v1: waiting for SaslAuthenticate.
    Authenticate,
    /// After SaslHandshake v0: the next frame is the bare PLAIN token.
    RawToken,
    /// Authenticated as this user: every request is answered.
    Authenticated(String),
}

impl Session {
    /// A new connection's session: `Handshake` on a SASL listener.
    pub(crate) fn new(users: &SaslPlainUsers) -> Session {
        if users.is_empty() {
            Session::Open
        } else {
            Session::Handshake
        }
    }

    /// The principal, once authenticated (Kafka's `User:NAME`).
    pub(crate) fn principal(&self) -> Option<String> {
        match self {
            Session::Authenticated(user) => Some(format!("User:{user}")),
            _ => None,
        }
    }

    /// Whether the next frame is a bare SASL token (handshake v0).
    pub(crate) fn expects_raw_token(&self) -> bool {
        *self == Session::RawToken
    }

    /// The largest frame accepted now: Kafka's
    /// `sasl.server.max.receive.size` until authenticated, and
    /// `socket_request_max_bytes` from then on.
    pub(crate) fn max_receive(&self, socket_request_max_bytes: usize) -> usize {
        match self {
            Session::Open | Session::Authenticated(_) => socket_request_max_bytes,
            _ => socket_request_max_bytes.min(SASL_SERVER_MAX_RECEIVE_SIZE),
        }
    }

    /// Whether a request of `api` may be answered now; the reason to close
    /// the connection otherwise.
    pub(crate) fn admits(&self, api: ApiKey) -> std::result::Result<(), String> {
        let admitted = match self {
            Session::Open | Session::Authenticated(_) => true,
            Session::Handshake => matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake),
            Session::Authenticate => matches!(api, ApiKey::ApiVersions | ApiKey::SaslAuthenticate),
            Session::RawToken => false,
        };
        if admitted {
            Ok(())
        } else {
            let expected = match self {
                Session::Authenticate => "SaslAuthenticate",
                _ => "SaslHandshake",
            };
            Err(format!(
                "{api:?} before SASL authentication (expected {expected})"
            ))
        }
    }
}

/// Answers SaslHandshake at `version`: the response, and the reason to
/// close the connection after it, if any.
pub(crate) fn handshake(
    session: &mut Session,
    version: i16,
    request: &SaslHandshakeRequest,
) -> (SaslHandshakeResponse, Option<String>) {
    let mut response = SaslHandshakeResponse::default();
    if *session != Session::Handshake {
        // A listener without SASL, or a connection that authenticated
        // already: as Kafka's request handler, ILLEGAL_SASL_STATE.
        response.error_code = ILLEGAL_SASL_STATE;
        return (response, None);
    }
    response.mechanisms = vec![StrBytes::from_static_str(PLAIN)];
    if request.mechanism.as_str() != PLAIN {
        response.error_code = UNSUPPORTED_SASL_MECHANISM;
        let reason = format!(
            "SASL mechanism {:?} is not enabled (only {PLAIN} is)",
            request.mechanism.as_str()
        );
        return (response, Some(reason));
    }
    *session = if version == 0 {
        Session::RawToken
    } else {
        Session::Authenticate
    };
    (response, None)
}

/// Answers SaslAuthenticate: the response, and the reason to close the
/// connection after it, if any (a failed authentication).
pub(crate) fn authenticate(
    users: &SaslPlainUsers,
    session: &mut Session,
    request: &SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, Option<String>) {
    let mut response = SaslAuthenticateResponse::default();
    if *session != Session::Authenticate {
        response.error_code = ILLEGAL_SASL_STATE;
        response.error_message = Some(StrBytes::from_static_str(
            "SaslAuthenticate request received after successful authentication or without SASL",
        ));
        return (response, None);
    }
    match plain(users, &request.auth_bytes) {
        Ok(user) => {
            tracing::debug!(%user, "logbus listener: SASL/PLAIN authenticated");
            *session = Session::Authenticated(user);
            (response, None)
        }
        Err((user, message)) => {
            response.error_code = SASL_AUTHENTICATION_FAILED;
            response.error_message = Some(StrBytes::from_static_str(message));
            (response, Some(failure_reason(user.as_deref(), message)))
        }
    }
}

/// Checks the bare PLAIN token of a handshake v0 connection: `Ok` (answer
/// an empty frame) or the reason to close the connection.
pub(crate) fn raw_token(
    users: &SaslPlainUsers,
    session: &mut Session,
    token: &[u8],
) -> std::result::Result<(), String> {
    match plain(users, token) {
        Ok(user) => {
            tracing::debug!(%user, "logbus listener: SASL/PLAIN authenticated (v0 framing)");
            *session = Session::Authenticated(user);
            Ok(())
        }
        Err((user, message)) => Err(failure_reason(user.as_deref(), message)),
    }
}

fn failure_reason(user: Option<&str>, message: &str) -> String {
    match user {
        Some(user) => format!("SASL/PLAIN authentication of user {user:?} failed: {message}"),
        None => format!("SASL/PLAIN authentication failed: {message}"),
    }
}

/// Checks a PLAIN token (RFC 4616): the authenticated user, or the user
/// named (if it could be read) and Kafka's message for the failure.
fn plain(
    users: &SaslPlainUsers,
    token: &[u8],
) -> std::result::Result<String, (Option<String>, &'static str)> {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((None, "Invalid SASL/PLAIN response: expected 3 tokens"));
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return Err((None, "Invalid SASL/PLAIN response: not UTF-8"));
    };
    if user.is_empty() {
        return Err((None, "Authentication failed: username not specified"));
    }
    let named = Some(user.to_string());
    if password.is_empty() {
        return Err((named, "Authentication failed: password not specified"));
    }
    if !users.check(user, password) {
        return Err((named, "Authentication failed: Invalid username or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err((
            named,
            "Authentication failed: Client requested an authorization id that is different from username",
        ));
    }
    Ok(user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> SaslPlainUsers {
        let mut users = SaslPlainUsers::default();
        users.insert("alice".into(), "alice-secret".into());
        users.insert("bob".into(), "b".into());
        users
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        // A shorter one padded with zeros is still different.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
    }

    #[test]
    fn plain_tokens_are_checked_as_kafka_does() {
        let users = users();
        assert_eq!(plain(&users, b"\0alice\0alice-secret"), Ok("alice".into()));
        assert_eq!(
            plain(&users, b"alice\0alice\0alice-secret"),
            Ok("alice".into())
        );
        assert_eq!(plain(&users, b"\0bob\0b"), Ok("bob".into()));
        let failed = |token: &[u8]| plain(&users, token).unwrap_err().1;
        assert_eq!(
            failed(b"\0alice\0wrong"),
            "Authentication failed: Invalid username or password"
        );
        assert_eq!(
            failed(b"\0alice\0b"),
            "Authentication failed: Invalid username or password"
        );
        assert_eq!(
            failed(b"\0mallory\0alice-secret"),
            "Authentication failed: Invalid username or password"
        );
        assert_eq!(
            failed(b"\0\0alice-secret"),
            "Authentication failed: username not specified"
        );
        assert_eq!(
            failed(b"\0alice\0"),
            "Authentication failed: password not specified"
        );
        assert!(failed(b"bob\0alice\0alice-secret").contains("authorization id"));
        assert!(failed(b"alice-secret").contains("expected 3 tokens"));
        assert!(failed(b"\0alice\0alice-secret\0").contains("expected 3 tokens"));
        assert!(failed(b"\0\xff\0x").contains("UTF-8"));
    }

    #[test]
    fn a_session_admits_only_the_sasl_apis_until_authenticated() {
        let users = users();
        let mut session = Session::new(&users);
        assert!(session.admits(ApiKey::ApiVersions).is_ok());
        assert!(session.admits(ApiKey::SaslHandshake).is_ok());
        assert!(session.admits(ApiKey::SaslAuthenticate).is_err());
        assert!(session.admits(ApiKey::Metadata).is_err());
        assert_eq!(session.max_receive(1 << 30), SASL_SERVER_MAX_RECEIVE_SIZE);
        let mut request = SaslHandshakeRequest::default();
        request.mechanism = StrBytes::from_static_str("PLAIN");
        let (response, close) = handshake(&mut session, 1, &request);
        assert_eq!((response.error_code, close), (0, None));
        assert!(session.admits(ApiKey::SaslHandshake).is_err());
        assert!(session.admits(ApiKey::Produce).is_err());
        let mut auth = SaslAuthenticateRequest::default();
        auth.auth_bytes = bytes::Bytes::from_static(b"\0alice\0alice-secret");
        let (response, close) = authenticate(&users, &mut session, &auth);
        assert_eq!((response.error_code, close), (0, None));
        assert_eq!(session.principal().as_deref(), Some("User:alice"));
        assert!(session.admits(ApiKey::Produce).is_ok());
        assert_eq!(session.max_receive(1 << 30), 1 << 30);
        // Again: ILLEGAL_SASL_STATE, and the connection stays.
        let (response, close) = handshake(&mut session, 1, &request);
        assert_eq!((response.error_code, close), (ILLEGAL_SASL_STATE, None));
        let (response, close) = authenticate(&users, &mut session, &auth);
        assert_eq!((response.error_code, close), (ILLEGAL_SASL_STATE, None));
        assert_eq!(session.principal().as_deref(), Some("User:alice"));
    }

    #[test]
    fn the_v0_handshake_takes_a_bare_token() {
        let users = users();
        let mut session = Session::new(&users);
        let mut request = SaslHandshakeRequest::default();
        request.mechanism = StrBytes::from_static_str("PLAIN");
        let _ = handshake(&mut session, 0, &request);
        assert!(session.expects_raw_token());
        assert!(raw_token(&users, &mut session.clone(), b"\0alice\0nope").is_err());
        assert!(raw_token(&users, &mut session, b"\0alice\0alice-secret").is_ok());
        assert_eq!(session, Session::Authenticated("alice".into()));
    }

    #[test]
    fn users_that_plain_cannot_carry_are_refused_and_passwords_never_shown() {
        let mut bad = SaslPlainUsers::default();
        bad.insert("".into(), "x".into());
        assert!(bad.validate().is_err());
        let mut bad = SaslPlainUsers::default();
        bad.insert("a\0b".into(), "x".into());
        assert!(bad.validate().is_err());
        let mut bad = SaslPlainUsers::default();
        bad.insert("a".into(), "".into());
        assert!(bad.validate().is_err());
        assert!(users().validate().is_ok());
        let shown = format!("{:?}", users());
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
