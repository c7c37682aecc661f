//! keel-bootctl: the running system's view of and control over the A/B
//! `/usr` slots.
//!
//! Owns: the gptprio attributes of USR-A and USR-B after boot (keel-init owns
//! them during boot): `status` reads them together with keel-init's boot
//! record, `set-next` makes a slot the next one to try (what an updater does
//! after filling the idle slot), `mark-successful` proves the booted slot
//! once the boot is good (called by `keel-mark-successful.service`).
//!
//! Reads: the boot disk's GPT (through [`keel_gpt`]), `/run/keel/boot.json`
//! (written by keel-init: booted slot, disk, slots that failed and why; read
//! through `keel_contract::BootRecord`) and,
//! for `mark-successful --if-boot-good`, systemd's state through
//! [`health::SystemState`]. Writes: both GPT headers of the boot disk, under
//! an exclusive `flock` on the device so two callers never interleave, and
//! never when either header is damaged (keel-init's boot path is what reads a
//! table from its backup; a tool that rewrote both from a half-read table
//! could make things worse).
//!
//! The pure core is [`slots`]: it turns a table into a report and applies the
//! attribute changes; [`disk`] is the effectful shell.

pub mod disk;
pub mod esp;
pub mod health;
pub mod slots;
