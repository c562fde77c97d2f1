//! The admin API's bearer tokens, with `--admin-tokens-file` read again when it changes (checked
//! every 5 s, by modification time and size): a leaked token is revoked, or an operator added,
//! by editing the file — no restart, which with `--role all` would drop every device's MQTT
//! connection. A file that no longer parses (or is gone, or empty) is logged and the tokens
//! read last stay in force, so a typo cannot lock every operator out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use super::access::Tokens;

/// How often the file's modification time and size are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The tokens in force, and the file they come from, if any.
#[derive(Debug)]
pub struct TokenSource {
    current: RwLock<Arc<Tokens>>,
    file: Option<WatchedFile>,
}

#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    /// The `--admin-token` owner (if given), which every version of the file is added to.
    base: Tokens,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

impl TokenSource {
    /// Tokens that never change (`--admin-token` alone, or a test's).
    pub fn fixed(tokens: Tokens) -> Self {
        Self {
            current: RwLock::new(Arc::new(tokens)),
            file: None,
        }
    }

    /// `base` plus the entries of the tokens file at `path`, read now; `Err` says why the file
    /// cannot be used (the service then refuses to start).
    pub fn from_file(base: Tokens, path: &Path) -> Result<Self, String> {
        let stamp = stamp(path);
        let tokens = read(&base, path)?;
        Ok(Self {
            current: RwLock::new(Arc::new(tokens)),
            file: Some(WatchedFile {
                path: path.to_owned(),
                base,
                stamp: Mutex::new(stamp),
            }),
        })
    }

    /// The tokens in force now.
    pub fn current(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again if it changed since the last look.
    pub fn check(&self) {
        let Some(file) = &self.file else { return };
        let now = stamp(&file.path);
        {
            let mut seen = file.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match read(&file.base, &file.path) {
            Ok(tokens) => {
                let count = tokens.len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
                tracing::info!(path = %file.path.display(), tokens = count, "admin tokens file reloaded");
            }
            Err(why) => tracing::warn!(
                path = %file.path.display(),
                %why,
                "the changed admin tokens file cannot be used; the tokens read before stay in force"
            ),
        }
    }

    /// Checks the file every few seconds for as long as the source is in use.
    pub fn watch(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let source: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECK_EVERY);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(source) = source.upgrade() else {
                    break;
                };
                source.check();
            }
        });
    }
}

fn read(base: &Tokens, path: &Path) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let tokens = base.clone().add_file(&text)?;
    if tokens.is_empty() {
        return Err("holds no token".into());
    }
    Ok(tokens)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-token-0123456789abcdef";
    const BOB: &str = "bob-token-0123456789abcdefgh";

    fn principal(source: &TokenSource, token: &str) -> Option<String> {
        source
            .current()
            .caller(token)
            .map(|c| c.principal.to_string())
    }

    /// Rewrites the file so its size differs too: modification times can be equal within a
    /// second on some filesystems.
    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_changed_file_takes_effect_and_a_broken_one_keeps_the_last_good_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        write(
            &path,
            &format!("{ALICE} user:alice@example.com roles/owner\n"),
        );
        let source = TokenSource::from_file(Tokens::default(), &path).unwrap();
        assert_eq!(
            principal(&source, ALICE).as_deref(),
            Some("user:alice@example.com")
        );
        assert_eq!(principal(&source, BOB), None);

        // Alice's token leaked: replaced by Bob's.
        write(
            &path,
            &format!("{BOB} user:bob@example.com roles/owner # rotated\n"),
        );
        source.check();
        assert_eq!(principal(&source, ALICE), None);
        assert_eq!(
            principal(&source, BOB).as_deref(),
            Some("user:bob@example.com")
        );

        // A typo, then the file removed: Bob keeps working.
        write(
            &path,
            "not a tokens file line at all, far too long to be taken for one\n",
        );
        source.check();
        assert_eq!(
            principal(&source, BOB).as_deref(),
            Some("user:bob@example.com")
        );
        std::fs::remove_file(&path).unwrap();
        source.check();
        assert_eq!(
            principal(&source, BOB).as_deref(),
            Some("user:bob@example.com")
        );
    }

    #[test]
    fn the_single_admin_token_stays_beside_every_version_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        write(&path, &format!("{ALICE} user:alice@example.com\n"));
        let base = Tokens::single_owner("the-single-owner-token");
        let source = TokenSource::from_file(base, &path).unwrap();
        write(
            &path,
            &format!("{BOB} user:bob@example.com roles/cloudiot.viewer\n"),
        );
        source.check();
        assert!(principal(&source, "the-single-owner-token").is_some());
        assert!(principal(&source, BOB).is_some());
    }

    #[test]
    fn an_unusable_file_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        assert!(TokenSource::from_file(Tokens::default(), &path).is_err());
        write(&path, "# only a comment\n");
        let err = TokenSource::from_file(Tokens::default(), &path).unwrap_err();
        assert!(err.contains("no token"), "{err}");
    }
}
