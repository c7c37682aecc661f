//! The directory rules: `.network` and `.netdev` files from networkd's
//! directories and Keel's own, merged (see [`DEFAULT_DIRS`]) with
//! keel-unit's search-path rules (`keel_unit::dropin`): a later directory
//! wins for the same file name, files are sorted by file name across all
//! directories; an empty file or a symlink to /dev/null masks;
//! `NAME.network.d/*.conf` (and `NAME.netdev.d/*.conf`) drop-ins from all
//! directories, same-name rules, applied in name order. A file whose
//! `[Match]` host conditions do not hold on this machine is skipped; a
//! `.network` with nothing in `[Match]` is ignored with a warning (as
//! networkd does: "add Name=* to match every link").

use std::path::{Path, PathBuf};

use keel_unit::dropin;

use super::cond::{self, HostFacts};
use super::netdev::{self, NetDev};
use super::{from_sections, syntax, ConfigError, Network, Warning};

/// The search path, lowest priority first: at each level (`/usr/lib`,
/// `/run`, `/etc`) networkd's directory and then Keel's, so `/etc` beats
/// `/run` beats `/usr/lib` whatever the directory, and at the same level a
/// Keel file replaces a networkd file of the same name.
pub const DEFAULT_DIRS: [&str; 6] = [
    "/usr/lib/systemd/network",
    keel_contract::paths::NETWORK_DIRS[0],
    "/run/systemd/network",
    keel_contract::paths::NETWORK_DIRS[1],
    "/etc/systemd/network",
    keel_contract::paths::NETWORK_DIRS[2],
];

/// What became of one file.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Index into [`Loaded::networks`].
    Network(usize),
    /// Index into [`Loaded::netdevs`].
    NetDev(usize),
    /// Index into [`Loaded::errors`].
    Error(usize),
    /// Parsed but not used, and why.
    Ignored(String),
    Masked,
}

/// One file in load order, with its outcome and its own warnings.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub path: PathBuf,
    /// Same-named files in earlier directories that this one replaces.
    pub replaces: Vec<PathBuf>,
    pub outcome: Outcome,
    pub warnings: Vec<Warning>,
}

/// The outcome of loading: usable netdevs and networks in order, rejected
/// files with their error, warnings, and every file's fate in `entries`
/// (`.netdev` files first, then `.network` files, each in name order).
#[derive(Debug, Default)]
pub struct Loaded {
    pub networks: Vec<Network>,
    pub netdevs: Vec<NetDev>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
    pub entries: Vec<FileEntry>,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        file: path.to_path_buf(),
        reason: format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })
}

/// The sections of one file and its (unmasked) drop-ins.
fn sections_of(
    name: &str,
    path: &Path,
    dirs: &[PathBuf],
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<syntax::Section>, Vec<PathBuf>), ConfigError> {
    let mut sections = syntax::parse(path, &read(path)?, warnings)?;
    let dropins = dropin::dropins(dirs, &[format!("{name}.d")]);
    for d in &dropins {
        sections.extend(syntax::parse(d, &read(d)?, warnings)?);
    }
    Ok((sections, dropins))
}

/// Load every `.netdev` and `.network` under `dirs` (lowest priority
/// first), testing `[Match]` host conditions against the running machine.
pub fn load(dirs: &[PathBuf]) -> Loaded {
    load_with(dirs, &HostFacts::detect())
}

/// [`load`] with the host facts given (tests, `check`).
pub fn load_with(dirs: &[PathBuf], host: &HostFacts) -> Loaded {
    let mut out = Loaded::default();
    let not_holding = |c: &[cond::Condition]| -> Option<String> {
        (!cond::all_hold(c, host)).then(|| {
            let list: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            format!("conditions do not hold on this host ({})", list.join(" "))
        })
    };
    for found in dropin::list(dirs, ".netdev") {
        let (name, path) = (found.name, found.path);
        let mut warnings = Vec::new();
        let outcome = if found.masked {
            Outcome::Masked
        } else {
            match sections_of(&name, &path, dirs, &mut warnings)
                .and_then(|(s, _)| netdev::from_sections(&name, &path, &s, &mut warnings))
            {
                Ok(d) if !d.unknown_match.is_empty() => Outcome::Ignored(format!(
                    "unknown [Match] key {}: not created (fail closed)",
                    d.unknown_match.join(", ")
                )),
                Ok(d) => match not_holding(&d.conditions) {
                    Some(why) => Outcome::Ignored(why),
                    None if out.netdevs.iter().any(|x| x.ifname == d.ifname) => Outcome::Ignored(
                        format!("{} is already defined by an earlier .netdev file", d.ifname),
                    ),
                    None => {
                        out.netdevs.push(d);
                        Outcome::NetDev(out.netdevs.len() - 1)
                    }
                },
                Err(e) => {
                    out.errors.push(e);
                    Outcome::Error(out.errors.len() - 1)
                }
            }
        };
        out.warnings.extend(warnings.iter().cloned());
        out.entries.push(FileEntry {
            path,
            replaces: found.replaces,
            outcome,
            warnings,
        });
    }
    for found in dropin::list(dirs, ".network") {
        let (name, path) = (found.name, found.path);
        let mut warnings = Vec::new();
        let outcome = if found.masked {
            tracing::debug!(file = %path.display(), "masked");
            Outcome::Masked
        } else {
            match sections_of(&name, &path, dirs, &mut warnings)
                .and_then(|(s, dropins)| from_sections(&name, &path, dropins, &s, &mut warnings))
            {
                Ok(n) if n.match_.is_empty() => {
                    warnings.push(Warning {
                        file: path.clone(),
                        line: 1,
                        message: "no [Match] conditions: ignoring this file, as networkd does; add Name=* to [Match] to match every link".into(),
                    });
                    Outcome::Ignored("no [Match] conditions".into())
                }
                Ok(n) => match not_holding(&n.match_.conditions) {
                    Some(why) => Outcome::Ignored(why),
                    None => {
                        out.networks.push(n);
                        Outcome::Network(out.networks.len() - 1)
                    }
                },
                Err(e) => {
                    out.errors.push(e);
                    Outcome::Error(out.errors.len() - 1)
                }
            }
        };
        out.warnings.extend(warnings.iter().cloned());
        out.entries.push(FileEntry {
            path,
            replaces: found.replaces,
            outcome,
            warnings,
        });
    }
    out
}

/// Parse a single file's text the way [`load`] would (no drop-ins); the
/// entry point for fuzzing and the `check` style tests.
pub fn parse_text(path: &Path, text: &str) -> (Result<Network, ConfigError>, Vec<Warning>) {
    let mut warnings = Vec::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = syntax::parse(path, text, &mut warnings)
        .map_err(ConfigError::from)
        .and_then(|s| from_sections(&name, path, Vec::new(), &s, &mut warnings));
    (r, warnings)
}
