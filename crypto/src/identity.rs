//! Identity files: a node's key pair on disk.
//!
//! Two files in the node's folder, both binary, both ending in a checksum:
//!
//! | file | layout |
//! |---|---|
//! | `node.key` (mode 0600) | `PQDAGSK\x01` (8) · algorithm `0x87` (1) · secret key (4896) · public key (2592) · BLAKE3 of all before (32) |
//! | `node.pub` | `PQDAGPK\x01` (8) · algorithm `0x87` (1) · public key (2592) · BLAKE3 of all before (32) |
//!
//! The public key is also written into the cluster file as hex; the secret never leaves `node.key`.
//! A client identity (`engine keygen --client`) is the same two formats under the names
//! `client.key` and `client.pub`: the node lists the `.pub` (or its hex) in `client_keys`.
//! Loading checks magic, algorithm byte, length, checksum and (for `node.key`) that the secret key
//! signs for the stored public key: a truncated, corrupt or foreign file is a typed error.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{CryptoError, Keypair, PublicKey, SecretKey, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES};

/// The algorithm byte of ML-DSA-87 in identity files.
pub const ALGORITHM_ML_DSA_87: u8 = 0x87;
/// File name of the secret key inside a node folder.
pub const SECRET_KEY_FILE: &str = "node.key";
/// File name of the public key inside a node folder.
pub const PUBLIC_KEY_FILE: &str = "node.pub";

/// File name of a client's secret key.
pub const CLIENT_SECRET_KEY_FILE: &str = "client.key";
/// File name of a client's public key.
pub const CLIENT_PUBLIC_KEY_FILE: &str = "client.pub";

const SK_MAGIC: &[u8; 8] = b"PQDAGSK\x01";
const PK_MAGIC: &[u8; 8] = b"PQDAGPK\x01";
const CHECKSUM_BYTES: usize = 32;
const SK_FILE_BYTES: usize = 8 + 1 + SECRET_KEY_BYTES + PUBLIC_KEY_BYTES + CHECKSUM_BYTES;
const PK_FILE_BYTES: usize = 8 + 1 + PUBLIC_KEY_BYTES + CHECKSUM_BYTES;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io { path: path.to_path_buf(), source }
}

fn bad(path: &Path, reason: impl Into<String>) -> CryptoError {
    CryptoError::BadIdentityFile { path: path.to_path_buf(), reason: reason.into() }
}

fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let sum = blake3::hash(&body);
    body.extend_from_slice(sum.as_bytes());
    body
}

/// Checks magic, algorithm, length and checksum; returns the body after the algorithm byte.
fn open<'a>(path: &Path, bytes: &'a [u8], magic: &[u8; 8], len: usize) -> Result<&'a [u8], CryptoError> {
    if bytes.len() < 9 || &bytes[..8] != magic {
        return Err(bad(path, "not a pqdag identity file of this kind (bad magic)"));
    }
    if bytes[8] != ALGORITHM_ML_DSA_87 {
        return Err(CryptoError::WrongAlgorithm {
            path: path.to_path_buf(),
            found: bytes[8],
            expected: ALGORITHM_ML_DSA_87,
        });
    }
    if bytes.len() != len {
        return Err(bad(path, format!("expected {len} bytes, found {} (truncated or padded)", bytes.len())));
    }
    let (body, sum) = bytes.split_at(len - CHECKSUM_BYTES);
    if blake3::hash(body).as_bytes() != sum {
        return Err(bad(path, "checksum mismatch (file is corrupt)"));
    }
    Ok(&body[9..])
}

/// Writes `node.key` (0600, created fresh: an existing key is never overwritten) and `node.pub`
/// into `dir`, creating `dir` if needed. Returns the two paths.
pub fn write_identity(dir: &Path, keypair: &Keypair) -> Result<(PathBuf, PathBuf), CryptoError> {
    write_identity_as(dir, keypair, SECRET_KEY_FILE, PUBLIC_KEY_FILE)
}

/// Writes a client identity: `client.key` (0600, never overwritten) and `client.pub` in `dir`.
pub fn write_client_identity(dir: &Path, keypair: &Keypair) -> Result<(PathBuf, PathBuf), CryptoError> {
    write_identity_as(dir, keypair, CLIENT_SECRET_KEY_FILE, CLIENT_PUBLIC_KEY_FILE)
}

fn write_identity_as(dir: &Path, keypair: &Keypair, sk_name: &str, pk_name: &str) -> Result<(PathBuf, PathBuf), CryptoError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let sk_path = dir.join(sk_name);
    let pk_path = dir.join(pk_name);

    let mut sk_body = Vec::with_capacity(SK_FILE_BYTES);
    sk_body.extend_from_slice(SK_MAGIC);
    sk_body.push(ALGORITHM_ML_DSA_87);
    sk_body.extend_from_slice(keypair.secret().as_bytes());
    sk_body.extend_from_slice(keypair.public().as_bytes());
    let sk_file = seal(sk_body);

    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&sk_path)
            .map_err(io_err(&sk_path))?;
        f.write_all(&sk_file).map_err(io_err(&sk_path))?;
        f.sync_all().map_err(io_err(&sk_path))?;
    }
    write_public_key(&pk_path, keypair.public())?;
    Ok((sk_path, pk_path))
}

/// Writes a public key file.
pub fn write_public_key(path: &Path, public_key: &PublicKey) -> Result<(), CryptoError> {
    let mut body = Vec::with_capacity(PK_FILE_BYTES);
    body.extend_from_slice(PK_MAGIC);
    body.push(ALGORITHM_ML_DSA_87);
    body.extend_from_slice(public_key.as_bytes());
    fs::write(path, seal(body)).map_err(io_err(path))
}

/// Loads the key pair from `dir/node.key`, checking the file and that its halves belong together.
pub fn load_keypair(dir: &Path) -> Result<Keypair, CryptoError> {
    load_keypair_file(&dir.join(SECRET_KEY_FILE))
}

/// Loads a key pair from a secret key file of any name (e.g. a client's `client.key`), with
/// the same checks as [`load_keypair`].
pub fn load_keypair_file(path: &Path) -> Result<Keypair, CryptoError> {
    let path = path.to_path_buf();
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let body = open(&path, &bytes, SK_MAGIC, SK_FILE_BYTES)?;
    let (sk, pk) = body.split_at(SECRET_KEY_BYTES);
    let public = PublicKey::from_bytes(pk)?;
    let secret = SecretKey::from_bytes(sk)?;
    Keypair::from_parts(public, secret).map_err(|_| CryptoError::KeyMismatch { path })
}

/// Loads a public key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, CryptoError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let body = open(path, &bytes, PK_MAGIC, PK_FILE_BYTES)?;
    PublicKey::from_bytes(body)
}

/// Parses a public key written as hex (the cluster file's form).
pub fn public_key_from_hex(s: &str) -> Result<PublicKey, CryptoError> {
    let bytes = hex::decode(s.trim()).map_err(|e| CryptoError::BadIdentityFile {
        path: PathBuf::from("<hex public key>"),
        reason: e.to_string(),
    })?;
    PublicKey::from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kp = Keypair::generate().expect("keygen");
        let (sk, pk) = write_identity(dir.path(), &kp).expect("write");
        let mode = fs::metadata(&sk).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_keypair(dir.path()).expect("load");
        assert_eq!(loaded.public(), kp.public());
        assert_eq!(&load_public_key(&pk).expect("pub"), kp.public());
        // Never overwrite an existing key.
        assert!(matches!(write_identity(dir.path(), &kp), Err(CryptoError::Io { .. })));
        let hexed = hex::encode(kp.public().as_bytes());
        assert_eq!(&public_key_from_hex(&hexed).expect("hex"), kp.public());
    }

    #[test]
    fn damaged_files_are_typed_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kp = Keypair::generate().expect("keygen");
        let (sk, pk) = write_identity(dir.path(), &kp).expect("write");
        let good = fs::read(&sk).expect("read");

        fs::write(&sk, &good[..good.len() - 1]).expect("w");
        assert!(matches!(load_keypair(dir.path()), Err(CryptoError::BadIdentityFile { .. })));

        let mut corrupt = good.clone();
        corrupt[500] ^= 1;
        fs::write(&sk, &corrupt).expect("w");
        assert!(matches!(load_keypair(dir.path()), Err(CryptoError::BadIdentityFile { .. })));

        let mut other_alg = good.clone();
        other_alg[8] = 0x44;
        fs::write(&sk, &other_alg).expect("w");
        assert!(matches!(load_keypair(dir.path()), Err(CryptoError::WrongAlgorithm { found: 0x44, .. })));

        // A well-formed file whose public half belongs to another key.
        let other = Keypair::generate().expect("keygen");
        let mut body = good[..good.len() - 32].to_vec();
        let pk_at = 9 + SECRET_KEY_BYTES;
        body[pk_at..].copy_from_slice(other.public().as_bytes());
        fs::write(&sk, seal(body)).expect("w");
        assert!(matches!(load_keypair(dir.path()), Err(CryptoError::KeyMismatch { .. })));

        fs::write(&pk, b"PQDAGSK\x01garbage").expect("w");
        assert!(matches!(load_public_key(&pk), Err(CryptoError::BadIdentityFile { .. })));
        fs::remove_file(&sk).expect("rm");
        assert!(matches!(load_keypair(dir.path()), Err(CryptoError::Io { .. })));
        assert!(public_key_from_hex("zz").is_err());
    }
}
