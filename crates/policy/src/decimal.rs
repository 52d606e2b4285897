//! Exact decimals as whole numbers of the declared smallest unit: with 2 decimal places,
//! `98.70` is 9870. Comparisons and sums on those are exact; no float is ever compared.
//!
//! Call arguments arrive as JSON, which `serde_json` reads as a 64-bit float when the number has
//! a fraction. Any decimal with at most 15 significant digits survives that round trip exactly
//! (an `f64` holds 15 decimal digits; its shortest representation, which Rust prints, gives them
//! back), so such a number is converted from its shortest text. A number with more significant
//! digits may not be the one the caller wrote, so it does not fit, like one with more decimal
//! places than declared or beyond 64 bits once scaled.

use std::fmt;

/// The most decimal places a policy may declare.
pub(crate) const MAX_SCALE: u32 = 9;

/// Significant digits an `f64` is guaranteed to keep (`DBL_DIG`).
const F64_DIGITS: usize = 15;

/// Why a number does not fit its declared scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfit {
    NotANumber,
    TooPrecise { text: String, scale: u32 },
    TooManyDigits { text: String },
    TooLarge { text: String },
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => f.write_str("the value is not a number"),
            Self::TooPrecise { text, scale } => {
                write!(
                    f,
                    "{text} has more than the {scale} decimal places declared"
                )
            }
            Self::TooManyDigits { text } => write!(
                f,
                "{text} has more than {F64_DIGITS} significant digits and cannot be read exactly"
            ),
            Self::TooLarge { text } => write!(f, "{text} is too large"),
        }
    }
}

/// A JSON number as a whole count of `10^-scale` units.
pub(crate) fn scaled(value: &serde_json::Value, scale: u32) -> Result<i64, Unfit> {
    let serde_json::Value::Number(n) = value else {
        return Err(Unfit::NotANumber);
    };
    if let Some(whole) = n.as_i64() {
        return whole
            .checked_mul(10i64.pow(scale))
            .ok_or_else(|| Unfit::TooLarge {
                text: n.to_string(),
            });
    }
    if n.is_u64() {
        return Err(Unfit::TooLarge {
            text: n.to_string(),
        });
    }
    let float = n.as_f64().ok_or(Unfit::NotANumber)?;
    // Rust prints the shortest text that reads back as the same float, never in exponent form.
    let text = format!("{float}");
    let digits = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|b| *b == b'0')
        .count();
    if digits > F64_DIGITS {
        return Err(Unfit::TooManyDigits { text });
    }
    parse_scaled(&text, scale).map_err(|e| match e {
        Unfit::TooPrecise { .. } => Unfit::TooPrecise {
            text: text.clone(),
            scale,
        },
        other => other,
    })
}

/// Decimal text (`-12.50`, `3`) as a whole count of `10^-scale` units.
pub(crate) fn parse_scaled(text: &str, scale: u32) -> Result<i64, Unfit> {
    let too_large = || Unfit::TooLarge {
        text: text.to_owned(),
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Unfit::NotANumber);
    }
    let fraction = fraction.trim_end_matches('0');
    let places = u32::try_from(fraction.len()).map_err(|_| too_large())?;
    if places > scale {
        return Err(Unfit::TooPrecise {
            text: text.to_owned(),
            scale,
        });
    }
    let mut units: i64 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    units = units
        .checked_mul(10i64.pow(scale - places))
        .ok_or_else(too_large)?;
    Ok(if negative { -units } else { units })
}

/// Units back to decimal text, for `explain`.
pub(crate) fn display(units: i64, scale: u32) -> String {
    if scale == 0 {
        return units.to_string();
    }
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    let divisor = 10u64.pow(scale);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / divisor,
        magnitude % divisor,
        width = scale as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(scaled(&json!(98.70), 2), Ok(9870));
        assert_eq!(scaled(&json!(98), 2), Ok(9800));
        assert_eq!(scaled(&json!(0.1), 2), Ok(10));
        assert_eq!(scaled(&json!(-0.05), 2), Ok(-5));
        assert_eq!(scaled(&json!(1e3), 2), Ok(100_000));
        assert!(matches!(
            scaled(&json!(98.705), 2),
            Err(Unfit::TooPrecise { .. })
        ));
        assert!(matches!(
            // A caller's "1234567890.12345678" arrives as the nearest float.
            scaled(&serde_json::from_str("1234567890.12345678").unwrap(), 8),
            Err(Unfit::TooManyDigits { .. })
        ));
        assert!(matches!(
            scaled(&json!(i64::MAX), 2),
            Err(Unfit::TooLarge { .. })
        ));
        assert!(matches!(
            scaled(&json!(u64::MAX), 0),
            Err(Unfit::TooLarge { .. })
        ));
        assert_eq!(scaled(&json!("98.70"), 2), Err(Unfit::NotANumber));
    }

    #[test]
    fn sums_of_tenths_are_exact() {
        let a = scaled(&json!(0.10), 2).unwrap();
        let b = scaled(&json!(0.20), 2).unwrap();
        assert_eq!(a + b, scaled(&json!(0.30), 2).unwrap());
        assert_eq!(display(a + b, 2), "0.30");
        assert_eq!(display(-5, 2), "-0.05");
        assert_eq!(display(12, 0), "12");
    }

    #[test]
    fn text_parses_strictly() {
        assert_eq!(parse_scaled("100.00", 2), Ok(10_000));
        assert_eq!(parse_scaled("100.5", 2), Ok(10_050));
        for bad in ["", ".5", "1e3", "1.2.3", "--1", "1_000"] {
            assert_eq!(parse_scaled(bad, 2), Err(Unfit::NotANumber), "{bad}");
        }
    }
}
