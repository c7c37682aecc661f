//! keel-netd on the D-Bus system bus (zbus, blocking API).
//!
//! The daemon owns `org.keel.Network1` and serves the object
//! `/org/keel/Network1`, interface `org.keel.Network1`, read-only:
//!
//! | method | returns |
//! |---|---|
//! | `ListLinks() → s` | a JSON array of every link's state, sorted by index |
//! | `Describe(s name) → s` | a JSON object for one link; error `org.keel.Network1.Error.NoSuchLink` |
//!
//! The JSON is the schema of the state files under `/run/keel/netd/links/`
//! ([`LinkStatus`]), so the bus and the files never disagree on meaning and
//! `keel-netd status` renders either the same way. JSON rather than D-Bus
//! structs: the record is nested and optional-heavy, it is already a
//! published format, and `busctl call` prints it readably.
//!
//! The bus is optional: the server runs in its own thread over a snapshot
//! the poll loop updates ([`Snapshot`]); without a bus it logs one warning
//! and retries quietly, and the daemon works the same. The policy that lets
//! root own the name and anyone call the methods is
//! `/usr/share/dbus-1/system.d/org.keel.Network1.conf`.
//!
//! Also here: the DHCP hostname through systemd-hostnamed
//! (`org.freedesktop.hostname1.SetHostname(name, false)`), with
//! sethostname(2) when hostnamed cannot be reached.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::state::LinkStatus;

/// The well-known bus name, object path and interface.
pub const BUS_NAME: &str = "org.keel.Network1";
pub const OBJECT_PATH: &str = "/org/keel/Network1";
pub const INTERFACE: &str = "org.keel.Network1";

/// How long a client waits for the bus and the daemon before giving up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The links as last published by the poll loop, by index.
pub type Snapshot = Arc<Mutex<BTreeMap<u32, LinkStatus>>>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connecting to the system bus: {0}")]
    Connect(#[source] Box<zbus::Error>),
    #[error("calling {INTERFACE}.{0}: {1}")]
    Call(&'static str, #[source] Box<zbus::Error>),
    #[error("decoding the reply of {INTERFACE}.{0}: {1}")]
    Decode(&'static str, String),
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// D-Bus errors of the interface (`org.keel.Network1.Error.*`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.keel.Network1.Error")]
pub enum NetError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No link with that name.
    NoSuchLink(String),
}

/// The links of a snapshot as the JSON array `ListLinks` returns.
pub fn list_json(links: &BTreeMap<u32, LinkStatus>) -> String {
    let v: Vec<&LinkStatus> = links.values().collect();
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

/// One link as the JSON object `Describe` returns, or None.
pub fn describe_json(links: &BTreeMap<u32, LinkStatus>, name: &str) -> Option<String> {
    links
        .values()
        .find(|l| l.name == name)
        .and_then(|l| serde_json::to_string(l).ok())
}

/// Decode a `ListLinks` reply.
pub fn parse_list(json: &str) -> Result<Vec<LinkStatus>, BusError> {
    serde_json::from_str(json).map_err(|e| BusError::Decode("ListLinks", e.to_string()))
}

/// The served object.
#[derive(Debug)]
pub struct Network1 {
    snapshot: Snapshot,
}

fn lock(s: &Snapshot) -> std::sync::MutexGuard<'_, BTreeMap<u32, LinkStatus>> {
    // A panic while holding the lock aborts the process (panic = "abort"
    // in release), so a poisoned map is still the last consistent one.
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

#[zbus::interface(name = "org.keel.Network1")]
impl Network1 {
    /// Every link's state as a JSON array (the state-file schema).
    fn list_links(&self) -> String {
        list_json(&lock(&self.snapshot))
    }

    /// One link's state as a JSON object.
    fn describe(&self, name: &str) -> Result<String, NetError> {
        describe_json(&lock(&self.snapshot), name)
            .ok_or_else(|| NetError::NoSuchLink(format!("no link named {name}")))
    }
}

/// Run the bus server in a thread for the daemon's lifetime: connect to the
/// system bus, own [`BUS_NAME`], serve [`Network1`] over `snapshot`; when
/// the bus is absent or goes away, warn once and retry with a growing delay
/// (at most 10 s), so keel-netd started before dbus.service appears on the
/// bus shortly after it.
pub fn spawn_server(snapshot: Snapshot) {
    let r = std::thread::Builder::new()
        .name("dbus".into())
        .spawn(move || serve_forever(snapshot));
    if let Err(e) = r {
        tracing::warn!(
            "starting the D-Bus thread: {e}; status is served from the state files only"
        );
    }
}

fn serve_forever(snapshot: Snapshot) {
    let mut warned = false;
    let mut delay = Duration::from_millis(500);
    loop {
        let r = zbus::blocking::connection::Builder::system()
            .and_then(|b| b.name(BUS_NAME))
            .and_then(|b| {
                b.serve_at(
                    OBJECT_PATH,
                    Network1 {
                        snapshot: snapshot.clone(),
                    },
                )
            })
            .and_then(|b| b.build());
        match r {
            Ok(conn) => {
                tracing::info!("serving {BUS_NAME} on the system bus");
                warned = false;
                delay = Duration::from_millis(500);
                conn.closed();
                tracing::warn!("system bus connection closed; reconnecting");
            }
            Err(e) => {
                if warned {
                    tracing::debug!("D-Bus: {e}");
                } else {
                    tracing::warn!(
                        "D-Bus system bus not available ({e}); status is served from the state files, retrying"
                    );
                    warned = true;
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        std::thread::sleep(delay);
    }
}

/// Run `f` in a thread and wait at most `timeout` for it: a bus whose
/// socket exists but whose daemon never answers must not hang a caller.
fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dbus-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| BusError::Connect(Box::new(zbus::Error::InputOutput(Arc::new(e)))))?;
    rx.recv_timeout(timeout)
        .map_err(|_| BusError::Timeout(timeout))?
}

fn system_bus() -> Result<zbus::blocking::Connection, BusError> {
    zbus::blocking::connection::Builder::system()
        .map(|b| b.method_timeout(CALL_TIMEOUT))
        .and_then(|b| b.build())
        .map_err(|e| BusError::Connect(Box::new(e)))
}

/// Ask the daemon for every link over the system bus.
pub fn fetch_links() -> Result<Vec<LinkStatus>, BusError> {
    let json = with_timeout(CALL_TIMEOUT, || {
        let conn = system_bus()?;
        let reply = conn
            .call_method(
                Some(BUS_NAME),
                OBJECT_PATH,
                Some(INTERFACE),
                "ListLinks",
                &(),
            )
            .map_err(|e| BusError::Call("ListLinks", Box::new(e)))?;
        reply
            .body()
            .deserialize::<String>()
            .map_err(|e| BusError::Decode("ListLinks", e.to_string()))
    })?;
    parse_list(&json)
}

/// Set the transient hostname through systemd-hostnamed (bus-activated).
pub fn hostnamed_set(name: &str) -> Result<(), BusError> {
    let name = name.to_string();
    with_timeout(CALL_TIMEOUT * 2, move || {
        let conn = system_bus()?;
        conn.call_method(
            Some("org.freedesktop.hostname1"),
            "/org/freedesktop/hostname1",
            Some("org.freedesktop.hostname1"),
            "SetHostname",
            &(name.as_str(), false),
        )
        .map_err(|e| BusError::Call("SetHostname", Box::new(e)))?;
        Ok(())
    })
}

/// Sets the DHCP hostname off the poll loop, one request at a time:
/// hostnamed first, sethostname(2) when it cannot be reached.
#[derive(Debug)]
pub struct HostnameWorker {
    tx: mpsc::Sender<String>,
}

impl HostnameWorker {
    pub fn start() -> std::io::Result<HostnameWorker> {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("hostname".into())
            .spawn(move || {
                for name in rx {
                    set_hostname(&name);
                }
            })?;
        Ok(HostnameWorker { tx })
    }

    pub fn request(&self, name: &str) -> std::io::Result<()> {
        self.tx
            .send(name.to_string())
            .map_err(|_| std::io::Error::other("hostname thread stopped"))
    }
}

fn set_hostname(name: &str) {
    match hostnamed_set(name) {
        Ok(()) => tracing::info!("hostname set to {name} from DHCP through systemd-hostnamed"),
        Err(e) => {
            tracing::info!("systemd-hostnamed not reachable ({e}); using sethostname(2)");
            match nix::unistd::sethostname(name) {
                Ok(()) => tracing::info!("hostname set to {name} from DHCP"),
                Err(e) => tracing::warn!("setting hostname {name}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> BTreeMap<u32, LinkStatus> {
        let mut m = BTreeMap::new();
        for (i, n) in [(3, "eth1"), (2, "eth0")] {
            m.insert(
                i,
                LinkStatus {
                    index: i,
                    name: n.into(),
                    oper: "routable".into(),
                    setup: "configured".into(),
                    addresses: vec![format!("10.0.{i}.15/24")],
                    ..Default::default()
                },
            );
        }
        m
    }

    #[test]
    fn list_round_trips_in_index_order() {
        let s = snap();
        let links = parse_list(&list_json(&s)).unwrap();
        assert_eq!(
            links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
        assert_eq!(links[0], s[&2]);
        assert_eq!(list_json(&BTreeMap::new()), "[]");
    }

    #[test]
    fn describe_one_link() {
        let s = snap();
        let one: LinkStatus = serde_json::from_str(&describe_json(&s, "eth1").unwrap()).unwrap();
        assert_eq!(one.addresses, ["10.0.3.15/24"]);
        assert!(describe_json(&s, "eth9").is_none());
        let n = Network1 {
            snapshot: Arc::new(Mutex::new(s)),
        };
        assert!(n.list_links().contains("10.0.2.15/24"));
        let e = n.describe("eth9").unwrap_err();
        assert_eq!(
            zbus::DBusError::name(&e).as_str(),
            "org.keel.Network1.Error.NoSuchLink"
        );
    }

    #[test]
    fn bad_reply_is_a_decode_error() {
        let e = parse_list("{").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("decoding the reply of org.keel.Network1.ListLinks"));
    }

    #[test]
    fn no_bus_fails_fast() {
        // A socket path that does not exist: connecting fails at once.
        let r = with_timeout(Duration::from_secs(5), || {
            zbus::blocking::connection::Builder::address("unix:path=/nonexistent/keel-test-bus")
                .and_then(|b| b.build())
                .map_err(|e| BusError::Connect(Box::new(e)))
        });
        assert!(matches!(r, Err(BusError::Connect(_))), "{r:?}");
        let r: Result<(), _> = with_timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(1));
            Ok(())
        });
        assert!(matches!(r, Err(BusError::Timeout(_))));
    }
}
