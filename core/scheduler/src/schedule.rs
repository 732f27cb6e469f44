//! Cron schedules in a time zone.
//!
//! # Dialect
//!
//! Expressions are handed to the [`cron`] crate after a little normalisation:
//!
//! * **Field count.** 6 or 7 fields (`second minute hour day-of-month month day-of-week [year]`)
//!   are taken as they are. A classic 5-field crontab line
//!   (`minute hour day-of-month month day-of-week`) gets `0 ` prepended, so it fires at second 0.
//!   The shorthands `@yearly` (or `@annually`), `@monthly`, `@weekly`, `@daily` (or `@midnight`)
//!   and `@hourly` are accepted too. Anything else is rejected with the number of fields found.
//! * **Day-of-week numbers follow crontab, not Quartz.** The `cron` crate numbers days the Quartz
//!   way (1 = Sunday … 7 = Saturday), so `0 0 9 * * 1-5` would fire Sunday to Thursday. Crontab
//!   users expect 0 or 7 = Sunday, 1 = Monday … 6 = Saturday, so that is what this module means by
//!   a numeric day of week, in the 5-, 6- and 7-field forms alike. This is a deliberate deviation
//!   from Quartz numbering. Numbers are rewritten as names before parsing: `1-5` becomes
//!   `MON-FRI`, `1,3,5` becomes `MON,WED,FRI`, `1-5/2` becomes `MON-FRI/2` (only the part before
//!   `/` is rewritten, never the step). Ranges that end in 7 (`5-7`) and single values with a step
//!   (`1/2`) are expanded into explicit lists of names. `*`, `?` and `*/n` are left as they are
//!   (they select the same days under both numberings). Names (`MON`, `Mon-Fri`, `monday`) pass
//!   through unchanged.
//! * Not supported (the `cron` crate has no support for them): `L`, `W`, `#`.
//!
//! # Time zones and daylight saving time
//!
//! A schedule's fields are matched against the wall clock of its time zone (UTC when none is
//! given). Two kinds of local times need a rule:
//!
//! * **Skipped local times** (spring forward): a local time that does not exist that day, such as
//!   02:30 in Europe/Paris on 2027-03-28, is **skipped**; the schedule does not fire for it that
//!   day. This is what the `cron` crate does and what most cron implementations do.
//! * **Repeated local times** (fall back): a local time that happens twice, such as 02:30 in
//!   Europe/Paris on 2027-10-31, fires **once**, at its first occurrence, so a daily job does not
//!   run twice that night. The exception, as in Vixie cron, is a schedule whose hour field is `*`
//!   (every hour): it fires at both occurrences, because such a schedule describes an interval
//!   (for example every 15 minutes) that should keep going through the repeated hour.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use cron::TimeUnitSpec;

/// Why a schedule could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed.
    #[error("invalid cron expression `{expression}`: {reason}")]
    Cron {
        /// The expression as written.
        expression: String,
        /// A one-line reason, without a trailing period.
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error("invalid time zone `{name}`: {reason}")]
    Timezone {
        /// The name as written.
        name: String,
        /// A one-line reason, without a trailing period.
        reason: String,
    },
}

/// A cron expression bound to a time zone; computes fire times as UTC instants.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: cron::Schedule,
    timezone: Tz,
    /// Whether a repeated local time (fall back) fires at both occurrences; see the module doc.
    fire_repeated_twice: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("normalized", &self.cron.source())
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

/// How many candidates one fire-time search looks at, at most; a guard against pathological
/// expressions, far above what real schedules need.
const MAX_CANDIDATES: usize = 200_000;

impl Schedule {
    /// Parses a cron expression in a time zone (None = UTC).
    ///
    /// See the [module documentation](self) for the accepted dialect.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => parse_timezone(name).map_err(|reason| ScheduleError::Timezone {
                name: name.to_owned(),
                reason,
            })?,
        };
        let cron = parse_cron(expression).map_err(|reason| ScheduleError::Cron {
            expression: expression.to_owned(),
            reason,
        })?;
        let fire_repeated_twice = cron.hours().is_all();
        Ok(Schedule {
            expression: expression.to_owned(),
            cron,
            timezone,
            fire_repeated_twice,
        })
    }

    /// The expression as the user wrote it.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is matched in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// First fire time strictly after `after`.
    ///
    /// None when the expression never matches again (for example a year field in the past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A local wall time `w` fires at the instant `t` with `w = t + offset(t)`. Offsets change
        // at DST transitions, so wall-time order and instant order can differ for a few hours.
        // Walk candidate wall times in ascending order, starting low enough that no instant after
        // `after` is missed, and keep the earliest instant found until no later wall time can
        // beat it.
        let (min_offset, _) = self.offset_bounds(after, TimeDelta::zero(), window());
        let start = floor_second(after.naive_utc().checked_add_signed(min_offset)?)?;
        let proxy = Utc.from_utc_datetime(&start.checked_sub_signed(TimeDelta::seconds(1))?);
        let mut best: Option<DateTime<Utc>> = None;
        for candidate in self.cron.after(&proxy).take(MAX_CANDIDATES) {
            let wall = candidate.naive_utc();
            if let Some(found) = best {
                // Every wall time from here on fires at or after `wall - max_offset`.
                let (_, max_offset) = self.offset_bounds(candidate, window(), window());
                if wall.checked_sub_signed(max_offset)? >= found.naive_utc() {
                    break;
                }
            }
            for instant in self.instants(wall).into_iter().flatten() {
                if instant > after && best.is_none_or(|found| instant < found) {
                    best = Some(instant);
                }
            }
        }
        best
    }

    /// The most recent fire time in the half-open interval (since, until], if any.
    pub fn latest_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if since >= until {
            return None;
        }
        // The mirror image of `next_after`: walk wall times in descending order.
        let (_, max_offset) = self.offset_bounds(until, window(), TimeDelta::zero());
        let end = floor_second(until.naive_utc().checked_add_signed(max_offset)?)?;
        let proxy = Utc.from_utc_datetime(&end.checked_add_signed(TimeDelta::seconds(1))?);
        let mut best: Option<DateTime<Utc>> = None;
        for candidate in self.cron.after(&proxy).rev().take(MAX_CANDIDATES) {
            let wall = candidate.naive_utc();
            // Every wall time from here on fires at or before `wall - min_offset`.
            let (min_offset, _) = self.offset_bounds(candidate, window(), window());
            let bound = wall.checked_sub_signed(min_offset)?;
            let floor = best.map_or(since, |found| found.max(since));
            if bound <= floor.naive_utc() {
                break;
            }
            for instant in self.instants(wall).into_iter().flatten() {
                if instant <= until && best.is_none_or(|found| instant > found) {
                    best = Some(instant);
                }
            }
        }
        best.filter(|found| *found > since)
    }

    /// The instants at which the local wall time `wall` fires: none in a DST gap, the first
    /// occurrence of a repeated time (or both, for every-hour schedules), else the one instant.
    fn instants(&self, wall: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        match self.timezone.from_local_datetime(&wall) {
            LocalResult::None => [None, None],
            LocalResult::Single(at) => [Some(at.with_timezone(&Utc)), None],
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (first, second) = if a <= b { (a, b) } else { (b, a) };
                [Some(first), self.fire_repeated_twice.then_some(second)]
            }
        }
    }

    /// The smallest and largest UTC offsets in force in `[at - before, at + after]`, probed hourly.
    fn offset_bounds(
        &self,
        at: DateTime<Utc>,
        before: TimeDelta,
        after: TimeDelta,
    ) -> (TimeDelta, TimeDelta) {
        let offset_at = |t: DateTime<Utc>| {
            let seconds = self
                .timezone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc();
            TimeDelta::seconds(i64::from(seconds))
        };
        let first = offset_at(at);
        let (mut low, mut high) = (first, first);
        let hours = -before.num_hours()..=after.num_hours();
        for hour in hours {
            if let Some(t) = at.checked_add_signed(TimeDelta::hours(hour)) {
                let offset = offset_at(t);
                low = low.min(offset);
                high = high.max(offset);
            }
        }
        (low, high)
    }
}

/// How far around an instant to look for offset changes. UTC offsets lie between -12 h and +14 h,
/// so a window of 27 h either side covers every instant a nearby wall time can map to.
fn window() -> TimeDelta {
    TimeDelta::hours(27)
}

fn floor_second(at: NaiveDateTime) -> Option<NaiveDateTime> {
    at.with_nanosecond(0)
}

/// Names and ranges of the fields of a 6/7-field expression.
#[derive(Debug, Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: Names,
    /// Whether `?` is allowed.
    any: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    None,
    Months,
    DaysOfWeek,
}

const FIELDS: [FieldSpec; 7] = [
    FieldSpec {
        name: "second",
        min: 0,
        max: 59,
        names: Names::None,
        any: false,
    },
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: Names::None,
        any: false,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: Names::None,
        any: false,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: Names::None,
        any: true,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: Names::Months,
        any: false,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: Names::DaysOfWeek,
        any: true,
    },
    FieldSpec {
        name: "year",
        min: 1970,
        max: 2100,
        names: Names::None,
        any: false,
    },
];

const DAY_OF_WEEK_INDEX: usize = 5;

const FIELD_COUNT_HINT: &str = "expected 5 fields (minute hour day-of-month month day-of-week) or 6-7 fields with seconds first";

const MONTH_NAMES: [(&str, u32); 23] = [
    ("jan", 1),
    ("january", 1),
    ("feb", 2),
    ("february", 2),
    ("mar", 3),
    ("march", 3),
    ("apr", 4),
    ("april", 4),
    ("may", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("sep", 9),
    ("september", 9),
    ("oct", 10),
    ("october", 10),
    ("nov", 11),
    ("november", 11),
    ("dec", 12),
    ("december", 12),
];

/// Day names the `cron` crate accepts, with their crontab numbers (Sunday = 0).
const DAY_NAMES: [(&str, u32); 16] = [
    ("sun", 0),
    ("sunday", 0),
    ("mon", 1),
    ("monday", 1),
    ("tue", 2),
    ("tues", 2),
    ("tuesday", 2),
    ("wed", 3),
    ("wednesday", 3),
    ("thu", 4),
    ("thurs", 4),
    ("thursday", 4),
    ("fri", 5),
    ("friday", 5),
    ("sat", 6),
    ("saturday", 6),
];

/// The names handed to `cron`, indexed by crontab number modulo 7.
const DAY_OUTPUT: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Validates only the cron part of a schedule and returns the parsed `cron` schedule.
///
/// The error is a one-line human reason without a trailing period, e.g. `expected 5 fields
/// (minute hour day-of-month month day-of-week) or 6-7 fields with seconds first, found 3`.
/// See the [module documentation](self) for the accepted dialect.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let normalized = normalize(expression)?;
    let schedule = cron::Schedule::from_str(&normalized)
        .map_err(|error| locate_cron_error(expression, &normalized, &error))?;
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    if schedule.after(&epoch).next().is_none() {
        return Err("the expression never matches a date (for example, February 30)".to_owned());
    }
    Ok(schedule)
}

/// Turns the user's expression into the 6/7-field Quartz form the `cron` crate parses, checking
/// each field on the way.
fn normalize(expression: &str) -> Result<String, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let mut fields: Vec<String> = match fields.as_slice() {
        [] => return Err(format!("the expression is empty; {FIELD_COUNT_HINT}")),
        [single] if single.starts_with('@') => return shorthand(single),
        [_, _, _, _, _] => std::iter::once("0")
            .chain(fields.iter().copied())
            .map(str::to_owned)
            .collect(),
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => {
            fields.iter().copied().map(str::to_owned).collect()
        }
        _ => return Err(format!("{FIELD_COUNT_HINT}, found {}", fields.len())),
    };
    for (spec, field) in FIELDS.iter().zip(&fields) {
        check_field(spec, field)
            .map_err(|reason| format!("{} field `{field}`: {reason}", spec.name))?;
    }
    if let Some(day_of_week) = fields.get_mut(DAY_OF_WEEK_INDEX) {
        *day_of_week = translate_day_of_week(day_of_week)?;
    }
    Ok(fields.join(" "))
}

fn shorthand(word: &str) -> Result<String, String> {
    match word.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("@yearly".to_owned()),
        "@monthly" => Ok("@monthly".to_owned()),
        "@weekly" => Ok("@weekly".to_owned()),
        "@daily" | "@midnight" => Ok("@daily".to_owned()),
        "@hourly" => Ok("@hourly".to_owned()),
        "@reboot" => Err(
            "`@reboot` is not supported; the scheduler only runs jobs at times of day".to_owned(),
        ),
        _ => Err(format!(
            "unknown shorthand `{word}`; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
        )),
    }
}

/// Checks one field of the 6/7-field form (day of week with crontab numbering).
fn check_field(spec: &FieldSpec, field: &str) -> Result<(), String> {
    for item in field.split(',') {
        if item.is_empty() {
            return Err("empty entry in a comma-separated list".to_owned());
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            let step =
                parse_digits(step).ok_or_else(|| format!("step `{step}` is not a number"))?;
            if step == 0 {
                return Err("a step must be at least 1".to_owned());
            }
            if step > spec.max {
                return Err(format!("step {step} is larger than {}", spec.max));
            }
        }
        match base {
            "*" => {}
            "?" if spec.any => {
                if step.is_some() {
                    return Err("`?` cannot take a step".to_owned());
                }
            }
            "?" => {
                return Err(
                    "`?` is only allowed in the day-of-month and day-of-week fields".to_owned(),
                );
            }
            "" => return Err(format!("`{item}` is missing a value before `/`")),
            _ => {
                let (start, end) = match base.split_once('-') {
                    Some((start, end)) => (value(spec, start)?, Some(value(spec, end)?)),
                    None => (value(spec, base)?, None),
                };
                if let Some(end) = end
                    && start > end
                {
                    let hint = if spec.names == Names::DaysOfWeek && end == 0 {
                        " (Sunday is 0 at the start of a range and 7 at the end)"
                    } else {
                        ""
                    };
                    return Err(format!("range `{base}` runs backwards{hint}"));
                }
            }
        }
    }
    Ok(())
}

/// The value of one atom of a field: a number in range or a name the field allows.
fn value(spec: &FieldSpec, text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Err("a range needs a value on both sides of `-`".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let in_range = |v: &u32| (spec.min..=spec.max).contains(v);
        return match text.parse::<u32>() {
            Ok(v) if in_range(&v) => Ok(v),
            _ => Err(format!("{text} is out of range {}-{}", spec.min, spec.max)),
        };
    }
    if text.bytes().all(|b| b.is_ascii_alphabetic()) {
        let lower = text.to_ascii_lowercase();
        let find = |table: &[(&str, u32)]| {
            table
                .iter()
                .find(|(name, _)| *name == lower)
                .map(|(_, v)| *v)
        };
        return match spec.names {
            Names::Months => find(&MONTH_NAMES)
                .ok_or_else(|| format!("`{text}` is not a month name (use JAN-DEC or 1-12)")),
            Names::DaysOfWeek => find(&DAY_NAMES)
                .ok_or_else(|| format!("`{text}` is not a day name (use SUN-SAT or 0-7)")),
            Names::None => Err(format!("`{text}` is not a number")),
        };
    }
    Err(format!("`{text}` is not a valid value"))
}

fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Rewrites a day-of-week field from crontab numbering (0/7 = Sunday) to names, which the `cron`
/// crate reads the same way under any numbering. The field has already passed `check_field`.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    let items: Result<Vec<String>, String> = field.split(',').map(translate_day_item).collect();
    Ok(items?.join(","))
}

fn translate_day_item(item: &str) -> Result<String, String> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    if base == "*" || base == "?" {
        return Ok(item.to_owned());
    }
    let spec = &FIELDS[DAY_OF_WEEK_INDEX];
    let has_digit = base.bytes().any(|b| b.is_ascii_digit());
    let step_value = match step {
        Some(step) => {
            Some(parse_digits(step).ok_or_else(|| format!("step `{step}` is not a number"))?)
        }
        None => None,
    };
    let (start, end) = match base.split_once('-') {
        Some((start, end)) => (value(spec, start)?, Some(value(spec, end)?)),
        None => (value(spec, base)?, None),
    };
    let explicit = |last: u32, step: u32| -> String {
        let mut days: Vec<&str> = Vec::new();
        let mut day = start;
        while day <= last {
            let name = DAY_OUTPUT[(day % 7) as usize];
            if !days.contains(&name) {
                days.push(name);
            }
            day += step.max(1);
        }
        days.join(",")
    };
    Ok(match (end, step_value) {
        // A single day with a step: from that day to Saturday.
        (None, Some(step)) => explicit(6, step),
        (None, None) if has_digit => DAY_OUTPUT[(start % 7) as usize].to_owned(),
        (None, None) => item.to_owned(),
        (Some(7), step) => explicit(7, step.unwrap_or(1)),
        (Some(_), _) if !has_digit => item.to_owned(),
        (Some(end), step) => {
            let range = format!(
                "{}-{}",
                DAY_OUTPUT[start as usize % 7],
                DAY_OUTPUT[end as usize % 7]
            );
            match step {
                Some(step) => format!("{range}/{step}"),
                None => range,
            }
        }
    })
}

/// Builds a readable reason from a `cron` crate error, naming the field at fault when possible.
fn locate_cron_error(original: &str, normalized: &str, error: &cron::error::Error) -> String {
    let reason = clean_cron_message(&error.to_string());
    let fields: Vec<&str> = normalized.split_whitespace().collect();
    let originals: Vec<&str> = original.split_whitespace().collect();
    if fields.len() >= 6 {
        let shift = fields.len().saturating_sub(originals.len()).min(1);
        for (index, field) in fields.iter().enumerate() {
            let mut probe = vec!["*"; fields.len()];
            if let Some(slot) = probe.get_mut(index) {
                *slot = field;
            }
            if let Err(probe_error) = cron::Schedule::from_str(&probe.join(" ")) {
                let shown = index
                    .checked_sub(shift)
                    .and_then(|i| originals.get(i))
                    .copied()
                    .unwrap_or(field);
                let name = FIELDS.get(index).map_or("a", |spec| spec.name);
                let reason = clean_cron_message(&probe_error.to_string());
                return format!("{name} field `{shown}`: {reason}");
            }
        }
    }
    reason
}

fn clean_cron_message(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.chars().all(|c| c == '^' || c == ' '))
        .unwrap_or("");
    let line = line.trim_end_matches('.');
    if line.is_empty() {
        "not a valid value".to_owned()
    } else {
        line.to_owned()
    }
}

/// Validates a time zone name (an IANA name such as `Europe/Paris`, or `UTC`).
///
/// The error is a one-line reason that suggests the closest IANA name when there is a close
/// one, e.g. ``unknown time zone `Europe/Pari`; did you mean `Europe/Paris`?``.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(
            "the time zone name is empty; use an IANA name such as `Europe/Paris` or `UTC`"
                .to_owned(),
        );
    }
    if let Ok(tz) = trimmed.parse::<Tz>() {
        return Ok(tz);
    }
    match closest_timezone(trimmed) {
        Some(suggestion) => Err(format!(
            "unknown time zone `{trimmed}`; did you mean `{suggestion}`?"
        )),
        None => Err(format!(
            "unknown time zone `{trimmed}`; use an IANA name such as `Europe/Paris` or `UTC`"
        )),
    }
}

/// The IANA name closest to `name` by edit distance (ignoring case), if close enough.
fn closest_timezone(name: &str) -> Option<&'static str> {
    let wanted = name.to_lowercase();
    let threshold = (wanted.chars().count() / 4).clamp(1, 3);
    let mut best: Option<(usize, &'static str)> = None;
    for tz in chrono_tz::TZ_VARIANTS {
        let candidate = tz.name();
        let lower = candidate.to_lowercase();
        let mut distance = strsim::levenshtein(&wanted, &lower);
        // `Paris` should find `Europe/Paris`: compare with the last segment too.
        if !wanted.contains('/')
            && let Some((_, city)) = lower.rsplit_once('/')
        {
            distance = distance.min(strsim::levenshtein(&wanted, city));
        }
        if distance <= threshold && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, name)| name)
}

#[cfg(test)]
mod tests;
