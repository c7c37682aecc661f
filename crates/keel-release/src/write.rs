//! The producer side (feature `write`, host only): split a file into
//! chunks, compress each as its own zstd frame with libzstd, hash, and sign
//! documents with minisign keys (files interoperable with `minisign -V`).

use std::io::{Read, Write};
use std::path::Path;

use sha2::Digest;

use crate::doc::{Artifact, Channel, Chunk, Manifest, Sha256};
use crate::sign::SignedFor;

/// Default zstd level: artifacts are mostly already compressed (EROFS with
/// lz4hc, a zstd initramfs, a bzImage) or zeros, so higher levels buy
/// little and cost minutes on the 2-core build machine.
pub const DEFAULT_LEVEL: i32 = 9;

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading the input.
    #[error("reading the input: {0}")]
    Read(std::io::Error),
    /// Writing the compressed file.
    #[error("writing the compressed file: {0}")]
    Write(std::io::Error),
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    /// A minisign key operation.
    #[error("{what}: {msg}")]
    Key {
        /// What was being done.
        what: String,
        /// minisign's message.
        msg: String,
    },
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Compress `input` into `output` as independent zstd frames of
/// `chunk_size` uncompressed bytes each, using `threads` threads (chunks
/// are independent, so they compress in parallel in batches); returns the
/// artifact description with `file` as its file name.
pub fn compress_artifact<R: Read, W: Write>(
    file: &str,
    mut input: R,
    mut output: W,
    chunk_size: u64,
    level: i32,
    threads: usize,
) -> Result<Artifact, WriteError> {
    let cs = usize::try_from(chunk_size)
        .map_err(|_| WriteError::Read(std::io::Error::other("chunk size too large")))?;
    let threads = threads.max(1);
    let mut whole = sha2::Sha256::new();
    let mut chunks = Vec::new();
    let (mut size, mut offset) = (0u64, 0u64);
    let mut bufs: Vec<Vec<u8>> = (0..threads).map(|_| vec![0u8; cs]).collect();
    loop {
        let mut lens = Vec::with_capacity(threads);
        for b in bufs.iter_mut() {
            let n = read_full(&mut input, b).map_err(WriteError::Read)?;
            if n == 0 {
                break;
            }
            lens.push(n);
            if n < cs {
                break;
            }
        }
        if lens.is_empty() {
            break;
        }
        // Each thread compresses and hashes its chunk; the whole-file hash
        // stays sequential.
        type Done = std::io::Result<(Vec<u8>, Sha256, Sha256)>;
        let results: Vec<Done> = std::thread::scope(|s| {
            let handles: Vec<_> = bufs
                .iter()
                .zip(&lens)
                .map(|(b, &n)| {
                    s.spawn(move || {
                        let data = &b[..n];
                        let frame = zstd::bulk::compress(data, level)?;
                        let (fh, dh) = (Sha256::of(&frame), Sha256::of(data));
                        Ok((frame, fh, dh))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("compression thread panicked"))
                    })
                })
                .collect()
        });
        for ((b, &n), frame) in bufs.iter().zip(&lens).zip(results) {
            let (frame, frame_hash, data_hash) = frame.map_err(WriteError::Zstd)?;
            let data = &b[..n];
            whole.update(data);
            output.write_all(&frame).map_err(WriteError::Write)?;
            chunks.push(Chunk {
                offset,
                length: frame.len() as u64,
                compressed_sha256: frame_hash,
                size: n as u64,
                sha256: data_hash,
            });
            offset += frame.len() as u64;
            size += n as u64;
        }
        if lens.len() < threads || lens.last().is_some_and(|&n| n < cs) {
            break;
        }
    }
    output.flush().map_err(WriteError::Write)?;
    Ok(Artifact {
        file: file.to_string(),
        size,
        sha256: Sha256(whole.finalize().into()),
        compressed_size: offset,
        chunks,
    })
}

/// The raw bytes of an unencrypted minisign secret key whose checksum field
/// is all zeros: Debian's minisign 0.11 writes `-G -W` keys that way and the
/// `minisign` crate then calls them corrupted. Such a key is accepted as is;
/// signing still checks the result against the public half embedded in it.
fn unencrypted_without_checksum(text: &str) -> Option<Vec<u8>> {
    let line = text.lines().nth(1)?;
    let b = crate::sign::b64_decode(line)?;
    // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) ops(8) mem(8) keynum(8) sk(64) chk(32)
    (b.len() == 158 && &b[0..2] == b"Ed" && b[2..4] == [0, 0] && b[126..].iter().all(|&x| x == 0))
        .then_some(b)
}

/// A minisign secret key for signing release documents.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id())
    }
}

fn key_err(what: &str) -> impl Fn(minisign::PError) -> WriteError + '_ {
    move |e| WriteError::Key {
        what: what.to_string(),
        msg: e.to_string(),
    }
}

impl SigningKey {
    /// A new, unencrypted key pair (for per-build development keys).
    pub fn generate() -> Result<SigningKey, WriteError> {
        let kp = minisign::KeyPair::generate_unencrypted_keypair()
            .map_err(key_err("generating a key pair"))?;
        Ok(SigningKey {
            sk: kp.sk,
            pk: kp.pk,
        })
    }

    /// Read a minisign secret key file (`minisign -G` writes one). An
    /// encrypted key needs `password`; none is ever asked for interactively.
    pub fn load(path: &Path, password: Option<String>) -> Result<SigningKey, WriteError> {
        let what = format!("secret key {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| WriteError::Key {
            what: what.clone(),
            msg: e.to_string(),
        })?;
        Self::from_text(&what, &text, password)
    }

    /// Parse the text of a minisign secret key file.
    pub fn from_text(
        what: &str,
        text: &str,
        password: Option<String>,
    ) -> Result<SigningKey, WriteError> {
        let sk = match minisign::SecretKey::from_unencrypted_box(text.to_string().into()) {
            Ok(sk) => sk,
            Err(_) if unencrypted_without_checksum(text).is_some() => {
                unencrypted_without_checksum(text)
                    .and_then(|b| minisign::SecretKey::from_bytes(&b).ok())
                    .ok_or_else(|| WriteError::Key {
                        what: what.to_string(),
                        msg: "not a minisign secret key".into(),
                    })?
            }
            Err(e) => match password {
                Some(p) => minisign::SecretKey::from_box(text.to_string().into(), Some(p))
                    .map_err(key_err(what))?,
                None => {
                    return Err(WriteError::Key {
                        what: what.to_string(),
                        msg: format!(
                            "{e} (an encrypted key needs its password: KEEL_RELEASE_KEY_PASSWORD)"
                        ),
                    })
                }
            },
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(key_err(what))?;
        Ok(SigningKey { sk, pk })
    }

    /// The key id as minisign prints it.
    pub fn key_id(&self) -> String {
        let id: [u8; 8] = self.pk.keynum().try_into().unwrap_or_default();
        format!("{:016X}", u64::from_le_bytes(id))
    }

    /// The public key file (`minisign.pub` format).
    pub fn public_key_file(&self) -> Result<String, WriteError> {
        let b = self
            .pk
            .to_box()
            .map_err(key_err("encoding the public key"))?;
        Ok(b.to_string())
    }

    /// The secret key file, unencrypted (`minisign -G -W` format).
    pub fn secret_key_file(&self) -> Result<String, WriteError> {
        let b = self
            .sk
            .to_box(None)
            .map_err(key_err("encoding the secret key"))?;
        Ok(b.to_string())
    }

    /// A detached signature (`.minisig` text) over `data` with `comment` as
    /// the trusted comment.
    pub fn sign(&self, data: &[u8], comment: &str) -> Result<String, WriteError> {
        let untrusted = format!("signature from keel-release key {}", self.key_id());
        let b = minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(comment),
            Some(&untrusted),
        )
        .map_err(key_err("signing"))?;
        Ok(b.to_string())
    }

    /// `channel.json` bytes and their signature.
    pub fn sign_channel(&self, c: &Channel) -> Result<(Vec<u8>, String), WriteError> {
        let json = c.to_json();
        let sig = self.sign(&json, &SignedFor::channel(c).render())?;
        Ok((json, sig))
    }

    /// The signature of a version's static `keel-install` binary
    /// (trusted comment [`SignedFor::installer`]).
    pub fn sign_installer(
        &self,
        data: &[u8],
        channel: &str,
        arch: &str,
        version: &crate::Version,
    ) -> Result<String, WriteError> {
        self.sign(data, &SignedFor::installer(channel, arch, version).render())
    }

    /// `manifest.json` bytes and their signature.
    pub fn sign_manifest(&self, m: &Manifest) -> Result<(Vec<u8>, String), WriteError> {
        let json = m.to_json();
        let sig = self.sign(&json, &SignedFor::manifest(m).render())?;
        Ok((json, sig))
    }
}
