//! The file syntax (systemd.syntax(7)): `[Section]` headers and
//! `Key=Value` assignments, read the way systemd's `config_parse()` reads
//! them:
//!
//! - a line whose first non-blank character is `#` or `;` is a comment,
//!   wherever it is, also between the lines of a continuation;
//! - a line ending in a `\` that is not itself escaped (`\\`) continues on
//!   the next line: the `\` becomes a space and the next line is appended
//!   as it is (its leading blanks kept); a continuation still open at the
//!   end of the file ends there;
//! - the joined line is stripped of blanks at both ends; `[…]` is a section
//!   header, anything else must be `Key=Value` (split at the first `=`,
//!   both sides stripped);
//! - an assignment before the first section header is ignored with a
//!   warning, as systemd does;
//! - keys and sections are kept in file order, repeated ones too (whether a
//!   repeat appends, replaces or is an error is the caller's semantics).
//!
//! Hand-written: generic INI crates have other rules (inline comments,
//! quoting of whole values, duplicate keys merged) that would silently
//! change what a file means.

use std::path::{Path, PathBuf};

/// systemd's limit on one (joined) line: `LONG_LINE_MAX`, 1 MiB.
pub const MAX_LINE: usize = 1024 * 1024;

/// One `Key=Value` assignment with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, blanks stripped.
    pub key: String,
    /// The value, blanks stripped at both ends (continuations joined).
    pub value: String,
    /// 1-based line the assignment starts on.
    pub line: usize,
}

/// One `[Section]` and its assignments, in file order. Repeated sections
/// (two `[Address]`) stay separate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// The file the section came from (a drop-in's sections name it).
    pub file: PathBuf,
    /// Its assignments in order.
    pub entries: Vec<Entry>,
}

impl Section {
    /// The assignments to `key`, in order.
    pub fn get<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.key == key)
    }
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum What {
    /// `[Name` without the closing bracket.
    #[error("unterminated section header '{0}'")]
    UnterminatedSection(String),
    /// `[]`, brackets, quotes, backslashes or control characters inside.
    #[error("invalid section header '{0}'")]
    BadSection(String),
    /// Neither a section header nor an assignment.
    #[error("expected 'Key=Value' or '[Section]', found '{0}'")]
    NotAssignment(String),
    /// An empty key, or one with characters other than `A-Za-z0-9_-`.
    #[error("invalid key name '{0}'")]
    BadKey(String),
    /// A (joined) line longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// A value that the syntax of its key does not allow: a quote left open
    /// ([`crate::words`]), a bad unit name ([`crate::install`]).
    #[error("{key}={value}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The whole value.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
}

/// A line that makes the whole file unusable: names file, line and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {what}", file.display())]
pub struct SyntaxError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub what: What,
}

/// A problem that is reported but does not reject the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// A key as Keel accepts it: `A-Za-z0-9`, `_` and `-` (for systemd's `X-`
/// extension keys), not empty.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A section name as systemd's `string_is_safe()` has it, not empty and
/// without brackets.
fn valid_section(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '[' | ']' | '"' | '\'' | '\\'))
}

/// Whether a physical line ends in a continuation: an odd number of
/// trailing backslashes (`\\` is an escaped backslash).
fn continues(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Parse one file's text into sections. `file` only names the file in
/// errors and in [`Section::file`].
pub fn parse(
    file: &Path,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Section>, SyntaxError> {
    let err = |line: usize, what: What| SyntaxError {
        file: file.to_path_buf(),
        line,
        what,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<Section> = Vec::new();
    // The continuation being joined, with the line it started on.
    let mut pending: Option<(usize, String)> = None;
    let mut lines = text.lines().enumerate();
    loop {
        let (lineno, logical) = match lines.next() {
            Some((idx, raw)) => {
                let first = raw.trim_start();
                if first.starts_with(['#', ';']) {
                    continue;
                }
                let (start, mut joined) = match pending.take() {
                    Some((start, mut s)) => {
                        s.push_str(raw);
                        (start, s)
                    }
                    None => (idx + 1, raw.to_string()),
                };
                if joined.len() > MAX_LINE {
                    return Err(err(start, What::TooLong));
                }
                if continues(&joined) {
                    joined.pop();
                    joined.push(' ');
                    pending = Some((start, joined));
                    continue;
                }
                (start, joined)
            }
            // A continuation open at the end of the file ends there.
            None => match pending.take() {
                Some(p) => p,
                None => break,
            },
        };
        let logical = logical.trim();
        if logical.is_empty() {
            continue;
        }
        if let Some(rest) = logical.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(lineno, What::UnterminatedSection(logical.into())));
            };
            if !valid_section(name) {
                return Err(err(lineno, What::BadSection(logical.into())));
            }
            sections.push(Section {
                name: name.to_string(),
                line: lineno,
                file: file.to_path_buf(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = logical.split_once('=') else {
            return Err(err(lineno, What::NotAssignment(logical.into())));
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err(err(lineno, What::BadKey(key.into())));
        }
        let Some(section) = sections.last_mut() else {
            warnings.push(Warning {
                file: file.to_path_buf(),
                line: lineno,
                message: format!("assignment '{key}' outside of any section, ignoring"),
            });
            continue;
        };
        section.entries.push(Entry {
            key: key.to_string(),
            value: value.trim().to_string(),
            line: lineno,
        });
    }
    Ok(sections)
}

/// Whether [`render`] writes these sections back faithfully: no value ends
/// in an unescaped backslash.
pub fn renders_back(sections: &[Section]) -> bool {
    sections
        .iter()
        .all(|s| s.entries.iter().all(|e| !continues(&e.value)))
}

/// Render sections back into text that [`parse`] reads to the same
/// sections. A value ending in an unescaped `\\` cannot be written (it
/// would continue the line; systemd cannot read one back either): see
/// [`renders_back`].
pub fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('[');
        out.push_str(&s.name);
        out.push_str("]\n");
        for e in &s.entries {
            out.push_str(&e.key);
            out.push('=');
            out.push_str(&e.value);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Section>, SyntaxError> {
        parse(Path::new("t.network"), text, &mut Vec::new())
    }

    fn values(text: &str) -> Vec<(String, String, usize)> {
        p(text)
            .unwrap()
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(|e| (s.name.clone(), format!("{}={}", e.key, e.value), e.line))
            })
            .collect()
    }

    #[test]
    fn sections_comments_continuations() {
        let s = p("# c\n[Match]\nName=eth0 \\\n  # inner\n  eth1\n; c\n[Network]\n DNS = 1.1.1.1 \n[Network]\nDNS=\n")
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "Match");
        // The `\` became a space and the next line kept its blanks, as
        // systemd joins them; the comment line between was skipped.
        assert_eq!(s[0].entries[0].value, "eth0    eth1");
        assert_eq!(s[0].entries[0].line, 3);
        assert_eq!(s[1].entries[0].key, "DNS");
        assert_eq!(s[1].entries[0].value, "1.1.1.1");
        assert_eq!(s[2].entries[0].value, "");
        assert_eq!(s[2].entries[0].line, 10);
    }

    // Where keel-netd, keel-oem, keel-provision and keel-image read the
    // syntax differently before keel-unit: these are systemd's answers.
    #[test]
    fn continuation_cases_the_four_disagreed_on() {
        // keel-image did not join lines at all: the second target was lost.
        assert_eq!(
            values("[Install]\nWantedBy=a.target \\\n b.target\n"),
            [("Install".into(), "WantedBy=a.target   b.target".into(), 2)]
        );
        // keel-provision kept comment lines inside a continuation as text.
        assert_eq!(
            values("[Install]\nWantedBy=a.target \\\n# not a target\n b.target\n"),
            [("Install".into(), "WantedBy=a.target   b.target".into(), 2)]
        );
        // keel-oem rejected a continuation open at the end of the file;
        // systemd ends it there.
        assert_eq!(
            values("[Install]\nWantedBy=a.target \\"),
            [("Install".into(), "WantedBy=a.target".into(), 2)]
        );
        // An escaped backslash at the end does not continue (all four
        // continued).
        assert_eq!(
            values("[Service]\nExecStart=/bin/echo \\\\\n[Install]\nWantedBy=a.target\n"),
            [
                ("Service".into(), "ExecStart=/bin/echo \\\\".into(), 2),
                ("Install".into(), "WantedBy=a.target".into(), 4)
            ]
        );
        // A blank after the backslash: not a continuation.
        assert_eq!(
            values("[A]\nX=1 \\ \nY=2\n"),
            [
                ("A".into(), "X=1 \\".into(), 2),
                ("A".into(), "Y=2".into(), 3)
            ]
        );
        // A continuation can build a section header.
        assert_eq!(values("[Ins\\\ntall]\nA=1\n")[0].0, "Ins tall");
        // `X-` keys (systemd's extension keys) are keys; keel-netd refused them.
        assert_eq!(values("[Unit]\nX-Keel=1\n")[0].1, "X-Keel=1");
        // A BOM at the start is not part of the first line.
        assert_eq!(values("\u{feff}[A]\nB=1\n")[0].1, "B=1");
    }

    #[test]
    fn assignment_outside_section_warns() {
        let mut w = Vec::new();
        let s = parse(Path::new("a.network"), "Name=x\n[Match]\n", &mut w).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "a.network:1: assignment 'Name' outside of any section, ignoring"
        );
    }

    #[test]
    fn negative_fixtures() {
        let cases = [
            (
                "[Match\n",
                "t.network:1: unterminated section header '[Match'",
            ),
            ("[]\n", "t.network:1: invalid section header '[]'"),
            (
                "[Match]\nName\n",
                "t.network:2: expected 'Key=Value' or '[Section]', found 'Name'",
            ),
            ("[Match]\n=x\n", "t.network:2: invalid key name ''"),
            (
                "[Match]\nNa me=x\n",
                "t.network:2: invalid key name 'Na me'",
            ),
            ("[a]b]\n", "t.network:1: invalid section header '[a]b]'"),
            ("[a\"b]\n", "t.network:1: invalid section header '[a\"b]'"),
        ];
        for (text, want) in cases {
            assert_eq!(p(text).unwrap_err().to_string(), want, "input {text:?}");
        }
        let long = format!("[A]\nB={}\n", "x".repeat(MAX_LINE));
        assert_eq!(
            p(&long).unwrap_err().to_string(),
            format!("t.network:2: line longer than {MAX_LINE} bytes")
        );
    }

    #[test]
    fn render_round_trips() {
        let text = "[Unit]\nDescription=a b\n\n[Install]\nWantedBy=a.target\nWantedBy=\n";
        let s = p(text).unwrap();
        assert_eq!(render(&s), text);
    }

    proptest::proptest! {
        #[test]
        fn any_text_never_panics(s in "\\PC*") {
            let _ = p(&s);
        }
        #[test]
        fn unit_like_text_never_panics(s in "(\\[[A-Za-z]{0,3}\\]?\n)?([A-Za-z#;@.= \\\\\n\\[\\]]{0,60})") {
            if let Ok(sections) = p(&s).map(|x| Some(x).filter(|x| renders_back(x))) {
                let Some(sections) = sections else { return Ok(()) };
                // Whatever parses renders to text that parses the same.
                let again = p(&render(&sections));
                let again: Vec<_> = again.unwrap().iter().map(|x| (x.name.clone(), x.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect::<Vec<_>>())).collect();
                let first: Vec<_> = sections.iter().map(|x| (x.name.clone(), x.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect::<Vec<_>>())).collect();
                proptest::prop_assert_eq!(again, first);
            }
        }
    }
}
