//! The WireGuard private key: generated from the OS RNG on every start, or
//! kept in a key file (`--key-file`), created `0600` with a new key when
//! missing. The file holds the key in base64 as `wg genkey` writes it, so
//! `wg pubkey < FILE` agrees with `routerd-host pubkey --key-file FILE`.
//!
//! Preshared keys (`preshared_key = "device:NAME"`) are kept beside it, one
//! file per slot: `NAME.psk` in the key file's directory, `0600`, base64 as
//! `wg genpsk` writes it. One made or imported on the box is written there;
//! one found there at start is the slot's key (so `wg genpsk > NAME.psk`
//! before the first start imports it).
//!
//! With `--state-dir` the store keeps the keys ([`crate::state`]): an
//! existing key file and its `NAME.psk` files are read once, for slots the
//! store has no key for ([`load_existing`]), and are never created or
//! written.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use config_schema::Name;
use rand_core::OsRng;
use routerd_wireguard::{PresharedKey, SecretKey};

/// Why the key could not be had: message and exit code (2 bad file
/// content, 1 the system refused).
#[derive(Debug)]
pub struct KeyError {
    pub code: i32,
    pub message: String,
}

/// A fresh key from the OS RNG.
pub fn generate() -> SecretKey {
    SecretKey::generate(&mut OsRng)
}

/// Read the key in `path`; with `create`, write a new one there (mode 0600)
/// if the file does not exist. Returns the key and whether it was created.
pub fn load(path: &Path, create: bool) -> Result<(SecretKey, bool), KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!("{}: readable by group or others; chmod 600 it", path.display());
                }
            }
            let key = SecretKey::from_base64(text.trim()).map_err(|e| KeyError {
                code: 2,
                message: format!("{}: not a WireGuard private key (base64, as `wg genkey` prints): {e:?}", path.display()),
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            let key = generate();
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| KeyError { code: 1, message: format!("{}: cannot create: {e}", path.display()) })?;
            writeln!(f, "{}", key.to_base64().as_str())
                .and_then(|()| f.sync_all())
                .map_err(|e| KeyError { code: 1, message: format!("{}: cannot write: {e}", path.display()) })?;
            Ok((key, true))
        }
        Err(e) => Err(KeyError { code: 1, message: format!("{}: {e}", path.display()) }),
    }
}

/// The key in `path`, `None` when there is no such file (`--state-dir`
/// adopts an existing key file and never makes one).
pub fn load_existing(path: &Path) -> Result<Option<SecretKey>, KeyError> {
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == ErrorKind::NotFound) {
        return Ok(None);
    }
    load(path, false).map(|(k, _)| Some(k))
}

/// Replace the key in `path` with `key`, atomically: a temporary file
/// (0600) beside it, synced, renamed over the old one.
pub fn store(path: &Path, key: &SecretKey) -> Result<(), KeyError> {
    write_secret(path, key.to_base64().as_str())
}

/// Where the preshared key of `slot` is kept, beside `key_file`.
pub fn psk_path(key_file: &Path, slot: &Name) -> PathBuf {
    key_file.with_file_name(format!("{slot}.psk"))
}

/// The preshared key in `path`, `None` when there is no such file.
pub fn load_psk(path: &Path) -> Result<Option<PresharedKey>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                log::warn!("{}: readable by group or others; chmod 600 it", path.display());
            }
            let key = PresharedKey::from_base64(text.trim()).map_err(|e| KeyError {
                code: 2,
                message: format!("{}: not a preshared key (base64, as `wg genpsk` prints): {e:?}", path.display()),
            })?;
            Ok(Some(key))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError { code: 1, message: format!("{}: {e}", path.display()) }),
    }
}

/// Replace the preshared key in `path` with `key`, atomically (as [`store`]).
pub fn store_psk(path: &Path, key: &PresharedKey) -> Result<(), KeyError> {
    write_secret(path, key.to_base64().as_str())
}

/// `text` and a newline into `path`, atomically: a temporary file (0600)
/// beside it, synced, renamed over the old one.
fn write_secret(path: &Path, text: &str) -> Result<(), KeyError> {
    let fail = |e: std::io::Error| KeyError { code: 1, message: format!("{}: cannot write: {e}", path.display()) };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail)?;
    writeln!(f, "{text}").and_then(|()| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("routerd-host-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wg.key");
        assert_eq!(load(&path, false).unwrap_err().code, 1, "missing and not created");
        let (k1, created) = load(&path, true).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (k2, created) = load(&path, true).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());
        assert_eq!(load_existing(&path).unwrap().map(|k| k.public_key()), Some(k1.public_key()));
        assert!(load_existing(&dir.join("none.key")).unwrap().is_none(), "missing: none, and not created");
        assert!(!dir.join("none.key").exists());
        let k3 = generate();
        store(&path, &k3).unwrap();
        assert_eq!(load(&path, false).unwrap().0.public_key(), k3.public_key());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "not a key\n").unwrap();
        assert_eq!(load(&path, true).unwrap_err().code, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn preshared_keys_live_beside_the_key_file() {
        let dir = std::env::temp_dir().join(format!("routerd-host-psk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let slot = Name::new("cloud-psk").unwrap();
        let path = psk_path(&dir.join("wg.key"), &slot);
        assert_eq!(path, dir.join("cloud-psk.psk"));
        assert!(load_psk(&path).unwrap().is_none(), "no file: no key yet");
        let key = PresharedKey([0x5a; 32]);
        store_psk(&path, &key).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", key.to_base64().as_str()), "as `wg genpsk` writes it");
        assert_eq!(load_psk(&path).unwrap(), Some(key));
        std::fs::write(&path, "not a key\n").unwrap();
        assert_eq!(load_psk(&path).unwrap_err().code, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
