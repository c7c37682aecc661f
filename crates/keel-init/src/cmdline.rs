//! The kernel command line parameters keel-init reads.
//!
//! - `keel.usrhash.a=HEX`, `keel.usrhash.b=HEX`: the dm-verity root hash of
//!   each USR slot. A slot without a root hash is never mounted.
//! - `keel.first_boot=1`: treat this boot as the first (re-run first-boot work).
//! - `keel.disk_timeout=SECONDS`: how long to wait for the boot disk (default 15).

use std::time::Duration;

use thiserror::Error;

/// A bad parameter value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// A root hash that is not hex of a known length.
    #[error("kernel command line: {key}={value:?} is not a hex SHA-256 root hash")]
    BadHash { key: String, value: String },
    /// A number that does not parse.
    #[error("kernel command line: {key}={value:?} is not a number of seconds")]
    BadNumber { key: String, value: String },
    /// A boolean that does not parse.
    #[error("kernel command line: {key}={value:?} is not 0 or 1")]
    BadBool { key: String, value: String },
}

/// What keel-init takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// Root hash of USR-A.
    pub usrhash_a: Option<String>,
    /// Root hash of USR-B.
    pub usrhash_b: Option<String>,
    /// Forced first boot.
    pub first_boot: bool,
    /// Disk wait bound.
    pub disk_timeout: Duration,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            usrhash_a: None,
            usrhash_b: None,
            first_boot: false,
            disk_timeout: Duration::from_secs(15),
        }
    }
}

/// Split a command line into words, honouring double quotes as the kernel does.
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

fn hash(key: &str, v: &str) -> Result<String, CmdlineError> {
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(CmdlineError::BadHash {
            key: key.into(),
            value: v.into(),
        })
    }
}

impl Cmdline {
    /// Parse `/proc/cmdline` text. Unknown parameters are ignored (they belong
    /// to the kernel or systemd); a bad value of a Keel parameter is an error.
    pub fn parse(line: &str) -> Result<Self, CmdlineError> {
        let mut c = Cmdline::default();
        for w in words(line) {
            let (k, v) = w.split_once('=').unwrap_or((w.as_str(), ""));
            match k {
                "keel.usrhash.a" => c.usrhash_a = Some(hash(k, v)?),
                "keel.usrhash.b" => c.usrhash_b = Some(hash(k, v)?),
                "keel.first_boot" => {
                    c.first_boot = match v {
                        "" | "1" | "yes" | "true" => true,
                        "0" | "no" | "false" => false,
                        _ => {
                            return Err(CmdlineError::BadBool {
                                key: k.into(),
                                value: v.into(),
                            })
                        }
                    }
                }
                "keel.disk_timeout" => {
                    let s: u64 = v.parse().map_err(|_| CmdlineError::BadNumber {
                        key: k.into(),
                        value: v.into(),
                    })?;
                    c.disk_timeout = Duration::from_secs(s);
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The root hash for a slot ('A' or 'B').
    pub fn usrhash(&self, slot: char) -> Option<&str> {
        match slot {
            'A' => self.usrhash_a.as_deref(),
            'B' => self.usrhash_b.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_keel_parameters() {
        let c = Cmdline::parse(&format!(
            "console=ttyS0 keel.usrhash.a={} quiet keel.first_boot=1 keel.disk_timeout=3 foo=\"a b\"\n",
            H.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.usrhash('A'), Some(H));
        assert_eq!(c.usrhash('B'), None);
        assert!(c.first_boot);
        assert_eq!(c.disk_timeout, Duration::from_secs(3));
    }

    #[test]
    fn defaults() {
        assert_eq!(Cmdline::parse("").unwrap(), Cmdline::default());
    }

    #[test]
    fn bad_values_named() {
        assert_eq!(
            Cmdline::parse("keel.usrhash.a=xyz")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.usrhash.a=\"xyz\" is not a hex SHA-256 root hash"
        );
        assert_eq!(
            Cmdline::parse("keel.disk_timeout=soon")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.disk_timeout=\"soon\" is not a number of seconds"
        );
        assert_eq!(
            Cmdline::parse("keel.first_boot=maybe")
                .unwrap_err()
                .to_string(),
            "kernel command line: keel.first_boot=\"maybe\" is not 0 or 1"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(words(r#"a "b c" d="e f"  "#), vec!["a", "b c", "d=e f"]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = Cmdline::parse(&s);
        }
    }
}
