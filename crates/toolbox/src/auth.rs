//! Registry credentials, read the way podman, skopeo, buildah and docker
//! keep them (containers-auth.json(5), docker's `config.json`).
//!
//! Files, in the order they are looked at (the first file with an entry
//! for the registry wins; within a file the most specific key wins):
//! 1. `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`,
//!    else for root `/run/containers/0/auth.json` — also where
//!    `toolbox login` writes;
//! 2. run through sudo by a user (`SUDO_UID`, as toolbox re-runs itself):
//!    that user's `/run/user/UID/containers/auth.json`, where a rootless
//!    `podman login` or `toolbox login` writes;
//! 3. `~/.config/containers/auth.json`;
//! 4. `~/.docker/config.json`.
//!
//! An entry is `"auths": {KEY: {"auth": base64("user:password")}}` and/or
//! `"identitytoken"` (an OAuth2 refresh token, used with Bearer token
//! services). KEY is `host[:port]` or `host[:port]/namespace[/…]`
//! (matching that repository prefix); docker's legacy
//! `https://index.docker.io/v1/` form is read as its host.
//!
//! Credential helpers (`credHelpers`, `credsStore`) are not run: when one
//! is configured for the registry, the lookup fails and says so, rather
//! than pulling anonymously. A file that holds credentials and can be read
//! by other users is refused. Secrets live in [`Secret`], whose `Debug`
//! and `Display` never show them; no error built here contains one.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The largest auth file read (they are a few hundred bytes).
pub const MAX_FILE: u64 = 1 << 20;

/// A secret value; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for an `Authorization` header or a file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What an auth file entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name (from `auth`), if any.
    pub user: Option<String>,
    /// Password (from `auth`), if any.
    pub password: Option<Secret>,
    /// `identitytoken`, if any.
    pub identity_token: Option<Secret>,
}

impl Credential {
    /// `Authorization: Basic …` value, when a user and password are known.
    pub fn basic(&self) -> Option<Secret> {
        let (u, p) = (self.user.as_ref()?, self.password.as_ref()?);
        Some(Secret(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))
        )))
    }
}

/// Where a credential was found (what `toolbox config` and errors show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The auth file.
    pub file: PathBuf,
    /// The key of `auths` that matched, as written in the file.
    pub key: String,
    /// The credential.
    pub credential: Credential,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (&self.credential.user, &self.credential.identity_token) {
            (_, Some(_)) => "identity token".to_string(),
            (Some(u), None) => format!("user {u}"),
            (None, None) => "credentials".to_string(),
        };
        write!(
            f,
            "{what} from {} (auths[{:?}])",
            self.file.display(),
            self.key
        )
    }
}

/// Auth file errors; each names the file and, for content, the field. No
/// variant carries a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Not JSON of the expected shape.
    #[error("{file}: {msg}")]
    Syntax {
        /// File.
        file: String,
        /// What is wrong, with line and column from the JSON parser.
        msg: String,
    },
    /// A field has a bad value (the value is not repeated: it may be secret).
    #[error("{file}: {field}: {msg}")]
    Field {
        /// File.
        file: String,
        /// `auths["KEY"].auth` and the like.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// Other users can read the file.
    #[error("{file}: refusing an auth file other users can read (mode {mode:04o}); it holds registry credentials: chmod 600 {file}")]
    WorldReadable {
        /// File.
        file: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A credential helper is configured for the registry.
    #[error("{file}: {field} names the credential helper {helper:?} for {registry}; toolbox does not run credential helpers: use `toolbox login {registry}` (writes {login_file}) or an \"auth\" entry")]
    Helper {
        /// File.
        file: String,
        /// `credHelpers["HOST"]` or `credsStore`.
        field: String,
        /// Helper name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// Where login would write.
        login_file: String,
    },
    /// Reading or writing failed.
    #[error("{file}: {msg}")]
    Io {
        /// File.
        file: String,
        /// The I/O error, rendered.
        msg: String,
    },
    /// `toolbox login` was given an unusable registry or user name.
    #[error("{msg}")]
    Usage {
        /// What is wrong.
        msg: String,
    },
}

/// One parsed auth file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFile {
    /// `auths` entries: key as written, credential.
    pub auths: Vec<(String, Credential)>,
    /// `credHelpers`: registry → helper.
    pub cred_helpers: BTreeMap<String, String>,
    /// `credsStore`.
    pub creds_store: Option<String>,
}

impl AuthFile {
    /// True when some entry holds a secret.
    pub fn has_secrets(&self) -> bool {
        self.auths
            .iter()
            .any(|(_, c)| c.password.is_some() || c.identity_token.is_some())
    }
}

/// Parse an auth file (`containers-auth.json` or docker's `config.json`).
/// Unknown top-level fields (docker keeps its other settings there) are
/// ignored; inside an entry, only `auth`, `identitytoken` and docker's
/// informational `email`/`username` are read.
pub fn parse(file: &str, bytes: &[u8]) -> Result<AuthFile, AuthError> {
    let syntax = |msg: String| AuthError::Syntax {
        file: file.to_string(),
        msg,
    };
    let field = |field: String, msg: &str| AuthError::Field {
        file: file.to_string(),
        field,
        msg: msg.to_string(),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(AuthFile::default());
    }
    // serde_json's messages quote the offending value only for invalid
    // types ("invalid type: string \"…\""), so shapes are checked by hand
    // below and the parser is only asked whether this is JSON at all.
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        syntax(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(top) = v else {
        return Err(syntax("not a JSON object".into()));
    };
    let mut out = AuthFile::default();
    match top.get("auths") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(auths)) => {
            for (key, entry) in auths {
                let name = format!("auths[{key:?}]");
                let serde_json::Value::Object(e) = entry else {
                    return Err(field(name, "not an object"));
                };
                let text = |k: &str| -> Result<Option<&str>, AuthError> {
                    match e.get(k) {
                        None | Some(serde_json::Value::Null) => Ok(None),
                        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
                        Some(serde_json::Value::String(s)) => Ok(Some(s)),
                        Some(_) => Err(field(format!("{name}.{k}"), "not a string")),
                    }
                };
                let mut c = Credential {
                    user: None,
                    password: None,
                    identity_token: text("identitytoken")?.map(Secret::new),
                };
                if let Some(a) = text("auth")? {
                    let what = format!("{name}.auth");
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|_| field(what.clone(), "not base64"))?;
                    let s = String::from_utf8(raw)
                        .map_err(|_| field(what.clone(), "not UTF-8 after base64 decoding"))?;
                    let Some((u, p)) = s.split_once(':') else {
                        return Err(field(what, "not base64 of \"user:password\" (no ':')"));
                    };
                    if !u.is_empty() {
                        c.user = Some(u.to_string());
                    }
                    if !p.is_empty() {
                        c.password = Some(Secret::new(p));
                    }
                    if c.user.is_some() != c.password.is_some() && c.identity_token.is_none() {
                        return Err(field(what, "has a user name or a password but not both"));
                    }
                }
                out.auths.push((key.clone(), c));
            }
        }
        Some(_) => return Err(field("auths".into(), "not an object")),
    }
    match top.get("credHelpers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(h)) => {
            for (k, v) in h {
                let serde_json::Value::String(s) = v else {
                    return Err(field(format!("credHelpers[{k:?}]"), "not a string"));
                };
                out.cred_helpers.insert(k.clone(), s.clone());
            }
        }
        Some(_) => return Err(field("credHelpers".into(), "not an object")),
    }
    match top.get("credsStore") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) if s.is_empty() => {}
        Some(serde_json::Value::String(s)) => out.creds_store = Some(s.clone()),
        Some(_) => return Err(field("credsStore".into(), "not a string")),
    }
    Ok(out)
}

/// A key as a `host[/path]` prefix: scheme and (for the legacy URL form)
/// path dropped, Docker Hub's aliases folded into `docker.io`.
pub fn normalize_key(key: &str) -> String {
    let k = key.trim();
    let (had_scheme, rest) = match k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
    {
        Some(r) => (true, r),
        None => (false, k),
    };
    let rest = if had_scheme {
        // Docker's legacy keys are URLs (`https://index.docker.io/v1/`):
        // only the host counts, as in containers/image.
        rest.split('/').next().unwrap_or(rest)
    } else {
        rest.trim_end_matches('/')
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// How well `key` matches `host/repository`: `None` for no match, else the
/// key's length (longer = more specific).
pub fn key_matches(key: &str, host: &str, repository: &str) -> Option<usize> {
    let k = normalize_key(key);
    let host = normalize_key(host);
    if k == host {
        return Some(k.len());
    }
    let path = k.strip_prefix(&host)?.strip_prefix('/')?;
    (repository == path || repository.starts_with(&format!("{path}/"))).then_some(k.len())
}

/// The auth files in the order they are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFiles {
    /// Paths, first = where `toolbox login` writes.
    pub files: Vec<PathBuf>,
}

impl AuthFiles {
    /// The standard list from environment values (`REGISTRY_AUTH_FILE`,
    /// `XDG_RUNTIME_DIR`, `HOME`) and whether we run as root.
    pub fn standard(env: &dyn Fn(&str) -> Option<String>, root: bool) -> AuthFiles {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let mut files = Vec::new();
        if let Some(f) = get("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(f));
        } else if let Some(x) = get("XDG_RUNTIME_DIR") {
            files.push(Path::new(&x).join("containers/auth.json"));
        } else if root {
            files.push(PathBuf::from("/run/containers/0/auth.json"));
        }
        let sudo_uid = get("SUDO_UID").and_then(|u| u.parse::<u32>().ok());
        if let Some(uid) = sudo_uid.filter(|u| root && *u != 0) {
            let p = PathBuf::from(format!("/run/user/{uid}/containers/auth.json"));
            if !files.contains(&p) {
                files.push(p);
            }
        }
        if let Some(h) = get("HOME") {
            files.push(Path::new(&h).join(".config/containers/auth.json"));
            files.push(Path::new(&h).join(".docker/config.json"));
        }
        AuthFiles { files }
    }

    /// From this process's environment.
    pub fn from_env() -> AuthFiles {
        AuthFiles::standard(
            &|k| std::env::var(k).ok(),
            rustix::process::geteuid().is_root(),
        )
    }

    /// Where `toolbox login` writes.
    pub fn login_file(&self) -> Result<&Path, AuthError> {
        self.files
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| AuthError::Usage {
                msg: "no auth file to write: set REGISTRY_AUTH_FILE or XDG_RUNTIME_DIR".into(),
            })
    }

    /// The list, for messages.
    pub fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Find the credential for `host/repository`.
    pub fn lookup(&self, host: &str, repository: &str) -> Result<Option<Found>, AuthError> {
        for path in &self.files {
            let Some(f) = read_file(path)? else { continue };
            let file = path.display().to_string();
            let registry = normalize_key(host);
            if let Some((k, h)) = f
                .cred_helpers
                .iter()
                .find(|(k, _)| normalize_key(k) == registry)
            {
                return Err(AuthError::Helper {
                    file,
                    field: format!("credHelpers[{k:?}]"),
                    helper: h.clone(),
                    registry,
                    login_file: self
                        .login_file()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                });
            }
            let best = f
                .auths
                .iter()
                .filter_map(|(k, c)| key_matches(k, host, repository).map(|n| (n, k, c)))
                .max_by_key(|(n, _, _)| *n);
            if let Some((_, key, c)) = best {
                let empty = c.password.is_none() && c.identity_token.is_none();
                if empty {
                    if let Some(store) = &f.creds_store {
                        // Docker Desktop's shape: `{}` in auths, the secret in the store.
                        return Err(AuthError::Helper {
                            file,
                            field: "credsStore".into(),
                            helper: store.clone(),
                            registry,
                            login_file: self
                                .login_file()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default(),
                        });
                    }
                    continue;
                }
                return Ok(Some(Found {
                    file: path.clone(),
                    key: key.clone(),
                    credential: c.clone(),
                }));
            }
        }
        Ok(None)
    }
}

/// Read and parse one auth file; `None` when it does not exist. A file
/// holding credentials that other users can read is refused.
pub fn read_file(path: &Path) -> Result<Option<AuthFile>, AuthError> {
    use std::io::Read;
    let file = path.display().to_string();
    let io = |e: std::io::Error| AuthError::Io {
        file: file.clone(),
        msg: e.to_string(),
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mode = f.metadata().map_err(io)?.permissions().mode() & 0o7777;
    let mut bytes = Vec::new();
    f.by_ref()
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(AuthError::Syntax {
            file,
            msg: format!("larger than {MAX_FILE} bytes"),
        });
    }
    let parsed = parse(&file, &bytes)?;
    if mode & 0o004 != 0 && parsed.has_secrets() {
        return Err(AuthError::WorldReadable { file, mode });
    }
    Ok(Some(parsed))
}

/// Check a `toolbox login` registry argument: `host[:port][/namespace…]`,
/// no scheme, no spaces; returns the key to store (normalized).
pub fn login_key(registry: &str) -> Result<String, AuthError> {
    let k = normalize_key(registry);
    let host = k.split('/').next().unwrap_or("");
    let ok_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok_host || k.contains(char::is_whitespace) || k.contains("//") {
        return Err(AuthError::Usage {
            msg: format!("{registry:?} is not a registry (HOST[:PORT][/NAMESPACE])"),
        });
    }
    Ok(k)
}

/// Add or replace `key`'s entry in the auth file at `path` (mode 0600,
/// directory 0700 when created, written atomically), keeping every other
/// entry and field.
pub fn store(path: &Path, key: &str, user: &str, password: &Secret) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') {
        return Err(AuthError::Usage {
            msg: "the user name must be non-empty and contain no ':'".into(),
        });
    }
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
    edit(path, |auths| {
        auths.retain(|k, _| normalize_key(k) != key);
        auths.insert(key.to_string(), serde_json::json!({ "auth": auth }));
        true
    })
    .map(|_| ())
}

/// Remove `key`'s entries from the auth file at `path`; `false` when there
/// were none.
pub fn remove(path: &Path, key: &str) -> Result<bool, AuthError> {
    edit(path, |auths| {
        let before = auths.len();
        auths.retain(|k, _| normalize_key(k) != key);
        auths.len() != before
    })
}

fn edit(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> bool,
) -> Result<bool, AuthError> {
    let file = path.display().to_string();
    let io = |e: std::io::Error| AuthError::Io {
        file: file.clone(),
        msg: e.to_string(),
    };
    let mut top = match std::fs::read(path) {
        Ok(b) => {
            // Validates the file (and its mode) first; the edit keeps
            // fields toolbox does not know.
            read_file(path)?;
            if b.iter().all(u8::is_ascii_whitespace) {
                serde_json::Map::new()
            } else {
                match serde_json::from_slice(&b) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => {
                        return Err(AuthError::Syntax {
                            file,
                            msg: "not a JSON object".into(),
                        })
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(io(e)),
    };
    let auths = top
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if auths.is_null() {
        *auths = serde_json::Value::Object(serde_json::Map::new());
    }
    let serde_json::Value::Object(auths) = auths else {
        return Err(AuthError::Field {
            file,
            field: "auths".into(),
            msg: "not an object".into(),
        });
    };
    if !change(auths) {
        return Ok(false);
    }
    let mut bytes =
        serde_json::to_vec_pretty(&serde_json::Value::Object(top)).map_err(|e| io(e.into()))?;
    bytes.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
    }
    keel_contract::AtomicWrite::new()
        .mode(0o600)
        .write(path, &bytes)
        .map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_containers_and_docker_files() {
        let text = format!(
            r#"{{"auths":{{"registry.example.com":{{"auth":"{}"}},
                "https://index.docker.io/v1/":{{"auth":"{}","email":"a@b"}},
                "quay.io/team":{{"auth":"{}","identitytoken":"tok"}},
                "empty.example":{{}}}},
              "HttpHeaders":{{"User-Agent":"x"}},"psFormat":"table"}}"#,
            b64("alice:s3cr:et"),
            b64("bob:pw"),
            b64("<token>:")
        );
        let f = parse("f", text.as_bytes()).unwrap();
        assert!(f.has_secrets());
        let get = |k: &str| f.auths.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let a = get("registry.example.com");
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.password.as_ref().unwrap().expose(), "s3cr:et");
        assert_eq!(
            a.basic().unwrap().expose(),
            format!("Basic {}", b64("alice:s3cr:et"))
        );
        let q = get("quay.io/team");
        assert_eq!(q.identity_token.unwrap().expose(), "tok");
        assert_eq!(get("empty.example").password, None);
        // Secrets never show in Debug.
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("s3cr") && !dbg.contains("tok\""), "{dbg}");
    }

    #[test]
    fn negative_fixtures_name_the_field_not_the_secret() {
        let cases: &[(String, &str)] = &[
            ("{".into(), "f: not JSON (line 1, column 1)"),
            ("[]".into(), "f: not a JSON object"),
            (r#"{"auths":[]}"#.into(), "f: auths: not an object"),
            (
                r#"{"auths":{"h":"x"}}"#.into(),
                "f: auths[\"h\"]: not an object",
            ),
            (
                r#"{"auths":{"h":{"auth":5}}}"#.into(),
                "f: auths[\"h\"].auth: not a string",
            ),
            (
                r#"{"auths":{"h":{"auth":"%%secret%%"}}}"#.into(),
                "f: auths[\"h\"].auth: not base64",
            ),
            (
                format!(
                    r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#,
                    b64("secretnocolon")
                ),
                "f: auths[\"h\"].auth: not base64 of \"user:password\" (no ':')",
            ),
            (
                format!(r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#, b64("user:")),
                "f: auths[\"h\"].auth: has a user name or a password but not both",
            ),
            (
                r#"{"auths":{"h":{"identitytoken":["x"]}}}"#.into(),
                "f: auths[\"h\"].identitytoken: not a string",
            ),
            (
                r#"{"credHelpers":{"h":1}}"#.into(),
                "f: credHelpers[\"h\"]: not a string",
            ),
            (r#"{"credsStore":{}}"#.into(), "f: credsStore: not a string"),
        ];
        for (text, want) in cases {
            let e = parse("f", text.as_bytes()).unwrap_err().to_string();
            assert_eq!(e, *want, "{text}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert_eq!(parse("f", b"  \n").unwrap(), AuthFile::default());
        assert_eq!(parse("f", b"{}").unwrap(), AuthFile::default());
    }

    #[test]
    fn host_and_namespace_matching() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("http://reg:5000/v2/x"), "reg:5000");
        assert_eq!(normalize_key("reg:5000/team/"), "reg:5000/team");
        assert!(key_matches("reg:5000", "reg:5000", "a/b").is_some());
        assert!(key_matches("reg:5000", "reg", "a/b").is_none());
        assert!(key_matches("reg", "reg:5000", "a/b").is_none());
        assert!(key_matches("reg:5000/a", "reg:5000", "a/b").is_some());
        assert!(key_matches("reg:5000/a/b", "reg:5000", "a/b").is_some());
        assert!(key_matches("reg:5000/a/b/c", "reg:5000", "a/b").is_none());
        assert!(key_matches("reg:5000/ab", "reg:5000", "a/b").is_none());
        assert!(key_matches("reg:5000/a", "reg:5000", "ab/c").is_none());
        assert!(key_matches("other.example", "reg:5000", "a").is_none());
        assert!(
            key_matches("https://index.docker.io/v1/", "docker.io", "library/debian").is_some()
        );
        assert!(key_matches("registry-1.docker.io", "docker.io", "library/debian").is_some());
        assert!(key_matches("docker.io.evil", "docker.io", "x").is_none());
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn lookup_order_specificity_mode_and_helpers() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let env = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some(d.join("run").display().to_string()),
            "HOME" => Some(d.join("home").display().to_string()),
            _ => None,
        };
        let files = AuthFiles::standard(&env, true);
        assert_eq!(
            files.files,
            vec![
                d.join("run/containers/auth.json"),
                d.join("home/.config/containers/auth.json"),
                d.join("home/.docker/config.json")
            ]
        );
        assert_eq!(files.lookup("reg", "a/b").unwrap(), None);
        write(
            d,
            "home/.docker/config.json",
            &format!(
                r#"{{"auths":{{"reg":{{"auth":"{}"}},"reg/a":{{"auth":"{}"}},"hub.example":{{}}}},"credsStore":"desktop","credHelpers":{{"helped.example":"ecr-login"}}}}"#,
                b64("u1:p1"),
                b64("u2:p2")
            ),
            0o600,
        );
        let f = files.lookup("reg", "a/b").unwrap().unwrap();
        assert_eq!(
            (f.key.as_str(), f.credential.user.as_deref()),
            ("reg/a", Some("u2"))
        );
        assert_eq!(
            f.to_string(),
            format!(
                "user u2 from {} (auths[\"reg/a\"])",
                d.join("home/.docker/config.json").display()
            )
        );
        let f = files.lookup("reg", "c").unwrap().unwrap();
        assert_eq!(f.credential.user.as_deref(), Some("u1"));
        let e = files.lookup("helped.example", "x").unwrap_err().to_string();
        assert!(
            e.contains("credHelpers[\"helped.example\"] names the credential helper \"ecr-login\""),
            "{e}"
        );
        assert!(e.contains("toolbox does not run credential helpers"), "{e}");
        let e = files.lookup("hub.example", "x").unwrap_err().to_string();
        assert!(
            e.contains("credsStore names the credential helper \"desktop\""),
            "{e}"
        );
        // An earlier file wins.
        write(
            d,
            "run/containers/auth.json",
            &format!(r#"{{"auths":{{"reg":{{"auth":"{}"}}}}}}"#, b64("u0:p0")),
            0o600,
        );
        let f = files.lookup("reg", "a/b").unwrap().unwrap();
        assert_eq!(f.credential.user.as_deref(), Some("u0"));
        // World-readable with secrets: refused, and the secret is not shown.
        let p = write(
            d,
            "run/containers/auth.json",
            &format!(r#"{{"auths":{{"reg":{{"auth":"{}"}}}}}}"#, b64("u0:p0")),
            0o644,
        );
        let e = files.lookup("reg", "a").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{0}: refusing an auth file other users can read (mode 0644); it holds registry credentials: chmod 600 {0}",
                p.display()
            )
        );
        // Without secrets a readable file is fine.
        write(d, "run/containers/auth.json", r#"{"auths":{}}"#, 0o644);
        assert!(files.lookup("reg", "a").is_ok());
    }

    #[test]
    fn standard_files() {
        let env = |k: &str| match k {
            "REGISTRY_AUTH_FILE" => Some("/x/auth.json".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/0".to_string()),
            _ => None,
        };
        assert_eq!(
            AuthFiles::standard(&env, true).files,
            vec![PathBuf::from("/x/auth.json")]
        );
        let root = AuthFiles::standard(&|_| None, true);
        assert_eq!(
            root.files,
            vec![PathBuf::from("/run/containers/0/auth.json")]
        );
        // A user's toolbox re-run through sudo also reads that user's login.
        let sudo = |k: &str| match k {
            "SUDO_UID" => Some("1000".to_string()),
            "HOME" => Some("/home/core".to_string()),
            _ => None,
        };
        assert_eq!(
            AuthFiles::standard(&sudo, true).files,
            vec![
                PathBuf::from("/run/containers/0/auth.json"),
                PathBuf::from("/run/user/1000/containers/auth.json"),
                PathBuf::from("/home/core/.config/containers/auth.json"),
                PathBuf::from("/home/core/.docker/config.json"),
            ]
        );
        assert_eq!(AuthFiles::standard(&sudo, false).files.len(), 2);
        assert!(AuthFiles::standard(&|_| None, false).login_file().is_err());
    }

    #[test]
    fn login_and_logout_keep_other_entries() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("new/containers/auth.json");
        store(
            &p,
            &login_key("reg:5000").unwrap(),
            "alice",
            &Secret::new("pw"),
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"http://reg:5000/v2/":{{"auth":"{}"}},"other":{{"auth":"{}"}}}},"credHelpers":{{"x":"y"}}}}"#,
                b64("old:old"),
                b64("o:o")
            ),
        )
        .unwrap();
        store(&p, "reg:5000", "alice", &Secret::new("pw")).unwrap();
        let f = read_file(&p).unwrap().unwrap();
        assert_eq!(f.auths.len(), 2);
        assert_eq!(f.cred_helpers.len(), 1);
        let c = &f.auths.iter().find(|(k, _)| k == "reg:5000").unwrap().1;
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        assert!(remove(&p, "reg:5000").unwrap());
        assert!(!remove(&p, "reg:5000").unwrap());
        assert_eq!(read_file(&p).unwrap().unwrap().auths.len(), 1);
        assert!(login_key("https://reg:5000").is_ok());
        assert!(login_key("a b").is_err());
        assert!(login_key("").is_err());
        assert!(store(&p, "reg", "a:b", &Secret::new("x")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse("f", s.as_bytes());
            let _ = normalize_key(&s);
            let _ = key_matches(&s, "reg", "a/b");
            let _ = login_key(&s);
        }

        #[test]
        fn jsonish_never_panics(s in r#"[{}\[\]":, a-z0-9=+/]{0,60}"#) {
            let _ = parse("f", format!(r#"{{"auths":{{"h":{{"auth":"{s}"}}}}}}"#).as_bytes());
            let _ = parse("f", s.as_bytes());
        }
    }
}
