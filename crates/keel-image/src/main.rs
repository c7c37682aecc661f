//! keel-image command line: `keel-image build`, `keel-image release`.

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
        /// Build this version instead of image.toml's os_version [env: KEEL_VERSION].
        #[arg(long)]
        version: Option<String>,
        /// Development update key directory [default: OUT/dev-update-key].
        #[arg(long)]
        dev_update_key: Option<PathBuf>,
    },
    /// Write a signed release tree from a built image.
    Release {
        /// The build directory (image.json).
        #[arg(long, default_value = "build")]
        build: PathBuf,
        /// Channel name.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Root of the release tree [default: BUILD/release].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Minisign secret key to sign with (password in
        /// KEEL_RELEASE_KEY_PASSWORD) [default: the build's development key].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Uncompressed chunk size in bytes.
        #[arg(long, default_value_t = keel_release::DEFAULT_CHUNK_SIZE)]
        chunk_size: u64,
        /// zstd level.
        #[arg(long, default_value_t = keel_release::write::DEFAULT_LEVEL)]
        level: i32,
        /// Leave the full disk image out (a tree for updates only).
        #[arg(long)]
        no_disk: bool,
        /// Oldest version that may update to this one directly.
        #[arg(long)]
        min_version: Option<String>,
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
            version,
            dev_update_key,
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
                version: version
                    .or_else(|| std::env::var("KEEL_VERSION").ok().filter(|v| !v.is_empty())),
                dev_update_key: dev_update_key.map(abs).transpose()?,
            })?
            .run()
            .map(drop)
        })(),
        Cmd::Release {
            build,
            channel,
            out,
            key,
            chunk_size,
            level,
            no_disk,
            min_version,
        } => (|| {
            let mut o = keel_image::release::ReleaseOptions::new(build, &channel);
            if let Some(out) = out {
                o.out = out;
            }
            o.key = key;
            o.chunk_size = chunk_size;
            o.level = level;
            o.no_disk = no_disk;
            o.min_version = min_version;
            let s = keel_image::release::release(&o)?;
            eprintln!(
                "release {} ({}) written to {} in {:.1}s: {} MiB ({} MiB uncompressed), signed by key {}{}",
                s.manifest.version,
                channel,
                s.dir.display(),
                s.seconds,
                s.bytes >> 20,
                s.raw_bytes >> 20,
                s.key_id,
                if s.installer {
                    ", with the signed keel-install"
                } else {
                    ""
                }
            );
            Ok(())
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
