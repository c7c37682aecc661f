//! keel-init: `/init` of Keel's initramfs. See the library docs.

use keel_init::{boot, console};

fn main() {
    if std::process::id() != 1 {
        eprintln!("keel-init: must run as PID 1 in the initramfs; refusing to touch this system");
        std::process::exit(2);
    }
    // A panic must not kill PID 1 (a kernel panic hides the message): report
    // it like any other failure and halt.
    std::panic::set_hook(Box::new(|info| {
        console::emergency(&format!("internal error: {info}"));
    }));
    console::init();
    tracing::info!(
        "Keel initramfs starting ({:.3}s after kernel start)",
        console::uptime().as_secs_f64()
    );
    match boot::run() {
        Ok(record) => {
            tracing::info!("switching root to {} (slot {})", boot::SYSROOT, record.slot);
            let err = boot::switch_root(std::path::Path::new(boot::SYSROOT));
            console::emergency(&format!("switching root: {err:#}"));
        }
        Err(e) => console::emergency(&e.to_string()),
    }
}
