//! Fleet reboot coordination (placeholder header, filled below).
pub mod window;
