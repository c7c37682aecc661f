//! Host conditions in `[Match]` (systemd.network(5), systemd.unit(5)
//! `Condition*=` semantics): `KernelCommandLine=`, `Virtualization=`,
//! `Host=`, `Architecture=`. They describe the machine, not a link, so
//! they are tested once when a file is loaded: a file whose conditions do
//! not hold is skipped, as networkd does. `!` negates; conditions with a
//! `|` prefix are "triggering": at least one of them must hold.

use std::path::Path;

use serde::Serialize;

use super::glob::fnmatch;

/// Which condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CondKind {
    KernelCommandLine,
    Virtualization,
    Host,
    Architecture,
}

impl CondKind {
    pub fn parse(key: &str) -> Option<CondKind> {
        Some(match key {
            "KernelCommandLine" => CondKind::KernelCommandLine,
            "Virtualization" => CondKind::Virtualization,
            "Host" => CondKind::Host,
            "Architecture" => CondKind::Architecture,
            _ => return None,
        })
    }
}

/// One condition as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub kind: CondKind,
    pub value: String,
    pub negate: bool,
    pub trigger: bool,
}

/// Architecture names systemd knows (`systemd-analyze architectures`).
const ARCHITECTURES: &[&str] = &[
    "alpha",
    "arc",
    "arc-be",
    "arm",
    "arm-be",
    "arm64",
    "arm64-be",
    "cris",
    "ia64",
    "loongarch64",
    "m68k",
    "mips",
    "mips-le",
    "mips64",
    "mips64-le",
    "native",
    "nios2",
    "parisc",
    "parisc64",
    "ppc",
    "ppc-le",
    "ppc64",
    "ppc64-le",
    "riscv32",
    "riscv64",
    "s390",
    "s390x",
    "sh",
    "sh64",
    "sparc",
    "sparc64",
    "tilegx",
    "x86",
    "x86-64",
];

impl Condition {
    /// Parse `KEY=VALUE`; an empty value resets (returns None; systemd
    /// resets all conditions, keel-netd only ignores the assignment).
    pub fn parse(key: &str, value: &str) -> Result<Option<Condition>, String> {
        let Some(kind) = CondKind::parse(key) else {
            return Err(format!("unknown condition {key}="));
        };
        let mut v = value.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let trigger = v.starts_with('|');
        if trigger {
            v = v[1..].trim_start();
        }
        let negate = v.starts_with('!');
        if negate {
            v = v[1..].trim_start();
        }
        if v.is_empty() {
            return Err("expected a value after '|' or '!'".into());
        }
        if v.contains(char::is_whitespace) && kind != CondKind::KernelCommandLine {
            return Err(
                "expected one value (a '#' inside a value is not a comment in this syntax)".into(),
            );
        }
        if kind == CondKind::Architecture && !ARCHITECTURES.contains(&v) {
            return Err(format!("unknown architecture '{v}' (x86-64, arm64, …)"));
        }
        Ok(Some(Condition {
            kind,
            value: v.to_string(),
            negate,
            trigger,
        }))
    }

    fn holds_plain(&self, h: &HostFacts) -> bool {
        let v = self.value.as_str();
        match self.kind {
            CondKind::KernelCommandLine => h.cmdline.split_ascii_whitespace().any(|w| {
                if v.contains('=') {
                    w == v
                } else {
                    w == v || w.strip_prefix(v).is_some_and(|r| r.starts_with('='))
                }
            }),
            CondKind::Virtualization => match super::parse_bool(v) {
                Some(b) => h.virtualization.is_some() == b,
                None => match v {
                    "vm" => h.virtualization.is_some() && !h.container,
                    "container" => h.container,
                    id => h.virtualization.as_deref() == Some(id),
                },
            },
            CondKind::Host => {
                let id = v.replace('-', "").to_ascii_lowercase();
                (id.len() == 32 && id == h.machine_id)
                    || fnmatch(&v.to_ascii_lowercase(), &h.hostname.to_ascii_lowercase())
            }
            CondKind::Architecture => v == "native" || v == h.architecture,
        }
    }

    /// Whether the condition holds on `h` (negation applied).
    pub fn holds(&self, h: &HostFacts) -> bool {
        self.holds_plain(h) != self.negate
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}={}{}{}",
            self.kind,
            if self.trigger { "|" } else { "" },
            if self.negate { "!" } else { "" },
            self.value
        )
    }
}

/// systemd's rule: every non-triggering condition holds, and if there
/// are triggering ones, at least one of them does.
pub fn all_hold(conds: &[Condition], h: &HostFacts) -> bool {
    let plain = conds.iter().filter(|c| !c.trigger).all(|c| c.holds(h));
    let mut triggers = conds.iter().filter(|c| c.trigger).peekable();
    let trig = triggers.peek().is_none() || triggers.any(|c| c.holds(h));
    plain && trig
}

/// What the conditions are tested against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cmdline: String,
    /// systemd-detect-virt's identifier (`kvm`, `qemu`, `docker`…); None
    /// on bare metal.
    pub virtualization: Option<String>,
    pub container: bool,
    pub hostname: String,
    /// /etc/machine-id, lowercase hex.
    pub machine_id: String,
    /// systemd's architecture name (`x86-64`, `arm64`…).
    pub architecture: String,
}

/// systemd's name for the architecture this binary runs on.
pub fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loongarch64",
        other => other,
    }
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The virtualization as systemd-detect-virt would name it, from what a
/// process can read without CPUID: the container markers systemd sets
/// (`/run/systemd/container`, `container=` in the environment), then DMI
/// vendor strings, `/sys/hypervisor/type`, and `kvm-clock` to tell KVM
/// from plain QEMU (TCG).
pub fn detect_virtualization(root: &Path) -> (Option<String>, bool) {
    let r = |p: &str| read(&root.join(p.trim_start_matches('/')).to_string_lossy());
    if let Some(c) = r("/run/systemd/container").filter(|c| !c.is_empty()) {
        return (Some(c), true);
    }
    if let Ok(c) = std::env::var("container") {
        if !c.is_empty() {
            return (Some(c), true);
        }
    }
    let vendor = r("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
    let product = r("/sys/class/dmi/id/product_name").unwrap_or_default();
    let bios = r("/sys/class/dmi/id/bios_vendor").unwrap_or_default();
    let kvm_clock = r("/sys/devices/system/clocksource/clocksource0/available_clocksource")
        .is_some_and(|c| c.split_whitespace().any(|w| w == "kvm-clock"));
    let dmi = format!("{vendor} {product} {bios}");
    let id = if dmi.contains("Amazon EC2") {
        Some("amazon")
    } else if dmi.contains("Google") {
        Some("google")
    } else if kvm_clock || dmi.contains("KVM") {
        Some("kvm")
    } else if dmi.contains("QEMU") {
        Some("qemu")
    } else if dmi.contains("VMware") || dmi.contains("VMW") {
        Some("vmware")
    } else if dmi.contains("innotek GmbH")
        || dmi.contains("VirtualBox")
        || dmi.contains("Oracle Corporation")
    {
        Some("oracle")
    } else if vendor.contains("Microsoft Corporation") && product.contains("Virtual Machine") {
        Some("microsoft")
    } else if dmi.contains("Xen") || r("/sys/hypervisor/type").as_deref() == Some("xen") {
        Some("xen")
    } else if dmi.contains("Parallels") {
        Some("parallels")
    } else if dmi.contains("BHYVE") {
        Some("bhyve")
    } else {
        None
    };
    (id.map(String::from), false)
}

impl HostFacts {
    /// The facts of the running machine.
    pub fn detect() -> HostFacts {
        let (virtualization, container) = detect_virtualization(Path::new("/"));
        HostFacts {
            cmdline: read("/proc/cmdline").unwrap_or_default(),
            virtualization,
            container,
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            machine_id: read("/etc/machine-id")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            architecture: native_architecture().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            cmdline: "console=ttyS0 keel.first_boot=1 quiet".into(),
            virtualization: Some("kvm".into()),
            container: false,
            hostname: "node1.lab".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            architecture: "x86-64".into(),
        }
    }

    fn c(k: &str, v: &str) -> Condition {
        Condition::parse(k, v).unwrap().unwrap()
    }

    #[test]
    fn conditions() {
        let h = host();
        let yes = [
            ("KernelCommandLine", "quiet"),
            ("KernelCommandLine", "console"),
            ("KernelCommandLine", "console=ttyS0"),
            ("KernelCommandLine", "!console=tty0"),
            ("KernelCommandLine", "!cons"),
            ("Virtualization", "yes"),
            ("Virtualization", "vm"),
            ("Virtualization", "kvm"),
            ("Virtualization", "!container"),
            ("Host", "node1.lab"),
            ("Host", "NODE*"),
            ("Host", "01234567-89ab-cdef-0123-456789abcdef"),
            ("Architecture", "x86-64"),
            ("Architecture", "!arm64"),
        ];
        for (k, v) in yes {
            assert!(c(k, v).holds(&h), "{k}={v}");
        }
        let no = [
            ("KernelCommandLine", "keel.first_boot=0"),
            ("Virtualization", "no"),
            ("Virtualization", "qemu"),
            ("Host", "node2*"),
            ("Architecture", "arm64"),
        ];
        for (k, v) in no {
            assert!(!c(k, v).holds(&h), "{k}={v}");
        }
        // Triggering: one of them suffices.
        let t = [c("Host", "|node2"), c("Host", "|node1.lab")];
        assert!(all_hold(&t, &h));
        let t = [c("Host", "|node2"), c("Architecture", "arm64")];
        assert!(!all_hold(&t, &h));
        assert!(Condition::parse("Architecture", "amd64").is_err());
        assert!(Condition::parse("Host", "a # comment").is_err());
        assert_eq!(Condition::parse("Host", "").unwrap(), None);
    }

    #[test]
    fn virtualization_from_dmi() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("sys_vendor"), "QEMU\n").unwrap();
        std::fs::write(d.join("product_name"), "Standard PC (Q35 + ICH9, 2009)\n").unwrap();
        if std::env::var_os("container").is_none() {
            assert_eq!(
                detect_virtualization(t.path()),
                (Some("qemu".into()), false)
            );
            let cs = t.path().join("sys/devices/system/clocksource/clocksource0");
            std::fs::create_dir_all(&cs).unwrap();
            std::fs::write(cs.join("available_clocksource"), "kvm-clock tsc acpi_pm\n").unwrap();
            assert_eq!(detect_virtualization(t.path()), (Some("kvm".into()), false));
        }
        std::fs::create_dir_all(t.path().join("run/systemd")).unwrap();
        std::fs::write(t.path().join("run/systemd/container"), "systemd-nspawn\n").unwrap();
        assert_eq!(
            detect_virtualization(t.path()),
            (Some("systemd-nspawn".into()), true)
        );
    }
}
