//! Maintenance windows for the `periodic` reboot strategy: when may this
//! host reboot?
//!
//! A [`Schedule`] is one or more weekly windows (days, a start time of day,
//! a length) in one time zone, plus an optional per-host offset. Its core,
//! [`Schedule::state_at`], is a pure function of the current instant: it
//! says whether a window is open now (and until when) or when the next one
//! opens. Callers pass the clock in, so tests run on a fake one.
//!
//! Semantics:
//! - A window's start is a wall-clock time in the schedule's zone; its
//!   length is elapsed time. On a DST change day a start that falls in the
//!   gap moves forward by the gap, and one that is ambiguous takes the first
//!   occurrence (RFC 5545 / jiff's "compatible" rule), so a window is never
//!   skipped or doubled.
//! - Windows may cross midnight and the week's end; overlapping windows act
//!   as their union.
//! - The per-host offset (`random_offset`) delays where this host's part of
//!   each window begins by a fixed amount in `[0, random_offset)` derived
//!   from the machine id, so a host keeps its place from one window to the
//!   next, and hosts spread over the window instead of all starting at its
//!   first second. It must be shorter than every window.
//!
//! Two input forms: locksmith's `LOCKSMITHD_REBOOT_WINDOW_START` ("Thu
//! 04:00", "04:00") and `_LENGTH` (a Go duration such as "1h30m"), and a
//! TOML form that follows Zincati's `[[updates.periodic.window]]`
//! (`days`, `start_time`, `length_minutes`, `time_zone`).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a window specification was refused. Each names the field and value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    /// The start ("[Day] HH:MM") could not be read.
    #[error("window start {value:?}: {why}")]
    Start { value: String, why: String },
    /// The length could not be read or is not positive.
    #[error("window length {value:?}: {why}")]
    Length { value: String, why: String },
    /// A day name is not a weekday.
    #[error("window day {value:?}: not a weekday (Mon, Tue, … or Monday, …)")]
    Day { value: String },
    /// The time zone is unknown to the system's tz database.
    #[error("time zone {value:?}: {why}")]
    TimeZone { value: String, why: String },
    /// The per-host offset does not fit inside a window.
    #[error(
        "random offset {offset} must be shorter than every window (window {index} lasts {length})"
    )]
    Offset {
        offset: String,
        index: usize,
        length: String,
    },
    /// Only one of locksmith's two variables was set, or no window at all.
    #[error("{0}")]
    Incomplete(String),
}

/// Longest window accepted: a week (a longer one is always open).
const MAX_LENGTH: SignedDuration = SignedDuration::from_hours(7 * 24);

/// A set of weekdays as a bitmask, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    /// Every day of the week.
    pub const ALL: Days = Days(0x7f);

    /// Whether `d` is in the set.
    pub fn contains(self, d: Weekday) -> bool {
        self.0 & (1 << d.to_monday_zero_offset()) != 0
    }

    fn with(self, d: Weekday) -> Days {
        Days(self.0 | (1 << d.to_monday_zero_offset()))
    }

    /// The set as short names, Monday first ("Mon,Thu"), or "daily".
    pub fn describe(self) -> String {
        if self == Days::ALL {
            return "daily".into();
        }
        let names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One weekly window: on each of `days`, from `start` (wall clock) for `length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The days on which the window starts.
    pub days: Days,
    /// Start, wall-clock time of day in the schedule's zone.
    pub start: Time,
    /// Elapsed length, positive and at most a week.
    pub length: SignedDuration,
}

/// Whether the host may reboot at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Inside a window (this host's part of it) until `closes`.
    Open { closes: Timestamp },
    /// Outside; this host's part of the next window begins at `opens`.
    Closed { opens: Timestamp },
}

/// Validated windows in one zone, with this host's offset applied.
#[derive(Debug, Clone)]
pub struct Schedule {
    windows: Vec<Window>,
    tz: TimeZone,
    tz_name: String,
    random_offset: SignedDuration,
    host_offset: SignedDuration,
}

/// The TOML form (Zincati's schema plus `random_offset_minutes`); all
/// fields optional at this layer, checked by [`Schedule::from_config`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeriodicConfig {
    /// "UTC" (default), "localtime" (the host's /etc/localtime) or a tz
    /// database name such as "Europe/Berlin".
    pub time_zone: Option<String>,
    /// Upper bound of the per-host offset, in minutes.
    pub random_offset_minutes: Option<u32>,
    /// The windows.
    #[serde(default)]
    pub window: Vec<WindowConfig>,
}

/// One `[[window]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Weekday names; omitted or empty = every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// "HH:MM", 24-hour.
    pub start_time: String,
    /// Length in minutes.
    pub length_minutes: u32,
}

/// Parse a weekday name: three-letter or full English name, any case.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let l = s.to_ascii_lowercase();
    let all = [
        ("mon", "monday", Weekday::Monday),
        ("tue", "tuesday", Weekday::Tuesday),
        ("wed", "wednesday", Weekday::Wednesday),
        ("thu", "thursday", Weekday::Thursday),
        ("fri", "friday", Weekday::Friday),
        ("sat", "saturday", Weekday::Saturday),
        ("sun", "sunday", Weekday::Sunday),
    ];
    all.iter()
        .find(|(short, long, _)| l == *short || l == *long)
        .map(|(_, _, d)| *d)
}

/// "HH:MM", 00:00–23:59; one or two digits each ("4:05", "04:5"), as
/// coreos-cloudinit's check of `window-start` allowed.
fn parse_hhmm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.is_empty() || m.len() > 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    Time::new(h, m, 0, 0).ok()
}

/// locksmith's start form: "[Day ]HH:MM".
pub fn parse_locksmith_start(s: &str) -> Result<(Days, Time), WindowError> {
    let err = |why: &str| WindowError::Start {
        value: s.to_string(),
        why: why.to_string(),
    };
    let mut parts = s.split_whitespace();
    let (day, time) = match (parts.next(), parts.next(), parts.next()) {
        (Some(t), None, None) => (None, t),
        (Some(d), Some(t), None) => (Some(d), t),
        _ => return Err(err("expected \"[Day] HH:MM\"")),
    };
    let time = parse_hhmm(time).ok_or_else(|| err("time of day is not HH:MM (00:00–23:59)"))?;
    let days = match day {
        None => Days::ALL,
        Some(d) => Days(0).with(parse_weekday(d).ok_or_else(|| err("not a weekday name"))?),
    };
    Ok((days, time))
}

/// A Go duration as locksmith takes it ("1h30m", "90m", "2h", "1.5h"),
/// through jiff's parser, which reads this compact form.
pub fn parse_length(s: &str) -> Result<SignedDuration, WindowError> {
    let err = |why: &str| WindowError::Length {
        value: s.to_string(),
        why: why.to_string(),
    };
    let t = s.trim();
    if t.is_empty() || t.starts_with(['-', '+']) || t.starts_with(['P', 'p']) {
        return Err(err("expected a positive duration such as \"1h30m\""));
    }
    let d: SignedDuration = t
        .parse()
        .map_err(|e: jiff::Error| err(&format!("expected a duration such as \"1h30m\" ({e})")))?;
    check_length(d).map_err(err)
}

fn check_length(d: SignedDuration) -> Result<SignedDuration, &'static str> {
    if d <= SignedDuration::ZERO {
        Err("must be positive")
    } else if d > MAX_LENGTH {
        Err("must be at most a week")
    } else {
        Ok(d)
    }
}

/// Resolve a zone name from the system's tz database.
pub fn resolve_time_zone(name: &str) -> Result<TimeZone, WindowError> {
    let err = |why: String| WindowError::TimeZone {
        value: name.to_string(),
        why,
    };
    match name {
        "" | "UTC" | "utc" | "Etc/UTC" => Ok(TimeZone::UTC),
        "localtime" => {
            TimeZone::try_system().map_err(|e| err(format!("reading the host's time zone: {e}")))
        }
        n => TimeZone::get(n).map_err(|e| err(format!("not in the system tz database: {e}"))),
    }
}

/// Offset of this host inside each window: SHA-256 of the machine id (with
/// a purpose string, so it is unrelated to other uses of the id), reduced
/// modulo `bound` in whole seconds. Zero when `bound` is zero.
pub fn host_offset(machine_id: &str, bound: SignedDuration) -> SignedDuration {
    let secs = bound.as_secs();
    if secs <= 0 {
        return SignedDuration::ZERO;
    }
    let mut h = Sha256::new();
    h.update(b"keel reboot window offset\0");
    h.update(machine_id.trim().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first) % secs.unsigned_abs();
    // n < secs ≤ i64::MAX, so the conversion cannot fail.
    SignedDuration::from_secs(i64::try_from(n).unwrap_or(0))
}

impl Schedule {
    /// A schedule from validated parts. `random_offset` must be shorter
    /// than every window; the host offset starts at zero (see [`Schedule::for_host`]).
    pub fn new(
        windows: Vec<Window>,
        tz: TimeZone,
        tz_name: &str,
        random_offset: SignedDuration,
    ) -> Result<Schedule, WindowError> {
        if windows.is_empty() {
            return Err(WindowError::Incomplete(
                "the periodic strategy needs at least one window".into(),
            ));
        }
        for (index, w) in windows.iter().enumerate() {
            check_length(w.length).map_err(|why| WindowError::Length {
                value: format!("{:#}", w.length),
                why: why.into(),
            })?;
            if random_offset >= w.length || random_offset < SignedDuration::ZERO {
                return Err(WindowError::Offset {
                    offset: format!("{:#}", random_offset),
                    index,
                    length: format!("{:#}", w.length),
                });
            }
        }
        Ok(Schedule {
            windows,
            tz,
            tz_name: tz_name.to_string(),
            random_offset,
            host_offset: SignedDuration::ZERO,
        })
    }

    /// locksmith's variables. Both unset = no window (None); one of the two
    /// unset is an error, as in locksmithd. The zone is the host's local one
    /// (`localtime`), as locksmithd read its window in local time.
    pub fn from_locksmith(
        start: Option<&str>,
        length: Option<&str>,
        tz_name: &str,
    ) -> Result<Option<Schedule>, WindowError> {
        let (start, length) = match (start, length) {
            (None, None) => return Ok(None),
            (Some(s), Some(l)) => (s, l),
            _ => {
                return Err(WindowError::Incomplete(
                    "LOCKSMITHD_REBOOT_WINDOW_START and LOCKSMITHD_REBOOT_WINDOW_LENGTH must be set together".into(),
                ))
            }
        };
        let (days, start) = parse_locksmith_start(start)?;
        let length = parse_length(length)?;
        let tz = resolve_time_zone(tz_name)?;
        Schedule::new(
            vec![Window {
                days,
                start,
                length,
            }],
            tz,
            tz_name,
            SignedDuration::ZERO,
        )
        .map(Some)
    }

    /// The TOML form, validated.
    pub fn from_config(c: &PeriodicConfig) -> Result<Schedule, WindowError> {
        let tz_name = c.time_zone.as_deref().unwrap_or("UTC");
        let tz = resolve_time_zone(tz_name)?;
        let mut windows = Vec::with_capacity(c.window.len());
        for w in &c.window {
            let mut days = Days(0);
            for d in &w.days {
                days = days
                    .with(parse_weekday(d).ok_or_else(|| WindowError::Day { value: d.clone() })?);
            }
            if days == Days(0) {
                days = Days::ALL;
            }
            let start = parse_hhmm(&w.start_time).ok_or_else(|| WindowError::Start {
                value: w.start_time.clone(),
                why: "start_time is not HH:MM (00:00–23:59)".into(),
            })?;
            let length = SignedDuration::from_mins(i64::from(w.length_minutes));
            check_length(length).map_err(|why| WindowError::Length {
                value: format!("{} minutes", w.length_minutes),
                why: why.into(),
            })?;
            windows.push(Window {
                days,
                start,
                length,
            });
        }
        let offset = SignedDuration::from_mins(i64::from(c.random_offset_minutes.unwrap_or(0)));
        Schedule::new(windows, tz, tz_name, offset)
    }

    /// Parse the TOML form from text.
    pub fn from_toml(text: &str) -> Result<Schedule, WindowError> {
        let c: PeriodicConfig = toml::from_str(text)
            .map_err(|e| WindowError::Incomplete(format!("periodic window config: {e}")))?;
        Schedule::from_config(&c)
    }

    /// This schedule as seen by the host with `machine_id`.
    pub fn for_host(mut self, machine_id: &str) -> Schedule {
        self.host_offset = host_offset(machine_id, self.random_offset);
        self
    }

    /// The windows.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// This host's offset inside each window.
    pub fn host_offset(&self) -> SignedDuration {
        self.host_offset
    }

    /// The zone name as configured.
    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The instants `[start + host offset, end)` of every window occurrence
    /// whose start date lies within 8 days of `now`'s local date: enough to
    /// cover any window (at most a week long) that is open now and the next
    /// one to open.
    fn occurrences(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        let mut out = Vec::new();
        for delta in -8i64..=8 {
            let Ok(date) = today.checked_add(Span::new().days(delta)) else {
                continue;
            };
            for w in &self.windows {
                if let Some(occ) = self.occurrence(date, w) {
                    out.push(occ);
                }
            }
        }
        out
    }

    fn occurrence(&self, date: Date, w: &Window) -> Option<(Timestamp, Timestamp)> {
        if !w.days.contains(date.weekday()) {
            return None;
        }
        // TimeZone::to_timestamp disambiguates with the "compatible" rule.
        let start = self.tz.to_timestamp(date.to_datetime(w.start)).ok()?;
        let end = start.checked_add(w.length).ok()?;
        let from = start.checked_add(self.host_offset).ok()?;
        Some((from, end))
    }

    /// Whether this host may reboot at `now`, and until / from when.
    pub fn state_at(&self, now: Timestamp) -> WindowState {
        let occ = self.occurrences(now);
        // Open: the latest end among the occurrences containing now (then
        // extended through occurrences that overlap it: their union).
        let mut closes: Option<Timestamp> = occ
            .iter()
            .filter(|(from, end)| *from <= now && now < *end)
            .map(|(_, end)| *end)
            .max();
        if let Some(mut c) = closes {
            loop {
                let next = occ
                    .iter()
                    .filter(|(from, end)| *from <= c && *end > c)
                    .map(|(_, end)| *end)
                    .max();
                match next {
                    Some(n) if n > c => c = n,
                    _ => break,
                }
            }
            closes = Some(c);
        }
        if let Some(closes) = closes {
            return WindowState::Open { closes };
        }
        let opens = occ
            .iter()
            .filter(|(from, _)| *from > now)
            .map(|(from, _)| *from)
            .min()
            // Every schedule has a window of at most a week on some day,
            // so one starts within 8 days; this is unreachable in practice.
            .unwrap_or(now);
        WindowState::Closed { opens }
    }

    /// One line for status output: "Thu 04:00 for 1h 30m (Europe/Berlin), …".
    pub fn describe(&self) -> String {
        let ws: Vec<String> = self
            .windows
            .iter()
            .map(|w| {
                format!(
                    "{} {} for {:#}",
                    w.days.describe(),
                    w.start.strftime("%H:%M"),
                    w.length
                )
            })
            .collect();
        let mut s = format!("{} ({})", ws.join(", "), self.tz_name);
        if self.random_offset > SignedDuration::ZERO {
            s.push_str(&format!(
                ", this host {:#} into each window",
                self.host_offset
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn open(closes: &str) -> WindowState {
        WindowState::Open { closes: ts(closes) }
    }

    fn closed(opens: &str) -> WindowState {
        WindowState::Closed { opens: ts(opens) }
    }

    fn locksmith(start: &str, length: &str, tz: &str) -> Schedule {
        Schedule::from_locksmith(Some(start), Some(length), tz)
            .expect("valid")
            .expect("some")
    }

    #[test]
    fn locksmith_forms_parse() {
        assert_eq!(
            parse_locksmith_start("Thu 04:00").expect("ok"),
            (Days(0).with(Weekday::Thursday), Time::constant(4, 0, 0, 0))
        );
        assert_eq!(
            parse_locksmith_start("04:00").expect("ok"),
            (Days::ALL, Time::constant(4, 0, 0, 0))
        );
        assert_eq!(
            parse_locksmith_start("sunday 23:59").expect("ok").1,
            Time::constant(23, 59, 0, 0)
        );
        assert_eq!(
            parse_locksmith_start("4:05").expect("ok").1,
            Time::constant(4, 5, 0, 0)
        );
        assert_eq!(
            parse_locksmith_start("Mon 4:5").expect("ok").1,
            Time::constant(4, 5, 0, 0)
        );
        for bad in [
            "",
            "Thu",
            "Thx 04:00",
            "24:00",
            "04:60",
            "04:",
            "04:000",
            "Thu 04:00 x",
            "-1:00",
            "+1:00",
        ] {
            assert!(parse_locksmith_start(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_length("1h30m").expect("ok"),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_length("90m").expect("ok"),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_length("1h30m0s").expect("ok"),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_length("2h").expect("ok"),
            SignedDuration::from_hours(2)
        );
        assert_eq!(
            parse_length("1.5h").expect("ok"),
            SignedDuration::from_mins(90)
        );
        for bad in ["", "0", "0s", "-1h", "1x", "PT1H", "169h", "h"] {
            assert!(parse_length(bad).is_err(), "{bad:?} accepted");
        }
        let e = Schedule::from_locksmith(Some("04:00"), None, "UTC").expect_err("half");
        assert!(e.to_string().contains("set together"), "{e}");
        assert!(Schedule::from_locksmith(None, None, "UTC")
            .expect("ok")
            .is_none());
    }

    #[test]
    fn daily_window_across_midnight() {
        let s = locksmith("23:00", "2h", "UTC");
        // 2026-12-02 is a Wednesday.
        assert_eq!(
            s.state_at(ts("2026-12-02T12:00:00Z")),
            closed("2026-12-02T23:00:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-12-02T23:00:00Z")),
            open("2026-12-03T01:00:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-12-03T00:30:00Z")),
            open("2026-12-03T01:00:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-12-03T01:00:00Z")),
            closed("2026-12-03T23:00:00Z")
        );
    }

    #[test]
    fn weekly_window_wraps_the_week() {
        // Sunday 22:00 for 4 h: open into Monday.
        let s = locksmith("Sun 22:00", "4h", "UTC");
        // Monday 2026-12-07 01:00 is inside the window of Sunday 2026-12-06.
        assert_eq!(
            s.state_at(ts("2026-12-07T01:00:00Z")),
            open("2026-12-07T02:00:00Z")
        );
        // Monday 03:00: closed until next Sunday.
        assert_eq!(
            s.state_at(ts("2026-12-07T03:00:00Z")),
            closed("2026-12-13T22:00:00Z")
        );
        // Saturday: the next Sunday.
        assert_eq!(
            s.state_at(ts("2026-12-12T10:00:00Z")),
            closed("2026-12-13T22:00:00Z")
        );
    }

    #[test]
    fn named_time_zone() {
        // Thursday 04:00 in New York (EST, UTC-5 in December) = 09:00 UTC.
        let s = locksmith("Thu 04:00", "1h30m", "America/New_York");
        assert_eq!(
            s.state_at(ts("2026-12-03T08:59:59Z")),
            closed("2026-12-03T09:00:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-12-03T09:00:00Z")),
            open("2026-12-03T10:30:00Z")
        );
        // Thursday 23:00 UTC is still Thursday in New York, after the window.
        assert_eq!(
            s.state_at(ts("2026-12-03T23:00:00Z")),
            closed("2026-12-10T09:00:00Z")
        );
        // Friday 03:00 UTC is Thursday 22:00 in New York: a UTC reading
        // would see Friday; the zone's day decides.
        let t = locksmith("Thu 22:00", "1h", "America/New_York");
        assert_eq!(
            t.state_at(ts("2026-12-04T03:30:00Z")),
            open("2026-12-04T04:00:00Z")
        );
    }

    #[test]
    fn dst_spring_forward_gap() {
        // Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST. A 02:30 start
        // does not exist that day and moves to 03:30 CEST (01:30 UTC).
        let s = locksmith("02:30", "1h", "Europe/Berlin");
        assert_eq!(
            s.state_at(ts("2026-03-29T00:00:00Z")),
            closed("2026-03-29T01:30:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-03-29T01:30:00Z")),
            open("2026-03-29T02:30:00Z")
        );
        // The day before, 02:30 CET = 01:30 UTC; the day after, 02:30 CEST = 00:30 UTC.
        assert_eq!(
            s.state_at(ts("2026-03-28T01:45:00Z")),
            open("2026-03-28T02:30:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-03-29T03:00:00Z")),
            closed("2026-03-30T00:30:00Z")
        );
        // The length is elapsed time: 01:00 CET for 3 h ends 05:00 CEST.
        let l = locksmith("01:00", "3h", "Europe/Berlin");
        assert_eq!(
            l.state_at(ts("2026-03-29T00:00:00Z")),
            open("2026-03-29T03:00:00Z")
        );
    }

    #[test]
    fn dst_fall_back_fold() {
        // 2026-10-25 03:00 CEST → 02:00 CET: 02:30 happens twice; the
        // window starts at the first (CEST, 00:30 UTC) and opens once.
        let s = locksmith("02:30", "1h", "Europe/Berlin");
        assert_eq!(
            s.state_at(ts("2026-10-25T00:00:00Z")),
            closed("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            s.state_at(ts("2026-10-25T00:30:00Z")),
            open("2026-10-25T01:30:00Z")
        );
        // At the second 02:30 (01:30 UTC) it is closed until tomorrow 02:30 CET.
        assert_eq!(
            s.state_at(ts("2026-10-25T01:30:00Z")),
            closed("2026-10-26T01:30:00Z")
        );
    }

    #[test]
    fn toml_form_with_several_windows_and_union() {
        let s = Schedule::from_toml(
            r#"
time_zone = "UTC"
[[window]]
days = ["Sat", "Sun"]
start_time = "22:00"
length_minutes = 120
[[window]]
days = ["Sun"]
start_time = "23:30"
length_minutes = 60
[[window]]
start_time = "12:00"
length_minutes = 30
"#,
        )
        .expect("valid");
        assert_eq!(s.windows().len(), 3);
        // Sunday 2026-12-06 22:30: the first and second windows overlap;
        // their union closes at Monday 00:30.
        assert_eq!(
            s.state_at(ts("2026-12-06T22:30:00Z")),
            open("2026-12-07T00:30:00Z")
        );
        // Wednesday 06:00: the daily noon window is next.
        assert_eq!(
            s.state_at(ts("2026-12-02T06:00:00Z")),
            closed("2026-12-02T12:00:00Z")
        );
        assert!(
            s.describe().contains("Sat,Sun 22:00 for 2h"),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn toml_form_errors_name_the_field() {
        let e = Schedule::from_toml("[[window]]\nstart_time = \"25:00\"\nlength_minutes = 5\n")
            .expect_err("bad");
        assert!(e.to_string().contains("25:00"), "{e}");
        let e = Schedule::from_toml(
            "[[window]]\ndays = [\"Funday\"]\nstart_time = \"01:00\"\nlength_minutes = 5\n",
        )
        .expect_err("bad");
        assert!(e.to_string().contains("Funday"), "{e}");
        let e = Schedule::from_toml("time_zone = \"Mars/Olympus\"\n[[window]]\nstart_time = \"01:00\"\nlength_minutes = 5\n")
            .expect_err("bad");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        let e = Schedule::from_toml("").expect_err("no window");
        assert!(e.to_string().contains("at least one window"), "{e}");
        let e = Schedule::from_toml("colour = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Schedule::from_toml(
            "random_offset_minutes = 60\n[[window]]\nstart_time = \"01:00\"\nlength_minutes = 60\n",
        )
        .expect_err("offset too long");
        assert!(e.to_string().contains("random offset"), "{e}");
        let e = Schedule::from_toml("[[window]]\nstart_time = \"01:00\"\nlength_minutes = 0\n")
            .expect_err("empty");
        assert!(e.to_string().contains("positive"), "{e}");
    }

    #[test]
    fn host_offset_is_deterministic_and_inside_the_window() {
        let base = Schedule::from_toml(
            "random_offset_minutes = 50\n[[window]]\nstart_time = \"04:00\"\nlength_minutes = 60\n",
        )
        .expect("valid");
        let a = base.clone().for_host("0123456789abcdef0123456789abcdef");
        let a2 = base.clone().for_host("0123456789abcdef0123456789abcdef\n");
        assert_eq!(a.host_offset(), a2.host_offset());
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let h = base.clone().for_host(&format!("{i:032x}"));
            assert!(h.host_offset() >= SignedDuration::ZERO);
            assert!(h.host_offset() < SignedDuration::from_mins(50));
            seen.insert(h.host_offset().as_secs() / 600);
        }
        // 200 hosts land in all five 10-minute buckets.
        assert_eq!(seen.len(), 5);
        let off = a.host_offset();
        let opens = ts("2026-12-02T04:00:00Z").checked_add(off).expect("add");
        assert_eq!(
            a.state_at(ts("2026-12-02T03:00:00Z")),
            WindowState::Closed { opens }
        );
        assert_eq!(a.state_at(opens), open("2026-12-02T05:00:00Z"));
        // Inside the window but before this host's place: closed until it.
        if off > SignedDuration::ZERO {
            assert_eq!(
                a.state_at(ts("2026-12-02T04:00:00Z")),
                WindowState::Closed { opens }
            );
        }
        assert_eq!(host_offset("x", SignedDuration::ZERO), SignedDuration::ZERO);
    }
}
