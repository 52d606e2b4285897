//! The policy file as written: a serde model with locations. Checks that need only one value
//! (a level, a duration, an unknown key) happen here, so their errors carry the exact
//! line and column; checks across values happen in `compile`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::types::{Level, Tier, TimeOfDay};

/// Top-level keys with a meaning of their own; every other top-level key is an action group.
pub(crate) const RESERVED: &[&str] = &[
    "version",
    "defaults",
    "agents",
    "agent_groups",
    "totals",
    "credentials",
    "forbid",
    "vault_rekey",
    "sets",
    "decimals",
    "sensitive",
];

/// Whether a top-level key is probably a misspelt section name rather than a group.
fn looks_like(key: &str, section: &str) -> bool {
    let d = strsim::levenshtein(key, section);
    d == 1 || (d == 2 && key.len() >= 6)
}

/// A mapping that keeps the order it was written in and rejects duplicate keys.
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub(crate) Vec<(Spanned<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Spanned<String>, V)> = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if out.iter().any(|(k, _)| k.value == key.value) {
                        return Err(de::Error::custom(format!("duplicate key `{}`", key.value)));
                    }
                    let value = map.next_value::<V>()?;
                    out.push((key, value));
                }
                Ok(OrderedMap(out))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// A whole policy file.
#[derive(Debug, Default)]
pub(crate) struct RawPolicy {
    pub(crate) version: Option<Spanned<u32>>,
    pub(crate) defaults: Option<RawDefaults>,
    pub(crate) agents: Option<OrderedMap<RawAgent>>,
    pub(crate) agent_groups: Option<OrderedMap<RawAgentGroup>>,
    pub(crate) totals: OrderedMap<Spanned<RawTotal>>,
    pub(crate) credentials: OrderedMap<Vec<Spanned<String>>>,
    pub(crate) forbid: Vec<Spanned<RawForbid>>,
    pub(crate) vault_rekey: Option<Spanned<RawRekey>>,
    pub(crate) sets: OrderedMap<Spanned<RawSet>>,
    pub(crate) decimals: OrderedMap<Spanned<u32>>,
    pub(crate) sensitive: Vec<Spanned<String>>,
    pub(crate) groups: Vec<(Spanned<String>, OrderedMap<Spanned<RawEntry>>)>,
    /// Top-level keys that look like a misspelt section name.
    pub(crate) misspelt: Vec<(Spanned<String>, &'static str)>,
}

impl<'de> Deserialize<'de> for RawPolicy {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PolicyVisitor;
        impl<'de> Visitor<'de> for PolicyVisitor {
            type Value = RawPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy: a mapping of sections and action groups")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPolicy, A::Error> {
                let mut raw = RawPolicy::default();
                let mut seen: Vec<String> = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if seen.contains(&key.value) {
                        return Err(de::Error::custom(format!("duplicate key `{}`", key.value)));
                    }
                    seen.push(key.value.clone());
                    match key.value.as_str() {
                        "version" => raw.version = Some(map.next_value()?),
                        "defaults" => raw.defaults = Some(map.next_value()?),
                        "agents" => raw.agents = Some(map.next_value()?),
                        "agent_groups" => raw.agent_groups = Some(map.next_value()?),
                        "totals" => raw.totals = map.next_value()?,
                        "credentials" => raw.credentials = map.next_value()?,
                        "forbid" => raw.forbid = map.next_value()?,
                        "vault_rekey" => raw.vault_rekey = Some(map.next_value()?),
                        "sets" => raw.sets = map.next_value()?,
                        "decimals" => raw.decimals = map.next_value()?,
                        "sensitive" => raw.sensitive = map.next_value()?,
                        other => {
                            if let Some(close) = RESERVED.iter().find(|r| looks_like(other, r)) {
                                map.next_value::<de::IgnoredAny>()?;
                                raw.misspelt.push((key, close));
                                continue;
                            }
                            let group = map.next_value()?;
                            raw.groups.push((key, group));
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(PolicyVisitor)
    }
}

/// What happens to an action nobody mentioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unknown {
    #[default]
    Reject,
    Escalate,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    #[serde(default)]
    pub(crate) unknown: Unknown,
    pub(crate) level: Option<Spanned<Level>>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) crawfish: Option<Dur>,
    pub(crate) notify: Option<Vec<String>>,
    /// Action patterns whose third-party declared tiers the operator trusts.
    #[serde(default)]
    pub(crate) trust_declared_tiers: Vec<Spanned<String>>,
}

/// `vault_rekey`: when the kernel stages a rekey of its vault, and how it is approved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRekey {
    pub(crate) every: Spanned<Dur>,
    pub(crate) level: Option<Spanned<Level>>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) crawfish: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    #[serde(default)]
    pub(crate) actions: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgentGroup {
    pub(crate) members: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) actions: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTotal {
    pub(crate) actions: Vec<Spanned<String>>,
    pub(crate) sum: Option<Spanned<String>>,
    pub(crate) count: Option<bool>,
    pub(crate) window: Dur,
    pub(crate) by: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForbid {
    pub(crate) id: Spanned<String>,
    pub(crate) actions: Vec<Spanned<String>>,
    pub(crate) agents: Option<Vec<Spanned<String>>>,
    pub(crate) when: Option<Spanned<RawCond>>,
    pub(crate) why: Option<String>,
}

/// An operator entry for one action (or a wildcard of actions) inside a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntry {
    pub(crate) level: Level,
    pub(crate) tier: Option<Tier>,
    pub(crate) crawfish: Option<Dur>,
    pub(crate) notify: Option<Vec<String>>,
    pub(crate) confirm_twice: Option<bool>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) why: Option<String>,
    #[serde(default)]
    pub(crate) rules: Vec<Spanned<RawRule>>,
}

/// A conditional rule inside an entry: when its condition holds, its effect applies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) id: Spanned<String>,
    pub(crate) agents: Option<Vec<Spanned<String>>>,
    pub(crate) when: Spanned<RawCond>,
    #[serde(default)]
    pub(crate) reject: bool,
    pub(crate) level: Option<Level>,
    pub(crate) tier: Option<Tier>,
    pub(crate) crawfish: Option<Dur>,
    pub(crate) notify: Option<Vec<String>>,
    pub(crate) confirm_twice: Option<bool>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) why: Option<String>,
}

/// A named set: its items inline, or a file beside the policy with one item per line.
#[derive(Debug)]
pub(crate) enum RawSet {
    Items(Vec<Scalar>),
    File(Spanned<String>),
}

impl<'de> Deserialize<'de> for RawSet {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SetVisitor;
        impl<'de> Visitor<'de> for SetVisitor {
            type Value = RawSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a set: a list of values, or `{ file: NAME }` for a file beside the policy",
                )
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawSet, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawSet::Items(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSet, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "file" if file.is_none() => file = Some(map.next_value()?),
                        "file" => return Err(de::Error::custom("duplicate key `file`")),
                        other => return Err(de::Error::unknown_field(other, &["file"])),
                    }
                }
                file.map(RawSet::File)
                    .ok_or_else(|| de::Error::missing_field("file"))
            }
        }
        deserializer.deserialize_any(SetVisitor)
    }
}

/// One item of a list in a test: a value, or every value of a named set (`$contacts`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item<T> {
    Value(T),
    Set(String),
}

/// A list in a test: `[a, $set, b]`, or a set alone (`in: $contacts`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed<T>(pub(crate) Vec<Item<T>>);

/// Reads `$name` as a reference to a set, and `$$text` as the literal `$text`.
pub(crate) trait SetRef: Sized {
    fn text(&self) -> Option<&str>;
    fn from_text(text: String) -> Self;
    fn into_item(self) -> Item<Self> {
        match self.text() {
            Some(t) if t.starts_with("$$") => Item::Value(Self::from_text(t[1..].to_owned())),
            Some(t) if t.starts_with('$') => Item::Set(t[1..].to_owned()),
            _ => Item::Value(self),
        }
    }
}

impl SetRef for Scalar {
    fn text(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
    fn from_text(text: String) -> Self {
        Scalar::Str(text)
    }
}

impl SetRef for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
    fn from_text(text: String) -> Self {
        text
    }
}

impl<'de, T: Deserialize<'de> + SetRef> Deserialize<'de> for Listed<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + SetRef> Visitor<'de> for ListVisitor<T> {
            type Value = Listed<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list, or a named set such as `$contacts`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listed<T>, E> {
                match T::from_text(v.to_owned()).into_item() {
                    item @ Item::Set(_) => Ok(Listed(vec![item])),
                    Item::Value(_) => Err(E::custom(format!(
                        "expected a list or a named set (`$NAME`), found `{v}`"
                    ))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Listed<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    items.push(item.into_item());
                }
                Ok(Listed(items))
            }
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A number in a test: whole, or decimal for an argument with declared decimal places.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Frac(f64),
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumVisitor;
        impl Visitor<'_> for NumVisitor {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a whole number (or a decimal, for an argument with declared decimal places)",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                i64::try_from(v)
                    .map(Num::Int)
                    .map_err(|_| E::custom(format!("`{v}` is beyond 64 bits")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                if v.is_finite() {
                    Ok(Num::Frac(v))
                } else {
                    Err(E::custom("expected a whole number, not an infinity or NaN"))
                }
            }
        }
        deserializer.deserialize_any(NumVisitor)
    }
}

/// A condition: a mapping of subjects to tests, all of which must hold, plus the
/// combinators `any`, `not` and a raw `cedar` expression.
#[derive(Debug, Default)]
pub(crate) struct RawCond {
    pub(crate) tests: Vec<(Spanned<String>, RawOps)>,
    pub(crate) any: Option<Vec<Spanned<RawCond>>>,
    pub(crate) not: Option<Box<Spanned<RawCond>>>,
    pub(crate) cedar: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawCond {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CondVisitor;
        impl<'de> Visitor<'de> for CondVisitor {
            type Value = RawCond;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition: a mapping of subjects (`args.NAME`, `total.NAME`, `time`, `channel`, `agent`, `delegation.depth`, ...) to tests")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawCond, A::Error> {
                let mut cond = RawCond::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let duplicate = match key.value.as_str() {
                        "any" => cond.any.replace(map.next_value()?).is_some(),
                        "not" => cond.not.replace(Box::new(map.next_value()?)).is_some(),
                        "cedar" => cond.cedar.replace(map.next_value()?).is_some(),
                        _ => {
                            let dup = cond.tests.iter().any(|(k, _)| k.value == key.value);
                            let ops = map.next_value()?;
                            cond.tests.push((key.clone(), ops));
                            dup
                        }
                    };
                    if duplicate {
                        return Err(de::Error::custom(format!("duplicate key `{}`", key.value)));
                    }
                }
                Ok(cond)
            }
        }
        deserializer.deserialize_map(CondVisitor)
    }
}

/// A scalar in a condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Bool(bool),
    Int(i64),
    /// A number with a fraction: only for arguments with declared decimal places, where it
    /// becomes an `Int` of the smallest unit.
    Frac(f64),
    Str(String),
}

/// The tests on one subject. They are checked in the order of the fields here, `present`
/// first, so `{ present: true, gt: 5 }` never touches a missing value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOps {
    pub(crate) present: Option<bool>,
    pub(crate) eq: Option<Scalar>,
    pub(crate) ne: Option<Scalar>,
    pub(crate) gt: Option<Num>,
    pub(crate) ge: Option<Num>,
    pub(crate) lt: Option<Num>,
    pub(crate) le: Option<Num>,
    #[serde(rename = "in")]
    pub(crate) in_: Option<Listed<Scalar>>,
    pub(crate) not_in: Option<Listed<Scalar>>,
    pub(crate) like: Option<String>,
    pub(crate) not_like: Option<String>,
    pub(crate) eq_ignore_case: Option<String>,
    pub(crate) starts_with: Option<String>,
    pub(crate) ends_with: Option<String>,
    pub(crate) includes: Option<String>,
    pub(crate) matches: Option<Spanned<String>>,
    pub(crate) not_matches: Option<Spanned<String>>,
    pub(crate) longer_than: Option<u32>,
    pub(crate) shorter_than: Option<u32>,
    pub(crate) contains: Option<Scalar>,
    pub(crate) contains_any: Option<Listed<Scalar>>,
    pub(crate) contains_all: Option<Listed<Scalar>>,
    pub(crate) host_in: Option<Listed<String>>,
    pub(crate) host_not_in: Option<Listed<String>>,
    pub(crate) links_host_in: Option<Listed<String>>,
    pub(crate) links_host_not_in: Option<Listed<String>>,
    pub(crate) email_domain_in: Option<Listed<String>>,
    pub(crate) email_domain_not_in: Option<Listed<String>>,
    pub(crate) from: Option<Vec<Spanned<String>>>,
    pub(crate) not_from: Option<Vec<Spanned<String>>>,
    pub(crate) all: Option<Box<Spanned<RawCond>>>,
    pub(crate) any: Option<Box<Spanned<RawCond>>>,
    pub(crate) none: Option<Box<Spanned<RawCond>>>,
    pub(crate) between: Option<(TimeOfDay, TimeOfDay)>,
}

/// A duration: whole seconds (`600`) or a number with a unit (`10m`, `1h30m`, `2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dur(pub(crate) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a number with a unit such as `10m`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| {
                        E::custom(format!("invalid duration `{v}`: it cannot be negative"))
                    })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration `{v}`: use seconds or a number with a unit (s, m, h, d), e.g. `600`, `10m`, `1h30m`"
                    ))
                })
            }
        }
        deserializer.deserialize_any(DurVisitor)
    }
}

/// Parses `600`, `45s`, `10m`, `1h30m`, `2d`. Units must be given largest first, each once.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        if number.is_empty() || unit >= last_unit {
            return None;
        }
        last_unit = unit;
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    number.is_empty().then_some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "10x", "m", "10m1h", "1m1m", "1.5h", "-3", "10 m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
