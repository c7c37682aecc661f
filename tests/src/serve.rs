//! Servers for tests, each started by the test on 127.0.0.1 with its own
//! configuration, data and logs in a temporary directory, and stopped when
//! dropped; never the host's services (`./run deps` keeps them masked):
//! a static web server (Debian's nginx, [`Nginx`]) and an etcd member
//! (Debian's etcd-server, [`Etcd`]).
//!
//! A guest under QEMU's user network reaches it at `10.0.2.2:<port>`
//! ([`Nginx::guest_url`]). nginx serves byte ranges of static files, which
//! the update agent's resumable downloads ask for.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian's nginx binary (package `nginx`).
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx serving one directory.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// Its prefix: configuration, logs, temporary files.
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Serve `root` (read-only) on a free port of 127.0.0.1.
    pub fn serve(root: &Path) -> Result<Nginx> {
        let root = fs::canonicalize(root).with_context(|| root.display().to_string())?;
        let dir = tempfile::Builder::new().prefix("keel-nginx-").tempdir()?;
        let port = free_port()?;
        let p = dir.path();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/access.log;\n\
             client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
             types {{ application/json json; }}\n  default_type application/octet-stream;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
            p = p.display(),
            root = root.display(),
        );
        fs::write(p.join("nginx.conf"), conf)?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(p.join("stderr.log"))?))
            .spawn()
            .with_context(|| format!("starting {NGINX} (Debian package nginx; ./run deps)"))?;
        let mut server = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = server.child.try_wait()? {
                bail!(
                    "nginx exited ({st}): {}",
                    fs::read_to_string(server.dir.path().join("stderr.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The base URL as the host sees it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL as a QEMU guest on the user network sees it.
    pub fn guest_url(&self) -> String {
        format!("http://10.0.2.2:{}", self.port)
    }

    /// The access log so far (one request a line).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Where the access log is.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's etcd binary (package `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

/// One etcd member on 127.0.0.1 with its own data directory (plain HTTP:
/// the TLS and auth cases are keel-lock's privileged tests).
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    /// The client port on 127.0.0.1.
    pub port: u16,
    /// Data directory and log.
    pub dir: tempfile::TempDir,
}

impl Etcd {
    /// Start a single-member cluster and wait until it serves the v3
    /// gateway (a range request answers).
    pub fn start() -> Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("keel-etcd-").tempdir()?;
        let port = free_port()?;
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let client = format!("http://127.0.0.1:{port}");
        let log = fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(ETCD)
            .arg("--name=keel-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=keel-test={peer}"))
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {ETCD} (Debian package etcd-server; ./run deps)"))?;
        let mut e = Etcd { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if e.post("/v3/kv/range", r#"{"key":"AA=="}"#)
                .is_ok_and(|r| r.contains("\"header\""))
            {
                return Ok(e);
            }
            if let Some(st) = e.child.try_wait()? {
                bail!("etcd exited ({st}): {}", e.log());
            }
            if Instant::now() > deadline {
                bail!("etcd did not answer on {client} within 30 s: {}", e.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The endpoint as the host sees it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint as a QEMU guest on the user network sees it.
    pub fn guest_endpoint(&self) -> String {
        format!("http://10.0.2.2:{}", self.port)
    }

    /// A client of the reboot semaphore (locksmith's key) on this etcd.
    pub fn lock_client(&self) -> Result<keel_lock::etcd::EtcdLock> {
        let cfg = keel_lock::etcd::EtcdConfig {
            endpoints: vec![self.endpoint()],
            timeout: Duration::from_secs(5),
            ..keel_lock::etcd::EtcdConfig::default()
        };
        Ok(keel_lock::etcd::EtcdLock::new(&cfg, "keel-vm-test")?)
    }

    /// Who holds the reboot semaphore now.
    pub fn holders(&self) -> Result<Vec<String>> {
        Ok(self
            .lock_client()?
            .read()?
            .value
            .map(|s| s.holders)
            .unwrap_or_default())
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// One JSON POST to the v3 gateway; the response body.
    fn post(&self, path: &str, body: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            c,
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        c.read_to_string(&mut resp)?;
        Ok(resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Needs Debian's nginx; skipped (with a note) where it is not installed.
    #[test]
    fn serves_ranges_and_stops() -> Result<()> {
        if !Path::new(NGINX).exists() {
            eprintln!("skipped: {NGINX} not installed");
            return Ok(());
        }
        let root = tempfile::tempdir()?;
        fs::write(root.path().join("blob"), b"0123456789")?;
        let port;
        {
            let s = Nginx::serve(root.path())?;
            port = s.port;
            let mut c = TcpStream::connect(("127.0.0.1", s.port))?;
            c.write_all(b"GET /blob HTTP/1.0\r\nRange: bytes=3-5\r\n\r\n")?;
            let mut resp = String::new();
            c.read_to_string(&mut resp)?;
            assert!(resp.starts_with("HTTP/1.1 206"), "{resp}");
            assert!(resp.ends_with("345"), "{resp}");
            assert!(s.access_log().contains("GET /blob"));
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        Ok(())
    }
}
