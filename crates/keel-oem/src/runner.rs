//! Running a stage: which hooks run, with what environment, and what their
//! results mean. Process spawning is behind [`Spawner`] (real side in
//! [`crate::spawn`], a recording fake in the tests), so the policy here — name
//! order, run-once markers written only after success, optional versus
//! required failures, the environment — is tested without root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::manifest::{host_path, Hook, Manifest, RunPolicy, Stage, RESERVED_ENV};
use crate::release::{parse_metadata, OemRelease};
use crate::state::{self, Exit, HookResult, Paths, StageStatus, StateError};

/// Least time between two rewrites of `status.json` in the middle of a stage.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The `PATH` hooks get.
pub const HOOK_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one hook: plain data, decided before any fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// The hook's name (journal identifier).
    pub name: String,
    /// The program, mapped into the real OEM tree.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment, in order.
    pub env: Vec<(String, String)>,
    /// Capabilities kept; everything else is dropped.
    pub capabilities: Vec<caps::Capability>,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// What came back from running one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// How the process ended.
    pub exit: Exit,
    /// Bytes of output forwarded.
    pub output_bytes: u64,
    /// Bytes dropped beyond the limit.
    pub output_dropped: u64,
    /// Last stderr line, for the failure reason.
    pub last_stderr: Option<String>,
}

/// Starts a hook and waits for it (or kills it at its timeout).
pub trait Spawner {
    /// Run one hook to completion.
    fn run(&mut self, spec: &HookSpec) -> HookRun;
}

/// What happened to one hook in a stage run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed.
    Failed(String),
    /// A first-boot hook that already succeeded (Unix time of the marker).
    AlreadyDone(u64),
    /// Not started because an earlier required hook failed.
    NotRun,
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::AlreadyDone(_) => "already-done",
            Outcome::NotRun => "not-run",
        }
    }
}

/// The result of running a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Each hook of the stage, in the order considered.
    pub hooks: Vec<(String, Outcome)>,
    /// Set when a required hook failed: the reason the unit fails with.
    pub failure: Option<String>,
}

/// Errors that stop a stage before or around its hooks.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Markers, results or status could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Context of a stage run that does not come from the manifest.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Where everything is.
    pub paths: Paths,
    /// The vendor's `oem-release`.
    pub release: OemRelease,
    /// `first_boot` from keel-init's `boot.json`.
    pub first_boot: bool,
}

/// The environment of a hook: a minimal base, the metadata facts, the
/// hook's own `environment`, then the variables the runner owns.
pub fn hook_env(ctx: &RunContext, stage: Stage, hook: &Hook) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), HOOK_PATH.into());
    env.insert("LANG".into(), "C.UTF-8".into());
    env.insert("HOME".into(), "/root".into());
    // Re-read before every hook: earlier hooks may have added facts.
    match std::fs::read_to_string(&ctx.paths.metadata) {
        Ok(text) => {
            let md = parse_metadata(&text);
            for (line, msg) in &md.skipped {
                tracing::warn!(
                    hook = %hook.name,
                    "{}:{line}: {msg}; line ignored",
                    ctx.paths.metadata.display()
                );
            }
            for (k, v) in md.facts {
                if RESERVED_ENV.contains(&k.as_str()) || k == "LANG" || k == "HOME" {
                    tracing::warn!(
                        "{}: {k} is set by the runner; metadata value ignored",
                        ctx.paths.metadata.display()
                    );
                    continue;
                }
                env.insert(k, v);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("reading {}: {e}", ctx.paths.metadata.display()),
    }
    for (k, v) in &hook.environment {
        env.insert(k.clone(), v.clone());
    }
    env.insert("KEEL_OEM_ID".into(), ctx.release.id.clone());
    env.insert("KEEL_STAGE".into(), stage.as_str().into());
    env.insert(
        "KEEL_FIRST_BOOT".into(),
        if ctx.first_boot { "1" } else { "0" }.into(),
    );
    env.insert(
        "KEEL_OEM_DIR".into(),
        ctx.paths.oem_dir.to_string_lossy().into_owned(),
    );
    env.insert(
        "KEEL_METADATA".into(),
        ctx.paths.metadata.to_string_lossy().into_owned(),
    );
    env.into_iter().collect()
}

/// The spec for one hook.
pub fn hook_spec(ctx: &RunContext, stage: Stage, hook: &Hook) -> HookSpec {
    HookSpec {
        name: hook.name.clone(),
        program: host_path(&ctx.paths.oem_dir, &hook.command),
        args: hook.args.clone(),
        env: hook_env(ctx, stage, hook),
        capabilities: hook.capabilities.clone(),
        timeout: hook.timeout,
    }
}

fn failure_reason(hook: &Hook, run: &HookRun) -> String {
    let mut reason = format!("hook {:?} {}", hook.name, run.exit);
    if let Some(line) = &run.last_stderr {
        reason.push_str(&format!(": {line}"));
    }
    reason
}

fn stage_status(report: &StageReport, started: u64, clock: Instant, done: bool) -> StageStatus {
    let state = match (&report.failure, done) {
        (Some(_), _) => "failed",
        (None, true) => "ok",
        (None, false) => "running",
    };
    StageStatus {
        state: state.into(),
        started,
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        reason: report.failure.clone(),
        hooks: report
            .hooks
            .iter()
            .map(|(n, o)| (n.clone(), o.word().to_string()))
            .collect(),
    }
}

/// Run every hook of `stage` in name order and record the results: in this
/// boot's `status.json` (at the start, at most once a second and after each
/// failure while the stage runs, and at the end), and once at the end of the
/// stage, durably, in the persistent `results.json`.
pub fn run_stage(
    ctx: &RunContext,
    manifest: &Manifest,
    stage: Stage,
    spawner: &mut dyn Spawner,
) -> Result<StageReport, RunError> {
    let stage_start = state::now_unix();
    let clock = Instant::now();
    let mut report = StageReport {
        stage,
        hooks: Vec::new(),
        failure: None,
    };
    let mut status = state::read_status(&ctx.paths).unwrap_or_else(|e| {
        tracing::warn!("{e}; starting a fresh status file");
        Default::default()
    });
    status.first_boot = ctx.first_boot;
    status.oem_id = ctx.release.id.clone();
    status.stages.insert(
        stage.as_str().into(),
        stage_status(&report, stage_start, clock, false),
    );
    state::write_status(&ctx.paths, &status)?;
    let mut last_write = Instant::now();
    let mut ran: Vec<(String, HookResult)> = Vec::new();
    for hook in manifest.stage(stage) {
        if report.failure.is_some() {
            report.hooks.push((hook.name.clone(), Outcome::NotRun));
            continue;
        }
        if hook.run == RunPolicy::FirstBoot {
            if let Some(when) = state::read_marker(&ctx.paths, &hook.name)? {
                tracing::info!(hook = %hook.name, "first-boot hook already succeeded; skipped");
                report
                    .hooks
                    .push((hook.name.clone(), Outcome::AlreadyDone(when)));
                continue;
            }
        }
        let spec = hook_spec(ctx, stage, hook);
        let started = state::now_unix();
        let t = Instant::now();
        tracing::info!(hook = %hook.name, stage = %stage, "starting hook");
        let run = spawner.run(&spec);
        let duration = t.elapsed();
        let result = HookResult {
            stage: stage.as_str().into(),
            started,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            exit: run.exit.clone(),
            output_bytes: run.output_bytes,
            output_dropped: run.output_dropped,
            last_stderr: run.last_stderr.clone(),
        };
        if run.exit.success() {
            tracing::info!(hook = %hook.name, ms = duration.as_millis() as u64, "hook succeeded");
            // The marker is the one record that must survive a power cut:
            // written (durably) only after success, so a failure is retried.
            if hook.run == RunPolicy::FirstBoot {
                state::write_marker(&ctx.paths, &hook.name, state::now_unix())?;
            }
            report.hooks.push((hook.name.clone(), Outcome::Succeeded));
        } else {
            let reason = failure_reason(hook, &run);
            if hook.required {
                tracing::error!(hook = %hook.name, "required {reason}");
                report.failure = Some(reason.clone());
            } else {
                tracing::warn!(hook = %hook.name, "optional {reason}; continuing");
            }
            report
                .hooks
                .push((hook.name.clone(), Outcome::Failed(reason)));
        }
        status.results.insert(hook.name.clone(), result.clone());
        // Keep status.json current while a stage runs, but at most once a
        // second (and after every failure): rewriting it after each of a
        // hundred quick hooks would double the runner's cost per hook.
        if !run.exit.success() || last_write.elapsed() >= STATUS_INTERVAL {
            status.stages.insert(
                stage.as_str().into(),
                stage_status(&report, stage_start, clock, false),
            );
            state::write_status(&ctx.paths, &status)?;
            last_write = Instant::now();
        }
        ran.push((hook.name.clone(), result));
    }
    status.stages.insert(
        stage.as_str().into(),
        stage_status(&report, stage_start, clock, true),
    );
    state::write_status(&ctx.paths, &status)?;
    if !ran.is_empty() {
        let mut all = state::read_results(&ctx.paths).unwrap_or_else(|e| {
            tracing::warn!("{e}; starting a fresh results file");
            Default::default()
        });
        all.extend(ran);
        state::write_results(&ctx.paths, &all)?;
    }
    Ok(report)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest;
    use std::collections::VecDeque;
    use std::path::Path;

    type Effect = Box<dyn FnMut(&HookSpec)>;

    /// A spawner that records what it was asked to run and answers from a
    /// script; an optional side effect stands in for what a hook does.
    pub(crate) struct FakeSpawner {
        pub(crate) calls: Vec<HookSpec>,
        pub(crate) exits: VecDeque<Exit>,
        pub(crate) effect: Option<Effect>,
    }

    impl FakeSpawner {
        pub(crate) fn new(exits: impl IntoIterator<Item = Exit>) -> Self {
            FakeSpawner {
                calls: Vec::new(),
                exits: exits.into_iter().collect(),
                effect: None,
            }
        }
        fn names(&self) -> Vec<&str> {
            self.calls.iter().map(|c| c.name.as_str()).collect()
        }
    }

    impl Spawner for FakeSpawner {
        fn run(&mut self, spec: &HookSpec) -> HookRun {
            self.calls.push(spec.clone());
            if let Some(f) = self.effect.as_mut() {
                f(spec);
            }
            let exit = self.exits.pop_front().unwrap_or(Exit::Exited { code: 0 });
            HookRun {
                last_stderr: (!exit.success()).then(|| "boom".to_string()),
                exit,
                output_bytes: 0,
                output_dropped: 0,
            }
        }
    }

    const OK: Exit = Exit::Exited { code: 0 };
    const FAIL: Exit = Exit::Exited { code: 3 };

    fn ctx(dir: &Path) -> RunContext {
        RunContext {
            paths: Paths {
                oem_dir: dir.join("oem"),
                state_dir: dir.join("state"),
                run_dir: dir.join("run"),
                metadata: dir.join("metadata"),
                boot_json: dir.join("boot.json"),
            },
            release: OemRelease {
                id: "qemu".into(),
                name: "QEMU".into(),
                version_id: None,
                fields: Default::default(),
            },
            first_boot: true,
        }
    }

    fn manifest(hooks: &[(&str, &str, &str, bool)]) -> Manifest {
        let mut text = String::from("version = 1\n");
        for (name, stage, run, required) in hooks {
            text.push_str(&format!(
                "[[hook]]\nname = \"{name}\"\nstage = \"{stage}\"\ncommand = [\"/oem/bin/{name}\", \"arg\"]\ntimeout = 5\nrun = \"{run}\"\nrequired = {required}\n[hook.environment]\nMINE = \"{name}\"\n"
            ));
        }
        manifest::parse(Path::new("oem.toml"), &text).unwrap()
    }

    #[test]
    fn hooks_of_the_stage_run_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let m = manifest(&[
            ("c", "late", "every-boot", false),
            ("a", "late", "every-boot", false),
            ("b", "early", "every-boot", false),
            ("b2", "late", "every-boot", false),
        ]);
        let mut sp = FakeSpawner::new([]);
        let r = run_stage(&ctx(d.path()), &m, Stage::Late, &mut sp).unwrap();
        assert_eq!(sp.names(), ["a", "b2", "c"]);
        assert_eq!(r.failure, None);
        assert_eq!(sp.calls[0].program, d.path().join("oem/bin/a"));
        assert_eq!(sp.calls[0].args, ["arg"]);
        assert_eq!(sp.calls[0].timeout, Duration::from_secs(5));
    }

    #[test]
    fn first_boot_marker_only_after_success() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path());
        let m = manifest(&[("once", "network", "first-boot", false)]);
        let mut sp = FakeSpawner::new([FAIL, OK]);
        let r = run_stage(&c, &m, Stage::Network, &mut sp).unwrap();
        assert!(matches!(r.hooks[0].1, Outcome::Failed(_)));
        assert_eq!(state::read_marker(&c.paths, "once").unwrap(), None);
        // Next boot: it runs again and succeeds.
        run_stage(&c, &m, Stage::Network, &mut sp).unwrap();
        assert!(state::read_marker(&c.paths, "once").unwrap().is_some());
        // And then never again.
        let r = run_stage(&c, &m, Stage::Network, &mut sp).unwrap();
        assert!(matches!(r.hooks[0].1, Outcome::AlreadyDone(_)));
        assert_eq!(sp.calls.len(), 2);
    }

    #[test]
    fn optional_failure_continues_required_failure_fails_the_stage() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path());
        let m = manifest(&[
            ("a-opt", "late", "every-boot", false),
            ("b-req", "late", "every-boot", true),
            ("c-after", "late", "every-boot", false),
        ]);
        let mut sp = FakeSpawner::new([FAIL, Exit::TimedOut { after_secs: 5 }]);
        let r = run_stage(&c, &m, Stage::Late, &mut sp).unwrap();
        assert_eq!(sp.names(), ["a-opt", "b-req"]);
        assert_eq!(
            r.failure.as_deref(),
            Some("hook \"b-req\" timed out after 5s: boom")
        );
        assert_eq!(r.hooks[2], ("c-after".to_string(), Outcome::NotRun));
        let st = state::read_status(&c.paths).unwrap();
        let late = &st.stages["late"];
        assert_eq!(late.state, "failed");
        assert_eq!(late.hooks["a-opt"], "failed");
        assert_eq!(late.hooks["c-after"], "not-run");
        let res = state::read_result(&c.paths, "a-opt").unwrap().unwrap();
        assert_eq!(res.exit, FAIL);
        assert_eq!(res.stage, "late");
    }

    #[test]
    fn results_persist_across_stages_and_status_shows_each_hook() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path());
        let m = manifest(&[
            ("e", "early", "every-boot", false),
            ("l", "late", "every-boot", false),
        ]);
        let mut sp = FakeSpawner::new([OK, FAIL]);
        run_stage(&c, &m, Stage::Early, &mut sp).unwrap();
        run_stage(&c, &m, Stage::Late, &mut sp).unwrap();
        let all = state::read_results(&c.paths).unwrap();
        assert_eq!(all["e"].exit, OK);
        assert_eq!(all["l"].exit, FAIL);
        assert_eq!(all["l"].last_stderr.as_deref(), Some("boom"));
        let st = state::read_status(&c.paths).unwrap();
        assert_eq!(st.results.len(), 2);
        assert_eq!(st.stages["early"].state, "ok");
        assert_eq!(st.stages["late"].hooks["l"], "failed");
        assert!(st.first_boot);
        assert_eq!(st.oem_id, "qemu");
    }

    #[test]
    fn optional_failures_alone_leave_the_stage_ok() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path());
        let m = manifest(&[
            ("a", "early", "every-boot", false),
            ("b", "early", "every-boot", false),
        ]);
        let mut sp = FakeSpawner::new([Exit::Signaled { signal: 9 }, OK]);
        let r = run_stage(&c, &m, Stage::Early, &mut sp).unwrap();
        assert_eq!(r.failure, None);
        assert_eq!(
            state::read_status(&c.paths).unwrap().stages["early"].state,
            "ok"
        );
    }

    #[test]
    fn environment_is_minimal_plus_metadata_plus_keel_vars() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path());
        std::fs::write(
            &c.paths.metadata,
            "KEEL_HOSTNAME=vm1\nKEEL_STAGE=evil\nPATH=/evil\nbad line\n",
        )
        .unwrap();
        let m = manifest(&[
            ("a", "network", "every-boot", false),
            ("b", "network", "every-boot", false),
        ]);
        let md = c.paths.metadata.clone();
        let mut sp = FakeSpawner::new([]);
        // Hook "a" adds a fact; hook "b" must see it.
        sp.effect = Some(Box::new(move |spec: &HookSpec| {
            if spec.name == "a" {
                let mut t = std::fs::read_to_string(&md).unwrap();
                t.push_str("KEEL_SSH_KEYS=ssh-ed25519 AAAA\n");
                std::fs::write(&md, t).unwrap();
            }
        }));
        run_stage(&c, &m, Stage::Network, &mut sp).unwrap();
        let env: BTreeMap<_, _> = sp.calls[1].env.iter().cloned().collect();
        let want: BTreeMap<String, String> = [
            ("HOME", "/root"),
            ("KEEL_FIRST_BOOT", "1"),
            ("KEEL_HOSTNAME", "vm1"),
            ("KEEL_METADATA", c.paths.metadata.to_str().unwrap()),
            ("KEEL_OEM_DIR", c.paths.oem_dir.to_str().unwrap()),
            ("KEEL_OEM_ID", "qemu"),
            ("KEEL_SSH_KEYS", "ssh-ed25519 AAAA"),
            ("KEEL_STAGE", "network"),
            ("LANG", "C.UTF-8"),
            ("MINE", "b"),
            ("PATH", HOOK_PATH),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        assert!(!sp.calls[0].env.iter().any(|(k, _)| k == "KEEL_SSH_KEYS"));
    }
}
