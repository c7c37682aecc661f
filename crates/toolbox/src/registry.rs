//! A minimal OCI distribution API v2 client: the `WWW-Authenticate`
//! challenges (Basic with the credentials of [`crate::auth`]; Bearer token
//! services, anonymous, with user and password, or with an identity
//! token as an OAuth2 refresh token), manifests and blobs, every byte
//! verified against its digest while it streams. HTTP goes through `ureq`
//! (rustls with the ring provider, Mozilla roots compiled in): no daemon, no
//! OpenSSL, small static binary.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::auth::{AuthError, Found, Secret};
use crate::oci::{self, Document, OciError};
use crate::reference::{Digest, RegistryRef};
use crate::source::{layers_from, HashReader, Layer, Resolved};

/// Registry errors; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (network, DNS, timeout).
    #[error("{url}: registry unreachable: {source}")]
    Unreachable {
        /// Request URL.
        url: String,
        /// Transport error.
        source: ureq::Error,
    },
    /// Any other HTTP-level failure.
    #[error("{url}: {source}")]
    Http {
        /// Request URL.
        url: String,
        /// Error.
        source: ureq::Error,
    },
    /// Unexpected status.
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        /// Request URL.
        url: String,
        /// Status code.
        status: u16,
        /// A hint.
        detail: String,
    },
    /// The auth challenge or token answer was unusable.
    #[error("{url}: authentication: {msg}")]
    Auth {
        /// URL.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// The registry wants credentials and none were found.
    #[error("{registry}: HTTP 401 unauthorized: the registry needs credentials and none were found for {registry}/{repository} in {looked}; run `toolbox login {registry}`")]
    NeedCredentials {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// The auth files looked at.
        looked: String,
    },
    /// The registry (or its token service) refused the credentials.
    #[error("{registry}: HTTP {status} unauthorized: the registry refused the {found}: wrong user name or password, or no pull access to {repository}")]
    Denied {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// Where the credentials came from (never the secret).
        found: String,
        /// 401 or 403.
        status: u16,
    },
    /// Reading the auth files.
    #[error(transparent)]
    Credentials(#[from] AuthError),
    /// Bad document.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Writing the download.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: io::Error,
    },
}

impl RegistryError {
    /// True when the registry could not be reached at all (the case where a
    /// local image source may be used instead).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

fn classify(url: &str, e: ureq::Error) -> RegistryError {
    match e {
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(_) => RegistryError::Unreachable {
            url: url.to_string(),
            source: e,
        },
        other => RegistryError::Http {
            url: url.to_string(),
            source: other,
        },
    }
}

/// The scheme of a `WWW-Authenticate` challenge, lowercase (`basic`,
/// `bearer`).
pub fn challenge_scheme(h: &str) -> String {
    h.split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(',')
        .to_ascii_lowercase()
}

/// Parse `Bearer realm="…",service="…",scope="…"` into its parameters.
pub fn parse_challenge(h: &str) -> Option<Vec<(String, String)>> {
    let h = h.trim();
    let rest = h
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .and_then(|_| h.get(7..))?;
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        out.push((k, val));
        s = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

fn pct(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// One registry repository.
#[derive(Debug)]
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    host: String,
    repo: String,
    /// The `Authorization` header value in use (Basic or Bearer).
    authorization: Option<Secret>,
    credential: Option<Found>,
    looked: String,
}

impl Registry {
    /// A client for `r`.
    pub fn new(r: &RegistryRef) -> Registry {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails (and can be resumed) instead of
            // hanging; no limit on a whole blob, which may be large.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent("keel-toolbox/0.1")
            .build()
            .new_agent();
        Registry {
            agent,
            base: format!("{}://{}", r.scheme(), r.api_host()),
            host: r.host.clone(),
            repo: r.repository.clone(),
            authorization: None,
            credential: None,
            looked: "no auth file (HOME, XDG_RUNTIME_DIR and REGISTRY_AUTH_FILE are unset)".into(),
        }
    }

    /// Use `found` when the registry asks for credentials; `looked` lists
    /// the auth files searched, for the error when it asks and there are none.
    pub fn with_credentials(mut self, found: Option<Found>, looked: String) -> Self {
        self.credential = found;
        if !looked.is_empty() {
            self.looked = looked;
        }
        self
    }

    fn need_credentials(&self) -> RegistryError {
        RegistryError::NeedCredentials {
            registry: self.host.clone(),
            repository: self.repo.clone(),
            looked: self.looked.clone(),
        }
    }

    /// The error for a refusal: denied when credentials were sent, else
    /// a request for them.
    fn refused(&self, status: u16) -> RegistryError {
        match &self.credential {
            Some(f) => RegistryError::Denied {
                registry: self.host.clone(),
                repository: self.repo.clone(),
                found: f.to_string(),
                status,
            },
            None => self.need_credentials(),
        }
    }

    /// `GET /v2/` with the credentials: what `toolbox login` checks before
    /// it writes them.
    pub fn ping(&mut self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.get_url(&url, None, None)?;
        match resp.status().as_u16() {
            200 => Ok(()),
            status => Err(RegistryError::Status {
                url,
                status,
                detail: String::new(),
            }),
        }
    }

    fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some(n) = range_from {
            req = req.header("Range", &format!("bytes={n}-"));
        }
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a.expose());
        }
        req.call().map_err(|e| classify(url, e))
    }

    /// GET with one round of token auth on 401 (also when a token expired
    /// during a long pull: Docker Hub tokens last five minutes).
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        self.get_from(path, accept, None)
    }

    fn get_from(
        &mut self,
        path: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repo);
        self.get_url(&url, accept, range_from)
    }

    fn get_url(
        &mut self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let resp = self.send(url, accept, range_from)?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        // Basic credentials do not expire: a 401 with them is a refusal.
        if self
            .authorization
            .as_ref()
            .is_some_and(|a| a.expose().starts_with("Basic "))
        {
            return Err(self.refused(401));
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match challenge_scheme(&challenge).as_str() {
            "basic" => {
                let basic = self.credential.as_ref().and_then(|f| f.credential.basic());
                match basic {
                    Some(b) => self.authorization = Some(b),
                    None => return Err(self.refused(401)),
                }
            }
            "bearer" => {
                let t = self.fetch_token(url, &challenge)?;
                self.authorization = Some(Secret::new(format!("Bearer {}", t.expose())));
            }
            "" => return Err(self.refused(401)),
            other => {
                return Err(RegistryError::Auth {
                    url: url.to_string(),
                    msg: format!("unsupported challenge scheme {other:?} (Basic and Bearer are)"),
                })
            }
        }
        let resp = self.send(url, accept, range_from)?;
        if resp.status().as_u16() == 401 {
            return Err(self.refused(401));
        }
        Ok(resp)
    }

    fn fetch_token(&self, url: &str, challenge: &str) -> Result<Secret, RegistryError> {
        let auth = |msg: String| RegistryError::Auth {
            url: url.to_string(),
            msg,
        };
        let params = parse_challenge(challenge)
            .ok_or_else(|| auth("unparsable Bearer challenge".to_string()))?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or_else(|| auth("challenge has no realm".into()))?;
        if !realm.starts_with("https://") && !realm.starts_with("http://") {
            return Err(auth(format!("realm {realm:?} is not an http(s) URL")));
        }
        let scope = get("scope")
            .or_else(|| (!self.repo.is_empty()).then(|| format!("repository:{}:pull", self.repo)));
        let cred = self.credential.as_ref().map(|f| &f.credential);
        let mut resp = if let Some(refresh) = cred.and_then(|c| c.identity_token.as_ref()) {
            // OAuth2 refresh-token grant (docker's identity tokens).
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("client_id", "keel-toolbox".to_string()),
                ("refresh_token", refresh.expose().to_string()),
            ];
            if let Some(s) = get("service") {
                form.push(("service", s));
            }
            if let Some(s) = &scope {
                form.push(("scope", s.clone()));
            }
            self.agent
                .post(&realm)
                .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
                .map_err(|e| classify(&realm, e))?
        } else {
            let mut q = Vec::new();
            if let Some(s) = &scope {
                q.push(format!("scope={}", pct(s)));
            }
            if let Some(s) = get("service") {
                q.push(format!("service={}", pct(&s)));
            }
            let token_url = if q.is_empty() {
                realm.clone()
            } else {
                format!(
                    "{realm}{}{}",
                    if realm.contains('?') { '&' } else { '?' },
                    q.join("&")
                )
            };
            let mut req = self.agent.get(&token_url);
            if let Some(b) = cred.and_then(|c| c.basic()) {
                req = req.header("Authorization", b.expose());
            }
            req.call().map_err(|e| classify(&realm, e))?
        };
        let token_url = realm.clone();
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) {
            return Err(self.refused(status));
        }
        if status != 200 {
            return Err(RegistryError::Status {
                url: token_url,
                status: resp.status().as_u16(),
                detail: " from the token service".into(),
            });
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| classify(&token_url, e))?;
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|e| auth(format!("token answer is not JSON: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| auth("token answer has no token".into()))
    }

    /// Fetch a manifest by tag or digest; verified against the digest when
    /// requested by digest, else against `Docker-Content-Digest` when sent.
    pub fn manifest(
        &mut self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Option<String>, Digest), RegistryError> {
        let mut resp = self.get(&format!("manifests/{reference}"), Some(oci::ACCEPT))?;
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repo);
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(RegistryError::Status {
                url,
                status,
                detail: if status == 404 {
                    ": manifest unknown".into()
                } else {
                    String::new()
                },
            });
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(oci::MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| classify(&url, e))?;
        let what = url.clone();
        let digest = match expected.or(header_digest.as_ref()) {
            Some(d) => {
                oci::verify(&what, &bytes, d, None)?;
                d.clone()
            }
            None => Digest::of(&bytes),
        };
        Ok((bytes, ct, digest))
    }

    /// Fetch a small blob (config) fully, verified.
    pub fn small_blob(&mut self, d: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/v2/{}/blobs/{d}", self.base, self.repo);
        let mut resp = self.get(&format!("blobs/{d}"), None)?;
        if resp.status().as_u16() != 200 {
            return Err(RegistryError::Status {
                url,
                status: resp.status().as_u16(),
                detail: String::new(),
            });
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(oci::MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| classify(&url, e))?;
        oci::verify(&url, &bytes, d, Some(size))?;
        Ok(bytes)
    }

    /// Resolve a tag (or the pinned digest) to verified layers.
    pub fn resolve(&mut self, r: &RegistryRef, tag: &str) -> Result<Resolved, RegistryError> {
        let (mut reference, mut expected) = match &r.digest {
            Some(d) => (d.to_string(), Some(d.clone())),
            None => (tag.to_string(), None),
        };
        for _ in 0..3 {
            let (bytes, ct, digest) = self.manifest(&reference, expected.as_ref())?;
            let what = format!("{}/{}@{}", r.host, r.repository, digest.short());
            match oci::parse_document(&what, &bytes, ct.as_deref())? {
                Document::Index(i) => {
                    let d = oci::select_platform(&what, &i)?;
                    reference = d.digest.to_string();
                    expected = Some(d.digest.clone());
                }
                Document::Manifest(m) => {
                    let cfg = self.small_blob(&m.config.digest, m.config.size)?;
                    let layers = layers_from(&what, &m, &cfg).map_err(|e| match e {
                        crate::source::SourceError::Oci(o) => RegistryError::Oci(o),
                        other => RegistryError::Auth {
                            url: what.clone(),
                            msg: other.to_string(),
                        },
                    })?;
                    return Ok(Resolved {
                        manifest_digest: digest,
                        layers,
                    });
                }
            }
        }
        Err(OciError::Unsupported {
            what: format!("{}/{}", r.host, r.repository),
            field: "index nesting",
            value: "more than 2 levels".into(),
        }
        .into())
    }

    /// Download a layer blob to `dest`, verifying size and digest while it
    /// streams into `dest.partial`; only a verified blob is renamed into
    /// place. `progress` gets the byte count as it grows.
    pub fn download(
        &mut self,
        layer: &Layer,
        dest: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        let Some(digest) = layer.digest.clone() else {
            return Err(RegistryError::Auth {
                url: self.base.clone(),
                msg: "layer without digest".into(),
            });
        };
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repo);
        let partial = dest.with_extension("partial");
        let io_err = |e: io::Error| RegistryError::Io {
            path: partial.display().to_string(),
            source: e,
        };
        let size = layer.size.unwrap_or(u64::MAX);
        // Resume an interrupted download: re-hash what is there, ask for the rest.
        let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
        let mut resumed = None;
        if have > 0 && have < size {
            let resp = self.get_from(&format!("blobs/{digest}"), None, Some(have))?;
            let range_ok = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
            if resp.status().as_u16() == 206 && range_ok {
                let mut prefix = HashReader::new(File::open(&partial).map_err(io_err)?);
                io::copy(&mut prefix, &mut io::sink()).map_err(io_err)?;
                tracing::info!("resuming the download of {} at byte {have}", digest.short());
                resumed = Some((resp, prefix));
            }
        }
        let (resp, mut out, prefix) = match resumed {
            Some((resp, prefix)) => {
                let out = File::options()
                    .append(true)
                    .open(&partial)
                    .map_err(io_err)?;
                (resp, out, Some(prefix))
            }
            None => {
                let resp = self.get(&format!("blobs/{digest}"), None)?;
                if resp.status().as_u16() != 200 {
                    return Err(RegistryError::Status {
                        url,
                        status: resp.status().as_u16(),
                        detail: String::new(),
                    });
                }
                (resp, File::create(&partial).map_err(io_err)?, None)
            }
        };
        let body = resp.into_body().into_reader();
        let mut reader = match prefix {
            Some(p) => p.chain_to(body.take(size.saturating_add(1))),
            None => HashReader::new(body.take(size.saturating_add(1))),
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| RegistryError::Unreachable {
                    url: url.clone(),
                    source: ureq::Error::Io(e),
                })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io_err)?;
            progress(reader.count());
        }
        let (actual, count) = reader.finish().map_err(io_err)?;
        if layer.size.is_some_and(|s| s != count) || actual != digest {
            // Never resume from bytes that failed verification.
            let _ = std::fs::remove_file(&partial);
        }
        if let Some(s) = layer.size {
            if count != s {
                return Err(OciError::Size {
                    what: url,
                    expected: s,
                    actual: count,
                }
                .into());
            }
        }
        if actual != digest {
            return Err(OciError::Digest {
                what: url,
                expected: digest,
                actual,
            }
            .into());
        }
        out.sync_all().map_err(io_err)?;
        std::fs::rename(&partial, dest).map_err(io_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/debian:pull".into()),
            ]
        );
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
        assert_eq!(challenge_scheme("Basic realm=\"Registry Realm\""), "basic");
        assert_eq!(challenge_scheme("BEARER realm=x"), "bearer");
        assert_eq!(challenge_scheme(""), "");
        assert!(parse_challenge("Bearer realm=\"x").is_none());
        assert_eq!(pct("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    /// A registry whose `/v2/` wants a Bearer token from `/token`, which
    /// hands out "good-token" for Basic alice:pw or for the refresh token
    /// "idtok" (POST), and 401 otherwise.
    fn token_registry() -> u16 {
        use std::io::{BufRead, BufReader};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                let len = head
                    .iter()
                    .find_map(|h| {
                        h.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let authz = head
                    .iter()
                    .find_map(|h| {
                        h.strip_prefix("authorization: ")
                            .or_else(|| h.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .to_string();
                let line = head.first().cloned().unwrap_or_default();
                use base64::Engine as _;
                let alice = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("alice:pw")
                );
                let (status, extra, answer) = if line.starts_with("GET /v2/ ") {
                    if authz == "Bearer good-token" {
                        ("200 OK", String::new(), "{}".to_string())
                    } else {
                        (
                            "401 Unauthorized",
                            format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"svc\"\r\n"),
                            String::new(),
                        )
                    }
                } else if line.starts_with("GET /token?")
                    && line.contains("service=svc")
                    && authz == alice
                {
                    (
                        "200 OK",
                        String::new(),
                        r#"{"token":"good-token"}"#.to_string(),
                    )
                } else if line.starts_with("POST /token ")
                    && body.contains("grant_type=refresh_token")
                    && body.contains("refresh_token=idtok")
                {
                    (
                        "200 OK",
                        String::new(),
                        r#"{"access_token":"good-token"}"#.to_string(),
                    )
                } else {
                    ("401 Unauthorized", String::new(), String::new())
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        port
    }

    fn ping(port: u16, c: Option<crate::auth::Credential>) -> Result<(), RegistryError> {
        let r = RegistryRef {
            host: format!("127.0.0.1:{port}"),
            repository: "team/img".into(),
            digest: None,
        };
        let found = c.map(|credential| Found {
            file: "/f/auth.json".into(),
            key: r.host.clone(),
            credential,
        });
        Registry::new(&r)
            .with_credentials(found, "/f/auth.json, /h/.docker/config.json".into())
            .ping()
    }

    #[test]
    fn bearer_token_with_user_password_or_identity_token() {
        use crate::auth::Credential;
        let port = token_registry();
        let basic = |u: &str, p: &str| Credential {
            user: Some(u.into()),
            password: Some(Secret::new(p)),
            identity_token: None,
        };
        ping(port, Some(basic("alice", "pw"))).unwrap();
        ping(
            port,
            Some(Credential {
                user: None,
                password: None,
                identity_token: Some(Secret::new("idtok")),
            }),
        )
        .unwrap();
        let e = ping(port, Some(basic("alice", "sekrit")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("127.0.0.1:{port}: HTTP 401 unauthorized: the registry refused the user alice from /f/auth.json (auths[\"127.0.0.1:{port}\"]): wrong user name or password, or no pull access to team/img")
        );
        assert!(!e.contains("sekrit"));
        let e = ping(port, None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("127.0.0.1:{port}: HTTP 401 unauthorized: the registry needs credentials and none were found for 127.0.0.1:{port}/team/img in /f/auth.json, /h/.docker/config.json; run `toolbox login 127.0.0.1:{port}`")
        );
    }

    proptest::proptest! {
        #[test]
        fn challenge_never_panics(s in "\\PC*") {
            let _ = parse_challenge(&s);
            let _ = parse_challenge(&format!("Bearer {s}"));
        }
    }
}
