//! `keel-oem`: run OEM hook stages, show their status, check an OEM tree;
//! invoked as `keel-oem-generator` it is the systemd generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use keel_contract::paths;
use keel_oem::manifest::Stage;
use keel_oem::state::Paths;
use keel_oem::{generator, spawn, status};

/// The name systemd calls the generator by (a symlink to this binary).
const GENERATOR_NAME: &str = "keel-oem-generator";

#[derive(Parser, Debug)]
#[command(name = "keel-oem", version, about = "Keel's OEM hooks runner")]
struct Cli {
    /// The OEM tree.
    #[arg(long, global = true, default_value = paths::OEM_DIR, hide = true)]
    oem_dir: PathBuf,
    /// Persistent state (markers, results).
    #[arg(long, global = true, default_value = paths::OEM_STATE_DIR, hide = true)]
    state_dir: PathBuf,
    /// Runtime status directory.
    #[arg(long, global = true, default_value = paths::OEM_RUN_DIR, hide = true)]
    run_dir: PathBuf,
    /// Platform facts file.
    #[arg(long, global = true, default_value = paths::METADATA, hide = true)]
    metadata: PathBuf,
    /// keel-init's boot record.
    #[arg(
        long,
        global = true,
        default_value = paths::BOOT_RECORD,
        hide = true
    )]
    boot_json: PathBuf,
    /// journald's stream socket for hook output.
    #[arg(long, global = true, default_value = spawn::JOURNAL_STREAM_SOCKET, hide = true)]
    journal_socket: PathBuf,
    /// Send hook output to stderr, not the journal.
    #[arg(long, global = true, hide = true)]
    no_journal: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the hooks of a stage (early, network, late), as its unit does.
    Run {
        /// early, network or late.
        stage: String,
    },
    /// Show every hook: stage, last run, duration, exit status, next run.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate an OEM tree (the directory that becomes /oem) before shipping it.
    Check {
        /// The OEM tree.
        dir: PathBuf,
    },
    /// Run the generator: write units into NORMAL (what systemd does at boot).
    Generate {
        /// The generator's normal directory.
        normal: PathBuf,
        /// Early directory (unused).
        early: Option<PathBuf>,
        /// Late directory (unused).
        late: Option<PathBuf>,
        /// Print the plan instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let is_generator = Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == GENERATOR_NAME);
    if is_generator {
        keel_log::init(GENERATOR_NAME);
        return report(run_generator_argv());
    }
    keel_log::init("keel-oem");
    report(run(Cli::parse()))
}

fn report(r: Result<ExitCode>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel-oem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_generator_argv() -> Result<ExitCode> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some(normal) = args.first() else {
        anyhow::bail!("usage: {GENERATOR_NAME} NORMAL-DIR [EARLY-DIR LATE-DIR]");
    };
    generator::generate(
        &Paths::default(),
        Path::new(generator::SYSTEM_UNIT_DIR),
        normal,
    )
    .with_context(|| format!("generating units into {}", normal.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths {
        oem_dir: cli.oem_dir,
        state_dir: cli.state_dir,
        run_dir: cli.run_dir,
        metadata: cli.metadata,
        boot_json: cli.boot_json,
    };
    match cli.cmd {
        Cmd::Run { stage } => {
            let stage: Stage = stage.parse().map_err(anyhow::Error::msg)?;
            let journal = (!cli.no_journal).then_some(cli.journal_socket);
            let mut spawner = spawn::RealSpawner::new(journal);
            let report = keel_oem::run_stage(&paths, stage, &mut spawner)
                .with_context(|| format!("running OEM stage {stage}"))?;
            tracing::info!(stage = %stage, hooks = report.hooks.len(), "stage done");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let Some(manifest) = keel_oem::load_manifest(&paths)? else {
                println!("no OEM manifest at {}", paths.manifest().display());
                return Ok(ExitCode::SUCCESS);
            };
            let s = status::collect(&paths, &manifest)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", status::render(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { dir } => {
            let r = keel_oem::check(&dir);
            for s in &r.summary {
                println!("{s}");
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            for e in &r.errors {
                eprintln!("error: {e}");
            }
            if r.errors.is_empty() {
                println!("{}: ok", dir.display());
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{}: {} error(s)", dir.display(), r.errors.len());
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Generate {
            normal, dry_run, ..
        } => {
            let sys = Path::new(generator::SYSTEM_UNIT_DIR);
            if dry_run {
                let plan = generator::plan(&paths, &generator::read_input(&paths, sys));
                print!("{}", generator::render(&plan));
            } else {
                generator::generate(&paths, sys, &normal)
                    .with_context(|| format!("generating units into {}", normal.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
