//! What the generator makes of a vendor's unit file: the unit types it
//! accepts and which `[Install]` keys it acts on. The syntax (sections,
//! continuations, comments, quoting, unit names, templates, the links
//! `[Install]` asks for) is keel-unit's; only these OEM semantics live here:
//!
//! - accepted types: `.service .socket .timer .path .target .mount
//!   .automount` (no devices, swaps, slices or scopes from an OEM tree);
//! - acted on: `WantedBy=`, `RequiredBy=`, `DefaultInstance=`; `Alias=`,
//!   `Also=`, `UpheldBy=` and any other key are reported and ignored (a
//!   vendor unit lives for one boot in the generator directory and must not
//!   take other names).

use std::path::Path;

use keel_unit::install::{Install, LinkKind};
use keel_unit::{SyntaxError, UnitName, UnitType, Warning};

/// Unit types a vendor may ship.
pub const UNIT_TYPES: &[UnitType] = &[
    UnitType::Service,
    UnitType::Socket,
    UnitType::Timer,
    UnitType::Path,
    UnitType::Target,
    UnitType::Mount,
    UnitType::Automount,
];

/// A unit name the generator accepts: valid (keel-unit) and of a type in
/// [`UNIT_TYPES`].
pub fn oem_unit(name: &str) -> Option<UnitName> {
    UnitName::parse(name)
        .ok()
        .filter(|u| UNIT_TYPES.contains(&u.unit_type()))
}

/// What the generator takes from a unit's `[Install]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OemInstall {
    /// `.wants`/`.requires` links relative to the generator directory.
    pub links: Vec<String>,
    /// A template with targets but no `DefaultInstance=`: not enabled.
    pub template_without_instance: bool,
    /// Keys it does not act on, with their lines, in line order.
    pub ignored: Vec<(usize, String)>,
    /// Syntax warnings (keel-unit's), reported as they are.
    pub warnings: Vec<Warning>,
}

/// Read `unit`'s file text and decide its links.
pub fn read_install(unit: &UnitName, file: &Path, text: &str) -> Result<OemInstall, SyntaxError> {
    let mut out = OemInstall::default();
    let mut install = Install::parse(unit, file, text, &mut out.warnings)?;
    let mut ignored = std::mem::take(&mut install.other);
    for (key, items) in [
        ("Alias", std::mem::take(&mut install.alias)),
        ("Also", std::mem::take(&mut install.also)),
        ("UpheldBy", std::mem::take(&mut install.upheld_by)),
    ] {
        for i in items {
            if !ignored.contains(&(i.line, key.to_string())) {
                ignored.push((i.line, key.to_string()));
            }
        }
    }
    ignored.sort();
    out.ignored = ignored;
    if unit.is_template() && install.default_instance.is_none() {
        out.template_without_instance = !install.is_static();
        return Ok(out);
    }
    // Names were checked when read; a template's DefaultInstance is valid.
    let links = install.links(unit, file).unwrap_or_default();
    out.links = links
        .into_iter()
        .filter(|l| matches!(l.kind, LinkKind::Wants | LinkKind::Requires))
        .map(|l| l.path)
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(unit: &str, text: &str) -> Result<OemInstall, String> {
        read_install(&UnitName::parse(unit).unwrap(), Path::new("u"), text)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_install() {
        let text = "[Unit]\nDescription=x = y\n\n[Service]\nExecStart=/oem/bin/agent \\\n  --flag\n[Install]\n# c\nWantedBy=multi-user.target \\\n  timers.target\nRequiredBy=a.service\nAlias=b.service\n";
        let i = read("agent.service", text).unwrap();
        assert_eq!(
            i.links,
            [
                "multi-user.target.wants/agent.service",
                "timers.target.wants/agent.service",
                "a.service.requires/agent.service"
            ]
        );
        assert_eq!(i.ignored, vec![(12, "Alias".to_string())]);
    }

    #[test]
    fn templates() {
        let i = read(
            "tty@.service",
            "[Install]\nWantedBy=getty.target\nDefaultInstance=ttyS1\n",
        )
        .unwrap();
        assert_eq!(i.links, ["getty.target.wants/tty@ttyS1.service"]);
        let i = read("tty@.service", "[Install]\nWantedBy=getty.target\n").unwrap();
        assert!(i.template_without_instance && i.links.is_empty());
        assert!(
            !read("tty@.service", "[Service]\n")
                .unwrap()
                .template_without_instance
        );
    }

    #[test]
    fn negative_fixtures() {
        let cases = [
            ("[Install\n", "u:1: unterminated section header '[Install'"),
            (
                "[Install]\nWantedBy\n",
                "u:2: expected 'Key=Value' or '[Section]', found 'WantedBy'",
            ),
            (
                "[Install]\nWantedBy=../etc\n",
                "u:2: WantedBy=../etc: \"../etc\": unknown unit type ./etc",
            ),
            ("[Install]\nbad key=1\n", "u:2: invalid key name 'bad key'"),
        ];
        for (input, want) in cases {
            assert_eq!(
                read("u.service", input).unwrap_err(),
                want,
                "input: {input:?}"
            );
        }
        assert_eq!(
            read("u@.service", "[Install]\nDefaultInstance=a/b\n").unwrap_err(),
            "u:2: DefaultInstance=a/b: \"a/b\" is not a valid instance name"
        );
        // systemd ignores an assignment outside any section (a warning)
        // and ends a continuation open at the end of the file; keel-oem
        // used to reject both.
        let i = read("u.service", "Foo=1\n[Install]\nWantedBy=x.target \\").unwrap();
        assert_eq!(i.warnings.len(), 1);
        assert_eq!(i.links, ["x.target.wants/u.service"]);
    }

    #[test]
    fn unit_names() {
        assert!(oem_unit("agent.service").is_some());
        assert!(oem_unit("agent@.service").is_some());
        assert!(oem_unit("agent@tty1.service").is_some());
        assert!(oem_unit("agent").is_none());
        assert!(oem_unit("../x.service").is_none());
        assert!(oem_unit(".service").is_none());
        // A valid unit name, but not a type an OEM tree may ship.
        assert!(oem_unit("x.slice").is_none());
        // systemd splits at the first `@`: a valid instance.
        assert!(oem_unit("a@b@c.service").is_some());
        assert!(oem_unit("agent@.service").unwrap().is_template());
    }

    proptest::proptest! {
        #[test]
        fn random_units_never_panic(s in "\\PC*") {
            let _ = read("u.service", &s);
            let _ = read("u@.service", &s);
        }
        #[test]
        fn random_install_lines_never_panic(s in "(\\[Install\\]\n)?([A-Za-z@.= \\\\\n]{0,40})") {
            let _ = read("u.service", &s);
        }
    }
}
