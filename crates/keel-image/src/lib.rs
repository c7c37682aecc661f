//! keel-image: builds Keel's bootable disk image from `image/image.toml`.
//!
//! A list of named, timed steps over one [`Build`] context, using the field's
//! own tools: mmdebstrap for the Debian tree, mkfs.erofs for `/usr`,
//! veritysetup for the hash tree, mkfs.ext4 / mkfs.vfat + mtools for the other
//! filesystems (all from directories: no loop devices, no mounts), qemu-img
//! for qcow2. The partition table is written into the image file by
//! [`keel_gpt`]. Downloads (.deb files) and the unpacked Debian tree are cached
//! under the cache directory, keyed by the package set.
//!
//! Reads: `image/image.toml`, `units/`, `overlay/`, `image/oem/<platform>/`,
//! the built binaries. Writes: the output directory (see [`Manifest`]).

pub mod config;
pub mod disk;
pub mod esp;
pub mod initramfs;
pub mod presets;
pub mod release;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use keel_contract::cmdline::usrhash_arg;
use keel_contract::{paths, Slot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::ImageConfig;

/// Inputs of a build.
#[derive(Debug, Clone)]
pub struct Options {
    /// `image/image.toml`.
    pub config: PathBuf,
    /// The repository root (units/, overlay/, image/oem/ are found from here).
    pub repo: PathBuf,
    /// Where the static binaries are.
    pub bin_dir: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Download and tree cache.
    pub cache: PathBuf,
    /// Build this version instead of image.toml's `os_version` (the same
    /// cached Debian tree; `--version` / `KEEL_VERSION`).
    pub version: Option<String>,
    /// Where the development update key lives [default: `<out>/dev-update-key`];
    /// share it between builds of N and N+1 so N trusts N+1's releases.
    pub dev_update_key: Option<PathBuf>,
}

/// What a build produced, written to `<out>/image.json` for the VM harness
/// and `keel-image release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Image name.
    pub name: String,
    /// OS version.
    pub version: String,
    /// Kernel release.
    pub kernel_release: String,
    /// Kernel file (relative to out).
    pub kernel: String,
    /// Initramfs file (relative to out).
    pub initramfs: String,
    /// Raw disk image (relative to out).
    pub raw: String,
    /// qcow2 disk image (relative to out).
    pub qcow2: String,
    /// Full kernel command line for a direct-kernel boot.
    pub cmdline: String,
    /// dm-verity root hash of USR-A.
    pub usr_root_hash: String,
    /// Private key for `core`, when the image carries a development key.
    pub dev_ssh_key: Option<String>,
    /// Architecture (`uname -m`).
    #[serde(default = "default_arch")]
    pub arch: String,
    /// The USR EROFS image (relative to out).
    #[serde(default)]
    pub usr: Option<String>,
    /// Its verity hash tree with superblock (relative to out).
    #[serde(default)]
    pub usr_verity: Option<String>,
    /// The development update key's secret half (relative to out), when the
    /// image trusts one.
    #[serde(default)]
    pub dev_update_key: Option<String>,
    /// Key ids of every update key the image trusts.
    #[serde(default)]
    pub update_key_ids: Vec<String>,
    /// The static `keel-install` the image carries in `/usr/bin`, kept
    /// beside it (relative to out) for `keel-image release` to publish.
    #[serde(default)]
    pub installer: Option<String>,
    /// Byte sizes of the artifacts.
    pub sizes: BTreeMap<String, u64>,
    /// Step timings in seconds.
    pub steps: Vec<(String, f64)>,
}

/// The image's architecture (the USR partition type is x86-64's).
pub const ARCH: &str = "x86_64";

fn default_arch() -> String {
    ARCH.to_string()
}

/// Debian packages providing each tool the build runs.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("veritysetup", "cryptsetup-bin"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("qemu-img", "qemu-utils"),
    ("zstd", "zstd"),
    ("depmod", "kmod"),
    ("ssh-keygen", "openssh-client"),
    ("tar", "tar"),
    (esp::SYSTEMD_BOOT, "systemd-boot-efi"),
];

/// The build context every step works on.
#[derive(Debug)]
pub struct Build {
    opts: Options,
    cfg: ImageConfig,
    work: PathBuf,
    tree: PathBuf,
    kver: String,
    root_hash: String,
    update_key_ids: Vec<String>,
    timings: Vec<(String, f64)>,
}

type Step = fn(&mut Build) -> Result<()>;

const STEPS: &[(&str, Step)] = &[
    ("check tools", Build::check_tools),
    ("debian tree", Build::debian_tree),
    ("customize /usr", Build::customize),
    ("initramfs", Build::initramfs),
    ("usr erofs", Build::usr_erofs),
    ("usr verity", Build::usr_verity),
    ("oem", Build::oem),
    ("root", Build::root),
    ("esp", Build::esp),
    ("disk", Build::disk),
    ("qcow2", Build::qcow2),
];

/// Run `cmd`, failing with its stderr when it fails.
fn run(cmd: &mut Command) -> Result<String> {
    tracing::debug!(?cmd, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file()
}

fn mib(n: u64) -> u64 {
    n << 20
}

/// Copy a directory tree (files, dirs, symlinks; modes kept) into `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&s, &d)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&s)?;
            let _ = fs::remove_file(&d);
            symlink(&t, &d).with_context(|| format!("linking {}", d.display()))?;
        } else {
            fs::copy(&s, &d)
                .with_context(|| format!("copying {} to {}", s.display(), d.display()))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Whether an ELF file is statically linked: no PT_INTERP program header and
/// no PT_DYNAMIC with DT_NEEDED would need a parser; PT_INTERP is what makes the
/// kernel load a dynamic linker, so its absence is the property that matters.
pub fn elf_is_static(data: &[u8]) -> Result<bool> {
    ensure!(
        data.len() >= 64 && &data[..4] == b"\x7fELF",
        "not an ELF file"
    );
    ensure!(
        data[4] == 2 && data[5] == 1,
        "not a 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let phoff = u64::from_le_bytes(data[32..40].try_into()?) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        ensure!(o + 4 <= data.len(), "program header {i} outside the file");
        let ptype = u32::from_le_bytes(data[o..o + 4].try_into()?);
        if ptype == 3 {
            return Ok(false); // PT_INTERP
        }
    }
    Ok(true)
}

impl Build {
    /// Set up a build.
    pub fn new(opts: Options) -> Result<Self> {
        let mut cfg = ImageConfig::load(&opts.config)?;
        if let Some(v) = &opts.version {
            keel_release::Version::parse(v).with_context(|| format!("--version {v:?}"))?;
            cfg.os_version = v.clone();
        }
        let work = opts.out.join("work");
        let tree = work.join("tree");
        Ok(Build {
            opts,
            cfg,
            work,
            tree,
            kver: String::new(),
            root_hash: String::new(),
            update_key_ids: Vec::new(),
            timings: Vec::new(),
        })
    }

    /// Run every step, printing progress and timings, and write the manifest.
    pub fn run(mut self) -> Result<Manifest> {
        fs::create_dir_all(&self.work)
            .with_context(|| format!("creating {}", self.work.display()))?;
        let total = Instant::now();
        for (i, (name, step)) in STEPS.iter().enumerate() {
            eprintln!("[{}/{}] {name}", i + 1, STEPS.len());
            let t = Instant::now();
            step(&mut self).with_context(|| format!("step \"{name}\""))?;
            let d = t.elapsed();
            eprintln!("      {name}: {}", fmt_dur(d));
            self.timings.push((name.to_string(), d.as_secs_f64()));
        }
        let m = self.manifest()?;
        eprintln!(
            "image built in {}: {}",
            fmt_dur(total.elapsed()),
            self.opts.out.join(&m.qcow2).display()
        );
        Ok(m)
    }

    fn check_tools(&mut self) -> Result<()> {
        let missing: Vec<String> = TOOLS
            .iter()
            .filter(|(t, _)| !which(t))
            .map(|(t, p)| format!("{t} (Debian package {p})"))
            .collect();
        ensure!(
            missing.is_empty(),
            "missing tools: {} — run ./run deps",
            missing.join(", ")
        );
        for b in &self.cfg.binaries {
            let p = self.opts.bin_dir.join(&b.name);
            let data = fs::read(&p).with_context(|| {
                format!("reading binary {} (build it with ./run image)", p.display())
            })?;
            ensure!(
                elf_is_static(&data).with_context(|| p.display().to_string())?,
                "{} is dynamically linked; Keel ships static binaries (x86_64-unknown-linux-musl)",
                p.display()
            );
        }
        Ok(())
    }

    /// The cache key of the Debian tree: everything that changes its contents.
    fn tree_key(&self) -> String {
        let d = &self.cfg.debian;
        let mut h = Sha256::new();
        h.update(b"keel-tree-v1\0");
        h.update(d.suite.as_bytes());
        for m in &d.mirrors {
            h.update(b"\0m");
            h.update(m.as_bytes());
        }
        let mut pkgs = d.packages.clone();
        pkgs.sort();
        for p in pkgs {
            h.update(b"\0p");
            h.update(p.as_bytes());
        }
        hex::encode(&h.finalize()[..12])
    }

    fn debian_tree(&mut self) -> Result<()> {
        let cache = &self.opts.cache;
        let debs = cache.join("debs");
        fs::create_dir_all(&debs)?;
        let tarball = cache.join(format!("tree-{}.tar", self.tree_key()));
        if tarball.exists() {
            eprintln!("      cached: {}", tarball.display());
        } else {
            let tmp = tarball.with_extension("tar.part");
            let d = &self.cfg.debian;
            let mut cmd = Command::new("mmdebstrap");
            cmd.args(["--variant=minbase", "--mode=root", "--format=tar", "--skip=download/empty"])
                .arg(format!("--include={}", d.packages.join(",")))
                .arg(format!(
                    "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && find '{}' -name '*.deb' -exec cp -t \"$1\"/var/cache/apt/archives/ {{}} +",
                    debs.display()
                ))
                .arg(format!(
                    "--customize-hook=sync-out /var/cache/apt/archives '{}'",
                    debs.display()
                ))
                .arg(&d.suite)
                .arg(&tmp)
                .args(&d.mirrors)
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
            let status = cmd.status().context("starting mmdebstrap")?;
            ensure!(status.success(), "mmdebstrap failed ({status})");
            fs::rename(&tmp, &tarball)?;
        }
        if self.tree.exists() {
            fs::remove_dir_all(&self.tree)
                .with_context(|| format!("removing old {}", self.tree.display()))?;
        }
        fs::create_dir_all(&self.tree)?;
        run(Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&self.tree))?;
        Ok(())
    }

    fn kernel_release(&self) -> Result<String> {
        let dir = self.tree.join("usr/lib/modules");
        let mut v: Vec<String> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        match v.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!(
                "expected exactly one kernel in {}, found {v:?}",
                dir.display()
            ),
        }
    }

    fn customize(&mut self) -> Result<()> {
        let t = self.tree.clone();
        let usr = t.join("usr");
        self.kver = self.kernel_release()?;
        let kdir = usr.join("lib/modules").join(&self.kver);

        for p in &self.cfg.debian.prune_modules {
            let _ = fs::remove_dir_all(kdir.join(p));
        }
        for p in &self.cfg.debian.remove {
            let _ = fs::remove_dir_all(t.join(p));
        }
        run(Command::new("depmod").arg("-b").arg(&t).arg(&self.kver))?;

        // The kernel lives beside its modules (systemd's convention) and in out/.
        let vmlinuz = t.join("boot").join(format!("vmlinuz-{}", self.kver));
        fs::copy(&vmlinuz, kdir.join("vmlinuz")).context("copying the kernel")?;
        fs::copy(&vmlinuz, self.opts.out.join("vmlinuz"))?;
        // The kernel's build (`uname -v`) beside its modules: keel-init
        // refuses a /usr whose modules are of another build of the same
        // release (a Debian upload that kept the ABI name).
        let image = fs::read(&vmlinuz).context("reading the kernel")?;
        match bzimage_build(&image) {
            Some(b) => fs::write(kdir.join(KERNEL_BUILD_FILE), format!("{b}\n"))?,
            None => tracing::warn!(
                "{}: no version string in the bzImage header; keel-init will check the release only",
                vmlinuz.display()
            ),
        }

        // Prebuilt hwdb in /usr so no boot writes one into /etc.
        run(Command::new("chroot")
            .arg(&t)
            .args(["systemd-hwdb", "update", "--usr"]))?;

        // Per-machine state must not be baked into the factory /etc.
        let etc = t.join("etc");
        for e in fs::read_dir(etc.join("ssh"))? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path())?;
            }
        }
        for f in ["machine-id", "hostname", "resolv.conf", "os-release"] {
            let _ = fs::remove_file(etc.join(f));
        }
        symlink(format!("..{}", paths::RESOLV_CONF), etc.join("resolv.conf"))?;
        symlink("../usr/lib/os-release", etc.join("os-release"))?;
        let _ = fs::remove_file(usr.join("lib/os-release"));
        write_file(
            &usr.join("lib/os-release"),
            &format!(
                "NAME=\"Keel\"\nID=keel\nID_LIKE=debian\nPRETTY_NAME=\"Keel {v}\"\nVERSION=\"{v}\"\n\
                 VERSION_ID={v}\nIMAGE_VERSION={v}\nBUILD_ID={b}\nHOME_URL=\"https://example.invalid/keel\"\n\
                 DEFAULT_HOSTNAME=keel\n",
                v = self.cfg.os_version,
                b = self.tree_key(),
            ),
            0o644,
        )?;

        // Debian's units we do not want: timers that poll apt, checks that
        // write into /etc on first boot when /usr already carries the result.
        for u in [
            "timers.target.wants/apt-daily.timer",
            "timers.target.wants/apt-daily-upgrade.timer",
            "timers.target.wants/e2scrub_all.timer",
            "timers.target.wants/fstrim.timer",
            "timers.target.wants/dpkg-db-backup.timer",
            "timers.target.wants/podman-auto-update.timer",
            "default.target.wants/podman-auto-update.service",
            // podman's API service is socket-activated (podman.socket stays).
            "default.target.wants/podman.service",
            "multi-user.target.wants/e2scrub_reap.service",
            // no VGA console: the serial getty comes from console=
            "getty.target.wants/getty@tty1.service",
            // keel-netd configures the network, not systemd-networkd
            "network-online.target.wants/systemd-networkd-wait-online.service",
            "multi-user.target.wants/systemd-networkd.service",
            "sockets.target.wants/systemd-networkd.socket",
            "sysinit.target.wants/systemd-network-generator.service",
        ] {
            let _ = fs::remove_file(etc.join("systemd/system").join(u));
        }
        let sysunits = usr.join("lib/systemd/system");
        // cni-dhcp: CNI's DHCP plugin daemon, unused (podman uses netavark).
        for u in [
            "systemd-hwdb-update.service",
            "ldconfig.service",
            "cni-dhcp.socket",
            "cni-dhcp.service",
        ] {
            let p = etc.join("systemd/system").join(u);
            let _ = fs::remove_file(&p);
            symlink("/dev/null", &p)?;
        }

        self.update_keys()?;

        // Keel's binaries, units and overlay.
        for b in &self.cfg.binaries {
            let dest = usr.join(&b.dest);
            fs::create_dir_all(dest.parent().context("binary destination has a parent")?)?;
            fs::copy(self.opts.bin_dir.join(&b.name), &dest)
                .with_context(|| format!("installing {}", b.name))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
            for l in &b.links {
                let lp = usr.join(l);
                fs::create_dir_all(lp.parent().context("link has a parent")?)?;
                let _ = fs::remove_file(&lp);
                symlink(Path::new("/usr").join(&b.dest), &lp)?;
            }
        }
        let units = self.opts.repo.join("units");
        let staged = self.work.join("units");
        let _ = fs::remove_dir_all(&staged);
        fs::create_dir_all(&staged)?;
        for u in &self.cfg.systemd.units {
            let src = units.join(u);
            fs::copy(&src, staged.join(u))
                .with_context(|| format!("unit {u} listed in image.toml: {}", src.display()))?;
            let dropins = units.join(format!("{u}.d"));
            if dropins.is_dir() {
                copy_tree(&dropins, &staged.join(format!("{u}.d")))?;
            }
        }
        copy_tree(&staged, &sysunits)?;
        enable_units(&staged, &sysunits)?;
        let overlay = self.opts.repo.join("overlay");
        if overlay.is_dir() {
            // Files under overlay/share/keel/factory/etc land in the factory /etc
            // after the move below; copy into the tree's /etc for now.
            copy_tree(&overlay, &usr)?;
            let fetc = paths::under(&t, paths::FACTORY_ETC);
            if fetc.exists() {
                copy_tree(&fetc, &etc)?;
                fs::remove_dir_all(&fetc)?;
            }
        }
        if self.cfg.oem.dev_ssh_key {
            write_file(
                &etc.join("ssh/sshd_config.d/50-keel-dev-key.conf"),
                "# Development images only (image.toml: oem.dev_ssh_key): the per-build\n\
                 # key on the OEM partition also authorises `core`.\n\
                 Match User core\n    AuthorizedKeysFile .ssh/authorized_keys /oem/dev/authorized_keys\n",
                0o644,
            )?;
        }

        // systemd's first-boot preset-all, done here once (see presets.rs).
        let added = presets::apply(&t).context("applying unit presets at build time")?;
        eprintln!("      presets applied at build time: {added:?}");

        // Keep a record of the package set, then drop everything but /usr:
        // /etc becomes the factory defaults, /var and the rest are per machine.
        let status = t.join("var/lib/dpkg/status");
        let keel = usr.join("share/keel");
        fs::create_dir_all(&keel)?;
        fs::copy(&status, keel.join("dpkg-status")).context("saving dpkg status")?;
        let factory = keel.join("factory");
        fs::create_dir_all(&factory)?;
        let _ = fs::remove_dir_all(factory.join("etc"));
        fs::rename(&etc, factory.join("etc")).context("moving /etc to the factory defaults")?;
        Ok(())
    }

    fn initramfs(&mut self) -> Result<()> {
        use initramfs::{write_newc, Entry, ModulesDep};
        let kdir = format!("usr/lib/modules/{}", self.kver);
        let src = self.tree.join(&kdir);
        let dep = fs::read_to_string(src.join("modules.dep")).context("reading modules.dep")?;
        let dep = ModulesDep::parse(&dep)?;
        let closure = dep.closure(&self.cfg.initramfs.modules)?;

        let mut e: BTreeMap<String, Entry> = BTreeMap::new();
        for d in [
            "dev",
            "proc",
            "sys",
            "run",
            "sysroot",
            "etc",
            "usr",
            "usr/lib",
            "usr/lib/keel",
            "tmp",
        ] {
            e.insert(d.into(), Entry::Dir(0o755));
        }
        e.insert("dev/console".into(), Entry::CharDev(0o600, 5, 1));
        e.insert("lib".into(), Entry::Symlink("usr/lib".into()));
        let mut dir = String::new();
        for part in kdir.split('/') {
            dir = if dir.is_empty() {
                part.into()
            } else {
                format!("{dir}/{part}")
            };
            e.insert(dir.clone(), Entry::Dir(0o755));
        }
        for m in &closure {
            let mut d = kdir.clone();
            for part in m
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map(|(_, p)| p)
                .unwrap_or(&[])
            {
                d = format!("{d}/{part}");
                e.insert(d.clone(), Entry::Dir(0o755));
            }
            let data = fs::read(src.join(m)).with_context(|| format!("reading module {m}"))?;
            e.insert(format!("{kdir}/{m}"), Entry::File(0o644, data));
        }
        e.insert(
            format!("{kdir}/modules.dep"),
            Entry::File(0o644, dep.render_subset(&closure).into_bytes()),
        );
        e.insert(
            "usr/lib/keel/initrd-modules".into(),
            Entry::File(
                0o644,
                (self.cfg.initramfs.modules.join("\n") + "\n").into_bytes(),
            ),
        );
        let init = fs::read(self.opts.bin_dir.join("keel-init")).context("reading keel-init")?;
        e.insert("init".into(), Entry::File(0o755, init));
        let osr = fs::read(self.tree.join("usr/lib/os-release"))?;
        e.insert("etc/initrd-release".into(), Entry::File(0o644, osr));

        let mut cpio = Vec::new();
        write_newc(&mut cpio, &e)?;
        let out = self.opts.out.join("initramfs.img");
        let mut child = Command::new("zstd")
            .args(["-q", "-19", "-c"])
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&out)?)
            .spawn()
            .context("starting zstd")?;
        child.stdin.take().context("zstd stdin")?.write_all(&cpio)?;
        let st = child.wait()?;
        ensure!(st.success(), "zstd failed ({st})");
        eprintln!(
            "      {} modules, cpio {} KiB, compressed {} KiB",
            closure.len(),
            cpio.len() / 1024,
            fs::metadata(&out)?.len() / 1024
        );
        Ok(())
    }

    fn dev_update_key_dir(&self) -> PathBuf {
        self.opts
            .dev_update_key
            .clone()
            .unwrap_or_else(|| self.opts.out.join("dev-update-key"))
    }

    /// The public keys updates are checked against, into
    /// `/usr/share/keel/update-keys/`: the build's development key and the
    /// vendor keys image.toml names (each checked to be a minisign key).
    fn update_keys(&mut self) -> Result<()> {
        let dir = self
            .tree
            .join(keel_release::sign::KEYS_DIR.trim_start_matches('/'));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut trusted = keel_release::TrustedKeys::new();
        if self.cfg.update.dev_key {
            let (pubkey, id) = release::ensure_dev_key(&self.dev_update_key_dir())?;
            trusted
                .add("development key", &pubkey)
                .context("the development update key")?;
            write_file(&dir.join(format!("dev-{id}.pub")), &pubkey, 0o644)?;
        }
        for k in &self.cfg.update.keys {
            let src = self.opts.repo.join(k);
            let text = fs::read_to_string(&src)
                .with_context(|| format!("update key {k} listed in image.toml"))?;
            trusted
                .add(k, &text)
                .with_context(|| format!("update key {k} listed in image.toml"))?;
            let name = Path::new(k).file_name().context("key file name")?;
            fs::write(dir.join(name), &text)?;
        }
        self.update_key_ids = trusted.keys().iter().map(|k| k.key_id.clone()).collect();
        if self.update_key_ids.is_empty() {
            eprintln!("      warning: the image trusts no update key (image.toml [update])");
        }
        Ok(())
    }

    /// The USR image, reproducible: the same tree and version give the
    /// same bytes (issue 15 §6; DESIGN.md "Reproducible USR images"), so
    /// an update reuses every chunk the running slot already holds. Every
    /// mtime newer than the build epoch is clamped to it (mkfs.erofs does
    /// so when `SOURCE_DATE_EPOCH` is set); `/usr`'s own mtime (what
    /// systemd's `ConditionNeedsUpdate=` compares with `/etc/.updated`)
    /// stays the cached tree's. The epoch: `SOURCE_DATE_EPOCH`, else
    /// the repository's last commit time, else `USR_EPOCH_DEFAULT`. The
    /// filesystem UUID is derived from the version.
    fn usr_erofs(&mut self) -> Result<()> {
        /// 2026-01-01 00:00:00 UTC: the epoch outside a git checkout.
        const USR_EPOCH_DEFAULT: u64 = 1_767_225_600;
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?}: not a UNIX time"))?,
            Err(_) => Command::new("git")
                .arg("-C")
                .arg(&self.opts.repo)
                .args(["log", "-1", "--format=%ct"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(USR_EPOCH_DEFAULT),
        };
        let uuid = derived_uuid("keel usr erofs uuid", &self.cfg.os_version);
        let img = self.work.join("usr.erofs");
        let _ = fs::remove_file(&img);
        run(Command::new("mkfs.erofs")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["-zlz4hc,12"])
            .arg(format!("-U{uuid}"))
            .arg(&img)
            .arg(self.tree.join("usr")))?;
        eprintln!("      /usr: epoch {epoch} (every later mtime clamped), UUID {uuid}");
        let size = fs::metadata(&img)?.len();
        ensure!(
            size <= mib(self.cfg.disk.usr_mib),
            "USR image is {} MiB, larger than disk.usr_mib = {}",
            size >> 20,
            self.cfg.disk.usr_mib
        );
        eprintln!("      /usr: {} MiB", size >> 20);
        Ok(())
    }

    fn usr_verity(&mut self) -> Result<()> {
        let data = self.work.join("usr.erofs");
        let hash = self.work.join("usr.verity");
        let rh = self.work.join("usr.roothash");
        let _ = fs::remove_file(&hash);
        // Deterministic (see usr_erofs): the salt is the same for every
        // Keel version, so the hash blocks of unchanged data blocks stay
        // the same and an update reuses them too; the superblock's UUID
        // comes from the version.
        let salt = sha2::Sha256::digest(b"keel usr verity salt v1");
        let uuid = derived_uuid("keel usr verity uuid", &self.cfg.os_version);
        run(Command::new("veritysetup")
            .arg("format")
            .arg(format!("--salt={}", hex::encode(salt)))
            .arg(format!("--uuid={uuid}"))
            .arg(format!("--root-hash-file={}", rh.display()))
            .arg(&data)
            .arg(&hash))?;
        let root = fs::read_to_string(&rh)?.trim().to_string();
        ensure!(
            root.len() == 64 && root.bytes().all(|b| b.is_ascii_hexdigit()),
            "veritysetup wrote an unexpected root hash {root:?}"
        );
        ensure!(
            fs::metadata(&hash)?.len() <= mib(self.cfg.disk.usr_verity_mib),
            "verity hash tree larger than disk.usr_verity_mib"
        );
        eprintln!("      root hash {root}");
        self.root_hash = root;
        Ok(())
    }

    fn oem(&mut self) -> Result<()> {
        let dir = self.work.join("oem");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let platform = self
            .opts
            .repo
            .join("image/oem")
            .join(&self.cfg.oem.platform);
        if platform.is_dir() {
            copy_tree(&platform, &dir)?;
        } else {
            bail!(
                "OEM platform directory {} does not exist",
                platform.display()
            );
        }
        if self.cfg.oem.dev_ssh_key {
            let keydir = self.opts.out.join("dev-ssh");
            let key = keydir.join("id_ed25519");
            if !key.exists() {
                fs::create_dir_all(&keydir)?;
                run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "keel-dev-key", "-f"])
                    .arg(&key))?;
            }
            let pubkey = fs::read_to_string(key.with_extension("pub"))?;
            write_file(&dir.join("dev/authorized_keys"), &pubkey, 0o644)?;
        }
        mkfs_ext4(
            &self.work.join("oem.ext4"),
            "OEM",
            &dir,
            mib(self.cfg.disk.oem_mib),
        )
    }

    fn root(&mut self) -> Result<()> {
        let dir = self.work.join("rootskel");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // The same skeleton keel-init ensures on every boot.
        keel_contract::root::prepare(&dir)?;
        // ROOT grows online at first boot and gets a new UUID while
        // mounted: 4 KiB blocks whatever root_mib is (mke2fs's "small"
        // type would pick 1 KiB), and metadata_csum_seed so the kernel can
        // change the UUID without rewriting every checksum
        // (EXT4_IOC_SETFSUUID refuses metadata_csum without it).
        mkfs_ext4_with(
            &self.work.join("root.ext4"),
            "ROOT",
            &dir,
            mib(self.cfg.disk.root_mib),
            &["-b", "4096", "-O", "metadata_csum_seed"],
        )
    }

    fn esp(&mut self) -> Result<()> {
        let img = self.work.join("esp.vfat");
        let _ = fs::remove_file(&img);
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "EFI-SYSTEM", "-C"])
            .arg(&img)
            .arg((self.cfg.disk.esp_mib * 1024).to_string()))?;
        let i = img.to_string_lossy().into_owned();
        let loader = self.work.join("loader");
        let _ = fs::remove_dir_all(&loader);
        fs::create_dir_all(&loader)?;
        // Slot A is the image's proven slot: no boot counter. USR-B's
        // directory exists empty; an update writes its files and a
        // counting entry (keel_release::esp).
        let entry = esp::Entry {
            slot: Slot::A,
            os_name: "Keel",
            version: &self.cfg.os_version,
            // The first entry of the ESP; every staging adds one.
            generation: 1,
            cmdline: &self.cfg.kernel.cmdline,
            root_hashes: &[(Slot::A, &self.root_hash)],
        };
        let name = esp::EntryName::proven(Slot::A);
        write_file(&loader.join("loader.conf"), &esp::loader_conf(), 0o644)?;
        write_file(&loader.join("entry.conf"), &entry.render(), 0o644)?;
        for dir in esp::DIRS {
            run(Command::new("mmd").args(["-i", &i, &format!("::/{dir}")]))?;
        }
        let copy = |from: &Path, to: &str| -> Result<()> {
            run(Command::new("mcopy")
                .args(["-i", &i])
                .arg(from)
                .arg(format!("::/{to}")))
            .map(drop)
        };
        copy(&self.opts.out.join("vmlinuz"), &esp::kernel_path(Slot::A))?;
        copy(
            &self.opts.out.join("initramfs.img"),
            &esp::initrd_path(Slot::A),
        )?;
        copy(&loader.join("loader.conf"), esp::LOADER_CONF)?;
        copy(&loader.join("entry.conf"), &name.path())?;
        let boot = Path::new(esp::SYSTEMD_BOOT);
        for p in esp::SYSTEMD_BOOT_PATHS {
            copy(boot, p)?;
        }
        Ok(())
    }

    fn disk(&mut self) -> Result<()> {
        let d = &self.cfg.disk;
        let parts = vec![
            disk::PartSpec::new(
                "EFI-SYSTEM",
                keel_gpt::types::ESP,
                d.esp_mib,
                Some(self.work.join("esp.vfat")),
            ),
            disk::PartSpec::new(
                "USR-A",
                keel_gpt::types::USR_X86_64,
                d.usr_mib,
                Some(self.work.join("usr.erofs")),
            )
            .attrs(disk::usr_attrs(1, 0, true)),
            disk::PartSpec::new(
                "USR-A-VERITY",
                keel_gpt::types::USR_VERITY_X86_64,
                d.usr_verity_mib,
                Some(self.work.join("usr.verity")),
            )
            .attrs(disk::READ_ONLY),
            disk::PartSpec::new("USR-B", keel_gpt::types::USR_X86_64, d.usr_mib, None)
                .attrs(disk::usr_attrs(0, 0, false)),
            disk::PartSpec::new(
                "USR-B-VERITY",
                keel_gpt::types::USR_VERITY_X86_64,
                d.usr_verity_mib,
                None,
            )
            .attrs(disk::READ_ONLY),
            disk::PartSpec::new(
                "OEM",
                keel_gpt::types::LINUX_DATA,
                d.oem_mib,
                Some(self.work.join("oem.ext4")),
            )
            .attrs(disk::READ_ONLY),
            disk::PartSpec::new(
                "ROOT",
                keel_gpt::types::ROOT_X86_64,
                d.root_mib,
                Some(self.work.join("root.ext4")),
            )
            .attrs(disk::GROW_FS),
        ];
        let raw = self.opts.out.join(format!("{}.img", self.cfg.name));
        disk::assemble(&raw, d.sector_size, &parts)?;
        Ok(())
    }

    fn qcow2(&mut self) -> Result<()> {
        let raw = self.opts.out.join(format!("{}.img", self.cfg.name));
        let q = self.opts.out.join(format!("{}.qcow2", self.cfg.name));
        let tmp = q.with_extension("qcow2.part");
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&tmp))?;
        fs::rename(&tmp, &q)?;
        Ok(())
    }

    /// Copy the static `keel-install` the image installs in `/usr/bin`
    /// (the same file from the bin dir) to `<out>/bin/keel-install`, for
    /// `keel-image release` to publish; `None` when the image has none.
    fn keep_installer(&self) -> Result<Option<String>> {
        let Some(b) = self
            .cfg
            .binaries
            .iter()
            .find(|b| b.name == keel_release::INSTALLER_FILE)
        else {
            return Ok(None);
        };
        let rel = format!("bin/{}", b.name);
        let dst = self.opts.out.join(&rel);
        let data = fs::read(self.opts.bin_dir.join(&b.name))
            .with_context(|| format!("reading {}", b.name))?;
        fs::create_dir_all(dst.parent().context("bin/ has a parent")?)?;
        keel_contract::atomic::AtomicWrite::new()
            .mode(0o755)
            .write(&dst, &data)
            .with_context(|| format!("keeping {}", dst.display()))?;
        Ok(Some(rel))
    }

    fn manifest(&self) -> Result<Manifest> {
        let out = &self.opts.out;
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut sizes = BTreeMap::new();
        sizes.insert("initramfs".into(), size(&out.join("initramfs.img")));
        sizes.insert("kernel".into(), size(&out.join("vmlinuz")));
        sizes.insert("usr_erofs".into(), size(&self.work.join("usr.erofs")));
        sizes.insert("usr_verity".into(), size(&self.work.join("usr.verity")));
        sizes.insert(
            "qcow2".into(),
            size(&out.join(format!("{}.qcow2", self.cfg.name))),
        );
        for b in &self.cfg.binaries {
            sizes.insert(
                format!("bin/{}", b.name),
                size(&self.opts.bin_dir.join(&b.name)),
            );
        }
        // Keep USR and its hash tree beside the disk for `keel-image
        // release` (hard links: no copy of the work files).
        for f in ["usr.erofs", "usr.verity"] {
            let dst = out.join(f);
            let _ = fs::remove_file(&dst);
            fs::hard_link(self.work.join(f), &dst)
                .or_else(|_| fs::copy(self.work.join(f), &dst).map(drop))
                .with_context(|| format!("keeping {}", dst.display()))?;
        }
        let installer = self.keep_installer()?;
        let dev_key_rel = self.dev_update_key_dir().join(release::DEV_KEY);
        let dev_key_rel = dev_key_rel
            .strip_prefix(out)
            .map(Path::to_path_buf)
            .unwrap_or(dev_key_rel);
        let m = Manifest {
            name: self.cfg.name.clone(),
            version: self.cfg.os_version.clone(),
            kernel_release: self.kver.clone(),
            kernel: "vmlinuz".into(),
            initramfs: "initramfs.img".into(),
            raw: format!("{}.img", self.cfg.name),
            qcow2: format!("{}.qcow2", self.cfg.name),
            cmdline: format!(
                "{} {}",
                self.cfg.kernel.cmdline,
                usrhash_arg(Slot::A, &self.root_hash)
            ),
            usr_root_hash: self.root_hash.clone(),
            dev_ssh_key: self
                .cfg
                .oem
                .dev_ssh_key
                .then(|| "dev-ssh/id_ed25519".to_string()),
            arch: ARCH.to_string(),
            usr: Some("usr.erofs".into()),
            usr_verity: Some("usr.verity".into()),
            dev_update_key: self
                .cfg
                .update
                .dev_key
                .then(|| dev_key_rel.to_string_lossy().into_owned()),
            update_key_ids: self.update_key_ids.clone(),
            installer,
            sizes,
            steps: self.timings.clone(),
        };
        let p = out.join("image.json");
        fs::write(&p, serde_json::to_string_pretty(&m)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(m)
    }
}

fn fmt_dur(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn mkfs_ext4(img: &Path, label: &str, dir: &Path, size: u64) -> Result<()> {
    mkfs_ext4_with(img, label, dir, size, &[])
}

fn mkfs_ext4_with(img: &Path, label: &str, dir: &Path, size: u64, extra: &[&str]) -> Result<()> {
    let _ = fs::remove_file(img);
    fs::File::create(img)?.set_len(size)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-E", "root_owner=0:0"])
        .args(extra)
        .arg("-d")
        .arg(dir)
        .arg(img))?;
    Ok(())
}

/// Create the links `systemctl enable` would for every unit in `src`
/// (`.wants`/`.requires`/`.upholds` links and `Alias=` names, relative, in
/// `dst`): Keel's units are enabled in /usr, so no machine's /etc carries
/// their enablement. The unit files and their `[Install]` sections are read
/// with keel-unit, so a line systemd would not read fails the build; a
/// template is enabled as its `DefaultInstance=` and skipped without one;
/// `Also=` needs nothing here (every listed unit is enabled).
pub fn enable_units(src: &Path, dst: &Path) -> Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file() {
            continue;
        }
        let file = e.path();
        let unit = keel_unit::UnitName::parse(&name)
            .with_context(|| format!("{}: not a unit name", file.display()))?;
        let text = fs::read_to_string(&file)?;
        let install = keel_unit::Install::parse(&unit, &file, &text, &mut Vec::new())?;
        if unit.is_template() && install.default_instance.is_none() {
            continue;
        }
        for link in install.links(&unit, &file)? {
            let l = dst.join(&link.path);
            if let Some(d) = l.parent() {
                fs::create_dir_all(d)?;
            }
            let _ = fs::remove_file(&l);
            let up = "../".repeat(link.path.matches('/').count());
            symlink(format!("{up}{name}"), &l)?;
        }
    }
    Ok(())
}

/// keel-init's name for the kernel build file in `/usr/lib/modules/<release>/`.
pub const KERNEL_BUILD_FILE: &str = "keel-kernel-build";

/// The build part (`uname -v`: `#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1
/// (2024-11-22)`) of a bzImage's version string, which the x86 boot
/// protocol points at from the setup header (`kernel_version` at 0x20E,
/// the string at that value + 0x200; "HdrS" at 0x202). The string is
/// `<release> (<builder>) <build>`; `None` if any of it is missing.
pub fn bzimage_build(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize;
    if off == 0 {
        return None;
    }
    let start = off + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let (_, build) = text.split_once(") ")?;
    let build = build.trim();
    (!build.is_empty()).then(|| build.to_string())
}

/// A UUID derived from `label` and the image's version (SHA-256, formatted
/// as a random-style v4 UUID with the RFC 4122 variant), so that the same
/// version built twice gets the same filesystem and verity UUIDs.
fn derived_uuid(label: &str, version: &str) -> String {
    let d = sha2::Sha256::digest(format!("{label}\0{version}"));
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn bzimage_build_string() {
        let mut img = vec![0u8; 0x4000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let text = b"6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)\0";
        img[0x3200..0x3200 + text.len()].copy_from_slice(text);
        img[0x20E..0x210].copy_from_slice(&0x3000u16.to_le_bytes());
        assert_eq!(
            super::bzimage_build(&img).as_deref(),
            Some("#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)")
        );
        img[0x20E..0x210].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(super::bzimage_build(&img), None);
        img[0x202] = b'X';
        assert_eq!(super::bzimage_build(&img), None);
        assert_eq!(super::bzimage_build(&[]), None);
        // A pointer past the end, no NUL.
        let mut short = vec![0u8; 0x300];
        short[0x202..0x206].copy_from_slice(b"HdrS");
        short[0x20E..0x210].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert_eq!(super::bzimage_build(&short), None);
    }

    use super::*;

    #[test]
    fn derived_uuids_are_stable_per_label_and_version() {
        let a = derived_uuid("keel usr erofs uuid", "0.1.0");
        assert_eq!(a, derived_uuid("keel usr erofs uuid", "0.1.0"));
        assert_ne!(a, derived_uuid("keel usr erofs uuid", "0.1.1"));
        assert_ne!(a, derived_uuid("keel usr verity uuid", "0.1.0"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
    }

    /// Every unit Keel ships reads under keel-unit's rules.
    #[test]
    fn shipped_units_enable() {
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units");
        let dst = tempfile::tempdir().unwrap();
        enable_units(&units, dst.path()).unwrap();
        assert!(dst
            .path()
            .join("multi-user.target.wants/keel-netd.service")
            .is_symlink());
    }

    #[test]
    fn enables_units_from_install_section() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(
            src.path().join("a.service"),
            "[Unit]\nDescription=a\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target sysinit.target\n",
        )
        .unwrap();
        fs::write(
            src.path().join("b@.service"),
            "[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        fs::write(
            src.path().join("c.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        // What the line-by-line reader missed: a continuation (with a
        // comment line inside), a template's DefaultInstance=, Alias=.
        fs::write(
            src.path().join("d.service"),
            "[Install]\nWantedBy=multi-user.target \\\n# c\n  network-online.target\nAlias=dd.service\n",
        )
        .unwrap();
        fs::write(
            src.path().join("e@.service"),
            "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
        )
        .unwrap();
        enable_units(src.path(), dst.path()).unwrap();
        let link = |p: &str| fs::read_link(dst.path().join(p)).unwrap();
        assert_eq!(
            link("network-online.target.wants/d.service"),
            Path::new("../d.service")
        );
        assert_eq!(link("dd.service"), Path::new("d.service"));
        assert_eq!(
            link("getty.target.wants/e@tty1.service"),
            Path::new("../e@.service")
        );
        fs::write(src.path().join("f.service"), "[Install]\nWantedBy\n").unwrap();
        assert_eq!(
            enable_units(src.path(), dst.path())
                .unwrap_err()
                .to_string(),
            format!(
                "{}:2: expected 'Key=Value' or '[Section]', found 'WantedBy'",
                src.path().join("f.service").display()
            )
        );
        let l = dst.path().join("multi-user.target.wants/a.service");
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("../a.service"));
        assert!(dst
            .path()
            .join("sysinit.target.wants/a.service")
            .is_symlink());
        assert!(!dst
            .path()
            .join("multi-user.target.wants/b@.service")
            .exists());
        assert!(!dst
            .path()
            .join("multi-user.target.wants/c.service")
            .exists());
    }

    #[test]
    fn static_elf_detection() {
        // The test binary itself is dynamically linked (gnu target).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!elf_is_static(&me).unwrap());
        assert!(elf_is_static(b"not an elf").is_err());
    }
}
