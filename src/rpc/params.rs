//! Reading JSON-RPC params field by field, so that every problem of a call is reported at once.
//!
//! serde stops at the first error; a caller wants them all. So the params are first split into
//! their top-level members (kept as raw JSON text), and each member is then deserialized on its
//! own, its problems collected in a [`ValidationFailure`].

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::opportunity::{JsonDecimal, NAME_CONTROL, TEXT_CONTROL, trim_blank};
use crate::error::ValidationFailure;

/// The members of a params object in their order, values as raw JSON, and how many members had
/// a name that is not valid text (an escaped lone surrogate such as `"\ud800"`).
#[derive(Debug)]
struct RawObject<'a>(Vec<(String, &'a RawValue)>, usize);

/// A member name: text, or `None` when its escapes make no valid text. Read as bytes, which
/// serde_json decodes without refusing lone surrogates (read as a `String`, one bad name would
/// make the whole object unreadable, and every field sent look absent).
struct MemberName(Option<String>);

impl<'de> Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = MemberName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Some(v.to_string())))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(MemberName(std::str::from_utf8(v).ok().map(str::to_string)))
            }
        }
        deserializer.deserialize_bytes(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                let mut bad_names = 0;
                while let Some(MemberName(key)) = map.next_key::<MemberName>()? {
                    let value = map.next_value::<&'de RawValue>()?;
                    match key {
                        Some(key) => members.push((key, value)),
                        None => bad_names += 1,
                    }
                }
                Ok(RawObject(members, bad_names))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Reads the fields of one params object, recording every problem.
pub struct FieldReader<'a> {
    members: Vec<(String, &'a RawValue)>,
    /// Everything found wrong so far.
    pub failure: ValidationFailure,
}

/// The most names one kind of form error lists (unknown fields, repeated fields), and the most
/// items of `solutionFamilies` whose problems are reported one by one: far beyond what a caller
/// sends by mistake, so every problem is reported at once, while a hostile body cannot make the
/// answer much larger than itself. Past it, the rest are counted (`and N more unknown fields`).
pub const MAX_NAMED: usize = 1000;

fn report_capped(failure: &mut ValidationFailure, names: Vec<&str>, one: &str, many: &str) {
    for name in names.iter().take(MAX_NAMED) {
        failure.form(format!("{one} {name:?}"));
    }
    if names.len() > MAX_NAMED {
        failure.form(format!("and {} more {many}", names.len() - MAX_NAMED));
    }
}

const NOT_AN_OBJECT: &str = "params must be an object, or an array holding one object";
/// The message of a string value that holds a lone surrogate escape: JSON, but no text.
pub const LONE_SURROGATE: &str = "must be valid text: a lone surrogate escape such as \\ud800 is no character";

/// A member whose name is no text: it cannot be named back in the answer.
pub const BAD_NAME: &str = "a field name is not valid text (a lone surrogate escape such as \\ud800)";

impl<'a> FieldReader<'a> {
    /// Accepts params that are an object, or a one-element array holding an object; params
    /// left out or `null` are an object with no member. Anything else, and duplicate members,
    /// are form errors.
    pub fn new(params: Option<&'a str>) -> Self {
        let mut failure = ValidationFailure::default();
        let members = match params.map(str::trim_start) {
            Some(text) if text.starts_with('[') => match serde_json::from_str::<[&'a RawValue; 1]>(text) {
                Ok([inner]) => serde_json::from_str::<RawObject<'a>>(inner.get()).ok(),
                Err(_) => None,
            },
            // Params left out, or `null` (JSON-RPC's "omitted"): no member was sent, so each
            // required one is reported missing, and the shape is not a problem of its own.
            None | Some("null") => Some(RawObject(Vec::new(), 0)),
            Some(text) => serde_json::from_str::<RawObject<'a>>(text).ok(),
        };
        let members = match members {
            Some(RawObject(members, bad_names)) => {
                match bad_names {
                    0 => {}
                    1 => failure.form(BAD_NAME),
                    n => failure.form(format!("{n} field names are not valid text (a lone surrogate escape)")),
                }
                members
            }
            None => {
                failure.form(NOT_AN_OBJECT);
                Vec::new()
            }
        };
        let mut seen = HashSet::with_capacity(members.len());
        let mut reported = HashSet::new();
        let duplicates: Vec<&str> = members
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !seen.insert(*name) && reported.insert(*name))
            .collect();
        report_capped(&mut failure, duplicates, "duplicate field", "duplicate fields");
        Self { members, failure }
    }

    /// Whether the params were an object at all.
    pub fn is_object(&self) -> bool {
        !self.failure.form_errors.iter().any(|e| e == NOT_AN_OBJECT)
    }

    /// Reports every member whose name is not in `known`, as §4 asks: `unknown field "x"`.
    pub fn refuse_unknown(&mut self, known: &[impl AsRef<str>]) {
        let mut reported = HashSet::new();
        let unknown: Vec<&str> = self
            .members
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !known.iter().any(|k| k.as_ref() == *name) && reported.insert(*name))
            .collect();
        report_capped(&mut self.failure, unknown, "unknown field", "unknown fields");
    }

    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// An optional field: absent and `null` both mean not set.
    pub fn optional<T>(&mut self, name: &str, parse: impl Fn(&'a RawValue) -> Result<T, String>) -> Option<T> {
        let raw = self.raw(name).filter(|raw| raw.get() != "null")?;
        parse(raw).map_err(|message| self.failure.field(name, message)).ok()
    }

    /// Whether the params have a member of this name.
    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// The names of the members, in their order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(name, _)| name.as_str())
    }

    /// A field of a change, in three states: absent (`None`, unchanged), `null` (`Some(None)`,
    /// cleared) or a value (`Some(Some(v))`, set).
    pub fn patch<T>(&mut self, name: &str, parse: impl Fn(&'a RawValue) -> Result<T, String>) -> Option<Option<T>> {
        let raw = self.raw(name)?;
        if raw.get() == "null" {
            return Some(None);
        }
        Some(parse(raw).map_err(|message| self.failure.field(name, message)).ok())
    }

    /// A required field without a default: absent and `null` are refused.
    pub fn required<T>(&mut self, name: &str, parse: impl Fn(&'a RawValue) -> Result<T, String>) -> Option<T> {
        match self.raw(name) {
            None => {
                self.failure.field(name, "is required");
                None
            }
            Some(_) => self.defaulted(name, parse),
        }
    }

    /// A required field with a default: absent leaves it to the default (`None` here), `null`
    /// is refused.
    pub fn defaulted<T>(&mut self, name: &str, parse: impl Fn(&'a RawValue) -> Result<T, String>) -> Option<T> {
        let raw = self.raw(name)?;
        if raw.get() == "null" {
            self.failure.field(name, "must not be null");
            return None;
        }
        parse(raw).map_err(|message| self.failure.field(name, message)).ok()
    }
}

/// A JSON string without NUL characters (PostgreSQL text cannot hold them).
pub fn string(raw: &RawValue) -> Result<String, String> {
    let text: String = serde_json::from_str(raw.get()).map_err(|_| {
        // A JSON string that is no text: only a lone surrogate escape makes one.
        if raw.get().starts_with('"') { LONE_SURROGATE } else { "must be a string" }.to_string()
    })?;
    if text.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(text)
}

/// A name (`title`, a solution family): a string with white space and invisible characters
/// trimmed from both ends (see [`trim_blank`]), refused when a control character is left.
/// Whether anything visible is left is for the length rule to say (`must not be empty`).
pub fn name(raw: &RawValue) -> Result<String, String> {
    let text = string(raw)?;
    let text = trim_blank(&text);
    if text.chars().any(char::is_control) {
        return Err(NAME_CONTROL.into());
    }
    Ok(text.to_string())
}

/// A long free text: a string in which tab, line feed and carriage return are the only control
/// characters allowed.
pub fn text(raw: &RawValue) -> Result<String, String> {
    let text = string(raw)?;
    if text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(TEXT_CONTROL.into());
    }
    Ok(text)
}

pub use crate::domain::{UUID_FORM, parse_uuid};

/// A UUID in the hyphenated form, any case.
pub fn uuid(raw: &RawValue) -> Result<Uuid, String> {
    // A string that is no text, or holds a NUL, is no UUID either: say the form it must have.
    let text = string(raw).map_err(|_| {
        if raw.get().starts_with('"') {
            format!("must be a UUID ({UUID_FORM})")
        } else {
            "must be a UUID string".into()
        }
    })?;
    parse_uuid(&text).ok_or_else(|| format!("must be a UUID ({UUID_FORM})"))
}

/// A boolean.
pub fn boolean(raw: &RawValue) -> Result<bool, String> {
    serde_json::from_str(raw.get()).map_err(|_| "must be a boolean".into())
}

/// An integer. `50.0` counts as the integer 50, as it does in JavaScript; values beyond i64
/// saturate so that the range check names the bound.
pub fn integer(raw: &RawValue) -> Result<i64, String> {
    let value = JsonDecimal::parse(raw.get())
        .filter(JsonDecimal::is_integer)
        .ok_or_else(|| "must be an integer".to_string())?;
    let magnitude = value.scaled_to_i64(0).unwrap_or(i64::MAX);
    Ok(if value.negative { -magnitude } else { magnitude })
}

/// One of a closed set of exact lowercase values.
pub fn one_of<T>(
    values: &'static [&'static str],
    parse: fn(&str) -> Option<T>,
) -> impl Fn(&RawValue) -> Result<T, String> {
    move |raw| {
        let text = string(raw).ok();
        text.as_deref().and_then(parse).ok_or_else(|| format!("must be one of: {}", values.join(", ")))
    }
}

/// The most items an array filter of enum values may hold (`stage: [...]` of a list or a
/// subscription): four times the values, so that repeats are allowed but a hostile array is not.
pub const fn max_filter_items(values: &[&str]) -> usize {
    values.len() * 4
}

/// An array of names (see [`name`]); items that are not are reported at `field.N`. More than
/// `max_items` is one error on `field`, and the items are not looked at one by one: a hostile
/// array cannot make the answer huge.
pub fn string_array(
    raw: &RawValue,
    field: &str,
    max_items: usize,
    failure: &mut ValidationFailure,
) -> Option<Vec<String>> {
    let items = array_items(raw, field, failure)?;
    if items.len() > max_items {
        failure.field(field, format!("must have at most {max_items} items"));
        return None;
    }
    names_of(items, field, failure)
}

/// `solutionFamilies` of a create or an update: an array of names. One of more than 50 items is
/// still read item by item, up to [`MAX_NAMED`] items, so that the domain's rules report its
/// count together with each item's problems (empty, too long, repeated), every problem at once;
/// a longer one gets its count alone. When some items are not text, the others still get the
/// domain's rules here (the list as a whole is not read, so the domain never sees it).
pub fn solution_families(raw: &RawValue, failure: &mut ValidationFailure) -> Option<Vec<String>> {
    const FIELD: &str = "solutionFamilies";
    let limit = crate::domain::opportunity::MAX_SOLUTION_FAMILIES as usize;
    let items = array_items(raw, FIELD, failure)?;
    let count = items.len();
    let names = if count > MAX_NAMED {
        None
    } else {
        let read: Vec<Option<String>> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| name(item).map_err(|message| failure.field(format!("{FIELD}.{index}"), message)).ok())
            .collect();
        if read.iter().all(Option::is_some) {
            Some(read.into_iter().flatten().collect())
        } else {
            let texts = read.iter().enumerate().filter_map(|(index, text)| Some((index, text.as_deref()?)));
            crate::domain::opportunity::check_solution_family_items(texts, failure);
            None
        }
    };
    if names.is_none() && count > limit {
        // The domain's rules, which say the count of a list they read, do not run.
        failure.field(FIELD, format!("must have at most {limit} items"));
    }
    names
}

/// The items of a JSON array, or an error on `field`.
fn array_items<'a>(raw: &'a RawValue, field: &str, failure: &mut ValidationFailure) -> Option<Vec<&'a RawValue>> {
    serde_json::from_str(raw.get()).map_err(|_| failure.field(field, "must be an array of strings")).ok()
}

/// Each item as a name ([`name`]); those that are not are reported at `field.N`.
fn names_of(items: Vec<&RawValue>, field: &str, failure: &mut ValidationFailure) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.into_iter().enumerate() {
        match name(item) {
            Ok(text) => out.push(text),
            Err(message) => {
                failure.field(format!("{field}.{index}"), message);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_or_one_element_array() {
        assert!(FieldReader::new(Some(r#"{"a":1}"#)).failure.is_empty());
        assert!(FieldReader::new(Some(r#"[{"a":1}]"#)).failure.is_empty());
        for absent in [None, Some("null")] {
            let r = FieldReader::new(absent);
            assert!(r.is_object() && r.failure.is_empty(), "{absent:?} is params left out: {:?}", r.failure);
        }
        for bad in [Some("[]"), Some("[{},{}]"), Some("[1]"), Some("1"), Some("\"x\""), Some("[null]")] {
            let r = FieldReader::new(bad);
            assert!(!r.is_object(), "{bad:?}");
            assert_eq!(r.failure.form_errors, [NOT_AN_OBJECT]);
        }
    }

    #[test]
    fn a_member_name_that_is_no_text_is_one_form_error() {
        let mut r = FieldReader::new(Some(r#"{"title":"a","\ud800":1,"b\u00e9":2}"#));
        assert!(r.is_object());
        assert_eq!(r.required("title", string), Some("a".into()), "the fields sent are read");
        r.refuse_unknown(&["title"]);
        assert_eq!(r.failure.form_errors, [BAD_NAME, "unknown field \"bé\""]);
        assert!(r.failure.field_errors.is_empty());
        let r = FieldReader::new(Some(r#"[{"\udc00x":1,"\ud83d":2}]"#));
        assert_eq!(r.failure.form_errors, ["2 field names are not valid text (a lone surrogate escape)"]);
        // A surrogate pair is text.
        let mut r = FieldReader::new(Some(r#"{"\ud83d\ude00":1}"#));
        r.refuse_unknown(&[] as &[&str]);
        assert_eq!(r.failure.form_errors, ["unknown field \"😀\""]);
    }

    #[test]
    fn unknown_and_duplicate_fields() {
        let mut r = FieldReader::new(Some(r#"{"title":"a","pipeline_type":"x","title":"b"}"#));
        r.refuse_unknown(&["title"]);
        assert_eq!(r.failure.form_errors, ["duplicate field \"title\"", "unknown field \"pipeline_type\""]);
    }

    #[test]
    fn many_unknown_or_duplicate_fields_are_reported_briefly_and_fast() {
        let body =
            format!("{{{}}}", (0..100_000).map(|i| format!("\"f{}\":1", i % 50_000)).collect::<Vec<_>>().join(","));
        let mut r = FieldReader::new(Some(&body));
        r.refuse_unknown(&["title"]);
        assert_eq!(r.failure.form_errors.len(), 2 * (MAX_NAMED + 1));
        assert!(r.failure.form_errors.contains(&"and 49000 more duplicate fields".to_string()));
        assert!(r.failure.form_errors.contains(&"and 49000 more unknown fields".to_string()));
        let mut f = ValidationFailure::default();
        let items: Box<RawValue> = serde_json::from_str(&format!("[{}]", vec!["\"x\""; 100_000].join(","))).unwrap();
        assert_eq!(string_array(&items, "xs", 50, &mut f), None);
        assert_eq!(f.field_errors["xs"], ["must have at most 50 items"]);
    }

    #[test]
    fn required_optional_defaulted() {
        let mut r = FieldReader::new(Some(r#"{"a":null,"b":null,"c":null}"#));
        assert_eq!(r.required("a", string), None);
        assert_eq!(r.required("missing", string), None);
        assert_eq!(r.optional("b", string), None);
        assert_eq!(r.defaulted("c", boolean), None);
        assert_eq!(r.defaulted("absent", boolean), None);
        assert_eq!(r.failure.field_errors["a"], ["must not be null"]);
        assert_eq!(r.failure.field_errors["missing"], ["is required"]);
        assert_eq!(r.failure.field_errors["c"], ["must not be null"]);
        assert!(!r.failure.has_field("b") && !r.failure.has_field("absent"));
    }

    #[test]
    fn scalar_parsers() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        assert_eq!(
            uuid(&raw(r#""550E8400-E29B-41D4-A716-446655440000""#)).unwrap().to_string(),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert!(uuid(&raw(r#""550e8400e29b41d4a716446655440000""#)).is_err());
        assert!(uuid(&raw("42")).is_err());
        assert_eq!(integer(&raw("50")), Ok(50));
        assert_eq!(integer(&raw("50.0")), Ok(50));
        for zero in ["0", "0.0", "-0", "-0.0", "0e2", "0.00e-3"] {
            assert_eq!(integer(&raw(zero)), Ok(0), "{zero} is the integer 0");
        }
        assert_eq!(integer(&raw("1e2")), Ok(100));
        assert_eq!(integer(&raw("100.000")), Ok(100));
        assert!(integer(&raw("50.5")).is_err());
        assert!(integer(&raw("\"50\"")).is_err());
        assert_eq!(integer(&raw("1e30")), Ok(i64::MAX));
        assert_eq!(string(&raw(r#""a\u0000b""#)), Err("must not contain NUL characters".into()));
        assert_eq!(string(&raw(r#""\ud800""#)), Err(LONE_SURROGATE.into()));
        assert_eq!(string(&raw("7")), Err("must be a string".into()));
        assert_eq!(name(&raw(r#""  x  ""#)), Ok("x".into()));
        assert_eq!(name(&raw(r#""\u200b\ufeff\u202e""#)), Ok(String::new()));
        assert_eq!(name(&raw(r#""\u200b A\u00a0""#)), Ok("A".into()));
        assert_eq!(name(&raw(r#""\tA\n""#)), Ok("A".into()), "white space at the ends is trimmed");
        for bad in [r#""A\tB""#, r#""A\nB""#, r#""A\u001bB""#, r#""A\u0085B""#, r#""A\u007f""#] {
            assert_eq!(name(&raw(bad)), Err(NAME_CONTROL.into()), "{bad}");
        }
        assert_eq!(name(&raw(r#""a\u0000b""#)), Err("must not contain NUL characters".into()));
        assert_eq!(text(&raw(r#""line 1\r\n\tline 2""#)), Ok("line 1\r\n\tline 2".into()));
        for bad in [r#""A\u0007""#, r#""A\u001b[31m""#, r#""A\u0085""#, r#""\u007f""#] {
            assert_eq!(text(&raw(bad)), Err(TEXT_CONTROL.into()), "{bad}");
        }
        let stage = one_of(&["lead", "won"], |s| (s == "lead").then_some(1));
        assert_eq!(stage(&raw("\"lead\"")), Ok(1));
        assert_eq!(stage(&raw("\"LEAD\"")), Err("must be one of: lead, won".into()));
        let mut f = ValidationFailure::default();
        assert_eq!(string_array(&raw(r#"[" a ", 1]"#), "xs", 5, &mut f), None);
        assert_eq!(f.field_errors["xs.1"], ["must be a string"]);
        assert_eq!(string_array(&raw(r#"["a"]"#), "xs", 5, &mut f), Some(vec!["a".into()]));
    }
}
