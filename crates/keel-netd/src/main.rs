//! keel-netd: the daemon (no arguments), `status [IFACE]`, `wait-online`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keel_netd::{cli, daemon};

#[derive(Debug, Parser)]
#[command(
    name = "keel-netd",
    version,
    about = "Keel's network configurator: links, addresses, routes, DHCPv4, DNS"
)]
struct Args {
    /// Directory with .network files, lowest priority first (repeatable;
    /// default /usr/lib/keel/network, /run/keel/network, /etc/keel/network).
    #[arg(long = "network-dir", global = true)]
    network_dirs: Vec<PathBuf>,
    /// Where leases are kept.
    #[arg(long, global = true, default_value = "/var/lib/keel/netd")]
    state_dir: PathBuf,
    /// Runtime directory: netd/links/*.json and resolv.conf.
    #[arg(long, global = true, default_value = "/run/keel")]
    run_dir: PathBuf,
    /// The admin's hostname file: a DHCP hostname is applied only when it
    /// is absent or empty.
    #[arg(long, default_value = "/etc/hostname")]
    hostname_file: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show each link's state, addresses, gateway, DNS and lease.
    Status { iface: Option<String> },
    /// Wait until the network is online (networkd-wait-online semantics).
    WaitOnline {
        /// Online when any one link is (default: all required links).
        #[arg(long)]
        any: bool,
        /// Only these links, NAME or NAME:MIN-STATE (repeatable).
        #[arg(short = 'i', long = "interface")]
        interfaces: Vec<String>,
        /// Seconds to wait; 0 waits forever.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    keel_log::init("keel-netd");
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-netd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        None => {
            let mut paths = daemon::Paths {
                state_dir: args.state_dir,
                run_dir: args.run_dir,
                hostname_file: args.hostname_file,
                ..Default::default()
            };
            if !args.network_dirs.is_empty() {
                paths.network_dirs = args.network_dirs;
            }
            daemon::run(paths).context("keel-netd daemon")
        }
        Some(Cmd::Status { iface }) => {
            print!("{}", cli::status(&args.run_dir, iface.as_deref())?);
            Ok(())
        }
        Some(Cmd::WaitOnline {
            any,
            interfaces,
            timeout,
        }) => {
            let specs = interfaces
                .iter()
                .map(|s| cli::parse_spec(s))
                .collect::<Result<Vec<_>, _>>()?;
            cli::wait_online(&args.run_dir, &specs, any, Duration::from_secs(timeout))?;
            Ok(())
        }
    }
}
