//! `ingest serve` settings: flags with environment fallbacks, parsed once at start and passed
//! down; nothing deeper in the code reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::http::admin::AdminAccess;

/// Settings of `ingest serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the admin API. Keep it on loopback: anywhere else it needs --admin-token or
    /// --admin-trust-cloud-run-iam.
    #[arg(
        long,
        env = "ADMIN_ADDR",
        default_value = "127.0.0.1:8081",
        value_name = "ADDR:PORT"
    )]
    pub admin_addr: SocketAddr,

    /// Bearer token the admin API demands from every caller (required when --admin-addr is not
    /// loopback, unless Cloud Run's IAM guards the service).
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub admin_token: Option<String>,

    /// Trust Cloud Run's IAM to admit only authorised callers to the admin API (deploy the admin
    /// role as its own Cloud Run service without unauthenticated access).
    #[arg(long, env = "ADMIN_TRUST_CLOUD_RUN_IAM")]
    pub admin_trust_cloud_run_iam: bool,

    /// The registry store: `sqlite:PATH` (created if missing).
    #[arg(
        long,
        env = "REGISTRY",
        default_value = "sqlite:ingest.db",
        value_name = "STORE"
    )]
    pub registry: StoreUrl,

    /// How many verified device tokens to keep cached.
    #[arg(
        long,
        env = "TOKEN_CACHE_CAPACITY",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub token_cache_capacity: usize,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreUrl::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "`{s}` is not a registry store; use sqlite:PATH (e.g. sqlite:ingest.db)"
            )),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the settings cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The admin API would be reachable from other machines with no protection.
    #[error(
        "the admin API would listen on {0}, reachable from other machines, with no protection: set --admin-token (ADMIN_TOKEN), or --admin-trust-cloud-run-iam when Cloud Run's IAM guards it, or bind it to 127.0.0.1"
    )]
    UnprotectedAdmin(SocketAddr),
}

impl ServeArgs {
    /// How admin callers are checked, refusing an exposed admin API with no protection.
    pub fn admin_access(&self) -> Result<AdminAccess, ConfigError> {
        match (&self.admin_token, self.admin_addr.ip().is_loopback()) {
            (Some(token), _) if !token.is_empty() => Ok(AdminAccess::Token(token.as_str().into())),
            (_, true) => Ok(AdminAccess::Loopback),
            (_, false) if self.admin_trust_cloud_run_iam => Ok(AdminAccess::CloudRunIam),
            (_, false) => Err(ConfigError::UnprotectedAdmin(self.admin_addr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("ingest").chain(args.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn the_admin_api_on_loopback_needs_no_token() {
        let args = parse(&[]);
        assert!(matches!(args.admin_access(), Ok(AdminAccess::Loopback)));
    }

    #[test]
    fn an_exposed_admin_api_without_protection_refuses_to_start() {
        let args = parse(&["--admin-addr", "0.0.0.0:8081"]);
        let err = args.admin_access().unwrap_err().to_string();
        assert!(err.contains("--admin-token"), "{err}");
        let args = parse(&["--admin-addr", "0.0.0.0:8081", "--admin-token", "s3cret"]);
        assert!(matches!(args.admin_access(), Ok(AdminAccess::Token(_))));
        let args = parse(&[
            "--admin-addr",
            "0.0.0.0:8081",
            "--admin-trust-cloud-run-iam",
        ]);
        assert!(matches!(args.admin_access(), Ok(AdminAccess::CloudRunIam)));
    }

    #[test]
    fn store_urls_name_their_kind() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("/tmp/x.db".into()))
        );
        assert!("postgres://x".parse::<StoreUrl>().is_err());
        assert!("sqlite:".parse::<StoreUrl>().is_err());
    }
}
