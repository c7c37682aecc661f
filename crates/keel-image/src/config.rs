//! `image/image.toml`: the image definition.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Errors loading the image definition.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid (toml's message names the key and line).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is semantically wrong.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole image definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Format version; must be 1.
    pub version: u32,
    /// Image name (file names under the output directory).
    pub name: String,
    /// The OS version written to os-release.
    pub os_version: String,
    /// The Debian base.
    pub debian: Debian,
    /// Kernel settings.
    pub kernel: Kernel,
    /// Initramfs settings.
    pub initramfs: Initramfs,
    /// Keel binaries to install.
    #[serde(default, rename = "binary")]
    pub binaries: Vec<Binary>,
    /// Keel's units.
    pub systemd: Systemd,
    /// Partition sizes.
    pub disk: Disk,
    /// OEM partition contents.
    pub oem: Oem,
    /// Update keys shipped in the image.
    #[serde(default)]
    pub update: Update,
}

/// Public keys the image trusts for updates (`/usr/share/keel/update-keys/`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Generate a per-build development key pair (`<out>/dev-update-key/`)
    /// and trust its public half.
    #[serde(default)]
    pub dev_key: bool,
    /// Vendor public keys (minisign `.pub` files, relative to the
    /// repository), all trusted at once (rotation).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// The Debian tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    /// Suite, e.g. bookworm.
    pub suite: String,
    /// sources.list lines.
    pub mirrors: Vec<String>,
    /// Packages on top of minbase.
    pub packages: Vec<String>,
    /// Module subtrees (relative to /usr/lib/modules/KVER) to drop.
    #[serde(default)]
    pub prune_modules: Vec<String>,
    /// Paths (relative to the tree root) to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Kernel command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Base command line; the root hash is appended.
    pub cmdline: String,
}

/// Initramfs contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    /// Modules keel-init loads (dependencies are resolved).
    pub modules: Vec<String>,
}

/// One binary from the build.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// File name in the binary directory.
    pub name: String,
    /// Destination relative to /usr.
    pub dest: String,
    /// Extra symlinks (relative to /usr) pointing at `dest`.
    #[serde(default)]
    pub links: Vec<String>,
}

/// Units shipped from `units/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// Unit file names (their `NAME.d/` drop-in directories come along).
    pub units: Vec<String>,
}

/// Partition sizes in MiB.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Logical sector size.
    pub sector_size: u64,
    /// EFI-SYSTEM.
    pub esp_mib: u64,
    /// USR-A and USR-B, each.
    pub usr_mib: u64,
    /// USR-A-VERITY and USR-B-VERITY, each.
    pub usr_verity_mib: u64,
    /// OEM.
    pub oem_mib: u64,
    /// ROOT before first-boot growth.
    pub root_mib: u64,
}

/// OEM partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oem {
    /// `image/oem/<platform>` is copied to the partition's root.
    pub platform: String,
    /// Add a per-build development SSH key for `core`.
    #[serde(default)]
    pub dev_ssh_key: bool,
}

impl ImageConfig {
    /// Load and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parse and validate text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: ImageConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_string(),
            message,
        };
        if cfg.version != 1 {
            return Err(invalid(
                "version",
                format!("unsupported version {} (expected 1)", cfg.version),
            ));
        }
        if cfg.disk.sector_size != 512 && cfg.disk.sector_size != 4096 {
            return Err(invalid(
                "disk.sector_size",
                format!("{} is not 512 or 4096", cfg.disk.sector_size),
            ));
        }
        for (key, v) in [
            ("disk.esp_mib", cfg.disk.esp_mib),
            ("disk.usr_mib", cfg.disk.usr_mib),
            ("disk.usr_verity_mib", cfg.disk.usr_verity_mib),
            ("disk.oem_mib", cfg.disk.oem_mib),
            ("disk.root_mib", cfg.disk.root_mib),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for b in &cfg.binaries {
            for d in std::iter::once(&b.dest).chain(&b.links) {
                if d.starts_with('/') || d.split('/').any(|c| c == ".." || c.is_empty()) {
                    return Err(invalid(
                        "binary.dest",
                        format!("{d:?} must be a relative path below /usr"),
                    ));
                }
            }
        }
        if let Err(e) = keel_release::Version::parse(&cfg.os_version) {
            return Err(invalid("os_version", e.to_string()));
        }
        for k in &cfg.update.keys {
            if k.starts_with('/')
                || k.split('/').any(|c| c == ".." || c.is_empty())
                || !k.ends_with(".pub")
            {
                return Err(invalid(
                    "update.keys",
                    format!("{k:?} must be a relative path to a .pub file in the repository"),
                ));
            }
        }
        if cfg.name.is_empty() || cfg.name.contains('/') {
            return Err(invalid(
                "name",
                format!("{:?} is not a file name", cfg.name),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../image/image.toml"
        ))
        .unwrap()
    }

    #[test]
    fn shipped_definition_parses() {
        let c = ImageConfig::parse(Path::new("image.toml"), &shipped()).unwrap();
        assert_eq!(c.version, 1);
        assert!(c.binaries.iter().any(|b| b.name == "keel-init"));
        assert!(c.initramfs.modules.iter().any(|m| m == "dm_verity"));
    }

    #[test]
    fn unknown_key_named_with_line() {
        let text = shipped().replace("root_mib = ", "rootsize = 1\nroot_mib = ");
        let err = ImageConfig::parse(Path::new("image.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("image.toml: TOML parse error at line"),
            "{err}"
        );
        assert!(err.contains("unknown field `rootsize`"), "{err}");
    }

    #[test]
    fn bad_values_named() {
        let cases = [
            (
                "version = 1",
                "version = 2",
                "image.toml: version: unsupported version 2 (expected 1)",
            ),
            (
                "sector_size = 512",
                "sector_size = 1000",
                "image.toml: disk.sector_size: 1000 is not 512 or 4096",
            ),
            (
                "os_version = \"0.1.0\"",
                "os_version = \"0.1.0-rc1\"",
                "image.toml: os_version: version \"0.1.0-rc1\": component 2 (\"0-rc1\") is not a decimal number without leading zeros",
            ),
            (
                "oem_mib = 128",
                "oem_mib = 0",
                "image.toml: disk.oem_mib: must be at least 1",
            ),
            (
                "dest = \"bin/keel-init\"",
                "dest = \"../bin/keel-init\"",
                "image.toml: binary.dest: \"../bin/keel-init\" must be a relative path below /usr",
            ),
        ];
        for (from, to, want) in cases {
            let text = shipped().replace(from, to);
            let err = ImageConfig::parse(Path::new("image.toml"), &text).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
