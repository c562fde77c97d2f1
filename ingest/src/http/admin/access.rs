//! Who is calling the admin API. Every request leaves here with a [`Caller`] in its extensions or
//! is refused `401`: on loopback without tokens the caller is the owner; with bearer tokens
//! (`--admin-token`, `--admin-tokens-file`) it is the principal the token maps to; behind Cloud
//! Run's IAM it is the Google account in the ID token Cloud Run verified. What the caller may do
//! is decided afterwards, in `authorize`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use shared::iam;
use shared::{Code, ErrorInfo};

use super::AdminState;
use super::tokens_file::TokenSource;
use crate::http::error::ApiError;
use crate::iam::{Caller, OWNER_ROLE};

/// How callers of the admin API prove who they are.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// No check: the listener is on loopback, reachable only from this machine, and every caller
    /// is an owner.
    Loopback,
    /// Every request carries `Authorization: Bearer <token>` with one of these tokens.
    Tokens(Arc<TokenSource>),
    /// Cloud Run's IAM checked the caller's Google identity before the request arrived.
    CloudRunIam(Arc<CloudRunOwners>),
}

impl AdminAccess {
    /// One bearer token, held by an owner: the `--admin-token` setup.
    pub fn token(secret: &str) -> Self {
        AdminAccess::Tokens(Arc::new(TokenSource::fixed(Tokens::single_owner(secret))))
    }
}

/// The bearer tokens the admin API accepts and whose they are. Only their SHA-256 digests are
/// held, and a presented token is compared with every digest in constant time.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let principals: Vec<_> = self.entries.iter().map(|(_, c)| &c.principal).collect();
        f.debug_struct("Tokens")
            .field("principals", &principals)
            .finish()
    }
}

/// The shortest token a tokens file may hold.
const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    /// `secret`, held by an owner.
    pub fn single_owner(secret: &str) -> Self {
        Self {
            entries: vec![(digest(secret.as_bytes()), Caller::owner())],
        }
    }

    /// Adds the entries of a tokens file (see the README): one token per line, then its
    /// principal, then any roles it holds on the whole project; `#` starts a comment. A token
    /// may be given as `sha256:HEX` so the file need not hold the secret. Errors name the line,
    /// never a token.
    pub fn add_file(mut self, text: &str) -> Result<Self, String> {
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", index + 1);
            let mut words = line.split_whitespace();
            let (Some(token), Some(principal)) = (words.next(), words.next()) else {
                return Err(at(
                    "expected `TOKEN PRINCIPAL [ROLE…]`, e.g. `<32 random characters> \
                     user:alice@example.com roles/cloudiot.viewer`"
                        .into(),
                ));
            };
            let digest = token_digest(token).map_err(at)?;
            let (kind, email) = principal
                .split_once(':')
                .filter(|(kind, email)| {
                    matches!(*kind, "user" | "serviceAccount") && email.contains('@')
                })
                .ok_or_else(|| {
                    at(format!(
                        "`{principal}` is not a principal; write user:EMAIL or serviceAccount:EMAIL"
                    ))
                })?;
            let roles = words
                .map(|role| {
                    iam::role(role).ok_or_else(|| at(format!("`{role}` is not a known role")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if self.entries.iter().any(|(d, _)| *d == digest) {
                return Err(at("this token is listed twice".into()));
            }
            let caller = Caller {
                principal: format!("{kind}:{}", email.to_ascii_lowercase()).into(),
                project_roles: roles.into(),
            };
            self.entries.push((digest, caller));
        }
        Ok(self)
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller whose token `presented` is. Every entry is compared, so the time taken says
    /// nothing about which one matched or how close a guess came.
    pub(super) fn caller(&self, presented: &str) -> Option<&Caller> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for (known, caller) in &self.entries {
            if aws_lc_rs::constant_time::verify_slices_are_equal(known, &presented).is_ok() {
                found = Some(caller);
            }
        }
        found
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A tokens file's token: the secret itself, or `sha256:` and its digest in hex.
fn token_digest(token: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = token.strip_prefix("sha256:") {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        return bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| "a sha256: token needs 64 hex digits".to_string());
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token is shorter than {MIN_TOKEN_CHARS} characters; use a long random one \
             (e.g. `openssl rand -hex 24`)"
        ));
    }
    Ok(digest(token.as_bytes()))
}

/// Who is an owner behind Cloud Run's IAM: the principals named with `--admin-owners`, or, when
/// none are named, everyone Cloud Run lets through (its `run.invoker` binding is then the only
/// gate, as before registry policies existed).
#[derive(Debug, Clone, Default)]
pub struct CloudRunOwners {
    owners: Option<Vec<String>>,
}

impl CloudRunOwners {
    /// From `--admin-owners`: `user:EMAIL` or `serviceAccount:EMAIL`, comma-separated; empty
    /// means every invoker.
    pub fn parse(list: &str) -> Result<Self, String> {
        let owners: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| match p.split_once(':') {
                Some(("user" | "serviceAccount", email)) if email.contains('@') => Ok(p
                    .to_ascii_lowercase()
                    .replacen("serviceaccount:", "serviceAccount:", 1)),
                _ => Err(format!(
                    "`{p}` is not a principal; write user:EMAIL or serviceAccount:EMAIL"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            owners: (!owners.is_empty()).then_some(owners),
        })
    }

    fn caller(&self, email: &str) -> Caller {
        let mut caller = Caller::from_email(email, Arc::new([]));
        let owner = self
            .owners
            .as_ref()
            .is_none_or(|owners| owners.iter().any(|o| **o == *caller.principal));
        if owner {
            caller.project_roles = Arc::new([OWNER_ROLE]);
        }
        caller
    }
}

/// Puts the [`Caller`] into the request, or refuses it.
pub(super) async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = match &state.access {
        AdminAccess::Loopback => Caller::owner(),
        AdminAccess::Tokens(tokens) => {
            let presented = bearer(request.headers(), AUTHORIZATION.as_str()).ok_or_else(|| {
                refusal(
                    "ADMIN_TOKEN_MISSING",
                    "the admin API needs `Authorization: Bearer <token>`; the CLI sends it from --admin-token or ADMIN_TOKEN",
                )
            })?;
            tokens.current().caller(presented).cloned().ok_or_else(|| {
                refusal(
                    "ADMIN_TOKEN_INVALID",
                    "the admin bearer token is not one this server accepts (--admin-token or --admin-tokens-file)",
                )
            })?
        }
        AdminAccess::CloudRunIam(owners) => {
            let email = cloud_run_email(request.headers()).ok_or_else(|| {
                refusal(
                    "IDENTITY_MISSING",
                    "no Google identity on the request: call with a Google ID token \
                     (`Authorization: Bearer $(gcloud auth print-identity-token)`), and deploy the \
                     admin service without unauthenticated access",
                )
            })?;
            owners.caller(&email)
        }
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

fn refusal(reason: &str, message: &str) -> ApiError {
    ApiError::new(Code::Unauthenticated, message).with_info(ErrorInfo::new(reason, BTreeMap::new()))
}

/// The bearer token of header `name`.
fn bearer<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

/// The `email` claim of the ID token Cloud Run verified: from `X-Serverless-Authorization` when
/// the caller used it (Cloud Run then passes `Authorization` through untouched), else from
/// `Authorization`. Cloud Run has checked the signature and replaced it, so only the claims are
/// read here; off Cloud Run this access mode is refused at startup.
fn cloud_run_email(headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers, "x-serverless-authorization")
        .or_else(|| bearer(headers, AUTHORIZATION.as_str()))?;
    let claims = token.split('.').nth(1)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let email = claims.get("email")?.as_str()?;
    email.contains('@').then(|| email.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# token                              principal                        project roles
0123456789abcdef0123456789abcdef    user:Alice@Example.com           roles/owner
sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  serviceAccount:ci@p.iam.gserviceaccount.com
fedcba9876543210fedcba9876543210    user:viewer@example.com          roles/cloudiot.viewer   # read-only
";

    #[test]
    fn a_tokens_file_maps_each_token_to_its_principal_and_roles() {
        let tokens = Tokens::single_owner("the-single-owner-token")
            .add_file(FILE)
            .unwrap();
        assert_eq!(tokens.len(), 4);
        let alice = tokens.caller("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(&*alice.principal, "user:alice@example.com");
        assert!(alice.holds_on_project("cloudiot.registries.setIamPolicy"));
        // sha256("test"): the file holds the digest, the caller presents the secret.
        let ci = tokens.caller("test").unwrap();
        assert_eq!(
            &*ci.principal,
            "serviceAccount:ci@p.iam.gserviceaccount.com"
        );
        assert!(!ci.holds_on_project("cloudiot.devices.get"));
        let viewer = tokens.caller("fedcba9876543210fedcba9876543210").unwrap();
        assert!(viewer.holds_on_project("cloudiot.registries.list"));
        assert!(!viewer.holds_on_project("cloudiot.registries.create"));
        assert_eq!(
            tokens.caller("the-single-owner-token"),
            Some(&Caller::owner())
        );
        assert!(tokens.caller("0123456789abcdef0123456789abcdeX").is_none());
    }

    #[test]
    fn a_bad_tokens_file_names_the_line_and_never_the_token() {
        let cases = [
            (
                "short-secret user:a@example.com",
                "line 1: the token is shorter",
            ),
            (
                "0123456789abcdef0123456789abcdef",
                "line 1: expected `TOKEN PRINCIPAL",
            ),
            (
                "0123456789abcdef0123456789abcdef alice",
                "line 1: `alice` is not a principal",
            ),
            (
                "\n0123456789abcdef0123456789abcdef user:a@example.com roles/god",
                "line 2: `roles/god` is not a known role",
            ),
            (
                "sha256:abcd user:a@example.com",
                "line 1: a sha256: token needs 64 hex",
            ),
            (
                "0123456789abcdef0123456789abcdef user:a@example.com\n\
                 0123456789abcdef0123456789abcdef user:b@example.com",
                "line 2: this token is listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = Tokens::single_owner("x").add_file(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
    }

    #[test]
    fn cloud_run_callers_are_read_from_the_verified_id_token() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"email":"Ops@Example.com","email_verified":true}"#);
        let token = format!("Bearer eyJhbGciOiJSUzI1NiJ9.{claims}.SIGNATURE_REMOVED_BY_GOOGLE");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, token.parse().unwrap());
        assert_eq!(
            cloud_run_email(&headers).as_deref(),
            Some("Ops@Example.com")
        );
        headers.insert(
            "x-serverless-authorization",
            "Bearer a.e30.b".parse().unwrap(),
        );
        assert_eq!(
            cloud_run_email(&headers),
            None,
            "the serverless header wins"
        );

        let everyone = CloudRunOwners::parse("").unwrap();
        assert!(
            everyone
                .caller("ops@example.com")
                .holds_on_project("cloudiot.registries.create")
        );
        let named = CloudRunOwners::parse(
            "user:Ops@example.com, serviceAccount:ci@p.iam.gserviceaccount.com",
        )
        .unwrap();
        assert!(
            named
                .caller("ops@example.com")
                .holds_on_project("cloudiot.registries.create")
        );
        assert!(
            named
                .caller("ci@p.iam.gserviceaccount.com")
                .holds_on_project("cloudiot.registries.create")
        );
        assert!(
            !named
                .caller("dev@example.com")
                .holds_on_project("cloudiot.registries.list")
        );
        assert!(CloudRunOwners::parse("ops@example.com").is_err());
    }
}
