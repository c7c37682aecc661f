//! The command line, parsed by hand into [`Options`] (a pure function, so
//! every rule is a unit test): where the image comes from, the first-boot
//! config, and the safety switches.

use std::path::PathBuf;

/// Where the releases are published when `--base-url` is not given.
pub const DEFAULT_BASE_URL: &str = "https://releases.keel.invalid";

/// Usage text (`--help`).
pub const HELP: &str = "\
keel-install: install Keel onto a disk from a signed release, with a first-boot config

usage: keel-install DEVICE --channel C [--base-url U] [--version V] [OPTIONS]
       keel-install DEVICE --image FILE [OPTIONS]

DEVICE is a whole disk (/dev/sdb, /dev/nvme1n1, /dev/loop3) or a regular
file (a VM disk, at least as large as the image).

image:
  --channel C        install the newest version of channel C (stable, beta, ...)
  --base-url U       the release tree (https://..., http://..., file:///dir)
  --version V        install version V of the channel instead of the newest
  --keys DIR         trusted release keys (*.pub), default /usr/share/keel/update-keys
  --key FILE         trust this minisign public key (repeatable; replaces --keys)
  --image FILE       an image file instead: raw or zstd-compressed (disk.img.zst);
                     not signed, so only what you built or checked yourself

first boot:
  --ignition FILE    an Ignition config (spec 3.x)
  --cloud-config FILE
                     a #cloud-config, placed as the OEM partition's user-data
                     (a config given at first boot by fw_cfg, a config drive
                     or keel.config_url wins over it)
  --ssh-key FILE     authorized keys for the user core (one key a line)
  --platform NAME    the OEM platform the disk is for (checked against the
                     image's OEM tree, /oem/oem-release ID)

safety:
  --yes              do not ask; without it keel-install asks on a terminal and
                     refuses when there is none
  --no-verify        skip re-reading the device at the end (not recommended)
";

/// Where the disk image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A signed release tree.
    Release {
        /// The tree's base URL (`http(s)://` or `file://`).
        base_url: String,
        /// The channel.
        channel: String,
        /// A given version, else the channel's newest.
        version: Option<String>,
    },
    /// A local image file (raw or zstd), not signed.
    File(PathBuf),
}

/// Which trusted keys verify a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// Every `*.pub` in a directory.
    Dir(PathBuf),
    /// These key files.
    Files(Vec<PathBuf>),
}

/// The first-boot config given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstBootArgs {
    /// `--ignition FILE`.
    pub ignition: Option<PathBuf>,
    /// `--cloud-config FILE`.
    pub cloud_config: Option<PathBuf>,
    /// `--ssh-key FILE`.
    pub ssh_key: Option<PathBuf>,
    /// `--platform NAME`.
    pub platform: Option<String>,
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The target disk or file.
    pub device: PathBuf,
    /// The image.
    pub image: Image,
    /// Trusted keys (release images only).
    pub keys: Keys,
    /// The first-boot config.
    pub first_boot: FirstBootArgs,
    /// `--yes`.
    pub yes: bool,
    /// Re-read and compare at the end (off with `--no-verify`).
    pub verify: bool,
}

/// What is wrong with the command line (or `--help`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `-h`/`--help`.
    #[error("help")]
    Help,
    /// Anything else, with the message.
    #[error("{0}")]
    Bad(String),
}

fn bad(s: impl Into<String>) -> UsageError {
    UsageError::Bad(s.into())
}

/// Parse the arguments after the program name.
pub fn parse(args: Vec<String>) -> Result<Options, UsageError> {
    let mut it = args.into_iter();
    let mut device = None;
    let (mut channel, mut base_url, mut version, mut image) = (None, None, None, None);
    let (mut keys_dir, mut key_files) = (None, Vec::new());
    let mut fb = FirstBootArgs::default();
    let (mut yes, mut verify) = (false, true);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = |name: &str| -> Result<String, UsageError> {
            let v = match inline.clone() {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| bad(format!("{name} needs a value")))?,
            };
            if v.is_empty() {
                return Err(bad(format!("{name} needs a value")));
            }
            Ok(v)
        };
        fn once<T>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), UsageError> {
            if slot.is_some() {
                return Err(bad(format!("{name} given twice")));
            }
            *slot = Some(v);
            Ok(())
        }
        match flag.as_str() {
            "-h" | "--help" => return Err(UsageError::Help),
            "-y" | "--yes" => yes = true,
            "--no-verify" => verify = false,
            "--channel" | "-C" => once(&mut channel, val("--channel")?, "--channel")?,
            "--base-url" => once(&mut base_url, val("--base-url")?, "--base-url")?,
            "--version" | "-V" => once(&mut version, val("--version")?, "--version")?,
            "--image" | "-f" => once(&mut image, PathBuf::from(val("--image")?), "--image")?,
            "--keys" => once(&mut keys_dir, PathBuf::from(val("--keys")?), "--keys")?,
            "--key" => key_files.push(PathBuf::from(val("--key")?)),
            "--ignition" | "-i" => once(
                &mut fb.ignition,
                PathBuf::from(val("--ignition")?),
                "--ignition",
            )?,
            "--cloud-config" | "-c" => once(
                &mut fb.cloud_config,
                PathBuf::from(val("--cloud-config")?),
                "--cloud-config",
            )?,
            "--ssh-key" => once(
                &mut fb.ssh_key,
                PathBuf::from(val("--ssh-key")?),
                "--ssh-key",
            )?,
            "--platform" => once(&mut fb.platform, val("--platform")?, "--platform")?,
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(bad(format!("unknown option {s}")))
            }
            _ => {
                if device.is_some() {
                    return Err(bad(format!("one DEVICE only (also got {a})")));
                }
                device = Some(PathBuf::from(a));
            }
        }
    }
    let device = device.ok_or_else(|| bad("which DEVICE? (keel-install --help)"))?;
    let image = match (image, channel) {
        (Some(_), Some(_)) => return Err(bad("--image and --channel exclude each other")),
        (None, None) => return Err(bad("--channel C or --image FILE is needed")),
        (Some(f), None) => {
            if base_url.is_some() || version.is_some() {
                return Err(bad(
                    "--base-url and --version go with --channel, not --image",
                ));
            }
            if keys_dir.is_some() || !key_files.is_empty() {
                return Err(bad(
                    "--keys and --key go with --channel: an image file is not signed",
                ));
            }
            Image::File(f)
        }
        (None, Some(channel)) => {
            if !keel_release::doc::valid_name(&channel) {
                return Err(bad(format!(
                    "--channel {channel}: lower-case letters, digits, '.', '_' and '-' only"
                )));
            }
            if let Some(v) = &version {
                keel_release::Version::parse(v).map_err(|e| bad(format!("--version {v}: {e}")))?;
            }
            let base_url = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
            if !["http://", "https://", "file://"]
                .iter()
                .any(|p| base_url.starts_with(p))
            {
                return Err(bad(format!(
                    "--base-url {base_url}: http://, https:// or file:// please"
                )));
            }
            Image::Release {
                base_url,
                channel,
                version,
            }
        }
    };
    if fb.ignition.is_some() && fb.cloud_config.is_some() {
        return Err(bad("--ignition and --cloud-config exclude each other"));
    }
    if fb.cloud_config.is_some() && fb.ssh_key.is_some() {
        return Err(bad(
            "--ssh-key goes with --ignition or alone; put the key into the cloud-config's ssh_authorized_keys",
        ));
    }
    if let Some(p) = &fb.platform {
        if !keel_release::doc::valid_name(p) {
            return Err(bad(format!("--platform {p}: not a platform name")));
        }
    }
    let keys = match (keys_dir, key_files.is_empty()) {
        (Some(_), false) => return Err(bad("--keys and --key exclude each other")),
        (Some(d), true) => Keys::Dir(d),
        (None, false) => Keys::Files(key_files),
        (None, true) => Keys::Dir(keel_release::sign::KEYS_DIR.into()),
    };
    Ok(Options {
        device,
        image,
        keys,
        first_boot: fb,
        yes,
        verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Options, UsageError> {
        parse(s.split_whitespace().map(str::to_string).collect())
    }

    fn err(s: &str) -> String {
        match p(s) {
            Err(UsageError::Bad(m)) => m,
            other => panic!("{s}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn channel_install_with_defaults() {
        let o = p("/dev/sdb --channel stable").expect("parse");
        assert_eq!(o.device, PathBuf::from("/dev/sdb"));
        assert_eq!(
            o.image,
            Image::Release {
                base_url: DEFAULT_BASE_URL.into(),
                channel: "stable".into(),
                version: None
            }
        );
        assert_eq!(o.keys, Keys::Dir(keel_release::sign::KEYS_DIR.into()));
        assert!(!o.yes && o.verify);
    }

    #[test]
    fn everything_given() {
        let o = p("--channel=beta /dev/vdb --base-url http://h/t --version 1.2.3 --key a.pub --key b.pub -i c.ign --ssh-key k.pub --platform qemu --yes")
            .expect("parse");
        assert_eq!(
            o.image,
            Image::Release {
                base_url: "http://h/t".into(),
                channel: "beta".into(),
                version: Some("1.2.3".into())
            }
        );
        assert_eq!(o.keys, Keys::Files(vec!["a.pub".into(), "b.pub".into()]));
        assert_eq!(o.first_boot.ignition, Some("c.ign".into()));
        assert_eq!(o.first_boot.ssh_key, Some("k.pub".into()));
        assert_eq!(o.first_boot.platform.as_deref(), Some("qemu"));
        assert!(o.yes);
    }

    #[test]
    fn offline_image() {
        let o = p("disk.raw --image build/keel.img --cloud-config u.yml -y --no-verify")
            .expect("parse");
        assert_eq!(o.image, Image::File("build/keel.img".into()));
        assert_eq!(o.first_boot.cloud_config, Some("u.yml".into()));
        assert!(o.yes && !o.verify);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(p("--help").unwrap_err(), UsageError::Help);
        assert!(err("--channel stable").contains("which DEVICE"));
        assert!(err("/dev/sdb").contains("--channel C or --image FILE"));
        assert!(err("/dev/sdb --channel s --image f").contains("exclude"));
        assert!(err("/dev/sdb /dev/sdc --channel s").contains("one DEVICE"));
        assert!(err("/dev/sdb --channel").contains("--channel needs a value"));
        assert!(err("/dev/sdb --channel Stable!").contains("--channel Stable!"));
        assert!(err("/dev/sdb --channel s --version 1.x").contains("--version 1.x"));
        assert!(err("/dev/sdb --channel s --base-url ftp://x").contains("ftp://x"));
        assert!(err("/dev/sdb --image f --version 1").contains("go with --channel"));
        assert!(err("/dev/sdb --image f --key k.pub").contains("not signed"));
        assert!(err("/dev/sdb --channel s -i a -c b").contains("exclude"));
        assert!(err("/dev/sdb --channel s -c b --ssh-key k").contains("ssh_authorized_keys"));
        assert!(err("/dev/sdb --channel s --keys d --key k").contains("exclude"));
        assert!(err("/dev/sdb --channel s --frobnicate").contains("--frobnicate"));
        assert!(err("/dev/sdb --channel s --channel t").contains("twice"));
        assert!(err("/dev/sdb --channel s --platform ../x").contains("--platform"));
    }
}
