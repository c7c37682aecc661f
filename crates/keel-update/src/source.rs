//! Where a release tree is read from: a web server over HTTP(S) (Range
//! requests per chunk) or a directory (offline `apply`, `file://`), behind
//! one small trait so the agent and its tests do not care which.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
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
}
