//! Keel's places on a running system, and the files in them that more than
//! one program names (DESIGN.md, "Runtime places").
//!
//! | base | owner | what |
//! |---|---|---|
//! | [`VENDOR_DIR`] `/usr/lib/keel`, [`SHARE_DIR`] `/usr/share/keel` | image | vendor defaults |
//! | [`ADMIN_DIR`] `/etc/keel` | admin | overrides, same names as under `/usr/lib/keel` |
//! | [`RUN_DIR`] `/run/keel` | runtime | state for other programs to read |
//! | [`STATE_DIR`] `/var/lib/keel` | persistent | leases, run-once markers, results |
//!
//! Paths are absolute as seen by the running system; [`under`] puts one
//! under another root (keel-init's `/sysroot`, a test's temporary dir).

use std::path::{Path, PathBuf};

/// Runtime state for other programs to read (a tmpfs).
pub const RUN_DIR: &str = "/run/keel";
/// Persistent state (on ROOT).
pub const STATE_DIR: &str = "/var/lib/keel";
/// Vendor defaults in the read-only `/usr`.
pub const VENDOR_DIR: &str = "/usr/lib/keel";
/// Vendor data in the read-only `/usr` (factory `/etc`, toolbox defaults).
pub const SHARE_DIR: &str = "/usr/share/keel";
/// The admin's overrides.
pub const ADMIN_DIR: &str = "/etc/keel";
/// The OEM partition, mounted read-only.
pub const OEM_DIR: &str = "/oem";
/// On OEM: the base config keel-provision merges under any user config
/// (Ignition; a vendor's, or the one `keel-install --ignition` places).
pub const OEM_BASE_CONFIG: &str = "/oem/config.ign";
/// On OEM: a user config in any format keel-provision reads, placed by
/// `keel-install --cloud-config`; keel-provision's last user-config source.
pub const OEM_USER_DATA: &str = "/oem/user-data";

/// keel-init's record of the boot ([`crate::BootRecord`]).
pub const BOOT_RECORD: &str = "/run/keel/boot.json";
/// Platform facts as `KEY=VALUE` lines.
pub const METADATA: &str = "/run/keel/metadata";
/// keel-netd's resolver file (`/etc/resolv.conf` links to it).
pub const RESOLV_CONF: &str = "/run/keel/resolv.conf";
/// keel-netd's runtime state (`links/*.json`).
pub const NETD_RUN_DIR: &str = "/run/keel/netd";
/// keel-netd's DHCP leases.
pub const NETD_STATE_DIR: &str = "/var/lib/keel/netd";
/// keel-oem's runtime status (`status.json`, `lock`).
pub const OEM_RUN_DIR: &str = "/run/keel/oem";
/// keel-oem's run-once markers and last results.
pub const OEM_STATE_DIR: &str = "/var/lib/keel/oem";
/// Where keel-provision mounts a config drive while reading it.
pub const CONFIG_DRIVE_MOUNT: &str = "/run/keel/config-drive";
/// Where keel-bootctl and keel-update mount the boot disk's ESP while they
/// write it, when no ESP is mounted already (unmounted again after).
pub const ESP_MOUNT: &str = "/run/keel/esp";
/// Mount points where an administrator's mounted ESP is looked for first.
pub const ESP_DIRS: [&str; 3] = ["/boot", "/efi", "/boot/efi"];
/// keel-provision's run-once marker.
pub const PROVISIONED: &str = "/var/lib/keel/provisioned";
/// keel-provision's result (JSON).
pub const PROVISION_RESULT: &str = "/etc/.keel-provision-result.json";
/// The kernel modules keel-init loads (in the initramfs).
pub const INITRD_MODULES: &str = "/usr/lib/keel/initrd-modules";
/// The factory `/etc`, lower layer of the `/etc` overlay.
pub const FACTORY_ETC: &str = "/usr/share/keel/factory/etc";
/// toolbox's vendor defaults.
pub const TOOLBOX_DEFAULTS: &str = "/usr/share/keel/toolbox";
/// keel-init's state on ROOT (mode 0700).
pub const ROOT_STATE_DIR: &str = "/.keel";
/// On ROOT: first-boot work has completed.
pub const FIRST_BOOT_DONE: &str = "/.keel/first-boot.done";
/// On ROOT: the `/etc` overlay's upper layer (the machine's changes).
pub const ETC_UPPER: &str = "/.keel/etc-upper";
/// On ROOT: the `/etc` overlay's work directory.
pub const ETC_WORK: &str = "/.keel/etc-work";
/// `.network` files, lowest precedence first (a later directory's file of
/// the same name replaces an earlier one's).
pub const NETWORK_DIRS: [&str; 3] = [
    "/usr/lib/keel/network",
    "/run/keel/network",
    "/etc/keel/network",
];

/// `abs` (an absolute path of the running system) under `root`:
/// `under("/sysroot", "/var/lib/keel")` is `/sysroot/var/lib/keel`.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// A config directory `name` in precedence order, lowest first:
/// `/usr/lib/keel/NAME`, `/run/keel/NAME`, `/etc/keel/NAME`.
pub fn config_dirs(name: &str) -> [PathBuf; 3] {
    [VENDOR_DIR, RUN_DIR, ADMIN_DIR].map(|d| Path::new(d).join(name))
}

/// A file on the OEM partition (`/oem/…`) as a path inside the partition's
/// file system: `on_oem(OEM_USER_DATA)` is `user-data`. Anything outside
/// `/oem` is returned as it is.
pub fn on_oem(abs: &str) -> &str {
    abs.strip_prefix(OEM_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_sit_in_their_places() {
        for (base, files) in [
            (
                RUN_DIR,
                &[
                    BOOT_RECORD,
                    METADATA,
                    RESOLV_CONF,
                    NETD_RUN_DIR,
                    OEM_RUN_DIR,
                    CONFIG_DRIVE_MOUNT,
                ][..],
            ),
            (STATE_DIR, &[NETD_STATE_DIR, OEM_STATE_DIR, PROVISIONED][..]),
            (VENDOR_DIR, &[INITRD_MODULES][..]),
            (SHARE_DIR, &[FACTORY_ETC, TOOLBOX_DEFAULTS][..]),
            (ROOT_STATE_DIR, &[FIRST_BOOT_DONE, ETC_UPPER, ETC_WORK][..]),
            (OEM_DIR, &[OEM_BASE_CONFIG, OEM_USER_DATA][..]),
        ] {
            for f in files {
                assert!(f.starts_with(&format!("{base}/")), "{f} not under {base}");
            }
        }
        let dirs = config_dirs("network");
        for (d, s) in dirs.iter().zip(NETWORK_DIRS) {
            assert_eq!(d, Path::new(s));
        }
    }

    #[test]
    fn under_a_root() {
        assert_eq!(
            under(Path::new("/sysroot"), FIRST_BOOT_DONE),
            Path::new("/sysroot/.keel/first-boot.done")
        );
        assert_eq!(under(Path::new("/x"), "y"), Path::new("/x/y"));
    }

    #[test]
    fn oem_files_inside_the_partition() {
        assert_eq!(on_oem(OEM_USER_DATA), "user-data");
        assert_eq!(on_oem(OEM_BASE_CONFIG), "config.ign");
        assert_eq!(on_oem("/oemx/y"), "/oemx/y");
    }
}
