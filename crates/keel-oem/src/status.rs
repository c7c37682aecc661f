//! `keel-oem status`: every hook with its stage, last run, duration, exit
//! status and next run, plus this boot's stage results.

use std::fmt::Write as _;

use serde::Serialize;

use crate::manifest::{Manifest, RunPolicy};
use crate::state::{self, format_utc, HookResult, Paths, RuntimeStatus, StateError};

/// One hook's line in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    /// Hook name.
    pub name: String,
    /// Stage.
    pub stage: String,
    /// `first-boot` or `every-boot`.
    pub run: RunPolicy,
    /// Whether a failure fails the stage.
    pub required: bool,
    /// The last run, if any.
    pub last: Option<HookResult>,
    /// When a first-boot hook succeeded (its marker).
    pub done: Option<u64>,
    /// When it runs next, in words.
    pub next_run: String,
}

/// Everything `keel-oem status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This boot's stages.
    pub boot: RuntimeStatus,
    /// Every hook in the manifest, in stage then name order.
    pub hooks: Vec<HookStatus>,
}

/// Collect the status from the manifest and the state files.
pub fn collect(paths: &Paths, manifest: &Manifest) -> Result<Status, StateError> {
    let mut hooks = Vec::new();
    let mut sorted: Vec<_> = manifest.hooks.iter().collect();
    sorted.sort_by(|a, b| (a.stage, &a.name).cmp(&(b.stage, &b.name)));
    for h in sorted {
        let last = state::read_result(paths, &h.name)?;
        let done = state::read_marker(paths, &h.name)?;
        let next_run = match (h.run, done) {
            (RunPolicy::EveryBoot, _) => "every boot".to_string(),
            (RunPolicy::FirstBoot, Some(_)) => "never (succeeded once)".to_string(),
            (RunPolicy::FirstBoot, None) => "next boot (until it succeeds)".to_string(),
        };
        hooks.push(HookStatus {
            name: h.name.clone(),
            stage: h.stage.as_str().to_string(),
            run: h.run,
            required: h.required,
            last,
            done,
            next_run,
        });
    }
    Ok(Status {
        boot: state::read_status(paths)?,
        hooks,
    })
}

/// The human-readable table.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let header = ["HOOK", "STAGE", "LAST RUN", "DURATION", "EXIT", "NEXT RUN"];
    let mut rows: Vec<[String; 6]> = vec![header.map(str::to_string)];
    for h in &s.hooks {
        let (last, dur, exit) = match &h.last {
            Some(r) => (
                format_utc(r.started),
                format!("{}ms", r.duration_ms),
                r.exit.to_string(),
            ),
            None => ("never".into(), "-".into(), "-".into()),
        };
        rows.push([
            format!("{}{}", h.name, if h.required { " (required)" } else { "" }),
            h.stage.clone(),
            last,
            dur,
            exit,
            h.next_run.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i == 5 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if s.boot.stages.is_empty() {
        let _ = writeln!(out, "\nno stage has run in this boot");
    } else {
        let _ = writeln!(
            out,
            "\nthis boot (oem {}, first boot: {}):",
            s.boot.oem_id,
            if s.boot.first_boot { "yes" } else { "no" }
        );
        for (name, st) in &s.boot.stages {
            let _ = write!(
                out,
                "  {name}: {} at {} in {}ms",
                st.state,
                format_utc(st.started),
                st.duration_ms
            );
            if let Some(r) = &st.reason {
                let _ = write!(out, ": {r}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use crate::state::{Exit, StageStatus};
    use std::path::Path;

    #[test]
    fn renders_every_hook() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths {
            state_dir: d.path().join("state"),
            run_dir: d.path().join("run"),
            ..Paths::default()
        };
        let m = manifest::parse(
            Path::new("oem.toml"),
            "version = 1\n[[hook]]\nname = \"keys\"\nstage = \"network\"\ncommand = [\"/oem/bin/k\"]\ntimeout = 5\nrun = \"first-boot\"\nrequired = true\n[[hook]]\nname = \"agent\"\nstage = \"late\"\ncommand = [\"/oem/bin/a\"]\ntimeout = 5\n[[hook]]\nname = \"tune\"\nstage = \"early\"\ncommand = [\"/oem/bin/t\"]\ntimeout = 5\nrun = \"first-boot\"\n",
        )
        .unwrap();
        let mut all = std::collections::BTreeMap::new();
        all.insert(
            "keys".to_string(),
            HookResult {
                stage: "network".into(),
                started: 1_795_000_000,
                duration_ms: 12,
                exit: Exit::Exited { code: 0 },
                output_bytes: 0,
                output_dropped: 0,
                last_stderr: None,
            },
        );
        state::write_marker(&paths, "keys", 1_795_000_001).unwrap();
        all.insert(
            "tune".to_string(),
            HookResult {
                stage: "early".into(),
                started: 1_795_000_000,
                duration_ms: 5000,
                exit: Exit::TimedOut { after_secs: 5 },
                output_bytes: 0,
                output_dropped: 0,
                last_stderr: None,
            },
        );
        state::write_results(&paths, &all).unwrap();
        let mut rt = RuntimeStatus {
            first_boot: true,
            oem_id: "qemu".into(),
            ..Default::default()
        };
        rt.stages.insert(
            "early".into(),
            StageStatus {
                state: "ok".into(),
                started: 1_795_000_000,
                duration_ms: 5001,
                reason: None,
                hooks: Default::default(),
            },
        );
        state::write_status(&paths, &rt).unwrap();
        let s = collect(&paths, &m).unwrap();
        let want = "\
HOOK             STAGE    LAST RUN              DURATION  EXIT                NEXT RUN
tune             early    2026-11-18T11:06:40Z  5000ms    timed out after 5s  next boot (until it succeeds)
keys (required)  network  2026-11-18T11:06:40Z  12ms      exited 0            never (succeeded once)
agent            late     never                 -         -                   every boot

this boot (oem qemu, first boot: yes):
  early: ok at 2026-11-18T11:06:40Z in 5001ms
";
        assert_eq!(render(&s), want);
    }
}
