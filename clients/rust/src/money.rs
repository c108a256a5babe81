//! [`Money`]: an exact amount in cents, read from and written as JSON number text.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An exact amount of money with at most two decimal places, kept as a whole number of cents.
///
/// The service's `estimatedValue` is exact (0 to 1e12, at most 2 decimal places). `Money` never
/// passes through a binary float: it is parsed from the JSON number's text and written back as
/// number text (`125000.5`, whole amounts as integers: `48000`).
///
/// ```
/// use opportunity_client::Money;
/// let m: Money = "125000.5".parse().unwrap();
/// assert_eq!(m.cents(), 12_500_050);
/// assert_eq!(m.to_string(), "125000.50");
/// assert_eq!(Money::from_cents(4_800_000).to_json_text(), "48000");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money {
    cents: i64,
}

/// Why a text is not a [`Money`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an exact amount with at most two decimal places: {0:?}")]
pub struct MoneyParseError(pub String);

impl Money {
    /// The amount of `cents` hundredths (`Money::from_cents(150)` is 1.50).
    pub const fn from_cents(cents: i64) -> Self {
        Self { cents }
    }

    /// A whole amount (`Money::from_units(48_000)` is 48000).
    pub const fn from_units(units: i64) -> Self {
        Self { cents: units * 100 }
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.cents
    }

    /// The shortest JSON number text of the amount: `48000`, `125000.5`, `9500.75`.
    pub fn to_json_text(self) -> String {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        let (units, cents) = (abs / 100, abs % 100);
        match cents {
            0 => format!("{sign}{units}"),
            c if c % 10 == 0 => format!("{sign}{units}.{}", c / 10),
            c => format!("{sign}{units}.{c:02}"),
        }
    }
}

impl fmt::Display for Money {
    /// Always two decimal places: `125000.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Money {
    type Err = MoneyParseError;

    /// Parses a JSON number text exactly (`125000.5`, `1.10`, `5e1`, `-3`); refuses anything
    /// that is not a whole number of cents (`1.005`) or does not fit.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_exact(text).map(Self::from_cents).ok_or_else(|| MoneyParseError(text.to_string()))
    }
}

fn parse_exact(text: &str) -> Option<i64> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => {
            let exp = &rest[at + 1..];
            let exp = exp.strip_prefix('+').unwrap_or(exp);
            (&rest[..at], exp.parse::<i32>().ok()?)
        }
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if mantissa.contains('.') && fraction.is_empty() {
        return None;
    }
    // digits × 10^(exponent − len(fraction) + 2) cents.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mut scale = i64::from(exponent) - fraction.len() as i64 + 2;
    let mut digits = digits.to_string();
    while scale < 0 {
        // Only trailing zeros may be cut: otherwise the amount has a fraction of a cent.
        if digits.is_empty() {
            break;
        }
        if !digits.ends_with('0') {
            return None;
        }
        digits.pop();
        scale += 1;
    }
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() as i64 + scale.max(0) > 18 {
        return None;
    }
    let mut value: i64 = digits.parse().ok()?;
    if scale > 0 {
        value = value.checked_mul(10_i64.checked_pow(scale as u32)?)?;
    }
    Some(if negative { -value } else { value })
}

impl Serialize for Money {
    /// A JSON number written from its decimal text, never through a float.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.to_json_text()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Reads the JSON number's own text (or a string holding one) and parses it exactly.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get().trim();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        for (text, cents) in [
            ("0", 0),
            ("48000", 4_800_000),
            ("125000.5", 12_500_050),
            ("1.10", 110),
            ("9500.75", 950_075),
            ("5e1", 5000),
            ("1.5E+2", 15000),
            ("1234e-2", 1234),
            ("1000000000000", 100_000_000_000_000),
            ("999999999999.99", 99_999_999_999_999),
            ("-3", -300),
            ("0.010", 1),
        ] {
            assert_eq!(text.parse::<Money>().unwrap().cents(), cents, "{text}");
        }
        for bad in ["", "1.005", "1.", ".5", "abc", "1e-3", "1e30", "--1", "1.2.3", "0x10"] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_round_trip_is_text_exact() {
        let m: Money = serde_json::from_str("125000.5").unwrap();
        assert_eq!(m, Money::from_cents(12_500_050));
        assert_eq!(serde_json::to_string(&m).unwrap(), "125000.5");
        assert_eq!(serde_json::to_string(&Money::from_units(48_000)).unwrap(), "48000");
        assert_eq!(serde_json::to_string(&Money::from_cents(5)).unwrap(), "0.05");
        let from_value: Option<Money> = serde_json::from_value(serde_json::json!(0.1)).unwrap();
        assert_eq!(from_value, Some(Money::from_cents(10)));
        let none: Option<Money> = serde_json::from_str("null").unwrap();
        assert_eq!(none, None);
    }
}
