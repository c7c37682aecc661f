//! `keel-provision`: check a first-boot config offline (planned against the
//! image as a boot would), translate Butane to Ignition, apply a config to a
//! tree, or show what the last provisioning did. The boot itself runs the library from keel-init.

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
    /// Check an Ignition, cloud-config or Butane file and plan it as a first
    /// boot of the image would; exit 0 if that boot would accept it
    Validate {
        /// The config file
        file: PathBuf,
        /// Plan it against this root tree instead of an image's factory
        /// /etc and /usr (owners, existing files, units to enable)
        #[arg(long, conflicts_with = "usr")]
        sysroot: Option<PathBuf>,
        /// The image's /usr tree to plan against (its units, sysusers and
        /// factory /etc); default /usr when it holds a Keel factory /etc
        #[arg(long)]
        usr: Option<PathBuf>,
        /// Directory Butane `local:` contents are read from
        #[arg(long, short = 'd')]
        files_dir: Option<PathBuf>,
    },
    /// Translate Butane YAML (or a Container Linux Config) to Ignition JSON
    /// and print it
    Translate {
        /// The Butane file
        file: PathBuf,
        /// Directory Butane `local:` contents are read from
        #[arg(long, short = 'd')]
        files_dir: Option<PathBuf>,
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
        /// Directory Butane `local:` contents are read from
        #[arg(long, short = 'd')]
        files_dir: Option<PathBuf>,
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
        Cmd::Validate {
            file,
            sysroot,
            usr,
            files_dir,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let opts = keel_provision::butane::Options { files_dir };
            let default_usr = PathBuf::from("/usr");
            let factory = keel_contract::paths::FACTORY_ETC;
            let base = match (&sysroot, &usr) {
                (Some(root), _) => keel_provision::Base::Sysroot(root),
                (None, Some(usr)) => {
                    let etc = usr.join(factory.trim_start_matches("/usr/"));
                    anyhow::ensure!(
                        etc.is_dir(),
                        "{} is not a Keel image's /usr (no {})",
                        usr.display(),
                        etc.display()
                    );
                    keel_provision::Base::Image(usr)
                }
                (None, None) if std::path::Path::new(factory).is_dir() => {
                    keel_provision::Base::Image(&default_usr)
                }
                (None, None) => keel_provision::Base::None,
            };
            match keel_provision::validate(&data, &name, base, &opts) {
                Ok((plan, format)) => {
                    print!("{}", plan.render());
                    if matches!(base, keel_provision::Base::None) {
                        eprintln!(
                            "{name}: note: no image to plan against (not on Keel; give \
                             --usr IMAGE/usr or --sysroot): units to enable and owners \
                             not checked"
                        );
                    }
                    println!("{name}: ok ({format})");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Translate { file, files_dir } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let opts = keel_provision::butane::Options { files_dir };
            match keel_provision::translate(&data, &name, &opts) {
                Ok(json) => {
                    println!("{json}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Apply {
            file,
            sysroot,
            run,
            files_dir,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let opts = keel_provision::butane::Options { files_dir };
            match keel_provision::apply_file(
                &data,
                &name,
                &sysroot,
                &run,
                &keel_provision::sys::Real,
                &opts,
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
