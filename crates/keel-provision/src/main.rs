//! `keel-provision`: check a first-boot config offline, or show what the
//! last provisioning did. The boot itself runs the library from keel-init.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "keel-provision",
    version,
    about = "Keel first-boot provisioning (Ignition 3.x, cloud-config)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check an Ignition or cloud-config file; exit 0 if a boot would accept it
    Validate {
        /// The config file
        file: PathBuf,
        /// Also plan it against this root tree (owners, existing files,
        /// units to enable) and print the plan
        #[arg(long)]
        sysroot: Option<PathBuf>,
    },
    /// Apply a config file to a root tree now (image builds, tests,
    /// benchmarks): what a first boot does, without sources or run-once
    Apply {
        /// The config file
        file: PathBuf,
        /// The root tree to provision
        #[arg(long)]
        sysroot: PathBuf,
        /// Where runtime units go (`<run>/systemd/system`)
        #[arg(long, default_value = "/run")]
        run: PathBuf,
    },
    /// Show the result of the last provisioning
    Show {
        /// Root of the system to inspect
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print the result file's JSON as is
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    keel_log::init("keel-provision");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel-provision: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Validate { file, sysroot } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            match keel_provision::validate(&data, &name, sysroot.as_deref()) {
                Ok((plan, format)) => {
                    print!("{}", plan.render());
                    println!("{name}: ok ({format})");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Apply { file, sysroot, run } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            match keel_provision::apply_file(
                &data,
                &name,
                &sysroot,
                &run,
                &keel_provision::sys::Real,
            ) {
                Ok(r) => {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Show { root, json } => {
            let report = keel_provision::read_result(&root).map_err(anyhow::Error::msg)?;
            let Some(r) = report else {
                println!("not provisioned (no {})", keel_provision::RESULT);
                return Ok(ExitCode::SUCCESS);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("source:      {}", r.source);
            println!("format:      {}", r.format);
            println!("oem base:    {}", r.oem_base.as_deref().unwrap_or("none"));
            println!(
                "duration:    {:.1} ms ({} steps)",
                r.duration_us as f64 / 1000.0,
                r.steps
            );
            println!("finished:    {} (unix time)", r.finished_unix);
            let a = &r.applied;
            for (what, list) in [
                ("users", &a.users),
                ("groups", &a.groups),
                ("files", &a.files),
                ("directories", &a.directories),
                ("links", &a.links),
                ("units", &a.units),
            ] {
                if !list.is_empty() {
                    println!("{what}:");
                    for x in list {
                        println!("  {x}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
