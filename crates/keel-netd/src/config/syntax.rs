//! The systemd unit-file syntax (systemd.syntax(7)) as used by `.network`
//! files: `[Section]` headers, `Key=Value` assignments, `#`/`;` comments,
//! `\` line continuation. Hand-written because it is ~100 lines and the
//! crates that exist parse INI dialects with different rules (quoting,
//! duplicate keys, inline comments) that would silently change meaning.

use std::path::{Path, PathBuf};

/// One `Key=Value` assignment with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// One `[Section]` and its assignments, in file order. Repeated sections
/// (e.g. two `[Address]`) stay separate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub file: PathBuf,
    pub entries: Vec<Entry>,
}

/// A syntax problem that makes the whole file unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SyntaxError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// A problem that is reported but does not reject the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Parse one file's text into sections. Assignments before the first
/// section are ignored with a warning, as systemd does.
pub fn parse(
    file: &Path,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Section>, SyntaxError> {
    let err = |line: usize, message: String| SyntaxError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let lineno = idx + 1;
        let first = raw.trim();
        if first.is_empty() || first.starts_with('#') || first.starts_with(';') {
            continue;
        }
        // Join continuation lines: a trailing backslash is replaced by a
        // space; comment lines inside a continuation are skipped.
        let mut logical = String::from(first);
        while logical.ends_with('\\') {
            logical.pop();
            logical.push(' ');
            // Skip comment lines inside the continuation.
            let next = loop {
                match lines.next() {
                    Some((_, n)) if n.trim().starts_with(['#', ';']) => continue,
                    other => break other,
                }
            };
            match next {
                Some((_, n)) => logical.push_str(n.trim()),
                None => break,
            }
        }
        let logical = logical.trim();
        if let Some(rest) = logical.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(
                    lineno,
                    format!("unterminated section header '{logical}'"),
                ));
            };
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(err(lineno, format!("invalid section header '{logical}'")));
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
            return Err(err(
                lineno,
                format!("expected 'Key=Value' or '[Section]', found '{logical}'"),
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(lineno, format!("invalid key name '{key}'")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Section>, SyntaxError> {
        parse(Path::new("t.network"), text, &mut Vec::new())
    }

    #[test]
    fn sections_comments_continuations() {
        let s = p("# c\n[Match]\nName=eth0 \\\n  # inner\n  eth1\n; c\n[Network]\n DNS = 1.1.1.1 \n[Network]\nDNS=\n")
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "Match");
        assert_eq!(s[0].entries[0].value, "eth0  eth1");
        assert_eq!(s[0].entries[0].line, 3);
        assert_eq!(s[1].entries[0].key, "DNS");
        assert_eq!(s[1].entries[0].value, "1.1.1.1");
        assert_eq!(s[2].entries[0].value, "");
        assert_eq!(s[2].entries[0].line, 10);
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
        ];
        for (text, want) in cases {
            assert_eq!(p(text).unwrap_err().to_string(), want, "input {text:?}");
        }
    }
}
