#![allow(clippy::unwrap_used)]

use chrono::{Datelike, TimeDelta, Weekday};

use super::*;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
}

fn schedule(expression: &str, timezone: Option<&str>) -> Schedule {
    match Schedule::parse(expression, timezone) {
        Ok(schedule) => schedule,
        Err(error) => panic!("`{expression}` should parse: {error}"),
    }
}

/// Every fire time in the half-open interval (from, to].
fn fires(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut at = from;
    while let Some(next) = schedule.next_after(at) {
        if next > to {
            break;
        }
        assert!(next > at, "fire times must increase");
        out.push(next);
        at = next;
    }
    out
}

fn weekdays(expression: &str) -> Vec<Weekday> {
    // 2027-01-03 is a Sunday; look at the following 7 days.
    let start = utc(2027, 1, 3, 0, 0, 0);
    fires(
        &schedule(expression, None),
        start,
        start + TimeDelta::days(7),
    )
    .iter()
    .map(|at| at.weekday())
    .collect()
}

fn cron_error(expression: &str) -> String {
    let reason = parse_cron(expression).unwrap_err();
    assert!(
        !reason.ends_with('.'),
        "reason ends with a period: {reason}"
    );
    assert!(!reason.contains('\n'), "reason is not one line: {reason}");
    reason
}

const MON_FRI: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];

#[test]
fn five_field_expression_fires_at_second_zero() {
    let every_five = schedule("*/5 * * * *", None);
    let after = utc(2027, 1, 1, 0, 1, 7);
    assert_eq!(every_five.next_after(after), Some(utc(2027, 1, 1, 0, 5, 0)));
    assert_eq!(
        every_five.next_after(utc(2027, 1, 1, 0, 5, 0)),
        Some(utc(2027, 1, 1, 0, 10, 0))
    );
    let daily = schedule("30 9 * * *", None);
    assert_eq!(
        daily.next_after(after),
        Some(utc(2027, 1, 1, 9, 30, 0)),
        "5 fields are minute hour day-of-month month day-of-week"
    );
    assert_eq!(daily.expression(), "30 9 * * *");
    assert_eq!(daily.timezone(), Tz::UTC);
}

#[test]
fn six_and_seven_field_expressions_have_seconds_first() {
    let every_ten_seconds = schedule("*/10 * * * * *", None);
    assert_eq!(
        every_ten_seconds.next_after(utc(2027, 1, 1, 0, 0, 3)),
        Some(utc(2027, 1, 1, 0, 0, 10))
    );
    let with_year = schedule("0 0 12 1 1 * 2028", None);
    assert_eq!(
        with_year.next_after(utc(2027, 6, 1, 0, 0, 0)),
        Some(utc(2028, 1, 1, 12, 0, 0))
    );
    assert_eq!(with_year.next_after(utc(2028, 6, 1, 0, 0, 0)), None);
}

#[test]
fn next_after_is_strict_and_handles_fractions_of_a_second() {
    let minutely = schedule("0 * * * * *", None);
    let on_fire = utc(2027, 1, 1, 10, 0, 0);
    assert_eq!(
        minutely.next_after(on_fire),
        Some(utc(2027, 1, 1, 10, 1, 0))
    );
    let just_before = on_fire - TimeDelta::milliseconds(1);
    assert_eq!(minutely.next_after(just_before), Some(on_fire));
    let just_after = on_fire + TimeDelta::milliseconds(1);
    assert_eq!(
        minutely.next_after(just_after),
        Some(utc(2027, 1, 1, 10, 1, 0))
    );
}

#[test]
fn numeric_day_of_week_uses_crontab_numbering() {
    assert_eq!(weekdays("0 0 9 * * 1-5"), MON_FRI);
    assert_eq!(weekdays("0 9 * * 1-5"), MON_FRI, "5-field form too");
}

#[test]
fn named_day_of_week_is_unchanged() {
    assert_eq!(weekdays("0 0 9 * * Mon-Fri"), MON_FRI);
    assert_eq!(weekdays("0 0 9 * * MON-FRI"), MON_FRI);
    assert_eq!(weekdays("0 0 9 * * monday"), [Weekday::Mon]);
}

#[test]
fn zero_and_seven_both_mean_sunday() {
    assert_eq!(weekdays("0 0 9 * * 0"), [Weekday::Sun]);
    assert_eq!(weekdays("0 0 9 * * 7"), [Weekday::Sun]);
    assert_eq!(weekdays("0 9 * * 0"), [Weekday::Sun]);
}

#[test]
fn day_of_week_lists_ranges_and_steps() {
    use Weekday::*;
    assert_eq!(weekdays("0 0 9 * * 1,3,5"), [Mon, Wed, Fri]);
    assert_eq!(weekdays("0 0 9 * * 1-5/2"), [Mon, Wed, Fri]);
    assert_eq!(weekdays("0 0 9 * * */2"), [Sun, Tue, Thu, Sat]);
    assert_eq!(weekdays("0 0 9 * * 0-6/3"), [Sun, Wed, Sat]);
    assert_eq!(weekdays("0 0 9 * * 5-7"), [Sun, Fri, Sat]);
    assert_eq!(weekdays("0 0 9 * * 1-7/2"), [Sun, Mon, Wed, Fri]);
    assert_eq!(weekdays("0 0 9 * * 1/2"), [Mon, Wed, Fri]);
    assert_eq!(weekdays("0 0 9 * * MON-3"), [Mon, Tue, Wed]);
    assert_eq!(weekdays("0 0 9 * * 0,SAT"), [Sun, Sat]);
    assert_eq!(weekdays("0 0 9 * * *").len(), 7);
    assert_eq!(weekdays("0 0 9 ? * 6"), [Sat]);
}

#[test]
fn day_of_week_translation_rewrites_numbers_only() {
    let cases = [
        ("1-5", "MON-FRI"),
        ("1,3,5", "MON,WED,FRI"),
        ("1-5/2", "MON-FRI/2"),
        ("*/2", "*/2"),
        ("*", "*"),
        ("?", "?"),
        ("0", "SUN"),
        ("7", "SUN"),
        ("5-7", "FRI,SAT,SUN"),
        ("0-7", "SUN,MON,TUE,WED,THU,FRI,SAT"),
        ("1/2", "MON,WED,FRI"),
        ("Mon-Fri", "Mon-Fri"),
        ("MON", "MON"),
        ("MON-5", "MON-FRI"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            translate_day_of_week(input).unwrap(),
            expected,
            "for `{input}`"
        );
    }
}

#[test]
fn hour_steps() {
    let every_two_hours = schedule("0 0 */2 * * *", None);
    let day = utc(2027, 1, 1, 0, 0, 0);
    let hours: Vec<u32> = fires(
        &every_two_hours,
        day - TimeDelta::seconds(1),
        day + TimeDelta::hours(23),
    )
    .iter()
    .map(|at| at.hour())
    .collect();
    assert_eq!(hours, (0..24).step_by(2).collect::<Vec<u32>>());
}

#[test]
fn shorthands() {
    let daily = schedule("@daily", None);
    assert_eq!(
        daily.next_after(utc(2027, 1, 1, 10, 0, 0)),
        Some(utc(2027, 1, 2, 0, 0, 0))
    );
    let weekly = schedule("@weekly", None);
    let next = weekly.next_after(utc(2027, 1, 1, 10, 0, 0)).unwrap();
    assert_eq!((next.weekday(), next.hour()), (Weekday::Sun, 0));
    assert!(parse_cron("@HOURLY").is_ok());
    assert!(cron_error("@reboot").contains("not supported"));
    assert!(cron_error("@sometimes").contains("unknown shorthand"));
}

#[test]
fn wrong_field_count_is_explained() {
    assert_eq!(
        cron_error("* * *"),
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6-7 fields with seconds first, found 3"
    );
    assert!(cron_error("* * * * * * * *").ends_with("found 8"));
    assert!(cron_error("").contains("empty"));
    assert!(cron_error("   ").contains("empty"));
}

#[test]
fn bad_fields_are_explained() {
    let reason = cron_error("0 0 25 * * *");
    assert_eq!(reason, "hour field `25`: 25 is out of range 0-23");

    let reason = cron_error("61 * * * *");
    assert_eq!(reason, "minute field `61`: 61 is out of range 0-59");

    let reason = cron_error("0 0 9 * * 8");
    assert!(reason.starts_with("day-of-week field `8`"), "{reason}");
    assert!(reason.contains("0-7"), "{reason}");

    let reason = cron_error("0 0 9 * JANX *");
    assert!(
        reason.contains("month") && reason.contains("JANX"),
        "{reason}"
    );

    let reason = cron_error("x * * * *");
    assert!(
        reason.contains("minute") && reason.contains("not a number"),
        "{reason}"
    );

    let reason = cron_error("*/0 * * * *");
    assert!(reason.contains("step must be at least 1"), "{reason}");

    let reason = cron_error("0 0 9 * * 5-1");
    assert!(reason.contains("runs backwards"), "{reason}");

    let reason = cron_error("0 0 9 * * FRI-SUN");
    assert!(
        reason.contains("runs backwards") && reason.contains("Sunday"),
        "{reason}"
    );

    let reason = cron_error("0 0 9 1,,2 * *");
    assert!(reason.contains("empty entry"), "{reason}");

    let reason = cron_error("0 0 ? * * *");
    assert!(reason.contains("`?`"), "{reason}");

    let reason = cron_error("0 0 9 31 2 *");
    assert!(reason.contains("never matches"), "{reason}");
}

#[test]
fn schedule_errors_carry_the_input() {
    match Schedule::parse("0 0 25 * * *", Some("Europe/Paris")) {
        Err(ScheduleError::Cron { expression, reason }) => {
            assert_eq!(expression, "0 0 25 * * *");
            assert!(reason.contains("hour"));
        }
        other => panic!("expected a cron error, got {other:?}"),
    }
    let error = Schedule::parse("* * *", None).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid cron expression `* * *`: expected 5 fields")
    );
}

#[test]
fn unknown_timezone_suggests_the_closest_name() {
    assert_eq!(
        parse_timezone("Europe/Pari").unwrap_err(),
        "unknown time zone `Europe/Pari`; did you mean `Europe/Paris`?"
    );
    assert!(
        parse_timezone("europe/paris")
            .unwrap_err()
            .contains("did you mean `Europe/Paris`?")
    );
    assert!(
        parse_timezone("Paris")
            .unwrap_err()
            .contains("did you mean `Europe/Paris`?")
    );
    assert!(
        parse_timezone("America/New_Yrok")
            .unwrap_err()
            .contains("`America/New_York`")
    );
    let far = parse_timezone("Nowhere/Atlantis").unwrap_err();
    assert!(!far.contains("did you mean"), "{far}");
    assert!(parse_timezone("").unwrap_err().contains("empty"));

    match Schedule::parse("0 0 9 * * *", Some("Europe/Pari")) {
        Err(ScheduleError::Timezone { name, reason }) => {
            assert_eq!(name, "Europe/Pari");
            assert!(reason.contains("Europe/Paris"));
        }
        other => panic!("expected a time zone error, got {other:?}"),
    }
    assert_eq!(parse_timezone("Europe/Paris"), Ok(Tz::Europe__Paris));
    assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
    assert_eq!(
        schedule("0 0 9 * * *", Some("America/New_York")).timezone(),
        Tz::America__New_York
    );
}

/// 02:30 does not exist in Paris on 2027-03-28 (02:00 CET jumps to 03:00 CEST): the daily 02:30
/// run is skipped that day, not moved.
#[test]
fn dst_gap_is_skipped() {
    let at_half_past_two = schedule("0 30 2 * * *", Some("Europe/Paris"));
    let got = fires(
        &at_half_past_two,
        utc(2027, 3, 26, 0, 0, 0),
        utc(2027, 3, 30, 12, 0, 0),
    );
    assert_eq!(
        got,
        [
            utc(2027, 3, 26, 1, 30, 0), // CET, +01:00
            utc(2027, 3, 27, 1, 30, 0),
            // 2027-03-28: skipped
            utc(2027, 3, 29, 0, 30, 0), // CEST, +02:00
            utc(2027, 3, 30, 0, 30, 0),
        ]
    );
}

#[test]
fn local_time_follows_dst_in_spring() {
    let nine = schedule("0 0 9 * * *", Some("Europe/Paris"));
    let got = fires(&nine, utc(2027, 3, 27, 0, 0, 0), utc(2027, 3, 29, 23, 0, 0));
    assert_eq!(
        got,
        [
            utc(2027, 3, 27, 8, 0, 0),
            utc(2027, 3, 28, 7, 0, 0),
            utc(2027, 3, 29, 7, 0, 0),
        ]
    );
}

/// 02:30 happens twice in Paris on 2027-10-31 (03:00 CEST falls back to 02:00 CET): it fires once,
/// at the first occurrence.
#[test]
fn repeated_local_time_fires_once() {
    let at_half_past_two = schedule("0 30 2 * * *", Some("Europe/Paris"));
    let night = fires(
        &at_half_past_two,
        utc(2027, 10, 31, 0, 0, 0),
        utc(2027, 10, 31, 4, 0, 0),
    );
    assert_eq!(night, [utc(2027, 10, 31, 0, 30, 0)]);
    let week = fires(
        &at_half_past_two,
        utc(2027, 10, 29, 12, 0, 0),
        utc(2027, 11, 2, 12, 0, 0),
    );
    assert_eq!(
        week,
        [
            utc(2027, 10, 30, 0, 30, 0),
            utc(2027, 10, 31, 0, 30, 0),
            utc(2027, 11, 1, 1, 30, 0),
            utc(2027, 11, 2, 1, 30, 0),
        ]
    );
    // Starting between the two occurrences does not find the second one either.
    assert_eq!(
        at_half_past_two.next_after(utc(2027, 10, 31, 1, 0, 0)),
        Some(utc(2027, 11, 1, 1, 30, 0))
    );
    let nine = schedule("0 0 9 * * *", Some("Europe/Paris"));
    assert_eq!(
        fires(&nine, utc(2027, 10, 30, 0, 0, 0), utc(2027, 11, 1, 0, 0, 0)),
        [utc(2027, 10, 30, 7, 0, 0), utc(2027, 10, 31, 8, 0, 0)]
    );
}

/// Every-hour schedules keep their rhythm in real time through both DST changes.
#[test]
fn interval_schedules_keep_going_through_dst_changes() {
    let half_hourly = schedule("0 */30 * * * *", Some("Europe/Paris"));
    for (from, to) in [
        (utc(2027, 10, 30, 23, 0, 0), utc(2027, 10, 31, 2, 0, 0)),
        (utc(2027, 3, 27, 23, 0, 0), utc(2027, 3, 28, 2, 0, 0)),
    ] {
        let got = fires(&half_hourly, from, to);
        let expected: Vec<_> = (1..=6).map(|i| from + TimeDelta::minutes(30 * i)).collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn latest_between_is_half_open() {
    let hourly = schedule("0 0 * * * *", None);
    let since = utc(2027, 1, 1, 3, 0, 0);
    let until = utc(2027, 1, 1, 7, 20, 0);
    assert_eq!(
        hourly.latest_between(since, until),
        Some(utc(2027, 1, 1, 7, 0, 0))
    );
    assert_eq!(
        hourly.latest_between(since, utc(2027, 1, 1, 7, 0, 0)),
        Some(utc(2027, 1, 1, 7, 0, 0)),
        "until is included"
    );
    assert_eq!(
        hourly.latest_between(utc(2027, 1, 1, 7, 0, 0), until),
        None,
        "since is excluded"
    );
    assert_eq!(hourly.latest_between(until, until), None);
    assert_eq!(hourly.latest_between(until, since), None);
    let yearly = schedule("0 0 0 1 1 *", None);
    assert_eq!(
        yearly.latest_between(utc(2020, 6, 1, 0, 0, 0), utc(2027, 6, 1, 0, 0, 0)),
        Some(utc(2027, 1, 1, 0, 0, 0))
    );
}

#[test]
fn latest_between_respects_dst_rules() {
    let at_half_past_two = schedule("0 30 2 * * *", Some("Europe/Paris"));
    assert_eq!(
        at_half_past_two.latest_between(utc(2027, 3, 27, 12, 0, 0), utc(2027, 3, 28, 12, 0, 0)),
        None,
        "the skipped 02:30 is not a fire time"
    );
    assert_eq!(
        at_half_past_two.latest_between(utc(2027, 10, 30, 12, 0, 0), utc(2027, 10, 31, 3, 0, 0)),
        Some(utc(2027, 10, 31, 0, 30, 0)),
        "the repeated 02:30 fires at its first occurrence only"
    );
}

/// `next_after` and `latest_between` agree with each other everywhere around DST changes.
#[test]
fn next_and_latest_agree_around_dst_changes() {
    let cases = [
        ("0 30 2 * * *", "Europe/Paris"),
        ("0 */20 * * * *", "Europe/Paris"),
        ("0 0 2 * * *", "America/New_York"),
        ("0 15 1 * * *", "America/New_York"),
        ("0 0 9 * * 1-5", "Australia/Lord_Howe"),
        ("0 */7 * * * *", "Australia/Lord_Howe"),
    ];
    let nights = [
        utc(2027, 3, 27, 20, 0, 0),
        utc(2027, 10, 30, 20, 0, 0),
        utc(2027, 3, 14, 0, 0, 0),
        utc(2027, 11, 7, 0, 0, 0),
        utc(2027, 4, 3, 10, 0, 0),
        utc(2027, 10, 2, 10, 0, 0),
    ];
    for (expression, zone) in cases {
        let schedule = schedule(expression, Some(zone));
        for night in nights {
            for step in 0..(12 * 60 / 7) {
                let at = night + TimeDelta::minutes(7 * step);
                let Some(next) = schedule.next_after(at) else {
                    panic!("{expression} in {zone} has no fire after {at}");
                };
                assert_eq!(
                    schedule.latest_between(at, next),
                    Some(next),
                    "{expression} in {zone} after {at}"
                );
                assert_eq!(
                    schedule.latest_between(at, next - TimeDelta::seconds(1)),
                    None,
                    "{expression} in {zone}: a fire between {at} and {next}"
                );
            }
        }
    }
}
