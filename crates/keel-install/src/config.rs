//! The first-boot config: read the files named on the command line, check
//! them with keel-provision's own parser and planner-independent checks
//! (the code behind `keel-provision validate`), and turn them into the one
//! file placed on the new disk. All of it happens before a byte of the
//! device is written.
//!
//! Where it goes, on the OEM partition (which keeps its content and
//! partition GUID through ROOT's growth and the first boot's identity
//! step), applied once (keel-provision's marker `/var/lib/keel/provisioned`
//! is on ROOT):
//! - an Ignition config (`--ignition`, `--ssh-key`): `config.ign`
//!   ([`OEM_CONFIG`]), the OEM base config keel-provision merges under a
//!   config from fw_cfg, a config drive or the kernel command line;
//! - a cloud-config (`--cloud-config`): `user-data` ([`OEM_USER_DATA`]),
//!   keel-provision's last user-config source, used when the boot brings
//!   none (fw_cfg, a config drive and the command line win over it), merged
//!   over a vendor's `config.ign` like any user config.

use std::path::Path;

use keel_provision::Format;

use crate::args::FirstBootArgs;

/// The OEM base config keel-provision reads (`/oem/config.ign`), as a path
/// inside the partition.
pub const OEM_CONFIG: &str = "config.ign";

/// The OEM user config keel-provision reads (`/oem/user-data`), as a path
/// inside the partition.
pub const OEM_USER_DATA: &str = "user-data";

/// Ignition spec version of configs keel-install writes itself.
pub const SPEC: &str = "3.4.0";

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named on the command line cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// keel-provision refuses it (the message a boot would print).
    #[error("{0}")]
    Invalid(String),
}

/// What is placed on the disk, where, and a line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The file at the root of the OEM file system: [`OEM_CONFIG`] or
    /// [`OEM_USER_DATA`].
    pub file: &'static str,
    /// Its content.
    pub data: Vec<u8>,
    /// What it is (`ignition 3.4.0 from c.ign + 1 ssh key`).
    pub summary: String,
}

/// Read and check the config files; `Ok(None)` when none was given.
pub fn prepare(fb: &FirstBootArgs) -> Result<Option<Placed>, ConfigError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ConfigError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let keys = match &fb.ssh_key {
        Some(p) => {
            let text = read(p)?;
            let keys = ssh_keys(&String::from_utf8_lossy(&text));
            if keys.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{}: no SSH public key in it",
                    p.display()
                )));
            }
            keys
        }
        None => Vec::new(),
    };
    if let Some(p) = &fb.cloud_config {
        let data = read(p)?;
        let name = p.display().to_string();
        let (_, format) = validate(&data, &name)?;
        if !matches!(format, Format::CloudConfig | Format::Multipart(_)) {
            return Err(ConfigError::Invalid(format!(
                "{name}: --cloud-config is {format}, not #cloud-config (use --ignition)"
            )));
        }
        // Placed byte for byte: the first boot parses exactly what was
        // validated here.
        return Ok(Some(Placed {
            file: OEM_USER_DATA,
            data,
            summary: format!("{format} from {name}"),
        }));
    }
    let (mut doc, from) = match &fb.ignition {
        Some(p) => {
            let data = read(p)?;
            let name = p.display().to_string();
            let (_, format) = validate(&data, &name)?;
            if !matches!(format, Format::Ignition(_)) {
                return Err(ConfigError::Invalid(format!(
                    "{name}: --ignition is {format}, not an Ignition config (use --cloud-config)"
                )));
            }
            let v: serde_json::Value = serde_json::from_slice(&data)
                .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
            (v, format!("{format} from {name}"))
        }
        None if !keys.is_empty() => (
            serde_json::json!({ "ignition": { "version": SPEC } }),
            format!("ignition {SPEC}"),
        ),
        None => return Ok(None),
    };
    let mut summary = from;
    if !keys.is_empty() {
        add_core_keys(&mut doc, &keys)
            .map_err(|m| ConfigError::Invalid(format!("adding --ssh-key: {m}")))?;
        summary.push_str(&format!(
            " + {} SSH key{} for core",
            keys.len(),
            if keys.len() == 1 { "" } else { "s" }
        ));
    }
    let ignition = serde_json::to_vec_pretty(&doc)
        .map_err(|e| ConfigError::Invalid(format!("rendering the config: {e}")))?;
    // What is placed is checked again, exactly as the first boot will read it.
    validate(&ignition, "the config written to OEM config.ign")?;
    Ok(Some(Placed {
        file: OEM_CONFIG,
        data: ignition,
        summary,
    }))
}

/// keel-provision's parser: the code `keel-provision validate` and the
/// first boot run, with the same messages (`NAME: PATH: what`). Empty is
/// an error here: a file given on purpose should configure something.
fn validate(
    data: &[u8],
    name: &str,
) -> Result<(keel_provision::model::Config, Format), ConfigError> {
    match keel_provision::parse_config(data) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(ConfigError::Invalid(format!(
            "{name}: line 1: empty config"
        ))),
        Err(e) => Err(ConfigError::Invalid(format!("{name}: {e}"))),
    }
}

/// The keys of an `authorized_keys`-style text: one a line, comments and
/// blank lines skipped.
pub fn ssh_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Add `keys` to the user `core` of an Ignition document (the user is
/// added when the config does not name it).
pub fn add_core_keys(doc: &mut serde_json::Value, keys: &[String]) -> Result<(), String> {
    let root = doc
        .as_object_mut()
        .ok_or("the config is not a JSON object")?;
    let passwd = root
        .entry("passwd")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or("$.passwd is not an object")?;
    let users = passwd
        .entry("users")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
        .ok_or("$.passwd.users is not a list")?;
    let pos = users
        .iter()
        .position(|u| u.get("name").and_then(|n| n.as_str()) == Some("core"));
    let user = match pos {
        Some(i) => &mut users[i],
        None => {
            users.push(serde_json::json!({ "name": "core" }));
            let last = users.len() - 1;
            &mut users[last]
        }
    };
    let list = user
        .as_object_mut()
        .ok_or("the user core is not an object")?
        .entry("sshAuthorizedKeys")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
        .ok_or("core's sshAuthorizedKeys is not a list")?;
    for k in keys {
        if !list.iter().any(|v| v.as_str() == Some(k)) {
            list.push(serde_json::Value::String(k.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxb0OBVJ0cFk9C2u6pZ2jJsJ8jQv2p3a0b7kH4o8zQ1 me@host";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn no_config_is_none() {
        assert_eq!(prepare(&FirstBootArgs::default()).expect("none"), None);
    }

    #[test]
    fn ssh_key_alone_makes_an_ignition_config_for_core() {
        let t = tempfile::tempdir().expect("tmp");
        let fb = FirstBootArgs {
            ssh_key: Some(write(t.path(), "k.pub", &format!("# mine\n\n{KEY}\n"))),
            ..Default::default()
        };
        let p = prepare(&fb).expect("ok").expect("some");
        assert_eq!(p.file, OEM_CONFIG);
        let v: serde_json::Value = serde_json::from_slice(&p.data).expect("json");
        assert_eq!(v["ignition"]["version"], SPEC);
        assert_eq!(v["passwd"]["users"][0]["name"], "core");
        assert_eq!(v["passwd"]["users"][0]["sshAuthorizedKeys"][0], KEY);
        assert!(p.summary.contains("1 SSH key for core"), "{}", p.summary);
    }

    #[test]
    fn ssh_key_joins_the_configs_core_user() {
        let t = tempfile::tempdir().expect("tmp");
        let ign = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"ops"},{"name":"core","sshAuthorizedKeys":["ssh-rsa AAAAB3Nza old"]}]},
            "storage":{"files":[{"path":"/etc/hostname","mode":420,"contents":{"source":"data:,keel-01"}}]}}"#;
        let fb = FirstBootArgs {
            ignition: Some(write(t.path(), "c.ign", ign)),
            ssh_key: Some(write(t.path(), "k.pub", KEY)),
            ..Default::default()
        };
        let p = prepare(&fb).expect("ok").expect("some");
        let v: serde_json::Value = serde_json::from_slice(&p.data).expect("json");
        let users = v["passwd"]["users"].as_array().expect("users");
        assert_eq!(users.len(), 2);
        assert_eq!(
            users[1]["sshAuthorizedKeys"]
                .as_array()
                .expect("keys")
                .len(),
            2
        );
        assert_eq!(v["storage"]["files"][0]["path"], "/etc/hostname");
        assert!(
            p.summary.starts_with("ignition 3.3.0 from"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn a_bad_ignition_config_is_refused_with_keel_provisions_message() {
        let t = tempfile::tempdir().expect("tmp");
        let fb = FirstBootArgs {
            ignition: Some(write(
                t.path(),
                "bad.ign",
                r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"relative"}]}}"#,
            )),
            ..Default::default()
        };
        let e = prepare(&fb).expect_err("bad").to_string();
        assert!(e.contains("bad.ign"), "{e}");
        assert!(e.contains("storage.files"), "{e}");
    }

    #[test]
    fn wrong_kind_missing_file_and_empty_key_file() {
        let t = tempfile::tempdir().expect("tmp");
        let cc = write(t.path(), "u.yml", "#cloud-config\nhostname: a\n");
        let e = prepare(&FirstBootArgs {
            ignition: Some(cc.clone()),
            ..Default::default()
        })
        .expect_err("kind")
        .to_string();
        assert!(e.contains("not an Ignition config"), "{e}");
        let e = prepare(&FirstBootArgs {
            ignition: Some(t.path().join("nope.ign")),
            ..Default::default()
        })
        .expect_err("missing")
        .to_string();
        assert!(e.contains("reading") && e.contains("nope.ign"), "{e}");
        let e = prepare(&FirstBootArgs {
            ssh_key: Some(write(t.path(), "empty.pub", "# nothing\n")),
            ..Default::default()
        })
        .expect_err("empty")
        .to_string();
        assert!(e.contains("no SSH public key"), "{e}");
    }

    #[test]
    fn a_cloud_config_is_validated_and_placed_as_oem_user_data_byte_for_byte() {
        let t = tempfile::tempdir().expect("tmp");
        let bad = write(
            t.path(),
            "bad.yml",
            "#cloud-config\nwrite_files:\n  - content: x\n",
        );
        let e = prepare(&FirstBootArgs {
            cloud_config: Some(bad.clone()),
            ..Default::default()
        })
        .expect_err("bad")
        .to_string();
        // keel-provision validate's message for the same file, word for word.
        let v = keel_provision::validate(
            &std::fs::read(&bad).expect("read"),
            &bad.display().to_string(),
            keel_provision::Base::None,
            &Default::default(),
        )
        .expect_err("validate refuses it too")
        .to_string();
        assert_eq!(e, v);
        let text = "#cloud-config\n# kept as written\nhostname: a\n";
        let good = write(t.path(), "good.yml", text);
        let p = prepare(&FirstBootArgs {
            cloud_config: Some(good),
            ..Default::default()
        })
        .expect("valid")
        .expect("some");
        assert_eq!(p.file, OEM_USER_DATA);
        assert_eq!(p.data, text.as_bytes());
        assert!(p.summary.starts_with("cloud-config from"), "{}", p.summary);
        // MIME multipart of cloud-configs is cloud-config user data too.
        let mime = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: m\n--B--\n";
        let p = prepare(&FirstBootArgs {
            cloud_config: Some(write(t.path(), "ud.mime", mime)),
            ..Default::default()
        })
        .expect("multipart")
        .expect("some");
        assert_eq!(
            (p.file, p.data.as_slice()),
            (OEM_USER_DATA, mime.as_bytes())
        );
        // An Ignition config given as --cloud-config is named as such.
        let e = prepare(&FirstBootArgs {
            cloud_config: Some(write(
                t.path(),
                "c.ign",
                r#"{"ignition":{"version":"3.4.0"}}"#,
            )),
            ..Default::default()
        })
        .expect_err("kind")
        .to_string();
        assert!(e.contains("not #cloud-config (use --ignition)"), "{e}");
    }

    #[test]
    fn the_oem_file_names_are_keel_provisions() {
        use keel_contract::paths;
        assert_eq!(OEM_CONFIG, paths::on_oem(paths::OEM_BASE_CONFIG));
        assert_eq!(OEM_USER_DATA, paths::on_oem(paths::OEM_USER_DATA));
    }
}
