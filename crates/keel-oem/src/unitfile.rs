//! The `[Install]` section of a vendor's unit file, which is all the
//! generator needs to enable it (systemd parses the rest itself).
//!
//! Syntax as in systemd.syntax(7): `[Section]` headers, `Key=Value` lines,
//! `#`/`;` comments, a trailing `\` continues a line. Hand-written because
//! only `[Install]` is needed and the repository has no shared parser yet;
//! every rejected line is named by file and line.

use std::path::{Path, PathBuf};

/// What `[Install]` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=` targets (space-separated lists merged, in order).
    pub wanted_by: Vec<String>,
    /// `RequiredBy=` targets.
    pub required_by: Vec<String>,
    /// `DefaultInstance=` for template units.
    pub default_instance: Option<String>,
    /// Keys the generator does not act on (`Alias=`, `Also=`…), with lines.
    pub ignored: Vec<(usize, String)>,
}

/// A malformed unit file line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct UnitError {
    /// The unit file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Unit types a vendor may ship.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".target",
    ".mount",
    ".automount",
];

/// A plain unit name: `name.type` or `name@.type` / `name@inst.type`.
pub fn valid_unit_name(name: &str) -> bool {
    let Some(suffix) = UNIT_SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
        return false;
    };
    let stem = &name[..name.len() - suffix.len()];
    !stem.is_empty()
        && name.len() <= 255
        && !stem.starts_with('@')
        && stem.matches('@').count() <= 1
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

/// A template unit (`foo@.service`).
pub fn is_template(name: &str) -> bool {
    name.contains("@.")
}

/// Parse a unit file and return its `[Install]` section.
pub fn parse_install(file: &Path, text: &str) -> Result<Install, UnitError> {
    let mut install = Install::default();
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let n = i + 1;
        let err = |message: String| UnitError {
            file: file.to_path_buf(),
            line: n,
            message,
        };
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                return Err(err(format!("malformed section header {line:?}")));
            }
            section = Some(line[1..line.len() - 1].to_string());
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => {
                    line.push(' ');
                    line.push_str(next.trim());
                }
                None => return Err(err("continuation at end of file".into())),
            }
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!("expected Key=Value, got {line:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err(format!("{key:?} is not a valid key")));
        }
        match section.as_deref() {
            None => return Err(err(format!("{key}= outside any section"))),
            Some("Install") => {}
            Some(_) => continue,
        }
        let names = || -> Result<Vec<String>, UnitError> {
            value
                .split_whitespace()
                .map(|u| {
                    if valid_unit_name(u) {
                        Ok(u.to_string())
                    } else {
                        Err(err(format!("{key}: {u:?} is not a valid unit name")))
                    }
                })
                .collect()
        };
        match key {
            "WantedBy" if value.is_empty() => install.wanted_by.clear(),
            "RequiredBy" if value.is_empty() => install.required_by.clear(),
            "WantedBy" => install.wanted_by.extend(names()?),
            "RequiredBy" => install.required_by.extend(names()?),
            "DefaultInstance" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b))
                {
                    return Err(err(format!(
                        "DefaultInstance: {value:?} is not a valid instance"
                    )));
                }
                install.default_instance = Some(value.to_string());
            }
            other => install.ignored.push((n, other.to_string())),
        }
    }
    Ok(install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_install() {
        let text = "[Unit]\nDescription=x = y\n\n[Service]\nExecStart=/oem/bin/agent \\\n  --flag\n[Install]\n# c\nWantedBy=multi-user.target \\\n  timers.target\nRequiredBy=a.service\nAlias=b.service\n";
        let i = parse_install(Path::new("u"), text).unwrap();
        assert_eq!(i.wanted_by, ["multi-user.target", "timers.target"]);
        assert_eq!(i.required_by, ["a.service"]);
        assert_eq!(i.ignored, vec![(12, "Alias".to_string())]);
    }

    #[test]
    fn negative_fixtures() {
        let cases = [
            ("Foo=1\n", "u:1: Foo= outside any section"),
            ("[Install\n", "u:1: malformed section header \"[Install\""),
            (
                "[Install]\nWantedBy\n",
                "u:2: expected Key=Value, got \"WantedBy\"",
            ),
            (
                "[Install]\nWantedBy=../etc\n",
                "u:2: WantedBy: \"../etc\" is not a valid unit name",
            ),
            (
                "[Install]\nWantedBy=x.target \\",
                "u:2: continuation at end of file",
            ),
            (
                "[Install]\nbad key=1\n",
                "u:2: \"bad key\" is not a valid key",
            ),
            (
                "[Install]\nDefaultInstance=a/b\n",
                "u:2: DefaultInstance: \"a/b\" is not a valid instance",
            ),
        ];
        for (input, want) in cases {
            let got = parse_install(Path::new("u"), input)
                .unwrap_err()
                .to_string();
            assert_eq!(got, want, "input: {input:?}");
        }
    }

    #[test]
    fn unit_names() {
        assert!(valid_unit_name("agent.service"));
        assert!(valid_unit_name("agent@.service"));
        assert!(valid_unit_name("agent@tty1.service"));
        assert!(!valid_unit_name("agent"));
        assert!(!valid_unit_name("../x.service"));
        assert!(!valid_unit_name(".service"));
        assert!(!valid_unit_name("a@b@c.service"));
        assert!(is_template("agent@.service"));
    }

    proptest::proptest! {
        #[test]
        fn random_units_never_panic(s in "\\PC*") {
            let _ = parse_install(Path::new("u"), &s);
        }
        #[test]
        fn random_install_lines_never_panic(s in "(\\[Install\\]\n)?([A-Za-z@.= \\\\\n]{0,40})") {
            let _ = parse_install(Path::new("u"), &s);
        }
    }
}
