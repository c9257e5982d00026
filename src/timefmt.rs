//! Timestamps as profiled writes them: UTC, whole seconds, RFC 3339.

use time::OffsetDateTime;
use time::macros::format_description;

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    // Formatting a UTC time with a fixed description of numeric fields cannot
    // fail; the fallback keeps this function total without a panic path.
    t.to_offset(time::UtcOffset::UTC)
        .format(fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The current time as a TOML datetime, for front matter.
pub fn now_toml() -> toml::value::Datetime {
    toml_datetime(OffsetDateTime::now_utc())
}

/// `t` as a TOML offset datetime in UTC.
pub fn toml_datetime(t: OffsetDateTime) -> toml::value::Datetime {
    let t = t.to_offset(time::UtcOffset::UTC);
    toml::value::Datetime {
        date: Some(toml::value::Date {
            year: t.year() as u16,
            month: t.month() as u8,
            day: t.day(),
        }),
        time: Some(toml::value::Time {
            hour: t.hour(),
            minute: t.minute(),
            second: Some(t.second()),
            nanosecond: None,
        }),
        offset: Some(toml::value::Offset::Z),
    }
}

/// Today's date in UTC as `YYYY-MM-DD`, the name of a daily log file.
pub fn today() -> String {
    date(OffsetDateTime::now_utc())
}

/// The UTC day `days` days after 1970-01-01 as `YYYY-MM-DD`.
pub fn day(days: u64) -> String {
    let secs = i64::try_from(days.saturating_mul(86_400)).unwrap_or(0);
    date(OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
}
