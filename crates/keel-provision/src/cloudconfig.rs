//! `#cloud-config` YAML (the CoreOS subset) and NoCloud `meta-data` → [`Config`].
//!
//! Read with [`crate::yaml`] (YAML 1.1 integers and `!!binary`, over
//! `yaml-rust2`'s parser) and walked by hand, so that every message names the YAML key
//! (`write_files[0].permissions`). Keys Keel does not implement are rejected
//! by name rather than ignored: a config is applied whole or not at all.

use std::io::Read;

use crate::model::{
    check_account_name, check_hostname, check_passwd_field, check_unit_name, clean_path, Config,
    Dropin, File, Node, Owner, Unit, User,
};
use crate::yaml::{
    as_bool, as_map, as_seq, as_str, err, is_null, key_str, kind, load_one, strs, Node as Y, Value,
};
use crate::ConfigError;

/// The first line that marks a cloud-config document.
pub const HEADER: &str = "#cloud-config";

/// The user cloud-config's top-level `ssh_authorized_keys` belong to.
pub const DEFAULT_USER: &str = "core";

/// Keys cloud-init or coreos-cloudinit know that Keel does not implement;
/// these get "not supported by keel" instead of "unknown key".
const KNOWN_UNSUPPORTED: &[&str] = &[
    "runcmd",
    "bootcmd",
    "packages",
    "package_update",
    "package_upgrade",
    "apt",
    "manage_etc_hosts",
    "fqdn",
    "chpasswd",
    "ssh_pwauth",
    "ssh_keys",
    "disable_root",
    "mounts",
    "timezone",
    "ntp",
    "power_state",
    "final_message",
    "growpart",
    "resize_rootfs",
    "manage_resolv_conf",
    "network",
    "locale",
    "groups",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "preserve_hostname",
    "write_metadata",
    "system_info",
    "user",
    "password",
    "phone_home",
    "rsyslog",
    "snap",
    "yum_repos",
    "ca_certs",
];

/// Parse a `#cloud-config` document.
pub fn parse(text: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| {
        err(
            format!("byte {}", e.valid_up_to()),
            "cloud-config is not UTF-8",
        )
    })?;
    let first = text.lines().next().unwrap_or("").trim_end();
    if first != HEADER {
        return Err(err(
            "line 1",
            format!("cloud-config must start with {HEADER:?}"),
        ));
    }
    let doc = load_one(text)?;
    let mut cfg = Config::default();
    let Some(map) = doc else { return Ok(cfg) };
    let root = as_map(&map, "")?;
    let mut root_keys = Vec::new();
    for (k, v) in root {
        let key = key_str(k, "")?;
        match key {
            "ssh_authorized_keys" => root_keys = ssh_keys(v, key)?,
            "hostname" => {
                let h = as_str(v, key)?;
                check_hostname(h).map_err(|m| err(key, m))?;
                cfg.files.push(hostname_file(h, key));
            }
            "users" => {
                for (i, u) in as_seq(v, key)?.iter().enumerate() {
                    let at = format!("users[{i}]");
                    // cloud-init's "- default": the image's default user,
                    // which on Keel is core and exists anyway.
                    if let Value::Str(s) = &u.value {
                        if s == "default" {
                            continue;
                        }
                    }
                    cfg.users.push(user(u, &at)?);
                }
            }
            "write_files" => {
                for (i, f) in as_seq(v, key)?.iter().enumerate() {
                    cfg.files.push(write_file(f, &format!("write_files[{i}]"))?);
                }
            }
            "coreos" => {
                let mut update_lines = String::new();
                for (k2, v2) in as_map(v, key)? {
                    let key2 = key_str(k2, key)?;
                    let at = format!("coreos.{key2}");
                    match key2 {
                        "units" => {
                            for (i, u) in as_seq(v2, &at)?.iter().enumerate() {
                                cfg.units.push(unit(u, &format!("coreos.units[{i}]"))?);
                            }
                        }
                        "update" => update_lines.push_str(&update_conf(v2, &at, UPDATE_KEYS)?),
                        "locksmith" if !is_null(v2) => {
                            update_lines.push_str(&update_conf(v2, &at, LOCKSMITH_KEYS)?)
                        }
                        "etcd" | "etcd2" | "fleet" | "flannel" | "locksmith" | "oem" => {
                            if !is_null(v2) {
                                return Err(err(at, "not supported by keel"));
                            }
                        }
                        _ => return Err(err(at, "unknown key")),
                    }
                }
                if !update_lines.is_empty() {
                    cfg.files.push(File {
                        node: Node {
                            at: "coreos.update".into(),
                            path: "/etc/coreos/update.conf".into(),
                            overwrite: Some(true),
                            user: None,
                            group: None,
                        },
                        mode: Some(0o644),
                        contents: Some(update_lines.into_bytes()),
                    });
                }
            }
            k if KNOWN_UNSUPPORTED.contains(&k) => return Err(err(k, "not supported by keel")),
            k => return Err(err(k, "unknown key")),
        }
    }
    if !root_keys.is_empty() {
        match cfg.users.iter_mut().find(|u| u.name == DEFAULT_USER) {
            Some(u) => {
                for k in root_keys {
                    if !u.ssh_authorized_keys.contains(&k) {
                        u.ssh_authorized_keys.push(k);
                    }
                }
            }
            None => cfg.users.push(User {
                at: "ssh_authorized_keys".into(),
                name: DEFAULT_USER.into(),
                ssh_authorized_keys: root_keys,
                ..Default::default()
            }),
        }
    }
    crate::ignition::check_duplicates(&cfg)?;
    Ok(cfg)
}

/// Read NoCloud `meta-data` (YAML) and return its `local-hostname`, if any.
/// Other keys (`instance-id`, network settings) are metadata, not
/// configuration, and are left alone.
pub fn meta_data_hostname(text: &[u8]) -> Result<Option<String>, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| {
        err(
            format!("byte {}", e.valid_up_to()),
            "meta-data is not UTF-8",
        )
    })?;
    let Some(doc) = load_one(text)? else {
        return Ok(None);
    };
    for (k, v) in as_map(&doc, "")? {
        if key_str(k, "")? == "local-hostname" {
            if is_null(v) {
                return Ok(None);
            }
            let h = as_str(v, "local-hostname")?;
            check_hostname(h).map_err(|m| err("local-hostname", m))?;
            return Ok(Some(h.to_string()));
        }
    }
    Ok(None)
}

/// The `/etc/hostname` file for a host name (cloud-config `hostname`,
/// meta-data `local-hostname`); systemd sets the host name from it.
pub fn hostname_file(h: &str, at: &str) -> File {
    File {
        node: Node {
            at: at.into(),
            path: "/etc/hostname".into(),
            overwrite: Some(true),
            user: None,
            group: None,
        },
        mode: Some(0o644),
        contents: Some(format!("{h}\n").into_bytes()),
    }
}

fn user(u: &Y, at: &str) -> Result<User, ConfigError> {
    let mut out = User {
        at: at.into(),
        ..Default::default()
    };
    for (k, v) in as_map(u, at)? {
        let key = key_str(k, at)?;
        let kat = format!("{at}.{key}");
        match key {
            "name" => out.name = as_str(v, &kat)?.to_string(),
            "ssh_authorized_keys" | "ssh-authorized-keys" => {
                out.ssh_authorized_keys = ssh_keys(v, &kat)?
            }
            "groups" => {
                // a list, or cloud-init's comma-separated string
                let groups: Vec<String> = match &v.value {
                    Value::Str(s) => s
                        .split(',')
                        .map(|g| g.trim().to_string())
                        .filter(|g| !g.is_empty())
                        .collect(),
                    _ => strs(v, &kat)?,
                };
                for g in &groups {
                    check_account_name(g).map_err(|m| err(&kat, m))?;
                }
                out.groups = groups;
            }
            "passwd" | "hashed_passwd" => {
                let h = as_str(v, &kat)?;
                check_passwd_field(key, h).map_err(|m| err(&kat, m))?;
                out.password_hash = Some(h.to_string());
            }
            "gecos" | "homedir" | "shell" | "primary-group" | "primary_group" => {
                let s = as_str(v, &kat)?;
                check_passwd_field(key, s).map_err(|m| err(&kat, m))?;
                match key {
                    "gecos" => out.gecos = Some(s.into()),
                    "homedir" => {
                        clean_path(s).map_err(|m| err(&kat, m))?;
                        out.home_dir = Some(s.into());
                    }
                    "shell" => out.shell = Some(s.into()),
                    _ => {
                        check_account_name(s).map_err(|m| err(&kat, m))?;
                        out.primary_group = Some(s.into());
                    }
                }
            }
            "no-create-home" | "no_create_home" => out.no_create_home = as_bool(v, &kat)?,
            "system" => out.system = as_bool(v, &kat)?,
            "uid" => {
                out.uid = Some(match &v.value {
                    Value::Int(n) => u32::try_from(*n)
                        .ok()
                        .filter(|n| *n != u32::MAX)
                        .ok_or_else(|| err(&kat, format!("uid {n} is out of range")))?,
                    _ => return Err(err(kat, format!("expected an integer, found {}", kind(v)))),
                })
            }
            "sudo" => {
                // a rule, a list of rules, or false/null for none
                let rules: Vec<String> = match &v.value {
                    Value::Bool(false) | Value::Null => Vec::new(),
                    Value::Str(s) => vec![s.clone()],
                    _ => strs(v, &kat)?,
                };
                for r in &rules {
                    if r.trim().is_empty() || r.contains(['\n', '\r', '\0']) {
                        return Err(err(&kat, "a sudo rule must be one non-empty line"));
                    }
                }
                out.sudo = rules;
            }
            "lock_passwd" | "lock-passwd" => out.lock_password = as_bool(v, &kat)?,
            "ssh-import-id"
            | "ssh_import_id"
            | "inactive"
            | "expiredate"
            | "plain_text_passwd"
            | "ssh-import-github"
            | "ssh-import-github-users"
            | "ssh-import-url"
            | "no-user-group"
            | "no-log-init"
            | "ssh_redirect_user"
            | "selinux_user"
            | "create_groups" => return Err(err(kat, "not supported by keel")),
            _ => return Err(err(kat, "unknown key")),
        }
    }
    if out.name.is_empty() {
        return Err(err(format!("{at}.name"), "missing"));
    }
    check_account_name(&out.name).map_err(|m| err(format!("{at}.name"), m))?;
    Ok(out)
}

fn write_file(f: &Y, at: &str) -> Result<File, ConfigError> {
    let mut path = None;
    let mut content: Option<(&[u8], bool)> = None;
    let mut encoding: Option<(&str, String)> = None;
    let mut mode = None;
    let mut owner = None;
    for (k, v) in as_map(f, at)? {
        let key = key_str(k, at)?;
        let kat = format!("{at}.{key}");
        match key {
            "path" => path = Some(clean_path(as_str(v, &kat)?).map_err(|m| err(&kat, m))?),
            // `!!binary` content is already base64-decoded by the reader
            "content" => {
                content = Some(match &v.value {
                    Value::Binary(b) => (b.as_slice(), true),
                    _ => (as_str(v, &kat)?.as_bytes(), false),
                })
            }
            "encoding" => encoding = Some((as_str(v, &kat)?, kat)),
            "permissions" => {
                // Unquoted `0644` is octal (YAML 1.1, as coreos-cloudinit and
                // cloud-init read it); a quoted string is octal text; a
                // decimal integer such as 420 is taken as the number it is.
                let m = match &v.value {
                    Value::Int(n) => u32::try_from(*n).ok().filter(|m| *m <= 0o7777),
                    Value::Str(s) => u32::from_str_radix(s.strip_prefix("0o").unwrap_or(s), 8)
                        .ok()
                        .filter(|m| *m <= 0o7777),
                    _ => {
                        return Err(err(
                            kat,
                            format!("expected an octal mode such as 0644, found {}", kind(v)),
                        ))
                    }
                };
                let shown = match &v.value {
                    Value::Int(n) => format!("{n:#o}"),
                    Value::Str(s) => format!("{s:?}"),
                    _ => String::new(),
                };
                mode = Some(m.ok_or_else(|| err(&kat, format!("invalid octal mode {shown}")))?);
            }
            "owner" => {
                let s = as_str(v, &kat)?;
                let (u, g) = match s.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (s, None),
                };
                let to_owner = |n: &str| -> Result<Owner, ConfigError> {
                    if let Ok(id) = n.parse::<u32>() {
                        return Ok(Owner::Id(id));
                    }
                    check_account_name(n).map_err(|m| err(&kat, m))?;
                    Ok(Owner::Name(n.to_string()))
                };
                owner = Some((to_owner(u)?, g.map(to_owner).transpose()?));
            }
            "append" | "defer" | "source" => return Err(err(kat, "not supported by keel")),
            _ => return Err(err(kat, "unknown key")),
        }
    }
    let path = path.ok_or_else(|| err(format!("{at}.path"), "missing"))?;
    if path == "/" {
        return Err(err(format!("{at}.path"), "path must not be /"));
    }
    let (raw, binary) = content.unwrap_or((b"", false));
    // A `!!binary` value is bytes already: its base64 layer is YAML's, so
    // `gzip+base64`/`b64` do not decode it again (coreos-cloudinit and
    // cloud-init both treat it so).
    let from_b64 = |raw: &[u8], kat: &str| -> Result<Vec<u8>, ConfigError> {
        if binary {
            Ok(raw.to_vec())
        } else {
            b64(raw, kat)
        }
    };
    let data = match encoding {
        None => raw.to_vec(),
        Some((e, kat)) => match e {
            "b64" | "base64" => from_b64(raw, &kat)?,
            "gz" | "gzip" => gunzip(raw, &kat)?,
            "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => {
                gunzip(&from_b64(raw, &kat)?, &kat)?
            }
            "text/plain" => raw.to_vec(),
            other => return Err(err(kat, format!("unsupported encoding {other:?}"))),
        },
    };
    let (user, group) = match owner {
        Some((u, g)) => (Some(u), g),
        None => (None, None),
    };
    Ok(File {
        node: Node {
            at: at.into(),
            path,
            overwrite: Some(true),
            user,
            group,
        },
        mode: Some(mode.unwrap_or(0o644)),
        contents: Some(data),
    })
}

/// `coreos.update` keys and the update.conf variables they become.
const UPDATE_KEYS: &[(&str, &str)] = &[
    ("group", "GROUP"),
    ("server", "SERVER"),
    ("reboot_strategy", "REBOOT_STRATEGY"),
];

/// `coreos.locksmith` keys (coreos-cloudinit's names) and the locksmithd
/// variables they become.
const LOCKSMITH_KEYS: &[(&str, &str)] = &[
    ("endpoint", "LOCKSMITHD_ENDPOINT"),
    ("etcd_cafile", "LOCKSMITHD_ETCD_CAFILE"),
    ("etcd_certfile", "LOCKSMITHD_ETCD_CERTFILE"),
    ("etcd_keyfile", "LOCKSMITHD_ETCD_KEYFILE"),
    ("group", "LOCKSMITHD_GROUP"),
    ("window_start", "LOCKSMITHD_REBOOT_WINDOW_START"),
    ("window_length", "LOCKSMITHD_REBOOT_WINDOW_LENGTH"),
];

/// `coreos.update` and `coreos.locksmith` → lines of
/// `/etc/coreos/update.conf`, the file coreos-cloudinit wrote and
/// keel-update reads (`GROUP=` channel, `SERVER=` base URL,
/// `REBOOT_STRATEGY=`, locksmithd's `LOCKSMITHD_*`). Keys are read with
/// `-` or `_` as coreos-cloudinit did. Strategies keel-update does not
/// implement are refused here, so the boot does not accept what the agent
/// then refuses; window values are checked by keel-update, which names the
/// file and variable and keeps staging without rebooting.
fn update_conf(v: &Y, at: &str, keys: &[(&str, &str)]) -> Result<String, ConfigError> {
    let mut lines = String::new();
    for (k, v) in as_map(v, at)? {
        let key = key_str(k, at)?;
        let kat = format!("{at}.{key}");
        let norm = key.replace('-', "_");
        let Some((_, name)) = keys.iter().find(|(k, _)| *k == norm) else {
            return Err(err(kat, "unknown key"));
        };
        let value = as_str(v, &kat)?.to_string();
        if value.is_empty() || value.contains(['\n', '\r', '\0', '"', '\'']) {
            return Err(err(kat, "must be one non-empty line without quotes"));
        }
        if *name == "REBOOT_STRATEGY"
            && !matches!(
                value.as_str(),
                "reboot" | "best-effort" | "etcd-lock" | "off"
            )
        {
            return Err(err(
                kat,
                format!("reboot strategy {value:?} is not supported by keel-update (reboot, etcd-lock, best-effort, off)"),
            ));
        }
        lines.push_str(&format!("{name}={value}\n"));
    }
    Ok(lines)
}

fn b64(raw: &[u8], at: &str) -> Result<Vec<u8>, ConfigError> {
    crate::dataurl::base64(raw).map_err(|e| err(at, format!("content: {e}")))
}

fn gunzip(raw: &[u8], at: &str) -> Result<Vec<u8>, ConfigError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(crate::ignition::MAX_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(at, format!("gzip: {e}")))?;
    if out.len() as u64 > crate::ignition::MAX_FILE {
        return Err(err(at, "decompressed contents exceed 256 MiB"));
    }
    Ok(out)
}

fn unit(u: &Y, at: &str) -> Result<Unit, ConfigError> {
    let mut out = Unit {
        at: at.into(),
        ..Default::default()
    };
    for (k, v) in as_map(u, at)? {
        let key = key_str(k, at)?;
        let kat = format!("{at}.{key}");
        match key {
            "name" => out.name = as_str(v, &kat)?.to_string(),
            "content" => out.contents = Some(as_str(v, &kat)?.to_string()),
            "enable" => out.enabled = Some(as_bool(v, &kat)?),
            "mask" => out.mask = Some(as_bool(v, &kat)?),
            "command" => {
                // coreos-cloudinit ran these against a running systemd.
                // Keel provisions before systemd starts, with every unit
                // file and drop-in in place first, so:
                match as_str(v, &kat)? {
                    // nothing runs yet: these start the unit on this boot
                    "start" | "restart" | "reload-or-restart" => out.start = true,
                    // "if running": nothing runs yet, and a unit that will
                    // run on this boot starts with the new files anyway
                    "try-restart" | "reload" | "reload-or-try-restart" => {}
                    // not running on this boot: a runtime mask in /run
                    "stop" => out.stop = true,
                    other => {
                        return Err(err(
                            kat,
                            format!(
                                "unknown command {other:?} (start, stop, restart, reload, \
                                 try-restart, reload-or-restart, reload-or-try-restart)"
                            ),
                        ))
                    }
                }
            }
            "runtime" => {
                if as_bool(v, &kat)? {
                    return Err(err(kat, "not supported by keel"));
                }
            }
            "drop-ins" | "drop_ins" | "dropins" => {
                for (i, d) in as_seq(v, &kat)?.iter().enumerate() {
                    let dat = format!("{kat}[{i}]");
                    let mut dropin = Dropin::default();
                    for (dk, dv) in as_map(d, &dat)? {
                        let dkey = key_str(dk, &dat)?;
                        match dkey {
                            "name" => dropin.name = as_str(dv, &format!("{dat}.name"))?.to_string(),
                            "content" => {
                                dropin.contents =
                                    Some(as_str(dv, &format!("{dat}.content"))?.to_string())
                            }
                            _ => return Err(err(format!("{dat}.{dkey}"), "unknown key")),
                        }
                    }
                    if !dropin.name.ends_with(".conf")
                        || dropin.name.contains('/')
                        || dropin.name.len() <= 5
                    {
                        return Err(err(
                            format!("{dat}.name"),
                            format!("invalid drop-in name {:?} (NAME.conf)", dropin.name),
                        ));
                    }
                    out.dropins.push(dropin);
                }
            }
            _ => return Err(err(kat, "unknown key")),
        }
    }
    if out.name.is_empty() {
        return Err(err(format!("{at}.name"), "missing"));
    }
    check_unit_name(&out.name).map_err(|m| err(format!("{at}.name"), m))?;
    if out.mask == Some(true) && out.contents.is_some() {
        // coreos-cloudinit wrote the content, then masked the unit by
        // replacing it with a link to /dev/null: the unit ends up masked.
        tracing::warn!(unit = %out.name, "{at}: mask: true replaces content");
        out.contents = None;
    }
    Ok(out)
}

fn ssh_keys(v: &Y, at: &str) -> Result<Vec<String>, ConfigError> {
    let keys = strs(v, at)?;
    for (i, k) in keys.iter().enumerate() {
        if k.trim().is_empty() || k.contains(['\n', '\r']) {
            return Err(err(
                format!("{at}[{i}]"),
                "an SSH key must be one non-empty line",
            ));
        }
    }
    Ok(keys.into_iter().map(|k| k.trim().to_string()).collect())
}
