//! toolbox: Keel's debugging container.
//!
//! Owns `/usr/bin/toolbox`: a privileged systemd-nspawn container from a full
//! distribution image, with the host's `/` at `/media/root`. Images come
//! without a daemon from an OCI registry (distribution API v2), an
//! `oci-archive:` or `docker-archive:` file, or an `oci:` layout directory;
//! they are verified digest by digest and unpacked safely into
//! `TOOLBOX_DIRECTORY` (default `/var/lib/toolbox`).
//!
//! Reads: `/usr/share/keel/toolbox` (vendor defaults), `/etc/default/toolbox`,
//! `~/.toolboxrc` — CoreOS's `KEY=value` variables, parsed as data (see
//! [`config`]); registry credentials from the containers auth files and
//! `~/.docker/config.json` ([`auth`]), written by `toolbox login`. Uses
//! `/run/systemd/system` to decide whether to register the
//! container with machined. No units, no kernel arguments.
//!
//! Decisions (not in DESIGN.md):
//! - default image `docker.io/library/debian:bookworm` (Keel's base is
//!   Debian 12); `TOOLBOX_NAME` names the tree, else CoreOS's
//!   `USER-IMAGE-TAG` with `[^A-Za-z0-9_.-]` → `_`;
//! - `TOOLBOX_LOCAL_IMAGE` (Keel's addition): a local source used only when
//!   the registry cannot be reached (never after a digest or parse error);
//! - `TOOLBOX_BIND`/`TOOLBOX_ENV` are split into words honouring quotes
//!   inside the value; only `--bind=`/`--bind-ro=` and `--setenv=`/`KEY=VALUE`
//!   are accepted; `$NAME` expands variables set earlier, `HOME` and `USER`;
//! - registries on loopback are spoken to in plain HTTP, all others HTTPS;
//!   credentials from the containers/docker auth files ([`auth`]; Basic and
//!   Bearer challenges), never from a credential helper (DESIGN.md,
//!   "toolbox: credentials, zstd layers");
//! - layers: tar, gzip, zstd ([`zstd`]: pure Rust, `zstd:chunked` read as
//!   plain zstd);
//! - layer paths resolve with `RESOLVE_BENEATH` (refuse, not clamp); device
//!   nodes are refused; a bare `/` entry is the root;
//! - a tree without os-release gets an empty `/etc/os-release` (as CoreOS);
//! - registry blobs are cached until the unpack succeeds, then deleted;
//! - a second session is a second container on the same tree
//!   (`SYSTEMD_NSPAWN_LOCK=0`), guarded by toolbox's own flocks;
//! - exit status: the command's; toolbox's own failures exit 125.
//!
//! Layout: [`config`] (parse → merge → validate, and the `toolbox config`
//! report), [`auth`] (registry credentials), [`reference`](crate::reference)
//! and [`oci`] (image names and documents), [`source`] and [`registry`]
//! (fetching, verifying), [`zstd`] (layer decoding), [`unpack`] (safe layer
//! extraction), [`store`] (the toolbox directory, locks, pull), [`run`] (the
//! nspawn command line and spawner).

pub mod auth;
pub mod config;
pub mod oci;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod run;
pub mod source;
pub mod store;
pub mod unpack;
pub mod zstd;

use std::path::Path;

use config::Settings;
use progress::Progress;
use run::{Registration, Request, Spawner};
use store::{LockMode, Store, StoreError};

/// Run a session: pull the image first if its tree is missing, then run
/// `req` in it and return the exit status to pass on. `host_root` is `/`
/// (a parameter so tests can fake the systemd detection).
pub fn session(
    s: &Settings,
    req: &Request,
    spawner: &mut dyn Spawner,
    progress: &mut Progress,
    host_root: &Path,
) -> Result<i32, StoreError> {
    let store = Store::new(&s.directory);
    let lock = loop {
        if store.present(&s.name) {
            let l = store.lock(&s.name, LockMode::Shared, true)?;
            // A `toolbox rm` may have won the race between the check and the lock.
            if store.present(&s.name) {
                break l;
            }
            continue;
        }
        let l = store.lock(&s.name, LockMode::Exclusive, true)?;
        if !store.present(&s.name) {
            tracing::info!("toolbox {} is not present; pulling {}", s.name, s.image);
            store.pull(s, progress)?;
        }
        store.relock(&l, LockMode::Shared)?;
        break l;
    };
    // The first session gets the plain name, later ones NAME-PID: machined
    // needs unique names, and so does nspawn's /run/systemd/nspawn/propagate/NAME.
    let machine_lock = store.try_machine_lock(&s.name);
    let machine = if machine_lock.is_some() {
        s.name.clone()
    } else {
        config::sanitize_name(&format!("{}-{}", s.name, std::process::id()))
    };
    let reg = if run::machined_available(host_root) {
        Registration::Machined(machine)
    } else {
        Registration::None(machine)
    };
    let tree = store.tree(&s.name);
    let u = unpack::Unpacker::new(&tree, false)?;
    for d in run::mount_points(s) {
        // Best effort: where the image has a symlink there, nspawn decides.
        if let Err(e) = u.ensure_dir(&d) {
            tracing::debug!("not creating mount point: {e}");
        }
    }
    let interactive =
        rustix::termios::isatty(std::io::stdin()) && rustix::termios::isatty(std::io::stdout());
    let plan = run::plan(s, &tree, &reg, req, interactive);
    tracing::debug!("running {}", plan.display());
    let code = spawner.run(&plan).map_err(|e| StoreError::Io {
        path: run::NSPAWN.into(),
        source: e,
    })?;
    drop(machine_lock);
    drop(lock);
    Ok(code)
}
