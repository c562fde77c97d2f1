//! Device token (JWT) verification, by the rules in `protocol.md`: RS256 or ES256 only, the
//! signature checked against the device's unexpired credentials before any claim is trusted, then
//! `aud` (the project id), `iat` and `exp` with 10 minutes of clock skew and at most 24 hours of
//! lifetime. The JWS layer (the header's `alg`, the signature and its check, ES256's `r||s`) is
//! jsonwebtoken's, in [`super::jws`]; the rules and the messages are here, so that nothing in the
//! header (`kid`, `jku`, `x5u`) can steer verification (the key is always one of the device's,
//! never one the token names) and every refusal can say exactly what to fix. Segments are
//! base64url without padding, as JWS defines them. Time is a parameter (`now`, Unix seconds),
//! never read from the clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde::Deserialize;
use serde_json::Value;
use shared::ProjectId;
use shared::jwt::{Algorithm, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS};
use shared::resources::DeviceCredential;

use super::credentials::{KeyError, VerifyingKey, parse_credential};
use super::jws;

/// The longest token considered; real device tokens are under 1 KiB, and refusing huge ones
/// early bounds the work an unauthenticated client can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// One of a device's keys, with the instant (Unix seconds) from which it no longer verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    /// The parsed public key.
    pub key: VerifyingKey,
    /// The credential's `expirationTime`, if it has one.
    pub expires_at: Option<i64>,
}

impl DeviceKey {
    /// Parses a stored credential.
    pub fn from_credential(credential: &DeviceCredential) -> Result<Self, KeyError> {
        Ok(Self {
            key: parse_credential(credential.public_key.format, &credential.public_key.key)?,
            expires_at: credential.expiration_time.map(|t| t.as_second()),
        })
    }

    /// Whether the credential is still in force at `now`.
    fn usable_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|expiry| now < expiry)
    }
}

/// The keys of a device's stored credentials. A credential that no longer parses (stored by an
/// older version, or edited in the database) is skipped with a warning: the device's other keys
/// still work, and a panic here would take the bridge down.
pub fn device_keys(credentials: &[DeviceCredential]) -> Vec<DeviceKey> {
    let parse = |(index, credential): (usize, &DeviceCredential)| {
        DeviceKey::from_credential(credential)
            .inspect_err(|err| {
                tracing::warn!(
                    credential = index,
                    format = %credential.public_key.format,
                    reason = err.reason(),
                    "skipping a stored device credential that does not parse: {err}"
                );
            })
            .ok()
    };
    credentials.iter().enumerate().filter_map(parse).collect()
}

/// What a verified token proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The algorithm it was signed with.
    pub alg: Algorithm,
    /// Issued at, Unix seconds (a fractional `iat` rounded up).
    pub iat: i64,
    /// Expires at, Unix seconds (a fractional `exp` rounded down).
    pub exp: i64,
    /// When the credential that verified it expires, if ever: the token is worth nothing after
    /// that, so a cache must not keep it longer.
    pub key_expires_at: Option<i64>,
}

/// Why a device token is refused. Every message names the cause and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url segments of JSON, or too long.
    #[error("the token is not a well-formed JWT: {detail}")]
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
    /// The header's `alg` is not RS256 or ES256.
    #[error("the token is signed with {alg}; IoT Core accepts only RS256 and ES256")]
    UnsupportedAlgorithm {
        /// The `alg` found, quoted and shortened.
        alg: String,
    },
    /// `iat`, `exp` or `aud` is absent (or not usable as one).
    #[error(
        "the token's `{claim}` claim {problem}; device tokens need `iat` and `exp` (Unix seconds) \
         and `aud` (the project id)"
    )]
    MissingClaim {
        /// The claim.
        claim: &'static str,
        /// "is missing" or what is wrong with it.
        problem: &'static str,
    },
    /// `aud` is not the device's project id.
    #[error(
        "the token's audience (`aud`) is {found}, but the device belongs to project `{expected}`; \
         sign tokens with `aud` set to the project id"
    )]
    WrongAudience {
        /// The device's project id.
        expected: String,
        /// The audience found, quoted and shortened.
        found: String,
    },
    /// `exp` is more than the allowed skew in the past.
    #[error(
        "the token expired {ago} ago (exp {exp_time}) — is the device clock right? Tokens are \
         accepted until 10 min after `exp`; sign a fresh one",
        ago = human(*ago_secs),
        exp_time = timestamp(*exp)
    )]
    Expired {
        /// `exp`, Unix seconds.
        exp: i64,
        /// How long ago `exp` was.
        ago_secs: i64,
    },
    /// `iat` is more than the allowed skew in the future.
    #[error(
        "the token was issued {ahead} in the future (iat {iat_time}): the device clock looks \
         ahead by {ahead}; set it right (NTP) and sign a fresh token",
        ahead = human(*ahead_secs),
        iat_time = timestamp(*iat)
    )]
    IssuedInFuture {
        /// `iat`, Unix seconds.
        iat: i64,
        /// How far ahead `iat` is.
        ahead_secs: i64,
    },
    /// `exp` is not after `iat`, or the two are more than 24 hours apart.
    #[error("{}", lifetime_message(*iat, *exp))]
    BadLifetime {
        /// `iat`, Unix seconds.
        iat: i64,
        /// `exp`, Unix seconds.
        exp: i64,
    },
    /// The device has no credential to check the token against.
    #[error(
        "the device has no usable credentials; add its public key (devices.patch `credentials`) \
         before it connects"
    )]
    NoCredentials,
    /// No unexpired credential of the device verifies the signature.
    #[error("the token's signature is not valid for any of the device's credentials: {hint}")]
    BadSignature {
        /// The likeliest cause, when one can be told.
        hint: String,
    },
    /// Only a credential that has expired verifies the signature.
    #[error(
        "the token is signed with a key whose credential expired at {time}; register a new key \
         or extend that credential's `expirationTime`",
        time = timestamp(*expired_at)
    )]
    CredentialExpired {
        /// The credential's `expirationTime`, Unix seconds.
        expired_at: i64,
    },
}

impl TokenError {
    /// A stable code for the failure, as the test vectors name it.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed { .. } => "malformed",
            TokenError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            TokenError::MissingClaim { .. } => "missing_claim",
            TokenError::WrongAudience { .. } => "wrong_audience",
            TokenError::Expired { .. } => "expired",
            TokenError::IssuedInFuture { .. } => "issued_in_future",
            TokenError::BadLifetime { .. } => "bad_lifetime",
            TokenError::NoCredentials => "no_credentials",
            TokenError::BadSignature { .. } => "bad_signature",
            TokenError::CredentialExpired { .. } => "credential_expired",
        }
    }

    /// The reason a device reads in the answer's `google.rpc.ErrorInfo`.
    pub fn error_reason(&self) -> &'static str {
        match self {
            TokenError::Malformed { .. } => "MALFORMED_TOKEN",
            TokenError::UnsupportedAlgorithm { .. } => "UNSUPPORTED_ALGORITHM",
            TokenError::MissingClaim { .. } => "MISSING_CLAIM",
            TokenError::WrongAudience { .. } => "WRONG_AUDIENCE",
            TokenError::Expired { .. } => "TOKEN_EXPIRED",
            TokenError::IssuedInFuture { .. } => "TOKEN_ISSUED_IN_FUTURE",
            TokenError::BadLifetime { .. } => "BAD_TOKEN_LIFETIME",
            TokenError::NoCredentials => "NO_CREDENTIALS",
            TokenError::BadSignature { .. } => "BAD_SIGNATURE",
            TokenError::CredentialExpired { .. } => "CREDENTIAL_EXPIRED",
        }
    }

    fn malformed(detail: impl Into<String>) -> Self {
        TokenError::Malformed {
            detail: detail.into(),
        }
    }
}

/// Verifies a device token for `project` against the device's `keys` at `now` (Unix seconds).
///
/// Order: shape and `alg` first (cheap, and no key is touched for a token that can never pass),
/// then the signature, and only then the claims, so nothing an unauthenticated sender wrote is
/// reported back as if it meant something.
pub fn verify(
    token: &str,
    project: &ProjectId,
    keys: &[DeviceKey],
    now: i64,
) -> Result<VerifiedToken, TokenError> {
    let parts = split(token)?;
    let alg = header_algorithm(token, parts.header)?;
    let claims = decode_segment("claims", parts.claims)?;
    let signature = decode_segment("signature", parts.signature)?;
    let key_expires_at = check_signature(alg, &parts, &signature, keys, now)?;
    let (iat, exp) = check_claims(&claims, project, now)?;
    Ok(VerifiedToken {
        alg,
        iat,
        exp,
        key_expires_at,
    })
}

/// The three segments of a compact JWS.
struct Parts<'a> {
    header: &'a str,
    claims: &'a str,
    signature: &'a str,
    /// `header.claims`, the bytes the signature covers.
    signing_input: &'a [u8],
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.is_empty() {
        return Err(TokenError::malformed("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::malformed(format!(
            "it is {} bytes long, more than any device token ({MAX_TOKEN_LEN} at most)",
            token.len()
        )));
    }
    let count = token.split('.').count();
    let shape = token
        .rsplit_once('.')
        .and_then(|(input, signature)| Some((input, input.split_once('.')?, signature)));
    match shape {
        Some((signing_input, (header, claims), signature)) if count == 3 => Ok(Parts {
            header,
            claims,
            signature,
            signing_input: signing_input.as_bytes(),
        }),
        _ => Err(TokenError::malformed(format!(
            "a JWT has 3 dot-separated parts (header.claims.signature); this one has {count}"
        ))),
    }
}

fn decode_segment(name: &str, segment: &str) -> Result<Vec<u8>, TokenError> {
    BASE64URL.decode(segment).map_err(|_| {
        TokenError::malformed(if segment.ends_with('=') {
            format!(
                "the {name} part ends in base64 padding (`=`), which JWS does not allow; encode \
                 each part as base64url without padding"
            )
        } else {
            format!("the {name} part is not base64url")
        })
    })
}

/// Parses a JSON object into `T`. Serde would also take a JSON array for a struct; a JWT
/// segment must be an object, so anything else is refused up front.
fn json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

/// The token's algorithm, as jsonwebtoken reads the header; only RS256 and ES256 pass.
fn header_algorithm(token: &str, segment: &str) -> Result<Algorithm, TokenError> {
    match jws::header(token) {
        Ok(header) => {
            jws::device_algorithm(header.alg).ok_or_else(|| TokenError::UnsupportedAlgorithm {
                alg: quoted(&format!("{:?}", header.alg)),
            })
        }
        Err(err) => Err(header_refusal(segment, &err)),
    }
}

/// Why jsonwebtoken refused the header, in words that say what to fix: the header's own shape
/// first, an `alg` jsonwebtoken does not know (`none`, `es256`) as unsupported, and only then
/// jsonwebtoken's reason.
fn header_refusal(segment: &str, err: &jsonwebtoken::errors::Error) -> TokenError {
    let bytes = match decode_segment("header", segment) {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let Some(header) = json_object::<Header>(&bytes) else {
        return TokenError::malformed("the header is not a JSON object with a string `alg`");
    };
    let Some(alg) = header.alg else {
        return TokenError::malformed("the header has no `alg`");
    };
    if Algorithm::from_header(&alg).is_none() {
        return TokenError::UnsupportedAlgorithm { alg: quoted(&alg) };
    }
    TokenError::malformed(format!(
        "the header is not a valid JWS header ({})",
        quoted(&err.to_string())
    ))
}

/// Tries the unexpired keys of the token's algorithm, then (only to explain a refusal) the
/// expired ones. Returns the verifying credential's expiry.
fn check_signature(
    alg: Algorithm,
    parts: &Parts<'_>,
    signature: &[u8],
    keys: &[DeviceKey],
    now: i64,
) -> Result<Option<i64>, TokenError> {
    if keys.is_empty() {
        return Err(TokenError::NoCredentials);
    }
    let verifies = |k: &&DeviceKey| {
        k.key.algorithm() == alg
            && jws::signature_verifies(&k.key, alg, parts.signature, parts.signing_input)
    };
    if let Some(key) = keys.iter().filter(|k| k.usable_at(now)).find(verifies) {
        return Ok(key.expires_at);
    }
    let expired = keys.iter().filter(|k| !k.usable_at(now)).find(verifies);
    if let Some(expired_at) = expired.and_then(|k| k.expires_at) {
        return Err(TokenError::CredentialExpired { expired_at });
    }
    Err(TokenError::BadSignature {
        hint: signature_hint(alg, signature, keys, now),
    })
}

fn signature_hint(alg: Algorithm, signature: &[u8], keys: &[DeviceKey], now: i64) -> String {
    if !keys.iter().any(|k| k.key.algorithm() == alg) {
        let held = match alg {
            Algorithm::RS256 => "EC (ES256)",
            Algorithm::ES256 => "RSA (RS256)",
        };
        return format!(
            "the token is {} but the device holds only {held} keys; sign with the matching private key",
            alg.as_str()
        );
    }
    if alg == Algorithm::ES256 && signature.len() != 64 {
        return format!(
            "an ES256 signature must be the 64-byte r||s form of JWS, this one is {} bytes \
             (a DER-encoded signature is the usual mistake)",
            signature.len()
        );
    }
    if !keys.iter().any(|k| k.usable_at(now)) {
        return "every credential of the device has expired".to_owned();
    }
    "it was not made by the private key of any of the device's credentials, or the token was \
     changed after signing"
        .to_owned()
}

/// The claims the rules read. A duplicated one fails to parse, so no two readers can disagree
/// on which copy counts. The others are read into `_others` only to be checked: skipped, serde
/// would let through text no other JSON reader accepts (bytes that are not UTF-8, lone UTF-16
/// surrogates), and RFC 7519 wants the whole claims set valid.
#[derive(Deserialize)]
struct Claims {
    iat: Option<Value>,
    exp: Option<Value>,
    aud: Option<Value>,
    #[serde(flatten)]
    _others: serde_json::Map<String, Value>,
}

/// Checks the claims in the order that gives the most useful message, returning `(iat, exp)`.
fn check_claims(bytes: &[u8], project: &ProjectId, now: i64) -> Result<(i64, i64), TokenError> {
    let claims: Claims = json_object(bytes)
        .ok_or_else(|| TokenError::malformed("the claims are not a JSON object"))?;
    let iat = numeric_date("iat", claims.iat.as_ref(), f64::ceil)?;
    let exp = numeric_date("exp", claims.exp.as_ref(), f64::floor)?;
    check_audience(claims.aud.as_ref(), project)?;
    if now > exp.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::Expired {
            exp,
            ago_secs: now.saturating_sub(exp),
        });
    }
    if iat > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::IssuedInFuture {
            iat,
            ahead_secs: iat.saturating_sub(now),
        });
    }
    if exp <= iat || exp.saturating_sub(iat) > MAX_TOKEN_LIFETIME_SECS {
        return Err(TokenError::BadLifetime { iat, exp });
    }
    Ok((iat, exp))
}

/// A NumericDate: an integer, or a float rounded with `round` toward the stricter side (`iat`
/// up, `exp` down). Out-of-range values saturate and then fail the time rules.
fn numeric_date(
    claim: &'static str,
    value: Option<&Value>,
    round: fn(f64) -> f64,
) -> Result<i64, TokenError> {
    let problem = match value {
        None => "is missing",
        Some(Value::Number(n)) => {
            // `as` saturates, and serde_json never yields NaN or infinity.
            return Ok(n
                .as_i64()
                .unwrap_or_else(|| round(n.as_f64().unwrap_or(0.0)) as i64));
        }
        Some(_) => "is not a number (it must be Unix seconds)",
    };
    Err(TokenError::MissingClaim { claim, problem })
}

fn check_audience(aud: Option<&Value>, project: &ProjectId) -> Result<(), TokenError> {
    let found = match aud {
        None => {
            return Err(TokenError::MissingClaim {
                claim: "aud",
                problem: "is missing",
            });
        }
        Some(Value::String(aud)) if aud == project.as_str() => return Ok(()),
        Some(Value::String(aud)) => quoted(aud),
        Some(Value::Array(_)) => "a list (it must be the project id as a single string)".to_owned(),
        Some(_) => "not a string (it must be the project id)".to_owned(),
    };
    Err(TokenError::WrongAudience {
        expected: project.to_string(),
        found,
    })
}

/// Device-supplied text for a message: backquoted, at most 64 characters, control characters
/// escaped, so a hostile token cannot flood or forge log lines.
fn quoted(text: &str) -> String {
    let short: String = text.chars().take(64).collect();
    let cut = if short.len() < text.len() { "…" } else { "" };
    format!("`{}{cut}`", short.escape_debug())
}

fn lifetime_message(iat: i64, exp: i64) -> String {
    if exp <= iat {
        format!(
            "the token's `exp` ({}) is not after its `iat` ({}); set exp to iat plus the lifetime",
            timestamp(exp),
            timestamp(iat)
        )
    } else {
        format!(
            "the token lives {} (exp - iat); the longest allowed is 24 h — sign tokens that live \
             at most a day",
            human(exp.saturating_sub(iat))
        )
    }
}

/// A duration in the unit a person would use for it.
fn human(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..120 => format!("{secs} s"),
        120..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// Unix seconds as RFC 3339, or as the bare number when out of range.
fn timestamp(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{secs} (Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;
    use shared::PublicKeyFormat;

    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn project() -> ProjectId {
        ProjectId::parse("demo-project").unwrap()
    }

    struct Ec {
        pair: EcdsaKeyPair,
        key: VerifyingKey,
    }

    /// Generated keys (not fixtures), so each run also checks key parsing end to end.
    fn ec(index: usize) -> &'static Ec {
        static KEYS: OnceLock<Vec<Ec>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            (0..2)
                .map(|_| {
                    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
                    let der = pair.public_key().as_der().unwrap();
                    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
                    let pem =
                        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
                    let key = parse_credential(PublicKeyFormat::Es256Pem, &pem).unwrap();
                    Ec { pair, key }
                })
                .collect()
        });
        &keys[index]
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64URL.encode(bytes)
    }

    fn sign_with(header: &Value, claims: &Value, pair: &EcdsaKeyPair) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn es256(claims: Value) -> String {
        sign_with(&json!({"alg": "ES256", "typ": "JWT"}), &claims, &ec(0).pair)
    }

    /// A token whose claims segment is exactly `claims`, JSON or not.
    fn es256_raw(claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(br#"{"alg":"ES256"}"#), b64(claims));
        let sig = ec(0)
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn good_claims() -> Value {
        json!({"iat": NOW - 60, "exp": NOW + 3600, "aud": "demo-project"})
    }

    fn keys() -> Vec<DeviceKey> {
        vec![DeviceKey {
            key: ec(0).key.clone(),
            expires_at: None,
        }]
    }

    fn check(token: &str) -> Result<VerifiedToken, TokenError> {
        verify(token, &project(), &keys(), NOW)
    }

    fn reason(token: &str) -> &'static str {
        check(token).unwrap_err().reason()
    }

    #[test]
    fn a_token_signed_by_a_registered_key_is_accepted() {
        let ok = check(&es256(good_claims())).unwrap();
        assert_eq!(
            (ok.alg, ok.iat, ok.exp),
            (Algorithm::ES256, NOW - 60, NOW + 3600)
        );
        assert_eq!(ok.key_expires_at, None);
    }

    #[test]
    fn padded_base64_is_refused_naming_the_padding() {
        // JWS segments are base64url without padding; a device that pads is told so, even
        // when the padded text is what it signed.
        let pad = |bytes: &[u8]| {
            let part = b64(bytes);
            format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4))
        };
        let header = pad(br#"{"alg":"ES256"}"#);
        let input = format!("{header}.{}", pad(good_claims().to_string().as_bytes()));
        assert!(input.contains('='), "the test needs a padded segment");
        let sig = ec(0)
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        let err = check(&format!("{input}.{}", pad(sig.as_ref()))).unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("padding"), "{err}");
    }

    #[test]
    fn a_header_jsonwebtoken_refuses_is_malformed_with_its_reason() {
        // `kid` must be a string in a JWS header.
        let header = json!({"alg": "ES256", "kid": 5});
        let err = check(&sign_with(&header, &good_claims(), &ec(0).pair)).unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("not a valid JWS header"), "{err}");
    }

    #[test]
    fn the_parsed_key_and_jsonwebtokens_own_parse_agree() {
        use jsonwebtoken::crypto;
        let token = es256(good_claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let key = &ec(0).key;
        let own = |input: &str| {
            crypto::verify(
                signature,
                input.as_bytes(),
                key.decoding_key(),
                jsonwebtoken::Algorithm::ES256,
            )
            .unwrap()
        };
        let lent = |input: &str| {
            jws::signature_verifies(key, Algorithm::ES256, signature, input.as_bytes())
        };
        // Lent first: the first verification installs this module's provider.
        assert!(lent(input));
        assert!(own(input));
        let changed = format!("{input}x");
        assert!(!lent(&changed));
        assert!(!own(&changed));
    }

    #[test]
    fn header_fields_that_point_elsewhere_are_ignored() {
        let header =
            json!({"alg": "ES256", "kid": "k", "jku": "http://127.0.0.1:1/keys", "x5u": "x"});
        assert!(check(&sign_with(&header, &good_claims(), &ec(0).pair)).is_ok());
    }

    #[test]
    fn tokens_of_the_wrong_shape_are_malformed() {
        let good = es256(good_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            &long,
            &format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
            &format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
            &format!("{}.{}.{}", b64(br#"["ES256"]"#), parts[1], parts[2]),
            &format!("{}.{}.{}", b64(b"{}"), parts[1], parts[2]),
            &format!("{}.{}.{}", b64(br#"{"alg":5}"#), parts[1], parts[2]),
        ] {
            assert_eq!(reason(bad), "malformed", "{bad:.40}");
        }
    }

    #[test]
    fn claims_that_are_not_json_are_malformed_once_the_signature_holds() {
        assert_eq!(reason(&es256_raw(b"not json")), "malformed");
    }

    #[test]
    fn a_duplicated_claim_is_malformed() {
        let claims = format!(
            r#"{{"iat":{},"exp":{},"aud":"demo-project","exp":{}}}"#,
            NOW - 60,
            NOW - 30,
            NOW + 3600
        );
        assert_eq!(reason(&es256_raw(claims.as_bytes())), "malformed");
    }

    /// RFC 7519 asks for claims that are wholly valid JSON in UTF-8, ignored claims included:
    /// a claim the rules skip must not smuggle bytes that other readers of the token reject.
    #[test]
    fn claims_with_invalid_text_in_an_ignored_claim_are_malformed() {
        let good = format!(
            r#""iat":{},"exp":{},"aud":"demo-project""#,
            NOW - 60,
            NOW + 3600
        );
        for extra in [&b"\"x\":\"\\ud800\""[..], b"\"x\":\"\xff\"", b"\"\xc3\":1"] {
            let mut claims = format!("{{{good},").into_bytes();
            claims.extend_from_slice(extra);
            claims.push(b'}');
            let shown = String::from_utf8_lossy(&claims).into_owned();
            assert_eq!(reason(&es256_raw(&claims)), "malformed", "{shown}");
        }
    }

    #[test]
    fn an_unsupported_algorithm_is_refused_before_any_key_is_consulted() {
        for alg in ["none", "HS256", "RS512", "ES384", "PS256", "es256"] {
            let token = format!(
                "{}.{}.",
                b64(json!({"alg": alg}).to_string().as_bytes()),
                b64(b"{}")
            );
            // No keys at all: the algorithm is still what gets reported.
            let err = verify(&token, &project(), &[], NOW).unwrap_err();
            assert_eq!(err.reason(), "unsupported_algorithm", "{alg}");
            assert!(err.to_string().contains(alg), "{err}");
        }
    }

    #[test]
    fn a_hostile_alg_is_shortened_and_escaped_in_the_message() {
        let alg = format!("x\n{}", "y".repeat(500));
        let token = format!(
            "{}.{}.",
            b64(json!({"alg": alg}).to_string().as_bytes()),
            b64(b"{}")
        );
        let msg = check(&token).unwrap_err().to_string();
        assert!(!msg.contains('\n') && msg.len() < 200, "{msg}");
    }

    #[test]
    fn each_missing_claim_is_named() {
        for claim in ["iat", "exp", "aud"] {
            let mut claims = good_claims();
            claims.as_object_mut().unwrap().remove(claim);
            let err = check(&es256(claims)).unwrap_err();
            assert_eq!(err.reason(), "missing_claim");
            assert!(
                err.to_string()
                    .contains(&format!("`{claim}` claim is missing")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_time_claim_that_is_not_a_number_is_refused_as_missing() {
        let claims = json!({"iat": "yesterday", "exp": NOW + 60, "aud": "demo-project"});
        let err = check(&es256(claims)).unwrap_err();
        assert_eq!(err.reason(), "missing_claim");
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn a_wrong_audience_names_both_projects() {
        for aud in [json!("other-project"), json!(["demo-project"]), json!(7)] {
            let claims = json!({"iat": NOW, "exp": NOW + 60, "aud": aud});
            let err = check(&es256(claims)).unwrap_err();
            assert_eq!(err.reason(), "wrong_audience");
            assert!(err.to_string().contains("`demo-project`"), "{err}");
        }
        let claims = json!({"iat": NOW, "exp": NOW + 60, "aud": "other-project"});
        assert!(
            check(&es256(claims))
                .unwrap_err()
                .to_string()
                .contains("`other-project`")
        );
    }

    #[test]
    fn an_expired_token_says_how_long_ago_and_suspects_the_clock() {
        let claims = json!({"iat": NOW - 3600, "exp": NOW - 14 * 60, "aud": "demo-project"});
        let err = check(&es256(claims)).unwrap_err();
        assert_eq!(err.reason(), "expired");
        let msg = err.to_string();
        assert!(
            msg.contains("expired 14 min ago") && msg.contains("clock"),
            "{msg}"
        );
    }

    #[test]
    fn expiry_is_judged_with_exactly_ten_minutes_of_skew() {
        let at = |exp: i64| {
            check(&es256(
                json!({"iat": exp - 60, "exp": exp, "aud": "demo-project"}),
            ))
        };
        assert!(at(NOW - 600).is_ok());
        assert_eq!(at(NOW - 601).unwrap_err().reason(), "expired");
    }

    #[test]
    fn a_token_from_the_future_says_the_device_clock_is_ahead() {
        let claims = json!({"iat": NOW + 1200, "exp": NOW + 7200, "aud": "demo-project"});
        let err = check(&es256(claims)).unwrap_err();
        assert_eq!(err.reason(), "issued_in_future");
        assert!(err.to_string().contains("ahead by 20 min"), "{err}");
        let edge = json!({"iat": NOW + 600, "exp": NOW + 7200, "aud": "demo-project"});
        assert!(check(&es256(edge)).is_ok());
    }

    #[test]
    fn a_lifetime_outside_zero_to_a_day_is_refused() {
        for (iat, exp) in [(NOW, NOW), (NOW, NOW - 1), (NOW - 60, NOW - 60 + 86_401)] {
            let err = check(&es256(
                json!({"iat": iat, "exp": exp, "aud": "demo-project"}),
            ))
            .unwrap_err();
            assert_eq!(err.reason(), "bad_lifetime", "{iat} {exp}");
        }
        let day = json!({"iat": NOW - 60, "exp": NOW - 60 + 86_400, "aud": "demo-project"});
        assert!(check(&es256(day)).is_ok());
    }

    #[test]
    fn fractional_times_round_toward_the_stricter_side() {
        let claims =
            json!({"iat": NOW as f64 - 59.5, "exp": NOW as f64 + 99.5, "aud": "demo-project"});
        let ok = check(&es256(claims)).unwrap();
        assert_eq!((ok.iat, ok.exp), (NOW - 59, NOW + 99));
    }

    #[test]
    fn absurd_numbers_fail_the_time_rules_instead_of_overflowing() {
        for (iat, exp) in [
            (json!(0), json!(1e300)),
            (json!(-1e300), json!(u64::MAX)),
            (json!(i64::MIN), json!(i64::MAX)),
        ] {
            let err = check(&es256(
                json!({"iat": iat, "exp": exp, "aud": "demo-project"}),
            ))
            .unwrap_err();
            assert_eq!(err.reason(), "bad_lifetime");
        }
        let err = check(&es256(
            json!({"iat": i64::MIN, "exp": i64::MIN + 1, "aud": "demo-project"}),
        ));
        assert_eq!(err.unwrap_err().reason(), "expired");
    }

    #[test]
    fn a_device_without_credentials_is_told_so() {
        let err = verify(&es256(good_claims()), &project(), &[], NOW).unwrap_err();
        assert_eq!(err, TokenError::NoCredentials);
    }

    #[test]
    fn a_token_signed_by_another_key_has_a_bad_signature() {
        let token = sign_with(&json!({"alg": "ES256"}), &good_claims(), &ec(1).pair);
        assert_eq!(reason(&token), "bad_signature");
    }

    #[test]
    fn a_der_encoded_es256_signature_is_refused_with_a_hint() {
        let token = es256(good_claims());
        let (input, _) = token.rsplit_once('.').unwrap();
        let err = check(&format!("{input}.{}", b64(&[0x30; 70]))).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
        assert!(err.to_string().contains("64-byte r||s"), "{err}");
    }

    #[test]
    fn a_token_for_an_algorithm_the_device_has_no_key_for_says_so() {
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256"}"#),
            b64(b"{}"),
            b64(&[1; 256])
        );
        let err = check(&token).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
        assert!(err.to_string().contains("only EC (ES256) keys"), "{err}");
    }

    #[test]
    fn claims_are_not_judged_before_the_signature() {
        // An expired token with a broken signature is a signature failure.
        let token = es256(json!({"iat": 1, "exp": 2, "aud": "x"}));
        let (input, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            reason(&format!("{input}.{}", b64(&[0; 64]))),
            "bad_signature"
        );
    }

    #[test]
    fn a_token_verified_only_by_an_expired_credential_names_the_expiry() {
        let expired = vec![DeviceKey {
            key: ec(0).key.clone(),
            expires_at: Some(NOW),
        }];
        let err = verify(&es256(good_claims()), &project(), &expired, NOW).unwrap_err();
        assert_eq!(err, TokenError::CredentialExpired { expired_at: NOW });
        assert!(err.to_string().contains("2026-01-01T00:00:00Z"), "{err}");
    }

    #[test]
    fn an_expired_credential_does_not_hide_a_live_one() {
        let both = vec![
            DeviceKey {
                key: ec(1).key.clone(),
                expires_at: Some(NOW - 10),
            },
            DeviceKey {
                key: ec(0).key.clone(),
                expires_at: Some(NOW + 10),
            },
        ];
        let ok = verify(&es256(good_claims()), &project(), &both, NOW).unwrap();
        assert_eq!(ok.key_expires_at, Some(NOW + 10));
    }

    #[test]
    fn a_stored_credential_that_does_not_parse_is_skipped() {
        use shared::resources::PublicKeyCredential;
        let credential = |key: &str| DeviceCredential {
            public_key: PublicKeyCredential {
                format: PublicKeyFormat::RsaPem,
                key: key.to_owned(),
            },
            expiration_time: None,
        };
        assert!(device_keys(&[credential("garbage"), credential("")]).is_empty());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(59), "59 s");
        assert_eq!(human(14 * 60 + 5), "14 min");
        assert_eq!(human(5 * 3600), "5 h");
        assert_eq!(human(3 * 86_400), "3 days");
        assert_eq!(human(-5), "0 s");
    }
}
