//! The kernel command line: one parser for every Keel binary.
//!
//! | parameter | read by | meaning |
//! |---|---|---|
//! | `keel.usrhash.a=HEX`, `keel.usrhash.b=HEX` | keel-init | dm-verity root hash (SHA-256, 64 hex digits) of a USR slot; a slot without one is never mounted |
//! | `keel.usr=a`, `keel.usr=b` | keel-init | the slot a UEFI loader entry belongs to (its kernel and initramfs are that slot's; written by keel-image and the update agent through keel-release's ESP layout) |
//! | `keel.first_boot` (`=1`, `=yes`, `=true`, bare) | keel-init, keel-provision | redo first-boot work (identity, provisioning); `=0`/`=no`/`=false` or absent: no |
//! | `keel.disk_timeout=SECONDS` | keel-init | how long to wait for the boot disk (default 15) |
//! | `keel.config_url=data:…` (or `ignition.config.url=`) | keel-provision | a first-boot config in a `data:` URL |
//!
//! Words are split as the kernel does (whitespace, double quotes group and
//! are removed); `key=value` or a bare `key`; the last occurrence of a key
//! wins. [`Cmdline::parse`] never fails: parameters of the kernel, systemd
//! and others are kept and ignored. The typed accessors validate a Keel
//! parameter's value and name it in the error.

use std::time::Duration;

use thiserror::Error;

use crate::Slot;

/// Where the running kernel's command line is read.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// The root hash of USR-A.
pub const USRHASH_A: &str = "keel.usrhash.a";
/// The root hash of USR-B.
pub const USRHASH_B: &str = "keel.usrhash.b";
/// The slot whose loader entry booted (`a` or `b`): the kernel and
/// initramfs running are that slot's.
pub const USR_SLOT: &str = "keel.usr";
/// Forces first-boot work again.
pub const FIRST_BOOT: &str = "keel.first_boot";
/// Bound of the wait for the boot disk, in seconds.
pub const DISK_TIMEOUT: &str = "keel.disk_timeout";
/// A first-boot config as a `data:` URL: Keel's name, then Ignition's.
pub const CONFIG_URL: &[&str] = &["keel.config_url", "ignition.config.url"];

/// The disk wait when `keel.disk_timeout` is absent.
pub const DEFAULT_DISK_TIMEOUT: Duration = Duration::from_secs(15);

/// A bad value of a Keel parameter.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// A root hash that is not 64 hex digits.
    #[error("kernel command line: {key}={value:?} is not a hex SHA-256 root hash")]
    BadHash {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A number that does not parse.
    #[error("kernel command line: {key}={value:?} is not a number of seconds")]
    BadNumber {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A slot name that is not `a` or `b`.
    #[error("kernel command line: {key}={value:?} is not a slot (a or b)")]
    BadSlot {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A boolean that does not parse.
    #[error("kernel command line: {key}={value:?} is not 0 or 1")]
    BadBool {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
}

/// One word of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Everything before the first `=`.
    pub key: String,
    /// Everything after it; `None` for a bare word (`quiet`).
    pub value: Option<String>,
}

/// A parsed command line: every parameter, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Param>,
}

/// Split a command line into words, honouring double quotes as the kernel
/// does (`foo="a b"` is one word `foo=a b`; `""` is an empty word).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

impl Cmdline {
    /// Parse `/proc/cmdline` text. Never fails.
    pub fn parse(line: &str) -> Self {
        let params = words(line)
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => Param {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                },
                None => Param {
                    key: w,
                    value: None,
                },
            })
            .collect();
        Cmdline { params }
    }

    /// Every parameter, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The last occurrence of `key`: `None` if absent, `Some(None)` for a
    /// bare `key`, `Some(Some(v))` for `key=v`.
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| p.value.as_deref())
    }

    /// The value of `key=value` (last occurrence); `None` when absent or bare.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).flatten()
    }

    /// A boolean parameter: absent is false; bare `key`, `key=`, `=1`,
    /// `=yes`, `=true` are true; `=0`, `=no`, `=false` are false; anything
    /// else is an error naming it.
    pub fn flag(&self, key: &str) -> Result<bool, CmdlineError> {
        match self.get(key) {
            None => Ok(false),
            Some(None | Some("" | "1" | "yes" | "true")) => Ok(true),
            Some(Some("0" | "no" | "false")) => Ok(false),
            Some(Some(v)) => Err(CmdlineError::BadBool {
                key: key.into(),
                value: v.into(),
            }),
        }
    }

    /// `keel.first_boot`: redo first-boot work.
    pub fn first_boot(&self) -> Result<bool, CmdlineError> {
        self.flag(FIRST_BOOT)
    }

    /// `keel.usrhash.a` / `keel.usrhash.b`, lower-cased; `None` when absent.
    pub fn usrhash(&self, slot: Slot) -> Result<Option<String>, CmdlineError> {
        let key = usrhash_param(slot);
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let v = v.unwrap_or("");
                if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Some(v.to_ascii_lowercase()))
                } else {
                    Err(CmdlineError::BadHash {
                        key: key.into(),
                        value: v.into(),
                    })
                }
            }
        }
    }

    /// `keel.usr`: the slot whose kernel and initramfs are running (a UEFI
    /// loader entry names it); `None` when absent (a direct `-kernel` boot).
    pub fn usr_slot(&self) -> Result<Option<Slot>, CmdlineError> {
        match self.get(USR_SLOT) {
            None => Ok(None),
            Some(Some("a")) => Ok(Some(Slot::A)),
            Some(Some("b")) => Ok(Some(Slot::B)),
            Some(v) => Err(CmdlineError::BadSlot {
                key: USR_SLOT.into(),
                value: v.unwrap_or("").into(),
            }),
        }
    }

    /// `keel.disk_timeout`, or [`DEFAULT_DISK_TIMEOUT`].
    pub fn disk_timeout(&self) -> Result<Duration, CmdlineError> {
        match self.get(DISK_TIMEOUT) {
            None => Ok(DEFAULT_DISK_TIMEOUT),
            Some(v) => {
                let v = v.unwrap_or("");
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| CmdlineError::BadNumber {
                        key: DISK_TIMEOUT.into(),
                        value: v.into(),
                    })
            }
        }
    }

    /// The first of [`CONFIG_URL`] given with a value: (parameter, URL).
    /// The URL is not checked here (keel-provision decodes it).
    pub fn config_url(&self) -> Option<(&'static str, &str)> {
        CONFIG_URL
            .iter()
            .find_map(|k| self.value(k).map(|v| (*k, v)))
    }
}

/// The parameter carrying `slot`'s root hash (`keel.usrhash.a`).
pub fn usrhash_param(slot: Slot) -> &'static str {
    match slot {
        Slot::A => USRHASH_A,
        Slot::B => USRHASH_B,
    }
}

/// `keel.usrhash.a=HASH`, as an image builder puts it on a command line.
pub fn usrhash_arg(slot: Slot, hash: &str) -> String {
    format!("{}={hash}", usrhash_param(slot))
}

/// `keel.usr=a`, as a loader entry names its slot.
pub fn usr_slot_arg(slot: Slot) -> String {
    format!("{USR_SLOT}={}", slot.as_str().to_ascii_lowercase())
}

/// Every Keel parameter keel-init needs, validated at once (a bad value of
/// any of them stops the boot with a message naming it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeelParams {
    /// Root hash of USR-A.
    pub usrhash_a: Option<String>,
    /// Root hash of USR-B.
    pub usrhash_b: Option<String>,
    /// The slot whose kernel is running (`keel.usr=`), when a loader
    /// entry said so.
    pub kernel_slot: Option<Slot>,
    /// Forced first boot.
    pub first_boot: bool,
    /// Disk wait bound.
    pub disk_timeout: Duration,
}

impl Default for KeelParams {
    fn default() -> Self {
        KeelParams {
            usrhash_a: None,
            usrhash_b: None,
            kernel_slot: None,
            first_boot: false,
            disk_timeout: DEFAULT_DISK_TIMEOUT,
        }
    }
}

impl KeelParams {
    /// Validate the Keel parameters of a parsed command line.
    pub fn from_cmdline(c: &Cmdline) -> Result<Self, CmdlineError> {
        Ok(KeelParams {
            usrhash_a: c.usrhash(Slot::A)?,
            usrhash_b: c.usrhash(Slot::B)?,
            kernel_slot: c.usr_slot()?,
            first_boot: c.first_boot()?,
            disk_timeout: c.disk_timeout()?,
        })
    }

    /// Parse and validate `/proc/cmdline` text.
    pub fn parse(line: &str) -> Result<Self, CmdlineError> {
        Self::from_cmdline(&Cmdline::parse(line))
    }

    /// The root hash for a slot.
    pub fn usrhash(&self, slot: Slot) -> Option<&str> {
        match slot {
            Slot::A => self.usrhash_a.as_deref(),
            Slot::B => self.usrhash_b.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_keel_parameters() {
        let c = KeelParams::parse(&format!(
            "console=ttyS0 keel.usrhash.a={} quiet keel.first_boot=1 keel.disk_timeout=3 foo=\"a b\"\n",
            H.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.usrhash(Slot::A), Some(H));
        assert_eq!(c.usrhash(Slot::B), None);
        assert!(c.first_boot);
        assert_eq!(c.disk_timeout, Duration::from_secs(3));
    }

    #[test]
    fn usr_slot_names_the_kernel_s_slot() {
        assert_eq!(
            KeelParams::parse("keel.usr=b").unwrap().kernel_slot,
            Some(Slot::B)
        );
        assert_eq!(
            KeelParams::parse("keel.usr=a").unwrap().kernel_slot,
            Some(Slot::A)
        );
        assert_eq!(KeelParams::parse("quiet").unwrap().kernel_slot, None);
        for bad in ["keel.usr", "keel.usr=", "keel.usr=c", "keel.usr=B"] {
            let e = KeelParams::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("keel.usr") && e.contains("not a slot"),
                "{bad}: {e}"
            );
        }
        let line = format!("x {} y", usr_slot_arg(Slot::B));
        assert_eq!(KeelParams::parse(&line).unwrap().kernel_slot, Some(Slot::B));
    }

    #[test]
    fn defaults() {
        assert_eq!(KeelParams::parse("").unwrap(), KeelParams::default());
        assert_eq!(
            KeelParams::parse("quiet").unwrap().disk_timeout,
            Duration::from_secs(15)
        );
    }

    #[test]
    fn bare_first_boot_is_true_and_values_are_read_alike() {
        for (line, want) in [
            ("keel.first_boot", true),
            ("keel.first_boot=", true),
            ("keel.first_boot=1", true),
            ("keel.first_boot=yes", true),
            ("keel.first_boot=true", true),
            ("keel.first_boot=0", false),
            ("keel.first_boot=no", false),
            ("keel.first_boot=false", false),
            ("quiet", false),
            ("keel.first_boot_x=1", false),
            ("keel.first_boot=1 keel.first_boot=0", false),
            ("keel.first_boot=0 keel.first_boot", true),
        ] {
            assert_eq!(Cmdline::parse(line).first_boot(), Ok(want), "{line}");
        }
    }

    #[test]
    fn bad_values_named() {
        assert_eq!(
            KeelParams::parse("keel.usrhash.a=xyz")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.usrhash.a=\"xyz\" is not a hex SHA-256 root hash"
        );
        assert_eq!(
            KeelParams::parse("keel.usrhash.b").unwrap_err().to_string(),
            "kernel command line: keel.usrhash.b=\"\" is not a hex SHA-256 root hash"
        );
        assert_eq!(
            KeelParams::parse("keel.disk_timeout=soon")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.disk_timeout=\"soon\" is not a number of seconds"
        );
        assert_eq!(
            KeelParams::parse("keel.first_boot=maybe")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.first_boot=\"maybe\" is not 0 or 1"
        );
    }

    #[test]
    fn quoting_and_lookup() {
        assert_eq!(words(r#"a "b c" d="e f"  "#), vec!["a", "b c", "d=e f"]);
        let c = Cmdline::parse(r#"root=/dev/vda7 quiet "keel.config_url=data:,a b" x=1=2"#);
        assert_eq!(c.params().len(), 4);
        assert_eq!(c.get("quiet"), Some(None));
        assert_eq!(c.value("quiet"), None);
        assert_eq!(c.value("x"), Some("1=2"));
        assert_eq!(c.config_url(), Some(("keel.config_url", "data:,a b")));
        let c = Cmdline::parse("ignition.config.url=data:,x keel.config_url");
        assert_eq!(c.config_url(), Some(("ignition.config.url", "data:,x")));
        assert_eq!(Cmdline::parse("quiet").config_url(), None);
    }

    #[test]
    fn builder_side_round_trips() {
        let line = format!("console=ttyS0 {}", usrhash_arg(Slot::B, H));
        assert_eq!(
            Cmdline::parse(&line).usrhash(Slot::B),
            Ok(Some(H.to_string()))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let c = Cmdline::parse(&s);
            let _ = KeelParams::from_cmdline(&c);
            let _ = c.config_url();
        }
    }
}
