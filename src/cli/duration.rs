//! The one duration syntax of every flag: a whole number and a unit, `ms`, `s`, `m`, `h` or
//! `d` (`500ms`, `30s`, `2m`, `1h`).

use std::time::Duration;

/// The value name duration flags show in `--help`.
pub const VALUE_NAME: &str = "DURATION";

/// Parses `30s`, `2m`, `1h`, `1d` or `500ms`; a bare number is refused (its unit would be a
/// guess).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 1h"))?;
    let ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{s:?} has no unit: write {s}s, {s}m or {s}h")),
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_bad_ones_are_refused() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "90",
            "m",
            "5w",
            "-3s",
            "1.5h",
            "99999999999999999999d",
            "2 h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
