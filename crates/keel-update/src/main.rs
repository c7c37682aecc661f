//! `keel-update`: the daemon and its CLI.

fn main() {}
