//! `/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow` as tables of
//! colon-separated fields, and the `sysusers.d` declarations that systemd
//! turns into accounts later in the boot.
//!
//! Keel writes account entries itself (rendered whole, written atomically)
//! instead of running `useradd` chrooted into the sysroot as Ignition does:
//! the result is a pure function of the old files and the config, testable
//! without root, and the image needs no shadow tools for it.

/// A malformed line in an account file or `sysusers.d` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct AccountsError {
    /// File the line is in.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    /// Blank or comment line, kept as is.
    Raw(String),
    /// An entry's fields.
    Fields(Vec<String>),
}

/// One colon-separated account file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    rows: Vec<Row>,
    /// Set when an entry was added or changed.
    pub changed: bool,
}

/// Which numeric columns a table has (validated at parse time).
fn numeric_columns(width: usize) -> &'static [usize] {
    match width {
        7 => &[2, 3],
        _ => &[],
    }
}

impl Table {
    /// Parse `text` with `width` fields per entry (passwd 7, group 4 with a
    /// numeric gid in column 2, shadow 9, gshadow 4).
    pub fn parse(
        file: &str,
        text: &str,
        width: usize,
        numeric: &[usize],
    ) -> Result<Table, AccountsError> {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let e = |message: String| AccountsError {
                file: file.into(),
                line: i + 1,
                message,
            };
            if line.trim().is_empty() || line.starts_with('#') {
                rows.push(Row::Raw(line.to_string()));
                continue;
            }
            let fields: Vec<String> = line.split(':').map(str::to_string).collect();
            if fields.len() != width {
                return Err(e(format!(
                    "expected {width} fields, found {}",
                    fields.len()
                )));
            }
            if fields[0].is_empty() {
                return Err(e("empty name".into()));
            }
            for c in numeric.iter().chain(numeric_columns(width)) {
                if fields[*c].parse::<u32>().is_err() {
                    return Err(e(format!(
                        "field {} is not a number: {:?}",
                        c + 1,
                        fields[*c]
                    )));
                }
            }
            rows.push(Row::Fields(fields));
        }
        Ok(Table {
            rows,
            changed: false,
        })
    }

    /// An empty table (the file does not exist).
    pub fn empty() -> Table {
        Table {
            rows: Vec::new(),
            changed: false,
        }
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.rows.iter().find_map(|r| match r {
            Row::Fields(f) if f[0] == name => Some(f.as_slice()),
            _ => None,
        })
    }

    /// Change one field of the entry named `name`; marks the table changed
    /// when the value differs.
    pub fn set(&mut self, name: &str, col: usize, value: &str) {
        for r in &mut self.rows {
            if let Row::Fields(f) = r {
                if f[0] == name && f[col] != value {
                    f[col] = value.to_string();
                    self.changed = true;
                }
            }
        }
    }

    /// Append an entry.
    pub fn push(&mut self, fields: Vec<String>) {
        self.rows.push(Row::Fields(fields));
        self.changed = true;
    }

    /// The numbers in column `col` (uids, gids).
    pub fn ids(&self, col: usize) -> impl Iterator<Item = u32> + '_ {
        self.rows.iter().filter_map(move |r| match r {
            Row::Fields(f) => f.get(col).and_then(|v| v.parse().ok()),
            Row::Raw(_) => None,
        })
    }

    /// The name of the entry whose column `col` is `id`.
    pub fn name_of(&self, col: usize, id: u32) -> Option<&str> {
        self.rows.iter().find_map(|r| match r {
            Row::Fields(f) if f.get(col).and_then(|v| v.parse::<u32>().ok()) == Some(id) => {
                Some(f[0].as_str())
            }
            _ => None,
        })
    }

    /// Add `user` to the member list (column `col`) of group `group`.
    pub fn add_member(&mut self, group: &str, col: usize, user: &str) {
        for r in &mut self.rows {
            if let Row::Fields(f) = r {
                if f[0] == group {
                    let mut members: Vec<&str> =
                        f[col].split(',').filter(|m| !m.is_empty()).collect();
                    if !members.contains(&user) {
                        members.push(user);
                        f[col] = members.join(",");
                        self.changed = true;
                    }
                }
            }
        }
    }

    /// The file's text, one entry per line, comments kept.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            match r {
                Row::Raw(s) => out.push_str(s),
                Row::Fields(f) => out.push_str(&f.join(":")),
            }
            out.push('\n');
        }
        out
    }
}

/// A `u`, `g` or `m` line of a `sysusers.d` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `u` (user, with a same-named group), `g` (group) or `m` (`name` is
    /// a member of `group`).
    pub kind: char,
    /// Account name.
    pub name: String,
    /// Fixed uid (`u`) or gid (`g`); `None` for dynamic (`-`) or a path.
    pub id: Option<u32>,
    /// For `u NAME UID:GID`: the gid, or a group name; for `m`: the group.
    pub group: Option<String>,
    /// GECOS (`u` only).
    pub gecos: Option<String>,
    /// Home directory (`u` only).
    pub home: Option<String>,
    /// Shell (`u` only).
    pub shell: Option<String>,
}

/// Parse one `sysusers.d` file. `u`, `g` and `m` lines matter here; `r`
/// lines are left to systemd-sysusers.
pub fn parse_sysusers(file: &str, text: &str) -> Result<Vec<Declared>, AccountsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let e = |message: &str| AccountsError {
            file: file.into(),
            line: i + 1,
            message: message.into(),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = split_words(line).map_err(e)?;
        let opt = |n: usize| words.get(n).filter(|w| w.as_str() != "-").cloned();
        let kind = match words[0].as_str() {
            "u" | "u!" => 'u',
            "g" => 'g',
            "m" => 'm',
            _ => continue,
        };
        let name = words.get(1).ok_or_else(|| e("missing name"))?.clone();
        if kind == 'm' {
            let group = words.get(2).ok_or_else(|| e("missing group"))?.clone();
            out.push(Declared {
                kind,
                name,
                id: None,
                group: Some(group),
                gecos: None,
                home: None,
                shell: None,
            });
            continue;
        }
        let (id, group) = match opt(2) {
            None => (None, None),
            Some(f) => {
                let (id, grp) = match f.split_once(':') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (f, None),
                };
                (id.parse::<u32>().ok(), grp)
            }
        };
        out.push(Declared {
            kind,
            name,
            id,
            group,
            gecos: opt(3),
            home: opt(4),
            shell: opt(5),
        });
    }
    Ok(out)
}

/// Split a sysusers.d line into words; double quotes group words.
fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote");
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn passwd_roundtrip_and_edit() {
        let text = "# comment\nroot:x:0:0:root:/root:/bin/bash\n\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n";
        let mut t = Table::parse("/etc/passwd", text, 7, &[]).unwrap();
        assert_eq!(t.render(), text);
        assert_eq!(t.get("daemon").unwrap()[2], "1");
        t.set("root", 6, "/bin/sh");
        t.push(vec![
            "a".into(),
            "x".into(),
            "1000".into(),
            "1000".into(),
            "".into(),
            "/home/a".into(),
            "/bin/bash".into(),
        ]);
        assert!(t.changed);
        assert_eq!(t.ids(2).collect::<Vec<_>>(), vec![0, 1, 1000]);
        assert_eq!(t.name_of(2, 1000), Some("a"));
        assert!(t.render().contains("root:x:0:0:root:/root:/bin/sh\n"));
    }

    #[test]
    fn group_members() {
        let mut t = Table::parse("/etc/group", "docker:x:233:\nsudo:x:27:bob\n", 4, &[2]).unwrap();
        t.add_member("docker", 3, "core");
        t.add_member("sudo", 3, "core");
        t.add_member("sudo", 3, "core");
        assert_eq!(t.render(), "docker:x:233:core\nsudo:x:27:bob,core\n");
    }

    #[test]
    fn negative_fixtures() {
        let table: &[(&str, usize, &[usize], &str)] = &[
            (
                "root:x:0:0\n",
                7,
                &[],
                "/etc/passwd line 1: expected 7 fields, found 4",
            ),
            (
                "ok:x:0:0:::\nbad:x:zero:0:::\n",
                7,
                &[],
                "/etc/passwd line 2: field 3 is not a number: \"zero\"",
            ),
            (":x:0:0:::\n", 7, &[], "/etc/passwd line 1: empty name"),
            (
                "g:x:-1:\n",
                4,
                &[2],
                "/etc/passwd line 1: field 3 is not a number: \"-1\"",
            ),
        ];
        for (text, width, num, want) in table {
            assert_eq!(
                &Table::parse("/etc/passwd", text, *width, num)
                    .unwrap_err()
                    .to_string(),
                want
            );
        }
        assert_eq!(
            parse_sysusers("keel.conf", "u core 500 \"Core user\n")
                .unwrap_err()
                .to_string(),
            "keel.conf line 1: unterminated quote"
        );
        assert_eq!(
            parse_sysusers("k.conf", "g\n").unwrap_err().to_string(),
            "k.conf line 1: missing name"
        );
    }

    #[test]
    fn sysusers() {
        let d = parse_sysusers(
            "keel.conf",
            "# Keel\nu core 500 \"Core User\" /home/core /bin/bash\ng docker 233\nu dyn - -\nm core docker\nu svc 600:docker\n",
        )
        .unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d[0].name, "core");
        assert_eq!(d[0].id, Some(500));
        assert_eq!(d[0].gecos.as_deref(), Some("Core User"));
        assert_eq!(d[0].home.as_deref(), Some("/home/core"));
        assert_eq!(d[0].shell.as_deref(), Some("/bin/bash"));
        assert_eq!((d[1].kind, d[1].id), ('g', Some(233)));
        assert_eq!(d[2].id, None);
        assert_eq!(
            (d[3].kind, d[3].name.as_str(), d[3].group.as_deref()),
            ('m', "core", Some("docker"))
        );
        assert_eq!(d[4].group.as_deref(), Some("docker"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z0-9:\n #\"-]{0,200}") {
            for w in [4usize, 7, 9] {
                if let Ok(t) = Table::parse("f", &s, w, &[]) {
                    let _ = t.render();
                }
            }
            let _ = parse_sysusers("f", &s);
        }
    }
}
