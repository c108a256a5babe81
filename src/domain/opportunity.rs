//! What an opportunity is: its enums, exact money, instants, the validated create input and the
//! stored record with the answer shape of CONTRACT.md §5.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::error::ValidationFailure;

/// A closed set of wire values, for code generic over the enums.
pub trait WireValues {
    /// Every wire value.
    const VALUES: &'static [&'static str];
}

/// Declares a closed set of lowercase wire values with parsing and listing.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every wire value, in the seed's order.
            pub const VALUES: &'static [&'static str] = &[$($text),+];

            /// The wire value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses an exact wire value.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl WireValues for $name {
            const VALUES: &'static [&'static str] = $name::VALUES;
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": Self::VALUES})
            }
        }
    };
}

string_enum!(
    /// Where an opportunity stands in the pipeline.
    Stage { Lead => "lead", Qualified => "qualified", Survey => "survey", Proposal => "proposal",
            Negotiation => "negotiation", Won => "won", Lost => "lost" }
);
string_enum!(
    /// The kind of work.
    PipelineType { NewConstruction => "new_construction", Retrofit => "retrofit",
                   ServiceAgreement => "service_agreement", Expansion => "expansion", Other => "other" }
);
string_enum!(
    /// How the opportunity came in.
    Source { Referral => "referral", Website => "website", ColdCall => "cold_call",
             ExistingCustomer => "existing_customer", Partner => "partner", TradeShow => "trade_show",
             PortalRequest => "portal_request", Other => "other" }
);
string_enum!(
    /// How urgent it is.
    Priority { Low => "low", Medium => "medium", High => "high", Urgent => "urgent" }
);
string_enum!(
    /// Why a lost opportunity was lost.
    LostReasonCategory { Price => "price", Timing => "timing", Competitor => "competitor",
                         ScopeMismatch => "scope_mismatch", NoDecision => "no_decision",
                         Relationship => "relationship", Other => "other" }
);
string_enum!(
    /// Who may see the opportunity.
    VisibilityMode { Global => "global", WorkspaceLocal => "workspace_local", Shared => "shared" }
);

impl Stage {
    /// The stages of an opportunity that is not decided.
    pub const OPEN: &'static [&'static str] = &["lead", "qualified", "survey", "proposal", "negotiation"];

    /// Whether the opportunity is decided (won or lost).
    pub fn is_closed(self) -> bool {
        matches!(self, Stage::Won | Stage::Lost)
    }
}

/// The largest estimated value, 1e12.
pub const MAX_ESTIMATED_VALUE_CENTS: i64 = 100_000_000_000_000;
/// The most characters of a free-text field other than `title`.
pub const MAX_TEXT_CHARS: u64 = 10_000;
/// The most characters of `title`, after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// The most items of `solutionFamilies`.
pub const MAX_SOLUTION_FAMILIES: u64 = 50;
/// The most characters of one solution family, after trimming.
pub const MAX_SOLUTION_FAMILY_CHARS: usize = 100;

/// An amount of money held exactly, in cents: never a binary float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    cents: i64,
}

impl Money {
    /// Builds from a whole number of cents.
    pub fn from_cents(cents: i64) -> Self {
        Self { cents }
    }

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.cents
    }

    /// Parses a JSON number's text exactly and applies the rules of §5: 0 ≤ v ≤ 1e12 and at most
    /// two decimal places. The messages name the rule that failed.
    pub fn parse_json_number(text: &str) -> Result<Self, &'static str> {
        let number = JsonDecimal::parse(text).ok_or("must be a number")?;
        if number.is_zero() {
            return Ok(Self { cents: 0 });
        }
        if number.negative {
            return Err("must be between 0 and 1000000000000");
        }
        if number.exponent < -2 {
            return Err("must have at most 2 decimal places");
        }
        match number.scaled_to_i64(2) {
            Some(cents) if cents <= MAX_ESTIMATED_VALUE_CENTS => Ok(Self { cents }),
            _ => Err("must be between 0 and 1000000000000"),
        }
    }
}

/// A JSON number read exactly from its text: `digits × 10^exponent`, without trailing zeros in
/// `digits`. Exponents of any size are held without computing the value, so `1e999999999`
/// costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonDecimal {
    /// Whether a minus sign was written.
    pub negative: bool,
    /// Significant decimal digits, no leading or trailing zeros; empty for zero.
    pub digits: Vec<u8>,
    /// The power of ten the digits are scaled by.
    pub exponent: i64,
}

impl JsonDecimal {
    /// Parses text in JSON's number grammar; anything else (strings, `NaN`, `true`) is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &bytes[int_start..i];
        if int_part.is_empty() || (int_part.len() > 1 && int_part[0] == b'0') {
            return None;
        }
        let mut frac_part: &[u8] = &[];
        if i < bytes.len() && bytes[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &bytes[start..i];
            if frac_part.is_empty() {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let exp_negative = match bytes.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Saturate: an exponent beyond ±10^15 is out of every range here anyway.
                exponent = (exponent * 10 + i64::from(bytes[i] - b'0')).min(1_000_000_000_000_000);
                i += 1;
            }
            if i == start {
                return None;
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        if i != bytes.len() {
            return None;
        }
        let mut digits: Vec<u8> = int_part.iter().chain(frac_part).map(|d| d - b'0').collect();
        exponent -= frac_part.len() as i64;
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            // Zero is zero however written (`0`, `0.0`, `0e5`, `-0`): one representation, so
            // that scaling it never fails on an exponent that only the writing gave it.
            exponent = 0;
        }
        Some(Self { negative, digits, exponent })
    }

    /// Whether the value is zero (`-0` included).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value is a whole number.
    pub fn is_integer(&self) -> bool {
        self.is_zero() || self.exponent >= 0
    }

    /// `|value| × 10^places` as an i64, when that is a whole number that fits (up to
    /// `i64::MAX` exactly).
    pub fn scaled_to_i64(&self, places: i64) -> Option<i64> {
        let exponent = self.exponent.checked_add(places)?;
        if exponent < 0 || self.digits.len() as i64 + exponent > 19 {
            return None;
        }
        let mut value: i64 = 0;
        for &d in &self.digits {
            value = value.checked_mul(10)?.checked_add(i64::from(d))?;
        }
        value.checked_mul(10_i64.checked_pow(exponent as u32)?)
    }
}

impl Serialize for Money {
    /// A JSON number equal to the input: whole amounts as integers, others as the nearest f64,
    /// whose shortest representation is the decimal itself (at most 15 significant digits).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.cents % 100 == 0 {
            s.serialize_i64(self.cents / 100)
        } else {
            s.serialize_f64(self.cents as f64 / 100.0)
        }
    }
}

/// A number of at most two decimal places, 0 ≤ v ≤ 1e12 ([`Money::parse_json_number`]).
impl schemars::JsonSchema for Money {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": MAX_ESTIMATED_VALUE_CENTS / 100,
            "multipleOf": 0.01,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

/// The message for a date-time that is not RFC 3339 with an offset.
pub const INSTANT_FORM: &str = "must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T09:30:00+02:00";
/// The message for second 60.
pub const LEAP_SECOND: &str =
    "must not have second 60: leap seconds are not accepted (use :59, or the first second of the next minute)";

/// Whether `text` has the exact shape of RFC 3339's `date-time` (§5.6):
/// `YYYY-MM-DDTHH:MM:SS[.F…](Z|+HH:MM|-HH:MM)`, ASCII digits only, `T`/`Z` in either case. chrono's
/// parser is more lenient (a space for the `T`, other offset forms); ranges are left to it.
fn has_rfc3339_shape(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let head = digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b"Tt")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] => b.len() == i + 6 && digits(i + 1..i + 3) && at(i + 3, b":") && digits(i + 4..i + 6),
        _ => false,
    }
}

/// Parses an RFC 3339 date-time that carries an offset, as an instant truncated to the
/// microsecond. Date-only and offset-less strings, any other shape (a space for the `T`, an
/// offset written with U+2212 `−`, `+0200`) and second 60 (a leap second, which neither backend
/// stores alike) are refused.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, &'static str> {
    if !has_rfc3339_shape(text) {
        return Err(INSTANT_FORM);
    }
    if &text[17..19] == "60" {
        return Err(LEAP_SECOND);
    }
    let instant = DateTime::parse_from_rfc3339(text).map_err(|_| INSTANT_FORM)?.with_timezone(&Utc);
    Ok(instant.trunc_subsecs(6))
}

/// Checks that an instant lies in the years 1970–2200 (UTC).
pub fn validate_instant_range(instant: &DateTime<Utc>) -> Result<(), ValidationError> {
    if (1970..=2200).contains(&instant.year()) {
        Ok(())
    } else {
        Err(ValidationError::new("range").with_message("must be between the years 1970 and 2200".into()))
    }
}

/// Formats an instant as §5 returns it: UTC, `Z`, fractional seconds only when not zero and
/// without trailing zeros (`2026-12-01T07:30:00Z`, `2026-12-01T07:30:00.125Z`).
pub fn format_instant(instant: &DateTime<Utc>) -> String {
    // chrono's RFC 3339 writer (no format string to interpret on every call), then the
    // fraction's trailing zeros and, when nothing is left of it, the dot are cut.
    let mut text = instant.to_rfc3339_opts(SecondsFormat::Micros, true);
    text.pop(); // the Z
    let kept = text.trim_end_matches('0').trim_end_matches('.').len();
    text.truncate(kept);
    text.push('Z');
    text
}

fn serialize_instant<S: Serializer>(instant: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_instant(instant))
}

fn serialize_optional_instant<S: Serializer>(instant: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match instant {
        Some(instant) => serialize_instant(instant, s),
        None => s.serialize_none(),
    }
}

/// The input of `opportunity.create` once every field has the right type: the rules that need
/// no other field are declared here and checked by `validator`; [`CreateOpportunity::check`]
/// adds the rules across fields. It is also the wire type of the create's params: their schema
/// in the API description is derived from it (`schemars` reads the `validate` rules too).
#[derive(Debug, Clone, Default, PartialEq, Validate, schemars::JsonSchema)]
#[schemars(
    rename = "CreateOpportunityParams",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Input of `opportunity.create` (the seed's field table plus `idempotencyKey`). Rules:\n\n* Unknown fields are refused, each named in `formErrors`.\n* Fields with a default (`stage`, `budgetConfirmed`, `visibilityMode`) take it when absent; `null` is refused for them and for the other required fields.\n* For optional fields, absent and `null` mean the same: not set.\n* UUIDs are accepted in any case and returned lowercase, hyphenated.\n* `probability`: with `stage` \"won\" only 100, with `stage` \"lost\" only 0 (or not set).\n* `lostReasonCategory` only with `stage` \"lost\".\n* `ownerUserId` defaults to the caller (`sub`); `workspaceId` is resolved as described in the API overview.\n* `visibilityMode: \"global\"` needs the `opportunity:global` scope.",
    transform = crate::schema::rules_across_fields,
    example = crate::schema::create_example(),
)]
pub struct CreateOpportunity {
    /// ID of the associated customer.
    #[schemars(with = "crate::schema::Uuid")]
    pub customer_id: Option<Uuid>,
    /// ID of the associated primary contact.
    pub primary_contact_id: Option<Uuid>,
    /// ID of the associated site.
    pub site_id: Option<Uuid>,
    /// Title; trimmed at both ends of white space (Unicode `White_Space`) and of characters that show nothing (Unicode `Default_Ignorable_Code_Point`: U+200B ZERO WIDTH SPACE, U+FEFF, bidirectional controls such as U+202E, …), then 1–200 characters, counted as Unicode scalar values (code points). A title of nothing visible is empty; control characters (Unicode `Cc`: tab, line feed, escape, U+0080–U+009F, …) are refused anywhere but in what trimming cuts. The pattern says the same, except that it takes the few default-ignorable characters beyond U+FFFF for visible ones; `maxLength` counts the text as sent, so it is stricter than the service, which counts after trimming.
    #[validate(custom(function = "validate_title"))]
    #[schemars(required, schema_with = "crate::schema::title")]
    pub title: Option<String>,
    /// Stage; `lead` when not given.
    #[schemars(with = "Stage", default = "default_stage")]
    pub stage: Option<Stage>,
    /// Pipeline type.
    #[schemars(with = "PipelineType")]
    pub pipeline_type: Option<PipelineType>,
    /// Source.
    pub source: Option<Source>,
    /// Estimated value; finite, 0 ≤ v ≤ 1e12, at most 2 decimal places. Stored exactly (no binary float) and returned equal to the input. Note: validators that check `multipleOf: 0.01` with binary floats may wrongly refuse values such as 0.07; the server counts decimal places exactly.
    pub estimated_value: Option<Money>,
    /// Expected close date.
    #[validate(custom(function = "validate_instant_range"))]
    #[schemars(with = "Option<crate::schema::DateTimeInput>")]
    pub expected_close_date: Option<DateTime<Utc>>,
    /// Probability in percent; with `stage` "won" only 100, with "lost" only 0.
    #[validate(range(min = 0, max = 100, message = "must be between 0 and 100"))]
    #[schemars(with = "Option<u8>")]
    pub probability: Option<i64>,
    /// Solution families; each item follows the rules of `title` (trimmed of white space and of characters that show nothing, no control characters, at least one visible character), then 1–100 characters; no duplicates after trimming (`uniqueItems` compares the items as sent).
    #[validate(length(max = MAX_SOLUTION_FAMILIES, message = "must have at most 50 items"))]
    #[schemars(schema_with = "crate::schema::sent_names", default, skip_serializing_if = "Option::is_none")]
    pub solution_families: Option<Vec<String>>,
    /// Scope summary; at most 10,000 characters. Tab, line feed and carriage return are the only control characters allowed.
    #[validate(length(max = MAX_TEXT_CHARS, message = "must be at most 10000 characters"))]
    #[schemars(schema_with = "crate::schema::optional_text", default, skip_serializing_if = "Option::is_none")]
    pub scope_summary: Option<String>,
    /// Competitor notes; at most 10,000 characters. Tab, line feed and carriage return are the only control characters allowed.
    #[validate(length(max = MAX_TEXT_CHARS, message = "must be at most 10000 characters"))]
    #[schemars(schema_with = "crate::schema::optional_text", default, skip_serializing_if = "Option::is_none")]
    pub competitor_notes: Option<String>,
    /// Win loss reason; at most 10,000 characters. Tab, line feed and carriage return are the only control characters allowed.
    #[validate(length(max = MAX_TEXT_CHARS, message = "must be at most 10000 characters"))]
    #[schemars(schema_with = "crate::schema::optional_text", default, skip_serializing_if = "Option::is_none")]
    pub win_loss_reason: Option<String>,
    /// Next step description; at most 10,000 characters. Tab, line feed and carriage return are the only control characters allowed.
    #[validate(length(max = MAX_TEXT_CHARS, message = "must be at most 10000 characters"))]
    #[schemars(schema_with = "crate::schema::optional_text", default, skip_serializing_if = "Option::is_none")]
    pub next_step_description: Option<String>,
    /// Next step date.
    #[validate(custom(function = "validate_instant_range"))]
    #[schemars(with = "Option<crate::schema::DateTimeInput>")]
    pub next_step_date: Option<DateTime<Utc>>,
    /// Bid due date.
    #[validate(custom(function = "validate_instant_range"))]
    #[schemars(with = "Option<crate::schema::DateTimeInput>")]
    pub bid_due_date: Option<DateTime<Utc>>,
    /// Whether the budget is confirmed; `false` when not given.
    #[schemars(with = "bool", default = "default_budget_confirmed")]
    pub budget_confirmed: Option<bool>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Lost reason category; only with `stage` "lost".
    pub lost_reason_category: Option<LostReasonCategory>,
    /// Technical requirements; at most 10,000 characters. Tab, line feed and carriage return are the only control characters allowed.
    #[validate(length(max = MAX_TEXT_CHARS, message = "must be at most 10000 characters"))]
    #[schemars(schema_with = "crate::schema::optional_text", default, skip_serializing_if = "Option::is_none")]
    pub technical_requirements: Option<String>,
    /// ID of the associated owner user; defaults to the caller (`sub`).
    pub owner_user_id: Option<Uuid>,
    /// ID of the workspace; else the `X-Workspace-Id` header; else the token's only workspace. Must be one of the token's `workspaces`.
    pub workspace_id: Option<Uuid>,
    /// Visibility mode, `workspace_local` when not given; `global` needs the `opportunity:global` scope.
    #[schemars(with = "VisibilityMode", default = "default_visibility_mode")]
    pub visibility_mode: Option<VisibilityMode>,
    /// Idempotency key (the only field beyond the seed's table), for transports without headers such as WebSocket. Same as the `Idempotency-Key` header; both set and different is a field error. Not stored with the opportunity, and not part of the request fingerprint.
    #[validate(
        length(min = 1, max = 255, message = "must be between 1 and 255 characters"),
        custom(function = "validate_printable_ascii")
    )]
    #[schemars(
        schema_with = "crate::schema::optional_idempotency_key",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<String>,
}

/// The stage of a create that names none.
pub fn default_stage() -> Stage {
    Stage::Lead
}

/// The visibility of a create that names none.
pub fn default_visibility_mode() -> VisibilityMode {
    VisibilityMode::WorkspaceLocal
}

/// `budgetConfirmed` of a create that names none.
pub fn default_budget_confirmed() -> bool {
    false
}

/// Whether `c` is a Unicode `Default_Ignorable_Code_Point` (Unicode 16, DerivedCoreProperties):
/// zero-width spaces and joiners, bidirectional controls, the byte order mark, variation
/// selectors and the like, which render as nothing.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether `c` shows nothing at the ends of a name: Unicode white space (`White_Space`, which
/// covers tab, line feed and the no-break spaces) or a default-ignorable code point.
pub fn is_blank(c: char) -> bool {
    c.is_whitespace() || is_default_ignorable(c)
}

/// A name (`title`, a solution family) with what shows nothing cut from both ends: white space
/// and invisible characters such as U+200B ZERO WIDTH SPACE or U+FEFF. Inside it they stay (a
/// joiner is part of some scripts and emoji).
pub fn trim_blank(text: &str) -> &str {
    text.trim_matches(is_blank)
}

/// The message for a control character in a name.
pub const NAME_CONTROL: &str = "must not contain control characters (such as tab or line feed)";
/// The message for a control character in a long free text.
pub const TEXT_CONTROL: &str = "must not contain control characters other than tab, line feed and carriage return";

fn validate_title(title: &str) -> Result<(), ValidationError> {
    let chars = title.chars().count();
    if chars == 0 {
        Err(ValidationError::new("length").with_message("must not be empty".into()))
    } else if chars > MAX_TITLE_CHARS {
        Err(ValidationError::new("length").with_message("must be at most 200 characters".into()))
    } else {
        Ok(())
    }
}

/// Checks that a text is printable ASCII (space to tilde), as idempotency keys must be.
pub fn validate_printable_ascii(text: &str) -> Result<(), ValidationError> {
    if text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(ValidationError::new("ascii").with_message("must contain only printable ASCII characters".into()))
    }
}

/// Converts a snake_case Rust field name to the camelCase wire name.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks solution families item by item: each trimmed 1–100 characters, no duplicates. Errors
/// go to `solutionFamilies.N`.
pub fn check_solution_families(items: &[String], failure: &mut ValidationFailure) {
    check_solution_family_items(items.iter().map(String::as_str).enumerate(), failure);
}

/// [`check_solution_families`] on some items of a list, each with its index in the list: those
/// that are text when others are not (the params report the others), so that every problem
/// of the list comes at once.
pub fn check_solution_family_items<'a>(
    items: impl IntoIterator<Item = (usize, &'a str)>,
    failure: &mut ValidationFailure,
) {
    let mut first_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, item) in items {
        let field = format!("solutionFamilies.{index}");
        let chars = item.chars().count();
        if chars == 0 {
            failure.field(field, "must not be empty");
        } else if chars > MAX_SOLUTION_FAMILY_CHARS {
            failure.field(field, "must be at most 100 characters");
        } else if let Some(first) = first_of.get(item) {
            failure.field(field, format!("must not repeat item {first}"));
        } else {
            first_of.insert(item, index);
        }
    }
}

impl CreateOpportunity {
    /// Runs every rule of §5 that the types do not already hold, adding to `failure` the
    /// problems of fields that have none yet (a field with a type error is not checked again).
    pub fn check(&self, failure: &mut ValidationFailure) {
        self.check_fields(failure);
        check_across_fields(
            self.stage.unwrap_or_else(default_stage),
            self.probability,
            self.lost_reason_category,
            failure,
        );
    }

    /// The rules of single fields (§5), for the fields that are set.
    pub fn check_fields(&self, failure: &mut ValidationFailure) {
        if let Err(errors) = self.validate() {
            let mut fields: Vec<_> = errors.field_errors().into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, list) in fields {
                let name = camel_case(&name);
                if failure.has_field(&name) {
                    continue;
                }
                for error in list {
                    let message = error.message.as_ref().map_or_else(|| error.code.to_string(), |m| m.to_string());
                    failure.field(name.clone(), message);
                }
            }
        }
        if let Some(items) = &self.solution_families {
            check_solution_families(items, failure);
        }
    }
}

/// Rules across fields, on the opportunity as it will be stored (after a create's defaults or
/// an update's change). Each is reported on the field it constrains (so a form can point at it)
/// and in `formErrors` (as §4 asks for rules across fields).
pub fn check_across_fields(
    stage: Stage,
    probability: Option<i64>,
    lost_reason_category: Option<LostReasonCategory>,
    failure: &mut ValidationFailure,
) {
    if let Some(probability) = probability
        && !failure.has_field("probability")
    {
        let rule = match stage {
            Stage::Won if probability != 100 => Some("must be 100 when stage is \"won\""),
            Stage::Lost if probability != 0 => Some("must be 0 when stage is \"lost\""),
            _ => None,
        };
        if let Some(rule) = rule {
            failure.field("probability", rule);
            failure.form(format!("probability {rule}"));
        }
    }
    if lost_reason_category.is_some() && stage != Stage::Lost && !failure.has_field("stage") {
        let rule = "is only allowed when stage is \"lost\"";
        failure.field("lostReasonCategory", rule);
        failure.form(format!("lostReasonCategory {rule}"));
    }
}

/// An opportunity as stored, and as `opportunity.create` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    deny_unknown_fields,
    description = "A stored opportunity: every input field (unset optionals as `null`, an unset `solutionFamilies` as `[]`) plus server-set fields. All properties are always present. `idempotencyKey` is not part of it.",
    extend("allOf" = [
        {"if": {"properties": {"stage": {"const": "won"}}},
         "then": {"properties": {"isClosed": {"const": true}, "isWon": {"const": true}}}},
        {"if": {"properties": {"stage": {"const": "lost"}}},
         "then": {"properties": {"isClosed": {"const": true}, "isWon": {"const": false}}}},
        {"if": {"properties": {"stage": {"enum": Stage::OPEN}}},
         "then": {"properties": {"isClosed": {"const": false}, "isWon": {"const": false}}}},
    ])
)]
pub struct Opportunity {
    /// UUID v7, lowercase.
    #[schemars(schema_with = "crate::schema::opportunity_id")]
    pub id: Uuid,
    /// The resolved workspace.
    #[schemars(with = "crate::schema::UuidLower")]
    pub workspace_id: Uuid,
    #[schemars(with = "crate::schema::UuidLower")]
    pub customer_id: Uuid,
    #[schemars(with = "Option<crate::schema::UuidLower>")]
    pub primary_contact_id: Option<Uuid>,
    #[schemars(with = "Option<crate::schema::UuidLower>")]
    pub site_id: Option<Uuid>,
    /// The trimmed title.
    #[schemars(length(min = 1, max = MAX_TITLE_CHARS))]
    pub title: String,
    pub stage: Stage,
    pub pipeline_type: PipelineType,
    pub source: Option<Source>,
    #[schemars(schema_with = "crate::schema::stored_money")]
    pub estimated_value: Option<Money>,
    #[serde(serialize_with = "serialize_optional_instant")]
    #[schemars(with = "Option<crate::schema::DateTimeUtc>")]
    pub expected_close_date: Option<DateTime<Utc>>,
    #[schemars(range(min = 0, max = 100))]
    pub probability: Option<i16>,
    /// Always an array; `[]` when not set.
    #[schemars(schema_with = "crate::schema::stored_names")]
    pub solution_families: Vec<String>,
    #[schemars(length(max = MAX_TEXT_CHARS))]
    pub scope_summary: Option<String>,
    #[schemars(length(max = MAX_TEXT_CHARS))]
    pub competitor_notes: Option<String>,
    #[schemars(length(max = MAX_TEXT_CHARS))]
    pub win_loss_reason: Option<String>,
    #[schemars(length(max = MAX_TEXT_CHARS))]
    pub next_step_description: Option<String>,
    #[serde(serialize_with = "serialize_optional_instant")]
    #[schemars(with = "Option<crate::schema::DateTimeUtc>")]
    pub next_step_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serialize_optional_instant")]
    #[schemars(with = "Option<crate::schema::DateTimeUtc>")]
    pub bid_due_date: Option<DateTime<Utc>>,
    pub budget_confirmed: bool,
    pub priority: Option<Priority>,
    pub lost_reason_category: Option<LostReasonCategory>,
    #[schemars(length(max = MAX_TEXT_CHARS))]
    pub technical_requirements: Option<String>,
    /// Owner; the caller (`sub`) when the create named none.
    #[schemars(with = "crate::schema::UuidLower")]
    pub owner_user_id: Uuid,
    pub visibility_mode: VisibilityMode,
    /// The caller (`sub`).
    #[schemars(with = "crate::schema::UuidLower")]
    pub created_by: Uuid,
    /// Creation instant; equal to `updatedAt` on create.
    #[serde(serialize_with = "serialize_instant")]
    #[schemars(with = "crate::schema::DateTimeUtc")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_instant")]
    #[schemars(with = "crate::schema::DateTimeUtc")]
    pub updated_at: DateTime<Utc>,
    /// Row version; 1 on create.
    #[schemars(range(min = 1))]
    pub version: i32,
    /// `true` when `stage` is "won" or "lost".
    pub is_closed: bool,
    /// `true` when `stage` is "won".
    pub is_won: bool,
    /// When the opportunity was archived (`opportunity.archive`); `null` while it is not.
    #[serde(serialize_with = "serialize_optional_instant")]
    #[schemars(with = "Option<crate::schema::DateTimeUtc>")]
    pub archived_at: Option<DateTime<Utc>>,
}

impl Opportunity {
    /// A new opportunity (version 1) from a checked input. `workspace_id` is the resolved
    /// workspace and `caller` the token's subject; the required fields must be present, which
    /// [`CreateOpportunity::check`] guarantees once it found nothing.
    pub fn new(input: CreateOpportunity, workspace_id: Uuid, caller: Uuid, now: DateTime<Utc>) -> Option<Self> {
        let now = now.trunc_subsecs(6);
        let stage = input.stage.unwrap_or_else(default_stage);
        Some(Self {
            id: Uuid::now_v7(),
            workspace_id,
            customer_id: input.customer_id?,
            primary_contact_id: input.primary_contact_id,
            site_id: input.site_id,
            title: input.title?,
            stage,
            pipeline_type: input.pipeline_type?,
            source: input.source,
            estimated_value: input.estimated_value,
            expected_close_date: input.expected_close_date,
            probability: input.probability.map(|p| p as i16),
            solution_families: input.solution_families.unwrap_or_default(),
            scope_summary: input.scope_summary,
            competitor_notes: input.competitor_notes,
            win_loss_reason: input.win_loss_reason,
            next_step_description: input.next_step_description,
            next_step_date: input.next_step_date,
            bid_due_date: input.bid_due_date,
            budget_confirmed: input.budget_confirmed.unwrap_or_else(default_budget_confirmed),
            priority: input.priority,
            lost_reason_category: input.lost_reason_category,
            technical_requirements: input.technical_requirements,
            owner_user_id: input.owner_user_id.unwrap_or(caller),
            visibility_mode: input.visibility_mode.unwrap_or_else(default_visibility_mode),
            created_by: caller,
            created_at: now,
            updated_at: now,
            version: 1,
            is_closed: stage.is_closed(),
            is_won: stage == Stage::Won,
            archived_at: None,
        })
    }
}

/// What `opportunity.update` asks to change. For each field: `None` leaves it as it is; for an
/// optional field `Some(None)` clears it and `Some(Some(v))` sets it; a required field is only
/// ever set. `solutionFamilies: null` clears the list to `[]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpportunityPatch {
    pub customer_id: Option<Uuid>,
    pub primary_contact_id: Option<Option<Uuid>>,
    pub site_id: Option<Option<Uuid>>,
    pub title: Option<String>,
    pub stage: Option<Stage>,
    pub pipeline_type: Option<PipelineType>,
    pub source: Option<Option<Source>>,
    pub estimated_value: Option<Option<Money>>,
    pub expected_close_date: Option<Option<DateTime<Utc>>>,
    pub probability: Option<Option<i16>>,
    pub solution_families: Option<Vec<String>>,
    pub scope_summary: Option<Option<String>>,
    pub competitor_notes: Option<Option<String>>,
    pub win_loss_reason: Option<Option<String>>,
    pub next_step_description: Option<Option<String>>,
    pub next_step_date: Option<Option<DateTime<Utc>>>,
    pub bid_due_date: Option<Option<DateTime<Utc>>>,
    pub budget_confirmed: Option<bool>,
    pub priority: Option<Option<Priority>>,
    pub lost_reason_category: Option<Option<LostReasonCategory>>,
    pub technical_requirements: Option<Option<String>>,
    /// `ownerUserId: null` gives the opportunity back to its default owner, the caller.
    pub owner_user_id: Option<Uuid>,
    pub visibility_mode: Option<VisibilityMode>,
}

impl OpportunityPatch {
    /// The opportunity as it would be after the change, with §8's two conveniences: a change of
    /// `stage` to won or lost that names no `probability` sets it to 100 or 0, and a change away
    /// from lost that names no `lostReasonCategory` clears it. `version`, `updatedAt` and
    /// `archivedAt` are left as they are.
    pub fn apply(&self, current: &Opportunity) -> Opportunity {
        fn set<T: Clone>(field: &mut T, change: &Option<T>) {
            if let Some(value) = change {
                *field = value.clone();
            }
        }
        let mut next = current.clone();
        set(&mut next.customer_id, &self.customer_id);
        set(&mut next.primary_contact_id, &self.primary_contact_id);
        set(&mut next.site_id, &self.site_id);
        set(&mut next.title, &self.title);
        set(&mut next.stage, &self.stage);
        set(&mut next.pipeline_type, &self.pipeline_type);
        set(&mut next.source, &self.source);
        set(&mut next.estimated_value, &self.estimated_value);
        set(&mut next.expected_close_date, &self.expected_close_date);
        set(&mut next.probability, &self.probability);
        set(&mut next.solution_families, &self.solution_families);
        set(&mut next.scope_summary, &self.scope_summary);
        set(&mut next.competitor_notes, &self.competitor_notes);
        set(&mut next.win_loss_reason, &self.win_loss_reason);
        set(&mut next.next_step_description, &self.next_step_description);
        set(&mut next.next_step_date, &self.next_step_date);
        set(&mut next.bid_due_date, &self.bid_due_date);
        set(&mut next.budget_confirmed, &self.budget_confirmed);
        set(&mut next.priority, &self.priority);
        set(&mut next.lost_reason_category, &self.lost_reason_category);
        set(&mut next.technical_requirements, &self.technical_requirements);
        set(&mut next.owner_user_id, &self.owner_user_id);
        set(&mut next.visibility_mode, &self.visibility_mode);
        if next.stage != current.stage {
            if self.probability.is_none() {
                match next.stage {
                    Stage::Won => next.probability = Some(100),
                    Stage::Lost => next.probability = Some(0),
                    _ => {}
                }
            }
            if current.stage == Stage::Lost && self.lost_reason_category.is_none() {
                next.lost_reason_category = None;
            }
        }
        next.is_closed = next.stage.is_closed();
        next.is_won = next.stage == Stage::Won;
        next
    }

    /// The rules across fields of §5, on the opportunity after the change.
    pub fn check_result(next: &Opportunity, failure: &mut ValidationFailure) {
        check_across_fields(next.stage, next.probability.map(i64::from), next.lost_reason_category, failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_and_bounded() {
        assert_eq!(Money::parse_json_number("125000.5").unwrap().cents(), 12_500_050);
        assert_eq!(Money::parse_json_number("0").unwrap().cents(), 0);
        assert_eq!(Money::parse_json_number("-0").unwrap().cents(), 0);
        assert_eq!(Money::parse_json_number("1e12").unwrap().cents(), MAX_ESTIMATED_VALUE_CENTS);
        assert_eq!(Money::parse_json_number("1.10").unwrap().cents(), 110);
        assert_eq!(Money::parse_json_number("0.07").unwrap().cents(), 7);
        assert_eq!(Money::parse_json_number("1.005"), Err("must have at most 2 decimal places"));
        assert_eq!(Money::parse_json_number("-0.01"), Err("must be between 0 and 1000000000000"));
        assert_eq!(Money::parse_json_number("1000000000000.01"), Err("must be between 0 and 1000000000000"));
        assert_eq!(Money::parse_json_number("1e400"), Err("must be between 0 and 1000000000000"));
        assert_eq!(Money::parse_json_number("\"12\""), Err("must be a number"));
        assert_eq!(Money::parse_json_number("true"), Err("must be a number"));
    }

    #[test]
    fn json_decimals_are_read_exactly() {
        let d = JsonDecimal::parse("125000.50").unwrap();
        assert_eq!((d.digits.len(), d.exponent), (7, -1));
        assert!(JsonDecimal::parse("-0.0").unwrap().is_zero());
        for zero in ["0", "-0", "0.0", "-0.0", "0.000", "0e5", "0E-7", "0.0e400", "-0e-400"] {
            let d = JsonDecimal::parse(zero).unwrap();
            assert!(d.is_zero() && d.is_integer(), "{zero}");
            assert_eq!((d.exponent, d.scaled_to_i64(0), d.scaled_to_i64(2)), (0, Some(0), Some(0)), "{zero}");
        }
        assert!(JsonDecimal::parse("1e999999999999999999999").unwrap().scaled_to_i64(0).is_none());
        assert!(!JsonDecimal::parse("1e-999999999999").unwrap().is_integer());
        assert!(JsonDecimal::parse("50.0").unwrap().is_integer());
        assert_eq!(JsonDecimal::parse("5E+1").unwrap().scaled_to_i64(0), Some(50));
        // Exactly up to i64::MAX, not a digit short of it.
        for (text, fits) in [
            ("9223372036854775807", Some(i64::MAX)),
            ("1e18", Some(1_000_000_000_000_000_000)),
            ("9.223372036854775807e18", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("1e19", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(JsonDecimal::parse(text).unwrap().scaled_to_i64(0), fits, "{text}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "NaN", "\"1\"", "1 ", "0x10", "true"] {
            assert!(JsonDecimal::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn money_serializes_equal_to_its_input() {
        for text in ["125000.5", "0.07", "999999999999.99", "0.1", "19.99", "1000000000000", "42"] {
            let money = Money::parse_json_number(text).unwrap();
            let json = serde_json::to_string(&money).unwrap();
            let back: f64 = json.parse().unwrap();
            assert_eq!(back, text.parse::<f64>().unwrap(), "{text} became {json}");
        }
        assert_eq!(serde_json::to_string(&Money::from_cents(4200)).unwrap(), "42");
        assert_eq!(Money::from_cents(12_500_050).to_string(), "125000.50");
    }

    #[test]
    fn instants_need_an_offset_and_come_back_in_utc() {
        let t = parse_instant("2026-12-01T09:30:00+02:00").unwrap();
        assert_eq!(format_instant(&t), "2026-12-01T07:30:00Z");
        let t = parse_instant("2026-12-01T09:30:00.125+02:00").unwrap();
        assert_eq!(format_instant(&t), "2026-12-01T07:30:00.125Z");
        let t = parse_instant("2026-12-01T07:30:00.1234567Z").unwrap();
        assert_eq!(format_instant(&t), "2026-12-01T07:30:00.123456Z");
        let t = parse_instant("2026-12-01T07:30:10.5Z").unwrap();
        assert_eq!(format_instant(&t), "2026-12-01T07:30:10.5Z", "zeros of the seconds stay");
        let t = parse_instant("2000-01-01T00:00:00.000001Z").unwrap();
        assert_eq!(format_instant(&t), "2000-01-01T00:00:00.000001Z");
        for bad in ["2026-12-01", "2026-12-01T09:30:00", "2026-12-01 09:30:00Z", "tomorrow", "2026-13-01T00:00:00Z"] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_instant("2026-12-01t09:30:00z"), parse_instant("2026-12-01T09:30:00Z"));
        assert_eq!(format_instant(&parse_instant("2026-12-01T09:30:00-00:00").unwrap()), "2026-12-01T09:30:00Z");
        for shape in [
            "2026-12-01T09:30:00\u{2212}02:00",
            "2026-12-01T09:30:00+0200",
            "2026-12-01T09:30:00+02",
            "2026-12-01T09:30:00+02:00:00",
            "2026-12-01T09:30:00.Z",
            "2026-12-01T09:30Z",
            "2026-12-1T09:30:00Z",
            "+2026-12-01T09:30:00Z",
            "2026-12-01T09:30:00Z ",
            " 2026-12-01T09:30:00Z",
            "2026-12-01T09:30:00UTC",
            "2026-12-01T09:30:00GMT+2",
            "2026-12-01T09:30:0\u{0663}Z",
            "\u{FF12}026-12-01T09:30:00Z",
            "2026-02-30T09:30:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T09:30:00+24:00",
        ] {
            assert_eq!(parse_instant(shape), Err(INSTANT_FORM), "{shape}");
        }
        for leap in
            ["2026-06-15T12:34:60Z", "2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5+00:00", "2026-06-15T12:34:60z"]
        {
            assert_eq!(parse_instant(leap), Err(LEAP_SECOND), "{leap}");
        }
        assert_eq!(parse_instant("2026-06-15T12:34:61Z"), Err(INSTANT_FORM));
        assert!(validate_instant_range(&parse_instant("1969-12-31T23:59:59Z").unwrap()).is_err());
        assert!(validate_instant_range(&parse_instant("1970-01-01T00:00:00Z").unwrap()).is_ok());
        assert!(validate_instant_range(&parse_instant("2200-12-31T23:59:59Z").unwrap()).is_ok());
        assert!(validate_instant_range(&parse_instant("2201-01-01T00:00:00Z").unwrap()).is_err());
    }

    fn valid() -> CreateOpportunity {
        CreateOpportunity {
            customer_id: Some(Uuid::nil()),
            title: Some("Chiller retrofit".into()),
            pipeline_type: Some(PipelineType::Retrofit),
            ..Default::default()
        }
    }

    fn problems(input: &CreateOpportunity) -> ValidationFailure {
        let mut failure = ValidationFailure::default();
        input.check(&mut failure);
        failure
    }

    #[test]
    fn single_field_rules() {
        assert!(problems(&valid()).is_empty());
        let f = problems(&CreateOpportunity { title: Some(String::new()), probability: Some(101), ..valid() });
        assert_eq!(f.field_errors["title"], ["must not be empty"]);
        assert_eq!(f.field_errors["probability"], ["must be between 0 and 100"]);
        let f = problems(&CreateOpportunity { title: Some("x".repeat(201)), ..valid() });
        assert_eq!(f.field_errors["title"], ["must be at most 200 characters"]);
        assert!(problems(&CreateOpportunity { title: Some("é".repeat(200)), ..valid() }).is_empty());
        let f = problems(&CreateOpportunity { scope_summary: Some("x".repeat(10_001)), ..valid() });
        assert_eq!(f.field_errors["scopeSummary"], ["must be at most 10000 characters"]);
        let f = problems(&CreateOpportunity { idempotency_key: Some("a\u{7f}".into()), ..valid() });
        assert_eq!(f.field_errors["idempotencyKey"], ["must contain only printable ASCII characters"]);
    }

    #[test]
    fn names_are_trimmed_of_what_shows_nothing() {
        assert_eq!(trim_blank("\u{200b}\u{feff} Chiller\u{00a0}\u{202e}\u{3000}"), "Chiller");
        assert_eq!(trim_blank("\u{200b}\u{feff}\u{202e}\u{2060}\u{00ad} \t"), "");
        assert_eq!(trim_blank("Chil\u{200d}ler"), "Chil\u{200d}ler", "inside, it stays");
        assert!(!is_blank('x') && !is_blank('\u{1F600}') && !is_blank('é'));
    }

    #[test]
    fn solution_families_rules() {
        let f = problems(&CreateOpportunity {
            solution_families: Some(vec!["HVAC".into(), String::new(), "x".repeat(101), "HVAC".into()]),
            ..valid()
        });
        assert!(!f.has_field("solutionFamilies.0"));
        assert_eq!(f.field_errors["solutionFamilies.1"], ["must not be empty"]);
        assert_eq!(f.field_errors["solutionFamilies.2"], ["must be at most 100 characters"]);
        assert_eq!(f.field_errors["solutionFamilies.3"], ["must not repeat item 0"]);
        let f = problems(&CreateOpportunity {
            solution_families: Some((0..51).map(|i| i.to_string()).collect()),
            ..valid()
        });
        assert_eq!(f.field_errors["solutionFamilies"], ["must have at most 50 items"]);
    }

    #[test]
    fn rules_across_fields() {
        let won = |p| CreateOpportunity { stage: Some(Stage::Won), probability: Some(p), ..valid() };
        assert!(problems(&won(100)).is_empty());
        let f = problems(&won(90));
        assert_eq!(f.field_errors["probability"], ["must be 100 when stage is \"won\""]);
        assert_eq!(f.form_errors.len(), 1);
        let lost = CreateOpportunity {
            stage: Some(Stage::Lost),
            probability: Some(0),
            lost_reason_category: Some(LostReasonCategory::Price),
            ..valid()
        };
        assert!(problems(&lost).is_empty());
        assert!(problems(&CreateOpportunity { probability: Some(10), ..lost.clone() }).has_field("probability"));
        let f = problems(&CreateOpportunity { lost_reason_category: Some(LostReasonCategory::Price), ..valid() });
        assert_eq!(f.field_errors["lostReasonCategory"], ["is only allowed when stage is \"lost\""]);
    }

    #[test]
    fn new_opportunity_applies_defaults() {
        let caller = Uuid::now_v7();
        let ws = Uuid::now_v7();
        let o = Opportunity::new(valid(), ws, caller, Utc::now()).unwrap();
        assert_eq!(o.stage, Stage::Lead);
        assert_eq!(o.visibility_mode, VisibilityMode::WorkspaceLocal);
        assert!(!o.budget_confirmed);
        assert_eq!(o.owner_user_id, caller);
        assert_eq!(o.id.get_version_num(), 7);
        assert_eq!(o.created_at, o.updated_at);
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["solutionFamilies"], serde_json::json!([]));
        assert_eq!(json["source"], serde_json::Value::Null);
        assert_eq!(json["version"], 1);
        assert_eq!(json["isClosed"], false);
        assert!(json["createdAt"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(camel_case("lost_reason_category"), "lostReasonCategory");
        assert_eq!(camel_case("title"), "title");
    }
}
