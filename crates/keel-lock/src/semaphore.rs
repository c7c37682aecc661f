//! The reboot semaphore's value, as locksmith stores it in etcd:
//! `{"semaphore":N,"max":M,"holders":["<machine-id>",…]}`.
//!
//! Pure data and the three operations on it (lock, unlock, set-max), with
//! locksmith's arithmetic, so Keel hosts and locksmith-era tooling that read
//! or write the same key agree: `semaphore` counts the free slots and is
//! what decides (a lock needs `semaphore > 0`); `set-max` shifts it by the
//! change of `max`, so lowering `max` below the current holders makes it
//! negative until enough of them unlock. `holders` stays sorted.

use serde::{Deserialize, Deserializer, Serialize};

/// The value under a semaphore key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// Free slots (may be negative after `max` was lowered).
    pub semaphore: i64,
    /// Slots in total.
    pub max: i64,
    /// Who holds a slot, sorted. locksmith writes `null` for none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub holders: Vec<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// What a lock attempt did to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// `holder` took a slot (the value changed).
    Taken,
    /// `holder` was already in the list (nothing changed).
    AlreadyHeld,
    /// No free slot (nothing changed).
    Full,
}

/// What an unlock did to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockChange {
    /// The holder gave its slot back.
    Released,
    /// The holder was not in the list (nothing changed).
    NotHeld,
}

/// Why a value is refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Not JSON of the expected shape.
    #[error("not a reboot semaphore ({{\"semaphore\":N,\"max\":M,\"holders\":[…]}})")]
    Shape(#[from] serde_json::Error),
    /// The same holder appears twice.
    #[error("holder {0:?} appears twice")]
    DuplicateHolder(String),
    /// `max` is negative.
    #[error("max is negative ({0})")]
    NegativeMax(i64),
}

impl Semaphore {
    /// A fresh semaphore with `max` free slots: what a missing key means.
    pub fn new(max: i64) -> Semaphore {
        Semaphore {
            semaphore: max,
            max,
            holders: Vec::new(),
        }
    }

    /// Parse and check a stored value.
    pub fn from_json(bytes: &[u8]) -> Result<Semaphore, ValueError> {
        let mut s: Semaphore = serde_json::from_slice(bytes)?;
        if s.max < 0 {
            return Err(ValueError::NegativeMax(s.max));
        }
        s.holders.sort();
        if let Some(w) = s.holders.windows(2).find(|w| w[0] == w[1]) {
            return Err(ValueError::DuplicateHolder(w[0].clone()));
        }
        Ok(s)
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        // Serialising a struct of integers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether `holder` holds a slot.
    pub fn is_held_by(&self, holder: &str) -> bool {
        self.holders
            .binary_search_by(|h| h.as_str().cmp(holder))
            .is_ok()
    }

    /// Take a slot for `holder` (idempotent for a current holder).
    pub fn lock(&mut self, holder: &str) -> LockChange {
        match self.holders.binary_search_by(|h| h.as_str().cmp(holder)) {
            Ok(_) => LockChange::AlreadyHeld,
            Err(_) if self.semaphore <= 0 => LockChange::Full,
            Err(at) => {
                self.holders.insert(at, holder.to_string());
                self.semaphore -= 1;
                LockChange::Taken
            }
        }
    }

    /// Give `holder`'s slot back.
    pub fn unlock(&mut self, holder: &str) -> UnlockChange {
        match self.holders.binary_search_by(|h| h.as_str().cmp(holder)) {
            Ok(at) => {
                self.holders.remove(at);
                self.semaphore += 1;
                UnlockChange::Released
            }
            Err(_) => UnlockChange::NotHeld,
        }
    }

    /// Change `max`, shifting the free count by the difference (locksmith's rule).
    pub fn set_max(&mut self, max: i64) {
        let diff = self.max - max;
        self.semaphore -= diff;
        self.max = max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_locksmith_values() {
        let s = Semaphore::from_json(br#"{"semaphore":1,"max":1,"holders":null}"#).expect("ok");
        assert_eq!(s, Semaphore::new(1));
        let s =
            Semaphore::from_json(br#"{"semaphore":0,"max":2,"holders":["b","a"]}"#).expect("ok");
        assert_eq!(s.holders, ["a", "b"]);
        assert!(Semaphore::from_json(br#"{"semaphore":1,"max":1}"#).is_ok());
        for bad in [
            &b"hello"[..],
            br#"{"max":1}"#,
            br#"{"semaphore":"1","max":1}"#,
            br#"{"semaphore":1,"max":-1,"holders":[]}"#,
            br#"{"semaphore":0,"max":2,"holders":["a","a"]}"#,
        ] {
            assert!(
                Semaphore::from_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lock_unlock_set_max() {
        let mut s = Semaphore::new(1);
        assert_eq!(s.lock("m1"), LockChange::Taken);
        assert_eq!(s.lock("m1"), LockChange::AlreadyHeld);
        assert_eq!(s.lock("m2"), LockChange::Full);
        assert_eq!(s.to_json(), r#"{"semaphore":0,"max":1,"holders":["m1"]}"#);
        s.set_max(3);
        assert_eq!((s.semaphore, s.max), (2, 3));
        assert_eq!(s.lock("m0"), LockChange::Taken);
        assert_eq!(s.holders, ["m0", "m1"]);
        s.set_max(1);
        assert_eq!((s.semaphore, s.max), (-1, 1));
        assert_eq!(s.lock("m2"), LockChange::Full);
        assert_eq!(s.unlock("m2"), UnlockChange::NotHeld);
        assert_eq!(s.unlock("m1"), UnlockChange::Released);
        assert_eq!(s.unlock("m0"), UnlockChange::Released);
        assert_eq!(s, Semaphore::new(1));
        let back = Semaphore::from_json(s.to_json().as_bytes()).expect("round trip");
        assert_eq!(back, s);
    }
}
