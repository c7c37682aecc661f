//! The FleetLock protocol client (as Zincati speaks it and Airlock serves it).
//!
//! Two requests, both `POST` with the header `fleet-lock-protocol: true` and
//! the JSON body `{"client_params":{"id":"<id>","group":"<group>"}}`:
//! `<base>/v1/pre-reboot` takes the reboot lock (repeating it while holding
//! it is fine), `<base>/v1/steady-state` gives it back. Status 200 means
//! done; any other status is a refusal, whose body, when the server follows
//! the protocol, is `{"kind":"…","value":"…"}` and is shown as it is.
//! The protocol has no status request.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::{Acquire, LockError, LockStatus, RebootLock, Release};

/// The group Zincati uses when none is configured.
pub const DEFAULT_GROUP: &str = "default";

/// Errors of the FleetLock client.
#[derive(Debug, thiserror::Error)]
pub enum FleetLockError {
    /// The base URL is not http(s).
    #[error("FleetLock base URL {0:?}: must start with http:// or https://")]
    BadUrl(String),
    /// The server could not be reached.
    #[error("FleetLock server {url} unreachable: {why}")]
    Unreachable { url: String, why: String },
    /// The server answered with a status other than 200.
    #[error(
        "FleetLock server {url} refused (HTTP {status}): {}",
        describe(kind, value, body)
    )]
    Refused {
        url: String,
        status: u16,
        kind: Option<String>,
        value: Option<String>,
        body: String,
    },
    /// The protocol has no such request.
    #[error("the FleetLock protocol has no {0} request")]
    Unsupported(&'static str),
}

fn describe(kind: &Option<String>, value: &Option<String>, body: &str) -> String {
    match (kind, value) {
        (Some(k), Some(v)) => format!("{k}: {v}"),
        (Some(k), None) => k.clone(),
        _ if body.is_empty() => "no error body".into(),
        _ => format!("body {body:?}"),
    }
}

impl FleetLockError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FleetLockError::Unreachable { .. } => true,
            // A full semaphore is a refusal too; servers answer it with
            // various statuses, so every refusal may clear later.
            FleetLockError::Refused { status, .. } => *status != 400 && *status != 404,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    kind: Option<String>,
    value: Option<String>,
}

/// A FleetLock client for one id and group.
#[derive(Debug)]
pub struct FleetLock {
    agent: ureq::Agent,
    base: String,
    id: String,
    group: String,
}

impl FleetLock {
    /// A client of the server at `base` (e.g. "http://airlock:3333").
    pub fn new(
        base: &str,
        id: &str,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<FleetLock, FleetLockError> {
        let base = base.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(FleetLockError::BadUrl(base.to_string()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent("keel-lock/0.1")
            .build()
            .new_agent();
        Ok(FleetLock {
            agent,
            base: base.to_string(),
            id: id.to_string(),
            group: group
                .filter(|g| !g.is_empty())
                .unwrap_or(DEFAULT_GROUP)
                .to_string(),
        })
    }

    /// The request body.
    pub fn body(&self) -> String {
        json!({ "client_params": { "id": self.id, "group": self.group } }).to_string()
    }

    fn post(&self, op: &str) -> Result<(), FleetLockError> {
        let url = format!("{}/v1/{op}", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header("Content-Type", "application/json")
            .send(self.body().as_bytes());
        let mut resp = resp.map_err(|e| FleetLockError::Unreachable {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
        let (kind, value) = parsed.map(|b| (b.kind, b.value)).unwrap_or((None, None));
        Err(FleetLockError::Refused {
            url,
            status,
            kind,
            value,
            body: body.trim().chars().take(300).collect(),
        })
    }

    /// `pre-reboot`: take the lock.
    pub fn pre_reboot(&self) -> Result<(), FleetLockError> {
        self.post("pre-reboot")
    }

    /// `steady-state`: give the lock back.
    pub fn steady_state(&self) -> Result<(), FleetLockError> {
        self.post("steady-state")
    }
}

impl RebootLock for FleetLock {
    fn id(&self) -> &str {
        &self.id
    }

    fn acquire(&self) -> Result<Acquire, LockError> {
        self.pre_reboot()?;
        Ok(Acquire::Taken)
    }

    fn release(&self) -> Result<Release, LockError> {
        self.steady_state()?;
        Ok(Release::Released)
    }

    fn status(&self) -> Result<LockStatus, LockError> {
        Err(FleetLockError::Unsupported("status").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_and_group_default() {
        let f = FleetLock::new("http://h:1/", "m1", None, Duration::from_secs(1)).expect("ok");
        let v: serde_json::Value = serde_json::from_str(&f.body()).expect("json");
        assert_eq!(
            v,
            json!({"client_params": {"id": "m1", "group": "default"}})
        );
        let f =
            FleetLock::new("http://h:1", "m\"1", Some("w"), Duration::from_secs(1)).expect("ok");
        let v: serde_json::Value = serde_json::from_str(&f.body()).expect("json");
        assert_eq!(v, json!({"client_params": {"id": "m\"1", "group": "w"}}));
        assert!(FleetLock::new("h:1", "m", None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn refusal_text() {
        let e = FleetLockError::Refused {
            url: "u".into(),
            status: 500,
            kind: Some("failed_lock".into()),
            value: Some("semaphore full".into()),
            body: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "FleetLock server u refused (HTTP 500): failed_lock: semaphore full"
        );
    }
}
