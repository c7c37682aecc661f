//! `oem.toml`: the vendor's hook manifest.
//!
//! ```toml
//! version = 1
//!
//! [[hook]]
//! name = "fetch-metadata"
//! stage = "network"                       # early | network | late
//! command = ["/oem/bin/fetch-metadata", "--quiet"]
//! timeout = 30                            # seconds, 1..=3600
//! run = "every-boot"                      # or "first-boot"
//! required = false
//! capabilities = ["CAP_NET_ADMIN"]        # everything else is dropped
//! environment = { SOURCE = "fw_cfg" }
//! ```
//!
//! Parsing is two steps: serde into raw, spanned fragments (`deny_unknown_fields`,
//! so a misspelt key is an error), then validation into [`Manifest`] with real
//! types. Every problem names the file, the line, the hook and the key;
//! validation collects all problems instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The only manifest version this runner understands.
pub const MANIFEST_VERSION: i64 = 1;
/// Where the OEM partition is mounted; hook commands must live below it.
pub const OEM_MOUNT: &str = keel_contract::paths::OEM_DIR;
/// Longest timeout a hook may ask for, in seconds (one hour).
pub const MAX_TIMEOUT_SECS: i64 = 3600;
/// Environment names the runner sets itself; a hook cannot override them.
pub const RESERVED_ENV: &[&str] = &[
    "KEEL_OEM_ID",
    "KEEL_STAGE",
    "KEEL_FIRST_BOOT",
    "KEEL_OEM_DIR",
    "KEEL_METADATA",
    "PATH",
];

/// A boot stage a hook runs in; each has its own systemd unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Local filesystems are ready, the network is not configured yet.
    Early,
    /// After `network-online.target`.
    Network,
    /// With `multi-user.target`.
    Late,
}

impl Stage {
    /// Every stage, in boot order.
    pub const ALL: [Stage; 3] = [Stage::Early, Stage::Network, Stage::Late];

    /// The name used in `oem.toml`, on the command line and in unit names.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Early => "early",
            Stage::Network => "network",
            Stage::Late => "late",
        }
    }

    /// The systemd unit that runs this stage.
    pub fn unit_name(self) -> String {
        format!("keel-oem-{}.service", self.as_str())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "early" => Ok(Stage::Early),
            "network" => Ok(Stage::Network),
            "late" => Ok(Stage::Late),
            other => Err(format!(
                "unknown stage {other:?} (expected \"early\", \"network\" or \"late\")"
            )),
        }
    }
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunPolicy {
    /// Until it has succeeded once on this machine (a marker under
    /// `/var/lib/keel/oem/done/` records the success).
    FirstBoot,
    /// On every boot.
    EveryBoot,
}

impl RunPolicy {
    /// The name used in `oem.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPolicy::FirstBoot => "first-boot",
            RunPolicy::EveryBoot => "every-boot",
        }
    }
}

/// One validated hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Unique name: the journal identifier, the marker name.
    pub name: String,
    /// The stage it belongs to.
    pub stage: Stage,
    /// Absolute path below `/oem` (as written in the manifest).
    pub command: PathBuf,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Wall-clock limit; the whole process group is killed when it expires.
    pub timeout: Duration,
    /// First boot only, or every boot.
    pub run: RunPolicy,
    /// A failed required hook fails its stage.
    pub required: bool,
    /// The capabilities the hook keeps (sorted); all others are dropped.
    pub capabilities: Vec<caps::Capability>,
    /// Extra environment, after the metadata facts.
    pub environment: BTreeMap<String, String>,
    /// Free text for `keel-oem status`.
    pub description: Option<String>,
    /// Line of the hook's `[[hook]]` header, for messages.
    pub line: usize,
}

/// A validated `oem.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The `version` key.
    pub version: i64,
    /// Hooks sorted by name (the order they run in within a stage).
    pub hooks: Vec<Hook>,
}

impl Manifest {
    /// The hooks of one stage, in name order.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &Hook> {
        self.hooks.iter().filter(move |h| h.stage == stage)
    }

    /// Whether a stage has any hook.
    pub fn has_stage(&self, stage: Stage) -> bool {
        self.stage(stage).next().is_some()
    }
}

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The hook's name (or `#N` when it has no usable name).
    pub hook: Option<String>,
    /// The key at fault.
    pub key: Option<String>,
    /// What is wrong, lowercase.
    pub message: String,
}

/// Why a manifest was rejected: every problem, each naming file, line, hook and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file the manifest came from.
    pub file: PathBuf,
    /// At least one problem.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
            if let Some(hook) = &p.hook {
                write!(f, "hook {hook:?}: ")?;
            }
            if let Some(key) = &p.key {
                write!(f, "key `{key}`: ")?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    version: Option<Spanned<i64>>,
    #[serde(default)]
    hook: Vec<Spanned<RawHook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    name: Option<Spanned<String>>,
    stage: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<i64>>,
    run: Option<Spanned<String>>,
    required: Option<bool>,
    capabilities: Option<Vec<Spanned<String>>>,
    environment: Option<BTreeMap<Spanned<String>, String>>,
    description: Option<String>,
}

/// A second, lenient view used only to say which hook a serde error is in.
#[derive(Deserialize)]
struct LenientManifest {
    #[serde(default)]
    hook: Vec<Spanned<toml::Table>>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parse and validate `oem.toml`. `file` is only used in messages.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let err = |problems| ManifestError {
        file: file.to_path_buf(),
        problems,
    };
    let raw: RawManifest = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(err(vec![serde_problem(text, &e)])),
    };
    validate(text, raw).map_err(err)
}

/// Turn a toml/serde error into a problem that names the line, hook and key.
fn serde_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim_end_matches('.').to_string();
    let Some(span) = e.span() else {
        return Problem {
            line: None,
            hook: None,
            key: None,
            message,
        };
    };
    let line = line_of(text, span.start);
    // Which `[[hook]]` header precedes the error, if the document is
    // well-formed enough to tell. Only keys inside a hook table are named.
    let mut hook = None;
    if let Ok(lenient) = toml::from_str::<LenientManifest>(text) {
        let top_level_end = lenient
            .hook
            .first()
            .map(|h| h.span().start)
            .unwrap_or(usize::MAX);
        if span.start >= top_level_end {
            let idx = lenient
                .hook
                .iter()
                .rposition(|h| h.span().start <= span.start);
            if let Some(i) = idx {
                hook = Some(hook_label(lenient.hook[i].get_ref(), i));
            }
        }
    }
    // The key: the word before `=` on the error's line, unless the error
    // points at a table header or the message already names the field.
    let key = if message.starts_with("unknown field") || message.starts_with("missing field") {
        None
    } else {
        text.lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !k.starts_with('['))
    };
    Problem {
        line: Some(line),
        hook,
        key,
        message,
    }
}

fn hook_label(table: &toml::Table, index: usize) -> String {
    match table.get("name").and_then(|v| v.as_str()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("#{}", index + 1),
    }
}

/// A hook name: the journal identifier and a file name, so keep it plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// An environment variable name as POSIX shells accept it.
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Check a hook command path: absolute, below `/oem`, no `.`/`..` components.
fn check_command(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("the command path is empty".into());
    }
    if path.contains('\0') {
        return Err("the command path contains a NUL byte".into());
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!(
            "{path:?} is not an absolute path below {OEM_MOUNT}"
        ));
    }
    let mut comps = p.components();
    comps.next(); // RootDir
    let first = comps.next();
    if first != Some(Component::Normal("oem".as_ref())) {
        return Err(format!("{path:?} is outside {OEM_MOUNT}"));
    }
    let mut depth = 0;
    for c in comps {
        match c {
            Component::Normal(_) => depth += 1,
            _ => return Err(format!("{path:?} must not contain `.` or `..`")),
        }
    }
    // Path::components() folds a trailing `/.`; reject it in the raw text.
    if depth == 0 || path.ends_with('/') || path.contains("/./") || path.ends_with("/.") {
        return Err(format!("{path:?} does not name a file below {OEM_MOUNT}"));
    }
    Ok(p.to_path_buf())
}

fn validate(text: &str, raw: RawManifest) -> Result<Manifest, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut top = |line: Option<usize>, key: &str, message: String| {
        problems.push(Problem {
            line,
            hook: None,
            key: Some(key.to_string()),
            message,
        })
    };
    let version = match &raw.version {
        None => {
            top(
                Some(1),
                "version",
                "missing (this runner reads version = 1)".into(),
            );
            0
        }
        Some(v) if *v.get_ref() != MANIFEST_VERSION => {
            top(
                Some(line_of(text, v.span().start)),
                "version",
                format!(
                    "unsupported version {} (this runner reads version = {MANIFEST_VERSION})",
                    v.get_ref()
                ),
            );
            0
        }
        Some(v) => *v.get_ref(),
    };

    let mut hooks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, spanned) in raw.hook.iter().enumerate() {
        let header_line = line_of(text, spanned.span().start);
        let h = spanned.get_ref();
        let label = match &h.name {
            Some(n) if !n.get_ref().is_empty() => n.get_ref().clone(),
            _ => format!("#{}", index + 1),
        };
        let mut bad = |line: usize, key: &str, message: String| {
            problems.push(Problem {
                line: Some(line),
                hook: Some(label.clone()),
                key: Some(key.to_string()),
                message,
            })
        };
        let at = |s: std::ops::Range<usize>| line_of(text, s.start);

        let name = match &h.name {
            None => {
                bad(header_line, "name", "missing".into());
                None
            }
            Some(n) if !valid_name(n.get_ref()) => {
                bad(
                    at(n.span()),
                    "name",
                    "must be 1-64 characters of A-Z a-z 0-9 - _ . and not start with `.`".into(),
                );
                None
            }
            Some(n) => {
                let line = at(n.span());
                if let Some(first) = seen.get(n.get_ref()) {
                    bad(
                        line,
                        "name",
                        format!("duplicate hook name (first defined at line {first})"),
                    );
                    None
                } else {
                    seen.insert(n.get_ref().clone(), line);
                    Some(n.get_ref().clone())
                }
            }
        };
        let stage = match &h.stage {
            None => {
                bad(header_line, "stage", "missing".into());
                None
            }
            Some(s) => match s.get_ref().parse::<Stage>() {
                Ok(st) => Some(st),
                Err(m) => {
                    bad(at(s.span()), "stage", m);
                    None
                }
            },
        };
        let command = match &h.command {
            None => {
                bad(header_line, "command", "missing".into());
                None
            }
            Some(c) => match c.get_ref().split_first() {
                None => {
                    bad(
                        at(c.span()),
                        "command",
                        "must name a program below /oem".into(),
                    );
                    None
                }
                Some((prog, args)) => match check_command(prog) {
                    Ok(p) => {
                        if args.iter().any(|a| a.contains('\0')) {
                            bad(
                                at(c.span()),
                                "command",
                                "an argument contains a NUL byte".into(),
                            );
                            None
                        } else {
                            Some((p, args.to_vec()))
                        }
                    }
                    Err(m) => {
                        bad(at(c.span()), "command", m);
                        None
                    }
                },
            },
        };
        let timeout = match &h.timeout {
            None => {
                bad(header_line, "timeout", "missing (seconds, 1-3600)".into());
                None
            }
            Some(t) => {
                let secs = *t.get_ref();
                if secs <= 0 {
                    bad(
                        at(t.span()),
                        "timeout",
                        format!("must be at least 1 second, got {secs}"),
                    );
                    None
                } else if secs > MAX_TIMEOUT_SECS {
                    bad(
                        at(t.span()),
                        "timeout",
                        format!("must be at most {MAX_TIMEOUT_SECS} seconds, got {secs}"),
                    );
                    None
                } else {
                    Some(Duration::from_secs(secs.unsigned_abs()))
                }
            }
        };
        let run = match &h.run {
            None => Some(RunPolicy::EveryBoot),
            Some(r) => {
                match r.get_ref().as_str() {
                    "first-boot" => Some(RunPolicy::FirstBoot),
                    "every-boot" => Some(RunPolicy::EveryBoot),
                    other => {
                        bad(
                        at(r.span()),
                        "run",
                        format!("unknown value {other:?} (expected \"first-boot\" or \"every-boot\")"),
                    );
                        None
                    }
                }
            }
        };
        let mut capabilities = Vec::new();
        for c in h.capabilities.iter().flatten() {
            match caps::Capability::from_str(c.get_ref()) {
                Ok(cap) if c.get_ref().starts_with("CAP_") => {
                    if capabilities.contains(&cap) {
                        bad(
                            at(c.span()),
                            "capabilities",
                            format!("{} is listed twice", c.get_ref()),
                        );
                    } else {
                        capabilities.push(cap);
                    }
                }
                _ => bad(
                    at(c.span()),
                    "capabilities",
                    format!(
                        "unknown capability {:?} (expected a name like \"CAP_NET_ADMIN\")",
                        c.get_ref()
                    ),
                ),
            }
        }
        capabilities.sort_by_key(|c| c.index());
        let mut environment = BTreeMap::new();
        for (k, v) in h.environment.iter().flatten() {
            let line = at(k.span());
            let key = k.get_ref();
            if !valid_env_name(key) {
                bad(
                    line,
                    "environment",
                    format!("{key:?} is not a valid variable name"),
                );
            } else if RESERVED_ENV.contains(&key.as_str()) {
                bad(
                    line,
                    "environment",
                    format!("{key} is set by the runner and cannot be overridden"),
                );
            } else if v.contains('\0') {
                bad(
                    line,
                    "environment",
                    format!("the value of {key} contains a NUL byte"),
                );
            } else {
                environment.insert(key.clone(), v.clone());
            }
        }
        if let (Some(name), Some(stage), Some((command, args)), Some(timeout), Some(run)) =
            (name, stage, command, timeout, run)
        {
            hooks.push(Hook {
                name,
                stage,
                command,
                args,
                timeout,
                run,
                required: h.required.unwrap_or(false),
                capabilities,
                environment,
                description: h.description.clone(),
                line: header_line,
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    hooks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest { version, hooks })
}

/// Map a manifest path (`/oem/...`) to where the OEM tree really is (`root`),
/// so `keel-oem check DIR` and tests can use a tree that is not mounted at `/oem`.
pub fn host_path(root: &Path, command: &Path) -> PathBuf {
    match command.strip_prefix(OEM_MOUNT) {
        Ok(rest) => root.join(rest),
        Err(_) => command.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1

[[hook]]
name = "b-second"
stage = "network"
command = ["/oem/bin/fetch", "--quiet"]
timeout = 30
run = "first-boot"
required = true
capabilities = ["CAP_NET_ADMIN", "CAP_CHOWN"]
environment = { SOURCE = "fw_cfg" }

[[hook]]
name = "a-first"
stage = "early"
command = ["/oem/bin/sysctl"]
timeout = 5
"#;

    #[test]
    fn parses_a_good_manifest_sorted_by_name() {
        let m = parse(Path::new("/oem/oem.toml"), GOOD).unwrap();
        assert_eq!(m.version, 1);
        let names: Vec<_> = m.hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a-first", "b-second"]);
        let b = &m.hooks[1];
        assert_eq!(b.stage, Stage::Network);
        assert_eq!(b.command, Path::new("/oem/bin/fetch"));
        assert_eq!(b.args, ["--quiet"]);
        assert_eq!(b.timeout, Duration::from_secs(30));
        assert_eq!(b.run, RunPolicy::FirstBoot);
        assert!(b.required);
        assert_eq!(
            b.capabilities,
            [caps::Capability::CAP_CHOWN, caps::Capability::CAP_NET_ADMIN]
        );
        assert_eq!(
            b.environment.get("SOURCE").map(String::as_str),
            Some("fw_cfg")
        );
        assert_eq!(b.line, 14 - 10);
        let a = &m.hooks[0];
        assert_eq!(a.run, RunPolicy::EveryBoot);
        assert!(!a.required);
        assert!(a.capabilities.is_empty());
        assert!(m.has_stage(Stage::Early) && !m.has_stage(Stage::Late));
    }

    fn hook(body: &str) -> String {
        format!("version = 1\n[[hook]]\n{body}\n")
    }

    const BASE: &str = "name = \"x\"\nstage = \"late\"\ncommand = [\"/oem/bin/x\"]\ntimeout = 3";

    /// Bad manifests and the exact message each must produce.
    #[test]
    fn negative_fixtures() {
        let dup = format!("version = 1\n[[hook]]\n{BASE}\n[[hook]]\n{BASE}\n");
        let cases: Vec<(String, &str)> = vec![
            ("version = 1\n[[hook]\n".into(),
             "f.toml:2: unclosed array table, expected `]`"),
            ("".into(), "f.toml:1: key `version`: missing (this runner reads version = 1)"),
            ("version = 2\n".into(),
             "f.toml:1: key `version`: unsupported version 2 (this runner reads version = 1)"),
            ("version = \"1\"\n".into(),
             "f.toml:1: key `version`: invalid type: string \"1\", expected i64"),
            ("version = 1\nextra = 1\n".into(),
             "f.toml:2: unknown field `extra`, expected `version` or `hook`"),
            (hook(&format!("{BASE}\nbogus = 1")),
             "f.toml:7: hook \"x\": unknown field `bogus`, expected one of `name`, `stage`, `command`, `timeout`, `run`, `required`, `capabilities`, `environment`, `description`"),
            (hook(&BASE.replace("timeout = 3", "timeout = \"3s\"")),
             "f.toml:6: hook \"x\": key `timeout`: invalid type: string \"3s\", expected i64"),
            (dup, "f.toml:8: hook \"x\": key `name`: duplicate hook name (first defined at line 3)"),
            (hook(&BASE.replace("late", "later")),
             "f.toml:4: hook \"x\": key `stage`: unknown stage \"later\" (expected \"early\", \"network\" or \"late\")"),
            (hook(&BASE.replace("/oem/bin/x", "/usr/bin/x")),
             "f.toml:5: hook \"x\": key `command`: \"/usr/bin/x\" is outside /oem"),
            (hook(&BASE.replace("/oem/bin/x", "/oem/../usr/bin/x")),
             "f.toml:5: hook \"x\": key `command`: \"/oem/../usr/bin/x\" must not contain `.` or `..`"),
            (hook(&BASE.replace("/oem/bin/x", "bin/x")),
             "f.toml:5: hook \"x\": key `command`: \"bin/x\" is not an absolute path below /oem"),
            (hook(&BASE.replace("/oem/bin/x", "/oem")),
             "f.toml:5: hook \"x\": key `command`: \"/oem\" does not name a file below /oem"),
            (hook(&BASE.replace("[\"/oem/bin/x\"]", "[]")),
             "f.toml:5: hook \"x\": key `command`: must name a program below /oem"),
            (hook(&BASE.replace("timeout = 3", "timeout = 0")),
             "f.toml:6: hook \"x\": key `timeout`: must be at least 1 second, got 0"),
            (hook(&BASE.replace("timeout = 3", "timeout = 99999")),
             "f.toml:6: hook \"x\": key `timeout`: must be at most 3600 seconds, got 99999"),
            (hook(&BASE.replace("timeout = 3", "")),
             "f.toml:2: hook \"x\": key `timeout`: missing (seconds, 1-3600)"),
            (hook(&BASE.replace("name = \"x\"", "name = \"a b\"")),
             "f.toml:3: hook \"a b\": key `name`: must be 1-64 characters of A-Z a-z 0-9 - _ . and not start with `.`"),
            (hook(&BASE.replace("name = \"x\"\n", "")),
             "f.toml:2: hook \"#1\": key `name`: missing"),
            (hook(&format!("{BASE}\nrun = \"sometimes\"")),
             "f.toml:7: hook \"x\": key `run`: unknown value \"sometimes\" (expected \"first-boot\" or \"every-boot\")"),
            (hook(&format!("{BASE}\ncapabilities = [\"CAP_FLY\"]")),
             "f.toml:7: hook \"x\": key `capabilities`: unknown capability \"CAP_FLY\" (expected a name like \"CAP_NET_ADMIN\")"),
            (hook(&format!("{BASE}\ncapabilities = [\"CAP_CHOWN\", \"CAP_CHOWN\"]")),
             "f.toml:7: hook \"x\": key `capabilities`: CAP_CHOWN is listed twice"),
            (hook(&format!("{BASE}\n[hook.environment]\nKEEL_STAGE = \"x\"")),
             "f.toml:8: hook \"x\": key `environment`: KEEL_STAGE is set by the runner and cannot be overridden"),
            (hook(&format!("{BASE}\n[hook.environment]\n\"1X\" = \"x\"")),
             "f.toml:8: hook \"x\": key `environment`: \"1X\" is not a valid variable name"),
            (hook(&format!("{BASE}\nrequired = \"yes\"")),
             "f.toml:7: hook \"x\": key `required`: invalid type: string \"yes\", expected a boolean"),
            ("version = 1\nhook = 3\n".into(),
             "f.toml:2: key `hook`: invalid type: integer `3`, expected a sequence"),
        ];
        for (input, want) in cases {
            let got = parse(Path::new("f.toml"), &input).unwrap_err().to_string();
            assert_eq!(got, want, "input:\n{input}");
        }
    }

    #[test]
    fn all_problems_are_reported() {
        let text = hook(
            &BASE
                .replace("late", "later")
                .replace("timeout = 3", "timeout = 0"),
        );
        let e = parse(Path::new("f.toml"), &text).unwrap_err();
        assert_eq!(e.problems.len(), 2);
    }

    #[test]
    fn host_path_maps_oem_into_a_tree() {
        assert_eq!(
            host_path(Path::new("/tmp/t"), Path::new("/oem/bin/x")),
            Path::new("/tmp/t/bin/x")
        );
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(s in "\\PC*") {
            let _ = parse(Path::new("f.toml"), &s);
        }

        #[test]
        fn random_hook_fields_never_panic(
            name in "[a-z .\\-]{0,8}",
            stage in "[a-z]{0,8}",
            cmd in "[/a-z.]{0,16}",
            timeout in proptest::num::i64::ANY,
            cap in "[A-Z_]{0,12}",
        ) {
            let text = format!(
                "version = 1\n[[hook]]\nname = {name:?}\nstage = {stage:?}\ncommand = [{cmd:?}]\ntimeout = {timeout}\ncapabilities = [{cap:?}]\n"
            );
            let _ = parse(Path::new("f.toml"), &text);
        }
    }
}
