//! The reboot semaphore in etcd v3, over etcd's HTTP/JSON gateway.
//!
//! No gRPC stack: etcd (3.3 and later) serves the v3 KV API as JSON at
//! `POST /v3/kv/range`, `/v3/kv/txn` and `/v3/auth/authenticate`, with keys
//! and values base64-encoded and 64-bit integers as strings. Every change is
//! a read followed by a transaction that writes only if the key's `version`
//! is still the one read (version 0 = absent, so the first writer creates
//! the key with `max` 1, as locksmith did). A lost race re-reads and tries
//! again, a bounded number of times with a short random pause.
//!
//! Keys are locksmith's names (`coreos.com/updateengine/rebootlock/semaphore`
//! and `…/groups/<group>/semaphore`) without a leading slash, and the value
//! is locksmith's JSON ([`crate::semaphore::Semaphore`]).
//!
//! Endpoints are tried in order, starting from the last one that answered;
//! a connection or TLS failure, or an "unavailable" answer (no leader),
//! moves on to the next. With a user name, a token from
//! `/v3/auth/authenticate` goes in the `Authorization` header and is renewed
//! once when etcd says it is invalid (tokens expire).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::semaphore::{LockChange, Semaphore, UnlockChange, ValueError};
use crate::{Acquire, LockError, LockStatus, RebootLock, Release};

/// locksmith's key prefix.
pub const KEY_PREFIX: &str = "coreos.com/updateengine/rebootlock";

/// The semaphore key for `group` (None or "" = the fleet-wide one).
pub fn semaphore_key(group: Option<&str>) -> String {
    match group {
        Some(g) if !g.is_empty() => format!("{KEY_PREFIX}/groups/{g}/semaphore"),
        _ => format!("{KEY_PREFIX}/semaphore"),
    }
}

/// Errors of the etcd client. Each names the endpoint, key or file.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file could not be read.
    #[error("reading {path}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TLS file holds no usable PEM item.
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    /// The options do not make a client.
    #[error("{0}")]
    Config(String),
    /// No endpoint could be reached; one reason per endpoint.
    #[error("etcd unreachable: {}", reasons.join("; "))]
    Unreachable { reasons: Vec<String> },
    /// etcd answered with an error.
    #[error("etcd at {endpoint} refused {what}: {message} (HTTP {status}, gRPC code {code})")]
    Server {
        endpoint: String,
        what: &'static str,
        status: u16,
        code: i64,
        message: String,
    },
    /// The answer was not what the gateway sends.
    #[error("etcd at {endpoint}: unexpected answer to {what}: {why}")]
    Protocol {
        endpoint: String,
        what: &'static str,
        why: String,
    },
    /// The key exists but is not a reboot semaphore.
    #[error("key {key} at {endpoint} holds something else")]
    BadValue {
        key: String,
        endpoint: String,
        source: ValueError,
    },
    /// Other writers kept changing the key between our read and write.
    #[error("lost the compare-and-swap on {key} {attempts} times in a row (others keep changing it); giving up")]
    Contention { key: String, attempts: u32 },
    /// An etcd number does not fit.
    #[error("set-max {0}: must be between 0 and 1000000")]
    BadMax(i64),
}

impl EtcdError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EtcdError::Unreachable { .. } | EtcdError::Contention { .. } => true,
            EtcdError::Server { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Endpoint URLs ("http://10.0.0.1:2379"); a bare host:port gets
    /// `https://` when TLS files are given, else `http://`.
    pub endpoints: Vec<String>,
    /// CA bundle (PEM) to verify etcd's certificate; default: the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// etcd user (v3 auth).
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<String>,
    /// Lock group (None = the fleet-wide semaphore).
    pub group: Option<String>,
    /// Timeout of one request, connection included.
    pub timeout: Duration,
    /// Compare-and-swap attempts before giving up.
    pub cas_attempts: u32,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            group: None,
            timeout: Duration::from_secs(5),
            cas_attempts: 16,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn load_tls(c: &EtcdConfig) -> Result<ureq::tls::TlsConfig, EtcdError> {
    use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts};
    let mut b = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &c.ca_file {
        let pem = read_file(ca)?;
        let mut certs: Vec<Certificate<'static>> = Vec::new();
        for item in parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(cert)) => certs.push(cert),
                Ok(_) => {}
                Err(e) => {
                    return Err(EtcdError::Pem {
                        path: ca.clone(),
                        why: e.to_string(),
                    })
                }
            }
        }
        if certs.is_empty() {
            return Err(EtcdError::Pem {
                path: ca.clone(),
                why: "no certificate in the CA file".into(),
            });
        }
        b = b.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    match (&c.cert_file, &c.key_file) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let pem = read_file(cert)?;
            let mut chain = Vec::new();
            for item in parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => chain.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(EtcdError::Pem {
                            path: cert.clone(),
                            why: e.to_string(),
                        })
                    }
                }
            }
            if chain.is_empty() {
                return Err(EtcdError::Pem {
                    path: cert.clone(),
                    why: "no certificate in the client certificate file".into(),
                });
            }
            let key_pem = read_file(key)?;
            let pk = PrivateKey::from_pem(&key_pem).map_err(|e| EtcdError::Pem {
                path: key.clone(),
                why: format!("no private key: {e}"),
            })?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&chain, pk)));
        }
        _ => {
            return Err(EtcdError::Config(
                "a client certificate needs both the certificate file and the key file".into(),
            ))
        }
    }
    Ok(b.build())
}

impl EtcdConfig {
    /// The settings locksmith read from its environment, with `prefix`
    /// "LOCKSMITHD_" (the daemon; also cloud-config's `coreos.locksmith`)
    /// or "LOCKSMITHCTL_" (the tool): `ENDPOINT` (comma-separated),
    /// `ETCD_CAFILE`, `ETCD_CERTFILE`, `ETCD_KEYFILE`, `ETCD_USERNAME`,
    /// `ETCD_PASSWORD`, `GROUP`. Unset or empty variables keep the defaults.
    pub fn from_env(prefix: &str, get: impl Fn(&str) -> Option<String>) -> EtcdConfig {
        let var = |name: &str| get(&format!("{prefix}{name}")).filter(|v| !v.trim().is_empty());
        let mut c = EtcdConfig::default();
        if let Some(e) = var("ENDPOINT") {
            c.endpoints = e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        c.ca_file = var("ETCD_CAFILE").map(PathBuf::from);
        c.cert_file = var("ETCD_CERTFILE").map(PathBuf::from);
        c.key_file = var("ETCD_KEYFILE").map(PathBuf::from);
        c.username = var("ETCD_USERNAME");
        c.password = var("ETCD_PASSWORD");
        c.group = var("GROUP");
        c
    }
}

/// Normalise an endpoint: scheme added when missing, trailing '/' removed.
pub fn normalize_endpoint(e: &str, tls: bool) -> String {
    let e = e.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

/// gRPC-gateway writes int64 as a string; accept a number too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Kv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    version: i64,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct AuthResponse {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i64,
}

/// gRPC status codes the gateway reports that matter here.
const GRPC_UNAVAILABLE: i64 = 14;
const GRPC_UNAUTHENTICATED: i64 = 16;

/// The semaphore as read: its value (None = key absent) and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The value; None when the key does not exist.
    pub value: Option<Semaphore>,
    /// The key's version (0 = absent).
    pub version: i64,
    /// The key's last modification revision (0 = absent).
    pub mod_revision: i64,
}

/// A client of one semaphore key, acting for one holder id.
#[derive(Debug)]
pub struct EtcdLock {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    current: Mutex<usize>,
    token: Mutex<Option<String>>,
    auth: Option<(String, String)>,
    key: String,
    holder: String,
    cas_attempts: u32,
}

enum Sent {
    Ok(serde_json::Value),
    /// Try the next endpoint, for this reason.
    Next(String),
}

impl EtcdLock {
    /// A client for `config`'s semaphore, acting as `holder` (the machine id).
    pub fn new(config: &EtcdConfig, holder: &str) -> Result<EtcdLock, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::Config("no etcd endpoint given".into()));
        }
        let tls = config.ca_file.is_some() || config.cert_file.is_some();
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, tls))
            .collect();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .tls_config(load_tls(config)?)
            .user_agent("keel-lock/0.1")
            .build()
            .new_agent();
        let auth = match (&config.username, &config.password) {
            (Some(u), p) if !u.is_empty() => Some((u.clone(), p.clone().unwrap_or_default())),
            _ => None,
        };
        Ok(EtcdLock {
            agent,
            endpoints,
            current: Mutex::new(0),
            token: Mutex::new(None),
            auth,
            key: semaphore_key(config.group.as_deref()),
            holder: holder.to_string(),
            cas_attempts: config.cas_attempts.max(1),
        })
    }

    /// The key this client works on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder id this client acts as.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The endpoints, normalised.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn current_index(&self) -> usize {
        self.current.lock().map(|g| *g).unwrap_or(0)
    }

    fn set_current(&self, i: usize) {
        if let Ok(mut g) = self.current.lock() {
            *g = i;
        }
    }

    fn token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|g| g.clone())
    }

    fn set_token(&self, t: Option<String>) {
        if let Ok(mut g) = self.token.lock() {
            *g = t;
        }
    }

    /// POST to one endpoint; Next(reason) when another endpoint should be tried.
    fn send_one(
        &self,
        endpoint: &str,
        path: &str,
        what: &'static str,
        body: &serde_json::Value,
        with_token: bool,
    ) -> Result<Sent, EtcdError> {
        let url = format!("{endpoint}{path}");
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        let token = if with_token { self.token() } else { None };
        if let Some(t) = &token {
            req = req.header("Authorization", t);
        }
        let mut resp = match req.send(body.to_string().as_bytes()) {
            Ok(r) => r,
            Err(e) => return Ok(Sent::Next(describe_transport(endpoint, &e))),
        };
        let status = resp.status().as_u16();
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return Ok(Sent::Next(format!("{endpoint}: reading the answer: {e}"))),
        };
        if status == 200 {
            return serde_json::from_str(&text)
                .map(Sent::Ok)
                .map_err(|e| EtcdError::Protocol {
                    endpoint: endpoint.to_string(),
                    what,
                    why: format!("not JSON ({e}): {}", snippet(&text)),
                });
        }
        let eb: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        let message = if !eb.message.is_empty() {
            eb.message
        } else if !eb.error.is_empty() {
            eb.error
        } else {
            snippet(&text)
        };
        let message = if message.contains("user name is empty") {
            format!("{message} (auth is enabled on this etcd: give a user name and password)")
        } else {
            message
        };
        if eb.code == GRPC_UNAVAILABLE || status == 503 {
            return Ok(Sent::Next(format!("{endpoint}: unavailable: {message}")));
        }
        Err(EtcdError::Server {
            endpoint: endpoint.to_string(),
            what,
            status,
            code: eb.code,
            message,
        })
    }

    fn authenticate(&self, endpoint: &str) -> Result<Sent, EtcdError> {
        let Some((user, password)) = &self.auth else {
            return Ok(Sent::Ok(serde_json::Value::Null));
        };
        let body = json!({ "name": user, "password": password });
        match self.send_one(
            endpoint,
            "/v3/auth/authenticate",
            "authentication",
            &body,
            false,
        )? {
            Sent::Next(r) => Ok(Sent::Next(r)),
            Sent::Ok(v) => {
                let a: AuthResponse =
                    serde_json::from_value(v).map_err(|e| EtcdError::Protocol {
                        endpoint: endpoint.to_string(),
                        what: "authentication",
                        why: e.to_string(),
                    })?;
                if a.token.is_empty() {
                    return Err(EtcdError::Protocol {
                        endpoint: endpoint.to_string(),
                        what: "authentication",
                        why: "no token in the answer (is auth enabled on this etcd?)".into(),
                    });
                }
                self.set_token(Some(a.token));
                Ok(Sent::Ok(serde_json::Value::Null))
            }
        }
    }

    /// POST `body` to `path`, failing over between endpoints.
    fn call(
        &self,
        path: &str,
        what: &'static str,
        body: &serde_json::Value,
    ) -> Result<(String, serde_json::Value), EtcdError> {
        let n = self.endpoints.len();
        let start = self.current_index() % n;
        let mut reasons = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let ep = &self.endpoints[i];
            if self.auth.is_some() && self.token().is_none() {
                if let Sent::Next(r) = self.authenticate(ep)? {
                    reasons.push(r);
                    continue;
                }
            }
            let sent = match self.send_one(ep, path, what, body, true) {
                Err(EtcdError::Server { code, message, .. })
                    if self.auth.is_some()
                        && (code == GRPC_UNAUTHENTICATED
                            || message.contains("invalid auth token")) =>
                {
                    // The token expired or this member does not know it.
                    tracing::debug!(endpoint = %ep, "etcd token refused; authenticating again");
                    self.set_token(None);
                    if let Sent::Next(r) = self.authenticate(ep)? {
                        reasons.push(r);
                        continue;
                    }
                    self.send_one(ep, path, what, body, true)?
                }
                other => other?,
            };
            match sent {
                Sent::Ok(v) => {
                    self.set_current(i);
                    return Ok((ep.clone(), v));
                }
                Sent::Next(r) => {
                    tracing::debug!(reason = %r, "etcd endpoint failed; trying the next");
                    reasons.push(r);
                }
            }
        }
        Err(EtcdError::Unreachable { reasons })
    }

    /// Read the semaphore key.
    pub fn read(&self) -> Result<Read, EtcdError> {
        self.read_at().map(|(_, r)| r)
    }

    fn read_at(&self) -> Result<(String, Read), EtcdError> {
        let body = json!({ "key": B64.encode(&self.key) });
        let (ep, v) = self.call("/v3/kv/range", "a read", &body)?;
        let r: RangeResponse = serde_json::from_value(v).map_err(|e| EtcdError::Protocol {
            endpoint: ep.clone(),
            what: "a read",
            why: e.to_string(),
        })?;
        let Some(kv) = r.kvs.into_iter().next() else {
            return Ok((
                ep,
                Read {
                    value: None,
                    version: 0,
                    mod_revision: 0,
                },
            ));
        };
        let raw = B64
            .decode(kv.value.as_bytes())
            .map_err(|e| EtcdError::Protocol {
                endpoint: ep.clone(),
                what: "a read",
                why: format!("value is not base64: {e}"),
            })?;
        let value = Semaphore::from_json(&raw).map_err(|source| EtcdError::BadValue {
            key: self.key.clone(),
            endpoint: ep.clone(),
            source,
        })?;
        Ok((
            ep,
            Read {
                value: Some(value),
                version: kv.version,
                mod_revision: kv.mod_revision,
            },
        ))
    }

    /// Write `value` if the key's version is still `version`, together
    /// with `extra` operations (the holders' "since" keys); false = lost.
    fn compare_and_swap(
        &self,
        value: &Semaphore,
        version: i64,
        extra: Vec<serde_json::Value>,
    ) -> Result<bool, EtcdError> {
        let key = B64.encode(&self.key);
        let mut success =
            vec![json!({ "request_put": { "key": key, "value": B64.encode(value.to_json()) } })];
        success.extend(extra);
        let body = json!({
            "compare": [{
                "key": key,
                "target": "VERSION",
                "result": "EQUAL",
                "version": version.to_string(),
            }],
            "success": success,
        });
        let (ep, v) = self.call("/v3/kv/txn", "a compare-and-swap", &body)?;
        let t: TxnResponse = serde_json::from_value(v).map_err(|e| EtcdError::Protocol {
            endpoint: ep,
            what: "a compare-and-swap",
            why: e.to_string(),
        })?;
        Ok(t.succeeded)
    }

    /// Read, change with `f`, write back with compare-and-swap; retried on
    /// a lost race. `f` returns its result and whether to write. A missing
    /// key starts as a fresh semaphore with max 1.
    pub fn modify<T>(
        &self,
        mut f: impl FnMut(&mut Semaphore) -> (T, bool),
    ) -> Result<(T, Semaphore), EtcdError> {
        self.modify_ops(|s| {
            let (out, write) = f(s);
            (out, write.then(Vec::new))
        })
    }

    /// As [`EtcdLock::modify`]; `f` returns None (no write) or the extra
    /// operations to write in the same transaction.
    fn modify_ops<T>(
        &self,
        mut f: impl FnMut(&mut Semaphore) -> (T, Option<Vec<serde_json::Value>>),
    ) -> Result<(T, Semaphore), EtcdError> {
        for attempt in 1..=self.cas_attempts {
            let r = self.read()?;
            let mut sem = r.value.unwrap_or_else(|| Semaphore::new(1));
            let (out, write) = f(&mut sem);
            let Some(extra) = write else {
                return Ok((out, sem));
            };
            if self.compare_and_swap(&sem, r.version, extra)? {
                return Ok((out, sem));
            }
            tracing::debug!(key = %self.key, attempt, "lost the compare-and-swap; reading again");
            // A short random pause spreads writers that collided.
            let ms = fastrand::u64(1..=(5 * u64::from(attempt)).min(100));
            std::thread::sleep(Duration::from_millis(ms));
        }
        Err(EtcdError::Contention {
            key: self.key.clone(),
            attempts: self.cas_attempts,
        })
    }

    /// The key recording since when `id` holds a slot: a sibling of the
    /// semaphore key, `…/since/<id>`, written in the same transaction as
    /// the lock and deleted with the unlock. locksmith-era tools ignore it.
    pub fn since_key(&self, id: &str) -> String {
        format!("{}{id}", self.since_prefix())
    }

    fn since_prefix(&self) -> String {
        let base = self.key.strip_suffix("/semaphore").unwrap_or(&self.key);
        format!("{base}/since/")
    }

    /// Since when each holder holds its slot (RFC 3339, the locking
    /// client's clock), from the `since` keys.
    pub fn holders_since(&self) -> Result<BTreeMap<String, String>, EtcdError> {
        let prefix = self.since_prefix();
        let mut end = prefix.clone().into_bytes();
        // The prefix ends in '/', so incrementing the last byte cannot overflow.
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = json!({ "key": B64.encode(&prefix), "range_end": B64.encode(&end) });
        let (ep, v) = self.call("/v3/kv/range", "a read", &body)?;
        let r: RangeResponse = serde_json::from_value(v).map_err(|e| EtcdError::Protocol {
            endpoint: ep.clone(),
            what: "a read",
            why: e.to_string(),
        })?;
        let mut out = BTreeMap::new();
        for kv in r.kvs {
            let (Ok(k), Ok(v)) = (
                B64.decode(kv.key.as_bytes()),
                B64.decode(kv.value.as_bytes()),
            ) else {
                continue;
            };
            let k = String::from_utf8_lossy(&k).into_owned();
            if let Some(id) = k.strip_prefix(&prefix) {
                out.insert(id.to_string(), String::from_utf8_lossy(&v).into_owned());
            }
        }
        Ok(out)
    }

    /// Take a slot for `id`.
    pub fn lock_as(&self, id: &str) -> Result<(LockChange, Semaphore), EtcdError> {
        let since = B64.encode(self.since_key(id));
        self.modify_ops(|s| {
            let c = s.lock(id);
            let write = (c == LockChange::Taken).then(|| {
                let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                vec![json!({ "request_put": { "key": since, "value": B64.encode(now.to_string()) } })]
            });
            (c, write)
        })
    }

    /// Give `id`'s slot back.
    pub fn unlock_as(&self, id: &str) -> Result<(UnlockChange, Semaphore), EtcdError> {
        let since = B64.encode(self.since_key(id));
        self.modify_ops(|s| {
            let c = s.unlock(id);
            let write = (c == UnlockChange::Released)
                .then(|| vec![json!({ "request_delete_range": { "key": since } })]);
            (c, write)
        })
    }

    /// Set the number of slots.
    pub fn set_max(&self, max: i64) -> Result<Semaphore, EtcdError> {
        if !(0..=1_000_000).contains(&max) {
            return Err(EtcdError::BadMax(max));
        }
        self.modify(|s| {
            let write = s.max != max;
            s.set_max(max);
            ((), write)
        })
        .map(|(_, s)| s)
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// A transport failure, with a hint when it is TLS.
fn describe_transport(endpoint: &str, e: &ureq::Error) -> String {
    let s = e.to_string();
    let l = s.to_ascii_lowercase();
    if l.contains("certificate") || l.contains("tls") || l.contains("handshake") {
        format!("{endpoint}: TLS failed: {s} (check the CA file and the client certificate)")
    } else {
        format!("{endpoint}: {s}")
    }
}

impl RebootLock for EtcdLock {
    fn id(&self) -> &str {
        &self.holder
    }

    fn acquire(&self) -> Result<Acquire, LockError> {
        let (c, s) = self.lock_as(&self.holder)?;
        Ok(match c {
            LockChange::Taken => Acquire::Taken,
            LockChange::AlreadyHeld => Acquire::AlreadyHeld,
            LockChange::Full => Acquire::Busy {
                detail: format!(
                    "{} of {} slots taken by {}",
                    s.holders.len(),
                    s.max,
                    s.holders.join(", ")
                ),
            },
        })
    }

    fn release(&self) -> Result<Release, LockError> {
        let (c, _) = self.unlock_as(&self.holder)?;
        Ok(match c {
            UnlockChange::Released => Release::Released,
            UnlockChange::NotHeld => Release::NotHeld,
        })
    }

    fn status(&self) -> Result<LockStatus, LockError> {
        let (ep, r) = self.read_at()?;
        let exists = r.value.is_some();
        let s = r.value.unwrap_or_else(|| Semaphore::new(1));
        let since = self.holders_since()?;
        Ok(LockStatus {
            source: format!("etcd key {} at {ep}", self.key),
            exists,
            max: s.max,
            available: s.semaphore,
            since: s.holders.iter().map(|h| since.get(h).cloned()).collect(),
            holders: s.holders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_locksmiths() {
        assert_eq!(
            semaphore_key(None),
            "coreos.com/updateengine/rebootlock/semaphore"
        );
        assert_eq!(semaphore_key(Some("")), semaphore_key(None));
        assert_eq!(
            semaphore_key(Some("workers")),
            "coreos.com/updateengine/rebootlock/groups/workers/semaphore"
        );
    }

    #[test]
    fn locksmithd_environment() {
        let env = |k: &str| match k {
            "LOCKSMITHD_ENDPOINT" => Some("https://a:2379, https://b:2379".to_string()),
            "LOCKSMITHD_ETCD_CAFILE" => Some("/etc/ssl/etcd/ca.pem".to_string()),
            "LOCKSMITHD_GROUP" => Some("workers".to_string()),
            "LOCKSMITHD_ETCD_USERNAME" => Some(String::new()),
            _ => None,
        };
        let c = EtcdConfig::from_env("LOCKSMITHD_", env);
        assert_eq!(c.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(
            c.ca_file.as_deref(),
            Some(Path::new("/etc/ssl/etcd/ca.pem"))
        );
        assert_eq!(c.group.as_deref(), Some("workers"));
        assert_eq!(c.username, None);
        let d = EtcdConfig::from_env("LOCKSMITHCTL_", env);
        assert_eq!(d.endpoints, EtcdConfig::default().endpoints);
    }

    #[test]
    fn endpoints_normalise() {
        assert_eq!(
            normalize_endpoint("10.0.0.1:2379", false),
            "http://10.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("10.0.0.1:2379", true),
            "https://10.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://e:2379/", true), "http://e:2379");
    }

    #[test]
    fn gateway_json_reads() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"5"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"5","version":"3","value":"eyJzZW1hcGhvcmUiOjEsIm1heCI6MSwiaG9sZGVycyI6bnVsbH0="}],"count":"1"}"#,
        )
        .expect("range");
        assert_eq!(r.kvs[0].version, 3);
        assert_eq!(r.kvs[0].mod_revision, 5);
        let raw = B64.decode(r.kvs[0].value.as_bytes()).expect("b64");
        assert_eq!(
            Semaphore::from_json(&raw).expect("value"),
            Semaphore::new(1)
        );
        let r: RangeResponse = serde_json::from_str(r#"{"header":{}}"#).expect("empty");
        assert!(r.kvs.is_empty());
        let t: TxnResponse = serde_json::from_str(r#"{"header":{}}"#).expect("txn");
        assert!(!t.succeeded);
    }

    #[test]
    fn config_errors_name_the_file() {
        let c = EtcdConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        let e = EtcdLock::new(&c, "m").expect_err("no file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let c = EtcdConfig {
            cert_file: Some("/x".into()),
            ..EtcdConfig::default()
        };
        let e = EtcdLock::new(&c, "m").expect_err("half");
        assert!(e.to_string().contains("both"), "{e}");
    }

    #[test]
    fn unreachable_names_every_endpoint() {
        // Ports 1 and 2 on loopback: nothing listens there.
        let c = EtcdConfig {
            endpoints: vec!["127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            timeout: Duration::from_secs(2),
            ..EtcdConfig::default()
        };
        let l = EtcdLock::new(&c, "m").expect("client");
        let e = l.read().expect_err("unreachable");
        let s = e.to_string();
        assert!(s.contains("etcd unreachable"), "{s}");
        assert!(
            s.contains("127.0.0.1:1") && s.contains("127.0.0.1:2"),
            "{s}"
        );
        assert!(e.is_transient());
    }
}
