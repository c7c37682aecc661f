//! toolbox configuration: the CoreOS `KEY=value` files, read as data.
//!
//! CoreOS's toolbox `source`d `/etc/default/toolbox` and `~/.toolboxrc` with
//! bash. Keel reads the same files without a shell: each statement is an
//! assignment `NAME=value` (optionally prefixed by `export`), the value is one
//! shell word with single quotes, double quotes, backslash escapes and
//! `$NAME`/`${NAME}` expansion of variables assigned earlier (plus `$HOME` and
//! `$USER`); `#` starts a comment. Anything a shell would *execute* (command
//! substitution, pipes, other commands) is an error naming the file and line.
//!
//! Three steps, as elsewhere in Keel: [`parse`] turns one file into
//! assignments, [`Layers`] merges the files in order (later wins), and
//! [`Settings::from_layers`] validates the merged values into real types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::reference::{ImageSource, ReferenceError};

/// The vendor default shipped in the image.
pub const VENDOR_CONFIG: &str = keel_contract::paths::TOOLBOX_DEFAULTS;
/// The administrator's defaults (same name as CoreOS).
pub const SYSTEM_CONFIG: &str = "/etc/default/toolbox";

/// Built-in defaults, equal to the vendor file `overlay/share/keel/toolbox`.
pub const DEFAULT_IMAGE: &str = "docker.io/library/debian";
/// Default tag for [`DEFAULT_IMAGE`].
pub const DEFAULT_TAG: &str = "bookworm";
/// Default place for toolbox trees (CoreOS's).
pub const DEFAULT_DIRECTORY: &str = "/var/lib/toolbox";
/// Default binds: the host's `/`, `/usr` and `/run` under `/media/root`.
pub const DEFAULT_BIND: &str =
    "--bind=/:/media/root --bind=/usr:/media/root/usr --bind=/run:/media/root/run";

/// Variables toolbox understands; other names are accepted (they can be used
/// in `$NAME` expansion) but warned about.
pub const KNOWN_KEYS: &[&str] = &[
    "TOOLBOX_DOCKER_IMAGE",
    "TOOLBOX_DOCKER_TAG",
    "TOOLBOX_USER",
    "TOOLBOX_DIRECTORY",
    "TOOLBOX_BIND",
    "TOOLBOX_ENV",
    "TOOLBOX_NAME",
    "TOOLBOX_LOCAL_IMAGE",
];

/// A configuration error; every variant names the file and line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be parsed.
    #[error("{file}:{line}: {msg}")]
    Syntax {
        /// File name as given.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A value parsed but is not valid for its variable.
    #[error("{file}:{line}: {key}: {msg}")]
    Invalid {
        /// Where the value was set.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The variable.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// Reading the file failed (other than it not existing).
    #[error("reading {file}: {msg}")]
    Read {
        /// File name.
        file: String,
        /// The I/O error, rendered.
        msg: String,
    },
}

/// One assignment from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Variable name.
    pub key: String,
    /// Value after quote removal and expansion.
    pub value: String,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

/// Parse one file's text. `vars` holds the variables visible for `$NAME`
/// expansion (earlier files and the environment's `HOME`/`USER`); the file's
/// own assignments are added to it as they are read.
pub fn parse(
    file: &str,
    text: &str,
    vars: &mut BTreeMap<String, String>,
) -> Result<Vec<Assignment>, ConfigError> {
    let mut p = Parser {
        file,
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        p.skip_blank_and_comments();
        if p.peek().is_none() {
            return Ok(out);
        }
        let line = p.line;
        let mut name = p.name();
        if name == "export" && matches!(p.peek(), Some(' ' | '\t')) {
            p.skip_spaces();
            name = p.name();
        }
        if name.is_empty() || p.peek() != Some('=') {
            return Err(p.err(line, "expected a KEY=value assignment (toolbox reads its config as data; shell commands are not run)".into()));
        }
        p.pos += 1;
        let value = p.word(vars, line)?;
        // After the value: spaces, an optional comment, then end of line or `;`.
        p.skip_spaces();
        match p.peek() {
            None | Some('\n') => {}
            Some(';') => p.pos += 1,
            Some('#') => p.skip_comment(),
            Some(c) => {
                return Err(p.err(
                    p.line,
                    format!(
                    "unexpected {c:?} after the value of {name} (quote values that contain spaces)"
                ),
                ))
            }
        }
        vars.insert(name.clone(), value.clone());
        out.push(Assignment {
            key: name,
            value,
            line,
        });
    }
}

struct Parser<'a> {
    file: &'a str,
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, msg: String) -> ConfigError {
        ConfigError::Syntax {
            file: self.file.to_string(),
            line,
            msg,
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some('\n')) {
            self.pos += 1;
        }
    }

    fn skip_blank_and_comments(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | ';') => self.pos += 1,
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some('\\') if self.chars.get(self.pos + 1) == Some(&'\n') => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    fn name(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (!s.is_empty() && c.is_ascii_digit());
            if !ok {
                break;
            }
            s.push(c);
            self.pos += 1;
        }
        s
    }

    /// `$NAME` or `${NAME}`; the `$` is already consumed.
    fn expansion(
        &mut self,
        vars: &BTreeMap<String, String>,
        out: &mut String,
    ) -> Result<(), ConfigError> {
        let line = self.line;
        match self.peek() {
            Some('(') => Err(self.err(
                line,
                "command substitution $( ) is not supported: the config is data, not a script"
                    .into(),
            )),
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() || self.peek() != Some('}') {
                    return Err(self.err(line, "only ${NAME} expansion is supported".into()));
                }
                self.pos += 1;
                self.lookup(vars, &name, line, out)
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let name = self.name();
                self.lookup(vars, &name, line, out)
            }
            // A lone `$` is literal, as in the shell.
            _ => {
                out.push('$');
                Ok(())
            }
        }
    }

    fn lookup(
        &self,
        vars: &BTreeMap<String, String>,
        name: &str,
        line: usize,
        out: &mut String,
    ) -> Result<(), ConfigError> {
        match vars.get(name) {
            Some(v) => {
                out.push_str(v);
                Ok(())
            }
            None => Err(self.err(
                line,
                format!("${name} is not set (only variables assigned earlier, HOME and USER can be expanded)"),
            )),
        }
    }

    /// One shell word: the value of an assignment.
    fn word(
        &mut self,
        vars: &BTreeMap<String, String>,
        line: usize,
    ) -> Result<String, ConfigError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some(' ' | '\t' | '\n' | '\r' | ';') => return Ok(out),
                Some('\'') => {
                    let start = self.line;
                    self.pos += 1;
                    loop {
                        match self.bump() {
                            None => return Err(self.err(start, "unterminated single quote".into())),
                            Some('\'') => break,
                            Some(c) => out.push(c),
                        }
                    }
                }
                Some('"') => {
                    let start = self.line;
                    self.pos += 1;
                    loop {
                        match self.bump() {
                            None => {
                                return Err(self.err(start, "unterminated double quote".into()))
                            }
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                None => {
                                    return Err(self.err(start, "unterminated double quote".into()))
                                }
                                Some('\n') => {}
                                Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                                Some(c) => {
                                    out.push('\\');
                                    out.push(c);
                                }
                            },
                            Some('$') => self.expansion(vars, &mut out)?,
                            Some('`') => {
                                return Err(self.err(self.line, "command substitution ` ` is not supported: the config is data, not a script".into()))
                            }
                            Some(c) => out.push(c),
                        }
                    }
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.bump() {
                        None => return Err(self.err(self.line, "backslash at end of file".into())),
                        Some('\n') => {}
                        Some(c) => out.push(c),
                    }
                }
                Some('$') => {
                    self.pos += 1;
                    self.expansion(vars, &mut out)?;
                }
                Some('`') => return Err(self.err(
                    line,
                    "command substitution ` ` is not supported: the config is data, not a script"
                        .into(),
                )),
                Some(c @ ('|' | '&' | '<' | '>' | '(' | ')')) => {
                    return Err(self.err(
                        self.line,
                        format!(
                        "unquoted {c:?} in the value: the config is data, not a script; quote it"
                    ),
                    ))
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
    }
}

/// Split a value into words the way CoreOS users expected `TOOLBOX_BIND` and
/// `TOOLBOX_ENV` to split, but honouring quotes inside the value, so a bind
/// with a space can be written `--bind='/srv/my data:/data'`.
pub fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = value.chars();
    while let Some(c) = it.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        None => return Err("unterminated single quote".into()),
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        None => return Err("unterminated double quote".into()),
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            None => return Err("unterminated double quote".into()),
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                        },
                        Some(c) => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match it.next() {
                    None => return Err("backslash at the end".into()),
                    Some(c) => cur.push(c),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Where a merged value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

/// Config files merged in order; later files win per variable.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    values: BTreeMap<String, (String, Origin)>,
    vars: BTreeMap<String, String>,
    /// Warnings (unknown variables), already formatted with file and line.
    pub warnings: Vec<String>,
    /// The files looked at, in order, and whether each existed.
    pub files: Vec<(String, bool)>,
}

impl Layers {
    /// Start with the environment variables that may be expanded.
    pub fn new(home: Option<&str>, user: Option<&str>) -> Self {
        let mut vars = BTreeMap::new();
        if let Some(h) = home {
            vars.insert("HOME".to_string(), h.to_string());
        }
        if let Some(u) = user {
            vars.insert("USER".to_string(), u.to_string());
        }
        Layers {
            vars,
            ..Default::default()
        }
    }

    /// Add one file's text.
    pub fn add_text(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        for a in parse(file, text, &mut self.vars)? {
            if !KNOWN_KEYS.contains(&a.key.as_str()) {
                self.warnings.push(format!(
                    "{file}:{}: unknown variable {} ignored",
                    a.line, a.key
                ));
                continue;
            }
            let origin = Origin {
                file: file.to_string(),
                line: a.line,
            };
            self.values.insert(a.key, (a.value, origin));
        }
        Ok(())
    }

    /// Add a file if it exists.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
                    file: file.clone(),
                    line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count(),
                    msg: "not valid UTF-8".into(),
                })?;
                self.files.push((file.clone(), true));
                self.add_text(&file, &text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.push((file, false));
                Ok(())
            }
            Err(e) => Err(ConfigError::Read {
                file,
                msg: e.to_string(),
            }),
        }
    }

    /// The merged value of a variable and where it was set.
    pub fn get(&self, key: &str) -> Option<(&str, &Origin)> {
        self.values.get(key).map(|(v, o)| (v.as_str(), o))
    }
}

/// A bind mount passed to systemd-nspawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// `--bind-ro` instead of `--bind`.
    pub read_only: bool,
    /// nspawn's `SRC[:DST[:OPTIONS]]`, passed through as one argument.
    pub spec: String,
}

impl Bind {
    /// The nspawn argument.
    pub fn arg(&self) -> String {
        if self.read_only {
            format!("--bind-ro={}", self.spec)
        } else {
            format!("--bind={}", self.spec)
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image to pull.
    pub image: ImageSource,
    /// The tag (registry) or reference name (OCI layout/archive).
    pub tag: String,
    /// A local source used when the registry cannot be reached.
    pub local_image: Option<ImageSource>,
    /// User inside the container.
    pub user: String,
    /// Where trees live.
    pub directory: PathBuf,
    /// nspawn binds.
    pub binds: Vec<Bind>,
    /// Environment for the container.
    pub env: Vec<(String, String)>,
    /// The toolbox (tree and machine) name.
    pub name: String,
}

/// Command-line overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--image`.
    pub image: Option<String>,
    /// `--tag`.
    pub tag: Option<String>,
}

fn invalid(o: &Origin, key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: o.file.clone(),
        line: o.line,
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// CoreOS's machine name rule: characters outside `[A-Za-z0-9_.-]` become
/// `_`; Keel also keeps it a valid machine name (at most 64 characters).
pub fn sanitize_name(raw: &str) -> String {
    // The name is also the systemd-nspawn machine name, which must be a valid
    // hostname: letters, digits, '-' and single dots ('_' is refused by nspawn
    // with "Invalid machine name").
    let mut s = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '-'
        };
        if c == '.' && (s.is_empty() || s.ends_with('.')) {
            continue;
        }
        s.push(c);
    }
    let s = s.trim_end_matches('.').to_string();
    if s.len() <= 64 {
        return s;
    }
    use sha2::Digest as _;
    let h = hex::encode(sha2::Sha256::digest(s.as_bytes()));
    // `s` is ASCII (every other char became '-'), so byte slicing is safe.
    format!("{}-{}", &s[..55], &h[..8])
}

impl Settings {
    /// Validate the merged layers. `user` names the invoking user for the
    /// CoreOS default name `USER-IMAGE-TAG`.
    pub fn from_layers(
        layers: &Layers,
        overrides: &Overrides,
        user: &str,
    ) -> Result<Settings, ConfigError> {
        let cli = Origin {
            file: "command line".into(),
            line: 0,
        };
        let builtin = Origin {
            file: "built-in default".into(),
            line: 0,
        };
        let get = |key: &str, default: &str| -> (String, Origin) {
            match layers.get(key) {
                Some((v, o)) => (v.to_string(), o.clone()),
                None => (default.to_string(), builtin.clone()),
            }
        };
        let (mut image_raw, mut image_origin) = get("TOOLBOX_DOCKER_IMAGE", DEFAULT_IMAGE);
        if let Some(i) = &overrides.image {
            image_raw = i.clone();
            image_origin = cli.clone();
        }
        let (mut tag, mut tag_origin) = get("TOOLBOX_DOCKER_TAG", DEFAULT_TAG);
        if let Some(t) = &overrides.tag {
            tag = t.clone();
            tag_origin = cli.clone();
        }
        let map_ref = |o: &Origin, key: &str, e: ReferenceError| invalid(o, key, e.to_string());
        let image = ImageSource::parse(&image_raw)
            .map_err(|e| map_ref(&image_origin, "TOOLBOX_DOCKER_IMAGE", e))?;
        if let ImageSource::Registry(r) = &image {
            if r.digest.is_none() {
                crate::reference::validate_tag(&tag)
                    .map_err(|e| map_ref(&tag_origin, "TOOLBOX_DOCKER_TAG", e))?;
            }
        }
        let local_image = match layers.get("TOOLBOX_LOCAL_IMAGE") {
            Some(("", _)) | None => None,
            Some((v, o)) => {
                let src =
                    ImageSource::parse(v).map_err(|e| map_ref(o, "TOOLBOX_LOCAL_IMAGE", e))?;
                if matches!(src, ImageSource::Registry(_)) {
                    return Err(invalid(
                        o,
                        "TOOLBOX_LOCAL_IMAGE",
                        "must be a local source (oci:DIR, oci-archive:FILE or docker-archive:FILE)",
                    ));
                }
                Some(src)
            }
        };
        let (user_v, user_o) = get("TOOLBOX_USER", "root");
        if user_v.is_empty()
            || user_v
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '/' || c.is_control())
        {
            return Err(invalid(
                &user_o,
                "TOOLBOX_USER",
                format!("{user_v:?} is not a user name"),
            ));
        }
        let (dir_v, dir_o) = get("TOOLBOX_DIRECTORY", DEFAULT_DIRECTORY);
        let directory = PathBuf::from(&dir_v);
        if !directory.is_absolute() || dir_v.split('/').any(|c| c == "..") {
            return Err(invalid(
                &dir_o,
                "TOOLBOX_DIRECTORY",
                format!("{dir_v:?} must be an absolute path without '..'"),
            ));
        }
        let (bind_v, bind_o) = get("TOOLBOX_BIND", DEFAULT_BIND);
        let mut binds = Vec::new();
        for w in split_words(&bind_v).map_err(|e| invalid(&bind_o, "TOOLBOX_BIND", e))? {
            let (read_only, spec) = if let Some(s) = w.strip_prefix("--bind=") {
                (false, s)
            } else if let Some(s) = w.strip_prefix("--bind-ro=") {
                (true, s)
            } else {
                return Err(invalid(
                    &bind_o,
                    "TOOLBOX_BIND",
                    format!("{w:?} is not --bind=SRC[:DST] or --bind-ro=SRC[:DST]"),
                ));
            };
            if !spec.starts_with('/') && !spec.starts_with("+/") {
                return Err(invalid(
                    &bind_o,
                    "TOOLBOX_BIND",
                    format!("{w:?}: the source must be an absolute path"),
                ));
            }
            binds.push(Bind {
                read_only,
                spec: spec.to_string(),
            });
        }
        let (env_v, env_o) = get("TOOLBOX_ENV", "");
        let mut env = Vec::new();
        for w in split_words(&env_v).map_err(|e| invalid(&env_o, "TOOLBOX_ENV", e))? {
            let kv = w.strip_prefix("--setenv=").unwrap_or(&w);
            let Some((k, v)) = kv.split_once('=') else {
                return Err(invalid(
                    &env_o,
                    "TOOLBOX_ENV",
                    format!("{w:?} is not --setenv=KEY=VALUE or KEY=VALUE"),
                ));
            };
            let valid_key = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid_key {
                return Err(invalid(
                    &env_o,
                    "TOOLBOX_ENV",
                    format!("{k:?} is not a valid variable name"),
                ));
            }
            env.push((k.to_string(), v.to_string()));
        }
        let name = match layers.get("TOOLBOX_NAME") {
            Some((v, o)) if !v.is_empty() => {
                let s = sanitize_name(v);
                if s != v {
                    return Err(invalid(
                        o,
                        "TOOLBOX_NAME",
                        format!("{v:?} is not a valid name (letters, digits, '.', '-'; at most 64; not starting or ending with '.')"),
                    ));
                }
                s
            }
            _ => {
                let tag_part = match &image {
                    ImageSource::Registry(r) if r.digest.is_some() => "digest",
                    _ => tag.as_str(),
                };
                sanitize_name(&format!("{user}-{image_raw}-{tag_part}"))
            }
        };
        Ok(Settings {
            image,
            tag,
            local_image,
            user: user_v,
            directory,
            binds,
            env,
            name,
        })
    }
}

/// One row of `toolbox config`: a setting, its value, where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Setting name (`image`, `bind`, …).
    pub setting: String,
    /// Its effective value.
    pub value: String,
    /// `FILE:LINE (VARIABLE)`, `command line (--image)`, `built-in default`…
    pub from: String,
}

impl Row {
    /// A row.
    pub fn new(setting: &str, value: impl Into<String>, from: impl Into<String>) -> Row {
        Row {
            setting: setting.to_string(),
            value: value.into(),
            from: from.into(),
        }
    }
}

fn origin_text(layers: &Layers, key: &str, cli: Option<&str>) -> String {
    if let Some(flag) = cli {
        return format!("command line ({flag})");
    }
    match layers.get(key) {
        Some((_, o)) => format!("{}:{} ({key})", o.file, o.line),
        None => format!("built-in default ({key} not set)"),
    }
}

/// The effective settings and, for each, where it came from: what
/// `toolbox config` prints. Validates exactly as a run would (the same
/// error for a bad value); nothing is pulled or run.
pub fn report(
    layers: &Layers,
    overrides: &Overrides,
    user: &str,
) -> Result<(Settings, Vec<Row>), ConfigError> {
    let s = Settings::from_layers(layers, overrides, user)?;
    let img_cli = overrides.image.as_ref().map(|_| "--image");
    let tag_cli = overrides.tag.as_ref().map(|_| "--tag");
    let mut rows = vec![
        Row::new(
            "image",
            s.image.to_string(),
            origin_text(layers, "TOOLBOX_DOCKER_IMAGE", img_cli),
        ),
        Row::new(
            "tag",
            s.tag.clone(),
            origin_text(layers, "TOOLBOX_DOCKER_TAG", tag_cli),
        ),
        Row::new(
            "local image",
            s.local_image
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
            origin_text(layers, "TOOLBOX_LOCAL_IMAGE", None),
        ),
        Row::new(
            "user",
            s.user.clone(),
            origin_text(layers, "TOOLBOX_USER", None),
        ),
        Row::new(
            "directory",
            s.directory.display().to_string(),
            origin_text(layers, "TOOLBOX_DIRECTORY", None),
        ),
        Row::new(
            "name",
            s.name.clone(),
            match layers.get("TOOLBOX_NAME") {
                Some((v, _)) if !v.is_empty() => origin_text(layers, "TOOLBOX_NAME", None),
                _ => format!("derived: invoking user {user}, image, tag (TOOLBOX_NAME not set)"),
            },
        ),
    ];
    let bind_from = origin_text(layers, "TOOLBOX_BIND", None);
    for b in &s.binds {
        rows.push(Row::new("bind", b.arg(), bind_from.clone()));
    }
    if s.binds.is_empty() {
        rows.push(Row::new("bind", "-", bind_from));
    }
    let env_from = origin_text(layers, "TOOLBOX_ENV", None);
    for (k, v) in &s.env {
        rows.push(Row::new("env", format!("{k}={v}"), env_from.clone()));
    }
    if s.env.is_empty() {
        rows.push(Row::new("env", "-", env_from));
    }
    Ok((s, rows))
}

/// Render rows in aligned columns, then the files read and the warnings.
pub fn render_report(rows: &[Row], files: &[(String, bool)], warnings: &[String]) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.setting.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let w1 = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!("{:<w0$}  {:<w1$}  FROM\n", "SETTING", "VALUE");
    for r in rows {
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {}\n",
            r.setting, r.value, r.from
        ));
    }
    if !files.is_empty() {
        out.push_str("\nconfig files, in order (later wins):\n");
        for (f, exists) in files {
            let state = if *exists { "read" } else { "absent" };
            out.push_str(&format!("  {f} ({state})\n"));
        }
    }
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// Read the standard files: vendor, `/etc/default/toolbox`, `~/.toolboxrc`.
pub fn load_standard(home: Option<&str>, user: Option<&str>) -> Result<Layers, ConfigError> {
    let mut layers = Layers::new(home, user);
    layers.add_file(Path::new(VENDOR_CONFIG))?;
    layers.add_file(Path::new(SYSTEM_CONFIG))?;
    if let Some(h) = home {
        layers.add_file(&Path::new(h).join(".toolboxrc"))?;
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<(String, String)> {
        let mut vars = BTreeMap::new();
        vars.insert("HOME".into(), "/home/core".into());
        parse("rc", text, &mut vars)
            .unwrap()
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    #[test]
    fn coreos_default_file_parses() {
        let text = r#"# comment
TOOLBOX_DOCKER_IMAGE=fedora
TOOLBOX_DOCKER_TAG=latest
TOOLBOX_USER=root
TOOLBOX_DIRECTORY="/var/lib/toolbox"
TOOLBOX_BIND="--bind=/:/media/root --bind=/usr:/media/root/usr --bind=/run:/media/root/run"
# Ex: "--setenv=KEY=VALUE"
TOOLBOX_ENV=""
"#;
        let got = parse_ok(text);
        assert_eq!(got[0], ("TOOLBOX_DOCKER_IMAGE".into(), "fedora".into()));
        assert_eq!(
            got[3],
            ("TOOLBOX_DIRECTORY".into(), "/var/lib/toolbox".into())
        );
        assert_eq!(got[4].1, DEFAULT_BIND);
        assert_eq!(got[5], ("TOOLBOX_ENV".into(), String::new()));
    }

    #[test]
    fn quoting_escapes_expansion() {
        let got = parse_ok(
            "export A='x y'  # c\nB=\"$A \\\"q\\\" \\$HOME\"\nC=${HOME}/a\\ b;D=a'b'\"c\"\nE=\"multi\nline\"\nF=\\\nG=1\n",
        );
        assert_eq!(
            got,
            vec![
                ("A".into(), "x y".into()),
                ("B".into(), "x y \"q\" $HOME".into()),
                ("C".into(), "/home/core/a b".into()),
                ("D".into(), "abc".into()),
                ("E".into(), "multi\nline".into()),
                ("F".into(), "G=1".into()),
            ]
        );
    }

    #[test]
    fn bad_input_fixtures() {
        let cases: &[(&str, &str)] = &[
            ("A=$(id)\n", "rc:1: command substitution $( ) is not supported: the config is data, not a script"),
            ("\nA=`id`\n", "rc:2: command substitution ` ` is not supported: the config is data, not a script"),
            ("A=1\nrm -rf /\n", "rc:2: expected a KEY=value assignment (toolbox reads its config as data; shell commands are not run)"),
            ("A=\"abc\n\n", "rc:1: unterminated double quote"),
            ("A='abc\n", "rc:1: unterminated single quote"),
            ("A=x y\n", "rc:1: unexpected 'y' after the value of A (quote values that contain spaces)"),
            ("A=$NOPE\n", "rc:1: $NOPE is not set (only variables assigned earlier, HOME and USER can be expanded)"),
            ("A=${X-y}\n", "rc:1: only ${NAME} expansion is supported"),
            ("A=a|b\n", "rc:1: unquoted '|' in the value: the config is data, not a script; quote it"),
            ("1A=b\n", "rc:1: expected a KEY=value assignment (toolbox reads its config as data; shell commands are not run)"),
            ("A =b\n", "rc:1: expected a KEY=value assignment (toolbox reads its config as data; shell commands are not run)"),
            ("A=b\\", "rc:1: backslash at end of file"),
        ];
        for (text, want) in cases {
            let mut vars = BTreeMap::new();
            let err = parse("rc", text, &mut vars).unwrap_err();
            assert_eq!(err.to_string(), *want, "input {text:?}");
        }
    }

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        let mut l = Layers::new(Some("/root"), Some("core"));
        l.add_text("/etc/default/toolbox", text)?;
        Settings::from_layers(&l, &Overrides::default(), "core")
    }

    #[test]
    fn settings_defaults_and_name() {
        let s = settings("").unwrap();
        assert_eq!(s.name, "core-docker.io-library-debian-bookworm");
        assert_eq!(s.directory, PathBuf::from("/var/lib/toolbox"));
        assert_eq!(s.binds.len(), 3);
        assert_eq!(s.binds[0].arg(), "--bind=/:/media/root");
        assert_eq!(s.user, "root");
        let s = settings("TOOLBOX_DOCKER_IMAGE=fedora\nTOOLBOX_DOCKER_TAG=39\n").unwrap();
        assert_eq!(s.name, "core-fedora-39");
    }

    #[test]
    fn bind_with_space_and_env() {
        let s = settings(
            "TOOLBOX_BIND=\"--bind=/:/media/root --bind-ro='/srv/my data:/data'\"\nTOOLBOX_ENV='--setenv=A=1 B=\"two words\"'\n",
        )
        .unwrap();
        assert_eq!(s.binds[1].arg(), "--bind-ro=/srv/my data:/data");
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
    }

    #[test]
    fn later_file_wins_and_cli_overrides() {
        let mut l = Layers::new(None, None);
        l.add_text(
            "/usr/share/keel/toolbox",
            "TOOLBOX_DOCKER_TAG=a\nTOOLBOX_USER=root\n",
        )
        .unwrap();
        l.add_text("/root/.toolboxrc", "TOOLBOX_DOCKER_TAG=b\nFOO=1\n")
            .unwrap();
        assert_eq!(
            l.warnings,
            vec!["/root/.toolboxrc:2: unknown variable FOO ignored"]
        );
        let s = Settings::from_layers(&l, &Overrides::default(), "root").unwrap();
        assert_eq!(s.tag, "b");
        let o = Overrides {
            image: Some("oci-archive:/oem/toolbox.tar".into()),
            tag: Some("c".into()),
        };
        let s = Settings::from_layers(&l, &o, "root").unwrap();
        assert_eq!(s.tag, "c");
        assert!(matches!(s.image, ImageSource::OciArchive(_)));
    }

    #[test]
    fn invalid_values_name_file_line_key() {
        let cases: &[(&str, &str)] = &[
            ("\nTOOLBOX_BIND=--volume=/x\n", "/etc/default/toolbox:2: TOOLBOX_BIND: \"--volume=/x\" is not --bind=SRC[:DST] or --bind-ro=SRC[:DST]"),
            ("TOOLBOX_BIND=--bind=rel:/x\n", "/etc/default/toolbox:1: TOOLBOX_BIND: \"--bind=rel:/x\": the source must be an absolute path"),
            ("TOOLBOX_ENV=novalue\n", "/etc/default/toolbox:1: TOOLBOX_ENV: \"novalue\" is not --setenv=KEY=VALUE or KEY=VALUE"),
            ("TOOLBOX_DIRECTORY=var/lib\n", "/etc/default/toolbox:1: TOOLBOX_DIRECTORY: \"var/lib\" must be an absolute path without '..'"),
            ("TOOLBOX_USER='a b'\n", "/etc/default/toolbox:1: TOOLBOX_USER: \"a b\" is not a user name"),
            ("TOOLBOX_NAME=../x\n", "/etc/default/toolbox:1: TOOLBOX_NAME: \"../x\" is not a valid name (letters, digits, '.', '-'; at most 64; not starting or ending with '.')"),
            ("TOOLBOX_DOCKER_TAG='a b'\n", "/etc/default/toolbox:1: TOOLBOX_DOCKER_TAG: invalid tag \"a b\""),
            ("TOOLBOX_DOCKER_IMAGE=Fedora\n", "/etc/default/toolbox:1: TOOLBOX_DOCKER_IMAGE: invalid repository name \"Fedora\" (lowercase letters, digits and separators . _ - /)"),
            ("TOOLBOX_LOCAL_IMAGE=fedora\n", "/etc/default/toolbox:1: TOOLBOX_LOCAL_IMAGE: must be a local source (oci:DIR, oci-archive:FILE or docker-archive:FILE)"),
        ];
        for (text, want) in cases {
            assert_eq!(
                settings(text).unwrap_err().to_string(),
                *want,
                "input {text:?}"
            );
        }
    }

    #[test]
    fn vendor_file_equals_builtin_defaults() {
        let vendor = include_str!("../../../overlay/share/keel/toolbox");
        let mut l = Layers::new(Some("/root"), Some("core"));
        l.add_text(VENDOR_CONFIG, vendor).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let from_file = Settings::from_layers(&l, &Overrides::default(), "core").unwrap();
        let builtin =
            Settings::from_layers(&Layers::new(None, None), &Overrides::default(), "core").unwrap();
        assert_eq!(from_file, builtin);
    }

    #[test]
    fn config_report_names_origins() {
        let mut l = Layers::new(Some("/root"), Some("core"));
        l.add_text(
            "/etc/default/toolbox",
            "TOOLBOX_DOCKER_IMAGE=fedora\nTOOLBOX_DOCKER_TAG=39\nTOOLBOX_ENV='A=1 B=2'\n",
        )
        .unwrap();
        l.add_text(
            "/root/.toolboxrc",
            "\nTOOLBOX_BIND=--bind-ro=/srv\nTOOLBOX_USR=typo\n",
        )
        .unwrap();
        l.files = vec![
            ("/usr/share/keel/toolbox".into(), false),
            ("/etc/default/toolbox".into(), true),
            ("/root/.toolboxrc".into(), true),
        ];
        let o = Overrides {
            image: None,
            tag: Some("40".into()),
        };
        let (s, rows) = report(&l, &o, "core").unwrap();
        assert_eq!(s.tag, "40");
        let text = render_report(&rows, &l.files, &l.warnings);
        let want = "\
SETTING      VALUE                     FROM
image        docker.io/library/fedora  /etc/default/toolbox:1 (TOOLBOX_DOCKER_IMAGE)
tag          40                        command line (--tag)
local image  -                         built-in default (TOOLBOX_LOCAL_IMAGE not set)
user         root                      built-in default (TOOLBOX_USER not set)
directory    /var/lib/toolbox          built-in default (TOOLBOX_DIRECTORY not set)
name         core-fedora-40            derived: invoking user core, image, tag (TOOLBOX_NAME not set)
bind         --bind-ro=/srv            /root/.toolboxrc:2 (TOOLBOX_BIND)
env          A=1                       /etc/default/toolbox:3 (TOOLBOX_ENV)
env          B=2                       /etc/default/toolbox:3 (TOOLBOX_ENV)

config files, in order (later wins):
  /usr/share/keel/toolbox (absent)
  /etc/default/toolbox (read)
  /root/.toolboxrc (read)
warning: /root/.toolboxrc:3: unknown variable TOOLBOX_USR ignored
";
        assert_eq!(text, want);
        // A bad value is the same error a run gives.
        let mut bad = Layers::new(None, None);
        bad.add_text("rc", "TOOLBOX_USER='a b'\n").unwrap();
        assert_eq!(
            report(&bad, &Overrides::default(), "u")
                .unwrap_err()
                .to_string(),
            "rc:1: TOOLBOX_USER: \"a b\" is not a user name"
        );
    }

    #[test]
    fn long_names_are_shortened() {
        let n = sanitize_name(&"a".repeat(100));
        assert_eq!(n.len(), 64);
        assert_eq!(sanitize_name("root-x/y:z"), "root-x-y-z");
        assert_eq!(
            sanitize_name("core-oci-archive:/var/tmp/toolbox.tar-test"),
            "core-oci-archive--var-tmp-toolbox.tar-test"
        );
        assert_eq!(sanitize_name(".a..b_c."), "a.b-c");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let mut vars = BTreeMap::new();
            let _ = parse("rc", &s, &mut vars);
            let _ = split_words(&s);
        }

        #[test]
        fn parser_never_panics_shellish(s in "[A-Z_=\"'\\\\$ {}#\n;a-z()`|]{0,40}") {
            let mut l = Layers::new(Some("/h"), None);
            if l.add_text("rc", &s).is_ok() {
                let _ = Settings::from_layers(&l, &Overrides::default(), "u");
            }
        }
    }
}
