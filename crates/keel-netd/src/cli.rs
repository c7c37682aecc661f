//! `keel-netd status` and `keel-netd wait-online`. `status` asks the
//! daemon over D-Bus (`org.keel.Network1.ListLinks`) and falls back to the
//! state files under `/run/keel/netd/links/`, saying so; `wait-online`
//! reads the files (it runs before the bus does at boot).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bus::{self, BusError};
use crate::state::{self, LinkStatus};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no link named {0} ({1})")]
    NoSuchLink(String, String),
    #[error("no link state under {0}: is keel-netd running? (D-Bus: {1})")]
    NoState(String, String),
    #[error("timed out after {0}s waiting for the network to be online")]
    Timeout(u64),
    #[error("invalid interface spec '{0}': expected NAME or NAME:STATE (STATE one of no-carrier, carrier, degraded, routable)")]
    BadSpec(String),
}

/// The status of all links or one, from the daemon over the system bus,
/// else from the state files.
pub fn status(run_dir: &Path, iface: Option<&str>) -> Result<String, CliError> {
    status_with(run_dir, iface, bus::fetch_links)
}

/// [`status`] with the D-Bus query supplied (tests pass a fake).
pub fn status_with(
    run_dir: &Path,
    iface: Option<&str>,
    fetch: impl FnOnce() -> Result<Vec<LinkStatus>, BusError>,
) -> Result<String, CliError> {
    let dir = state::links_dir(run_dir).display().to_string();
    let (links, source) = match fetch() {
        Ok(links) => (
            links,
            format!("Source: keel-netd over D-Bus ({})", bus::BUS_NAME),
        ),
        Err(e) => {
            let links = state::read_links(run_dir);
            if links.is_empty() {
                return Err(CliError::NoState(dir, e.to_string()));
            }
            (
                links,
                format!("Source: state files in {dir} (D-Bus not available: {e})"),
            )
        }
    };
    let links: Vec<_> = match iface {
        Some(name) => {
            let l: Vec<_> = links.into_iter().filter(|l| l.name == name).collect();
            if l.is_empty() {
                return Err(CliError::NoSuchLink(name.to_string(), source));
            }
            l
        }
        None => links,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!("{}{source}\n", state::render_status(&links, now)))
}

/// Parse `-i NAME[:STATE]`.
pub fn parse_spec(s: &str) -> Result<(String, Option<String>), CliError> {
    match s.split_once(':') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((n, st))
            if !n.is_empty()
                && crate::config::OperState::parse(st.split(':').next().unwrap_or(st))
                    .is_some() =>
        {
            Ok((
                n.to_string(),
                Some(st.split(':').next().unwrap_or(st).to_string()),
            ))
        }
        _ => Err(CliError::BadSpec(s.to_string())),
    }
}

/// Wait until the links are online (networkd-wait-online semantics);
/// `timeout` zero waits forever. Polls the state files every 100 ms.
pub fn wait_online(
    run_dir: &Path,
    ifaces: &[(String, Option<String>)],
    any: bool,
    timeout: Duration,
) -> Result<(), CliError> {
    let start = Instant::now();
    loop {
        let links = state::read_links(run_dir);
        if state::online(&links, ifaces, any) {
            return Ok(());
        }
        if !timeout.is_zero() && start.elapsed() >= timeout {
            return Err(CliError::Timeout(timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("eth0").unwrap(), ("eth0".into(), None));
        assert_eq!(
            parse_spec("eth0:routable").unwrap(),
            ("eth0".into(), Some("routable".into()))
        );
        assert_eq!(
            parse_spec("eth0:degraded:routable").unwrap(),
            ("eth0".into(), Some("degraded".into()))
        );
        assert_eq!(
            parse_spec("eth0:up").unwrap_err().to_string(),
            "invalid interface spec 'eth0:up': expected NAME or NAME:STATE (STATE one of no-carrier, carrier, degraded, routable)"
        );
        assert!(parse_spec("").is_err());
    }

    #[test]
    fn wait_times_out_and_succeeds() {
        let t = tempfile::tempdir().unwrap();
        let e = wait_online(t.path(), &[], false, Duration::from_millis(250)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "timed out after 0s waiting for the network to be online"
        );
        let s = state::LinkStatus {
            index: 2,
            name: "eth0".into(),
            oper: "routable".into(),
            setup: "configured".into(),
            required_for_online: true,
            required_oper: "degraded".into(),
            ..Default::default()
        };
        state::write_link(t.path(), &s).unwrap();
        wait_online(t.path(), &[], false, Duration::from_secs(2)).unwrap();
        let no_bus = || Err(BusError::Timeout(Duration::from_secs(5)));
        let text = status_with(t.path(), Some("eth0"), no_bus).unwrap();
        assert!(text.contains("State: routable (configured)"), "{text}");
        assert!(
            text.ends_with(&format!(
                "Source: state files in {} (D-Bus not available: no answer within 5s)\n",
                t.path().join("netd/links").display()
            )),
            "{text}"
        );
        assert!(matches!(
            status_with(t.path(), Some("eth9"), no_bus),
            Err(CliError::NoSuchLink(..))
        ));
    }

    #[test]
    fn status_prefers_the_bus() {
        let t = tempfile::tempdir().unwrap();
        let e = status_with(t.path(), None, || {
            Err(BusError::Timeout(Duration::from_secs(5)))
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no link state under {}: is keel-netd running? (D-Bus: no answer within 5s)",
                t.path().join("netd/links").display()
            )
        );
        let from_bus = || {
            Ok(vec![state::LinkStatus {
                index: 2,
                name: "eth0".into(),
                oper: "routable".into(),
                setup: "configured".into(),
                addresses: vec!["10.0.2.15/24".into()],
                ..Default::default()
            }])
        };
        let text = status_with(t.path(), None, from_bus).unwrap();
        assert!(text.contains("Address: 10.0.2.15/24"), "{text}");
        assert!(
            text.ends_with("Source: keel-netd over D-Bus (org.keel.Network1)\n"),
            "{text}"
        );
        let e = status_with(t.path(), Some("eth1"), from_bus).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no link named eth1 (Source: keel-netd over D-Bus (org.keel.Network1))"
        );
    }
}
