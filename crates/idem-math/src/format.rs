//! Numbers for people: thousands separators, three significant digits,
//! scientific notation only where nothing else reads.

/// A count or rate-like quantity: `36,500`, `36.5`, `0.0274`, `2.74e-5`.
pub fn count(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    if !x.is_finite() {
        return "∞".to_owned();
    }
    let a = x.abs();
    // Just under 1e-4 so that 1e-6 × 100 (= 9.999999999999999e-5) still
    // reads 0.0001.
    if !(9.9995e-5..1e15).contains(&a) {
        scientific(x)
    } else if a >= 100.0 {
        thousands(&format!("{:.0}", x.round()))
    } else {
        significant(x, 3)
    }
}

/// A fraction as a percentage: `0.001%`, `0.0998%`, `20%`.
pub fn percent(fraction: f64) -> String {
    format!("{}%", count(fraction * 100.0))
}

/// `1 in 100,000`, or empty for a zero rate.
pub(crate) fn one_in(fraction: f64) -> String {
    if fraction > 0.0 {
        format!("1 in {}", count(1.0 / fraction))
    } else {
        "never".to_owned()
    }
}

/// The probability of at least one event when `expected` are expected,
/// with its complement (`none`) where the probability itself would read as
/// 100%.
pub(crate) fn probability(p: f64, none: f64, expected: f64) -> String {
    if p == 0.0 {
        "0%".to_owned()
    } else if none == 0.0 {
        // e^-E underflows below 1e-308; say it exactly.
        format!("≈ 100% (chance of none: e^-{})", count(expected))
    } else if none < 1e-3 {
        format!("≈ 100% (chance of none: {})", count(none))
    } else if p < 0.1 {
        format!("{} (about 1 in {})", percent(p), count(1.0 / p))
    } else {
        percent(p)
    }
}

/// Money with two decimals and thousands separators: `912,500.00`.
pub(crate) fn money(x: f64) -> String {
    if !x.is_finite() || x.abs() >= 1e15 {
        return scientific(x);
    }
    let text = format!("{x:.2}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, "00"));
    format!("{}.{frac}", thousands(int))
}

/// A duration in the largest unit that keeps it above 2 of them.
pub(crate) fn duration(seconds: f64) -> String {
    const UNITS: [(f64, &str, &str); 5] = [
        (365.0 * 86_400.0, "year", "years"),
        (86_400.0, "day", "days"),
        (3_600.0, "hour", "hours"),
        (60.0, "minute", "minutes"),
        (1.0, "second", "seconds"),
    ];
    for (size, one, many) in UNITS {
        if seconds >= 2.0 * size {
            let n = count(seconds / size);
            return format!("{n} {}", if n == "1" { one } else { many });
        }
    }
    if seconds >= 1.0 {
        let n = count(seconds);
        return format!("{n} {}", if n == "1" { "second" } else { "seconds" });
    }
    format!("{} ms", count(seconds * 1e3))
}

fn scientific(x: f64) -> String {
    let text = format!("{x:.2e}");
    match text.split_once('e') {
        Some((m, e)) => {
            let m = if m.contains('.') {
                m.trim_end_matches('0').trim_end_matches('.')
            } else {
                m
            };
            format!("{m}e{e}")
        }
        None => text,
    }
}

fn significant(x: f64, digits: i32) -> String {
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Inserts `,` every three digits of an integer's text.
fn thousands(int: &str) -> String {
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int),
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(36_500.0), "36,500");
        assert_eq!(count(100.00000000000001), "100");
        assert_eq!(count(1_234_567.4), "1,234,567");
        assert_eq!(count(36.5), "36.5");
        assert_eq!(count(2.0), "2");
        assert_eq!(count(0.027_44), "0.0274");
        assert_eq!(count(2.74e-5), "2.74e-5");
        assert_eq!(count(1e-5), "1e-5");
        assert_eq!(count(1e-6 * 100.0), "0.0001");
        assert_eq!(count(3.0e20), "3e20");
        assert_eq!(count(99.96), "100");
    }

    #[test]
    fn others() {
        assert_eq!(percent(1e-5), "0.001%");
        assert_eq!(percent(0.000_998_08), "0.0998%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(one_in(1e-5), "1 in 100,000");
        assert_eq!(one_in(0.0), "never");
        assert_eq!(money(912_500.0), "912,500.00");
        assert_eq!(money(0.5), "0.50");
        assert_eq!(money(1234.567), "1,234.57");
        assert_eq!(duration(864.0), "14.4 minutes");
        assert_eq!(duration(0.5), "500 ms");
        assert_eq!(duration(1.0), "1 second");
        assert_eq!(duration(3.0 * 86_400.0), "3 days");
        assert_eq!(duration(86_400.0), "24 hours");
        assert_eq!(probability(0.0, 1.0, 0.0), "0%");
        assert_eq!(
            probability(1.0, 3.72e-44, 100.0),
            "≈ 100% (chance of none: 3.72e-44)"
        );
        assert_eq!(
            probability(1.0, 0.0, 36_500.0),
            "≈ 100% (chance of none: e^-36,500)"
        );
        assert_eq!(probability(0.01, 0.99, 0.01), "1% (about 1 in 100)");
        assert_eq!(probability(0.632, 0.368, 1.0), "63.2%");
    }
}
