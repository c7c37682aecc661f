//! systemd unit-file *syntax*, one definition for every Keel program that
//! reads or writes unit files, `.network`/`.netdev`/`.link` files or other
//! files in systemd's syntax (keel-netd, keel-oem, keel-provision,
//! keel-image). Each program keeps its own *semantics* on top: which
//! sections and keys mean what, which unit types it accepts, how it turns
//! `[Install]` into links.
//!
//! What lives here, each as systemd documents it (systemd.syntax(7),
//! systemd.unit(5), systemd-escape(1)):
//!
//! - [`syntax`]: `[Section]` headers, `Key=Value` assignments (repeated
//!   keys and sections kept in order), `#`/`;` comment lines (also inside a
//!   continuation), a trailing unescaped `\` joining the next line, a UTF-8
//!   BOM, assignments before any section (a warning, as systemd does).
//! - [`words`]: systemd's quoting for list values (`"…"`, `'…'`,
//!   backslash escapes kept).
//! - [`name`]: unit names (`foo.service`, the template `foo@.service`, the
//!   instance `foo@bar.service`, at most 255 bytes, the eleven unit types)
//!   and `systemd-escape`'s escaping.
//! - [`install`]: the `[Install]` section (`WantedBy=`, `RequiredBy=`,
//!   `UpheldBy=`, `Alias=`, `Also=`, `DefaultInstance=`) and the links
//!   `systemctl enable` would make from it.
//! - [`dropin`]: the search path (same file name: the higher-priority
//!   directory wins; masking by an empty file or a symlink to /dev/null)
//!   and `NAME.d/*.conf` drop-ins in lexical order across directories.
//!
//! It reads no files of its own: callers pass text, or the directories to
//! look in ([`dropin`] lists them). It never panics on any input.

pub mod dropin;
pub mod install;
pub mod name;
pub mod syntax;
pub mod words;

pub use install::Install;
pub use name::{NameError, UnitName, UnitType};
pub use syntax::{parse, Entry, Section, SyntaxError, Warning, What};
