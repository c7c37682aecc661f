//! FleetLock protocol conformance against a small in-test HTTP server on
//! 127.0.0.1 (a std `TcpListener` thread) that records every request and
//! answers with scripted statuses and bodies. Needs no root, so it runs in
//! the unit tier.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_lock::fleetlock::{FleetLock, FleetLockError};
use keel_lock::{Acquire, LockError, RebootLock, Release};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves `answers` in order (status, body), one per connection, recording requests.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

fn serve(answers: Vec<(u16, &'static str)>) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((stream, _)) = l.accept() else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut r = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            r.read_line(&mut line).expect("request line");
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let path = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).expect("header");
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().expect("length");
                    }
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let mut b = vec![0u8; len];
            r.read_exact(&mut b).expect("body");
            rec.lock().expect("lock").push(Request {
                method,
                path,
                headers,
                body: String::from_utf8_lossy(&b).into_owned(),
            });
            let mut w = stream;
            let reason = if status == 200 { "OK" } else { "Error" };
            write!(
                w,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("answer");
        }
    });
    Server { base, seen }
}

fn client(base: &str, group: Option<&str>) -> FleetLock {
    FleetLock::new(
        base,
        "0123456789abcdef0123456789abcdef",
        group,
        Duration::from_secs(5),
    )
    .expect("client")
}

#[test]
fn requests_follow_the_protocol() {
    let s = serve(vec![(200, ""), (200, "")]);
    let f = client(&format!("{}/", s.base), Some("workers"));
    assert_eq!(f.acquire().expect("pre-reboot"), Acquire::Taken);
    assert_eq!(f.release().expect("steady-state"), Release::Released);
    let seen = s.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for (req, path) in seen.iter().zip(["/v1/pre-reboot", "/v1/steady-state"]) {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, path);
        assert_eq!(req.header("fleet-lock-protocol"), Some("true"));
        let body: serde_json::Value = serde_json::from_str(&req.body).expect("json body");
        assert_eq!(
            body,
            serde_json::json!({"client_params": {"id": "0123456789abcdef0123456789abcdef", "group": "workers"}})
        );
    }
}

#[test]
fn default_group_is_default() {
    let s = serve(vec![(200, "")]);
    client(&s.base, None).acquire().expect("ok");
    let seen = s.seen.lock().expect("lock").clone();
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json");
    assert_eq!(body["client_params"]["group"], "default");
}

#[test]
fn refusals_show_the_servers_error() {
    let s = serve(vec![
        (409, r#"{"kind":"failed_lock","value":"semaphore is full"}"#),
        (500, "internal trouble"),
        (
            400,
            r#"{"kind":"bad_request","value":"missing fleet-lock-protocol"}"#,
        ),
        (204, ""),
    ]);
    let f = client(&s.base, None);
    let e = f.acquire().expect_err("busy");
    assert_eq!(
        e.to_string(),
        format!(
            "FleetLock server {}/v1/pre-reboot refused (HTTP 409): failed_lock: semaphore is full",
            s.base
        )
    );
    assert!(e.is_transient());
    match &e {
        LockError::FleetLock(FleetLockError::Refused { kind, value, .. }) => {
            assert_eq!(kind.as_deref(), Some("failed_lock"));
            assert_eq!(value.as_deref(), Some("semaphore is full"));
        }
        other => panic!("{other:?}"),
    }
    let e = f.release().expect_err("500");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    assert!(e.to_string().contains("internal trouble"), "{e}");
    let e = f.acquire().expect_err("400");
    assert!(!e.is_transient(), "a bad request will not pass by waiting");
    // Only 200 counts as done.
    let e = f.acquire().expect_err("204");
    assert!(e.to_string().contains("HTTP 204"), "{e}");
    assert!(f.status().is_err());
}

#[test]
fn unreachable_server_is_named() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    let e = client(&base, None).acquire().expect_err("down");
    assert!(
        e.to_string().contains("unreachable") && e.to_string().contains(&base),
        "{e}"
    );
    assert!(e.is_transient());
}

#[test]
fn cli_speaks_fleetlock() {
    let s = serve(vec![(200, ""), (200, "")]);
    let bin = env!("CARGO_BIN_EXE_keel-lock");
    for (cmd, path) in [("lock", "/v1/pre-reboot"), ("unlock", "/v1/steady-state")] {
        let o = std::process::Command::new(bin)
            .args(["--fleetlock", &s.base, "--group", "g", cmd, "abc"])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let seen = s.seen.lock().expect("lock").clone();
        let last = seen.last().expect("request");
        assert_eq!(last.path, path);
        let body: serde_json::Value = serde_json::from_str(&last.body).expect("json");
        assert_eq!(body["client_params"]["id"], "abc");
        assert_eq!(body["client_params"]["group"], "g");
    }
}
