//! Deserialisation that accepts only the JSON forms the schemas describe.
//!
//! serde_json keeps the last of repeated member names (`{"a":1,"a":2}` is `{"a":2}`), where
//! another reader of the same bytes may keep the first: [`from_slice_strict`] refuses them in
//! every object at any depth before anything is deserialised.
//!
//! Serde's derives are lenient in two ways the wire must not be: a struct may be written as an
//! array of its field values (which skips the field names, and so `deny_unknown_fields`), and
//! a unit enum variant may be written as `{"name": null}`. Nested structs go through
//! [`object`]/[`objects`] and enums through [`names!`], which take a JSON object and a string
//! only.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::ProtoError;

/// How many characters of a repeated key an error shows.
const KEY_SHOWN: usize = 40;

/// Parses `bytes` as one JSON text and deserialises it into `T`, refusing a member name
/// repeated in any object at any depth (after unescaping: `"a"` and `"\u0061"` are the same
/// name), free-form [`Value`] fields included.
///
/// The bytes are first checked by a pass of serde_json's own parser that keeps only each
/// object's names (borrowed from `bytes` unless escaped; escaped ones are zeroized when the
/// object ends) and builds no value, then deserialised by `serde_json::from_slice`. So what
/// it accepts, it decodes exactly as serde_json does; it makes no extra copy of the values
/// (secrets included); it runs in time linear in the input (one hash set per object); and
/// nesting is bounded by serde_json's recursion limit (128 levels). The check pass looks at
/// every value, so it also refuses, even in a member `T` would ignore, nesting deeper than
/// that limit and a number too large for an `f64`.
///
/// A repeated name, a type mismatch or a missing field is [`ProtoError::Invalid`] (a repeated
/// name as "duplicate key `NAME` at line L column C", the name escaped like a Rust string and
/// cut to 40 characters); bytes that are not one JSON text are [`ProtoError::Json`].
///
/// ```
/// use p3ak_proto::from_slice_strict;
/// use serde_json::{Value, json};
///
/// let value: Value = from_slice_strict(br#"{"a":{"a":[{"a":1}]}}"#)?;
/// assert_eq!(value, json!({"a": {"a": [{"a": 1}]}}));
/// let repeated = from_slice_strict::<Value>(br#"{"args":{"to":"me","\u0074o":"you"}}"#);
/// assert_eq!(
///     repeated.unwrap_err().to_string(),
///     "invalid message: duplicate key `to` at line 1 column 28"
/// );
/// # Ok::<(), p3ak_proto::ProtoError>(())
/// ```
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let mut check = serde_json::Deserializer::from_slice(bytes);
    UniqueKeys
        .deserialize(&mut check)
        .and_then(|()| check.end())
        .map_err(json_error)?;
    serde_json::from_slice(bytes).map_err(json_error)
}

/// A serde_json error as the protocol's: data errors make an invalid message, the rest bad
/// JSON.
fn json_error(e: serde_json::Error) -> ProtoError {
    match e.classify() {
        serde_json::error::Category::Data => ProtoError::Invalid(e.to_string()),
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => ProtoError::Json(e.to_string()),
    }
}

/// Walks one JSON value, failing on the first object with a repeated member name.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<Name<'de>>()? {
            if names.contains(&name) {
                return Err(A::Error::custom(format_args!(
                    "duplicate key `{}`",
                    Shown(&name.0)
                )));
            }
            names.insert(name);
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// A member name: borrowed from the input when it has no escapes, owned (and zeroized when
/// dropped) when it does.
#[derive(PartialEq, Eq, Hash)]
struct Name<'de>(Cow<'de, str>);

impl Drop for Name<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(name) = &mut self.0 {
            name.zeroize();
        }
    }
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }
}

/// A name for an error message: escaped like a Rust string (one line, no control
/// characters) and cut to [`KEY_SHOWN`] characters, so that hostile input cannot flood it.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(KEY_SHOWN) {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        if self.0.chars().nth(KEY_SHOWN).is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// One struct that must be written as a JSON object.
pub(crate) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let map = Map::<String, Value>::deserialize(deserializer)?;
    T::deserialize(Value::Object(map)).map_err(D::Error::custom)
}

/// An array of structs, each written as a JSON object.
pub(crate) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Vec::<Map<String, Value>>::deserialize(deserializer)?
        .into_iter()
        .map(|map| T::deserialize(Value::Object(map)).map_err(D::Error::custom))
        .collect()
}

/// `Deserialize` for a unit-only enum from its wire name, a JSON string and nothing else.
macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                let name = <::std::string::String as ::serde::Deserialize>::deserialize(deserializer)?;
                match name.as_str() {
                    $($name => Ok(Self::$variant),)+
                    other => Err(<D::Error as ::serde::de::Error>::unknown_variant(other, NAMES)),
                }
            }
        }
    };
}
pub(crate) use names;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_names_are_escaped_and_cut() {
        assert_eq!(Shown("a\"b\n\u{7}").to_string(), r#"a\"b\n\u{7}"#);
        let long = "é".repeat(KEY_SHOWN + 1);
        assert_eq!(
            Shown(&long).to_string(),
            format!("{}…", "é".repeat(KEY_SHOWN))
        );
        assert_eq!(Shown(&long[2..]).to_string(), "é".repeat(KEY_SHOWN));
    }

    #[test]
    fn the_check_pass_is_stricter_only_where_documented() {
        #[derive(Debug, Deserialize)]
        struct Lenient {
            a: u8,
        }
        // serde_json skips a member `T` ignores without looking closely; the check does not.
        for text in [
            r#"{"a":1,"b":1e400}"#.to_owned(),
            format!(r#"{{"a":1,"b":{}{}}}"#, "[".repeat(200), "]".repeat(200)),
        ] {
            assert!(serde_json::from_str::<Lenient>(&text).is_ok());
            assert!(matches!(
                from_slice_strict::<Lenient>(text.as_bytes()),
                Err(ProtoError::Json(_))
            ));
        }
        assert_eq!(
            from_slice_strict::<Lenient>(br#"{"a":7,"b":[{}]}"#)
                .unwrap()
                .a,
            7
        );
    }
}
