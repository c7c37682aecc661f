//! keel-oem: the OEM hooks runner, its systemd generator, and the checker
//! vendors run before shipping an OEM tree.
//!
//! Owns the OEM partition's format (see `docs/oem.md`) and running it:
//!
//! - reads `/oem/oem.toml` (hooks, [`manifest`]), `/oem/oem-release`
//!   (os-release syntax, [`release`]), `/oem/units/*` ([`generator`]),
//!   `/run/keel/boot.json` (keel-init's `first_boot`) and `/run/keel/metadata`
//!   (platform facts, `KEY=VALUE`, which hooks may append to);
//! - writes run-once markers and last results under `/var/lib/keel/oem/`,
//!   this boot's status to `/run/keel/oem/status.json` ([`state`]);
//! - ships units `keel-oem-early.service`, `keel-oem-network.service`,
//!   `keel-oem-late.service`, which run `keel-oem run STAGE` ([`runner`],
//!   [`spawn`]); as `/usr/lib/systemd/system-generators/keel-oem-generator`
//!   (a symlink to `/usr/bin/keel-oem`) it is the generator that enables them.
//!
//! No kernel arguments are read.

pub mod generator;
pub mod manifest;
pub mod release;
pub mod runner;
pub mod spawn;
pub mod state;
pub mod status;
pub mod unitfile;

use std::io;
use std::path::{Path, PathBuf};

use manifest::{Manifest, Stage};
use release::OemRelease;
use state::Paths;

/// Largest `oem.toml`/`oem-release` read (they are a few KiB in practice).
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// Errors of the top-level operations; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (or the run lock taken).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// `oem-release` is invalid.
    #[error(transparent)]
    Release(#[from] release::LineError),
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A stage ran and a required hook failed.
    #[error("stage {stage} failed: {reason}")]
    StageFailed {
        /// The stage.
        stage: Stage,
        /// The failed hook and how it failed.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match spawn::read_limited(path, MAX_CONFIG) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Load `oem.toml`; `None` when the OEM tree has no manifest.
pub fn load_manifest(paths: &Paths) -> Result<Option<Manifest>, Error> {
    let path = paths.manifest();
    match read(&path)? {
        None => Ok(None),
        Some(text) => Ok(Some(manifest::parse(&path, &text)?)),
    }
}

/// Load `oem-release` (required whenever there is a manifest).
pub fn load_release(paths: &Paths) -> Result<OemRelease, Error> {
    let path = paths.release();
    match read(&path)? {
        None => Err(Error::Read {
            path,
            source: io::Error::from(io::ErrorKind::NotFound),
        }),
        Some(text) => Ok(release::parse_oem_release(&path, &text)?),
    }
}

/// `keel-oem run STAGE`: run a stage's hooks; an `Err` fails the unit.
pub fn run_stage(
    paths: &Paths,
    stage: Stage,
    spawner: &mut dyn runner::Spawner,
) -> Result<runner::StageReport, Error> {
    let Some(manifest) = load_manifest(paths)? else {
        tracing::info!(
            "{} does not exist: no hooks to run",
            paths.manifest().display()
        );
        return Ok(runner::StageReport {
            stage,
            hooks: Vec::new(),
            failure: None,
        });
    };
    let release = load_release(paths)?;
    // One stage run at a time (the unit and an admin's `keel-oem run` must
    // not both see a first-boot hook as pending): an exclusive flock on
    // /run/keel/oem/lock, released when the file closes.
    let _lock = lock(paths)?;
    let ctx = runner::RunContext {
        first_boot: state::first_boot(paths),
        paths: paths.clone(),
        release,
    };
    let report = runner::run_stage(&ctx, &manifest, stage, spawner).map_err(|e| match e {
        runner::RunError::State(s) => Error::State(s),
    })?;
    if let Some(reason) = &report.failure {
        return Err(Error::StageFailed {
            stage,
            reason: reason.clone(),
        });
    }
    Ok(report)
}

fn lock(paths: &Paths) -> Result<std::fs::File, Error> {
    let path = paths.run_dir.join("lock");
    let err = |source| Error::Read {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&paths.run_dir).map_err(err)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        tracing::info!("another keel-oem run holds {}; waiting", path.display());
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(e.into()))?;
    }
    Ok(f)
}

/// Findings of `keel-oem check DIR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems that make the tree unfit to ship.
    pub errors: Vec<String>,
    /// Things that work but probably are not what the vendor meant.
    pub warnings: Vec<String>,
    /// One line per hook and unit, for the vendor to read back.
    pub summary: Vec<String>,
}

/// `keel-oem check DIR`: validate an OEM tree before shipping it.
pub fn check(dir: &Path) -> CheckReport {
    use std::os::unix::fs::PermissionsExt;
    let mut r = CheckReport::default();
    let paths = Paths {
        oem_dir: dir.to_path_buf(),
        ..Paths::default()
    };
    match load_release(&paths) {
        Ok(rel) => r.summary.push(format!(
            "oem-release: ID={} NAME={:?}{}",
            rel.id,
            rel.name,
            rel.version_id
                .map(|v| format!(" VERSION_ID={v}"))
                .unwrap_or_default()
        )),
        Err(e) => r.errors.push(e.to_string()),
    }
    match load_manifest(&paths) {
        Ok(None) => r.warnings.push(format!(
            "{}: no manifest; the OEM tree runs no hooks",
            paths.manifest().display()
        )),
        Ok(Some(m)) => {
            for h in &m.hooks {
                let prog = manifest::host_path(dir, &h.command);
                let loc = format!(
                    "{}:{}: hook {:?}",
                    paths.manifest().display(),
                    h.line,
                    h.name
                );
                match std::fs::metadata(&prog) {
                    Err(e) => r
                        .errors
                        .push(format!("{loc}: key `command`: {}: {e}", prog.display())),
                    Ok(md) if !md.is_file() => r.errors.push(format!(
                        "{loc}: key `command`: {} is not a regular file",
                        prog.display()
                    )),
                    Ok(md) if md.permissions().mode() & 0o111 == 0 => r.errors.push(format!(
                        "{loc}: key `command`: {} is not executable",
                        prog.display()
                    )),
                    Ok(_) => {}
                }
                r.summary.push(format!(
                    "hook {}: stage {}, {}, {}, timeout {}s, capabilities [{}]",
                    h.name,
                    h.stage,
                    h.run.as_str(),
                    if h.required { "required" } else { "optional" },
                    h.timeout.as_secs(),
                    h.capabilities
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
        Err(Error::Manifest(e)) => r.errors.extend(e.to_string().lines().map(str::to_string)),
        Err(e) => r.errors.push(e.to_string()),
    }
    // The generator's view of units/, minus OS-unit collisions (the target
    // image is not known here).
    let input = generator::read_input(&paths, Path::new("/nonexistent"));
    let input = generator::Input {
        manifest: None,
        ..input
    };
    let plan = generator::plan(&paths, &input);
    for p in plan.problems {
        if p.ends_with("; ignored") {
            r.warnings.push(p);
        } else {
            r.errors.push(p);
        }
    }
    for e in plan.entries {
        if let generator::Entry::Link { path, .. } = e {
            if path.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
                r.summary.push(format!("unit enabled: {}", path.display()));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn check_finds_missing_and_non_executable_commands() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        fs::create_dir_all(t.join("bin")).unwrap();
        fs::create_dir_all(t.join("units")).unwrap();
        fs::write(t.join("oem-release"), "ID=test\n").unwrap();
        fs::write(
            t.join("oem.toml"),
            "version = 1\n[[hook]]\nname = \"a\"\nstage = \"late\"\ncommand = [\"/oem/bin/a\"]\ntimeout = 1\n\n[[hook]]\nname = \"b\"\nstage = \"late\"\ncommand = [\"/oem/bin/b\"]\ntimeout = 1\n",
        )
        .unwrap();
        fs::write(t.join("bin/a"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(t.join("bin/a"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(t.join("units/x.service"), "[Install]\nWantedBy\n").unwrap();
        let r = check(t);
        let m = t.join("oem.toml");
        assert_eq!(
            r.errors,
            vec![
                format!("{}:2: hook \"a\": key `command`: {}/bin/a is not executable", m.display(), t.display()),
                format!(
                    "{}:8: hook \"b\": key `command`: {}/bin/b: No such file or directory (os error 2)",
                    m.display(),
                    t.display()
                ),
                format!("{}/units/x.service:2: expected 'Key=Value' or '[Section]', found 'WantedBy'; skipped", t.display()),
            ]
        );
    }

    #[test]
    fn check_accepts_the_vm_test_tree() {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/vm-oem");
        let r = check(&tree);
        assert_eq!(r.errors, Vec::<String>::new());
        assert_eq!(r.summary.len(), 6, "{:?}", r.summary);
    }

    #[test]
    fn check_accepts_the_qemu_tree() {
        let qemu = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image/oem/qemu");
        let r = check(&qemu);
        assert_eq!(r.errors, Vec::<String>::new());
        assert_eq!(r.warnings, Vec::<String>::new());
        assert!(r
            .summary
            .iter()
            .any(|s| s.starts_with("oem-release: ID=qemu")));
    }
}
