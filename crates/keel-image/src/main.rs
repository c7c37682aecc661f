//! keel-image command line: `keel-image build`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build Keel's bootable disk image")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image described by an image definition.
    Build {
        /// The image definition.
        #[arg(long, default_value = "image/image.toml")]
        config: PathBuf,
        /// Directory holding the static Keel binaries.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "build")]
        out: PathBuf,
        /// Download and tree cache [default: $KEEL_CACHE_DIR or ./cache].
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    keel_log::init("keel-image");
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Build {
            config,
            bin_dir,
            out,
            cache,
        } => (|| {
            let abs = |p: PathBuf| std::path::absolute(&p).with_context(|| p.display().to_string());
            let config = abs(config)?;
            let repo = config
                .parent()
                .and_then(|p| p.parent())
                .context("the image definition must live in <repo>/image/")?
                .to_path_buf();
            let cache = cache
                .or_else(|| std::env::var_os("KEEL_CACHE_DIR").map(PathBuf::from))
                .unwrap_or_else(|| repo.join("cache"));
            let out = abs(out)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            keel_image::Build::new(keel_image::Options {
                config,
                repo,
                bin_dir: abs(bin_dir)?,
                out,
                cache: abs(cache)?,
            })?
            .run()
        })(),
    };
    match res {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
