//! The directory rules: `.network` files from `/usr/lib/keel/network`,
//! `/run/keel/network` and `/etc/keel/network` (later directories win for
//! the same file name), sorted by file name across directories; an empty
//! file or a symlink to /dev/null masks; `NAME.network.d/*.conf` drop-ins
//! from all three directories, same-name rules, applied in name order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{from_sections, syntax, ConfigError, Network, Warning};

/// The search path, lowest priority first.
pub const DEFAULT_DIRS: [&str; 3] = keel_contract::paths::NETWORK_DIRS;

/// The outcome of loading: usable networks in match order, rejected files
/// with their error, and warnings.
#[derive(Debug, Default)]
pub struct Loaded {
    pub networks: Vec<Network>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

fn masked(path: &Path) -> bool {
    if let Ok(target) = std::fs::read_link(path) {
        if target == Path::new("/dev/null") {
            return true;
        }
    }
    std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(false)
}

/// Map file name → highest-priority path for entries ending in `suffix`.
fn collect(dirs: &[PathBuf], sub: Option<&str>, suffix: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let dir = match sub {
            Some(s) => dir.join(s),
            None => dir.clone(),
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            out.insert(n.clone(), dir.join(&n));
        }
    }
    out
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

/// Load one network: the file and its (unmasked) drop-ins.
fn load_one(
    name: &str,
    path: &Path,
    dirs: &[PathBuf],
    warnings: &mut Vec<Warning>,
) -> Result<Network, ConfigError> {
    let mut sections = syntax::parse(path, &read(path)?, warnings)?;
    let dropins: Vec<PathBuf> = collect(dirs, Some(&format!("{name}.d")), ".conf")
        .into_values()
        .filter(|p| !masked(p))
        .collect();
    for d in &dropins {
        sections.extend(syntax::parse(d, &read(d)?, warnings)?);
    }
    from_sections(name, path, dropins, &sections, warnings)
}

/// Load every `.network` under `dirs` (lowest priority first).
pub fn load(dirs: &[PathBuf]) -> Loaded {
    let mut out = Loaded::default();
    for (name, path) in collect(dirs, None, ".network") {
        if masked(&path) {
            tracing::debug!(file = %path.display(), "masked");
            continue;
        }
        let mut warnings = Vec::new();
        match load_one(&name, &path, dirs, &mut warnings) {
            Ok(n) => out.networks.push(n),
            Err(e) => out.errors.push(e),
        }
        out.warnings.extend(warnings);
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
