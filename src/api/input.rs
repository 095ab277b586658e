//! Parsing of API input: scopes, durations, enums. Every error is one line for the client.

use crate::core::history::{self, MIN_HOLDS};
use crate::core::{AutoChoice, LockType, Priority};

pub const MAX_BODY: usize = 64 * 1024;

/// 1–200 characters of `[A-Za-z0-9._:/-]`.
pub fn scope(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!("invalid scope {value:?}: use 1-200 characters of A-Z a-z 0-9 . _ : / -"))
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` → microseconds (at most a day).
pub fn duration_us(field: &str, value: &str) -> Result<u64, String> {
    let bad = || format!("invalid {field} {value:?}: use a number with ms, s, m or h, e.g. \"30s\"");
    let (digits, unit_us) = if let Some(d) = value.strip_suffix("ms") {
        (d, 1_000)
    } else if let Some(d) = value.strip_suffix('s') {
        (d, 1_000_000)
    } else if let Some(d) = value.strip_suffix('m') {
        (d, 60_000_000)
    } else if let Some(d) = value.strip_suffix('h') {
        (d, 3_600_000_000)
    } else {
        return Err(bad());
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let us = n.checked_mul(unit_us).ok_or_else(bad)?;
    if us > 86_400_000_000 {
        return Err(format!("{field} {value:?} is longer than a day"));
    }
    Ok(us)
}

/// `"7d"` → 7: a whole number of days from 1 to `max`.
pub fn days(field: &str, value: &str, max: u8) -> Result<u8, String> {
    let digits = value.strip_suffix('d').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    match digits.and_then(|d| d.parse::<u8>().ok()) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("invalid {field} {value:?}: use whole days from 1d to {max}d, e.g. \"7d\"")),
    }
}

/// A grant as clients name it: `"TOKEN-ID"` (its fencing token and its id in the scope).
pub fn format_grant(token: u64, id: u64) -> String {
    format!("{token}-{id}")
}

/// `"7-21"` → (token 7, id 21), as `format_grant` wrote it.
pub fn grant(value: &str) -> Result<(u64, u64), String> {
    let parsed = value.split_once('-').and_then(|(t, i)| {
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        (digits(t) && digits(i)).then(|| Some((t.parse().ok()?, i.parse().ok()?))).flatten()
    });
    parsed.ok_or_else(|| format!("invalid grant {value:?}: use the \"grant\" a lock answer gave, e.g. \"7-21\""))
}

pub fn format_duration(us: u64) -> String {
    if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else {
        format!("{}ms", us / 1_000)
    }
}

/// A duration for people, to a tenth of a second: `"0.3s"`, `"29.9s"`, `"299.9s"`.
pub fn format_seconds(us: u64) -> String {
    format!("{:.1}s", us as f64 / 1e6)
}

/// Why an auto lease is what it is: `"auto: p99 of 130 holds in 7d"`.
pub fn timeout_source(choice: &AutoChoice, lease_us: u64) -> String {
    let AutoChoice { holds, p99_us, window_days } = *choice;
    match p99_us {
        None => format!("auto: max_timeout, as {holds} holds in {window_days}d are fewer than {MIN_HOLDS}"),
        Some(p99) => {
            let bound = match lease_us.cmp(&history::headroom(p99)) {
                std::cmp::Ordering::Greater => ", raised to min_timeout",
                std::cmp::Ordering::Less => ", lowered to max_timeout",
                std::cmp::Ordering::Equal => "",
            };
            format!("auto: p99 of {holds} holds in {window_days}d ({}) + 50%{bound}", format_seconds(p99))
        }
    }
}

pub fn lock_type(value: &str) -> Result<LockType, String> {
    match value {
        "write" => Ok(LockType::Write),
        "read" => Ok(LockType::Read),
        other => Err(format!("invalid lock_type {other:?}: use \"write\" or \"read\"")),
    }
}

pub fn lock_type_name(t: LockType) -> &'static str {
    match t {
        LockType::Write => "write",
        LockType::Read => "read",
    }
}

pub fn priority(value: &str) -> Result<Priority, String> {
    match value {
        "high" => Ok(Priority::High),
        "normal" => Ok(Priority::Normal),
        "low" => Ok(Priority::Low),
        other => Err(format!("invalid priority {other:?}: use \"high\", \"normal\" or \"low\"")),
    }
}

pub fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

/// Holder names and request ids: 1–200 printable characters without spaces.
pub fn name(field: &str, value: &str) -> Result<String, String> {
    if !value.is_empty() && value.len() <= 200 && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_string())
    } else {
        Err(format!("invalid {field} {value:?}: use 1-200 printable characters without spaces"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_read_back_as_written() {
        assert_eq!(grant(&format_grant(7, 21)), Ok((7, 21)));
        assert_eq!(grant(&format_grant(u64::MAX, 1)), Ok((u64::MAX, 1)));
        for bad in ["", "7", "7-", "-21", "7-21-3", "a-1", "+7-21", "7 -21", "99999999999999999999-1"] {
            let e = grant(bad).unwrap_err();
            assert!(e.contains("invalid grant") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn scopes() {
        assert!(scope("db-migration").is_ok());
        assert!(scope("a/b:c.d_e").is_ok());
        assert!(scope("").is_err());
        assert!(scope("has space").is_err());
        assert!(scope(&"x".repeat(201)).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_us("timeout", "30s"), Ok(30_000_000));
        assert_eq!(duration_us("timeout", "250ms"), Ok(250_000));
        assert_eq!(duration_us("timeout", "2m"), Ok(120_000_000));
        assert!(duration_us("timeout", "30").is_err());
        assert!(duration_us("timeout", "-1s").is_err());
        assert!(duration_us("timeout", "99999999999999999999s").is_err());
        assert!(duration_us("timeout", "25h").is_err());
        assert_eq!(format_duration(60_000_000), "60s");
        assert_eq!(format_duration(1_500_000), "1500ms");
    }

    #[test]
    fn the_timeout_source_says_what_the_lease_came_from() {
        let few = AutoChoice { holds: 3, p99_us: None, window_days: 7 };
        assert_eq!(timeout_source(&few, 300_000_000), "auto: max_timeout, as 3 holds in 7d are fewer than 10");
        let some = AutoChoice { holds: 130, p99_us: Some(27_000_000), window_days: 7 };
        assert_eq!(timeout_source(&some, 40_500_000), "auto: p99 of 130 holds in 7d (27.0s) + 50%");
        assert_eq!(timeout_source(&some, 30_000_000), "auto: p99 of 130 holds in 7d (27.0s) + 50%, lowered to max_timeout");
        assert_eq!(timeout_source(&some, 60_000_000), "auto: p99 of 130 holds in 7d (27.0s) + 50%, raised to min_timeout");
    }
}
