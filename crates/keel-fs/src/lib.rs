//! keel-fs: superseded by `keel_contract::atomic`, kept only until its last
//! user (keel-update) moves over; then this crate is removed (issue 14).
//!
//! There is one atomic write in Keel, `keel_contract::write_atomic` (temp
//! file in the same directory, fsync, rename, fsync the directory; the
//! temporary file removed on any error). This crate re-exports it so that
//! code written against keel-fs keeps building. New code: use
//! `keel_contract::write_atomic` or `keel_contract::AtomicWrite`.

pub use keel_contract::atomic::write_atomic;
