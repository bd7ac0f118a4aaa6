use super::*;

/// ms of a wall-clock time in `zone`.
fn at(zone: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .unwrap()
        .timestamp_millis() as u64
}

const MIN: u64 = 60_000;
const H: u64 = 3_600_000;

#[test]
fn cron_follows_the_zone_across_daylight_saving_changes() {
    let s = Schedule::cron("30 2 * * *").tz("Europe/Berlin");
    // 2026-03-29: clocks jump from 02:00 to 03:00 in Berlin; 02:30 does not exist that night: it runs at 03:00.
    let sat = at("Europe/Berlin", 2026, 3, 28, 12, 0);
    let first = s.next_after(sat).unwrap();
    assert_eq!(first, at("Europe/Berlin", 2026, 3, 29, 3, 0));
    // The next night is on CEST (UTC+2): 02:30 local is 00:30 UTC.
    let second = s.next_after(first).unwrap();
    assert_eq!(second, at("UTC", 2026, 3, 30, 0, 30));
    // 2026-10-25: 02:30 happens twice (CEST, then CET): it runs once.
    let before = at("Europe/Berlin", 2026, 10, 24, 12, 0);
    let a = s.next_after(before).unwrap();
    let b = s.next_after(a).unwrap();
    assert_eq!(
        b - a,
        25 * H,
        "once on the 25th, then 02:30 CET on the 26th"
    );
    // In UTC the same expression is 02:30 UTC.
    let utc = Schedule::cron("30 2 * * *");
    assert_eq!(utc.next_after(sat).unwrap(), at("UTC", 2026, 3, 29, 2, 30));
}

#[test]
fn one_due_fire_on_time_runs_whatever_the_policy() {
    for missed in [Missed::Skip, Missed::Once, Missed::All(3)] {
        let s = Schedule::every(Duration::from_secs(60)).missed(missed);
        let p = s.plan(10 * MIN, 10 * MIN + 500);
        assert_eq!(
            p,
            Plan {
                fires: vec![10 * MIN],
                next: 11 * MIN
            },
            "{missed:?}"
        );
    }
}

#[test]
fn missed_fires_follow_the_policy() {
    // Every minute, next due at 10:00, the first worker up at 10:05:30: 10:00..10:05 were missed.
    let t = 10 * MIN;
    let now = 15 * MIN + 30_000;
    let plan = |m| {
        Schedule::every(Duration::from_secs(60))
            .missed(m)
            .plan(t, now)
    };
    // The newest (10:05) is 30 s old: on time, so even Skip runs it.
    assert_eq!(plan(Missed::Skip).fires, vec![15 * MIN]);
    assert_eq!(plan(Missed::Once).fires, vec![15 * MIN]);
    assert_eq!(
        plan(Missed::All(3)).fires,
        vec![13 * MIN, 14 * MIN, 15 * MIN]
    );
    assert_eq!(plan(Missed::All(100)).fires.len(), 6);
    for m in [Missed::Skip, Missed::Once, Missed::All(3)] {
        assert_eq!(plan(m).next, 16 * MIN);
    }
    // Daily at 03:00, next due two days ago: Skip runs nothing (the newest is 3 h old), Once runs one.
    let daily = |m| Schedule::cron("0 3 * * *").missed(m);
    let t = at("UTC", 2026, 5, 1, 3, 0);
    let now = at("UTC", 2026, 5, 3, 6, 0);
    assert!(daily(Missed::Skip).plan(t, now).fires.is_empty());
    assert_eq!(
        daily(Missed::Once).plan(t, now).fires,
        vec![at("UTC", 2026, 5, 3, 3, 0)]
    );
    assert_eq!(daily(Missed::All(5)).plan(t, now).fires.len(), 3);
    assert_eq!(
        daily(Missed::Skip).plan(t, now).next,
        at("UTC", 2026, 5, 4, 3, 0)
    );
}

#[test]
fn a_long_gap_is_caught_up_in_bounded_work() {
    // Every second, missed for ten years.
    let s = Schedule::every(Duration::from_secs(1)).missed(Missed::All(u32::MAX));
    let p = s.plan(0, 10 * 365 * 24 * H);
    assert_eq!(p.fires.len(), MAX_CATCH_UP);
    assert_eq!(*p.fires.last().unwrap(), 10 * 365 * 24 * H);
    assert_eq!(p.next, 10 * 365 * 24 * H + 1000);
}

#[test]
fn definitions_round_trip_through_their_fields_and_bad_ones_are_refused() {
    for s in [
        Schedule::cron("*/5 * * * *")
            .tz("America/New_York")
            .missed(Missed::All(4)),
        Schedule::every(Duration::from_secs(90)).missed(Missed::Skip),
    ] {
        let fields: HashMap<String, String> = s
            .fields()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Schedule::from_fields(&fields), Some(s));
    }
    for bad in [
        Schedule::cron("every day"),
        Schedule::cron("0 3 * * *").tz("Mars/Olympus"),
        Schedule::every(Duration::from_millis(10)),
        Schedule::every(Duration::from_secs(5)).missed(Missed::All(0)),
    ] {
        assert!(
            matches!(
                bad.fields(),
                Err(Error::InvalidOption {
                    option: "schedule",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn from_inside_a_repeated_hour_the_next_time_is_later() {
    // 2026-10-25 01:10 UTC is 02:10 CET, the second pass of Berlin's 02:00-03:00: 02:30 CEST (00:30 UTC) is over.
    let s = Schedule::cron("*/30 * * * *").tz("Europe/Berlin");
    let inside = at("UTC", 2026, 10, 25, 1, 10);
    assert_eq!(s.next_after(inside), Some(at("UTC", 2026, 10, 25, 2, 0)));
    let fixed = Schedule::cron("30 2 * * *").tz("Europe/Berlin");
    assert_eq!(
        fixed.next_after(inside),
        Some(at("UTC", 2026, 10, 26, 1, 30))
    );
}
