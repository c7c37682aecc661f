//! Signature checks: detached minisign (Ed25519, pre-hashed) signatures
//! over `channel.json` and `manifest.json`, verified with `minisign-verify`
//! against a set of trusted public keys (several at once, for rotation).
//!
//! The signature's *trusted comment* (covered by the global signature)
//! binds the document to what it is for:
//!
//! ```text
//! keel-release/1 manifest channel=stable arch=x86_64 version=0.2.0
//! keel-release/1 channel channel=stable arch=x86_64
//! keel-release/1 installer channel=stable arch=x86_64 version=0.2.0
//! ```
//!
//! The last is the static `keel-install` binary published with a version,
//! for `minisign -Vm keel-install -p key.pub` on any Linux; its kind word
//! keeps it from ever passing as a document's signature.
//!
//! A verifier checks the comment against both the request (the channel and
//! arch the client asked for) and the document's own fields, so a genuine
//! signature for another channel, architecture, version or document kind
//! cannot be replayed. Extra `key=value` words (a signer's timestamp) are
//! ignored. Legacy (non-pre-hashed) signatures are refused.

use std::fmt;
use std::path::Path;

use minisign_verify::{PublicKey, Signature};

use crate::doc::{Channel, ChannelEntry, DocError, Manifest, Sha256};
use crate::version::Version;

/// First word of every trusted comment Keel writes.
pub const COMMENT_TAG: &str = "keel-release/1";
/// Where the image keeps its trusted public keys (`*.pub`, minisign format).
pub const KEYS_DIR: &str = "/usr/share/keel/update-keys";

/// Which document a signature is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// `channel.json`
    Channel,
    /// `manifest.json`
    Manifest,
    /// The static `keel-install` binary of a version.
    Installer,
}

impl DocKind {
    fn word(self) -> &'static str {
        match self {
            DocKind::Channel => "channel",
            DocKind::Manifest => "manifest",
            DocKind::Installer => "installer",
        }
    }
    fn file(self) -> &'static str {
        match self {
            DocKind::Channel => crate::doc::CHANNEL_FILE,
            DocKind::Manifest => crate::doc::MANIFEST_FILE,
            DocKind::Installer => crate::doc::INSTALLER_FILE,
        }
    }
}

/// What a signature says it signs: the trusted comment, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFor {
    /// Document kind.
    pub kind: DocKind,
    /// Channel.
    pub channel: String,
    /// Architecture.
    pub arch: String,
    /// Version (manifests and the installer).
    pub version: Option<Version>,
}

impl SignedFor {
    /// What a channel.json's signature must say.
    pub fn channel(c: &Channel) -> SignedFor {
        SignedFor {
            kind: DocKind::Channel,
            channel: c.channel.clone(),
            arch: c.arch.clone(),
            version: None,
        }
    }

    /// What a manifest.json's signature must say.
    pub fn manifest(m: &Manifest) -> SignedFor {
        SignedFor {
            kind: DocKind::Manifest,
            channel: m.channel.clone(),
            arch: m.arch.clone(),
            version: Some(m.version.clone()),
        }
    }

    /// What the signature of a version's `keel-install` must say.
    pub fn installer(channel: &str, arch: &str, version: &Version) -> SignedFor {
        SignedFor {
            kind: DocKind::Installer,
            channel: channel.to_string(),
            arch: arch.to_string(),
            version: Some(version.clone()),
        }
    }

    /// The trusted comment.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{COMMENT_TAG} {} channel={} arch={}",
            self.kind.word(),
            self.channel,
            self.arch
        );
        if let Some(v) = &self.version {
            s.push_str(&format!(" version={v}"));
        }
        s
    }

    /// Parse a trusted comment.
    pub fn parse(comment: &str) -> Result<SignedFor, SignError> {
        let bad = |why: &str| SignError::BadComment {
            comment: comment.chars().take(200).collect(),
            why: why.to_string(),
        };
        let mut words = comment.split_ascii_whitespace();
        if words.next() != Some(COMMENT_TAG) {
            return Err(bad(
                "not a Keel release signature (first word is not keel-release/1)",
            ));
        }
        let kind = match words.next() {
            Some("channel") => DocKind::Channel,
            Some("manifest") => DocKind::Manifest,
            Some("installer") => DocKind::Installer,
            _ => {
                return Err(bad(
                    "second word is neither channel, manifest nor installer",
                ))
            }
        };
        let (mut channel, mut arch, mut version) = (None, None, None);
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(bad("a word is not key=value"));
            };
            let slot = match k {
                "channel" => &mut channel,
                "arch" => &mut arch,
                "version" => &mut version,
                _ => continue,
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(bad(&format!("{k}= given twice")));
            }
        }
        let version = match (kind, version) {
            (DocKind::Manifest | DocKind::Installer, Some(v)) => {
                Some(Version::parse(&v).map_err(|e| bad(&e.to_string()))?)
            }
            (DocKind::Manifest, None) => return Err(bad("manifest signature without version=")),
            (DocKind::Installer, None) => return Err(bad("installer signature without version=")),
            (DocKind::Channel, Some(_)) => return Err(bad("channel signature with version=")),
            (DocKind::Channel, None) => None,
        };
        Ok(SignedFor {
            kind,
            channel: channel.ok_or_else(|| bad("no channel="))?,
            arch: arch.ok_or_else(|| bad("no arch="))?,
            version,
        })
    }
}

impl fmt::Display for SignedFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Why a signature or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A public key file that is not a minisign public key.
    #[error("public key {name}: not a minisign Ed25519 public key: {source}")]
    BadKey {
        /// File or key name.
        name: String,
        /// What minisign-verify said.
        source: minisign_verify::Error,
    },
    /// Reading a key directory or file.
    #[error("reading trusted keys from {path}: {source}")]
    KeyIo {
        /// Path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// No trusted key at all.
    #[error("no trusted public keys (looked in {0})")]
    NoKeys(String),
    /// The `.minisig` file does not parse.
    #[error("{doc}.minisig: not a minisign signature: {source}")]
    BadSignatureFile {
        /// Document name.
        doc: &'static str,
        /// What minisign-verify said.
        source: minisign_verify::Error,
    },
    /// Signed by a key that is not trusted.
    #[error(
        "{doc}: signed by key {key_id}, which is not among the {trusted} trusted keys ({list})"
    )]
    UnknownKey {
        /// Document name.
        doc: &'static str,
        /// Key id in the signature.
        key_id: String,
        /// How many keys are trusted.
        trusted: usize,
        /// Their ids.
        list: String,
    },
    /// The key is trusted but the signature does not verify (tampered document or comment).
    #[error("{doc}: signature by key {key_id} ({name}) does not verify: {source}")]
    Invalid {
        /// Document name.
        doc: &'static str,
        /// Key id.
        key_id: String,
        /// Key name.
        name: String,
        /// What minisign-verify said.
        source: minisign_verify::Error,
    },
    /// The trusted comment is not Keel's.
    #[error("signature's trusted comment {comment:?}: {why}")]
    BadComment {
        /// The comment (first 200 characters).
        comment: String,
        /// What is wrong.
        why: String,
    },
}

/// Why a signed document was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature.
    #[error(transparent)]
    Signature(#[from] SignError),
    /// The document.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// A valid signature for something else (replay), or a document that
    /// says something else than its signature or the request.
    #[error("{doc}: {what} is {found:?} but {source_} expects {expected:?}")]
    Mismatch {
        /// Document name.
        doc: &'static str,
        /// Field.
        what: &'static str,
        /// What the document or signature says.
        found: String,
        /// What was expected.
        expected: String,
        /// Who expected it ("the request", "the signature", "channel.json").
        source_: &'static str,
    },
}

/// One trusted public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where it came from (file name).
    pub name: String,
    /// Key id, as `minisign` prints it (16 upper-case hex digits).
    pub key_id: String,
    key: PublicKey,
}

/// The set of trusted keys.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

/// Standard base64 (RFC 4648, padded), for reading key ids out of minisign
/// lines: minisign-verify decodes but does not expose the key id, and the
/// id is what an operator needs to see when rotation goes wrong.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Key id from a base64 key or signature line (bytes 2..10, little-endian),
/// printed as minisign does.
fn key_id_of_line(line: &str) -> Option<String> {
    let b = b64_decode(line)?;
    let id: [u8; 8] = b.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

impl TrustedKeys {
    /// An empty set.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Add a key from the text of a minisign `.pub` file (comment line +
    /// base64 line) or a bare base64 line.
    pub fn add(&mut self, name: &str, text: &str) -> Result<&TrustedKey, SignError> {
        let bad = |source| SignError::BadKey {
            name: name.to_string(),
            source,
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let b64 = match lines.as_slice() {
            [one] => *one,
            [c, k, ..] if c.starts_with("untrusted comment:") => *k,
            _ => return Err(bad(minisign_verify::Error::InvalidEncoding)),
        };
        let key = PublicKey::from_base64(b64).map_err(bad)?;
        let key_id =
            key_id_of_line(b64).ok_or_else(|| bad(minisign_verify::Error::InvalidEncoding))?;
        self.keys.push(TrustedKey {
            name: name.to_string(),
            key_id,
            key,
        });
        Ok(&self.keys[self.keys.len() - 1])
    }

    /// Every `*.pub` file of a directory, in name order. An empty or missing
    /// directory is an error: a client with no trusted key can verify nothing.
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, SignError> {
        let io = |source| SignError::KeyIo {
            path: dir.display().to_string(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        names.sort();
        let mut keys = TrustedKeys::new();
        for p in names {
            let text = std::fs::read_to_string(&p).map_err(|source| SignError::KeyIo {
                path: p.display().to_string(),
                source,
            })?;
            keys.add(&p.display().to_string(), &text)?;
        }
        if keys.is_empty() {
            return Err(SignError::NoKeys(dir.display().to_string()));
        }
        Ok(keys)
    }

    /// The keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Check a detached signature over `data`; returns the trusted comment.
    pub fn verify(
        &self,
        doc: &'static str,
        data: &[u8],
        sig_text: &str,
    ) -> Result<String, SignError> {
        let sig = Signature::decode(sig_text)
            .map_err(|source| SignError::BadSignatureFile { doc, source })?;
        let sig_id = sig_text
            .lines()
            .nth(1)
            .and_then(key_id_of_line)
            .unwrap_or_else(|| "?".into());
        if self.keys.is_empty() {
            return Err(SignError::NoKeys("the trusted key set".into()));
        }
        for k in &self.keys {
            match k.key.verify(data, &sig, false) {
                Ok(()) => return Ok(sig.trusted_comment().to_string()),
                Err(minisign_verify::Error::UnexpectedKeyId) => continue,
                Err(source) => {
                    return Err(SignError::Invalid {
                        doc,
                        key_id: k.key_id.clone(),
                        name: k.name.clone(),
                        source,
                    })
                }
            }
        }
        Err(SignError::UnknownKey {
            doc,
            key_id: sig_id,
            trusted: self.keys.len(),
            list: self
                .keys
                .iter()
                .map(|k| k.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The configured channel.
    pub channel: &'a str,
    /// The machine's architecture.
    pub arch: &'a str,
}

fn same(
    doc: &'static str,
    what: &'static str,
    found: &str,
    expected: &str,
    source_: &'static str,
) -> Result<(), VerifyError> {
    if found == expected {
        Ok(())
    } else {
        Err(VerifyError::Mismatch {
            doc,
            what,
            found: found.to_string(),
            expected: expected.to_string(),
            source_,
        })
    }
}

fn check_comment(
    kind: DocKind,
    comment: &str,
    expect: &Expect<'_>,
) -> Result<SignedFor, VerifyError> {
    let s = SignedFor::parse(comment)?;
    let doc = kind.file();
    same(
        doc,
        "the signature's document kind",
        s.kind.word(),
        kind.word(),
        "the request",
    )?;
    same(
        doc,
        "the signature's channel",
        &s.channel,
        expect.channel,
        "the request",
    )?;
    same(
        doc,
        "the signature's arch",
        &s.arch,
        expect.arch,
        "the request",
    )?;
    Ok(s)
}

/// Verify and parse `channel.json` for the channel and arch asked for.
pub fn verify_channel(
    keys: &TrustedKeys,
    data: &[u8],
    sig: &str,
    expect: &Expect<'_>,
) -> Result<Channel, VerifyError> {
    let doc = crate::doc::CHANNEL_FILE;
    let comment = keys.verify(doc, data, sig)?;
    check_comment(DocKind::Channel, &comment, expect)?;
    let c = Channel::parse(data)?;
    same(
        doc,
        "channel",
        &c.channel,
        expect.channel,
        "the signature and the request",
    )?;
    same(
        doc,
        "arch",
        &c.arch,
        expect.arch,
        "the signature and the request",
    )?;
    Ok(c)
}

/// Verify and parse a `manifest.json` for the channel and arch asked for.
/// With `entry` (the version's line in a verified channel.json), also
/// check the manifest's SHA-256 and version against it.
pub fn verify_manifest(
    keys: &TrustedKeys,
    data: &[u8],
    sig: &str,
    expect: &Expect<'_>,
    entry: Option<&ChannelEntry>,
) -> Result<Manifest, VerifyError> {
    let doc = crate::doc::MANIFEST_FILE;
    let comment = keys.verify(doc, data, sig)?;
    let signed = check_comment(DocKind::Manifest, &comment, expect)?;
    if let Some(e) = entry {
        same(
            doc,
            "SHA-256",
            &Sha256::of(data).to_string(),
            &e.manifest_sha256.to_string(),
            "channel.json",
        )?;
    }
    let m = Manifest::parse(data)?;
    same(
        doc,
        "channel",
        &m.channel,
        expect.channel,
        "the signature and the request",
    )?;
    same(
        doc,
        "arch",
        &m.arch,
        expect.arch,
        "the signature and the request",
    )?;
    let sv = signed.version.map(|v| v.to_string()).unwrap_or_default();
    same(doc, "version", m.version.as_str(), &sv, "the signature")?;
    if let Some(e) = entry {
        same(
            doc,
            "version",
            m.version.as_str(),
            e.version.as_str(),
            "channel.json",
        )?;
    }
    Ok(m)
}

/// Verify a published `keel-install` binary (`data`) against its
/// `.minisig` for the channel and arch asked for; returns what the
/// signature says (with the version it was released with).
pub fn verify_installer(
    keys: &TrustedKeys,
    data: &[u8],
    sig: &str,
    expect: &Expect<'_>,
) -> Result<SignedFor, VerifyError> {
    let comment = keys.verify(crate::doc::INSTALLER_FILE, data, sig)?;
    check_comment(DocKind::Installer, &comment, expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_comment_roundtrip() {
        let v = Version::parse("0.2.0").unwrap();
        let s = SignedFor::installer("stable", "x86_64", &v);
        assert_eq!(
            s.render(),
            "keel-release/1 installer channel=stable arch=x86_64 version=0.2.0"
        );
        assert_eq!(SignedFor::parse(&s.render()).unwrap(), s);
        assert!(SignedFor::parse("keel-release/1 installer channel=stable arch=x86_64").is_err());
    }

    #[test]
    fn comment_roundtrip_and_refusals() {
        let m = crate::doc::tests::manifest("0.2.0");
        let s = SignedFor::manifest(&m);
        assert_eq!(
            s.render(),
            "keel-release/1 manifest channel=stable arch=x86_64 version=0.2.0"
        );
        assert_eq!(SignedFor::parse(&s.render()).unwrap(), s);
        assert_eq!(
            SignedFor::parse(&(s.render() + " timestamp=17")).unwrap(),
            s
        );
        for bad in [
            "timestamp:1700000000",
            "keel-release/1 manifest channel=stable arch=x86_64",
            "keel-release/1 channel channel=stable arch=x86_64 version=1",
            "keel-release/1 manifest channel=a channel=b arch=x version=1",
            "keel-release/1 other channel=a arch=x",
            "keel-release/1 channel arch=x",
            "keel-release/1 channel channel=a arch",
        ] {
            assert!(SignedFor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_key_id() {
        // From minisign's documentation: the key id is bytes 2..10 of the key line.
        let line = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        let b = b64_decode(line).unwrap();
        assert_eq!(b.len(), 42);
        assert_eq!(&b[..2], b"Ed");
        assert_eq!(key_id_of_line(line).unwrap(), "E7620F1842B4E81F");
        assert!(b64_decode("a$b").is_none());
    }
}
