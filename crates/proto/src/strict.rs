//! Deserialisation that accepts only the JSON forms the schemas describe.
//!
//! Serde's derives are lenient in two ways the wire must not be: a struct may be written as an
//! array of its field values (which skips the field names, and so `deny_unknown_fields`), and
//! a unit enum variant may be written as `{"name": null}`. Nested structs go through
//! [`object`]/[`objects`] and enums through [`names!`], which take a JSON object and a string
//! only.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

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
