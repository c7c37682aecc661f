//! First-boot provisioning for Keel: Ignition (spec 3.0–3.4) and
//! `#cloud-config`, applied whole or not at all into the sysroot, from the
//! initramfs, before switch_root.
//!
//! # What it owns
//! - the run-once marker `/var/lib/keel/provisioned` on ROOT ([`MARKER`]);
//! - the result `/etc/.keel-provision-result.json` ([`RESULT`]), shown by
//!   `keel-provision show`;
//! - the files, units, links, account entries (`/etc/passwd`, `group`,
//!   `shadow`, `gshadow`) and `~/.ssh/authorized_keys` a config asks for;
//! - runtime `multi-user.target.wants` links under `/run/systemd/system` for
//!   cloud-config units with `command: start`;
//! - `/etc/sudoers.d/keel-provision-NAME` for cloud-config users with `sudo`.
//!
//! # What it reads
//! In order, the first that has a config wins:
//! 1. QEMU fw_cfg `opt/keel/config`, `opt/org.flatcar-linux/config`,
//!    `opt/com.coreos/config` (`<fw_cfg_root>/<key>/raw`);
//! 2. a config drive found by reading the label of each device in
//!    `/sys/class/block` (ISO9660 or FAT): `config-2` →
//!    `openstack/latest/user_data`, `cidata` → `user-data` + `meta-data`
//!    (`local-hostname`); mounted read-only under `/run/keel/config-drive`;
//! 3. the kernel command line `keel.config_url=data:…` (or Ignition's
//!    `ignition.config.url=data:…`);
//! 4. the OEM partition's `/oem/user-data` (any format; `keel-install
//!    --cloud-config` places it): the disk's own config, used only when the
//!    boot brings none.
//!
//! The OEM base config `/oem/config.ign` is merged underneath. No config at
//! all is a valid boot. `keel.first_boot=1` on the command line re-runs
//! provisioning although the marker exists. The sysroot's `/etc/passwd`,
//! `/etc/group`, `/usr/lib/sysusers.d` and `/etc/sysusers.d` resolve user
//! and group names (the `core` user, uid/gid 500, is declared in
//! `/usr/lib/sysusers.d/keel.conf` and created by systemd-sysusers later).
//!
//! # Contract with keel-init
//! keel-init (static, in the initramfs) mounts ROOT at `/sysroot`, USR at
//! `/sysroot/usr`, OEM read-only at `/sysroot/oem`, assembles the `/etc`
//! overlay, loads the modules the sources need (`qemu_fw_cfg`; `isofs`;
//! `vfat` with `nls_cp437` and `nls_ascii`/`nls_utf8`; `sr_mod`/`cdrom`
//! and the disk controller a `-cdrom` drive hangs off), then calls
//! [`first_boot`] with [`FirstBoot::standard`] and [`sys::Real`]. On `Err`
//! it prints the error's `Display` (the whole console message: source and
//! JSON path / YAML key / file) and stops the boot; nothing was written to
//! ROOT. It must carry `/run` over switch_root (move mount), so runtime
//! units reach systemd. The library is synchronous, has no network code and
//! no C dependencies.

pub mod accounts;
pub mod apply;
pub mod butane;
pub mod cloudconfig;
pub mod dataurl;
pub mod ignition;
pub mod mime;
pub mod model;
pub mod plan;
pub mod sources;
pub mod sys;
pub mod yaml;

/// A config that cannot be used, with where in it: a JSON path
/// (`$.storage.files.0.path`), a YAML key (`write_files[0].path`), or a
/// line/column for syntax errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// JSON path, YAML key or position.
    pub path: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

/// The format of a user config, told from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Ignition JSON, with its spec version.
    Ignition(String),
    /// `#cloud-config` YAML.
    CloudConfig,
    /// Butane YAML or a Container Linux Config, translated to Ignition:
    /// `butane flatcar 1.1.0 → ignition 3.4.0`.
    Butane(String),
    /// MIME multipart user data whose parts are cloud-configs.
    Multipart(usize),
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Ignition(v) => write!(f, "ignition {v}"),
            Format::CloudConfig => f.write_str("cloud-config"),
            Format::Butane(what) => f.write_str(what),
            Format::Multipart(n) => write!(f, "multipart cloud-config ({n} parts)"),
        }
    }
}

/// Parse a user config in any format Keel reads (Ignition JSON,
/// `#cloud-config`, Butane / Container Linux Config YAML, MIME multipart
/// cloud-config). Empty (or whitespace-only) input is `Ok(None)`: an empty
/// user-data file is a valid "no config". Butane `local:` contents are
/// refused (a boot has no files directory).
pub fn parse_config(data: &[u8]) -> Result<Option<(model::Config, Format)>, ConfigError> {
    parse_config_with(data, &butane::Options::default())
}

/// [`parse_config`] with Butane options (a files directory for `local:`).
pub fn parse_config_with(
    data: &[u8],
    opts: &butane::Options,
) -> Result<Option<(model::Config, Format)>, ConfigError> {
    let start = data.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else { return Ok(None) };
    let rest = &data[start..];
    if rest.starts_with(b"{") {
        let (cfg, v) = ignition::parse(data)?;
        return Ok(Some((cfg, Format::Ignition(v))));
    }
    if rest.starts_with(cloudconfig::HEADER.as_bytes()) {
        return Ok(Some((cloudconfig::parse(rest)?, Format::CloudConfig)));
    }
    if mime::looks_like(rest) {
        let (cfg, n) = mime::parse(rest)?;
        return Ok(Some((cfg, Format::Multipart(n))));
    }
    if butane::looks_like(rest) {
        let (cfg, what) = butane::parse(rest, opts)?;
        return Ok(Some((cfg, Format::Butane(what))));
    }
    let what = if rest.starts_with(b"#!") {
        "shell scripts as user data are not supported by keel"
    } else if rest.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed user data is not supported by keel"
    } else {
        "neither an Ignition config (JSON object), #cloud-config, Butane YAML \
         (variant/version) nor MIME multipart"
    };
    Err(ConfigError {
        path: "line 1".into(),
        message: what.into(),
    })
}

#[cfg(test)]
mod boot_tests;
#[cfg(test)]
mod parse_tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The run-once marker, relative to the sysroot.
pub const MARKER: &str = keel_contract::paths::PROVISIONED;
/// The result file, relative to the sysroot.
pub const RESULT: &str = keel_contract::paths::PROVISION_RESULT;

/// Inputs of a first-boot run, all as paths so tests run on temp dirs.
#[derive(Debug, Clone)]
pub struct FirstBoot {
    /// The new root: ROOT, with USR, OEM and the `/etc` overlay mounted.
    pub sysroot: PathBuf,
    /// The kernel command line (contents of `/proc/cmdline`).
    pub cmdline: String,
    /// `/sys/firmware/qemu_fw_cfg/by_name`.
    pub fw_cfg_root: PathBuf,
    /// `/sys/class/block`.
    pub block_dir: PathBuf,
    /// `/dev`.
    pub dev_dir: PathBuf,
    /// The OEM partition, `/sysroot/oem`.
    pub oem_dir: PathBuf,
    /// The runtime `/run` (config drive mount point under `keel/`, runtime
    /// units under `systemd/system/`).
    pub run_root: PathBuf,
}

impl FirstBoot {
    /// The paths keel-init uses.
    pub fn standard(cmdline: String) -> FirstBoot {
        FirstBoot {
            sysroot: "/sysroot".into(),
            cmdline,
            fw_cfg_root: "/sys/firmware/qemu_fw_cfg/by_name".into(),
            block_dir: "/sys/class/block".into(),
            dev_dir: "/dev".into(),
            oem_dir: "/sysroot/oem".into(),
            run_root: "/run".into(),
        }
    }
}

/// What a provisioning run did; also the content of [`RESULT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Where the user config came from, or `none`.
    pub source: String,
    /// `ignition 3.4.0`, `cloud-config`, or `none`.
    pub format: String,
    /// The OEM base config, if one was merged.
    pub oem_base: Option<String>,
    /// What was applied.
    pub applied: plan::Summary,
    /// Number of plan steps.
    pub steps: usize,
    /// Provisioning's own time, in microseconds.
    pub duration_us: u64,
    /// When it finished (seconds since the epoch).
    pub finished_unix: u64,
}

/// What [`first_boot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The marker exists and `keel.first_boot=1` is not set: nothing done.
    AlreadyProvisioned,
    /// Provisioned (possibly with no config at all).
    Applied(Box<Report>),
}

/// Why provisioning failed. `Display` is the console message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source exists but cannot be read.
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    /// A config is invalid.
    #[error("{source_name}: {error}")]
    Config {
        /// Which config.
        source_name: String,
        /// Where in it, and what.
        error: ConfigError,
    },
    /// The config cannot be applied to this sysroot.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// Applying failed part way (I/O error, e.g. ROOT full); the marker is
    /// not written.
    #[error("applying the config: {0}")]
    Apply(#[from] apply::ApplyError),
    /// A Keel parameter on the kernel command line has a bad value
    /// (keel-init stops the boot on it before provisioning runs).
    #[error(transparent)]
    Cmdline(#[from] keel_contract::CmdlineError),
    /// Writing the result or marker failed.
    #[error("writing {path}: {error}")]
    Record {
        /// Host path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// A loaded, merged config ready to plan, and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The merged config.
    pub config: model::Config,
    /// User config source, or `none`.
    pub source: String,
    /// User config format, or `none`.
    pub format: String,
    /// OEM base config path, if merged.
    pub oem_base: Option<String>,
}

/// The user config of a first boot: the first source that has one, in
/// order fw_cfg, config drive, kernel command line, OEM `user-data`. A
/// config the boot brings (the hypervisor, an attached drive, the command
/// line) wins over the one the disk carries.
fn user_config(fb: &FirstBoot, sys: &dyn sys::System) -> Result<Option<sources::Found>, Error> {
    let from_boot = match sources::fw_cfg(&fb.fw_cfg_root)? {
        Some(f) => Some(f),
        None => {
            // CONFIG_DRIVE_MOUNT is /run/keel/config-drive; run_root is /run.
            let mount = fb
                .run_root
                .join(keel_contract::paths::CONFIG_DRIVE_MOUNT.trim_start_matches("/run/"));
            match sources::config_drive(&fb.block_dir, &fb.dev_dir, &mount, sys)? {
                Some(f) => Some(f),
                None => sources::cmdline(&fb.cmdline)?,
            }
        }
    };
    match from_boot {
        Some(f) => {
            let oem = fb.oem_dir.join(keel_contract::paths::on_oem(
                keel_contract::paths::OEM_USER_DATA,
            ));
            if oem.exists() {
                tracing::info!(source = %f.name, unused = %oem.display(),
                    "a config the boot brings wins over the disk's OEM user-data");
            }
            Ok(Some(f))
        }
        None => Ok(sources::oem_user_data(&fb.oem_dir)?),
    }
}

/// Find, read and parse the configs of a first boot and merge them.
pub fn load(fb: &FirstBoot, sys: &dyn sys::System) -> Result<Loaded, Error> {
    let found = user_config(fb, sys)?;
    let mut loaded = Loaded {
        source: "none".into(),
        format: "none".into(),
        ..Default::default()
    };
    let mut user = model::Config::default();
    if let Some(found) = found {
        tracing::info!(source = %found.name, "found a config");
        loaded.source = found.name.clone();
        if let Some(meta) = &found.meta_data {
            let meta_name = found.name.replace(" user-data", " meta-data");
            let host = cloudconfig::meta_data_hostname(meta).map_err(|error| Error::Config {
                source_name: meta_name.clone(),
                error,
            })?;
            if let Some(h) = host {
                let mut m = model::Config::default();
                m.files
                    .push(cloudconfig::hostname_file(&h, "local-hostname"));
                m.set_source(&meta_name);
                user = m;
            }
        }
        match parse_config(&found.data).map_err(|error| Error::Config {
            source_name: found.name.clone(),
            error,
        })? {
            Some((mut cfg, format)) => {
                cfg.set_source(&found.name);
                loaded.format = format.to_string();
                user = cfg.merged_over(user);
            }
            None => tracing::info!(source = %found.name, "user data is empty"),
        }
    }
    let mut base = model::Config::default();
    if let Some((path, data)) = sources::oem_base(&fb.oem_dir)? {
        let name = format!("OEM base config {}", path.display());
        let (mut cfg, _) = ignition::parse(&data).map_err(|error| Error::Config {
            source_name: name.clone(),
            error,
        })?;
        cfg.set_source(&name);
        loaded.oem_base = Some(path.display().to_string());
        base = cfg;
    }
    loaded.config = user.merged_over(base);
    Ok(loaded)
}

/// Provision the sysroot on first boot: load, plan (every check before the
/// first write), apply, then write [`RESULT`] and [`MARKER`].
pub fn first_boot(fb: &FirstBoot, sys: &dyn sys::System) -> Result<Outcome, Error> {
    let start = Instant::now();
    let marker = fb.sysroot.join(MARKER.trim_start_matches('/'));
    if marker.exists() && !sources::forced(&fb.cmdline)? {
        tracing::info!(marker = %marker.display(), "already provisioned");
        return Ok(Outcome::AlreadyProvisioned);
    }
    let loaded = load(fb, sys)?;
    let report = provision(loaded, &fb.sysroot, &fb.run_root, sys, start)?;
    Ok(Outcome::Applied(Box::new(report)))
}

/// Apply a config file to a root tree outside of a boot (image builds,
/// tests, benchmarks): the same parse → plan → apply → record as
/// [`first_boot`], without sources, OEM base or the run-once check.
pub fn apply_file(
    data: &[u8],
    name: &str,
    sysroot: &Path,
    run_root: &Path,
    sys: &dyn sys::System,
    opts: &butane::Options,
) -> Result<Report, Error> {
    let start = Instant::now();
    let (mut config, format) = parse_required(data, name, opts)?;
    config.set_source(name);
    let loaded = Loaded {
        config,
        source: name.into(),
        format: format.to_string(),
        oem_base: None,
    };
    provision(loaded, sysroot, run_root, sys, start)
}

/// Plan, apply, then write [`RESULT`] and [`MARKER`].
fn provision(
    loaded: Loaded,
    sysroot: &Path,
    run_root: &Path,
    sys: &dyn sys::System,
    start: Instant,
) -> Result<Report, Error> {
    let plan = plan::plan(&loaded.config, sysroot)?;
    apply::apply(&plan, sysroot, run_root, sys)?;
    let report = Report {
        source: loaded.source,
        format: loaded.format,
        oem_base: loaded.oem_base,
        applied: plan.summary.clone(),
        steps: plan.steps.len(),
        duration_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    // Serialising plain strings and numbers cannot fail.
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    for (rel, mode) in [(RESULT, 0o644), (MARKER, 0o644)] {
        let path = sysroot.join(rel.trim_start_matches('/'));
        let record = |error| Error::Record {
            path: path.clone(),
            error,
        };
        // Owned by whoever provisions (root at boot), durable each.
        keel_contract::AtomicWrite::new()
            .mode(mode)
            .write(&path, &json)
            .map_err(record)?;
    }
    tracing::info!(source = %report.source, steps = report.steps, duration_us = report.duration_us, "provisioned");
    Ok(report)
}

fn parse_required(
    data: &[u8],
    name: &str,
    opts: &butane::Options,
) -> Result<(model::Config, Format), Error> {
    let config_err = |error| Error::Config {
        source_name: name.into(),
        error,
    };
    parse_config_with(data, opts)
        .map_err(config_err)?
        .ok_or_else(|| {
            config_err(ConfigError {
                path: "line 1".into(),
                message: "empty config".into(),
            })
        })
}

/// What `validate` plans a config against.
#[derive(Debug, Clone, Copy)]
pub enum Base<'a> {
    /// Parse and check the config only.
    None,
    /// A whole root tree (`--sysroot`).
    Sysroot(&'a Path),
    /// An image's `/usr` (`--usr`, or `/usr` on a running Keel): its units
    /// and sysusers, and its factory `/etc` as the first boot's `/etc`,
    /// over an empty ROOT.
    Image(&'a Path),
}

/// Check a config file offline, with the messages a boot would print, and
/// plan it the way a first boot does against `base` (owners, existing
/// files, units to enable, instances of templates): a config `validate`
/// accepts against an image is one that image's first boot applies.
/// Returns the plan.
pub fn validate(
    data: &[u8],
    name: &str,
    base: Base<'_>,
    opts: &butane::Options,
) -> Result<(plan::Plan, Format), Error> {
    let (mut cfg, format) = parse_required(data, name, opts)?;
    cfg.set_source(name);
    let plan = match base {
        Base::None => plan::Plan::default(),
        Base::Sysroot(root) => plan::plan(&cfg, root)?,
        Base::Image(usr) => {
            // Never created: every read of it finds nothing, as on a fresh ROOT.
            let empty = usr.join(".keel-validate-empty-root");
            plan::plan_in(&cfg, &plan::Tree::image(usr, &empty))?
        }
    };
    Ok((plan, format))
}

/// Translate a Butane / Container Linux Config file to Ignition JSON.
pub fn translate(data: &[u8], name: &str, opts: &butane::Options) -> Result<String, Error> {
    let v = butane::translate(data, opts).map_err(|error| Error::Config {
        source_name: name.into(),
        error,
    })?;
    // The translation is what a boot reads: check it the same way.
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    ignition::parse(text.as_bytes()).map_err(|error| Error::Config {
        source_name: format!("{name} (translated)"),
        error,
    })?;
    Ok(text)
}

/// Read the result of the last provisioning from a root (`/` on a running
/// system). `Ok(None)` when the machine was never provisioned.
pub fn read_result(root: &Path) -> Result<Option<Report>, String> {
    let path = root.join(RESULT.trim_start_matches('/'));
    match std::fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
