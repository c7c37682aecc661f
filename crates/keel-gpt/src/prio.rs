//! The gptprio A/B attributes: which `/usr` slot boots.
//!
//! Bits of a partition's attribute field (ChromeOS/CoreOS layout): 48–51
//! priority (0–15), 52–55 tries left (0–15), 56 successful. A slot can boot if
//! `priority > 0 && (successful || tries > 0)`; the highest priority wins and,
//! on equal priority, the slot earlier in the partition table (A before B) —
//! the tie rule cgpt uses. Bits 59–63 (DPS: grow-fs, read-only, no-auto) and
//! every other bit are left untouched.

use thiserror::Error;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;
const NIBBLE: u64 = 0xF;

/// An attribute value that does not fit its field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrioError {
    /// Priority above 15.
    #[error("priority {0} out of range (0..=15)")]
    Priority(u8),
    /// Tries above 15.
    #[error("tries {0} out of range (0..=15)")]
    Tries(u8),
}

/// The A/B state of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prio {
    /// 0 = never boot, 15 = highest.
    pub priority: u8,
    /// Boot attempts left before the slot is given up (if not successful).
    pub tries: u8,
    /// The slot has booted well once.
    pub successful: bool,
}

impl Prio {
    /// Decode from a GPT attribute field.
    pub fn from_attributes(attr: u64) -> Self {
        Prio {
            priority: ((attr >> PRIORITY_SHIFT) & NIBBLE) as u8,
            tries: ((attr >> TRIES_SHIFT) & NIBBLE) as u8,
            successful: attr & (1 << SUCCESSFUL_BIT) != 0,
        }
    }

    /// Encode into `attr`, keeping every other bit.
    pub fn apply(self, attr: u64) -> Result<u64, PrioError> {
        if u64::from(self.priority) > NIBBLE {
            return Err(PrioError::Priority(self.priority));
        }
        if u64::from(self.tries) > NIBBLE {
            return Err(PrioError::Tries(self.tries));
        }
        let mask = NIBBLE << PRIORITY_SHIFT | NIBBLE << TRIES_SHIFT | 1 << SUCCESSFUL_BIT;
        Ok(attr & !mask
            | u64::from(self.priority) << PRIORITY_SHIFT
            | u64::from(self.tries) << TRIES_SHIFT
            | u64::from(self.successful) << SUCCESSFUL_BIT)
    }

    /// May this slot be tried at all?
    pub fn bootable(&self) -> bool {
        self.priority > 0 && (self.successful || self.tries > 0)
    }

    /// Account for one boot attempt: an unproven slot loses a try. Returns
    /// whether anything changed (and so the table must be written).
    pub fn consume_try(&mut self) -> bool {
        if self.successful || self.tries == 0 {
            return false;
        }
        self.tries -= 1;
        true
    }
}

impl std::fmt::Display for Prio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "priority={} tries={} successful={}",
            self.priority,
            self.tries,
            u8::from(self.successful)
        )
    }
}

/// The bootable slots in the order to try them: highest priority first, ties
/// kept in input (partition table) order.
pub fn boot_order<T: Clone>(slots: &[(T, Prio)]) -> Vec<T> {
    let mut order: Vec<&(T, Prio)> = slots.iter().filter(|(_, p)| p.bootable()).collect();
    // A stable sort keeps table order among equal priorities.
    order.sort_by_key(|s| std::cmp::Reverse(s.1.priority));
    order.into_iter().map(|(t, _)| t.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(priority: u8, tries: u8, successful: bool) -> Prio {
        Prio {
            priority,
            tries,
            successful,
        }
    }

    #[test]
    fn roundtrip_keeps_other_bits() {
        let other = 1u64 << 60 | 1 << 0 | 1 << 63;
        let attr = p(5, 3, true).apply(other).unwrap();
        assert_eq!(Prio::from_attributes(attr), p(5, 3, true));
        assert_eq!(attr & other, other);
        assert_eq!(attr, other | 5 << 48 | 3 << 52 | 1 << 56);
    }

    #[test]
    fn out_of_range() {
        assert_eq!(p(16, 0, false).apply(0), Err(PrioError::Priority(16)));
        assert_eq!(p(1, 200, false).apply(0), Err(PrioError::Tries(200)));
    }

    #[test]
    fn fresh_image_boots_a() {
        let slots = [("A", p(1, 0, true)), ("B", p(0, 0, false))];
        assert_eq!(boot_order(&slots), vec!["A"]);
    }

    #[test]
    fn update_prefers_b_then_falls_back() {
        let slots = [("A", p(1, 0, true)), ("B", p(2, 1, false))];
        assert_eq!(boot_order(&slots), vec!["B", "A"]);
    }

    #[test]
    fn tries_reach_zero() {
        let mut b = p(2, 1, false);
        assert!(b.consume_try());
        assert_eq!(b.tries, 0);
        assert!(!b.bootable());
        assert!(!b.consume_try());
        let slots = [("A", p(1, 0, true)), ("B", b)];
        assert_eq!(boot_order(&slots), vec!["A"]);
    }

    #[test]
    fn successful_slot_does_not_consume_tries() {
        let mut a = p(1, 0, true);
        assert!(!a.consume_try());
        assert_eq!(a, p(1, 0, true));
    }

    #[test]
    fn both_bad() {
        let slots = [("A", p(1, 0, false)), ("B", p(0, 5, true))];
        assert!(boot_order(&slots).is_empty());
    }

    #[test]
    fn equal_priorities_table_order() {
        let slots = [("A", p(3, 0, true)), ("B", p(3, 2, false))];
        assert_eq!(boot_order(&slots), vec!["A", "B"]);
        let slots = [("B", p(3, 2, false)), ("A", p(3, 0, true))];
        assert_eq!(boot_order(&slots), vec!["B", "A"]);
    }
}
