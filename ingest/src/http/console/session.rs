//! What a browser needs around the admin API's own checks: a session cookie and CSRF defences.
//!
//! The cookie holds a random CSRF secret and, when the admin API takes bearer tokens, the token
//! the operator signed in with. It is `HttpOnly` (scripts cannot read it), `SameSite=Strict`
//! (other sites' pages cannot send it), and `Secure` with the `__Host-` prefix everywhere but a
//! loopback listener. Keeping the token in the cookie rather than in a server-side table keeps
//! sessions working across instances and restarts, and the token is checked by the admin API on
//! every call, so one removed from the tokens file stops working at once.
//!
//! Every change is a `POST` that must come from the console's own pages: a `Sec-Fetch-Site`
//! other than `same-origin` (or, without one, an `Origin` other than the console's) is refused,
//! and the form must carry the session's CSRF secret in a hidden field (double submit: another
//! origin can neither read the cookie nor the page that holds the field).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, HOST, ORIGIN, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Console;
use super::api::Api;
use super::pages::{self, LoginForm};

/// The cookie's name: with `Secure`, the `__Host-` prefix makes browsers refuse it from a
/// sibling domain or a plain-HTTP page, so no one else can plant a session.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-iotcore-console"
    } else {
        "iotcore-console"
    }
}

/// The browser's session: its CSRF secret and, when signed in, its bearer token.
#[derive(Clone)]
pub(super) struct Session {
    csrf: String,
    token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("signed_in", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session with a fresh CSRF secret.
    fn new(token: Option<String>) -> Option<Self> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).ok()?;
        Some(Self {
            csrf: URL_SAFE_NO_PAD.encode(secret),
            token,
        })
    }

    /// The session in the request's cookie, if it holds one that reads.
    fn from_headers(headers: &HeaderMap, secure: bool) -> Option<Self> {
        let prefix = format!("{}=", cookie_name(secure));
        let value = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .find_map(|c| c.trim().strip_prefix(&prefix))?;
        let (csrf, token) = value.split_once('.')?;
        if csrf.len() < 43 {
            return None;
        }
        let token = match token {
            "" => None,
            encoded => Some(String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?),
        };
        Some(Self {
            csrf: csrf.to_owned(),
            token,
        })
    }

    /// The `Set-Cookie` value that stores this session (a browser-session cookie: it ends when
    /// the browser closes).
    fn cookie(&self, secure: bool) -> Option<HeaderValue> {
        let token = self
            .token
            .as_deref()
            .map(|t| URL_SAFE_NO_PAD.encode(t))
            .unwrap_or_default();
        let secure_flag = if secure { "; Secure" } else { "" };
        let value = format!(
            "{}={}.{token}; Path=/; HttpOnly; SameSite=Strict{secure_flag}",
            cookie_name(secure),
            self.csrf
        );
        HeaderValue::from_str(&value).ok()
    }

    /// Whether `presented` is this session's CSRF secret; compared in constant time.
    fn csrf_matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            self.csrf.as_bytes(),
            presented.as_bytes(),
        )
        .is_ok()
    }
}

/// Refuses cross-site changes, makes sure every visitor has a session, and sends a visitor who
/// must sign in to the login form (`401`). Adds the headers every console page carries.
pub(super) async fn guard(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let secure = console.settings.secure_cookies;
    if !matches!(*request.method(), Method::GET | Method::HEAD)
        && let Some(why) = cross_site(request.headers())
    {
        return with_page_headers(pages::forbidden(&why));
    }
    let existing = Session::from_headers(request.headers(), secure);
    let fresh = existing.is_none();
    let Some(session) = existing.or_else(|| Session::new(None)) else {
        return pages::broken("the system random number generator failed");
    };
    let path = request.uri().path();
    let open = path == "/console/login" || path == "/console/console.css";
    let mut response = if console.tokens && session.token.is_none() && !open {
        let next = (*request.method() == Method::GET).then(|| request.uri().to_string());
        let form = LoginForm {
            next,
            ..LoginForm::default()
        };
        let why = "sign in with an admin bearer token to use the console";
        pages::login(&session.csrf, &form, Some(why), StatusCode::UNAUTHORIZED)
    } else {
        request.extensions_mut().insert(session.clone());
        next.run(request).await
    };
    // A handler that signed in or out has set the cookie itself.
    if fresh
        && !response.headers().contains_key(SET_COOKIE)
        && let Some(cookie) = session.cookie(secure)
    {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    with_page_headers(response)
}

/// Why a change request did not come from the console's own pages, if it did not. As Go's
/// `CrossOriginProtection` decides: a browser's `Sec-Fetch-Site` (which no page can forge) is
/// trusted when present, so a proxy that rewrites `Host` (`gcloud run services proxy`) still
/// works; else the `Origin` must be the host the request was sent to; a request with neither
/// is no modern browser's, and the CSRF token still stands in its way.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = HeaderName::from_static("sec-fetch-site");
    if let Some(site) = text(&fetch_site) {
        return (!matches!(site, "same-origin" | "none")).then(|| {
            format!(
                "cross-site request refused: the browser says it came from a {site} page \
                 (Sec-Fetch-Site), not from the console itself"
            )
        });
    }
    let origin = text(&ORIGIN)?;
    let host = text(&HOST).unwrap_or_default();
    let from = origin.split_once("://").map(|(_, authority)| authority);
    (from != Some(host) || host.is_empty()).then(|| {
        format!(
            "cross-site request refused: it came from {origin}, not from the console's own \
             origin (Origin)"
        )
    })
}

/// Pages that hold tokens' effects and CSRF secrets are never cached, framed, or sent as a
/// referrer; the content security policy allows the console's own stylesheet and nothing
/// else, so even injected markup could run no script.
fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(headers, CACHE_CONTROL, "no-store");
    set(
        headers,
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, X_FRAME_OPTIONS, "DENY");
    set(headers, X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, REFERRER_POLICY, "same-origin");
    response
}

/// A console visitor: who the admin API will see, and the CSRF secret the page's forms carry.
#[derive(Debug, Clone)]
pub(super) struct Visit {
    console: Console,
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// The session's CSRF secret, for the page's forms.
    pub csrf: String,
    /// Signed in with a token (the page offers to sign out).
    pub signed_in: bool,
}

impl Visit {
    /// The admin API at `project`/`location`, as this visitor.
    pub fn api(&self, project: &str, location: &str) -> Api {
        Api::new(
            self.console.api.clone(),
            self.credentials.clone(),
            project,
            location,
        )
    }
}

impl FromRequestParts<Console> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| pages::broken("a console route ran without the session guard"))?;
        Ok(Self {
            console: console.clone(),
            credentials: Api::credentials(session.token.as_deref(), &parts.headers),
            csrf: session.csrf,
            signed_in: session.token.is_some(),
        })
    }
}

/// A submitted form whose CSRF field matched the session: the only way a handler reads a body.
#[derive(Debug, Clone, Default)]
pub(super) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// The field's value, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let session = request.extensions().get::<Session>().cloned();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let form = Form { fields };
        match session {
            Some(session) if session.csrf_matches(form.get("csrf")) => Ok(form),
            _ => Err(pages::forbidden(
                "the form did not carry this session's CSRF token, so it was not accepted: \
                 reload the page and submit it again (forms from other sites are always refused)",
            )),
        }
    }
}

/// `GET /console/login`.
pub(super) async fn login_page(State(console): State<Console>, visit: Visit) -> Response {
    if !console.tokens || visit.signed_in {
        return pages::redirect("/console");
    }
    pages::login(&visit.csrf, &LoginForm::default(), None, StatusCode::OK)
}

/// `POST /console/login`: the token is good when the admin API authenticates it; the session
/// then holds it, under a new CSRF secret.
pub(super) async fn login(
    State(console): State<Console>,
    visit: Visit,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if !console.tokens {
        return pages::redirect("/console");
    }
    let entered = LoginForm::read(&form);
    let token = form.get("token").trim();
    let credentials = Api::credentials(Some(token), &headers);
    let api = Api::new(
        console.api.clone(),
        credentials,
        &entered.project,
        &entered.location,
    );
    // Any answer but 401 means the token was accepted (what it may do is the API's business).
    if let Err(refusal) = api.get::<serde_json::Value>("/registries?pageSize=1").await
        && refusal.status == StatusCode::UNAUTHORIZED
    {
        return pages::login(
            &visit.csrf,
            &entered,
            Some(&refusal.message),
            refusal.status,
        );
    }
    let Some(session) = Session::new(Some(token.to_owned())) else {
        return pages::broken("the system random number generator failed");
    };
    let mut response = pages::redirect(&entered.destination());
    if let Some(cookie) = session.cookie(console.settings.secure_cookies) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// `POST /console/logout`: the cookie is replaced by an empty, expired one.
pub(super) async fn logout(State(console): State<Console>, _form: Form) -> Response {
    let secure = console.settings.secure_cookies;
    let mut response = pages::redirect("/console/login");
    let secure_flag = if secure { "; Secure" } else { "" };
    let value = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure_flag}",
        cookie_name(secure)
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_session_round_trips_through_its_cookie() {
        let session = Session::new(Some("tok;en=with odd chars".into())).unwrap();
        for secure in [false, true] {
            let cookie = session.cookie(secure).unwrap();
            let cookie = cookie.to_str().unwrap();
            assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
            assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
            let sent = cookie.split(';').next().unwrap();
            let read = Session::from_headers(&headers(&[("cookie", sent)]), secure).unwrap();
            assert_eq!(read.token.as_deref(), Some("tok;en=with odd chars"));
            assert!(read.csrf_matches(&session.csrf));
            assert!(!read.csrf_matches("guess"));
        }
        let plain = session.cookie(false).unwrap();
        let sent = plain
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            Session::from_headers(&headers(&[("cookie", &sent)]), true).is_none(),
            "a secure listener reads only its __Host- cookie"
        );
    }

    #[test]
    fn changes_from_other_origins_are_refused() {
        let same = headers(&[
            ("host", "admin.example"),
            ("origin", "https://admin.example"),
        ]);
        let proxied = headers(&[
            ("host", "admin-xyz.a.run.app"),
            ("origin", "http://localhost:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&proxied), None, "the browser's word wins");
        assert_eq!(cross_site(&same), None);
        assert_eq!(cross_site(&headers(&[("host", "a.example")])), None);
        for refused in [
            headers(&[
                ("host", "admin.example"),
                ("origin", "https://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://127.0.0.1:9999"),
            ]),
            headers(&[("host", "admin.example"), ("origin", "null")]),
            headers(&[("host", "admin.example"), ("sec-fetch-site", "same-site")]),
            headers(&[("host", "admin.example"), ("sec-fetch-site", "cross-site")]),
        ] {
            assert!(cross_site(&refused).is_some(), "{refused:?}");
        }
    }
}
