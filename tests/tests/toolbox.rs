//! VM test of toolbox (issue 4). Run with `./run test vm`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use keel_tests::{ssh_with_input, BootOptions, Image, Vm};

/// On a booted Keel image, `toolbox` from a local archive runs a command that
/// reads the host's `/usr/lib/os-release` through `/media/root`.
#[test]
fn toolbox_from_local_archive_reads_the_host() -> Result<()> {
    let img = Image::from_env()?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("toolbox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/toolbox/test-image.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&archive)
        .arg("test")
        .status()?;
    ensure!(st.success(), "building the test image archive");
    let mut vm = Vm::boot("toolbox_local_archive", &img, BootOptions::default())?;
    vm.wait_ready(Duration::from_secs(300))?;
    ssh_with_input(&vm, "cat > /var/tmp/toolbox.tar", &archive)?;
    let out = vm.ssh_ok("toolbox --image oci-archive:/var/tmp/toolbox.tar --tag test cat /media/root/usr/lib/os-release")?;
    ensure!(out.contains("ID=keel"), "toolbox output: {out}");
    let code =
        vm.ssh("toolbox --image oci-archive:/var/tmp/toolbox.tar --tag test sh -c 'exit 7'")?;
    ensure!(
        code.status.code() == Some(7),
        "exit status not passed through: {:?}",
        code.status
    );
    vm.finish()?;
    Ok(())
}
