//! The files `keygen` writes: `private.pem` readable by its owner only (it is the device's
//! identity), `public.pem` and `cert.pem` for the operator. Existing keys are never replaced
//! silently: losing a registered device's private key locks the device out.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::keys::DeviceKey;

/// Where `keygen` put each file.
#[derive(Debug)]
pub struct KeyFiles {
    /// PKCS#8 private key, mode 0600.
    pub private: PathBuf,
    /// SPKI public key.
    pub public: PathBuf,
    /// Self-signed certificate.
    pub cert: PathBuf,
}

impl KeyFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            private: dir.join("private.pem"),
            public: dir.join("public.pem"),
            cert: dir.join("cert.pem"),
        }
    }
}

/// Writes the three files for `key` into `dir` (created if missing). Without `force`, refuses
/// before writing anything when one of them exists.
pub fn write_key_files(
    dir: &Path,
    key: &DeviceKey,
    now: i64,
    force: bool,
) -> anyhow::Result<KeyFiles> {
    let files = KeyFiles::in_dir(dir);
    if !force {
        for path in [&files.private, &files.public, &files.cert] {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; a registered device locked out of its key cannot be \
                     recovered, so move it away or pass --force",
                    path.display()
                );
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let private = key.private_pem()?;
    write_private(&files.private, private.as_bytes())?;
    write_public(&files.public, key.public_pem()?.as_bytes())?;
    write_public(
        &files.cert,
        key.self_signed_certificate_pem(now)?.as_bytes(),
    )?;
    Ok(files)
}

fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Opens with mode 0600 so the key is never readable by others, not even for a moment; an
/// existing file (under --force) keeps its inode, so its mode is set again before writing.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let context = || format!("writing {}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path).with_context(context)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(context)?;
        file.write_all(bytes).with_context(context)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).with_context(context)?;
        file.write_all(bytes).with_context(context)
    }
}

/// The path as a POSIX shell word, so the printed command can be pasted as it is.
pub fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
