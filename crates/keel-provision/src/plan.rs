//! Plan: the config checked against the sysroot's current state and turned
//! into plain data (a list of steps) before anything is written. Every check
//! that can fail — owners that do not resolve, paths that exist without
//! `overwrite`, paths on the read-only `/usr`, units to enable without an
//! `[Install]` section — fails here, so a config is applied whole or not at
//! all.
//!
//! Paths in the plan are absolute paths inside the target root, with every
//! symlink in their parent directories already resolved *inside* that root
//! (an absolute link target is taken relative to the sysroot, as in a
//! chroot), so applying the plan never writes outside the sysroot.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keel_unit::{Install, UnitName};
use serde::Serialize;

use crate::accounts::{parse_sysusers, Declared, Table};
use crate::model::{Config, Owner, User};

/// Why a config cannot be applied to this sysroot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A config entry conflicts with the sysroot or is incomplete;
    /// `at` is `<source>: <JSON path or YAML key>`.
    #[error("{at}: {message}")]
    Entry {
        /// Where in which config.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A file in the sysroot that the plan must read is malformed.
    #[error(transparent)]
    Accounts(#[from] crate::accounts::AccountsError),
    /// A file in the sysroot could not be read.
    #[error("reading {path}: {message}")]
    Read {
        /// Path below the sysroot.
        path: String,
        /// The I/O error.
        message: String,
    },
}

/// Which tree a step writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The sysroot (ROOT, with `/etc` as an overlay).
    Root,
    /// The runtime `/run` that keel-init carries over switch_root.
    Run,
}

/// One change, in the order it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// Create a directory (if missing) and set its mode and owner.
    Mkdir {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Replace a file atomically.
    Write {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Contents (not serialised: can hold secrets).
        #[serde(skip)]
        contents: Vec<u8>,
    },
    /// Change mode and/or owner of an existing file or directory.
    SetAttrs {
        /// Path.
        path: String,
        /// New permission bits, if any.
        mode: Option<u32>,
        /// New owner, if any.
        uid: Option<u32>,
        /// New group, if any.
        gid: Option<u32>,
    },
    /// Replace whatever is at `path` with a symlink, atomically.
    Symlink {
        /// Path.
        path: String,
        /// Link target, verbatim.
        target: String,
        /// Owner of the link itself.
        uid: u32,
        /// Group of the link itself.
        gid: u32,
    },
    /// Replace whatever is at `path` with a hard link to `target` (a path in
    /// the same place).
    HardLink {
        /// Path.
        path: String,
        /// Existing file.
        target: String,
    },
    /// Remove a file or symlink.
    Remove {
        /// Path.
        path: String,
    },
}

impl Action {
    /// The path the action changes.
    pub fn path(&self) -> &str {
        match self {
            Action::Mkdir { path, .. }
            | Action::Write { path, .. }
            | Action::SetAttrs { path, .. }
            | Action::Symlink { path, .. }
            | Action::HardLink { path, .. }
            | Action::Remove { path } => path,
        }
    }
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which tree.
    pub place: Place,
    /// What.
    #[serde(flatten)]
    pub action: Action,
}

/// What the config amounts to, for the result file and `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Users created or changed.
    pub users: Vec<String>,
    /// Groups created.
    pub groups: Vec<String>,
    /// Files written.
    pub files: Vec<String>,
    /// Directories created.
    pub directories: Vec<String>,
    /// Links created.
    pub links: Vec<String>,
    /// Units written, enabled, disabled, masked or started.
    pub units: Vec<String>,
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// What was asked for.
    pub summary: Summary,
}

impl Plan {
    /// One line per step, for golden tests and `validate --plan`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for s in &self.steps {
            let place = match s.place {
                Place::Root => "",
                Place::Run => "run:",
            };
            // Writing to a String cannot fail.
            let _ = match &s.action {
                Action::Mkdir {
                    path,
                    mode,
                    uid,
                    gid,
                } => writeln!(out, "mkdir {place}{path} {mode:04o} {uid}:{gid}"),
                Action::Write {
                    path,
                    mode,
                    uid,
                    gid,
                    contents,
                } => {
                    writeln!(
                        out,
                        "write {place}{path} {mode:04o} {uid}:{gid} {} bytes",
                        contents.len()
                    )
                }
                Action::SetAttrs {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let m = mode.map_or("-".into(), |m| format!("{m:04o}"));
                    let u = uid.map_or("-".into(), |u| u.to_string());
                    let g = gid.map_or("-".into(), |g| g.to_string());
                    writeln!(out, "setattrs {place}{path} {m} {u}:{g}")
                }
                Action::Symlink {
                    path,
                    target,
                    uid,
                    gid,
                } => {
                    writeln!(out, "symlink {place}{path} -> {target} {uid}:{gid}")
                }
                Action::HardLink { path, target } => {
                    writeln!(out, "hardlink {place}{path} -> {target}")
                }
                Action::Remove { path } => writeln!(out, "remove {place}{path}"),
            };
        }
        out
    }
}

/// Where units go and are looked up, relative to the root.
pub const ETC_UNITS: &str = "/etc/systemd/system";
/// Vendor units.
pub const USR_UNITS: &str = "/usr/lib/systemd/system";
/// Runtime units (relative to the run place).
pub const RUN_UNITS: &str = "/systemd/system";

/// Trees that are not writable on ROOT: read-only partitions and API file
/// systems mounted over ROOT at runtime (a file written there would vanish).
const NOT_ROOT: &[(&str, &str)] = &[
    ("/usr", "the read-only USR partition"),
    ("/oem", "the read-only OEM partition"),
    ("/proc", "a runtime file system"),
    ("/sys", "a runtime file system"),
    ("/dev", "a runtime file system"),
    ("/run", "a runtime file system"),
];

fn e(at: &str, message: impl Into<String>) -> PlanError {
    PlanError::Entry {
        at: at.to_string(),
        message: message.into(),
    }
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Dir,
    File,
    Symlink,
    Other,
}

/// The tree a plan is made against: a sysroot, or an image's `/usr` with
/// its factory `/etc` over an empty ROOT (what a first boot sees, for
/// `validate`).
#[derive(Debug, Clone)]
pub struct Tree {
    /// ROOT (every path not redirected below).
    pub root: PathBuf,
    /// Read `/usr/...` from here instead of `root/usr`.
    pub usr: Option<PathBuf>,
    /// Read `/etc/...` from here instead of `root/etc`.
    pub etc: Option<PathBuf>,
}

impl Tree {
    /// A whole root tree.
    pub fn sysroot(root: &Path) -> Tree {
        Tree {
            root: root.to_path_buf(),
            usr: None,
            etc: None,
        }
    }

    /// An image's `/usr` (a running Keel's `/usr`, or the tree a build
    /// made) with its factory `/etc` ([`keel_contract::paths::FACTORY_ETC`]),
    /// over `empty_root`, an empty directory standing in for a fresh ROOT.
    pub fn image(usr: &Path, empty_root: &Path) -> Tree {
        let factory = keel_contract::paths::FACTORY_ETC.trim_start_matches("/usr/");
        Tree {
            root: empty_root.to_path_buf(),
            usr: Some(usr.to_path_buf()),
            etc: Some(usr.join(factory)),
        }
    }

    fn host(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        for (prefix, dir) in [("usr", &self.usr), ("etc", &self.etc)] {
            let Some(dir) = dir else { continue };
            if rel == prefix {
                return dir.clone();
            }
            if let Some(rest) = rel.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                return dir.join(rest);
            }
        }
        self.root.join(rel)
    }
}

struct Planner<'a> {
    tree: &'a Tree,
    plan: Plan,
    /// Paths that steps create, and which entry claimed them.
    claimed: BTreeMap<(Place, String), (Kind, String)>,
    /// Units the config gives contents for: an instance's template may be
    /// one of them (written to /etc before the links are made).
    config_units: BTreeMap<String, String>,
}

/// Build the plan for `cfg` against the sysroot at `root`.
pub fn plan(cfg: &Config, root: &Path) -> Result<Plan, PlanError> {
    plan_in(cfg, &Tree::sysroot(root))
}

/// Build the plan for `cfg` against a [`Tree`].
pub fn plan_in(cfg: &Config, tree: &Tree) -> Result<Plan, PlanError> {
    let mut p = Planner {
        tree,
        plan: Plan::default(),
        claimed: BTreeMap::new(),
        config_units: cfg
            .units
            .iter()
            .filter(|u| u.mask != Some(true))
            .filter_map(|u| Some((u.name.clone(), u.contents.clone()?)))
            .collect(),
    };
    let accounts = p.accounts(cfg)?;
    // Homes first, so that files a config puts in a new home do not create
    // it as a root-owned parent directory.
    p.homes(cfg, &accounts)?;
    p.directories(cfg, &accounts)?;
    p.files(cfg, &accounts)?;
    p.links(cfg, &accounts)?;
    p.units(cfg)?;
    Ok(p.plan)
}

/// Resolved account tables after the config's users and groups.
struct Accounts {
    passwd: Table,
    group: Table,
    /// Users created in this plan (their homes get created).
    created: Vec<String>,
    /// `sysusers.d` declarations: accounts systemd-sysusers creates later
    /// in the boot, with fixed ids where declared.
    declared: Vec<Declared>,
}

impl Accounts {
    fn uid(&self, o: &Owner, at: &str) -> Result<u32, PlanError> {
        match o {
            Owner::Id(n) => Ok(*n),
            Owner::Name(n) => self
                .passwd
                .get(n)
                .and_then(|f| f[2].parse().ok())
                .or_else(|| {
                    self.declared
                        .iter()
                        .find(|d| d.kind == 'u' && d.name == *n)
                        .and_then(|d| d.id)
                })
                .ok_or_else(|| {
                    e(
                        at,
                        format!("no user {n:?} in /etc/passwd, the config or sysusers.d"),
                    )
                }),
        }
    }

    fn gid(&self, o: &Owner, at: &str) -> Result<u32, PlanError> {
        match o {
            Owner::Id(n) => Ok(*n),
            Owner::Name(n) => self
                .group
                .get(n)
                .and_then(|f| f[2].parse().ok())
                .or_else(|| self.declared_gid(n))
                .ok_or_else(|| {
                    e(
                        at,
                        format!("no group {n:?} in /etc/group, the config or sysusers.d"),
                    )
                }),
        }
    }

    /// The gid sysusers.d gives group `name`: a `g` line, or the group a
    /// `u` line creates (`u NAME UID:GID`, else gid = uid).
    fn declared_gid(&self, name: &str) -> Option<u32> {
        let g = self
            .declared
            .iter()
            .find(|d| d.kind == 'g' && d.name == name);
        if let Some(g) = g {
            return g.id;
        }
        let u = self
            .declared
            .iter()
            .find(|d| d.kind == 'u' && d.name == name)?;
        match &u.group {
            Some(g) => g.parse().ok(),
            None => u.id,
        }
    }

    fn owner(&self, n: &crate::model::Node) -> Result<(u32, u32), PlanError> {
        let uid = n
            .user
            .as_ref()
            .map(|o| self.uid(o, &format!("{}.user", n.at)))
            .transpose()?
            .unwrap_or(0);
        let gid = n
            .group
            .as_ref()
            .map(|o| self.gid(o, &format!("{}.group", n.at)))
            .transpose()?
            .unwrap_or(0);
        Ok((uid, gid))
    }
}

impl Planner<'_> {
    fn host(&self, path: &str) -> PathBuf {
        self.tree.host(path)
    }

    fn read_opt(&self, path: &str) -> Result<Option<String>, PlanError> {
        match fs::read(self.host(path)) {
            Ok(b) => String::from_utf8(b).map(Some).map_err(|_| PlanError::Read {
                path: path.into(),
                message: "not UTF-8".into(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(PlanError::Read {
                path: path.into(),
                message: err.to_string(),
            }),
        }
    }

    fn kind(&self, path: &str) -> Kind {
        match fs::symlink_metadata(self.host(path)) {
            Err(_) => Kind::Missing,
            Ok(m) if m.file_type().is_symlink() => Kind::Symlink,
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(m) if m.is_file() => Kind::File,
            Ok(_) => Kind::Other,
        }
    }

    /// Resolve symlinks in the parent directories of `path` inside the root.
    fn resolve(&self, path: &str, at: &str) -> Result<String, PlanError> {
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        let mut todo: std::collections::VecDeque<String> = parent
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let here = format!(
                "/{}",
                done.iter()
                    .chain([&c])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("/")
            );
            match self.kind(&here) {
                Kind::Symlink => {
                    hops += 1;
                    if hops > 40 {
                        return Err(e(
                            at,
                            format!("too many levels of symlinks resolving {path}"),
                        ));
                    }
                    let target =
                        fs::read_link(self.host(&here)).map_err(|err| PlanError::Read {
                            path: here.clone(),
                            message: err.to_string(),
                        })?;
                    let t = target.to_string_lossy();
                    if t.starts_with('/') {
                        done.clear();
                    }
                    for (i, part) in t.split('/').filter(|p| !p.is_empty()).enumerate() {
                        todo.insert(i, part.to_string());
                    }
                }
                Kind::Dir | Kind::Missing => {
                    if let Some((k, by)) = self.claimed.get(&(Place::Root, here.clone())) {
                        if *k != Kind::Dir {
                            return Err(e(
                                at,
                                format!("{here} is not a directory (it is created by {by})"),
                            ));
                        }
                    }
                    done.push(c)
                }
                _ => return Err(e(at, format!("{here} is not a directory"))),
            }
        }
        let out = format!(
            "/{}",
            done.iter()
                .map(String::as_str)
                .chain([last])
                .collect::<Vec<_>>()
                .join("/")
        );
        for (top, what) in NOT_ROOT {
            if out == *top || out.starts_with(&format!("{top}/")) {
                let via = if out == path {
                    String::new()
                } else {
                    format!(" (as {out}, through a symlink)")
                };
                return Err(e(at, format!("{path}{via} is on {what}, not on ROOT")));
            }
        }
        Ok(out)
    }

    fn claim(&mut self, place: Place, path: &str, kind: Kind, at: &str) -> Result<(), PlanError> {
        if let Some((_, by)) = self.claimed.get(&(place, path.to_string())) {
            return Err(e(at, format!("{path} is also written by {by}")));
        }
        self.claimed
            .insert((place, path.to_string()), (kind, at.to_string()));
        Ok(())
    }

    /// Plan missing parent directories of `path` (0755 root, as Ignition).
    fn parents(&mut self, place: Place, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            cur = format!("{cur}/{part}");
            let exists = match place {
                Place::Root => self.kind(&cur) != Kind::Missing,
                Place::Run => false,
            };
            if exists || self.claimed.contains_key(&(place, cur.clone())) {
                continue;
            }
            self.claimed.insert(
                (place, cur.clone()),
                (Kind::Dir, "a parent directory".into()),
            );
            self.push(
                place,
                Action::Mkdir {
                    path: cur.clone(),
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
            );
        }
    }

    fn push(&mut self, place: Place, action: Action) {
        self.plan.steps.push(Step { place, action });
    }

    fn accounts(&mut self, cfg: &Config) -> Result<Accounts, PlanError> {
        let load = |p: &mut Self,
                    file: &str,
                    width: usize,
                    num: &[usize]|
         -> Result<Option<Table>, PlanError> {
            Ok(match p.read_opt(file)? {
                Some(text) => Some(Table::parse(file, &text, width, num)?),
                None => None,
            })
        };
        let mut passwd = load(self, "/etc/passwd", 7, &[])?.unwrap_or_else(Table::empty);
        let mut group = load(self, "/etc/group", 4, &[2])?.unwrap_or_else(Table::empty);
        let mut shadow = load(self, "/etc/shadow", 9, &[])?.unwrap_or_else(Table::empty);
        let mut gshadow = load(self, "/etc/gshadow", 4, &[])?;
        let declared = self.sysusers()?;
        let decl =
            |kind: char, name: &str| declared.iter().find(|d| d.kind == kind && d.name == name);
        let declared_uids: Vec<u32> = declared
            .iter()
            .filter(|d| d.kind == 'u')
            .filter_map(|d| d.id)
            .collect();
        let declared_gids: Vec<u32> = declared
            .iter()
            .filter_map(|d| {
                if d.kind == 'g' {
                    d.id
                } else {
                    d.group.as_ref().and_then(|g| g.parse().ok()).or(d.id)
                }
            })
            .collect();
        let mut created = Vec::new();

        let add_group = |group: &mut Table, gshadow: &mut Option<Table>, name: &str, gid: u32| {
            group.push(vec![
                name.into(),
                "x".into(),
                gid.to_string(),
                String::new(),
            ]);
            if let Some(gs) = gshadow.as_mut() {
                gs.push(vec![name.into(), "!".into(), String::new(), String::new()]);
            }
        };

        for g in &cfg.groups {
            let id = AccountId {
                kind: IdKind::Group,
                name: &g.name,
                at: &g.at,
                requested: g.gid,
                system: g.system,
            };
            if let Some(f) = group.get(&g.name) {
                id.check_existing(&f[2])?;
            } else {
                let gid = id.choose(
                    decl('g', &g.name).and_then(|d| d.id),
                    &group,
                    &declared_gids,
                )?;
                add_group(&mut group, &mut gshadow, &g.name, gid);
                self.plan.summary.groups.push(g.name.clone());
            }
            // Ignition's group passwordHash goes to /etc/gshadow (created
            // when the image has none, as groupadd --password would need).
            if let Some(h) = &g.password_hash {
                let gs = gshadow.get_or_insert_with(Table::empty);
                if gs.get(&g.name).is_none() {
                    gs.push(vec![
                        g.name.clone(),
                        h.clone(),
                        String::new(),
                        String::new(),
                    ]);
                } else {
                    gs.set(&g.name, 1, h);
                }
            }
        }

        for u in &cfg.users {
            self.plan.summary.users.push(u.name.clone());
            let id = AccountId {
                kind: IdKind::User,
                name: &u.name,
                at: &u.at,
                requested: u.uid,
                system: u.system,
            };
            if let Some(f) = passwd.get(&u.name) {
                id.check_existing(&f[2])?;
                if let Some(pg) = &u.primary_group {
                    let gid = group.get(pg).map(|g| g[2].clone()).ok_or_else(|| {
                        e(
                            &format!("{}.primaryGroup", u.at),
                            format!("no group {pg:?}"),
                        )
                    })?;
                    passwd.set(&u.name, 3, &gid);
                }
            } else {
                let d = decl('u', &u.name);
                let uid = id.choose(d.and_then(|d| d.id), &passwd, &declared_uids)?;
                let gid = match &u.primary_group {
                    Some(pg) => group
                        .get(pg)
                        .and_then(|g| g[2].parse::<u32>().ok())
                        .or_else(|| decl('g', pg).and_then(|d| d.id))
                        .ok_or_else(|| {
                            e(
                                &format!("{}.primaryGroup", u.at),
                                format!("no group {pg:?} in /etc/group, the config or sysusers.d"),
                            )
                        })?,
                    None => {
                        // A group named like the user: sysusers' UID:GID or
                        // the uid; its own entry if it exists already.
                        let want = d.and_then(|d| d.group.as_ref()).and_then(|g| {
                            g.parse::<u32>()
                                .ok()
                                .or_else(|| group.get(g).and_then(|f| f[2].parse().ok()))
                        });
                        match group.get(&u.name) {
                            Some(f) => f[2].parse().unwrap_or(uid),
                            None => {
                                let gid = want
                                    .or_else(|| (group.name_of(2, uid).is_none()).then_some(uid))
                                    .or_else(|| {
                                        allocate(
                                            group.ids(2).chain(declared_gids.iter().copied()),
                                            u.system,
                                        )
                                    })
                                    .ok_or_else(|| e(&u.at, "no free gid"))?;
                                add_group(&mut group, &mut gshadow, &u.name, gid);
                                gid
                            }
                        }
                    }
                };
                let home = u
                    .home_dir
                    .clone()
                    .or_else(|| d.and_then(|d| d.home.clone()))
                    .unwrap_or_else(|| format!("/home/{}", u.name));
                let shell = u
                    .shell
                    .clone()
                    .or_else(|| d.and_then(|d| d.shell.clone()))
                    .unwrap_or_else(|| "/bin/bash".into());
                let gecos = u
                    .gecos
                    .clone()
                    .or_else(|| d.and_then(|d| d.gecos.clone()))
                    .unwrap_or_default();
                passwd.push(vec![
                    u.name.clone(),
                    "x".into(),
                    uid.to_string(),
                    gid.to_string(),
                    gecos,
                    home,
                    shell,
                ]);
                // The memberships sysusers.d gives a user it declares (`m`
                // lines): systemd-sysusers skips a user that already exists,
                // so a user materialised here gets them here.
                if d.is_some() {
                    for m in declared
                        .iter()
                        .filter(|m| m.kind == 'm' && m.name == u.name)
                    {
                        let Some(g) = &m.group else { continue };
                        if group.get(g).is_none() {
                            match decl('g', g).and_then(|d| d.id) {
                                Some(gid) => add_group(&mut group, &mut gshadow, g, gid),
                                // a dynamic gid: sysusers creates the group
                                // and its members later
                                None => continue,
                            }
                        }
                        group.add_member(g, 3, &u.name);
                        if let Some(gs) = gshadow.as_mut() {
                            if gs.get(g).is_some() {
                                gs.add_member(g, 3, &u.name);
                            }
                        }
                    }
                }
                created.push(u.name.clone());
            }
            if let Some(h) = &u.gecos {
                passwd.set(&u.name, 4, h);
            }
            if let Some(h) = &u.home_dir {
                passwd.set(&u.name, 5, h);
            }
            if let Some(s) = &u.shell {
                passwd.set(&u.name, 6, s);
            }
            let hash = match &u.password_hash {
                Some(h) if u.lock_password && !h.starts_with('!') => Some(format!("!{h}")),
                h => h.clone(),
            };
            if shadow.get(&u.name).is_none() {
                // "*": no password can match, but the account is not locked,
                // so key-based SSH logins still work.
                let h = hash.clone().unwrap_or_else(|| "*".into());
                shadow.push(vec![
                    u.name.clone(),
                    h,
                    String::new(),
                    "0".into(),
                    "99999".into(),
                    "7".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            } else if let Some(h) = &hash {
                shadow.set(&u.name, 1, h);
            }
            for (j, g) in u.groups.iter().enumerate() {
                if group.get(g).is_none() {
                    let gid = decl('g', g).and_then(|d| d.id).ok_or_else(|| {
                        e(
                            &format!("{}.groups.{j}", u.at),
                            format!("no group {g:?} in /etc/group, the config or sysusers.d"),
                        )
                    })?;
                    add_group(&mut group, &mut gshadow, g, gid);
                }
                group.add_member(g, 3, &u.name);
                if let Some(gs) = gshadow.as_mut() {
                    if gs.get(g).is_some() {
                        gs.add_member(g, 3, &u.name);
                    }
                }
            }
        }

        let tables = [
            ("/etc/passwd", &passwd, 0o644),
            ("/etc/group", &group, 0o644),
            ("/etc/shadow", &shadow, 0o600),
        ];
        for (path, table, default_mode) in tables {
            if table.changed {
                self.write_account_file(path, table, default_mode)?;
            }
        }
        if let Some(gs) = &gshadow {
            if gs.changed {
                self.write_account_file("/etc/gshadow", gs, 0o600)?;
            }
        }
        Ok(Accounts {
            passwd,
            group,
            created,
            declared,
        })
    }

    /// Rewrite an account file keeping the existing file's mode and owner.
    fn write_account_file(
        &mut self,
        path: &str,
        table: &Table,
        default_mode: u32,
    ) -> Result<(), PlanError> {
        let (mode, uid, gid) = match fs::metadata(self.host(path)) {
            Ok(m) => (m.permissions().mode() & 0o7777, m.uid(), m.gid()),
            Err(_) => (default_mode, 0, 0),
        };
        self.parents(Place::Root, path);
        self.claim(Place::Root, path, Kind::File, "passwd")?;
        self.push(
            Place::Root,
            Action::Write {
                path: path.into(),
                mode,
                uid,
                gid,
                contents: table.render().into_bytes(),
            },
        );
        Ok(())
    }

    /// `sysusers.d` declarations: `/etc/sysusers.d` replaces same-named files
    /// of `/usr/lib/sysusers.d`; files are read in name order and the first
    /// declaration of a name wins, as systemd-sysusers does.
    fn sysusers(&self) -> Result<Vec<Declared>, PlanError> {
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for dir in ["/usr/lib/sysusers.d", "/etc/sysusers.d"] {
            let Ok(rd) = fs::read_dir(self.host(dir)) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".conf") {
                    files.insert(name.clone(), format!("{dir}/{name}"));
                }
            }
        }
        let mut out: Vec<Declared> = Vec::new();
        for path in files.values() {
            let Some(text) = self.read_opt(path)? else {
                continue;
            };
            for d in parse_sysusers(path, &text)? {
                if !out.iter().any(|o| o.kind == d.kind && o.name == d.name) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn directories(&mut self, cfg: &Config, acc: &Accounts) -> Result<(), PlanError> {
        let mut dirs: Vec<_> = cfg.directories.iter().collect();
        dirs.sort_by(|a, b| a.node.path.cmp(&b.node.path));
        for d in dirs {
            let at = format!("{}.path", d.node.at);
            let path = self.resolve(&d.node.path, &at)?;
            let (uid, gid) = acc.owner(&d.node)?;
            let mode = d.mode.unwrap_or(0o755);
            match self.kind(&path) {
                Kind::Missing => {
                    self.parents(Place::Root, &path);
                    self.push(
                        Place::Root,
                        Action::Mkdir {
                            path: path.clone(),
                            mode,
                            uid,
                            gid,
                        },
                    );
                }
                Kind::Dir => self.push(
                    Place::Root,
                    Action::SetAttrs {
                        path: path.clone(),
                        mode: d.mode,
                        uid: d.node.user.as_ref().map(|_| uid),
                        gid: d.node.group.as_ref().map(|_| gid),
                    },
                ),
                _ if d.node.overwrite == Some(true) => {
                    self.push(Place::Root, Action::Remove { path: path.clone() });
                    self.push(
                        Place::Root,
                        Action::Mkdir {
                            path: path.clone(),
                            mode,
                            uid,
                            gid,
                        },
                    );
                }
                _ => {
                    return Err(e(
                        &at,
                        format!(
                            "{path} exists and is not a directory (set overwrite to replace it)"
                        ),
                    ))
                }
            }
            self.claim(Place::Root, &path, Kind::Dir, &d.node.at)?;
            self.plan.summary.directories.push(path);
        }
        Ok(())
    }

    fn files(&mut self, cfg: &Config, acc: &Accounts) -> Result<(), PlanError> {
        for f in &cfg.files {
            let at = format!("{}.path", f.node.at);
            let path = self.resolve(&f.node.path, &at)?;
            let (uid, gid) = acc.owner(&f.node)?;
            let mode = f.mode.unwrap_or(0o644);
            let kind = self.kind(&path);
            let write = Action::Write {
                path: path.clone(),
                mode,
                uid,
                gid,
                contents: f.contents.clone().unwrap_or_default(),
            };
            match kind {
                Kind::Missing => {
                    self.parents(Place::Root, &path);
                    self.push(Place::Root, write);
                }
                Kind::Dir => return Err(e(&at, format!("{path} is a directory"))),
                Kind::File if f.contents.is_none() && f.node.overwrite != Some(true) => self.push(
                    Place::Root,
                    Action::SetAttrs {
                        path: path.clone(),
                        mode: f.mode,
                        uid: f.node.user.as_ref().map(|_| uid),
                        gid: f.node.group.as_ref().map(|_| gid),
                    },
                ),
                _ if f.node.overwrite == Some(true) => self.push(Place::Root, write),
                // The same contents again (a re-run with keel.first_boot=1):
                // nothing conflicts, so rewriting it is harmless.
                Kind::File
                    if f.contents
                        .as_ref()
                        .is_some_and(|c| fs::read(self.host(&path)).ok().as_ref() == Some(c)) =>
                {
                    self.push(Place::Root, write)
                }
                _ => {
                    return Err(e(
                        &at,
                        format!("{path} already exists (set overwrite to replace it)"),
                    ))
                }
            }
            self.claim(Place::Root, &path, Kind::File, &f.node.at)?;
            self.plan.summary.files.push(path);
        }
        Ok(())
    }

    fn links(&mut self, cfg: &Config, acc: &Accounts) -> Result<(), PlanError> {
        for l in &cfg.links {
            let at = format!("{}.path", l.node.at);
            let path = self.resolve(&l.node.path, &at)?;
            let (uid, gid) = acc.owner(&l.node)?;
            let action = if l.hard {
                let tat = format!("{}.target", l.node.at);
                let target = self.resolve(&l.target, &tat)?;
                let planned = matches!(
                    self.claimed.get(&(Place::Root, target.clone())),
                    Some((Kind::File, _))
                );
                if !planned && self.kind(&target) != Kind::File {
                    return Err(e(
                        &tat,
                        format!("hard link target {target} is not a regular file"),
                    ));
                }
                Action::HardLink {
                    path: path.clone(),
                    target,
                }
            } else {
                Action::Symlink {
                    path: path.clone(),
                    target: l.target.clone(),
                    uid,
                    gid,
                }
            };
            // An identical symlink already there (a re-run) is left alone.
            let mut same = false;
            match self.kind(&path) {
                Kind::Missing => self.parents(Place::Root, &path),
                Kind::Dir => return Err(e(&at, format!("{path} is a directory"))),
                Kind::Symlink
                    if !l.hard
                        && fs::read_link(self.host(&path)).ok().as_deref()
                            == Some(Path::new(&l.target)) =>
                {
                    same = true
                }
                _ if l.node.overwrite == Some(true) => {}
                _ => {
                    return Err(e(
                        &at,
                        format!("{path} already exists (set overwrite to replace it)"),
                    ))
                }
            }
            if !same {
                self.push(Place::Root, action);
            }
            self.claim(Place::Root, &path, Kind::Symlink, &l.node.at)?;
            self.plan.summary.links.push(path);
        }
        Ok(())
    }

    /// Home directories of new users, `~/.ssh` and `authorized_keys`,
    /// sudoers drop-ins.
    fn homes(&mut self, cfg: &Config, acc: &Accounts) -> Result<(), PlanError> {
        for u in cfg.users.iter().filter(|u| !u.sudo.is_empty()) {
            let path = format!("/etc/sudoers.d/keel-provision-{}", u.name);
            let text: String = u
                .sudo
                .iter()
                .map(|r| format!("{} {}\n", u.name, r.trim()))
                .collect();
            self.parents(Place::Root, &path);
            self.claim(Place::Root, &path, Kind::File, &u.at)?;
            self.push(
                Place::Root,
                Action::Write {
                    path,
                    mode: 0o440,
                    uid: 0,
                    gid: 0,
                    contents: text.into_bytes(),
                },
            );
        }
        for u in &cfg.users {
            let User { at, name, .. } = u;
            let Some(f) = acc.passwd.get(name) else {
                continue;
            };
            let (uid, gid): (u32, u32) = (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0));
            let home = f[5].clone();
            let wants_home = (acc.created.contains(name) && !u.no_create_home)
                || !u.ssh_authorized_keys.is_empty();
            if !wants_home || home.is_empty() || home == "/" {
                continue;
            }
            let home = self.resolve(&crate::model::clean_path(&home).map_err(|m| e(at, m))?, at)?;
            match self.kind(&home) {
                Kind::Missing if !self.claimed.contains_key(&(Place::Root, home.clone())) => {
                    self.parents(Place::Root, &home);
                    self.claim(Place::Root, &home, Kind::Dir, at)?;
                    self.push(
                        Place::Root,
                        Action::Mkdir {
                            path: home.clone(),
                            mode: 0o755,
                            uid,
                            gid,
                        },
                    );
                }
                Kind::Missing | Kind::Dir => {}
                _ => return Err(e(at, format!("home directory {home} is not a directory"))),
            }
            if u.ssh_authorized_keys.is_empty() {
                continue;
            }
            let ssh = format!("{home}/.ssh");
            match self.kind(&ssh) {
                Kind::Missing => {
                    self.claim(Place::Root, &ssh, Kind::Dir, at)?;
                    self.push(
                        Place::Root,
                        Action::Mkdir {
                            path: ssh.clone(),
                            mode: 0o700,
                            uid,
                            gid,
                        },
                    );
                }
                Kind::Dir => {}
                _ => return Err(e(at, format!("{ssh} is not a directory"))),
            }
            let keys_path = format!("{ssh}/authorized_keys");
            let mut text = match self.kind(&keys_path) {
                Kind::File => self.read_opt(&keys_path)?.unwrap_or_default(),
                Kind::Missing => String::new(),
                _ => return Err(e(at, format!("{keys_path} is not a regular file"))),
            };
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            for k in &u.ssh_authorized_keys {
                if !text.lines().any(|l| l.trim() == k.trim()) {
                    text.push_str(k.trim());
                    text.push('\n');
                }
            }
            self.claim(Place::Root, &keys_path, Kind::File, at)?;
            self.push(
                Place::Root,
                Action::Write {
                    path: keys_path,
                    mode: 0o600,
                    uid,
                    gid,
                    contents: text.into_bytes(),
                },
            );
        }
        Ok(())
    }

    fn units(&mut self, cfg: &Config) -> Result<(), PlanError> {
        for u in &cfg.units {
            let at = u.at.as_str();
            let etc_path = format!("{ETC_UNITS}/{}", u.name);
            let mut did = Vec::new();
            if let Some(c) = &u.contents {
                self.parents(Place::Root, &etc_path);
                self.claim(Place::Root, &etc_path, Kind::File, at)?;
                self.push(
                    Place::Root,
                    Action::Write {
                        path: etc_path.clone(),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        contents: c.clone().into_bytes(),
                    },
                );
                did.push("written");
            }
            for d in &u.dropins {
                let Some(c) = &d.contents else { continue };
                let p = format!("{ETC_UNITS}/{}.d/{}", u.name, d.name);
                self.parents(Place::Root, &p);
                self.claim(Place::Root, &p, Kind::File, at)?;
                self.push(
                    Place::Root,
                    Action::Write {
                        path: p,
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        contents: c.clone().into_bytes(),
                    },
                );
                if !did.contains(&"drop-ins") {
                    did.push("drop-ins");
                }
            }
            match u.mask {
                Some(true) => {
                    self.parents(Place::Root, &etc_path);
                    self.claim(Place::Root, &etc_path, Kind::Symlink, at)?;
                    if self.kind(&etc_path) == Kind::Dir {
                        return Err(e(at, format!("{etc_path} is a directory")));
                    }
                    self.push(
                        Place::Root,
                        Action::Symlink {
                            path: etc_path.clone(),
                            target: "/dev/null".into(),
                            uid: 0,
                            gid: 0,
                        },
                    );
                    did.push("masked");
                }
                Some(false)
                    if u.contents.is_none()
                        && fs::read_link(self.host(&etc_path)).ok().as_deref()
                            == Some(Path::new("/dev/null")) =>
                {
                    self.push(
                        Place::Root,
                        Action::Remove {
                            path: etc_path.clone(),
                        },
                    );
                    did.push("unmasked");
                }
                _ => {}
            }
            match u.enabled {
                Some(true) => {
                    self.enable(u, at)?;
                    did.push("enabled");
                }
                Some(false) => {
                    self.disable(&u.name);
                    did.push("disabled");
                }
                None => {}
            }
            if u.start {
                let (unit_path, _) = self.unit_file(u, at)?;
                let link = format!("{RUN_UNITS}/multi-user.target.wants/{}", u.name);
                self.parents(Place::Run, &link);
                self.claim(Place::Run, &link, Kind::Symlink, at)?;
                self.push(
                    Place::Run,
                    Action::Symlink {
                        path: link,
                        target: unit_path,
                        uid: 0,
                        gid: 0,
                    },
                );
                did.push("started");
            }
            if u.stop {
                let link = format!("{RUN_UNITS}/{}", u.name);
                self.parents(Place::Run, &link);
                self.claim(Place::Run, &link, Kind::Symlink, at)?;
                self.push(
                    Place::Run,
                    Action::Symlink {
                        path: link,
                        target: "/dev/null".into(),
                        uid: 0,
                        gid: 0,
                    },
                );
                did.push("stopped for this boot");
            }
            self.plan.summary.units.push(if did.is_empty() {
                u.name.clone()
            } else {
                format!("{} ({})", u.name, did.join(", "))
            });
        }
        Ok(())
    }

    /// The unit file a unit name refers to (its template for an instance):
    /// the path links should point at, and its text.
    fn unit_file(&self, u: &crate::model::Unit, at: &str) -> Result<(String, String), PlanError> {
        if let Some(c) = &u.contents {
            return Ok((format!("{ETC_UNITS}/{}", u.name), c.clone()));
        }
        let mut names = vec![u.name.clone()];
        if let Some(t) = UnitName::parse(&u.name).ok().and_then(|n| n.template()) {
            if t.as_str() != u.name {
                names.push(t.to_string());
            }
        }
        for name in &names {
            if let Some(text) = self.config_units.get(name) {
                return Ok((format!("{ETC_UNITS}/{name}"), text.clone()));
            }
            for dir in [ETC_UNITS, USR_UNITS] {
                let p = format!("{dir}/{name}");
                if let Some(text) = self.read_opt(&p)? {
                    return Ok((p, text));
                }
            }
        }
        Err(e(
            at,
            format!(
                "unit {} has no contents in the config and no file in {ETC_UNITS} or {USR_UNITS}",
                u.name
            ),
        ))
    }

    fn enable(&mut self, u: &crate::model::Unit, at: &str) -> Result<(), PlanError> {
        let (unit_path, text) = self.unit_file(u, at)?;
        let unit = UnitName::parse(&u.name).map_err(|x| e(at, x.to_string()))?;
        // The unit file's syntax and its [Install] section as systemd reads
        // them (keel-unit); a line systemd would not read is an error naming
        // the file and line rather than a link silently missing.
        let install = Install::parse(&unit, Path::new(&unit_path), &text, &mut Vec::new())
            .map_err(|x| e(at, x.to_string()))?;
        if unit.is_template() && install.default_instance.is_none() {
            return Err(e(
                at,
                format!("template {} has no DefaultInstance= to enable", u.name),
            ));
        }
        if install.is_static() {
            return Err(e(at, format!("{} cannot be enabled: its [Install] section has no WantedBy=, RequiredBy= or Alias=", u.name)));
        }
        // `Also=` is not followed: each unit a config enables is named in it.
        let links: Vec<String> = install
            .links(&unit, Path::new(&unit_path))
            .map_err(|x| e(at, x.to_string()))?
            .into_iter()
            .map(|l| format!("{ETC_UNITS}/{}", l.path))
            .collect();
        for link in links {
            if fs::read_link(self.host(&link)).ok().as_deref() == Some(Path::new(&unit_path)) {
                continue;
            }
            self.parents(Place::Root, &link);
            self.claim(Place::Root, &link, Kind::Symlink, at)?;
            self.push(
                Place::Root,
                Action::Symlink {
                    path: link,
                    target: unit_path.clone(),
                    uid: 0,
                    gid: 0,
                },
            );
        }
        Ok(())
    }

    /// Remove `*.wants/NAME`, `*.requires/NAME` links under /etc.
    fn disable(&mut self, name: &str) {
        let Ok(rd) = fs::read_dir(self.host(ETC_UNITS)) else {
            return;
        };
        let mut found: Vec<String> = rd
            .flatten()
            .map(|d| d.file_name().to_string_lossy().to_string())
            .filter(|d| {
                d.ends_with(".wants") || d.ends_with(".requires") || d.ends_with(".upholds")
            })
            .map(|d| format!("{ETC_UNITS}/{d}/{name}"))
            .filter(|p| self.kind(p) == Kind::Symlink)
            .collect();
        found.sort();
        for p in found {
            self.push(Place::Root, Action::Remove { path: p });
        }
    }
}

/// Pick a free id: system ids count down from 999, others up from 1000.
/// Users or groups: what an id is called in messages.
#[derive(Debug, Clone, Copy)]
enum IdKind {
    User,
    Group,
}

impl IdKind {
    /// The config field and the noun (`uid`, `user`).
    fn words(self) -> (&'static str, &'static str) {
        match self {
            IdKind::User => ("uid", "user"),
            IdKind::Group => ("gid", "group"),
        }
    }
}

/// One account the config asks for, as far as its numeric id goes. Users and
/// groups follow the same rules, so one piece of code decides both.
#[derive(Debug)]
struct AccountId<'a> {
    kind: IdKind,
    name: &'a str,
    at: &'a str,
    requested: Option<u32>,
    system: bool,
}

impl AccountId<'_> {
    fn error(&self, message: String) -> PlanError {
        e(&format!("{}.{}", self.at, self.kind.words().0), message)
    }

    /// The account exists already with id `existing`: a requested id must match.
    fn check_existing(&self, existing: &str) -> Result<(), PlanError> {
        let (field, noun) = self.kind.words();
        match self.requested {
            Some(want) if existing != want.to_string() => Err(self.error(format!(
                "{noun} {:?} already exists with {field} {existing}",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    /// The id of a new account: the requested one, else the one sysusers.d
    /// declares (they must agree), neither taken in `table` (id in column 2);
    /// else a free one outside `table` and `declared_ids`.
    fn choose(
        &self,
        declared: Option<u32>,
        table: &Table,
        declared_ids: &[u32],
    ) -> Result<u32, PlanError> {
        let (field, noun) = self.kind.words();
        match (self.requested, declared) {
            (Some(a), Some(b)) if a != b => Err(self.error(format!(
                "sysusers.d declares {noun} {:?} with {field} {b}",
                self.name
            ))),
            (Some(a), _) | (None, Some(a)) => match table.name_of(2, a) {
                Some(other) => {
                    Err(self.error(format!("{field} {a} is already used by {noun} {other:?}")))
                }
                None => Ok(a),
            },
            (None, None) => allocate(
                table.ids(2).chain(declared_ids.iter().copied()),
                self.system,
            )
            .ok_or_else(|| e(self.at, format!("no free {field}"))),
        }
    }
}

fn allocate(used: impl Iterator<Item = u32>, system: bool) -> Option<u32> {
    let used: std::collections::BTreeSet<u32> = used.collect();
    if system {
        (100..=999).rev().find(|i| !used.contains(i))
    } else {
        (1000..=59999).find(|i| !used.contains(i))
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    fn msg(r: Result<impl std::fmt::Debug, PlanError>) -> String {
        match r.expect_err("should fail") {
            PlanError::Entry { at, message } => format!("{at}: {message}"),
            other => format!("{other}"),
        }
    }

    fn req(kind: IdKind, requested: Option<u32>) -> AccountId<'static> {
        AccountId {
            kind,
            name: "ops",
            at: "$.passwd.users[0]",
            requested,
            system: false,
        }
    }

    #[test]
    fn users_and_groups_follow_one_rule() {
        let passwd = Table::parse(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/bash\n",
            7,
            &[],
        )
        .unwrap();
        let group = Table::parse("/etc/group", "root:x:0:\ncore:x:500:\n", 4, &[2]).unwrap();
        let u = req(IdKind::User, Some(500));
        assert_eq!(
            msg(u.choose(None, &passwd, &[])),
            "$.passwd.users[0].uid: uid 500 is already used by user \"core\""
        );
        let g = req(IdKind::Group, Some(500));
        assert_eq!(
            msg(g.choose(None, &group, &[])),
            "$.passwd.users[0].gid: gid 500 is already used by group \"core\""
        );
        assert_eq!(
            msg(req(IdKind::User, Some(1001)).choose(Some(1002), &passwd, &[])),
            "$.passwd.users[0].uid: sysusers.d declares user \"ops\" with uid 1002"
        );
        assert_eq!(
            msg(req(IdKind::Group, Some(7)).check_existing("8")),
            "$.passwd.users[0].gid: group \"ops\" already exists with gid 8"
        );
        req(IdKind::User, None).check_existing("8").unwrap();
        // Declared id taken by nobody: used. Nothing asked: the first free
        // regular id, skipping ids sysusers.d reserves.
        assert_eq!(
            req(IdKind::User, None)
                .choose(Some(1005), &passwd, &[])
                .unwrap(),
            1005
        );
        assert_eq!(
            req(IdKind::User, None)
                .choose(None, &passwd, &[1000])
                .unwrap(),
            1001
        );
        let sys = AccountId {
            system: true,
            ..req(IdKind::Group, None)
        };
        assert_eq!(sys.choose(None, &group, &[999]).unwrap(), 998);
    }
}
