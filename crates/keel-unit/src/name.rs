//! Unit names as systemd.unit(5) defines them (`unit_name_is_valid()`):
//! `PREFIX.TYPE`, the template `PREFIX@.TYPE` and the instance
//! `PREFIX@INSTANCE.TYPE`; at most 255 bytes; the prefix of
//! `A-Za-z0-9:-_.\`, the instance of those and `@` (the first `@` splits
//! prefix from instance); TYPE one of the eleven unit types. And the
//! escaping of `systemd-escape` (`/` → `-`, other bytes as `\xNN`).
//!
//! Which types a program accepts (keel-oem takes only some) is its own
//! semantics on top.

use std::fmt;

/// systemd's `UNIT_NAME_MAX` less the NUL.
pub const MAX_LEN: usize = 255;

/// The unit types (the suffix after the last `.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitType {
    Service,
    Socket,
    Device,
    Mount,
    Automount,
    Swap,
    Target,
    Path,
    Timer,
    Slice,
    Scope,
}

impl UnitType {
    /// Every type, in systemd's order.
    pub const ALL: [UnitType; 11] = [
        UnitType::Service,
        UnitType::Mount,
        UnitType::Swap,
        UnitType::Socket,
        UnitType::Target,
        UnitType::Device,
        UnitType::Automount,
        UnitType::Timer,
        UnitType::Path,
        UnitType::Slice,
        UnitType::Scope,
    ];

    /// The suffix without its dot (`service`).
    pub fn as_str(self) -> &'static str {
        match self {
            UnitType::Service => "service",
            UnitType::Socket => "socket",
            UnitType::Device => "device",
            UnitType::Mount => "mount",
            UnitType::Automount => "automount",
            UnitType::Swap => "swap",
            UnitType::Target => "target",
            UnitType::Path => "path",
            UnitType::Timer => "timer",
            UnitType::Slice => "slice",
            UnitType::Scope => "scope",
        }
    }

    /// The type for a suffix without its dot.
    pub fn from_suffix(s: &str) -> Option<UnitType> {
        UnitType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for UnitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a unit name is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty unit name")]
    Empty,
    #[error("{0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("{0:?} has no unit type suffix (.service, .socket, …)")]
    NoType(String),
    #[error("{name:?}: unknown unit type .{suffix}")]
    UnknownType { name: String, suffix: String },
    #[error("{0:?} has an empty name before the type or the @")]
    EmptyPrefix(String),
    #[error("{name:?}: character {ch:?} is not allowed in a unit name")]
    BadChar { name: String, ch: char },
    #[error("{0:?} is not a valid instance name")]
    BadInstance(String),
    #[error("{0:?} is not a template (name@.type)")]
    NotTemplate(String),
    #[error("{0:?}: invalid escape sequence")]
    BadEscape(String),
}

/// Characters of a unit name prefix (`VALID_CHARS` in systemd).
fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

/// A valid instance string (`DefaultInstance=`, the part after `@`).
pub fn valid_instance(s: &str) -> bool {
    !s.is_empty() && s.len() < MAX_LEN && s.chars().all(|c| valid_char(c) || c == '@')
}

/// A valid unit name: plain, template or instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitName {
    name: String,
    /// Byte index of the first `@`, if any.
    at: Option<usize>,
    /// Byte index of the last `.` (the type suffix).
    dot: usize,
    ty: UnitType,
}

impl UnitName {
    /// Check a unit name.
    pub fn parse(name: &str) -> Result<UnitName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(NameError::TooLong(name.to_string()));
        }
        let Some(dot) = name.rfind('.') else {
            return Err(NameError::NoType(name.to_string()));
        };
        let suffix = &name[dot + 1..];
        let ty = UnitType::from_suffix(suffix).ok_or_else(|| NameError::UnknownType {
            name: name.to_string(),
            suffix: suffix.to_string(),
        })?;
        if let Some(ch) = name.chars().find(|&c| !valid_char(c) && c != '@') {
            return Err(NameError::BadChar {
                name: name.to_string(),
                ch,
            });
        }
        let at = name[..dot].find('@');
        if at.unwrap_or(dot) == 0 {
            return Err(NameError::EmptyPrefix(name.to_string()));
        }
        Ok(UnitName {
            name: name.to_string(),
            at,
            dot,
            ty,
        })
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The unit type.
    pub fn unit_type(&self) -> UnitType {
        self.ty
    }

    /// The prefix: before the `@` (or the type suffix).
    pub fn prefix(&self) -> &str {
        &self.name[..self.at.unwrap_or(self.dot)]
    }

    /// The instance: `Some("")` for a template, `Some("x")` for an
    /// instance, `None` for a plain unit.
    pub fn instance(&self) -> Option<&str> {
        self.at.map(|a| &self.name[a + 1..self.dot])
    }

    /// A template (`foo@.service`).
    pub fn is_template(&self) -> bool {
        self.instance() == Some("")
    }

    /// An instance of a template (`foo@bar.service`).
    pub fn is_instance(&self) -> bool {
        self.instance().is_some_and(|i| !i.is_empty())
    }

    /// The template of an instance (or the template itself); `None` for a
    /// plain unit.
    pub fn template(&self) -> Option<UnitName> {
        self.at.map(|_| UnitName {
            name: format!("{}@.{}", self.prefix(), self.ty),
            at: Some(self.prefix().len()),
            dot: self.prefix().len() + 1,
            ty: self.ty,
        })
    }

    /// The instance `instance` of this template (or of this instance's
    /// template).
    pub fn with_instance(&self, instance: &str) -> Result<UnitName, NameError> {
        if self.at.is_none() {
            return Err(NameError::NotTemplate(self.name.clone()));
        }
        if !valid_instance(instance) {
            return Err(NameError::BadInstance(instance.to_string()));
        }
        UnitName::parse(&format!("{}@{instance}.{}", self.prefix(), self.ty))
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::str::FromStr for UnitName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

/// `systemd-escape STRING`: `/` becomes `-`; `-`, `\`, a leading `.` and
/// every byte outside `A-Za-z0-9:_.` become `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// `systemd-escape --path PATH`: slashes collapsed and trimmed, `/` alone
/// is `-`.
pub fn escape_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    escape(&parts.join("/"))
}

/// `systemd-escape --unescape`: `\xNN` back to its byte (`-` stays `-`;
/// see [`unescape_path`]).
pub fn unescape(s: &str) -> Result<String, NameError> {
    unescape_with(s, false)
}

/// `systemd-escape --unescape --path`: `-` back to `/`, a leading `/`.
pub fn unescape_path(s: &str) -> Result<String, NameError> {
    if s == "-" {
        return Ok("/".into());
    }
    Ok(format!("/{}", unescape_with(s, true)?))
}

fn unescape_with(s: &str, path: bool) -> Result<String, NameError> {
    let bad = || NameError::BadEscape(s.to_string());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if b.get(i + 1) != Some(&b'x') {
                    return Err(bad());
                }
                let hex = b.get(i + 2..i + 4).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 4;
            }
            b'-' if path => {
                out.push(b'/');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn plain_template_instance() {
        let p = ok("sshd.service");
        assert_eq!((p.prefix(), p.instance()), ("sshd", None));
        let t = ok("getty@.service");
        assert!(t.is_template() && !t.is_instance());
        assert_eq!(t.prefix(), "getty");
        let i = ok("getty@tty1.service");
        assert!(i.is_instance() && !i.is_template());
        assert_eq!(i.instance(), Some("tty1"));
        assert_eq!(i.template().unwrap().as_str(), "getty@.service");
        assert_eq!(t.template().unwrap(), t);
        assert_eq!(
            t.with_instance("tty2").unwrap().as_str(),
            "getty@tty2.service"
        );
        assert_eq!(i.with_instance("x").unwrap().as_str(), "getty@x.service");
        assert_eq!(
            p.with_instance("x").unwrap_err().to_string(),
            "\"sshd.service\" is not a template (name@.type)"
        );
        assert!(t.with_instance("a/b").is_err());
        assert!(t.with_instance("").is_err());
    }

    // Where keel-oem, keel-provision and keel-image disagreed: systemd's
    // answers.
    #[test]
    fn cases_the_consumers_disagreed_on() {
        // keel-oem refused a second `@`: systemd splits at the first, the
        // instance may hold more.
        let i = ok("a@b@c.service");
        assert_eq!((i.prefix(), i.instance()), ("a", Some("b@c")));
        // keel-oem took only seven types; all eleven are unit names (which
        // a program accepts is its semantics).
        for t in UnitType::ALL {
            ok(&format!("x.{t}"));
        }
        // keel-provision took `@.service` (an empty prefix).
        assert_eq!(
            UnitName::parse("@.service").unwrap_err(),
            NameError::EmptyPrefix("@.service".into())
        );
        assert!(UnitName::parse("@x.service").is_err());
        // keel-image looked only for `@.` to spot templates; `x@.y.service`
        // is an instance (`.y`) under systemd's rule (the last dot is the
        // type).
        let odd = ok("x@.y.service");
        assert_eq!(odd.instance(), Some(".y"));
        assert!(odd.is_instance());
        // 255 bytes is the limit.
        ok(&format!("{}.service", "a".repeat(255 - 8)));
        assert!(matches!(
            UnitName::parse(&format!("{}.service", "a".repeat(256 - 8))),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn invalid_names() {
        let cases = [
            ("", "empty unit name"),
            (
                "foo",
                "\"foo\" has no unit type suffix (.service, .socket, …)",
            ),
            ("foo.conf", "\"foo.conf\": unknown unit type .conf"),
            (
                ".service",
                "\".service\" has an empty name before the type or the @",
            ),
            (
                "../x.service",
                "\"../x.service\": character '/' is not allowed in a unit name",
            ),
            (
                "a b.service",
                "\"a b.service\": character ' ' is not allowed in a unit name",
            ),
            (
                "%i.service",
                "\"%i.service\": character '%' is not allowed in a unit name",
            ),
        ];
        for (name, want) in cases {
            assert_eq!(UnitName::parse(name).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn escaping_as_systemd_escape() {
        assert_eq!(escape("foo-bar/baz"), "foo\\x2dbar-baz");
        assert_eq!(escape(".hidden"), "\\x2ehidden");
        assert_eq!(escape("a b"), "a\\x20b");
        assert_eq!(escape_path("/dev/vda1"), "dev-vda1");
        assert_eq!(escape_path("//var//lib/"), "var-lib");
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("/srv/my-data"), "srv-my\\x2ddata");
        assert_eq!(unescape("foo\\x2dbar-baz").unwrap(), "foo-bar-baz");
        assert_eq!(unescape_path("srv-my\\x2ddata").unwrap(), "/srv/my-data");
        assert_eq!(unescape_path("-").unwrap(), "/");
        assert!(unescape("a\\x2").is_err());
        assert!(unescape("a\\y20").is_err());
        ok(&format!("{}.mount", escape_path("/var/lib/docker")));
    }

    proptest::proptest! {
        #[test]
        fn names_never_panic(s in "\\PC{0,300}") {
            if let Ok(n) = UnitName::parse(&s) {
                proptest::prop_assert_eq!(n.as_str(), s.as_str());
                if let Some(t) = n.template() {
                    proptest::prop_assert!(t.is_template());
                }
            }
        }
        #[test]
        fn escape_round_trips(s in "[a-z/ .\\-_é]{0,40}") {
            proptest::prop_assert_eq!(unescape(&escape(&s)).unwrap(), s.replace('/', "-"));
        }
    }
}
