//! Where a release tree is read from: a web server over HTTP(S) (Range
//! requests per chunk), a directory (offline `apply`, `file://`) or a
//! single-file bundle (offline `apply` of a tar of the tree, as a file or
//! raw on a block device), behind one small trait so the agent and its
//! tests do not care which.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// A read from the tree failed.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The server could not be reached, or the transfer broke off or stalled.
    #[error("{url}: {message}")]
    Transport {
        /// What was asked for.
        url: String,
        /// What happened.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server ignored the Range header or sent another range.
    #[error("{url}: asked for bytes {start}-{end}, the server answered {answer}")]
    Range {
        /// What was asked for.
        url: String,
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
        /// What came back instead.
        answer: String,
    },
    /// A document larger than allowed.
    #[error("{url}: more than {max} bytes")]
    TooLarge {
        /// What was asked for.
        url: String,
        /// The limit.
        max: usize,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A release tree.
pub trait Source {
    /// A whole (small) file, at most `max` bytes; `rel` is relative to the
    /// tree's base.
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, FetchError>;
    /// `len` bytes of `rel` from `offset`; exactly that many or an error.
    fn get_range(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError>;
    /// The base, for messages.
    fn describe(&self) -> String;
}

/// Timeouts of HTTP transfers.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting (DNS, TCP, TLS).
    pub connect: Duration,
    /// No byte received for this long: the transfer fails (a stalled server).
    pub read: Duration,
    /// One whole request (a 4 MiB chunk at 1 Mbit/s takes ~35 s).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            request: Duration::from_secs(600),
        }
    }
}

/// A tree on a web server. Proxies come from `https_proxy`/`http_proxy`/
/// `all_proxy` with `no_proxy` exceptions (ureq's environment handling).
#[derive(Debug)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    /// A client for the tree at `base` (no trailing slash needed).
    pub fn new(base: &str, t: Timeouts) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(t.connect))
            .timeout_recv_response(Some(t.read))
            .timeout_recv_body(Some(t.request))
            .timeout_per_call(Some(t.request))
            // The per-read timeout is what catches a server that stops
            // sending halfway through a body.
            .timeout_per_read(Some(t.read))
            .user_agent(concat!("keel-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel.trim_start_matches('/'))
    }
}

fn transport(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    }
}

fn read_limited(url: &str, r: impl Read, max: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    r.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| transport(url, e))?;
    Ok(out)
}

impl Source for Http {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        let url = self.url(rel);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status { url, status });
        }
        let body = read_limited(&url, resp.body_mut().as_reader(), max as u64)?;
        if body.len() > max {
            return Err(FetchError::TooLarge { url, max });
        }
        Ok(body)
    }

    fn get_range(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let url = self.url(rel);
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset + len - 1;
        let mut resp = self
            .agent
            .get(&url)
            .header("Range", &format!("bytes={offset}-{end}"))
            .call()
            .map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        let range_err = |answer: String| FetchError::Range {
            url: url.clone(),
            start: offset,
            end,
            answer,
        };
        match status {
            206 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let want = format!("bytes {offset}-{end}/");
                if !cr.starts_with(&want) {
                    return Err(range_err(format!("Content-Range {cr:?}")));
                }
            }
            200 => return Err(range_err("the whole file (200, no Range support)".into())),
            _ => return Err(FetchError::Status { url, status }),
        }
        let body = read_limited(&url, resp.body_mut().as_reader(), len)?;
        if body.len() as u64 != len {
            return Err(transport(
                &url,
                format!("the range ended after {} of {len} bytes", body.len()),
            ));
        }
        Ok(body)
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// A tree in a directory (a USB stick, a second disk, `file://`).
#[derive(Debug)]
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    /// The tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Dir {
        Dir { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

impl Source for Dir {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        let path = self.path(rel);
        let f = File::open(&path).map_err(|source| FetchError::File {
            path: path.clone(),
            source,
        })?;
        let mut out = Vec::new();
        f.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|source| FetchError::File {
                path: path.clone(),
                source,
            })?;
        if out.len() > max {
            return Err(FetchError::TooLarge {
                url: path.display().to_string(),
                max,
            });
        }
        Ok(out)
    }

    fn get_range(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let path = self.path(rel);
        let io = |source| FetchError::File {
            path: path.clone(),
            source,
        };
        let mut f = File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut out = Vec::new();
        f.take(len).read_to_end(&mut out).map_err(io)?;
        if out.len() as u64 != len {
            return Err(FetchError::File {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} of {len} bytes at offset {offset}", out.len()),
                ),
            });
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// At most this many files in a bundle (a release tree has a handful per
/// version; a device full of headers is not a bundle).
const MAX_BUNDLE_FILES: usize = 100_000;

/// A release tree in one file, for a USB stick or a second disk: an
/// uncompressed tar of the tree (`tar -cf keel.tar -C TREE .`), as a file on
/// any filesystem or written raw onto a block device (`dd if=keel.tar
/// of=/dev/sdX`: the tar's end marker ends it, whatever follows on the
/// device). The chunks are compressed already, so the tar is not, and every
/// read is a seek: the index of names to byte ranges is built once from the
/// headers (the `tar` crate seeks over the payloads), then no byte is read
/// twice. Only regular files count. Nothing here is trusted: the signed
/// documents and the chunk hashes are checked by the agent as for any source.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    file: File,
    /// Name in the tree → (offset in the file, size).
    index: HashMap<String, (u64, u64)>,
}

/// A tar entry's name as a tree-relative name: `./` and `/` prefixes
/// dropped; `..` refused (a bundle names files inside its tree only).
fn bundle_name(p: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| format!("{}: a name that is not UTF-8", p.display()))?,
            ),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{}: a name outside the tree", p.display()))
            }
        }
    }
    Ok(parts.join("/"))
}

/// The index of a tar's regular files: name → (data offset, size). Errors
/// name the entry and its header's offset.
pub fn index_tar<R: Read + Seek>(r: R) -> Result<HashMap<String, (u64, u64)>, String> {
    let mut archive = tar::Archive::new(r);
    let entries = archive.entries_with_seek().map_err(|e| e.to_string())?;
    let mut index = HashMap::new();
    for (n, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| format!("tar entry {}: {e}", n + 1))?;
        let at = entry.raw_header_position();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("tar entry {} at offset {at}: {e}", n + 1))?;
        let name = bundle_name(&path).map_err(|e| format!("tar entry at offset {at}: {e}"))?;
        if index.len() >= MAX_BUNDLE_FILES {
            return Err(format!("more than {MAX_BUNDLE_FILES} files"));
        }
        // As tar itself: a later entry of the same name replaces an earlier one.
        index.insert(name, (entry.raw_file_position(), entry.size()));
    }
    if index.is_empty() {
        return Err("no files: not a tar of a release tree".into());
    }
    Ok(index)
}

impl Bundle {
    /// The bundle at `path` (a file or a block device), its index read.
    pub fn open(path: &Path) -> Result<Bundle, FetchError> {
        let file = File::open(path).map_err(|source| FetchError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let index = index_tar(&file).map_err(|e| FetchError::File {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a release bundle (an uncompressed tar of a release tree): {e}"),
            ),
        })?;
        Ok(Bundle {
            path: path.to_path_buf(),
            file,
            index,
        })
    }

    /// Whether the bundle holds `rel`.
    pub fn has(&self, rel: &str) -> bool {
        self.index.contains_key(rel.trim_start_matches('/'))
    }

    fn error(&self, kind: std::io::ErrorKind, msg: String) -> FetchError {
        FetchError::File {
            path: self.path.clone(),
            source: std::io::Error::new(kind, msg),
        }
    }

    fn read_at(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let rel = rel.trim_start_matches('/');
        let &(start, size) = self.index.get(rel).ok_or_else(|| {
            self.error(
                std::io::ErrorKind::NotFound,
                format!("{rel}: not in the bundle"),
            )
        })?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(self.error(
                std::io::ErrorKind::UnexpectedEof,
                format!("{rel}: {len} bytes at offset {offset} of a {size}-byte file"),
            ));
        }
        let io = |source| FetchError::File {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(start + offset))
            .map_err(io)?;
        let mut out = Vec::new();
        (&self.file).take(len).read_to_end(&mut out).map_err(io)?;
        if out.len() as u64 != len {
            return Err(self.error(
                std::io::ErrorKind::UnexpectedEof,
                format!("{rel}: the bundle ends after {} of {len} bytes", out.len()),
            ));
        }
        Ok(out)
    }
}

impl Source for Bundle {
    fn get(&mut self, rel: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        let size = self
            .index
            .get(rel.trim_start_matches('/'))
            .map_or(0, |e| e.1);
        if size > max as u64 {
            return Err(FetchError::TooLarge {
                url: format!("{}: {rel}", self.path.display()),
                max,
            });
        }
        self.read_at(rel, 0, size)
    }

    fn get_range(&mut self, rel: &str, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        self.read_at(rel, offset, len)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The source for a configured base URL: `file://` is a directory.
pub fn for_url(base: &str, t: Timeouts) -> Box<dyn Source> {
    match base.strip_prefix("file://") {
        Some(path) => Box::new(Dir::new(path)),
        None => Box::new(Http::new(base, t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_reads_ranges_exactly() {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(t.path().join("s")).expect("mkdir");
        std::fs::write(t.path().join("s/f"), b"0123456789").expect("write");
        let mut d = Dir::new(t.path());
        assert_eq!(d.get_range("s/f", 2, 3).expect("range"), b"234");
        assert_eq!(d.get("s/f", 10).expect("get"), b"0123456789");
        assert!(matches!(d.get("s/f", 9), Err(FetchError::TooLarge { .. })));
        let e = d.get_range("s/f", 8, 5).expect_err("short");
        assert!(e.to_string().contains("2 of 5 bytes at offset 8"), "{e}");
        assert!(d.get("nope", 10).is_err());
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn bundle_reads_files_of_a_tar_and_ranges_exactly() {
        let t = tempfile::tempdir().expect("tmp");
        let long = format!("stable/{}/usr.0001", "v".repeat(120));
        let mut tar = tar_of(&[
            ("./stable/channel.json", b"{}"),
            ("stable/1.2/usr.0000", b"0123456789"),
            (&long, b"long name"),
        ]);
        // Raw on a device: whatever follows the tar's end does not count.
        tar.extend(std::iter::repeat_n(0xa5, 4096));
        let p = t.path().join("b.tar");
        std::fs::write(&p, &tar).expect("write");
        let mut b = Bundle::open(&p).expect("open");
        assert!(b.has("stable/channel.json"));
        assert_eq!(b.get("stable/channel.json", 10).expect("get"), b"{}");
        assert_eq!(b.get_range("stable/1.2/usr.0000", 2, 3).expect("r"), b"234");
        assert_eq!(b.get(&long, 100).expect("long"), b"long name");
        assert!(matches!(
            b.get("stable/1.2/usr.0000", 9),
            Err(FetchError::TooLarge { .. })
        ));
        let e = b.get_range("stable/1.2/usr.0000", 8, 5).expect_err("short");
        assert!(
            e.to_string()
                .contains("5 bytes at offset 8 of a 10-byte file"),
            "{e}"
        );
        let e = b.get("stable/2.0/manifest.json", 10).expect_err("missing");
        assert!(
            e.to_string()
                .contains("stable/2.0/manifest.json: not in the bundle"),
            "{e}"
        );
        assert!(e.to_string().contains("b.tar"), "{e}");
    }

    #[test]
    fn bundle_refuses_what_is_not_a_tar_of_a_tree() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("x");
        for (bytes, want) in [
            (vec![0u8; 4096], "no files"),
            (b"#cloud-config\n".repeat(100), "not a release bundle"),
        ] {
            std::fs::write(&p, &bytes).expect("write");
            let e = Bundle::open(&p).expect_err("not a bundle");
            assert!(e.to_string().contains(want), "{e}");
        }
        // A corrupted header: its checksum no longer matches.
        let mut tar = tar_of(&[("stable/channel.json", b"{}")]);
        tar[0] ^= 0x20;
        std::fs::write(&p, &tar).expect("write");
        assert!(Bundle::open(&p).is_err());
        // A name outside the tree.
        let mut tar = tar_of(&[("stable/channel.json", b"{}")]);
        tar[..20].copy_from_slice(b"../../etc/passwd\0\0\0\0");
        let sum: u32 = tar[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        std::fs::write(&p, &tar).expect("write");
        let e = Bundle::open(&p).expect_err("escape");
        assert!(e.to_string().contains("outside the tree"), "{e}");
    }
}
