//! `keel-bootctl`: show and change which `/usr` slot boots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use keel_bootctl::disk::Disk;
use keel_bootctl::{esp, health, slots};
use keel_contract::{paths, BootRecord};

#[derive(Parser, Debug)]
#[command(name = "keel-bootctl", version, about = "Keel's A/B /usr slots")]
struct Cli {
    /// The disk holding the table (default: the boot disk from the boot record).
    #[arg(long, global = true)]
    disk: Option<PathBuf>,
    /// keel-init's boot record.
    #[arg(long, global = true, default_value = paths::BOOT_RECORD, hide = true)]
    boot_record: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The slots: priority, tries, successful, which one runs and why.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make SLOT the next slot to boot, unproven, with N tries (after an
    /// update wrote it); the other slot stays as the fallback.
    SetNext {
        /// A or B.
        slot: slots::Slot,
        /// Boot attempts before falling back.
        #[arg(long, default_value_t = 1)]
        tries: u8,
    },
    /// Mark the booted slot (or --slot) as successful: its GPT attributes,
    /// then its counted loader entry on the ESP (blessed to its proven
    /// name) when this boot came from that slot's entry.
    MarkSuccessful {
        /// Only if the boot is good (see check-boot).
        #[arg(long)]
        if_boot_good: bool,
        /// The slot (default: the booted one).
        #[arg(long)]
        slot: Option<slots::Slot>,
        /// A mounted ESP to bless in (default: found on the boot disk).
        #[arg(long)]
        esp: Option<PathBuf>,
    },
    /// Exit 0 if this boot is good: multi-user.target active and no
    /// critical unit failed (boot-check.d drop-ins; default sshd,
    /// keel-netd, the keel-oem stages). Run before boot-complete.target.
    CheckBoot,
}

fn main() -> ExitCode {
    keel_log::init("keel-bootctl");
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel-bootctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let record = BootRecord::load(&cli.boot_record);
    let disk_path = match (&cli.disk, &record) {
        (Some(d), _) => d.clone(),
        (None, Ok(r)) => PathBuf::from(&r.disk),
        (None, Err(e)) => {
            return Err(anyhow::anyhow!("{e}")).context("finding the boot disk (or pass --disk)")
        }
    };
    match cli.cmd {
        Cmd::Status { json } => {
            let disk = Disk::open(&disk_path, false)?;
            let read = disk.read()?;
            let states = slots::slot_states(&read.gpt)
                .with_context(|| format!("reading the slots on {}", disk_path.display()))?;
            let rec = record
                .as_ref()
                .ok()
                .filter(|r| Path::new(&r.disk) == disk_path);
            let st = slots::status(&disk_path.display().to_string(), states, rec, read.warnings);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", slots::render(&st));
            }
        }
        Cmd::SetNext { slot, tries } => {
            let mut disk = Disk::open(&disk_path, true)?;
            let mut gpt = disk.read_for_write()?;
            if slots::set_next(&mut gpt, slot, tries)? {
                disk.write(&gpt)?;
            }
            info!(
                "USR-{slot} boots next ({tries} {}), on {}",
                if tries == 1 { "try" } else { "tries" },
                disk_path.display()
            );
        }
        Cmd::CheckBoot => {
            let critical = health::load_critical(&health::dropin_dirs())?;
            if let Err(why) = health::check(&health::Systemctl, &critical) {
                warn!("this boot is not good: {why:#}");
                return Ok(ExitCode::FAILURE);
            }
            info!("this boot is good (critical units: {})", critical.join(" "));
        }
        Cmd::MarkSuccessful {
            if_boot_good,
            slot,
            esp,
        } => {
            let slot = match slot {
                Some(s) => s,
                None => {
                    let r = record
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .context("which slot is booted (or pass --slot)")?;
                    r.slot
                }
            };
            if if_boot_good {
                let critical = health::load_critical(&health::dropin_dirs())?;
                if let Err(why) = health::check(&health::Systemctl, &critical) {
                    warn!("not marking USR-{slot} successful: {why:#}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            let mut disk = Disk::open(&disk_path, true)?;
            // Already proven needs no write, so a damaged header (which
            // blocks writes) does not make a good boot look bad.
            let mut gpt = disk.read()?.gpt;
            if slots::mark_successful(&mut gpt, slot)? {
                let mut gpt = disk.read_for_write()?;
                slots::mark_successful(&mut gpt, slot)?;
                disk.write(&gpt)?;
                info!("USR-{slot} marked successful");
            } else {
                info!("USR-{slot} was already marked successful");
            }
            drop(disk);
            // The GPT first: a slot proven there and not on the ESP falls
            // back to the other kernel, which keel-init then refuses to run
            // with this slot's /usr (a rollback, not a broken boot); the
            // other order could leave this kernel with no bootable /usr.
            let kernel_slot = record.as_ref().ok().and_then(|r| r.kernel_slot);
            if kernel_slot == Some(slot) {
                let esp = match esp {
                    Some(d) => esp::Esp::at(&d),
                    None => esp::Esp::open(&disk_path)
                        .context("opening the ESP to bless the booted entry")?,
                };
                for (from, to) in esp::bless(esp.root(), slot)? {
                    info!("loader entry {from} blessed: now {to}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
