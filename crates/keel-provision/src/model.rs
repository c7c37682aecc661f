//! The validated, format-independent config: what Ignition and cloud-config
//! both turn into, what the OEM base config is merged with, and what the
//! planner reads. Contents are already decoded, decompressed and verified.

/// Where an entry came from: `<source>: <JSON path or YAML key>`, used as
/// the prefix of every message about it.
pub type At = String;

/// A user or group reference: a numeric id or a name resolved at plan time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A numeric uid/gid, used as is.
    Id(u32),
    /// A name, resolved against the sysroot's passwd/group, the config's own
    /// users/groups, then `sysusers.d`.
    Name(String),
}

/// A user to create or modify.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// Path of the entry, for messages.
    pub at: At,
    /// Login name.
    pub name: String,
    /// Fixed uid for a new user.
    pub uid: Option<u32>,
    /// crypt(3) hash for `/etc/shadow`.
    pub password_hash: Option<String>,
    /// Lines for `~/.ssh/authorized_keys`.
    pub ssh_authorized_keys: Vec<String>,
    /// GECOS field.
    pub gecos: Option<String>,
    /// Home directory (default `/home/NAME`).
    pub home_dir: Option<String>,
    /// Do not create the home directory.
    pub no_create_home: bool,
    /// Primary group name (default: a group named like the user).
    pub primary_group: Option<String>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell (default `/bin/bash`).
    pub shell: Option<String>,
    /// Allocate the uid from the system range.
    pub system: bool,
    /// sudoers rules (cloud-config `sudo`), written as
    /// `/etc/sudoers.d/keel-provision-NAME`.
    pub sudo: Vec<String>,
    /// Lock the password (cloud-config `lock_passwd: true`): a given hash
    /// is stored with a `!` prefix.
    pub lock_password: bool,
}

/// A group to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// Path of the entry, for messages.
    pub at: At,
    /// Group name.
    pub name: String,
    /// Fixed gid.
    pub gid: Option<u32>,
    /// Allocate the gid from the system range.
    pub system: bool,
    /// crypt(3) hash for `/etc/gshadow` (Ignition `passwordHash`).
    pub password_hash: Option<String>,
}

/// Attributes shared by files, directories and links.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Path of the entry, for messages.
    pub at: At,
    /// Absolute, normalised path below the root (no `..`, no `//`).
    pub path: String,
    /// Replace whatever is at `path`.
    pub overwrite: Option<bool>,
    /// Owner (default root).
    pub user: Option<Owner>,
    /// Group (default root).
    pub group: Option<Owner>,
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct File {
    /// Path, owner, overwrite.
    pub node: Node,
    /// Permission bits (default 0644).
    pub mode: Option<u32>,
    /// Decoded contents; `None` means "no source": keep an existing file or
    /// create an empty one.
    pub contents: Option<Vec<u8>>,
}

/// A directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directory {
    /// Path, owner, overwrite.
    pub node: Node,
    /// Permission bits (default 0755).
    pub mode: Option<u32>,
}

/// A symbolic or hard link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Path, owner, overwrite.
    pub node: Node,
    /// Link target (for hard links: an absolute path below the root).
    pub target: String,
    /// Hard link instead of a symlink.
    pub hard: bool,
}

/// A systemd unit drop-in (`NAME.d/DROPIN`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dropin {
    /// File name, ending in `.conf`.
    pub name: String,
    /// Contents; `None` leaves an existing drop-in alone.
    pub contents: Option<String>,
}

/// A systemd unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    /// Path of the entry, for messages.
    pub at: At,
    /// Unit name with its type suffix.
    pub name: String,
    /// Enable (`Some(true)`) per `[Install]`, disable (`Some(false)`), or leave.
    pub enabled: Option<bool>,
    /// Mask: `/etc/systemd/system/NAME` → `/dev/null`.
    pub mask: Option<bool>,
    /// Unit file contents, written to `/etc/systemd/system/NAME`.
    pub contents: Option<String>,
    /// Drop-ins.
    pub dropins: Vec<Dropin>,
    /// Start on this boot only (cloud-config `command: start`): a runtime
    /// `multi-user.target.wants` link under `/run/systemd/system`.
    pub start: bool,
    /// Not to run on this boot (cloud-config `command: stop`): a runtime
    /// mask `/run/systemd/system/NAME` → `/dev/null`.
    pub stop: bool,
}

/// A whole config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Users.
    pub users: Vec<User>,
    /// Groups.
    pub groups: Vec<Group>,
    /// Files.
    pub files: Vec<File>,
    /// Directories.
    pub directories: Vec<Directory>,
    /// Links.
    pub links: Vec<Link>,
    /// Units.
    pub units: Vec<Unit>,
}

impl Config {
    /// True when the config asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.files.is_empty()
            && self.directories.is_empty()
            && self.links.is_empty()
            && self.units.is_empty()
    }

    /// Prefix every entry's `at` with the source's name, so messages read
    /// `fw_cfg opt/keel/config: $.storage.files.0: …`.
    pub fn set_source(&mut self, source: &str) {
        let fix = |at: &mut String| *at = format!("{source}: {at}");
        self.users.iter_mut().for_each(|u| fix(&mut u.at));
        self.groups.iter_mut().for_each(|g| fix(&mut g.at));
        self.files.iter_mut().for_each(|f| fix(&mut f.node.at));
        self.directories
            .iter_mut()
            .for_each(|d| fix(&mut d.node.at));
        self.links.iter_mut().for_each(|l| fix(&mut l.node.at));
        self.units.iter_mut().for_each(|u| fix(&mut u.at));
    }

    /// Merge `self` (the child, e.g. the user's config) over `base` (e.g. the
    /// OEM base config), Ignition's way: users, groups and units are keyed by
    /// name and merged field by field (the child's set fields win, lists of
    /// keys and groups are joined); files, directories and links are keyed by
    /// path across all three kinds and the child's entry replaces the base's.
    pub fn merged_over(self, base: Config) -> Config {
        let mut out = base;
        for u in self.users {
            match out.users.iter_mut().find(|b| b.name == u.name) {
                Some(b) => merge_user(b, u),
                None => out.users.push(u),
            }
        }
        for g in self.groups {
            match out.groups.iter_mut().find(|b| b.name == g.name) {
                Some(b) => {
                    b.at = g.at;
                    b.gid = g.gid.or(b.gid);
                    b.system |= g.system;
                    if g.password_hash.is_some() {
                        b.password_hash = g.password_hash;
                    }
                }
                None => out.groups.push(g),
            }
        }
        let child_paths: Vec<String> = self
            .files
            .iter()
            .map(|f| f.node.path.clone())
            .chain(self.directories.iter().map(|d| d.node.path.clone()))
            .chain(self.links.iter().map(|l| l.node.path.clone()))
            .collect();
        out.files.retain(|f| !child_paths.contains(&f.node.path));
        out.directories
            .retain(|d| !child_paths.contains(&d.node.path));
        out.links.retain(|l| !child_paths.contains(&l.node.path));
        out.files.extend(self.files);
        out.directories.extend(self.directories);
        out.links.extend(self.links);
        for u in self.units {
            match out.units.iter_mut().find(|b| b.name == u.name) {
                Some(b) => {
                    b.at = u.at;
                    b.enabled = u.enabled.or(b.enabled);
                    b.mask = u.mask.or(b.mask);
                    if u.contents.is_some() {
                        b.contents = u.contents;
                    }
                    b.start |= u.start;
                    b.stop |= u.stop;
                    for d in u.dropins {
                        match b.dropins.iter_mut().find(|x| x.name == d.name) {
                            Some(x) => *x = d,
                            None => b.dropins.push(d),
                        }
                    }
                }
                None => out.units.push(u),
            }
        }
        out
    }
}

fn merge_user(b: &mut User, u: User) {
    b.at = u.at;
    if !u.sudo.is_empty() {
        b.sudo = u.sudo;
    }
    b.lock_password |= u.lock_password;
    b.uid = u.uid.or(b.uid);
    if u.password_hash.is_some() {
        b.password_hash = u.password_hash;
    }
    for k in u.ssh_authorized_keys {
        if !b.ssh_authorized_keys.contains(&k) {
            b.ssh_authorized_keys.push(k);
        }
    }
    if u.gecos.is_some() {
        b.gecos = u.gecos;
    }
    if u.home_dir.is_some() {
        b.home_dir = u.home_dir;
    }
    b.no_create_home |= u.no_create_home;
    if u.primary_group.is_some() {
        b.primary_group = u.primary_group;
    }
    for g in u.groups {
        if !b.groups.contains(&g) {
            b.groups.push(g);
        }
    }
    if u.shell.is_some() {
        b.shell = u.shell;
    }
    b.system |= u.system;
}

/// Normalise an absolute config path: collapse `//` and `.`, refuse `..`
/// (a path must not leave the root) and relative paths.
pub fn clean_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("path is empty".into());
    }
    if !p.starts_with('/') {
        return Err(format!("path {p:?} is not absolute"));
    }
    if p.contains('\0') {
        return Err(format!("path {p:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("path {p:?} leaves / (contains \"..\")")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Check a unit name as systemd does (keel-unit: a unit type suffix, a
/// non-empty name before it or before the `@` of a template or instance,
/// systemd's characters, at most 255 bytes).
pub fn check_unit_name(name: &str) -> Result<(), String> {
    keel_unit::UnitName::parse(name)
        .map(drop)
        .map_err(|_| format!("invalid unit name {name:?}"))
}

/// Check a user or group name the way useradd does by default:
/// `[a-z_][a-z0-9_-]*[$]?`, at most 32 bytes.
pub fn check_account_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let body = b.strip_suffix(b"$").unwrap_or(b);
    let ok = !body.is_empty()
        && b.len() <= 32
        && (body[0].is_ascii_lowercase() || body[0] == b'_')
        && body
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if !ok {
        return Err(format!("invalid name {name:?}"));
    }
    Ok(())
}

/// Check a host name: 1–64 bytes of RFC 1123 labels.
pub fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !ok {
        return Err(format!("invalid hostname {name:?}"));
    }
    Ok(())
}

/// Check a field that ends up on one line of passwd/shadow (no `:` or newline).
pub fn check_passwd_field(what: &str, v: &str) -> Result<(), String> {
    if v.contains([':', '\n', '\r', '\0']) {
        return Err(format!("{what} must not contain ':', NUL or a newline"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/etc//x/./y").unwrap(), "/etc/x/y");
        assert_eq!(clean_path("/").unwrap(), "/");
        assert_eq!(
            clean_path("etc/x").unwrap_err(),
            "path \"etc/x\" is not absolute"
        );
        assert_eq!(
            clean_path("/etc/../../x").unwrap_err(),
            "path \"/etc/../../x\" leaves / (contains \"..\")"
        );
    }

    #[test]
    fn names() {
        assert!(check_unit_name("foo@bar.service").is_ok());
        assert!(check_unit_name("foo").is_err());
        assert!(check_unit_name(".service").is_err());
        assert!(check_unit_name("a/b.service").is_err());
        // Cases the four readers of unit names disagreed on before
        // keel-unit: an empty name before the `@` (accepted here before),
        // a second `@` (an instance, as systemd reads it).
        assert!(check_unit_name("@.service").is_err());
        assert!(check_unit_name("@x.service").is_err());
        assert!(check_unit_name("a@b@c.service").is_ok());
        assert!(check_unit_name("foo@.service").is_ok());
        assert!(check_account_name("core").is_ok());
        assert!(check_account_name("Core").is_err());
        assert!(check_account_name("").is_err());
        assert!(check_hostname("node-1.example").is_ok());
        assert!(check_hostname("-x").is_err());
    }

    #[test]
    fn merge_child_wins() {
        let base = Config {
            users: vec![User {
                name: "core".into(),
                ssh_authorized_keys: vec!["a".into()],
                shell: Some("/bin/sh".into()),
                ..Default::default()
            }],
            files: vec![File {
                node: Node {
                    path: "/etc/x".into(),
                    ..Default::default()
                },
                contents: Some(b"base".to_vec()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let child = Config {
            users: vec![User {
                name: "core".into(),
                ssh_authorized_keys: vec!["b".into(), "a".into()],
                ..Default::default()
            }],
            links: vec![Link {
                node: Node {
                    path: "/etc/x".into(),
                    ..Default::default()
                },
                target: "/y".into(),
                hard: false,
            }],
            ..Default::default()
        };
        let m = child.merged_over(base);
        assert_eq!(m.users[0].ssh_authorized_keys, vec!["a", "b"]);
        assert_eq!(m.users[0].shell.as_deref(), Some("/bin/sh"));
        assert!(m.files.is_empty());
        assert_eq!(m.links.len(), 1);
    }
}
