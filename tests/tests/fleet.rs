//! VM test of fleet reboot coordination (issue 16): two Keel guests stage
//! the same update (version N+1 from the update fixture's release tree,
//! served by a test-owned nginx) with `etcd_lock`, max 1, against a real
//! etcd on the host's loopback (Debian's etcd-server, started by the test,
//! reached from the guests at 10.0.2.2 through QEMU's user network). They
//! reboot one after the other — the second only once the first's boot is
//! good — both end on N+1, and the semaphore ends empty.
//!
//! Direct `-kernel` boots (QEMU is the boot loader, so the command line
//! carries N+1's root hash for USR-B, as a loader entry would): the
//! firmware path of an update is the `update` test's; this one is about
//! the order of reboots.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use keel_tests::serve::{Etcd, Nginx};
use keel_tests::{fw_cfg, urlencode, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(420);

fn n1(img: &Image) -> Result<Image> {
    Image::load(&img.dir.join("update/n1"))
}

/// The agent's config: the served tree, `etcd_lock` at `endpoint`, no
/// grace period (nobody is logged in but the test's SSH).
fn ignition(base_url: &str, endpoint: &str) -> String {
    let toml = format!(
        "# written by the fleet VM test\nbase_url = \"{base_url}\"\nchannel = \"stable\"\n\n\
         [reboot]\nstrategy = \"etcd_lock\"\ngrace_period = 0\n\
         [reboot.etcd_lock]\nendpoints = [\"{endpoint}\"]\n"
    );
    let enc = urlencode(&toml);
    serde_json::json!({
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [{
            "path": "/etc/keel/update.d/50-fleet.toml",
            "mode": 420,
            "contents": {"source": format!("data:,{enc}")}
        }]}
    })
    .to_string()
}

struct Guest {
    name: &'static str,
    disk: PathBuf,
    opts: BootOptions,
    vm: Option<Vm>,
    id: String,
}

impl Guest {
    fn boot(
        name: &'static str,
        img: &Image,
        dir: &Path,
        cfg: &Path,
        hash_b: &str,
    ) -> Result<Guest> {
        let disk = dir.join(format!("{name}.qcow2"));
        keel_tests::overlay(&img.path("qcow2")?, &disk)?;
        let opts = BootOptions {
            disk: Some(disk.clone()),
            extra_cmdline: format!("keel.usrhash.b={hash_b}"),
            qemu_args: fw_cfg("opt/org.flatcar-linux/config", cfg),
            ..BootOptions::default()
        };
        let vm = Vm::boot(name, img, opts.clone())?;
        Ok(Guest {
            name,
            disk,
            opts,
            vm: Some(vm),
            id: String::new(),
        })
    }

    fn vm(&mut self) -> &mut Vm {
        self.vm.as_mut().expect("running")
    }

    fn exited(&mut self) -> Result<bool> {
        self.vm().has_exited()
    }

    fn status(&mut self) -> Result<String> {
        self.vm().ssh_ok("keel-update status")
    }

    /// The guest rebooted on its own: boot its disk again (the new slot).
    fn boot_again(&mut self, img: &Image) -> Result<()> {
        if let Some(vm) = self.vm.take() {
            vm.finish()?;
        }
        let vm = Vm::reboot_disk(
            &format!("{}_n1", self.name),
            img,
            &self.disk,
            self.opts.clone(),
        )?;
        self.vm = Some(vm);
        Ok(())
    }
}

/// Two guests, max 1: one reboots, the other waits for the lock until the
/// first's boot is good, then reboots; both run N+1 and the lock is free.
#[test]
fn two_guests_reboot_one_after_the_other() -> Result<()> {
    let img = Image::from_env()?;
    let next = n1(&img)?;
    let version = next.manifest["version"]
        .as_str()
        .context("update/n1/image.json has no version")?
        .to_string();
    let hash_b = next.manifest["usr_root_hash"]
        .as_str()
        .context("update/n1/image.json has no usr_root_hash")?
        .to_string();
    let work = tempfile::tempdir()?;
    let server = Nginx::serve(&img.dir.join("update/tree"))?;
    let etcd = Etcd::start()?;
    let cfg = work.path().join("fleet.ign");
    fs::write(&cfg, ignition(&server.guest_url(), &etcd.guest_endpoint()))?;

    let mut guests = [
        Guest::boot("fleet_1", &img, work.path(), &cfg, &hash_b)?,
        Guest::boot("fleet_2", &img, work.path(), &cfg, &hash_b)?,
    ];
    for g in guests.iter_mut() {
        g.vm().wait_ready(BOOT)?;
        g.id = g.vm().ssh_ok("cat /etc/machine-id")?.trim().to_string();
    }
    ensure!(
        guests[0].id != guests[1].id,
        "both guests have one machine-id"
    );

    // Both stage; the CLI hands each over to its daemon, which goes for
    // the lock. Stage them one after the other (the staging itself is not
    // what is tested), then see who won.
    for g in guests.iter_mut() {
        let t0 = Instant::now();
        g.vm().ssh_ok("sudo keel-update check")?;
        eprintln!(
            "fleet: {} staged {version} in {:.0}s",
            g.name,
            t0.elapsed().as_secs_f64()
        );
    }
    let start = Instant::now();
    let first = loop {
        if guests[0].exited()? {
            break 0;
        }
        if guests[1].exited()? {
            break 1;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "neither guest rebooted: {:?}",
            etcd.holders()?
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let second = 1 - first;
    eprintln!("fleet: {} rebooted first", guests[first].name);
    ensure!(
        etcd.holders()? == [guests[first].id.clone()],
        "the lock while {} reboots: {:?}",
        guests[first].name,
        etcd.holders()?
    );
    let st = guests[second].status()?;
    ensure!(
        st.contains("REBOOT_WAITING_FOR=lock\n")
            && st.contains(&format!("REBOOT_LOCK_HOLDERS={}\n", guests[first].id)),
        "{} while the other reboots: {st}",
        guests[second].name
    );

    // The first boots N+1 on trial; until it is marked good, the second
    // keeps waiting.
    guests[first].boot_again(&img)?;
    guests[first].vm().wait_ssh(BOOT)?;
    loop {
        if guests[second].exited()? {
            let good = guests[first]
                .vm()
                .ssh_ok("systemctl is-active keel-mark-successful.service || true")?;
            ensure!(
                good.trim() == "active",
                "{} rebooted before {}'s boot was good ({})",
                guests[second].name,
                guests[first].name,
                good.trim()
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(1200) {
            let st = guests[second].status()?;
            bail!(
                "{} never rebooted; lock {:?}; its status:\n{st}",
                guests[second].name,
                etcd.holders()?
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "fleet: {} rebooted {:.0}s after the first reboot",
        guests[second].name,
        start.elapsed().as_secs_f64()
    );
    guests[second].boot_again(&img)?;
    guests[second].vm().wait_ready(BOOT)?;

    for g in guests.iter_mut() {
        let os = g.vm().ssh_ok(". /etc/os-release && echo $VERSION_ID")?;
        ensure!(
            os.trim() == version,
            "{} runs {os:?}, wanted {version}",
            g.name
        );
        let boot: serde_json::Value =
            serde_json::from_str(&g.vm().ssh_ok("cat /run/keel/boot.json")?)?;
        ensure!(boot["slot"] == "B", "{}: boot.json {boot}", g.name);
    }
    let t = Instant::now();
    while !etcd.holders()?.is_empty() {
        ensure!(
            t.elapsed() < Duration::from_secs(180),
            "the lock after both good boots: {:?}",
            etcd.holders()?
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    for g in guests.iter_mut() {
        if let Some(vm) = g.vm.take() {
            vm.finish()?;
        }
    }
    Ok(())
}
