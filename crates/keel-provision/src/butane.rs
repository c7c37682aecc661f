//! Butane YAML (`variant: flatcar` 1.0–1.1, `variant: fcos` 1.0–1.6) and
//! old Container Linux Configs (no `variant`, as `ct` read them) → Ignition
//! JSON, which [`crate::ignition::parse`] then reads into the same
//! [`Config`] with the same checks: one model, whole or nothing.
//!
//! The subset is what the flatcar and fcos variants share and Keel can
//! apply: `passwd` (users, groups), `storage` (files with `inline`, `source`
//! or `local` contents, directories, links; CL's `filesystem: root`), and
//! `systemd` units with drop-ins (`contents_local` too). `local` contents
//! are files beside the config, read from a files directory
//! ([`Options::files_dir`]); without one they are refused by name. Every
//! other key is refused, naming it and its line: nothing is dropped
//! silently.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as J};

use crate::model::Config;
use crate::yaml::{self, as_bool, as_map, as_seq, as_str, err, key_str, kind, Node, Value};
use crate::ConfigError;

/// What a translation may use besides the YAML.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The directory `local:` paths are relative to (`butane --files-dir`).
    pub files_dir: Option<PathBuf>,
}

/// Largest `local` file read into a config.
const MAX_LOCAL: u64 = crate::ignition::MAX_FILE;

/// True when `data` looks like Butane or a Container Linux Config: a YAML
/// mapping whose first key is one of their top-level keys. Used to tell it
/// from other user data before parsing.
pub fn looks_like(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    for line in text.lines() {
        let l = line.trim_end();
        if l.is_empty() || l.starts_with('#') || l == "---" {
            continue;
        }
        let key = l.split(':').next().unwrap_or("").trim();
        return l.contains(':')
            && !l.starts_with([' ', '\t', '-'])
            && matches!(
                key,
                "variant" | "version" | "passwd" | "storage" | "systemd" | "ignition"
            );
    }
    false
}

/// Translate Butane or a CL config to Ignition JSON (the value
/// `keel-provision translate` prints). Messages name the YAML key path and
/// line.
pub fn translate(data: &[u8], opts: &Options) -> Result<J, ConfigError> {
    let text = std::str::from_utf8(data)
        .map_err(|e| err(format!("byte {}", e.valid_up_to()), "config is not UTF-8"))?;
    let doc = yaml::load_one(text)?.ok_or_else(|| err("line 1", "empty config"))?;
    let mut t = Tr {
        opts,
        lines: Vec::new(),
    };
    t.root(&doc)
}

/// Translate and read into the Ignition model. Returns the config and a
/// format name (`butane flatcar 1.1.0 → ignition 3.4.0`).
pub fn parse(data: &[u8], opts: &Options) -> Result<(Config, String), ConfigError> {
    let text = std::str::from_utf8(data)
        .map_err(|e| err(format!("byte {}", e.valid_up_to()), "config is not UTF-8"))?;
    let doc = yaml::load_one(text)?.ok_or_else(|| err("line 1", "empty config"))?;
    let mut t = Tr {
        opts,
        lines: Vec::new(),
    };
    let ign = t.root(&doc)?;
    let what = describe(&doc);
    // Serialising a Value cannot fail.
    let bytes = serde_json::to_vec(&ign).unwrap_or_default();
    let (cfg, version) = crate::ignition::parse(&bytes).map_err(|e| t.map_error(e))?;
    Ok((cfg, format!("{what} → ignition {version}")))
}

fn describe(doc: &Node) -> String {
    let get = |k: &str| {
        as_map(doc, "").ok().and_then(|m| {
            m.iter()
                .find(|(key, _)| matches!(&key.value, Value::Str(s) if s == k))
                .and_then(|(_, v)| match &v.value {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
        })
    };
    match (get("variant"), get("version")) {
        (Some(v), Some(n)) => format!("butane {v} {n}"),
        _ => "container linux config".into(),
    }
}

struct Tr<'a> {
    opts: &'a Options,
    /// Ignition JSON path → YAML key path and line, for mapping the
    /// Ignition reader's messages back to the YAML.
    lines: Vec<(String, String, usize)>,
}

/// The Ignition spec version each Butane variant version translates to.
/// fcos 1.6 is Ignition 3.5.0 upstream; the subset Keel accepts has nothing
/// new in 3.5, so it is read as 3.4.0.
fn ignition_version(variant: Option<&str>, version: Option<&str>) -> Result<&'static str, String> {
    Ok(match (variant, version) {
        (None, None) => "3.4.0",
        (Some("flatcar"), Some("1.0.0")) => "3.3.0",
        (Some("flatcar"), Some("1.1.0")) => "3.4.0",
        (Some("fcos"), Some("1.0.0")) => "3.0.0",
        (Some("fcos"), Some("1.1.0")) => "3.1.0",
        (Some("fcos"), Some("1.2.0" | "1.3.0")) => "3.2.0",
        (Some("fcos"), Some("1.4.0")) => "3.3.0",
        (Some("fcos"), Some("1.5.0" | "1.6.0")) => "3.4.0",
        (Some(v @ ("flatcar" | "fcos")), Some(n)) => {
            return Err(format!(
                "unsupported {v} version {n:?} (keel reads flatcar 1.0.0–1.1.0, fcos 1.0.0–1.6.0)"
            ))
        }
        (Some(v), _) => {
            return Err(format!(
                "unsupported variant {v:?} (keel reads flatcar and fcos)"
            ))
        }
        (None, Some(_)) => return Err("version without variant".into()),
    })
}

type Entries<'n> = &'n [(Node, Node)];

impl Tr<'_> {
    fn note(&mut self, json: &str, at: &str, line: usize) {
        self.lines.push((json.to_string(), at.to_string(), line));
    }

    /// An Ignition message about `$.a.b.0.c` → the YAML key `a.b[0].c`
    /// and the line of the closest entry that was translated.
    fn map_error(&self, e: ConfigError) -> ConfigError {
        let best = self
            .lines
            .iter()
            .filter(|(j, _, _)| {
                e.path == *j
                    || e.path
                        .strip_prefix(j.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            })
            .max_by_key(|(j, _, _)| j.len());
        match best {
            Some((j, at, line)) => {
                let rest = e.path[j.len()..].to_string();
                ConfigError {
                    path: format!("{at}{} (line {line})", snake(&rest)),
                    message: e.message,
                }
            }
            None => e,
        }
    }

    fn root(&mut self, doc: &Node) -> Result<J, ConfigError> {
        let m = as_map(doc, "")?;
        let (mut variant, mut version) = (None, None);
        for (k, v) in m {
            match key_str(k, "")? {
                "variant" => variant = Some(as_str(v, &at("variant", v))?),
                "version" => version = Some(as_str(v, &at("version", v))?),
                _ => {}
            }
        }
        let line = m.first().map_or(1, |(k, _)| k.line);
        let ign_version = ignition_version(variant, version).map_err(|msg| {
            let key = if msg.starts_with("unsupported variant") {
                "variant"
            } else {
                "version"
            };
            err(format!("{key} (line {line})"), msg)
        })?;
        let cl = variant.is_none();
        let mut out = Map::new();
        out.insert("ignition".into(), json!({ "version": ign_version }));
        self.note("$", "", line);
        for (k, v) in m {
            let key = key_str(k, "")?;
            match key {
                "variant" | "version" => {}
                "passwd" => {
                    out.insert(key.into(), self.passwd(v)?);
                }
                "storage" => {
                    out.insert(key.into(), self.storage(v, cl)?);
                }
                "systemd" => {
                    out.insert(key.into(), self.systemd(v, cl)?);
                }
                "ignition" => {
                    if !is_empty(v) {
                        return Err(err(at(key, k), "not supported by keel"));
                    }
                }
                // Butane (fcos) sugar and CL sections Keel has no place for
                "boot_device" | "grub" | "kernel_arguments" | "networkd" | "etcd" | "flannel"
                | "update" | "locksmith" | "docker" | "kernel_args" => {
                    if !is_empty(v) {
                        return Err(err(at(key, k), "not supported by keel"));
                    }
                }
                _ => return Err(err(at(key, k), "unknown key")),
            }
        }
        Ok(J::Object(out))
    }

    fn passwd(&mut self, v: &Node) -> Result<J, ConfigError> {
        let mut out = Map::new();
        for (k, v) in as_map(v, "passwd")? {
            let key = key_str(k, "passwd")?;
            let kat = format!("passwd.{key}");
            match key {
                "users" | "groups" => {
                    let mut list = Vec::new();
                    for (i, u) in as_seq(v, &kat)?.iter().enumerate() {
                        let yat = format!("{kat}[{i}]");
                        self.note(&format!("$.passwd.{key}.{i}"), &yat, u.line);
                        let fields: &[(&str, &str)] = if key == "users" {
                            &[
                                ("name", "name"),
                                ("password_hash", "passwordHash"),
                                ("ssh_authorized_keys", "sshAuthorizedKeys"),
                                ("uid", "uid"),
                                ("gecos", "gecos"),
                                ("home_dir", "homeDir"),
                                ("no_create_home", "noCreateHome"),
                                ("primary_group", "primaryGroup"),
                                ("groups", "groups"),
                                ("no_user_group", "noUserGroup"),
                                ("no_log_init", "noLogInit"),
                                ("shell", "shell"),
                                ("should_exist", "shouldExist"),
                                ("system", "system"),
                            ]
                        } else {
                            &[
                                ("name", "name"),
                                ("gid", "gid"),
                                ("password_hash", "passwordHash"),
                                ("should_exist", "shouldExist"),
                                ("system", "system"),
                            ]
                        };
                        let mut o = Map::new();
                        for (fk, fv) in as_map(u, &yat)? {
                            let fkey = key_str(fk, &yat)?;
                            let fat = at(&format!("{yat}.{fkey}"), fk);
                            if fkey == "ssh_authorized_keys_local" {
                                if !is_empty(fv) {
                                    return Err(err(fat, self.no_local()));
                                }
                                continue;
                            }
                            let Some((_, jkey)) = fields.iter().find(|(b, _)| *b == fkey) else {
                                return Err(err(fat, "unknown key"));
                            };
                            o.insert((*jkey).into(), plain(fv, &fat)?);
                        }
                        list.push(J::Object(o));
                    }
                    out.insert(key.into(), J::Array(list));
                }
                _ => return Err(err(at(&kat, k), "unknown key")),
            }
        }
        Ok(J::Object(out))
    }

    fn storage(&mut self, v: &Node, cl: bool) -> Result<J, ConfigError> {
        let mut out = Map::new();
        for (k, v) in as_map(v, "storage")? {
            let key = key_str(k, "storage")?;
            let kat = format!("storage.{key}");
            match key {
                "files" | "directories" | "links" => {
                    let mut list = Vec::new();
                    for (i, e) in as_seq(v, &kat)?.iter().enumerate() {
                        let yat = format!("{kat}[{i}]");
                        let jat = format!("$.storage.{key}.{i}");
                        self.note(&jat, &yat, e.line);
                        list.push(self.node(key, as_map(e, &yat)?, &yat, &jat, cl)?);
                    }
                    out.insert(key.into(), J::Array(list));
                }
                "disks" | "raid" | "filesystems" | "luks" | "trees" => {
                    if !is_empty(v) {
                        let why = if key == "trees" {
                            "not supported by keel (list the files instead)"
                        } else {
                            "not supported by keel"
                        };
                        return Err(err(at(&kat, k), why));
                    }
                }
                _ => return Err(err(at(&kat, k), "unknown key")),
            }
        }
        Ok(J::Object(out))
    }

    /// A file, directory or link entry.
    fn node(
        &mut self,
        what: &str,
        m: Entries,
        yat: &str,
        jat: &str,
        cl: bool,
    ) -> Result<J, ConfigError> {
        let mut o = Map::new();
        for (k, v) in m {
            let key = key_str(k, yat)?;
            let kat = at(&format!("{yat}.{key}"), k);
            match (what, key) {
                (_, "path" | "overwrite") | ("files" | "directories", "mode") => {
                    o.insert(key.into(), plain(v, &kat)?);
                }
                (_, "user" | "group") => {
                    o.insert(key.into(), owner(v, &kat)?);
                }
                ("links", "target" | "hard") => {
                    o.insert(key.into(), plain(v, &kat)?);
                }
                ("files", "contents") => {
                    self.note(
                        &format!("{jat}.contents"),
                        &format!("{yat}.contents"),
                        v.line,
                    );
                    o.insert(
                        key.into(),
                        self.contents(v, &format!("{yat}.contents"), cl)?,
                    );
                }
                ("files", "append") => {
                    if !is_empty(v) {
                        return Err(err(kat, "not supported by keel"));
                    }
                }
                // Container Linux Configs name the file system of each
                // entry; "root" is the root file system, all Keel writes.
                (_, "filesystem") => match &v.value {
                    Value::Str(s) if s == "root" => {}
                    _ => {
                        return Err(err(
                            kat,
                            "only the root filesystem (\"root\") is supported by keel",
                        ))
                    }
                },
                _ => return Err(err(kat, "unknown key")),
            }
        }
        Ok(J::Object(o))
    }

    fn contents(&mut self, v: &Node, yat: &str, cl: bool) -> Result<J, ConfigError> {
        let mut o = Map::new();
        let mut data: Option<(Vec<u8>, String)> = None;
        for (k, v) in as_map(v, yat)? {
            let key = key_str(k, yat)?;
            let kat = at(&format!("{yat}.{key}"), k);
            match key {
                "inline" => {
                    let s = as_str(v, &kat)?;
                    set_once(&mut data, s.as_bytes().to_vec(), &kat)?;
                }
                "local" => {
                    let bytes = self.local(as_str(v, &kat)?, &kat)?;
                    set_once(&mut data, bytes, &kat)?;
                }
                "source" => {
                    o.insert("source".into(), plain(v, &kat)?);
                }
                // CL configs: contents.remote.url (+ verification)
                "remote" if cl => {
                    for (rk, rv) in as_map(v, &kat)? {
                        let rkey = key_str(rk, &kat)?;
                        let rat = at(&format!("{yat}.remote.{rkey}"), rk);
                        match rkey {
                            "url" => {
                                o.insert("source".into(), plain(rv, &rat)?);
                            }
                            "compression" => {
                                o.insert("compression".into(), plain(rv, &rat)?);
                            }
                            "verification" => {
                                o.insert("verification".into(), verification(rv, &rat)?);
                            }
                            _ => return Err(err(rat, "unknown key")),
                        }
                    }
                }
                "compression" => {
                    o.insert("compression".into(), plain(v, &kat)?);
                }
                "verification" => {
                    o.insert("verification".into(), verification(v, &kat)?);
                }
                "http_headers" => {
                    o.insert("httpHeaders".into(), plain(v, &kat)?);
                }
                _ => return Err(err(kat, "unknown key")),
            }
        }
        if let Some((bytes, kat)) = data {
            if o.contains_key("source") {
                return Err(err(
                    kat,
                    "source is also set (use one of inline, local, source)",
                ));
            }
            o.insert("source".into(), J::String(data_url(&bytes)));
        }
        Ok(J::Object(o))
    }

    fn local(&self, rel: &str, at: &str) -> Result<Vec<u8>, ConfigError> {
        let Some(dir) = &self.opts.files_dir else {
            return Err(err(at, self.no_local()));
        };
        let p = Path::new(rel);
        if rel.is_empty()
            || p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(err(
                at,
                format!("local path {rel:?} must be relative to the files directory, without '..'"),
            ));
        }
        let full = dir.join(p);
        let f = std::fs::File::open(&full)
            .map_err(|e| err(at, format!("reading {}: {e}", full.display())))?;
        let mut out = Vec::new();
        use std::io::Read;
        f.take(MAX_LOCAL + 1)
            .read_to_end(&mut out)
            .map_err(|e| err(at, format!("reading {}: {e}", full.display())))?;
        if out.len() as u64 > MAX_LOCAL {
            return Err(err(
                at,
                format!("{} is larger than 256 MiB", full.display()),
            ));
        }
        Ok(out)
    }

    fn no_local(&self) -> String {
        "local contents refer to files beside the config, and there is no files \
         directory here (first boot has none; give --files-dir DIR to translate, \
         validate or apply, or inline the file)"
            .into()
    }

    fn systemd(&mut self, v: &Node, cl: bool) -> Result<J, ConfigError> {
        let mut out = Map::new();
        for (k, v) in as_map(v, "systemd")? {
            let key = key_str(k, "systemd")?;
            let kat = format!("systemd.{key}");
            if key != "units" {
                return Err(err(at(&kat, k), "unknown key"));
            }
            let mut list = Vec::new();
            for (i, u) in as_seq(v, &kat)?.iter().enumerate() {
                let yat = format!("{kat}[{i}]");
                self.note(&format!("$.systemd.units.{i}"), &yat, u.line);
                let mut o = Map::new();
                for (fk, fv) in as_map(u, &yat)? {
                    let fkey = key_str(fk, &yat)?;
                    let fat = at(&format!("{yat}.{fkey}"), fk);
                    match fkey {
                        "name" | "enabled" | "mask" | "contents" => {
                            o.insert(fkey.into(), plain(fv, &fat)?);
                        }
                        // CL configs' older spelling
                        "enable" if cl => {
                            o.insert("enabled".into(), J::Bool(as_bool(fv, &fat)?));
                        }
                        "contents_local" => {
                            let b = self.local(as_str(fv, &fat)?, &fat)?;
                            o.insert("contents".into(), J::String(text(b, &fat)?));
                        }
                        "dropins" => {
                            let mut ds = Vec::new();
                            for (j, d) in as_seq(fv, &format!("{yat}.dropins"))?.iter().enumerate()
                            {
                                let dat = format!("{yat}.dropins[{j}]");
                                self.note(
                                    &format!("$.systemd.units.{i}.dropins.{j}"),
                                    &dat,
                                    d.line,
                                );
                                let mut dobj = Map::new();
                                for (dk, dv) in as_map(d, &dat)? {
                                    let dkey = key_str(dk, &dat)?;
                                    let dkat = at(&format!("{dat}.{dkey}"), dk);
                                    match dkey {
                                        "name" | "contents" => {
                                            dobj.insert(dkey.into(), plain(dv, &dkat)?);
                                        }
                                        "contents_local" => {
                                            let b = self.local(as_str(dv, &dkat)?, &dkat)?;
                                            dobj.insert(
                                                "contents".into(),
                                                J::String(text(b, &dkat)?),
                                            );
                                        }
                                        _ => return Err(err(dkat, "unknown key")),
                                    }
                                }
                                ds.push(J::Object(dobj));
                            }
                            o.insert("dropins".into(), J::Array(ds));
                        }
                        _ => return Err(err(fat, "unknown key")),
                    }
                }
                list.push(J::Object(o));
            }
            out.insert("units".into(), J::Array(list));
        }
        Ok(J::Object(out))
    }
}

fn text(b: Vec<u8>, at: &str) -> Result<String, ConfigError> {
    String::from_utf8(b).map_err(|_| err(at, "unit file is not UTF-8"))
}

fn set_once(
    slot: &mut Option<(Vec<u8>, String)>,
    bytes: Vec<u8>,
    at: &str,
) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(err(at, "inline and local are mutually exclusive"));
    }
    *slot = Some((bytes, at.to_string()));
    Ok(())
}

fn verification(v: &Node, at: &str) -> Result<J, ConfigError> {
    let mut o = Map::new();
    for (k, hv) in as_map(v, at)? {
        let key = key_str(k, at)?;
        if key != "hash" {
            return Err(err(format!("{at}.{key}"), "unknown key"));
        }
        o.insert("hash".into(), plain(hv, &format!("{at}.hash"))?);
    }
    Ok(J::Object(o))
}

fn owner(v: &Node, at: &str) -> Result<J, ConfigError> {
    let mut o = Map::new();
    for (k, x) in as_map(v, at)? {
        let key = key_str(k, at)?;
        match key {
            "id" | "name" => {
                o.insert(key.into(), plain(x, &format!("{at}.{key}"))?);
            }
            _ => return Err(err(format!("{at}.{key}"), "unknown key")),
        }
    }
    Ok(J::Object(o))
}

/// A YAML scalar or list of scalars as JSON; mappings go through the
/// functions that know their keys.
fn plain(v: &Node, at: &str) -> Result<J, ConfigError> {
    Ok(match &v.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| match &x.value {
                    Value::Seq(_) | Value::Map(_) => Err(err(
                        format!("{at}[{i}]"),
                        format!("expected a scalar, found {}", kind(x)),
                    )),
                    _ => plain(x, &format!("{at}[{i}]")),
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Real(_) | Value::Binary(_) | Value::Map(_) => {
            return Err(err(at, format!("unexpected {}", kind(v))))
        }
    })
}

fn is_empty(v: &Node) -> bool {
    match &v.value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Str(s) => s.is_empty(),
        Value::Seq(s) => s.is_empty(),
        Value::Map(m) => m.iter().all(|(_, v)| is_empty(v)),
        _ => false,
    }
}

/// `key (line N)` for messages.
fn at(path: &str, n: &Node) -> String {
    format!("{path} (line {})", n.line)
}

/// `$.a.bC.0.d` remainder → `.a.b_c[0].d`.
fn snake(json_rest: &str) -> String {
    let mut out = String::new();
    for part in json_rest.split('.').filter(|p| !p.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
            continue;
        }
        out.push('.');
        for c in part.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// A `data:` URL: percent-encoded text as Butane writes for inline
/// contents, base64 for anything else.
pub fn data_url(bytes: &[u8]) -> String {
    let texty = std::str::from_utf8(bytes).is_ok()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b" \n\t".contains(b));
    if !texty {
        use base64::Engine;
        return format!(
            "data:;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    }
    let mut s = String::from("data:,");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~/!$&'()*+;=:@".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}
