//! Ignition spec 3.0.0–3.4.0 JSON → [`Config`].
//!
//! The JSON is walked by hand over `serde_json::Value` instead of derived
//! with `#[serde(deny_unknown_fields)]` so that every rejection names the
//! JSON path (`$.storage.files.0.contents.source`) and says whether the field
//! is unknown to Ignition or an Ignition field Keel does not implement.
//! Ignition treats a zero value (`null`, `false`, `""`, `[]`, `{}`) like an
//! absent field, so an unimplemented field holding one is accepted.

use std::io::Read;

use serde_json::{Map, Value};
use sha2::Digest;

use crate::model::{
    check_account_name, check_passwd_field, check_unit_name, clean_path, Config, Directory, Dropin,
    File, Group, Link, Node, Owner, Unit, User,
};
use crate::{dataurl, ConfigError};

/// Ignition spec versions Keel reads.
pub const VERSIONS: &[&str] = &["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"];

/// Largest decompressed file Keel accepts from a config (guards against
/// gzip bombs in a config that would otherwise fill ROOT).
pub const MAX_FILE: u64 = 256 << 20;

/// Parse an Ignition config. Returns the config and its spec version.
pub fn parse(text: &[u8]) -> Result<(Config, String), ConfigError> {
    let v: Value = serde_json::from_slice(text).map_err(json_error)?;
    let mut root = Obj::new(&v, "$".into())?;
    let version = {
        let mut ign = root.obj("ignition")?.ok_or_else(|| {
            err(
                "$.ignition.version",
                "missing: this is not an Ignition config",
            )
        })?;
        let version = ign
            .str("version")?
            .ok_or_else(|| err("$.ignition.version", "missing"))?
            .to_string();
        if !VERSIONS.contains(&version.as_str()) {
            return Err(err(
                "$.ignition.version",
                format!(
                    "unsupported Ignition spec version {version:?} (keel reads 3.0.0 to 3.4.0)"
                ),
            ));
        }
        ign.unsupported(&["config", "timeouts", "security", "proxy"])?;
        ign.finish()?;
        version
    };
    // "3.N.0": one of VERSIONS, checked above
    let minor: u32 = version.get(2..3).and_then(|m| m.parse().ok()).unwrap_or(0);
    root.since("kernelArguments", 3, minor)?;
    root.unsupported(&["kernelArguments"])?;
    let mut cfg = Config::default();
    if let Some(mut passwd) = root.obj("passwd")? {
        for mut u in passwd.objs("users")? {
            cfg.users.push(user(&mut u, minor)?);
            u.finish()?;
        }
        for mut g in passwd.objs("groups")? {
            cfg.groups.push(group(&mut g, minor)?);
            g.finish()?;
        }
        passwd.finish()?;
    }
    if let Some(mut storage) = root.obj("storage")? {
        storage.since("luks", 2, minor)?;
        storage.unsupported(&["disks", "raid", "filesystems", "luks"])?;
        for mut f in storage.objs("files")? {
            let node = node(&mut f)?;
            let mode = mode(&mut f)?;
            f.unsupported(&["append"])?;
            let contents = match f.obj("contents")? {
                Some(mut c) => {
                    let data = contents(&mut c)?;
                    c.finish()?;
                    data
                }
                None => None,
            };
            if node.overwrite == Some(true) && contents.is_none() {
                return Err(err(
                    format!("{}.contents.source", f.path),
                    "missing, but overwrite is true (Ignition requires a source to overwrite)",
                ));
            }
            f.finish()?;
            cfg.files.push(File {
                node,
                mode,
                contents,
            });
        }
        for mut d in storage.objs("directories")? {
            let node = node(&mut d)?;
            let mode = mode(&mut d)?;
            d.finish()?;
            cfg.directories.push(Directory { node, mode });
        }
        for mut l in storage.objs("links")? {
            let node = node(&mut l)?;
            let target = l
                .str("target")?
                .ok_or_else(|| err(format!("{}.target", l.path), "missing"))?
                .to_string();
            let hard = l.bool("hard")?.unwrap_or(false);
            if hard {
                clean_path(&target).map_err(|m| err(format!("{}.target", l.path), m))?;
            }
            l.finish()?;
            cfg.links.push(Link { node, target, hard });
        }
        storage.finish()?;
    }
    if let Some(mut systemd) = root.obj("systemd")? {
        for mut u in systemd.objs("units")? {
            cfg.units.push(unit(&mut u)?);
            u.finish()?;
        }
        systemd.finish()?;
    }
    root.finish()?;
    check_duplicates(&cfg)?;
    Ok((cfg, version))
}

fn user(u: &mut Obj, minor: u32) -> Result<User, ConfigError> {
    u.since("shouldExist", 2, minor)?;
    let name = required_str(u, "name")?;
    check_account_name(&name).map_err(|m| err(format!("{}.name", u.path), m))?;
    u.unsupported(&["noUserGroup", "noLogInit"])?;
    if u.bool("shouldExist")? == Some(false) {
        return Err(err(
            format!("{}.shouldExist", u.path),
            "deleting users is not supported by keel",
        ));
    }
    let password_hash = u.str("passwordHash")?.map(str::to_string);
    if let Some(h) = &password_hash {
        check_passwd_field("passwordHash", h)
            .map_err(|m| err(format!("{}.passwordHash", u.path), m))?;
    }
    let mut keys = Vec::new();
    for (j, k) in u.strs("sshAuthorizedKeys")?.into_iter().enumerate() {
        if k.contains(['\n', '\r']) {
            return Err(err(
                format!("{}.sshAuthorizedKeys.{j}", u.path),
                "an SSH key must be one line",
            ));
        }
        keys.push(k);
    }
    let uid = u.id("uid")?;
    let gecos = u.str("gecos")?.map(str::to_string);
    let home_dir = u.str("homeDir")?.map(str::to_string);
    let shell = u.str("shell")?.map(str::to_string);
    for (k, v) in [("gecos", &gecos), ("homeDir", &home_dir), ("shell", &shell)] {
        if let Some(v) = v {
            check_passwd_field(k, v).map_err(|m| err(format!("{}.{k}", u.path), m))?;
        }
    }
    if let Some(h) = &home_dir {
        clean_path(h).map_err(|m| err(format!("{}.homeDir", u.path), m))?;
    }
    let primary_group = u.str("primaryGroup")?.map(str::to_string);
    let groups = u.strs("groups")?;
    for (j, g) in groups.iter().enumerate() {
        check_account_name(g).map_err(|m| err(format!("{}.groups.{j}", u.path), m))?;
    }
    Ok(User {
        at: u.path.clone(),
        name,
        uid,
        password_hash,
        ssh_authorized_keys: keys,
        gecos,
        home_dir,
        no_create_home: u.bool("noCreateHome")?.unwrap_or(false),
        primary_group,
        groups,
        shell,
        system: u.bool("system")?.unwrap_or(false),
        sudo: Vec::new(),
        lock_password: false,
    })
}

fn group(g: &mut Obj, minor: u32) -> Result<Group, ConfigError> {
    g.since("shouldExist", 2, minor)?;
    let name = required_str(g, "name")?;
    check_account_name(&name).map_err(|m| err(format!("{}.name", g.path), m))?;
    let password_hash = g.str("passwordHash")?.map(str::to_string);
    if let Some(h) = &password_hash {
        check_passwd_field("passwordHash", h)
            .map_err(|m| err(format!("{}.passwordHash", g.path), m))?;
    }
    if g.bool("shouldExist")? == Some(false) {
        return Err(err(
            format!("{}.shouldExist", g.path),
            "deleting groups is not supported by keel",
        ));
    }
    Ok(Group {
        at: g.path.clone(),
        name,
        gid: g.id("gid")?,
        system: g.bool("system")?.unwrap_or(false),
        password_hash,
    })
}

fn node(o: &mut Obj) -> Result<Node, ConfigError> {
    let raw = required_str(o, "path")?;
    let path = clean_path(&raw).map_err(|m| err(format!("{}.path", o.path), m))?;
    if path == "/" {
        return Err(err(format!("{}.path", o.path), "path must not be /"));
    }
    Ok(Node {
        at: o.path.clone(),
        path,
        overwrite: o.bool("overwrite")?,
        user: owner(o, "user")?,
        group: owner(o, "group")?,
    })
}

fn owner(o: &mut Obj, key: &str) -> Result<Option<Owner>, ConfigError> {
    let Some(mut w) = o.obj(key)? else {
        return Ok(None);
    };
    let id = w.id("id")?;
    let name = w.str("name")?.map(str::to_string);
    let path = w.path.clone();
    w.finish()?;
    match (id, name) {
        (Some(_), Some(_)) => Err(err(path, "id and name are mutually exclusive")),
        (Some(id), None) => Ok(Some(Owner::Id(id))),
        (None, Some(n)) => {
            check_account_name(&n).map_err(|m| err(format!("{path}.name"), m))?;
            Ok(Some(Owner::Name(n)))
        }
        (None, None) => Ok(None),
    }
}

fn mode(o: &mut Obj) -> Result<Option<u32>, ConfigError> {
    let Some(m) = o.int("mode")? else {
        return Ok(None);
    };
    if !(0..=0o7777).contains(&m) {
        return Err(err(
            format!("{}.mode", o.path),
            format!("mode {m} is out of range (0 to 4095, i.e. 0o7777)"),
        ));
    }
    // Range-checked just above.
    Ok(Some(m as u32))
}

fn contents(c: &mut Obj) -> Result<Option<Vec<u8>>, ConfigError> {
    c.unsupported(&["httpHeaders"])?;
    // Ignition: an empty compression is no compression; Butane writes
    // `"compression": ""` for every inline file.
    let compression = c
        .str("compression")?
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let hash = match c.obj("verification")? {
        Some(mut v) => {
            let h = v.str("hash")?.map(str::to_string);
            let path = format!("{}.hash", v.path);
            v.finish()?;
            h.map(|h| (h, path))
        }
        None => None,
    };
    let Some(source) = c.str("source")?.map(str::to_string) else {
        if compression.is_some() || hash.is_some() {
            return Err(err(
                format!("{}.source", c.path),
                "missing, but compression or verification is set",
            ));
        }
        return Ok(None);
    };
    let src_path = format!("{}.source", c.path);
    let scheme = source.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if scheme.as_deref() != Some("data") {
        let what = match scheme {
            Some(s) if !s.is_empty() && !s.contains('/') => format!("URL scheme {s:?}"),
            _ => "a relative URL".to_string(),
        };
        return Err(err(
            src_path,
            format!(
                "{what} is not supported by keel (only data: URLs; the initramfs has no network)"
            ),
        ));
    }
    let mut data = dataurl::decode(&source).map_err(|e| err(&src_path, e.to_string()))?;
    match compression.as_deref() {
        None => {}
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&data[..])
                .take(MAX_FILE + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(format!("{}.compression", c.path), format!("gzip: {e}")))?;
            if out.len() as u64 > MAX_FILE {
                return Err(err(
                    format!("{}.compression", c.path),
                    "decompressed contents exceed 256 MiB",
                ));
            }
            data = out;
        }
        Some(other) => {
            return Err(err(
                format!("{}.compression", c.path),
                format!("unsupported compression {other:?} (\"gzip\", or \"\" for none)"),
            ))
        }
    }
    if let Some((h, path)) = hash {
        verify(&h, &data).map_err(|m| err(path, m))?;
    }
    Ok(Some(data))
}

/// Check `sha512-HEX` / `sha256-HEX` against the (decompressed) contents.
pub fn verify(spec: &str, data: &[u8]) -> Result<(), String> {
    let (algo, want) = spec
        .split_once('-')
        .ok_or_else(|| format!("hash {spec:?} is not of the form sha512-HEX or sha256-HEX"))?;
    let got = match algo {
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        _ => {
            return Err(format!(
                "unsupported hash function {algo:?} (sha512 or sha256)"
            ))
        }
    };
    if want.len() != got.len() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{algo} hash must be {} hex digits", got.len()));
    }
    if !want.eq_ignore_ascii_case(&got) {
        return Err(format!("contents do not match: {algo} is {got}"));
    }
    Ok(())
}

fn unit(u: &mut Obj) -> Result<Unit, ConfigError> {
    let name = required_str(u, "name")?;
    check_unit_name(&name).map_err(|m| err(format!("{}.name", u.path), m))?;
    let mut dropins = Vec::new();
    for mut d in u.objs("dropins")? {
        let dname = required_str(&mut d, "name")?;
        if !dname.ends_with(".conf") || dname.contains('/') || dname.len() <= 5 {
            return Err(err(
                format!("{}.name", d.path),
                format!("invalid drop-in name {dname:?} (NAME.conf)"),
            ));
        }
        let contents = d.str("contents")?.map(str::to_string);
        let dpath = d.path.clone();
        d.finish()?;
        if dropins.iter().any(|x: &Dropin| x.name == dname) {
            return Err(err(
                format!("{dpath}.name"),
                format!("duplicate drop-in {dname:?}"),
            ));
        }
        dropins.push(Dropin {
            name: dname,
            contents,
        });
    }
    let mask = u.bool("mask")?;
    let contents = u.str("contents")?.map(str::to_string);
    if mask == Some(true) && contents.is_some() {
        return Err(err(
            format!("{}.mask", u.path),
            "a masked unit cannot also have contents",
        ));
    }
    Ok(Unit {
        at: u.path.clone(),
        name,
        enabled: u.bool("enabled")?,
        mask,
        contents,
        dropins,
        start: false,
        stop: false,
    })
}

/// Reject two entries for one path, one user, one group or one unit.
pub fn check_duplicates(cfg: &Config) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let nodes = cfg
        .files
        .iter()
        .map(|f| &f.node)
        .chain(cfg.directories.iter().map(|d| &d.node))
        .chain(cfg.links.iter().map(|l| &l.node));
    for n in nodes {
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == n.path) {
            return Err(err(
                format!("{}.path", n.at),
                format!("duplicate path {} (also at {first})", n.path),
            ));
        }
        seen.push((&n.path, &n.at));
    }
    let named = cfg
        .users
        .iter()
        .map(|u| (&u.name, &u.at, "user"))
        .chain(cfg.groups.iter().map(|g| (&g.name, &g.at, "group")))
        .chain(cfg.units.iter().map(|u| (&u.name, &u.at, "unit")));
    let mut seen: Vec<(&str, &str, &str)> = Vec::new();
    for (name, at, kind) in named {
        if let Some((_, first, _)) = seen.iter().find(|(n, _, k)| *n == name && *k == kind) {
            return Err(err(
                format!("{at}.name"),
                format!("duplicate {kind} {name:?} (also at {first})"),
            ));
        }
        seen.push((name, at, kind));
    }
    Ok(())
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

fn json_error(e: serde_json::Error) -> ConfigError {
    let full = e.to_string();
    let message = match full.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => full,
    };
    err(
        format!("line {} column {}", e.line(), e.column()),
        format!("invalid JSON: {message}"),
    )
}

fn required_str(o: &mut Obj, key: &str) -> Result<String, ConfigError> {
    match o.str(key)? {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(err(format!("{}.{key}", o.path), "missing")),
    }
}

/// Ignition's "unset": null, false, "", [], {} (and objects of those).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
        Value::Number(_) => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read: remembers which keys were consumed so that
/// [`Obj::finish`] can reject the rest by path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: String) -> Result<Self, ConfigError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path,
                seen: Vec::new(),
            }),
            other => Err(err(
                path,
                format!("expected an object, found {}", kind(other)),
            )),
        }
    }

    fn get(&mut self, key: &str) -> Option<(&'a Value, String)> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.push(k.as_str());
        if v.is_null() {
            return None;
        }
        Some((v, format!("{}.{key}", self.path)))
    }

    fn str(&mut self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::String(s), _)) => Ok(Some(s)),
            Some((v, p)) => Err(err(p, format!("expected a string, found {}", kind(v)))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Bool(b), _)) => Ok(Some(*b)),
            Some((v, p)) => Err(err(p, format!("expected a boolean, found {}", kind(v)))),
        }
    }

    fn int(&mut self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Number(n), p)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| err(p, format!("expected an integer, found {n}"))),
            Some((v, p)) => Err(err(p, format!("expected an integer, found {}", kind(v)))),
        }
    }

    /// A uid or gid: 0 ..= 2^32-2 (2^32-1 is the "no id" value of chown).
    fn id(&mut self, key: &str) -> Result<Option<u32>, ConfigError> {
        let path = format!("{}.{key}", self.path);
        match self.int(key)? {
            None => Ok(None),
            Some(n) => match u32::try_from(n) {
                Ok(id) if id != u32::MAX => Ok(Some(id)),
                _ => Err(err(path, format!("id {n} is out of range"))),
            },
        }
    }

    fn obj(&mut self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((v, p)) => Obj::new(v, p).map(Some),
        }
    }

    fn arr(&mut self, key: &str) -> Result<Vec<(&'a Value, String)>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some((Value::Array(a), p)) => Ok(a
                .iter()
                .enumerate()
                .map(|(i, v)| (v, format!("{p}.{i}")))
                .collect()),
            Some((v, p)) => Err(err(p, format!("expected an array, found {}", kind(v)))),
        }
    }

    fn objs(&mut self, key: &str) -> Result<Vec<Obj<'a>>, ConfigError> {
        self.arr(key)?
            .into_iter()
            .map(|(v, p)| Obj::new(v, p))
            .collect()
    }

    fn strs(&mut self, key: &str) -> Result<Vec<String>, ConfigError> {
        self.arr(key)?
            .into_iter()
            .map(|(v, p)| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(err(p, format!("expected a string, found {}", kind(v)))),
            })
            .collect()
    }

    /// A field added in spec 3.`since`.0 is unknown to an older config.
    fn since(&self, key: &str, since: u32, minor: u32) -> Result<(), ConfigError> {
        if minor < since && self.map.contains_key(key) {
            return Err(err(
                format!("{}.{key}", self.path),
                format!("unknown field in spec 3.{minor}.0 (new in 3.{since}.0)"),
            ));
        }
        Ok(())
    }

    /// Ignition fields Keel does not implement: accepted only when unset.
    fn unsupported(&mut self, keys: &[&str]) -> Result<(), ConfigError> {
        for key in keys {
            if let Some((k, v)) = self.map.get_key_value(*key) {
                self.seen.push(k.as_str());
                if !is_zero(v) {
                    return Err(err(format!("{}.{key}", self.path), "not supported by keel"));
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ConfigError> {
        for k in self.map.keys() {
            if !self.seen.contains(&k.as_str()) {
                return Err(err(format!("{}.{k}", self.path), "unknown field"));
            }
        }
        Ok(())
    }
}
