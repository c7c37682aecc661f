//! The systemd unit-file syntax of `.network` and `.netdev` files:
//! keel-unit's parser (sections, keys, `\` continuations, `#`/`;` comments;
//! see `keel_unit::syntax`), re-exported under the names this crate's
//! semantics use.

pub use keel_unit::syntax::{parse, Entry, Section, SyntaxError, Warning};
