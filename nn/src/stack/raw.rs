//! A TOML value kept as written, so that the layer list is parsed by [`super::spec`] with errors that
//! name the layer (`layers[3]`) instead of failing inside serde with the whole section as the key.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A TOML value: string, integer, float, boolean, array or table (keys in the written order).
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An array.
    List(Vec<Raw>),
    /// A table.
    Map(Vec<(String, Raw)>),
}

impl Raw {
    /// What kind of value this is, for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Raw::Str(s) => format!("the string \"{s}\""),
            Raw::Int(i) => format!("the integer {i}"),
            Raw::Float(f) => format!("the number {f}"),
            Raw::Bool(b) => format!("{b}"),
            Raw::List(_) => "an array".into(),
            Raw::Map(_) => "a table".into(),
        }
    }

    /// A table from `(key, value)` pairs.
    pub(super) fn map(pairs: impl IntoIterator<Item = (&'static str, Raw)>) -> Raw {
        Raw::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Raw::Str(v) => s.serialize_str(v),
            Raw::Int(v) => s.serialize_i64(*v),
            Raw::Float(v) => s.serialize_f64(*v),
            Raw::Bool(v) => s.serialize_bool(*v),
            Raw::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for it in items {
                    seq.serialize_element(it)?;
                }
                seq.end()
            }
            Raw::Map(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(it) = seq.next_element()? {
            items.push(it);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Raw>()? {
            pairs.push((k, v));
        }
        Ok(Raw::Map(pairs))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}
