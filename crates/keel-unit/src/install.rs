//! The `[Install]` section (systemd.unit(5)) and the links `systemctl
//! enable` makes from it.
//!
//! Read: `WantedBy=`, `RequiredBy=`, `UpheldBy=` (`.wants/`, `.requires/`,
//! `.upholds/` links), `Alias=` (a link under the alias's name), `Also=`
//! (units to enable with this one), `DefaultInstance=` (the instance a
//! template is enabled as). Lists are split with systemd's quoting
//! ([`crate::words`]); an empty assignment empties the list; every `[Install]`
//! section of the file counts, in order. Every word must be a unit name
//! after the specifiers `systemctl enable` expands (`%n %N %p %i %j %%`).
//! `Alias=` names must have the unit's type, and a template's aliases are
//! templates (systemd's `unit_file_verify_alias`). Other keys are kept with
//! their lines for the caller to report.
//!
//! What a program does with the links (where they go, what they point at,
//! whether `Also=` is followed) is its own semantics.

use std::path::Path;

use crate::name::{valid_instance, UnitName};
use crate::syntax::{self, Section, SyntaxError, Warning, What};
use crate::words;

/// One word of a list with the line it was assigned on (specifiers not yet
/// expanded: they depend on the instance being enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The word as written (`getty.target`, `container@%i.service`).
    pub name: String,
    /// 1-based line.
    pub line: usize,
}

/// What `[Install]` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`.
    pub wanted_by: Vec<Item>,
    /// `RequiredBy=`.
    pub required_by: Vec<Item>,
    /// `UpheldBy=`.
    pub upheld_by: Vec<Item>,
    /// `Alias=`.
    pub alias: Vec<Item>,
    /// `Also=`.
    pub also: Vec<Item>,
    /// `DefaultInstance=` (templates only).
    pub default_instance: Option<String>,
    /// Other keys of `[Install]`, with their lines.
    pub other: Vec<(usize, String)>,
}

/// The kind of link enabling makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// `TARGET.wants/NAME`.
    Wants,
    /// `TARGET.requires/NAME`.
    Requires,
    /// `TARGET.upholds/NAME`.
    Upholds,
    /// `ALIAS`.
    Alias,
}

/// One link `systemctl enable` would make, relative to the unit directory
/// (`multi-user.target.wants/getty@tty1.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The path relative to the unit directory.
    pub path: String,
    /// What kind of link.
    pub kind: LinkKind,
}

/// Why a unit cannot be enabled as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnableError {
    /// A template with targets to be wanted by but no instance to use.
    #[error("{0} is a template without DefaultInstance=: no instance to enable")]
    NoInstance(String),
    /// A word that is no unit name once the instance is known.
    #[error("{file}:{line}: {word:?} for {unit}: {reason}")]
    BadName {
        file: String,
        line: usize,
        unit: String,
        word: String,
        reason: String,
    },
}

/// Expand the specifiers `systemctl enable` knows in `[Install]` for the
/// unit `unit` (an instance, or a template/plain unit).
pub fn expand(word: &str, unit: &UnitName) -> Result<String, String> {
    if !word.contains('%') {
        return Ok(word.to_string());
    }
    let full = unit.as_str();
    let n_no_type = &full[..full.len() - unit.unit_type().as_str().len() - 1];
    let prefix = unit.prefix();
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(full),
            Some('N') => out.push_str(n_no_type),
            Some('p') => out.push_str(prefix),
            Some('i') => out.push_str(unit.instance().unwrap_or("")),
            Some('j') => out.push_str(prefix.rsplit('-').next().unwrap_or(prefix)),
            Some('%') => out.push('%'),
            Some(o) => return Err(format!("specifier %{o} is not supported in [Install]")),
            None => return Err("a lone % at the end".into()),
        }
    }
    Ok(out)
}

/// The instance a template's specifiers are checked with while reading
/// (the real one is known when enabling).
const PLACEHOLDER_INSTANCE: &str = "instance";

impl Install {
    /// Read the `[Install]` sections of `unit`'s parsed file.
    pub fn from_sections(
        unit: &UnitName,
        sections: &[Section],
        warnings: &mut Vec<Warning>,
    ) -> Result<Install, SyntaxError> {
        let mut out = Install::default();
        let check_as = if unit.is_template() {
            unit.with_instance(PLACEHOLDER_INSTANCE)
                .unwrap_or_else(|_| unit.clone())
        } else {
            unit.clone()
        };
        for s in sections.iter().filter(|s| s.name == "Install") {
            for e in &s.entries {
                let bad = |reason: String| SyntaxError {
                    file: s.file.clone(),
                    line: e.line,
                    what: What::BadValue {
                        key: e.key.clone(),
                        value: e.value.clone(),
                        reason,
                    },
                };
                let list = match e.key.as_str() {
                    "WantedBy" => &mut out.wanted_by,
                    "RequiredBy" => &mut out.required_by,
                    "UpheldBy" => &mut out.upheld_by,
                    "Alias" => &mut out.alias,
                    "Also" => &mut out.also,
                    "DefaultInstance" => {
                        let v = expand(&e.value, unit).map_err(bad)?;
                        if v.is_empty() {
                            out.default_instance = None;
                            continue;
                        }
                        if !valid_instance(&v) {
                            return Err(bad(format!("{v:?} is not a valid instance name")));
                        }
                        if !unit.is_template() {
                            warnings.push(Warning {
                                file: s.file.clone(),
                                line: e.line,
                                message: format!(
                                    "DefaultInstance= only applies to templates and {unit} is none, ignoring"
                                ),
                            });
                            continue;
                        }
                        out.default_instance = Some(v);
                        continue;
                    }
                    _ => {
                        out.other.push((e.line, e.key.clone()));
                        continue;
                    }
                };
                let ws = words::split(&e.value).map_err(|w| bad(w.to_string()))?;
                if ws.is_empty() {
                    list.clear();
                    continue;
                }
                for w in ws {
                    let name = expand(&w, &check_as)
                        .and_then(|x| UnitName::parse(&x).map_err(|n| n.to_string()))
                        .map_err(&bad)?;
                    if e.key == "Alias" {
                        check_alias(unit, &name).map_err(&bad)?;
                    }
                    list.push(Item {
                        name: w,
                        line: e.line,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Parse a unit file's text and read its `[Install]` sections.
    pub fn parse(
        unit: &UnitName,
        file: &Path,
        text: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<Install, SyntaxError> {
        let sections = syntax::parse(file, text, warnings)?;
        Install::from_sections(unit, &sections, warnings)
    }

    /// Nothing to enable: no targets and no aliases (systemd calls such a
    /// unit "static").
    pub fn is_static(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
    }

    /// The name `unit` is enabled as: itself, or for a template the
    /// instance `DefaultInstance=` names (`None` when it names none).
    pub fn enabled_name(&self, unit: &UnitName) -> Option<UnitName> {
        if !unit.is_template() {
            return Some(unit.clone());
        }
        let inst = self.default_instance.as_deref()?;
        unit.with_instance(inst).ok()
    }

    /// The links enabling `unit` makes, relative to the unit directory, in
    /// `WantedBy=`, `RequiredBy=`, `UpheldBy=`, `Alias=` order. `file` names
    /// the unit file in errors.
    pub fn links(&self, unit: &UnitName, file: &Path) -> Result<Vec<Link>, EnableError> {
        let enabled = self.enabled_name(unit);
        let mut out = Vec::new();
        let lists = [
            (&self.wanted_by, LinkKind::Wants, "wants"),
            (&self.required_by, LinkKind::Requires, "requires"),
            (&self.upheld_by, LinkKind::Upholds, "upholds"),
        ];
        for (list, kind, dir) in lists {
            if list.is_empty() {
                continue;
            }
            let Some(enabled) = &enabled else {
                return Err(EnableError::NoInstance(unit.to_string()));
            };
            for item in list {
                let target = self.name_for(item, enabled, file)?;
                out.push(Link {
                    path: format!("{target}.{dir}/{enabled}"),
                    kind,
                });
            }
        }
        for item in &self.alias {
            let as_unit = enabled.clone().unwrap_or_else(|| unit.clone());
            let mut alias = self.name_for(item, &as_unit, file)?;
            // A template's alias is a template: the enabled instance's
            // alias is that instance of it.
            if let (true, Some(inst)) = (alias.is_template(), as_unit.instance()) {
                if !inst.is_empty() {
                    alias = alias
                        .with_instance(inst)
                        .map_err(|e| EnableError::BadName {
                            file: file.display().to_string(),
                            line: item.line,
                            unit: unit.to_string(),
                            word: item.name.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
            out.push(Link {
                path: alias.to_string(),
                kind: LinkKind::Alias,
            });
        }
        Ok(out)
    }

    fn name_for(&self, item: &Item, unit: &UnitName, file: &Path) -> Result<UnitName, EnableError> {
        expand(&item.name, unit)
            .and_then(|x| UnitName::parse(&x).map_err(|e| e.to_string()))
            .map_err(|reason| EnableError::BadName {
                file: file.display().to_string(),
                line: item.line,
                unit: unit.to_string(),
                word: item.name.clone(),
                reason,
            })
    }
}

/// systemd's rules for `Alias=`: the same unit type; a template's alias is
/// a template, a plain unit's alias is plain.
fn check_alias(unit: &UnitName, alias: &UnitName) -> Result<(), String> {
    if alias.unit_type() != unit.unit_type() {
        return Err(format!(
            "alias {alias} must have the unit's type .{}",
            unit.unit_type()
        ));
    }
    if unit.instance().is_some() != alias.instance().is_some() {
        return Err(format!(
            "alias {alias} of {unit}: a template's alias must be a template, a plain unit's a plain name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    fn install(unit: &str, text: &str) -> Result<Install, String> {
        Install::parse(&u(unit), Path::new("u"), text, &mut Vec::new()).map_err(|e| e.to_string())
    }

    fn links(unit: &str, text: &str) -> Result<Vec<String>, String> {
        let i = install(unit, text)?;
        i.links(&u(unit), Path::new("u"))
            .map(|l| l.into_iter().map(|l| l.path).collect())
            .map_err(|e| e.to_string())
    }

    fn names(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn reads_install() {
        let text = "[Unit]\nDescription=x = y\n\n[Service]\nExecStart=/oem/bin/agent \\\n  --flag\n[Install]\n# c\nWantedBy=multi-user.target \\\n  timers.target\nRequiredBy=a.service\nAlias=b.service\nAlso=c.socket\nX-Other=1\n";
        let i = install("agent.service", text).unwrap();
        assert_eq!(names(&i.wanted_by), ["multi-user.target", "timers.target"]);
        assert_eq!(i.wanted_by[1].line, 9);
        assert_eq!(names(&i.required_by), ["a.service"]);
        assert_eq!(names(&i.alias), ["b.service"]);
        assert_eq!(names(&i.also), ["c.socket"]);
        assert_eq!(i.other, vec![(14, "X-Other".to_string())]);
        assert_eq!(
            links("agent.service", text).unwrap(),
            [
                "multi-user.target.wants/agent.service",
                "timers.target.wants/agent.service",
                "a.service.requires/agent.service",
                "b.service"
            ]
        );
    }

    #[test]
    fn empty_assignment_resets_and_sections_repeat() {
        let i = install(
            "a.service",
            "[Install]\nWantedBy=x.target\nWantedBy=\nWantedBy=y.target\n[Install]\nWantedBy=\"z.target\"\n",
        )
        .unwrap();
        assert_eq!(names(&i.wanted_by), ["y.target", "z.target"]);
        assert!(install("a.service", "[Service]\nExecStart=x\n")
            .unwrap()
            .is_static());
    }

    // The cases keel-oem, keel-provision and keel-image disagreed on.
    #[test]
    fn templates() {
        let t = "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n";
        // A template is enabled as its DefaultInstance (keel-image skipped
        // templates altogether).
        assert_eq!(
            links("getty@.service", t).unwrap(),
            ["getty.target.wants/getty@tty1.service"]
        );
        // An instance is enabled as itself, whatever DefaultInstance says.
        assert_eq!(
            links("getty@tty2.service", t).unwrap(),
            ["getty.target.wants/getty@tty2.service"]
        );
        // No DefaultInstance: nothing to enable it as.
        assert_eq!(
            links("getty@.service", "[Install]\nWantedBy=getty.target\n").unwrap_err(),
            "getty@.service is a template without DefaultInstance=: no instance to enable"
        );
        // Specifiers, as `systemctl enable` expands them.
        assert_eq!(
            links(
                "c@.service",
                "[Install]\nWantedBy=m-%i.target %p.target\nDefaultInstance=web\n"
            )
            .unwrap(),
            [
                "m-web.target.wants/c@web.service",
                "c.target.wants/c@web.service"
            ]
        );
        assert_eq!(
            install("a.service", "[Install]\nWantedBy=%Z.target\n").unwrap_err(),
            "u:2: WantedBy=%Z.target: specifier %Z is not supported in [Install]"
        );
        // DefaultInstance on a plain unit: ignored with a warning.
        let mut w = Vec::new();
        let i = Install::parse(
            &u("a.service"),
            Path::new("u"),
            "[Install]\nDefaultInstance=x\n",
            &mut w,
        )
        .unwrap();
        assert_eq!(i.default_instance, None);
        assert_eq!(w.len(), 1);
        assert_eq!(
            install("a@.service", "[Install]\nDefaultInstance=a/b\n").unwrap_err(),
            "u:2: DefaultInstance=a/b: \"a/b\" is not a valid instance name"
        );
    }

    #[test]
    fn aliases() {
        // keel-provision linked any Alias=, keel-oem ignored it, keel-image
        // did not read it: systemd's rules.
        assert_eq!(
            links("sshd.service", "[Install]\nAlias=ssh.service\n").unwrap(),
            ["ssh.service"]
        );
        assert_eq!(
            install("sshd.service", "[Install]\nAlias=ssh.socket\n").unwrap_err(),
            "u:2: Alias=ssh.socket: alias ssh.socket must have the unit's type .service"
        );
        assert!(install("sshd.service", "[Install]\nAlias=ssh@.service\n").is_err());
        assert!(install("a@.service", "[Install]\nAlias=b.service\n").is_err());
        assert_eq!(
            links(
                "a@.service",
                "[Install]\nAlias=b@.service\nDefaultInstance=x\n"
            )
            .unwrap(),
            ["b@x.service"]
        );
        assert_eq!(
            links("a@.service", "[Install]\nAlias=b@.service\n").unwrap(),
            ["b@.service"]
        );
        assert_eq!(
            links("a@y.service", "[Install]\nAlias=b@.service\n").unwrap(),
            ["b@y.service"]
        );
    }

    #[test]
    fn negative_fixtures() {
        let cases = [
            (
                "[Install]\nWantedBy=../etc\n",
                "u:2: WantedBy=../etc: \"../etc\": unknown unit type ./etc",
            ),
            (
                "[Install]\nWantedBy=a.target \"b\n",
                "u:2: WantedBy=a.target \"b: unterminated \" quote",
            ),
            (
                "[Install]\nRequiredBy=x.conf\n",
                "u:2: RequiredBy=x.conf: \"x.conf\": unknown unit type .conf",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                install("a.service", text).unwrap_err(),
                want,
                "input {text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "(\\[Install\\]\n)?((WantedBy|Alias|DefaultInstance|Also)=[a-z@.%i \"\\\\]{0,20}\n){0,4}") {
            for unit in ["a.service", "a@.service", "a@b.service"] {
                if let Ok(i) = install(unit, &s) {
                    let _ = i.links(&u(unit), Path::new("u"));
                }
            }
        }
    }
}
