//! Job binaries: a crate of custom jobs is uploaded to the coordinator, stored by its SHA-256,
//! and fetched by workers, who verify the hash before running it.

use std::io::Read;

use sha2::{Digest, Sha256};

/// Returns the SHA-256 of everything `r` yields, as lower-case hex.
///
/// # Errors
/// I/O errors from `r`.
pub fn sha256_hex(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// An incremental SHA-256, for data arriving in frames.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The hash of everything added, as lower-case hex.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `sha` looks like a SHA-256 in lower-case hex (it names a file).
pub fn valid_sha256(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a binary cannot run on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRunnable {
    /// It is not an ELF file.
    #[error("not a Linux executable (no ELF header)")]
    NotElf,
    /// It is built for another architecture.
    #[error("binary is built for {theirs}; this cluster runs on {ours}")]
    OtherArch {
        /// What it is built for.
        theirs: String,
        /// What this machine runs.
        ours: &'static str,
    },
}

/// Checks that `head` (the first bytes of a binary) is an executable this machine can run:
/// on Linux, an ELF file for this architecture.
///
/// # Errors
/// [`NotRunnable`], saying what the binary is and what this machine runs.
pub fn check_runnable(head: &[u8]) -> Result<(), NotRunnable> {
    if std::env::consts::OS != "linux" {
        return Ok(());
    }
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return Err(NotRunnable::NotElf);
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let (ours, want) = match std::env::consts::ARCH {
        "x86_64" => ("x86_64", 62),
        "aarch64" => ("aarch64", 183),
        _ => return Ok(()),
    };
    if machine != want {
        let theirs = match machine {
            62 => "x86_64".to_string(),
            183 => "aarch64".to_string(),
            40 => "arm".to_string(),
            3 => "x86".to_string(),
            m => format!("ELF machine {m}"),
        };
        return Err(NotRunnable::OtherArch { theirs, ours });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_headers() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(valid_sha256(&sha256_hex(&b""[..]).unwrap()));
        assert!(!valid_sha256("../../etc/passwd"));
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check_runnable(&me[..64]), Ok(()));
        if std::env::consts::OS == "linux" {
            assert!(check_runnable(b"#!/bin/sh\necho hi\n").is_err());
            let mut other = me[..64].to_vec();
            other[18] = 183;
            other[19] = 0;
            if std::env::consts::ARCH == "x86_64" {
                assert_eq!(
                    check_runnable(&other).unwrap_err().to_string(),
                    "binary is built for aarch64; this cluster runs on x86_64"
                );
            }
        }
    }
}
