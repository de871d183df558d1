//! A JSON-RPC message read in one pass (the rewrite's cost is the upstream's list, read once):
//! each member as its original text (`RawValue`), except `result`, read as far as a tool list
//! goes: its members as text, its `tools` as one member list per tool. Any valid JSON reads;
//! what is not the expected shape is marked so, never an error, so that only text that is not
//! JSON fails.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// An object key: borrowed from the text unless it has escapes.
pub type Key<'a> = Cow<'a, str>;

/// A message: `None` when the text is JSON but not an object.
pub struct Message<'a>(pub Option<Vec<(Key<'a>, Member<'a>)>>);

pub enum Member<'a> {
    Raw(&'a RawValue),
    /// The `result` member: its members when it is an object.
    Result(Option<Vec<(Key<'a>, ResultMember<'a>)>>),
}

pub enum ResultMember<'a> {
    Raw(&'a RawValue),
    /// `tools`: each tool's members when it is an array of objects, else `None`.
    Tools(Option<Vec<Vec<(Key<'a>, &'a RawValue)>>>),
}

impl<'a> Message<'a> {
    /// The value of member `key` (the last one when repeated, as clients read it).
    pub fn get(&self, key: &str) -> Option<&Member<'a>> {
        let members = self.0.as_ref()?;
        members.iter().rev().find(|(k, _)| k == key).map(|(_, m)| m)
    }
}

/// Whether an earlier copy of `members[i]`'s key is shadowed by a later one.
pub fn shadowed<K: AsRef<str>, V>(members: &[(K, V)], i: usize) -> bool {
    let key = members[i].0.as_ref();
    members[i + 1..].iter().any(|(k, _)| k.as_ref() == key)
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Cow::Owned(v.to_string()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Visitor methods for every JSON scalar: read as `None`.
macro_rules! scalars_read_as_none {
    () => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

/// Visitor methods for every JSON value that is not an object: consumed, read as `None`.
macro_rules! not_an_object {
    () => {
        scalars_read_as_none!();
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    };
}

/// An object's members, each value read by `value`.
fn members<'de, A: MapAccess<'de>, V>(
    mut map: A,
    mut value: impl FnMut(&str, &mut A) -> Result<V, A::Error>,
) -> Result<Vec<(Key<'de>, V)>, A::Error> {
    let mut out = Vec::new();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        let v = value(&key, &mut map)?;
        out.push((key, v));
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message<'de>, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Option<Vec<(Key<'de>, Member<'de>)>>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }

            not_an_object!();

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                members(map, |key, map| match key {
                    "result" => map.next_value_seed(ResultSeed).map(Member::Result),
                    _ => map.next_value().map(Member::Raw),
                })
                .map(Some)
            }
        }
        d.deserialize_any(MessageVisitor).map(Message)
    }
}

struct ResultSeed;

impl<'de> DeserializeSeed<'de> for ResultSeed {
    type Value = Option<Vec<(Key<'de>, ResultMember<'de>)>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ResultSeed)
    }
}

impl<'de> Visitor<'de> for ResultSeed {
    type Value = Option<Vec<(Key<'de>, ResultMember<'de>)>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        members(map, |key, map| match key {
            "tools" => map.next_value_seed(ToolsSeed).map(ResultMember::Tools),
            _ => map.next_value().map(ResultMember::Raw),
        })
        .map(Some)
    }
}

type ToolMembers<'a> = Vec<(Key<'a>, &'a RawValue)>;

struct ToolsSeed;

impl<'de> DeserializeSeed<'de> for ToolsSeed {
    type Value = Option<Vec<ToolMembers<'de>>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ToolsSeed)
    }
}

impl<'de> Visitor<'de> for ToolsSeed {
    type Value = Option<Vec<ToolMembers<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    scalars_read_as_none!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut tools = Vec::new();
        let mut all_objects = true;
        while let Some(tool) = seq.next_element_seed(ToolSeed)? {
            match tool {
                Some(members) => tools.push(members),
                None => all_objects = false,
            }
        }
        Ok(all_objects.then_some(tools))
    }
}

struct ToolSeed;

impl<'de> DeserializeSeed<'de> for ToolSeed {
    type Value = Option<ToolMembers<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ToolSeed)
    }
}

impl<'de> Visitor<'de> for ToolSeed {
    type Value = Option<ToolMembers<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        members(map, |_, map| map.next_value()).map(Some)
    }
}
