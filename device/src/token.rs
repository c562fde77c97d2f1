//! The device token: a compact JWS over IoT Core's three claims (`iat`, `exp`, `aud` = the
//! project id), signed with the device's own key, exactly as IoT Core's samples made them with
//! PyJWT — header `{"alg":…,"typ":"JWT"}`, URL-safe base64 without padding, ES256 signatures as
//! the 64-byte `r||s` pair. Time is a parameter: the caller passes `now`. [`TokenSource`] keeps
//! the long-running agent's token fresh.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use shared::jwt::{Claims, MAX_TOKEN_LIFETIME_SECS};

use crate::clock::Clock;
use crate::keys::{DeviceKey, KeyError};

/// The lifetime IoT Core's samples gave their tokens, and ours by default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The lifetime is zero or longer than the service accepts.
    #[error(
        "a token lifetime must be more than 0 s and at most 24 h ({MAX_TOKEN_LIFETIME_SECS} s); \
         got {secs} s"
    )]
    Lifetime {
        /// The lifetime asked for, in seconds.
        secs: u64,
    },
    /// The key could not sign.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A token's lifetime (`exp - iat`), checked to be within the service's 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(u64);

impl Lifetime {
    /// Checks `duration` against the 24-hour limit; sub-second parts are dropped.
    pub fn new(duration: Duration) -> Result<Self, TokenError> {
        let secs = duration.as_secs();
        if secs == 0 || secs > MAX_TOKEN_LIFETIME_SECS.unsigned_abs() {
            return Err(TokenError::Lifetime { secs });
        }
        Ok(Self(secs))
    }

    /// In seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }
}

impl Default for Lifetime {
    fn default() -> Self {
        Self(DEFAULT_LIFETIME.as_secs())
    }
}

#[derive(Serialize)]
struct Header {
    alg: &'static str,
    typ: &'static str,
}

/// The claims a token for `project` issued at `now` (Unix seconds) carries.
pub fn claims(project: &str, now: i64, lifetime: Lifetime) -> Claims {
    // At most 24 h by construction, so the cast cannot wrap.
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(MAX_TOKEN_LIFETIME_SECS);
    Claims {
        iat: now,
        exp: now.saturating_add(lifetime),
        aud: project.to_owned(),
    }
}

/// Signs a token for `project` with `key`, issued at `now` (Unix seconds).
pub fn sign(
    key: &DeviceKey,
    project: &str,
    now: i64,
    lifetime: Lifetime,
) -> Result<String, TokenError> {
    let header = Header {
        alg: key.algorithm().as_str(),
        typ: "JWT",
    };
    let claims = claims(project, now, lifetime);
    let signing_input = format!("{}.{}", segment(&header)?, segment(&claims)?);
    let signature = key.sign(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn segment(value: &impl Serialize) -> Result<String, TokenError> {
    let json = serde_json::to_vec(value).map_err(|err| KeyError::Encode {
        what: "token",
        detail: err.to_string(),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The agent's current token: signed on first use, renewed once 75 % of its lifetime has passed
/// (so no request ever leaves with a token about to expire), and at once when the server says
/// it has expired. Clones share the token.
#[derive(Debug, Clone)]
pub struct TokenSource {
    key: Arc<DeviceKey>,
    project: String,
    lifetime: Lifetime,
    clock: Clock,
    current: Arc<Mutex<Option<(String, i64)>>>,
}

impl TokenSource {
    /// Tokens for `project`, signed with `key`, on `clock`.
    pub fn new(key: DeviceKey, project: &str, lifetime: Lifetime, clock: Clock) -> Self {
        Self {
            key: Arc::new(key),
            project: project.to_owned(),
            lifetime,
            clock,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// A token good for at least a quarter of its lifetime more.
    pub fn token(&self) -> Result<String, TokenError> {
        let now = self.clock.now();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((token, issued)) = current.as_ref()
            && !self.due(*issued, now)
        {
            return Ok(token.clone());
        }
        let token = sign(&self.key, &self.project, now, self.lifetime)?;
        *current = Some((token.clone(), now));
        Ok(token)
    }

    /// A token signed now, which becomes the current one: a new MQTT connection gets the whole
    /// lifetime, since the bridge closes it once the token it connected with expires.
    pub fn fresh(&self) -> Result<String, TokenError> {
        let now = self.clock.now();
        let token = sign(&self.key, &self.project, now, self.lifetime)?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Some((token.clone(), now));
        Ok(token)
    }

    /// How long each token is valid.
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// Forgets `token` (the server refused it as expired), so the next call signs anew.
    pub fn expired(&self, token: &str) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(t, _)| t == token) {
            *current = None;
        }
    }

    /// Renewal is due at 75 % of the lifetime, or when the clock went back before `issued`.
    fn due(&self, issued: i64, now: i64) -> bool {
        let renew_after = i64::try_from(self.lifetime.as_secs() * 3 / 4).unwrap_or(i64::MAX);
        now < issued || now - issued >= renew_after
    }
}

#[cfg(test)]
mod tests;
