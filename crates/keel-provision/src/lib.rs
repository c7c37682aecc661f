pub mod cloudconfig;
pub mod dataurl;
pub mod ignition;
pub mod model;
pub mod accounts;
pub mod plan;
pub mod apply;
pub mod sys;

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
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Ignition(v) => write!(f, "ignition {v}"),
            Format::CloudConfig => f.write_str("cloud-config"),
        }
    }
}

/// Parse a user config in either format. Empty (or whitespace-only) input
/// is `Ok(None)`: an empty user-data file is a valid "no config".
pub fn parse_config(data: &[u8]) -> Result<Option<(model::Config, Format)>, ConfigError> {
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
    let what = if rest.starts_with(b"#!") {
        "shell scripts as user data are not supported by keel"
    } else if rest.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed user data is not supported by keel"
    } else {
        "neither an Ignition config (JSON object) nor #cloud-config"
    };
    Err(ConfigError { path: "line 1".into(), message: what.into() })
}

#[cfg(test)]
mod parse_tests;
