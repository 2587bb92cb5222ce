use super::*;

fn t(s: &str) -> Logical {
    parse_logical(s).unwrap()
}

fn utc(s: &str) -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&t(s))
}

fn compiled(cron: &str, tz: &str) -> Compiled {
    compiled_to(cron, tz, "out/{{date}}")
}

fn compiled_to(cron: &str, tz: &str, output: &str) -> Compiled {
    let mut template = JobSpec::new("views", vec!["logs/{{date}}/".into()], output);
    template.params.insert("day".into(), "{{date-1d}}".into());
    Compiled::new(ScheduleSpec {
        name: "daily".into(),
        cron: cron.into(),
        tz: tz.into(),
        template,
        catchup: Catchup::Latest,
        max_catchup: 0,
        concurrency: Concurrency::Forbid,
        start: Some(t("2026-01-01")),
        incremental: false,
        on_failure: Default::default(),
    })
    .unwrap()
}

#[test]
fn templates_expand_the_logical_time_with_offsets() {
    let at = t("2026-03-01T07:05:09");
    assert_eq!(expand("logs/{{date}}/", at).unwrap(), "logs/2026-03-01/");
    assert_eq!(expand("{{date-1d}}", at).unwrap(), "2026-02-28");
    assert_eq!(expand("{{ hour+2h }}:{{minute}}", at).unwrap(), "09:05");
    assert_eq!(expand("x{{ts}}y", at).unwrap(), "x20260301T070509y");
    assert_eq!(
        expand("{{date-30m}}", t("2026-03-01")).unwrap(),
        "2026-02-28"
    );
    for bad in [
        "{{day}}",
        "{{date",
        "{{date-1w}}",
        "{{date+x}}",
        "{{date-}}",
    ] {
        assert!(expand(bad, at).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_schedule_expands_inputs_outputs_and_parameters() {
    let c = compiled("0 6 * * *", "UTC");
    let job = c.expand(t("2026-11-27T06:00")).unwrap();
    assert_eq!(job.inputs, vec!["logs/2026-11-27/".to_string()]);
    assert_eq!(job.output, "out/2026-11-27");
    assert_eq!(job.params["day"], "2026-11-26");
}

#[test]
fn bad_schedules_are_refused_with_a_clear_message() {
    let base = compiled("0 6 * * *", "UTC").spec;
    let bad = |f: &dyn Fn(&mut ScheduleSpec)| {
        let mut s = base.clone();
        f(&mut s);
        Compiled::new_schedule(s).unwrap_err().0
    };
    assert!(bad(&|s| s.cron = "61 * * * *".into()).contains("bad cron expression"));
    assert!(bad(&|s| s.cron = "* * *".into()).contains("expected 5 fields"));
    assert!(bad(&|s| s.cron = "0 0 30 2 *".into()).contains("never fires"));
    assert!(bad(&|s| s.tz = "Mars/Olympus".into()).contains("unknown time zone"));
    assert!(bad(&|s| s.template.output = "out/{{week}}".into()).contains("unknown template"));
    assert!(bad(&|s| s.name = "../x".into()).contains("bad schedule name"));
    assert!(bad(&|s| s.cron = "@reboot".into()).contains("the macros are"));
    // Every run would write one folder.
    assert!(bad(&|s| s.template.output = "out/views".into()).contains("same folder"));
    assert!(bad(&|s| s.cron = "0 * * * *".into()).contains("same folder"));
    assert!("sometimes"
        .parse::<Catchup>()
        .unwrap_err()
        .0
        .contains("none, latest, all"));
}

#[test]
fn cron_macros_stand_for_their_expressions() {
    for (m, at, next) in [
        ("@hourly", "2026-05-01T10:30", "2026-05-01T11:00"),
        ("@daily", "2026-05-01T10:30", "2026-05-02T00:00"),
        ("@midnight", "2026-05-01T10:30", "2026-05-02T00:00"),
        ("@weekly", "2026-05-01T10:30", "2026-05-03T00:00"),
        ("@monthly", "2026-05-01T10:30", "2026-06-01T00:00"),
        ("@yearly", "2026-05-01T10:30", "2027-01-01T00:00"),
        ("@annually", "2026-05-01T10:30", "2027-01-01T00:00"),
    ] {
        let c = compiled_to(m, "UTC", "out/{{ts}}");
        assert_eq!(c.next_after(t(at)).unwrap(), t(next), "{m}");
    }
}

#[test]
fn five_and_six_field_expressions() {
    let c = compiled_to("*/15 * * * *", "UTC", "out/{{ts}}");
    assert_eq!(
        c.between(t("2026-05-01T00:00"), t("2026-05-01T00:59"))
            .len(),
        4
    );
    let c = compiled_to("30 */20 * * * *", "UTC", "out/{{ts}}");
    assert_eq!(
        c.next_after(t("2026-05-01T00:00")).unwrap(),
        t("2026-05-01T00:00:30")
    );
}

#[test]
fn a_local_time_skipped_by_spring_forward_runs_once_after_the_gap() {
    // Europe/Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST.
    let c = compiled("30 2 * * *", "Europe/Berlin");
    let days = c.between(t("2026-03-28"), t("2026-03-30T23:59"));
    assert_eq!(days.len(), 3, "{days:?}");
    assert_eq!(c.instant(t("2026-03-28T02:30")), utc("2026-03-28T01:30"));
    // 02:30 does not exist on the 29th: it runs at 03:30 CEST (01:30 UTC), once.
    assert_eq!(c.instant(t("2026-03-29T02:30")), utc("2026-03-29T01:30"));
    assert_eq!(c.instant(t("2026-03-30T02:30")), utc("2026-03-30T00:30"));
    let due = c.due(Some(t("2026-03-28T02:30")), utc("2026-03-29T12:00"));
    assert_eq!(due, vec![t("2026-03-29T02:30")]);
}

#[test]
fn a_local_time_repeated_by_fall_back_runs_once() {
    // Europe/Berlin: 2026-10-25 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    let c = compiled("30 2 * * *", "Europe/Berlin");
    let due = c.due(Some(t("2026-10-24T02:30")), utc("2026-10-25T12:00"));
    assert_eq!(due, vec![t("2026-10-25T02:30")]);
    // The first 02:30 is CEST, 00:30 UTC.
    assert_eq!(c.instant(t("2026-10-25T02:30")), utc("2026-10-25T00:30"));
    // Hourly: 24 logical hours on the 25-hour day; the repeated hour runs once.
    let c = compiled_to("0 * * * *", "Europe/Berlin", "out/{{ts}}");
    let hours = c.between(t("2026-10-25T00:00"), t("2026-10-25T23:59"));
    assert_eq!(hours.len(), 24);
    // ... and 24 on the 23-hour day in spring, 02:00 running at 03:00.
    let hours = c.between(t("2026-03-29T00:00"), t("2026-03-29T23:59"));
    assert_eq!(hours.len(), 24);
    assert_eq!(c.instant(t("2026-03-29T02:00")), utc("2026-03-29T01:00"));
}

#[test]
fn due_times_start_at_the_start_and_never_go_back() {
    let c = compiled("0 6 * * *", "UTC");
    let now = utc("2026-01-03T07:00");
    assert_eq!(
        c.due(None, now),
        vec![
            t("2026-01-01T06:00"),
            t("2026-01-02T06:00"),
            t("2026-01-03T06:00")
        ]
    );
    assert_eq!(c.due(Some(t("2026-01-03T06:00")), now), vec![]);
    // A clock that jumps back finds nothing after the cursor.
    assert_eq!(
        c.due(Some(t("2026-01-03T06:00")), utc("2026-01-01T00:00")),
        vec![]
    );
}

#[test]
fn catch_up_policies() {
    let c = compiled_to("0 * * * *", "UTC", "out/{{ts}}");
    let due: Vec<Logical> = (0..5).map(|h| t("2026-01-01") + Span::hours(h)).collect();
    let inst = |l| c.instant(l);
    // Down from 00:00 to 04:00:30: 04:00 is on time.
    let now = utc("2026-01-01T04:00:30");
    assert_eq!(
        catch_up(&due, inst, now, Catchup::None, 0),
        (due[4..].to_vec(), due[..4].to_vec())
    );
    assert_eq!(
        catch_up(&due, inst, now, Catchup::Latest, 0),
        (due[4..].to_vec(), due[..4].to_vec())
    );
    assert_eq!(
        catch_up(&due, inst, now, Catchup::All, 0),
        (due.clone(), vec![])
    );
    assert_eq!(
        catch_up(&due, inst, now, Catchup::All, 2),
        (due[3..].to_vec(), due[..3].to_vec())
    );
    // Found late: under `none` nothing runs.
    let late = utc("2026-01-01T04:30");
    assert_eq!(
        catch_up(&due, inst, late, Catchup::None, 0),
        (vec![], due.clone())
    );
}
