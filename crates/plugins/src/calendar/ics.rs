//! iCalendar: events read with `icalendar`'s parser, written (and edited line by line, so
//! that what this plugin does not manage is kept as the server had it) here.

use std::fmt::Write as _;

use icalendar::parser::{Component, Property, read_calendar, unfold};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde_json::{Value, json};

/// A point in time as the tool takes it: an instant, or a whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// RFC 3339, stored in UTC.
    At(Timestamp),
    /// `YYYY-MM-DD`, an all-day event's day.
    Day(Date),
}

impl When {
    /// Parses `YYYY-MM-DD` or RFC 3339 (`2026-01-05T10:00:00+01:00`).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() == 10 {
            return text.parse::<Date>().ok().map(Self::Day);
        }
        text.parse::<Timestamp>().ok().map(Self::At)
    }

    /// The instant this starts at (a day starts at midnight UTC), for time ranges.
    pub fn instant(self) -> Timestamp {
        match self {
            Self::At(t) => t,
            Self::Day(d) => d
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp()),
        }
    }

    /// As an iCalendar `DTSTART`/`DTEND` line.
    fn line(self, name: &str) -> String {
        match self {
            Self::At(t) => format!("{name}:{}", utc(t)),
            Self::Day(d) => format!("{name};VALUE=DATE:{}", d.strftime("%Y%m%d")),
        }
    }

    /// As the tool shows it.
    pub fn show(self) -> String {
        match self {
            Self::At(t) => t.to_string(),
            Self::Day(d) => d.to_string(),
        }
    }
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The fields of an event the tool manages.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    pub summary: Option<String>,
    pub start: Option<When>,
    pub end: Option<When>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub invitees: Option<Vec<String>>,
}

/// A new calendar object with one event.
pub fn build(uid: &str, fields: &Fields, now: Timestamp) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//P3AK//calendar//EN".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{}", escape(uid)),
        format!("DTSTAMP:{}", utc(now)),
    ];
    lines.extend(field_lines(fields));
    lines.push("END:VEVENT".to_owned());
    lines.push("END:VCALENDAR".to_owned());
    finish(&lines)
}

/// The lines for the fields that are set; `DTEND` is exclusive for days (the tool's `end`
/// is the last day).
fn field_lines(fields: &Fields) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(start) = fields.start {
        lines.push(start.line("DTSTART"));
    }
    if let Some(end) = fields.end {
        let end = match end {
            When::Day(d) => When::Day(d.tomorrow().unwrap_or(d)),
            at @ When::At(_) => at,
        };
        lines.push(end.line("DTEND"));
    }
    if let Some(summary) = &fields.summary {
        lines.push(format!("SUMMARY:{}", escape(summary)));
    }
    if let Some(location) = fields.location.as_ref().filter(|l| !l.is_empty()) {
        lines.push(format!("LOCATION:{}", escape(location)));
    }
    if let Some(description) = fields.description.as_ref().filter(|d| !d.is_empty()) {
        lines.push(format!("DESCRIPTION:{}", escape(description)));
    }
    for invitee in fields.invitees.iter().flatten() {
        lines.push(format!(
            "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{invitee}"
        ));
    }
    lines
}

/// The properties `edit` replaces when a field is given.
fn replaced(fields: &Fields) -> Vec<&'static str> {
    let mut names = vec!["DTSTAMP", "SEQUENCE", "LAST-MODIFIED"];
    if fields.start.is_some() || fields.end.is_some() {
        names.extend(["DTSTART", "DTEND", "DURATION"]);
    }
    if fields.summary.is_some() {
        names.push("SUMMARY");
    }
    if fields.location.is_some() {
        names.push("LOCATION");
    }
    if fields.description.is_some() {
        names.push("DESCRIPTION");
    }
    if fields.invitees.is_some() {
        names.push("ATTENDEE");
    }
    names
}

/// Changes the first event of `text`: the given fields replace theirs (`start` and `end` go
/// together: give both, the caller fills in the unchanged one), the sequence goes up, the
/// rest is kept as it was.
pub fn edit(text: &str, fields: &Fields, now: Timestamp) -> Result<String, String> {
    let unfolded = unfold(text);
    let names = replaced(fields);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_event = false;
    let mut done = false;
    let mut sequence = 0u64;
    for line in unfolded.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let name = line
            .split([';', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let value = line.split_once(':').map_or("", |(_, v)| v);
        if name == "BEGIN" {
            depth += 1;
            if !done && !in_event && value.eq_ignore_ascii_case("VEVENT") {
                in_event = true;
                depth = 1;
            }
        } else if name == "END" && in_event {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                out.push(format!("DTSTAMP:{}", utc(now)));
                out.push(format!("SEQUENCE:{}", sequence.saturating_add(1)));
                out.extend(field_lines(fields));
                in_event = false;
                done = true;
            }
        } else if in_event && depth == 1 {
            if name == "SEQUENCE" {
                sequence = value.trim().parse().unwrap_or(0);
            }
            if names.contains(&name.as_str()) {
                continue;
            }
        }
        out.push(line.to_owned());
    }
    if !done {
        return Err("the calendar object has no event".to_owned());
    }
    Ok(finish(&out))
}

/// Lines folded at 75 octets, CRLF-terminated.
fn finish(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        let mut width = 0;
        for c in line.chars() {
            if width + c.len_utf8() > 75 {
                out.push_str("\r\n ");
                width = 1;
            }
            out.push(c);
            width += c.len_utf8();
        }
        out.push_str("\r\n");
    }
    out
}

/// Escapes a TEXT value (RFC 5545 3.3.11).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// An event as the tool shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub uid: String,
    pub start: Option<Time>,
    pub end: Option<Time>,
    pub json: Value,
}

/// A time as the server stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    /// A known instant (`…Z`, or what the tool wrote).
    At(Timestamp),
    /// A day.
    Day(Date),
    /// A wall-clock time, in a named zone or floating.
    Local(DateTime),
}

impl Time {
    /// The tool's own kind, when it is one.
    pub fn when(self) -> Option<When> {
        match self {
            Self::At(t) => Some(When::At(t)),
            Self::Day(d) => Some(When::Day(d)),
            Self::Local(_) => None,
        }
    }
}

fn time_of(property: &Property<'_>) -> Option<(Time, Option<String>)> {
    let value = property.val.as_str().trim();
    let param = |key: &str| {
        property
            .params
            .iter()
            .find(|p| p.key.as_str().eq_ignore_ascii_case(key))
            .and_then(|p| p.val.as_ref())
            .map(|v| v.as_str().trim_matches('"').to_owned())
    };
    if value.len() == 8 || param("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE")) {
        let date = Date::strptime("%Y%m%d", value.get(..8)?).ok()?;
        return Some((Time::Day(date), None));
    }
    if let Some(plain) = value.strip_suffix('Z') {
        let dt = DateTime::strptime("%Y%m%dT%H%M%S", plain).ok()?;
        let t = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
        return Some((Time::At(t), None));
    }
    let dt = DateTime::strptime("%Y%m%dT%H%M%S", value).ok()?;
    Some((Time::Local(dt), param("TZID")))
}

fn show_time(time: Time, zone: Option<&str>, end: bool) -> String {
    match time {
        Time::At(t) => t.to_string(),
        // DTEND of a day is exclusive; the tool shows the last day.
        Time::Day(d) if end => d.yesterday().unwrap_or(d).to_string(),
        Time::Day(d) => d.to_string(),
        Time::Local(dt) => match zone {
            Some(zone) => format!("{dt}[{zone}]"),
            None => dt.to_string(),
        },
    }
}

/// The events (not their recurrence overrides) of a calendar object.
pub fn events(text: &str, etag: &str) -> Result<Vec<Shown>, String> {
    let unfolded = unfold(text);
    let calendar = read_calendar(&unfolded).map_err(|e| {
        let first = e.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        format!("invalid iCalendar data: {}", first.trim())
    })?;
    let mut out = Vec::new();
    for component in &calendar.components {
        if component.name.as_str() != "VEVENT" || component.find_prop("RECURRENCE-ID").is_some() {
            continue;
        }
        out.push(shown(component, etag));
    }
    Ok(out)
}

fn text_of(component: &Component<'_>, name: &str) -> Option<String> {
    component.find_prop(name).map(|p| p.val.as_str().to_owned())
}

fn shown(event: &Component<'_>, etag: &str) -> Shown {
    let uid = text_of(event, "UID").unwrap_or_default();
    let start = event.find_prop("DTSTART").and_then(time_of);
    let end = event.find_prop("DTEND").and_then(time_of);
    let all_day = matches!(start, Some((Time::Day(_), _)));
    let invitees: Vec<String> = event
        .properties
        .iter()
        .filter(|p| p.name.as_str() == "ATTENDEE")
        .map(|p| {
            let value = p.val.as_str().trim();
            value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
                .and_then(|_| value.get(7..))
                .unwrap_or(value)
                .to_owned()
        })
        .collect();
    let mut recurrence = String::new();
    if let Some(rule) = text_of(event, "RRULE") {
        let _ = write!(recurrence, "{rule}");
    }
    let json = json!({
        "uid": uid,
        "summary": text_of(event, "SUMMARY").unwrap_or_default(),
        "start": start.as_ref().map(|(t, z)| show_time(*t, z.as_deref(), false)),
        "end": end.as_ref().map(|(t, z)| show_time(*t, z.as_deref(), true)),
        "all_day": all_day,
        "location": text_of(event, "LOCATION"),
        "description": text_of(event, "DESCRIPTION"),
        "invitees": invitees,
        "recurrence": (!recurrence.is_empty()).then_some(recurrence),
        "etag": etag,
    });
    Shown {
        uid,
        start: start.map(|(t, _)| t),
        end: end.map(|(t, _)| t),
        json,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn build_read_and_edit() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fields = Fields {
            summary: Some("Lunch, with Bob; then \\ walk\nok".to_owned()),
            start: When::parse("2026-01-05T12:00:00+01:00"),
            end: When::parse("2026-01-05T13:00:00+01:00"),
            location: Some("Café".to_owned()),
            description: Some("x".repeat(200)),
            invitees: Some(vec!["bob@example.com".to_owned()]),
        };
        let text = build("abc", &fields, now);
        assert!(text.lines().all(|l| l.len() <= 76), "{text}");
        let events = events(&text, "\"1\"").unwrap();
        let e = &events[0].json;
        assert_eq!(e["uid"], "abc");
        assert_eq!(e["summary"], "Lunch, with Bob; then \\ walk\nok");
        assert_eq!(e["start"], "2026-01-05T11:00:00Z");
        assert_eq!(e["end"], "2026-01-05T12:00:00Z");
        assert_eq!(e["invitees"], json!(["bob@example.com"]));
        assert_eq!(e["description"], "x".repeat(200));
        assert_eq!(e["etag"], "\"1\"");

        let change = Fields {
            summary: Some("Dinner".to_owned()),
            start: When::parse("2026-01-06"),
            end: When::parse("2026-01-07"),
            ..Fields::default()
        };
        let edited = edit(&text, &change, now).unwrap();
        let e = &events_of(&edited)[0];
        assert_eq!(e["summary"], "Dinner");
        assert_eq!(e["start"], "2026-01-06");
        assert_eq!(e["end"], "2026-01-07");
        assert_eq!(e["all_day"], true);
        assert_eq!(e["location"], "Café");
        assert_eq!(e["invitees"], json!(["bob@example.com"]));
        assert!(edited.contains("SEQUENCE:1"));
        assert!(edit(&edited, &change, now).unwrap().contains("SEQUENCE:2"));
    }

    fn events_of(text: &str) -> Vec<Value> {
        events(text, "")
            .unwrap()
            .into_iter()
            .map(|s| s.json)
            .collect()
    }

    #[test]
    fn zones_and_rules() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:r\r\nDTSTART;TZID=Europe/Paris:20260105T090000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\nATTENDEE;CN=A:MAILTO:a@x.org\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let e = &events_of(text)[0];
        assert_eq!(e["start"], "2026-01-05T09:00:00[Europe/Paris]");
        assert_eq!(e["recurrence"], "FREQ=WEEKLY;BYDAY=MO");
        assert_eq!(e["invitees"], json!(["a@x.org"]));
        assert!(events("BEGIN:VCALENDAR\r\nBEGIN:", "").is_err());
    }
}
