//! Benchmark helper for `bench.sh` (not shipped): runner overhead per hook
//! versus a plain fork+exec, and the generator's run time versus a systemd
//! generator, all measured in the same run on the same machine.
//!
//! Usage: `oem_bench KEEL_OEM_BINARY OEM_TREE WORK_DIR [ITERATIONS [RUN_DIR]]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_oem::runner::{HookSpec, Spawner};
use keel_oem::spawn::RealSpawner;

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let mean = v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64;
    let median = v[v.len() / 2].as_secs_f64();
    (mean * 1e3, median * 1e3)
}

fn time<F: FnMut()>(n: usize, mut f: F) -> Vec<Duration> {
    f(); // warm up
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: oem_bench KEEL_OEM OEM_TREE WORK_DIR [N]"
    );
    let bin = PathBuf::from(&args[1]);
    let tree = PathBuf::from(&args[2]);
    let work = PathBuf::from(&args[3]);
    let n: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(500);
    // Where `run` keeps this boot's status (a tmpfs, like /run), if given.
    let run_dir = args
        .get(5)
        .map(PathBuf::from)
        .unwrap_or_else(|| work.join("run"));

    // 1. The spawner alone: /bin/true with the full hook machinery (process
    //    group, capability drop, no_new_privs, pipes, pidfd + poll).
    let spec = HookSpec {
        name: "bench".into(),
        program: PathBuf::from("/bin/true"),
        args: vec![],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        capabilities: vec![],
        timeout: Duration::from_secs(10),
    };
    let mut sp = RealSpawner::new(None);
    let hook = time(n, || {
        let r = sp.run(&spec);
        assert!(r.exit.success(), "{:?}", r.exit);
    });
    // Peer: a plain fork+exec+wait of /bin/true.
    let plain = time(n, || {
        let s = Command::new("/bin/true")
            .env_clear()
            .status()
            .expect("spawn /bin/true");
        assert!(s.success());
    });

    // 2. End to end: `keel-oem run late` over a tree of 100 /bin/true hooks,
    //    including manifest parsing, result files (fsync'd) and status.
    let hooks = 100;
    let oem = work.join("oem-true");
    std::fs::create_dir_all(oem.join("bin"))?;
    let _ = std::fs::remove_file(oem.join("bin/true"));
    std::os::unix::fs::symlink("/bin/true", oem.join("bin/true"))?;
    std::fs::write(oem.join("oem-release"), "ID=bench\n")?;
    let mut m = String::from("version = 1\n");
    for i in 0..hooks {
        m.push_str(&format!(
            "[[hook]]\nname = \"h{i:03}\"\nstage = \"late\"\ncommand = [\"/oem/bin/true\"]\ntimeout = 10\n"
        ));
    }
    std::fs::write(oem.join("oem.toml"), m)?;
    let run_once = |dir: &Path| {
        let s = Command::new(&bin)
            .args(["--oem-dir", &oem.to_string_lossy()])
            .args(["--state-dir", &dir.join("state").to_string_lossy()])
            .args(["--run-dir", &run_dir.to_string_lossy()])
            .args(["--metadata", &dir.join("metadata").to_string_lossy()])
            .args(["--boot-json", &dir.join("boot.json").to_string_lossy()])
            .arg("--no-journal")
            .args(["run", "late"])
            .env("KEEL_LOG", "warn")
            .stderr(Stdio::null())
            .status()
            .expect("run keel-oem");
        assert!(s.success());
    };
    let e2e = time(10, || run_once(&work.join("e2e")));
    let plain100 = time(10, || {
        for _ in 0..hooks {
            Command::new("/bin/true")
                .env_clear()
                .status()
                .expect("spawn");
        }
    });

    // 3. Generator: the whole process, as systemd runs it, on the given tree;
    //    peer: systemd-getty-generator (reads /proc/cmdline and /sys, writes
    //    links). Each run gets a fresh output directory, as at boot.
    let gen_root = work.join("gen");
    let mut i = 0;
    let generator = time(n / 5, || {
        i += 1;
        let s = Command::new(&bin)
            .args(["--oem-dir", &tree.to_string_lossy()])
            .arg("generate")
            .arg(gen_root.join(format!("k{i}")))
            .env("KEEL_LOG", "warn")
            .status()
            .expect("run generator");
        assert!(s.success());
    });
    let peer_gen = Path::new("/usr/lib/systemd/system-generators/systemd-getty-generator");
    let peer = peer_gen.exists().then(|| {
        time(n / 5, || {
            i += 1;
            let o = gen_root.join(format!("p{i}"));
            std::fs::create_dir_all(&o).expect("mkdir");
            let _ = Command::new(peer_gen)
                .args([&o, &o, &o])
                .stderr(Stdio::null())
                .status();
        })
    });
    // The generator's own work (read, plan, write), in process.
    let paths = keel_oem::state::Paths {
        oem_dir: tree.clone(),
        ..Default::default()
    };
    let sys = Path::new(keel_oem::generator::SYSTEM_UNIT_DIR);
    let inproc = time(n, || {
        i += 1;
        keel_oem::generator::generate(&paths, sys, &gen_root.join(format!("i{i}")))
            .expect("generate");
    });
    let _ = std::fs::remove_dir_all(&gen_root);

    let (hm, hmed) = stats(hook);
    let (pm, pmed) = stats(plain);
    let (em, emed) = stats(e2e);
    let (qm, qmed) = stats(plain100);
    let (gm, gmed) = stats(generator);
    println!("| measurement | keel-oem mean (ms) | median (ms) | peer | peer mean (ms) | peer median (ms) | ratio (mean) | target |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("| per hook: spawner, /bin/true (n={n}) | {hm:.3} | {hmed:.3} | fork+exec /bin/true | {pm:.3} | {pmed:.3} | {:.2} | ≤ 2 ms |", hm / pm);
    println!(
        "| per hook: `keel-oem run` end to end, {hooks} hooks / {hooks} | {:.3} | {:.3} | {hooks}× fork+exec / {hooks} | {:.3} | {:.3} | {:.2} | ≤ 2 ms |",
        em / hooks as f64,
        emed / hooks as f64,
        qm / hooks as f64,
        qmed / hooks as f64,
        em / qm
    );
    let (im, imed) = stats(inproc);
    println!("| generator, in process: read + plan + write (n={n}) | {im:.3} | {imed:.3} | - | - | - | - | ≤ 5 ms |");
    match peer.map(stats) {
        Some((xm, xmed)) => println!(
            "| generator, whole process (n={}) | {gm:.3} | {gmed:.3} | systemd-getty-generator | {xm:.3} | {xmed:.3} | {:.2} | ≤ 5 ms |",
            n / 5,
            gm / xm
        ),
        None => println!("| generator, whole process (n={}) | {gm:.3} | {gmed:.3} | (no peer installed) | - | - | - | ≤ 5 ms |", n / 5),
    }
    Ok(())
}
