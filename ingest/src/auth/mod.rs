//! Device authentication: a device proves itself with a JWT signed by one of the public keys its
//! registry entry holds. `credentials` parses and checks those keys, `jws` reads a token's header
//! and checks its signature with jsonwebtoken, `jwt` applies IoT Core's rules on top (algorithms,
//! keys, claims, every message), and `cache` remembers verified tokens so that the hot path
//! (every HTTP request, every MQTT connect) costs a hash and a map probe instead of a registry
//! read and a signature check. [`Authenticator`] ties them to the registry; the admin API
//! calls [`Authenticator::invalidate_device`] after every device change so a blocked or re-keyed
//! device is refused at once. Changes made elsewhere (another instance sharing the registry) are
//! seen within the freshness bound ([`Authenticator::with_freshness`]): a cached token is trusted
//! only that long before the device is read again.

pub mod cache;
pub mod credentials;
pub mod jws;
pub mod jwt;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use shared::{Code, DeviceId, DeviceName, DeviceRef, NumId, RegistryName};

use self::cache::{TokenCache, TokenKey};
use self::jwt::TokenError;
use crate::registry::{RegistryStore, StoreError};

/// The device a token proved, as the bridges need it. Not `PartialEq`: `attributes` is built
/// lazily, and two proofs of one device must not compare by whether it was built yet.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice {
    /// The registry holding the device.
    pub registry: RegistryName,
    /// The device id.
    pub id: DeviceId,
    /// The device's numeric id.
    pub num_id: NumId,
    /// The token's `exp` (Unix seconds); an MQTT session may be held to it.
    pub token_exp: i64,
    /// The gateway speaking for the device, when one is: its bookkeeping then records that
    /// gateway as `lastAccessedGatewayId`.
    pub via_gateway: Option<DeviceId>,
    /// The attributes of the device's messages, built by the bridge on first use and shared by
    /// every message sent with this token while it is cached.
    pub attributes: OnceLock<Arc<BTreeMap<String, String>>>,
}

impl AuthenticatedDevice {
    /// Whether this is the device `name` refers to, by id or numeric id.
    fn is(&self, name: &DeviceName) -> bool {
        let same_device = match &name.device {
            DeviceRef::Id(id) => *id == self.id,
            DeviceRef::Num(num) => *num == self.num_id,
        };
        same_device && name.registry == self.registry
    }
}

/// Why a device was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token itself is refused; the inner error says why.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No such device in the registry.
    #[error(
        "device `{device}` does not exist; check the project, region, registry and device id \
         the client connects with"
    )]
    UnknownDevice {
        /// The full device name asked for.
        device: String,
    },
    /// An operator blocked the device.
    #[error(
        "device `{device}` is blocked by an operator and refused until it is unblocked: \
         `ingest devices unblock {short} --registry {registry}` (with the project and region \
         set), or devices.patch with `blocked: false`"
    )]
    Blocked {
        /// The full device name.
        device: String,
        /// The device id or numeric id, as the request named it.
        short: String,
        /// The registry id.
        registry: String,
    },
    /// The registry could not be read.
    #[error("the device registry could not be read")]
    Store(#[source] StoreError),
}

impl AuthError {
    /// The canonical status a bridge answers with.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Token(_) => Code::Unauthenticated,
            AuthError::UnknownDevice { .. } => Code::NotFound,
            AuthError::Blocked { .. } => Code::PermissionDenied,
            AuthError::Store(StoreError::Backend(_)) => Code::Unavailable,
            AuthError::Store(_) => Code::Internal,
        }
    }

    /// A stable code for the failure: the token's reason, or the outcome's name.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Token(err) => err.reason(),
            AuthError::UnknownDevice { .. } => "unknown_device",
            AuthError::Blocked { .. } => "blocked",
            AuthError::Store(_) => "store_error",
        }
    }

    /// The reason a device reads in the answer's `google.rpc.ErrorInfo`.
    pub fn error_reason(&self) -> &'static str {
        match self {
            AuthError::Token(err) => err.error_reason(),
            AuthError::UnknownDevice { .. } => "UNKNOWN_DEVICE",
            AuthError::Blocked { .. } => "DEVICE_BLOCKED",
            AuthError::Store(StoreError::Backend(_)) => "REGISTRY_UNAVAILABLE",
            AuthError::Store(_) => "INTERNAL",
        }
    }

    /// Non-secret facts for the `ErrorInfo`'s metadata: the device named, never the token.
    pub fn error_metadata(&self) -> BTreeMap<String, String> {
        match self {
            AuthError::UnknownDevice { device } | AuthError::Blocked { device, .. } => {
                BTreeMap::from([("device".to_owned(), device.clone())])
            }
            AuthError::Token(_) | AuthError::Store(_) => BTreeMap::new(),
        }
    }
}

/// Checks device tokens against the registry, through the token cache. Cheap to clone; clones
/// share the cache.
#[derive(Clone, Debug)]
pub struct Authenticator {
    registry: Arc<dyn RegistryStore>,
    cache: Arc<TokenCache>,
    /// How long a verified token is trusted without reading the device again; `None` trusts it
    /// until it expires (fine when this process is the registry's only writer).
    freshness_secs: Option<i64>,
}

impl Authenticator {
    /// An authenticator reading devices from `registry`, caching up to `cache_capacity` tokens
    /// (0 turns the cache off).
    pub fn new(registry: Arc<dyn RegistryStore>, cache_capacity: usize) -> Self {
        Self {
            registry,
            cache: Arc::new(TokenCache::new(cache_capacity)),
            freshness_secs: None,
        }
    }

    /// Trusts a verified token for at most `secs` seconds before the device is read again, so a
    /// change made elsewhere (another instance, another process on the same store) takes effect
    /// here within that bound. 0 reads the device on every request.
    pub fn with_freshness(mut self, secs: u64) -> Self {
        self.freshness_secs = Some(i64::try_from(secs).unwrap_or(i64::MAX));
        self
    }

    /// The token cache, for metrics and tests.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Lets `device` in if `token` is valid for it at `now` (Unix seconds). The project the
    /// token's `aud` must name is the device's own. A cached token for this device skips the
    /// registry and the signature; anything else reads the device once.
    pub async fn authenticate(
        &self,
        device: &DeviceName,
        token: &str,
        now: i64,
    ) -> Result<Arc<AuthenticatedDevice>, AuthError> {
        let key = TokenKey::for_device(device, token);
        if let Some(hit) = self.cache.get(&key, now).filter(|hit| hit.is(device)) {
            return Ok(hit);
        }
        self.check_uncached(device, token, key, now)
            .await
            .inspect_err(|err| {
                tracing::debug!(device = %device, reason = err.reason(), "device refused");
            })
    }

    async fn check_uncached(
        &self,
        name: &DeviceName,
        token: &str,
        key: TokenKey,
        now: i64,
    ) -> Result<Arc<AuthenticatedDevice>, AuthError> {
        let ticket = self.cache.ticket();
        let device = self
            .registry
            .get_device(&name.registry, &name.device)
            .await
            .map_err(|err| match err {
                StoreError::NotFound(_) => AuthError::UnknownDevice {
                    device: name.to_string(),
                },
                other => AuthError::Store(other),
            })?;
        if device.blocked {
            return Err(AuthError::Blocked {
                device: name.to_string(),
                short: name.device.to_string(),
                registry: name.registry.registry.to_string(),
            });
        }
        let keys = jwt::device_keys(&device.credentials);
        let verified = jwt::verify(token, &name.registry.project, &keys, now)?;
        let authenticated = Arc::new(AuthenticatedDevice {
            registry: name.registry.clone(),
            id: device
                .id
                .or_else(|| id_of(name))
                .ok_or_else(|| incomplete("id"))?,
            num_id: device
                .num_id
                .map(NumId)
                .ok_or_else(|| incomplete("numId"))?,
            token_exp: verified.exp,
            via_gateway: None,
            attributes: OnceLock::new(),
        });
        let by_token = cache::valid_until(&verified);
        let valid_until = match self.freshness_secs {
            // Served through the last second of the bound, so `secs` whole seconds after `now`.
            Some(secs) => by_token.min(now.saturating_add(secs).saturating_sub(1)),
            None => by_token,
        };
        // A bound of 0 gives a `valid_until` before `now`, which the cache does not keep.
        self.cache
            .insert(ticket, key, Arc::clone(&authenticated), valid_until, now);
        Ok(authenticated)
    }

    /// Forgets every cached token of a device. Call after any change to it (credentials,
    /// blocked, deletion) so the next request re-reads it.
    pub fn invalidate_device(&self, registry: &RegistryName, device: &DeviceId) {
        self.cache.invalidate_device(registry, device);
    }
}

fn id_of(name: &DeviceName) -> Option<DeviceId> {
    match &name.device {
        DeviceRef::Id(id) => Some(id.clone()),
        DeviceRef::Num(_) => None,
    }
}

/// A store that returns a device without the ids it promises to fill in is broken.
fn incomplete(field: &str) -> AuthError {
    AuthError::Store(StoreError::Backend(
        format!("the registry returned a device without its {field}").into(),
    ))
}
