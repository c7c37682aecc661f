//! `oem-release` (os-release(5) syntax) and the `KEY=VALUE` metadata file.
//!
//! os-release is a shell-compatible assignment list: `KEY=value`,
//! `KEY="value with \"escapes\""` or `KEY='literal'`, `#` comments and blank
//! lines. It is read as data here, never executed. Hand-written because the
//! format is twenty lines of rules and no maintained crate rejects bad input
//! with a line number (they skip it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated `oem-release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OemRelease {
    /// `ID=`: lowercase `a-z0-9._-`, required (`qemu`, `ec2`, …).
    pub id: String,
    /// `NAME=`, defaulting to the ID.
    pub name: String,
    /// `VERSION_ID=`, when given.
    pub version_id: Option<String>,
    /// Every field, including the ones above.
    pub fields: BTreeMap<String, String>,
}

/// A line-level problem in an `oem-release` or metadata file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct LineError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 for whole-file problems).
    pub line: usize,
    /// What is wrong, lowercase.
    pub message: String,
}

fn valid_key(key: &str) -> bool {
    crate::manifest::valid_env_name(key)
}

/// Decode one os-release value (the text after `=`).
fn unquote(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some('\n') => {}
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => return Err("unterminated double quote".into()),
                    },
                    Some(ch) => out.push(ch),
                }
            },
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote".into()),
                    Some('\'') => break,
                    Some(ch) => out.push(ch),
                }
            },
            '\\' => match chars.next() {
                Some(ch) => out.push(ch),
                None => return Err("trailing backslash".into()),
            },
            ' ' | '\t' => {
                return Err("unquoted whitespace in value (quote it)".into());
            }
            '$' | '`' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(format!(
                    "unquoted shell character {c:?} in value (quote it)"
                ));
            }
            ch => out.push(ch),
        }
    }
    Ok(out)
}

/// Parse os-release syntax into ordered `(line, key, value)` entries.
fn parse_assignments(file: &Path, text: &str) -> Result<Vec<(usize, String, String)>, LineError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |message: String| LineError {
            file: file.to_path_buf(),
            line: n,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!("expected KEY=VALUE, got {line:?}")));
        };
        if !valid_key(key) {
            return Err(err(format!("{key:?} is not a valid variable name")));
        }
        let value = unquote(value).map_err(|m| err(format!("{key}: {m}")))?;
        out.push((n, key.to_string(), value));
    }
    Ok(out)
}

/// Parse and validate `oem-release`. `file` is only used in messages.
pub fn parse_oem_release(file: &Path, text: &str) -> Result<OemRelease, LineError> {
    let mut fields = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (n, key, value) in parse_assignments(file, text)? {
        if let Some(first) = lines.insert(key.clone(), n) {
            return Err(LineError {
                file: file.to_path_buf(),
                line: n,
                message: format!("{key} is set twice (first at line {first})"),
            });
        }
        fields.insert(key, value);
    }
    let Some(id) = fields.get("ID").cloned() else {
        return Err(LineError {
            file: file.to_path_buf(),
            line: 0,
            message: "ID is missing".into(),
        });
    };
    let id_ok = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    for key in ["ID", "VERSION_ID"] {
        if let Some(v) = fields.get(key) {
            if !id_ok(v) {
                return Err(LineError {
                    file: file.to_path_buf(),
                    line: lines.get(key).copied().unwrap_or(0),
                    message: format!("{key}: {v:?} must be non-empty lowercase a-z 0-9 . _ -"),
                });
            }
        }
    }
    Ok(OemRelease {
        name: fields.get("NAME").cloned().unwrap_or_else(|| id.clone()),
        version_id: fields.get("VERSION_ID").cloned(),
        id,
        fields,
    })
}

/// Facts from `/run/keel/metadata`, in the order they should enter a hook's
/// environment, plus the lines that were skipped and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Key → value. A key given on several lines keeps every value, joined
    /// with `\n` (so `KEEL_SSH_KEYS` can carry one key per line).
    pub facts: BTreeMap<String, String>,
    /// Lines that were not `KEY=VALUE` with a valid key: `(line, message)`.
    pub skipped: Vec<(usize, String)>,
}

/// Parse the metadata file: `KEY=VALUE` lines, values taken verbatim (no
/// quoting, as Afterburn writes them), `#` comments and blank lines ignored.
/// Hooks append to this file at run time, so a bad line is skipped and
/// reported rather than failing every later hook.
pub fn parse_metadata(text: &str) -> Metadata {
    let mut md = Metadata::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            md.skipped.push((n, "expected KEY=VALUE".into()));
            continue;
        };
        if !valid_key(key) {
            md.skipped
                .push((n, format!("{key:?} is not a valid variable name")));
            continue;
        }
        if value.contains('\0') {
            md.skipped
                .push((n, format!("the value of {key} contains a NUL byte")));
            continue;
        }
        md.facts
            .entry(key.to_string())
            .and_modify(|v: &mut String| {
                v.push('\n');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oem_release() {
        let text = "# QEMU\nID=qemu\nNAME=\"QEMU \\\"virt\\\"\"\nVERSION_ID='1.0'\nHOME_URL=https://www.qemu.org/\n";
        let r = parse_oem_release(Path::new("oem-release"), text).unwrap();
        assert_eq!(r.id, "qemu");
        assert_eq!(r.name, "QEMU \"virt\"");
        assert_eq!(r.version_id.as_deref(), Some("1.0"));
        assert_eq!(r.fields["HOME_URL"], "https://www.qemu.org/");
    }

    #[test]
    fn oem_release_negative_fixtures() {
        let cases = [
            ("NAME=x\n", "r:0: ID is missing"),
            (
                "ID=qemu\nnonsense\n",
                "r:2: expected KEY=VALUE, got \"nonsense\"",
            ),
            (
                "ID=qemu\n1X=y\n",
                "r:2: \"1X\" is not a valid variable name",
            ),
            ("ID=\"qemu\n", "r:1: ID: unterminated double quote"),
            ("ID='qemu\n", "r:1: ID: unterminated single quote"),
            (
                "ID=qemu\nNAME=two words\n",
                "r:2: NAME: unquoted whitespace in value (quote it)",
            ),
            (
                "ID=$(reboot)\n",
                "r:1: ID: unquoted shell character '$' in value (quote it)",
            ),
            (
                "ID=QEMU\n",
                "r:1: ID: \"QEMU\" must be non-empty lowercase a-z 0-9 . _ -",
            ),
            (
                "ID=qemu\nID=ec2\n",
                "r:2: ID is set twice (first at line 1)",
            ),
            (
                "ID=qemu\nVERSION_ID=\"\"\n",
                "r:2: VERSION_ID: \"\" must be non-empty lowercase a-z 0-9 . _ -",
            ),
            ("ID=qemu\\", "r:1: ID: trailing backslash"),
        ];
        for (input, want) in cases {
            let got = parse_oem_release(Path::new("r"), input)
                .unwrap_err()
                .to_string();
            assert_eq!(got, want, "input: {input:?}");
        }
    }

    #[test]
    fn metadata_joins_repeated_keys_and_skips_bad_lines() {
        let md = parse_metadata(
            "KEEL_HOSTNAME=vm1\n# c\n\nKEEL_SSH_KEYS=ssh-ed25519 AAA a@b\nKEEL_SSH_KEYS=ssh-rsa BBB\nbad line\n9X=1\nEMPTY=\n",
        );
        assert_eq!(md.facts["KEEL_HOSTNAME"], "vm1");
        assert_eq!(
            md.facts["KEEL_SSH_KEYS"],
            "ssh-ed25519 AAA a@b\nssh-rsa BBB"
        );
        assert_eq!(md.facts["EMPTY"], "");
        assert_eq!(
            md.skipped,
            vec![
                (6, "expected KEY=VALUE".to_string()),
                (7, "\"9X\" is not a valid variable name".to_string())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn random_release_never_panics(s in "\\PC*") {
            let _ = parse_oem_release(Path::new("r"), &s);
            let _ = parse_metadata(&s);
        }

        #[test]
        fn random_assignments_never_panic(k in "[A-Za-z_0-9]{0,6}", v in "[ -~]{0,20}") {
            let _ = parse_oem_release(Path::new("r"), &format!("ID=x\n{k}={v}\n"));
        }
    }
}
