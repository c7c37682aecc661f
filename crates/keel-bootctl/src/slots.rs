//! The pure core: the A/B slots of a partition table, what `status` shows,
//! and the attribute changes of `set-next` and `mark-successful`.
//!
//! Policy (DESIGN.md, "Decisions taken while building"):
//! - `set-next S` marks S as new: priority 2, `tries` tries (default 1), not
//!   successful; the other slot, if it may boot at all (priority > 0), drops
//!   to priority 1 so it stays the fallback. An updater calls it after
//!   writing S, so whatever S held before is no longer proven.
//! - `mark-successful S` sets successful and clears tries (a proven slot
//!   never runs out of tries), keeping the priority.

use std::fmt::Write as _;

use keel_gpt::prio::{boot_order, Prio, PrioError};
use keel_gpt::Gpt;
use serde::Serialize;
use thiserror::Error;

use keel_contract::boot_record::SlotFailure;
use keel_contract::BootRecord;

/// Priority `set-next` gives its slot.
pub const NEXT_PRIORITY: u8 = 2;
/// Priority the other slot keeps as the fallback.
pub const FALLBACK_PRIORITY: u8 = 1;

/// One of the two `/usr` slots (the contract's type: `A`/`a`/`USR-A` on
/// the command line, `"A"` in JSON).
pub use keel_contract::Slot;

/// Something about the slots that cannot be done.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    /// The table has no such partition.
    #[error("the partition table has no partition labelled {0}")]
    Missing(&'static str),
    /// Tries outside what `set-next` accepts.
    #[error("--tries {0}: must be 1..=15 (a new slot needs at least one try)")]
    Tries(u8),
    /// The attribute field rejected a value.
    #[error("{label}: {source}")]
    Attribute {
        /// The partition.
        label: &'static str,
        /// What was out of range.
        source: PrioError,
    },
}

/// One slot's state in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotState {
    /// The slot.
    pub slot: Slot,
    /// Its partition number.
    pub partition: u32,
    /// 0 (never) to 15.
    pub priority: u8,
    /// Tries left while unproven.
    pub tries: u8,
    /// Booted well once.
    pub successful: bool,
    /// May boot at all.
    pub bootable: bool,
}

/// The slots in `gpt`, in table order; USR-A must exist, USR-B may not (a
/// single-slot disk still boots).
pub fn slot_states(gpt: &Gpt) -> Result<Vec<SlotState>, SlotError> {
    let mut out = Vec::new();
    for slot in Slot::ALL {
        match gpt.by_name(slot.label()) {
            Some(p) => {
                let prio = Prio::from_attributes(p.attributes);
                out.push(SlotState {
                    slot,
                    partition: p.number,
                    priority: prio.priority,
                    tries: prio.tries,
                    successful: prio.successful,
                    bootable: prio.bootable(),
                });
            }
            None if slot == Slot::A => return Err(SlotError::Missing(slot.label())),
            None => {}
        }
    }
    Ok(out)
}

/// The slot keel-init will try first at the next boot.
pub fn next_boot(states: &[SlotState]) -> Option<Slot> {
    let prios: Vec<(Slot, Prio)> = states
        .iter()
        .map(|s| {
            (
                s.slot,
                Prio {
                    priority: s.priority,
                    tries: s.tries,
                    successful: s.successful,
                },
            )
        })
        .collect();
    boot_order(&prios).first().copied()
}

fn update(gpt: &mut Gpt, slot: Slot, f: impl FnOnce(&mut Prio)) -> Result<(Prio, Prio), SlotError> {
    let number = gpt
        .by_name(slot.label())
        .map(|p| p.number)
        .ok_or(SlotError::Missing(slot.label()))?;
    let part = gpt
        .by_number_mut(number)
        .map_err(|_| SlotError::Missing(slot.label()))?;
    let before = Prio::from_attributes(part.attributes);
    let mut after = before;
    f(&mut after);
    part.attributes = after
        .apply(part.attributes)
        .map_err(|source| SlotError::Attribute {
            label: slot.label(),
            source,
        })?;
    Ok((before, after))
}

/// Make `slot` the next slot to boot, unproven with `tries` tries. Returns
/// whether the table changed.
pub fn set_next(gpt: &mut Gpt, slot: Slot, tries: u8) -> Result<bool, SlotError> {
    if !(1..=15).contains(&tries) {
        return Err(SlotError::Tries(tries));
    }
    let (b, a) = update(gpt, slot, |p| {
        p.priority = NEXT_PRIORITY;
        p.tries = tries;
        p.successful = false;
    })?;
    let mut changed = b != a;
    if gpt.by_name(slot.other().label()).is_some() {
        let (b, a) = update(gpt, slot.other(), |p| {
            if p.priority > 0 {
                p.priority = FALLBACK_PRIORITY;
            }
        })?;
        changed |= b != a;
    }
    Ok(changed)
}

/// Prove `slot`: successful, no tries needed. Returns whether the table
/// changed (false when it was already proven).
pub fn mark_successful(gpt: &mut Gpt, slot: Slot) -> Result<bool, SlotError> {
    let (b, a) = update(gpt, slot, |p| {
        p.successful = true;
        p.tries = 0;
    })?;
    Ok(b != a)
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The boot disk.
    pub disk: String,
    /// Both slots.
    pub slots: Vec<SlotState>,
    /// The slot running now, if keel-init's record says.
    pub booted: Option<Slot>,
    /// Why that slot runs.
    pub reason: Option<String>,
    /// Slots keel-init tried first this boot, with why they failed.
    pub failed: Vec<SlotFailure>,
    /// The slot the next boot tries first.
    pub next: Option<Slot>,
    /// Problems with the table itself (a damaged header).
    pub warnings: Vec<String>,
}

/// Build the status from the table and, if there is one, the boot record.
pub fn status(
    disk: &str,
    states: Vec<SlotState>,
    record: Option<&BootRecord>,
    warnings: Vec<String>,
) -> Status {
    let next = next_boot(&states);
    let (booted, reason, failed) = match record {
        Some(r) => {
            let slot = r.slot;
            let reason = if !r.failed_slots.is_empty() {
                let why: Vec<String> = r
                    .failed_slots
                    .iter()
                    .map(|f| format!("USR-{} failed: {}", f.slot, f.reason))
                    .collect();
                format!("fallback in the same boot ({})", why.join("; "))
            } else if r.consumed_try {
                "an unproven slot on trial (this boot used one of its tries)".to_string()
            } else {
                "the bootable slot with the highest priority".to_string()
            };
            (Some(slot), Some(reason), r.failed_slots.clone())
        }
        None => (None, None, Vec::new()),
    };
    Status {
        disk: disk.to_string(),
        slots: states,
        booted,
        reason,
        failed,
        next,
        warnings,
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The human-readable form of a status.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Disk: {}", s.disk);
    match (&s.booted, &s.reason) {
        (Some(b), Some(r)) => {
            let _ = writeln!(out, "Booted: USR-{b} ({r})");
        }
        _ => {
            let _ = writeln!(out, "Booted: unknown (no boot record from keel-init)");
        }
    }
    match s.next {
        Some(n) => {
            let _ = writeln!(out, "Next boot: USR-{n}");
        }
        None => {
            let _ = writeln!(out, "Next boot: no bootable slot!");
        }
    }
    for w in &s.warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    let _ = writeln!(
        out,
        "\n{:<7}{:>5} {:>9} {:>6} {:>11} {:>9}",
        "SLOT", "PART", "PRIORITY", "TRIES", "SUCCESSFUL", "BOOTABLE"
    );
    for st in &s.slots {
        let mark = if Some(st.slot) == s.booted { "*" } else { " " };
        let _ = writeln!(
            out,
            "{mark}{:<6}{:>5} {:>9} {:>6} {:>11} {:>9}",
            st.slot.label(),
            st.partition,
            st.priority,
            st.tries,
            yes(st.successful),
            yes(st.bootable)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_gpt::{types, Partition, Uuid};

    const MIB: u64 = 1 << 20;

    fn table(a: Prio, b: Option<Prio>) -> Gpt {
        let mut g = Gpt::new(64 * MIB, 512).expect("table");
        let mut add = |number, first, name: &str, prio: Prio| {
            g.set_partition(Partition {
                number,
                type_guid: types::USR_X86_64,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: first + 2047,
                attributes: prio.apply(1 << 60).expect("attr"),
                name: name.into(),
            })
            .expect("partition");
        };
        add(1, 2048, "USR-A", a);
        if let Some(b) = b {
            add(2, 4096, "USR-B", b);
        }
        g
    }

    fn p(priority: u8, tries: u8, successful: bool) -> Prio {
        Prio {
            priority,
            tries,
            successful,
        }
    }

    fn prio_of(g: &Gpt, slot: Slot) -> Prio {
        Prio::from_attributes(g.by_name(slot.label()).expect("slot").attributes)
    }

    #[test]
    fn set_next_makes_the_slot_first_and_keeps_the_other_as_fallback() {
        let mut g = table(p(1, 0, true), Some(p(0, 0, false)));
        assert!(set_next(&mut g, Slot::B, 1).expect("set-next"));
        assert_eq!(prio_of(&g, Slot::B), p(2, 1, false));
        assert_eq!(prio_of(&g, Slot::A), p(1, 0, true));
        assert_eq!(next_boot(&slot_states(&g).expect("states")), Some(Slot::B));
        // Other attribute bits survive.
        assert_ne!(g.by_name("USR-B").expect("b").attributes & 1 << 60, 0);
    }

    #[test]
    fn set_next_clears_a_previous_proof_and_lowers_a_higher_other_slot() {
        let mut g = table(p(5, 0, true), Some(p(3, 0, true)));
        set_next(&mut g, Slot::B, 3).expect("set-next");
        assert_eq!(prio_of(&g, Slot::B), p(2, 3, false));
        assert_eq!(prio_of(&g, Slot::A), p(1, 0, true));
    }

    #[test]
    fn set_next_leaves_a_disabled_slot_disabled_and_checks_tries() {
        let mut g = table(p(0, 0, false), Some(p(1, 0, true)));
        set_next(&mut g, Slot::B, 1).expect("set-next");
        assert_eq!(prio_of(&g, Slot::A), p(0, 0, false));
        assert_eq!(set_next(&mut g, Slot::A, 0), Err(SlotError::Tries(0)));
        assert_eq!(set_next(&mut g, Slot::A, 16), Err(SlotError::Tries(16)));
    }

    #[test]
    fn set_next_on_a_single_slot_disk() {
        let mut g = table(p(1, 0, true), None);
        assert_eq!(
            set_next(&mut g, Slot::B, 1),
            Err(SlotError::Missing("USR-B"))
        );
        assert!(set_next(&mut g, Slot::A, 1).expect("A"));
    }

    #[test]
    fn mark_successful_proves_once() {
        let mut g = table(p(1, 0, true), Some(p(2, 0, false)));
        assert!(mark_successful(&mut g, Slot::B).expect("mark"));
        assert_eq!(prio_of(&g, Slot::B), p(2, 0, true));
        assert!(!mark_successful(&mut g, Slot::B).expect("again"));
    }

    #[test]
    fn tries_running_out_hands_the_next_boot_back() {
        let g = table(p(1, 0, true), Some(p(2, 0, false)));
        let st = slot_states(&g).expect("states");
        assert!(!st[1].bootable);
        assert_eq!(next_boot(&st), Some(Slot::A));
        let g = table(p(0, 0, false), Some(p(2, 0, false)));
        assert_eq!(next_boot(&slot_states(&g).expect("states")), None);
    }

    #[test]
    fn status_explains_a_fallback() {
        let g = table(p(1, 0, true), Some(p(2, 0, true)));
        let rec = BootRecord::parse(
            "b",
            br#"{"version":1,"slot":"A","disk":"/dev/vda","failed_slots":
               [{"slot":"B","reason":"dm-verity rejected the data"}]}"#,
        )
        .expect("record");
        let s = status(
            "/dev/vda",
            slot_states(&g).expect("states"),
            Some(&rec),
            vec![],
        );
        assert_eq!(s.booted, Some(Slot::A));
        let text = render(&s);
        assert!(
            text.contains(
                "Booted: USR-A (fallback in the same boot (USR-B failed: dm-verity rejected the data))"
            ),
            "{text}"
        );
        assert!(text.contains("Next boot: USR-B"), "{text}");
        assert!(text.contains("*USR-A"), "{text}");
    }

    #[test]
    fn slot_names() {
        assert_eq!("b".parse::<Slot>(), Ok(Slot::B));
        assert_eq!("USR-A".parse::<Slot>(), Ok(Slot::A));
        assert_eq!(
            "C".parse::<Slot>().expect_err("C").to_string(),
            "\"C\" is not a slot: use A or B"
        );
        let g = Gpt::new(64 * MIB, 512).expect("empty");
        assert_eq!(slot_states(&g), Err(SlotError::Missing("USR-A")));
    }
}
