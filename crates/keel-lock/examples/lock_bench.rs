//! Latency of the etcd lock client against a running etcd (used by
//! `bench.sh`): `lock_bench ENDPOINT N`. Measures N rounds of acquire and
//! release (each a read plus a compare-and-swap transaction) and, as the
//! floor, N bare reads of the same key over the same connection. Prints
//! Markdown table rows.

use std::time::{Duration, Instant};

use keel_lock::etcd::{EtcdConfig, EtcdLock};
use keel_lock::{Acquire, RebootLock, Release};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let n = v.len().max(1);
    let mean = v.iter().sum::<Duration>() / n as u32;
    let p = |q: f64| v[((n as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    format!(
        "{:.2} | {:.2} | {:.2} | {:.2}",
        mean.as_secs_f64() * 1e3,
        p(0.5),
        p(0.95),
        p(0.99)
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let cfg = EtcdConfig {
        endpoints: vec![endpoint],
        group: Some("bench".into()),
        ..EtcdConfig::default()
    };
    let l = EtcdLock::new(&cfg, "bench-host")?;
    l.set_max(1)?;
    let (mut acq, mut rel, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        anyhow::ensure!(l.acquire()? == Acquire::Taken, "lock not taken");
        acq.push(t.elapsed());
        let t = Instant::now();
        anyhow::ensure!(l.release()? == Release::Released, "lock not released");
        rel.push(t.elapsed());
        let t = Instant::now();
        l.read()?;
        read.push(t.elapsed());
    }
    println!("| acquire (read + CAS txn) | {n} | {} |", stats(acq));
    println!("| release (read + CAS txn) | {n} | {} |", stats(rel));
    println!(
        "| bare read (floor: one round trip) | {n} | {} |",
        stats(read)
    );
    Ok(())
}
