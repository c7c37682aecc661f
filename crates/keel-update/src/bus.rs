//! keel-update on the D-Bus system bus (zbus, blocking API, as keel-netd).
//!
//! The daemon owns `org.keel.Update1` and serves `/org/keel/Update1`,
//! interface `org.keel.Update1`:
//!
//! | member | what |
//! |---|---|
//! | `GetStatus() → s` | the status as JSON (the schema of `/run/keel/update.json`) |
//! | `Check()` | check now instead of at the next planned time (returns at once) |
//! | signal `StatusChanged(s)` | the new status as JSON, on every change |
//!
//! Reads are for anyone, `Check` for root: the bus policy
//! `/usr/share/dbus-1/system.d/org.keel.Update1.conf` lets everyone send
//! `GetStatus` and only root send `Check` (the bus daemon enforces it
//! before the call reaches us). JSON rather than D-Bus structs for the same
//! reason as keel-netd: one published schema for the file and the bus.
//!
//! The bus is optional: the server runs in its own thread; without a bus
//! the daemon works the same (status file, `STATUS=`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::status::Status;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.keel.Update1";
/// The object path.
pub const OBJECT_PATH: &str = "/org/keel/Update1";
/// The interface.
pub const INTERFACE: &str = "org.keel.Update1";

/// The status last published, shared with the bus thread.
pub type Snapshot = Arc<Mutex<Option<Status>>>;

/// The live connection, for emitting signals from the daemon's thread.
pub type Conn = Arc<Mutex<Option<zbus::blocking::Connection>>>;

fn json(s: &Snapshot) -> String {
    // A panic while holding the lock aborts (panic = "abort" in release),
    // so a poisoned value is still the last consistent one.
    let g = s.lock().unwrap_or_else(PoisonError::into_inner);
    g.as_ref()
        .and_then(|st| serde_json::to_string(st).ok())
        .unwrap_or_else(|| "{}".into())
}

/// The served object.
#[derive(Debug)]
pub struct Update1 {
    snapshot: Snapshot,
    check: mpsc::Sender<()>,
}

#[zbus::interface(name = "org.keel.Update1")]
impl Update1 {
    /// The status as JSON.
    fn get_status(&self) -> String {
        json(&self.snapshot)
    }

    /// Check now (root only, by bus policy). Returns at once; progress comes
    /// as `StatusChanged` signals.
    fn check(&self) -> zbus::fdo::Result<()> {
        self.check
            .send(())
            .map_err(|_| zbus::fdo::Error::Failed("the update loop is not running".into()))
    }

    /// The status changed.
    #[zbus(signal)]
    async fn status_changed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        status: &str,
    ) -> zbus::Result<()>;
}

/// Publish `s`: keep it for `GetStatus` and emit `StatusChanged` if
/// connected.
pub fn publish(snapshot: &Snapshot, conn: &Conn, s: &Status) {
    *snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
    let c = conn.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(c) = c {
        let body = json(snapshot);
        if let Err(e) = c.emit_signal(
            None::<&str>,
            OBJECT_PATH,
            INTERFACE,
            "StatusChanged",
            &(body.as_str(),),
        ) {
            tracing::debug!("emitting StatusChanged: {e}");
        }
    }
}

/// Ask a running daemon to check now (`Check()`), so that a version the
/// CLI staged goes on towards its reboot under the daemon's strategy, as
/// `update_engine_client` hands the work to update_engine. Best effort: no
/// bus or no daemon is not an error (the daemon's next check finds the
/// staged version anyway).
pub fn tell_daemon() -> Result<(), zbus::Error> {
    let c = zbus::blocking::Connection::system()?;
    c.call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), "Check", &())?;
    Ok(())
}

/// Serve [`Update1`] in a thread for the daemon's lifetime; reconnects
/// when the bus goes away or is not there yet.
pub fn spawn_server(snapshot: Snapshot, conn: Conn, check: mpsc::Sender<()>) {
    let r = std::thread::Builder::new()
        .name("dbus".into())
        .spawn(move || serve_forever(snapshot, conn, check));
    if let Err(e) = r {
        tracing::warn!("starting the D-Bus thread: {e}; status only in the status file");
    }
}

fn serve_forever(snapshot: Snapshot, conn: Conn, check: mpsc::Sender<()>) {
    let mut warned = false;
    let mut delay = Duration::from_millis(500);
    loop {
        let r = zbus::blocking::connection::Builder::system()
            .and_then(|b| b.name(BUS_NAME))
            .and_then(|b| {
                b.serve_at(
                    OBJECT_PATH,
                    Update1 {
                        snapshot: snapshot.clone(),
                        check: check.clone(),
                    },
                )
            })
            .and_then(|b| b.build());
        match r {
            Ok(c) => {
                tracing::info!("serving {BUS_NAME} on the system bus");
                warned = false;
                delay = Duration::from_millis(500);
                *conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                c.closed();
                *conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::warn!("system bus connection closed; reconnecting");
            }
            Err(e) => {
                if warned {
                    tracing::debug!("D-Bus: {e}");
                } else {
                    tracing::warn!("D-Bus system bus not available ({e}); retrying");
                    warned = true;
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        std::thread::sleep(delay);
    }
}
