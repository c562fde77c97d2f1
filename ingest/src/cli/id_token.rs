//! Google ID tokens for an admin API behind Cloud Run's IAM, from application-default
//! credentials (a service account key, the metadata server, or an impersonated service account).
//! `gcloud auth application-default login` leaves a user account, which google-cloud-auth's ADC
//! builder does not turn into ID tokens; that case is read here and handed to its user-account
//! builder instead.

use std::path::PathBuf;

use anyhow::Context as _;
use google_cloud_auth::credentials::idtoken::{self, IDTokenCredentials};

/// What to tell a person whose credentials yield no ID token.
const HOW_TO_FIX: &str = "run `gcloud auth application-default login`, or set \
    GOOGLE_APPLICATION_CREDENTIALS to a service account key, or pass --admin-token \
    (or --id-token=never for a server without IAM)";

/// Fetches an ID token whose audience is `audience` (the admin URL's origin).
pub async fn fetch(audience: &str) -> anyhow::Result<String> {
    let token = match credentials(audience) {
        Ok(credentials) => credentials.id_token().await.map_err(root_cause),
        Err(err) => Err(err),
    };
    token.map_err(|err| {
        anyhow::anyhow!("cannot get a Google ID token for {audience}: {err:#}; {HOW_TO_FIX}")
    })
}

fn credentials(audience: &str) -> anyhow::Result<IDTokenCredentials> {
    match idtoken::Builder::new(audience).build() {
        Ok(credentials) => Ok(credentials),
        Err(err) if err.is_not_supported() => user_account_credentials(),
        Err(err) => Err(root_cause(err)),
    }
}

/// A user account's ID token carries the OAuth client as its audience, not the service URL;
/// Cloud Run accepts it for a principal that holds roles/run.invoker.
fn user_account_credentials() -> anyhow::Result<IDTokenCredentials> {
    let path = adc_path().context("no application-default credentials file is configured")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading application-default credentials {}", path.display()))?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("parsing application-default credentials {}", path.display()))?;
    idtoken::user_account::Builder::new(json)
        .build()
        .map_err(root_cause)
}

/// google-cloud-auth nests the same retry advice several layers deep; the root cause (a missing
/// file, a DNS failure, a refused refresh token) is what a person can act on.
fn root_cause(err: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    let err = anyhow::Error::new(err);
    anyhow::anyhow!("{}", err.root_cause())
}

/// The ADC file, as AIP-4110 and AIP-4113 place it.
fn adc_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return Some(PathBuf::from(path));
    }
    let (root, tail) = if cfg!(windows) {
        (
            std::env::var_os("APPDATA")?,
            "gcloud/application_default_credentials.json",
        )
    } else {
        (
            std::env::var_os("HOME")?,
            ".config/gcloud/application_default_credentials.json",
        )
    };
    Some(PathBuf::from(root).join(tail))
}
