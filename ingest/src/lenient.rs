//! Field types for reading JSON into typed, borrowing structs the way lookups in a `serde_json::Value`
//! tree read it: a field takes any JSON value, and gives what the tree's lookup would find (a string
//! where a string is read, an object where an object is read, nothing otherwise) instead of failing
//! the document. The formats that read this way (`cloudtrail`, `trigger`) give up and read the tree
//! wherever the two could differ (a key given twice, which the tree reads as the last).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string, borrowed from the input when it has no escapes; any other JSON value is `None`.
#[derive(Default)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A key with any value (`present`), and the value read as `T` when it is an object.
pub(crate) struct Slot<T> {
    pub present: bool,
    pub value: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { present: false, value: None }
    }
}

/// Whether the key is there, whatever its value (`null` included).
#[derive(Default)]
pub(crate) struct Present(pub bool);

/// A key with any value, and its text when it is a string.
#[derive(Default)]
pub(crate) struct PresentText<'a> {
    pub present: bool,
    pub text: Text<'a>,
}

/// An array's first element (the rest skipped), when the value is an array.
pub(crate) struct First<T> {
    pub array: bool,
    pub first: Option<Slot<T>>,
}

impl<T> Default for First<T> {
    fn default() -> Self {
        First { array: false, first: None }
    }
}

pub(crate) fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(crate) fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The `visit_*` methods of a visitor that gives `Default` for every value but those its type keeps:
/// `(bool)` includes booleans, `()` leaves them to the visitor; `(scalars => value)` gives `value` for
/// booleans, numbers and `null`, leaving strings, arrays and objects to the visitor.
macro_rules! other_values_are_default {
    (scalars => $value:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
    (bool) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        $crate::lenient::other_values_are_default!();
    };
    () => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            $crate::lenient::skip_seq(seq)?;
            Ok(Default::default())
        }
    };
}
pub(crate) use other_values_are_default;

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'a>, A::Error> {
                skip_map(map)?;
                Ok(Text(None))
            }
            other_values_are_default!(bool);
        }
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Slot<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SlotVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SlotVisitor<T> {
            type Value = Slot<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot<T>, A::Error> {
                let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Slot { present: true, value: Some(value) })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Slot<T>, E> {
                Ok(Slot { present: true, value: None })
            }
            other_values_are_default!(scalars => Slot { present: true, value: None });
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot<T>, A::Error> {
                skip_seq(seq)?;
                Ok(Slot { present: true, value: None })
            }
        }
        deserializer.deserialize_any(SlotVisitor(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PresentText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(PresentText { present: true, text: Text::deserialize(deserializer)? })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstVisitor<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element::<Slot<T>>()?;
                skip_seq(seq)?;
                Ok(First { array: true, first })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<First<T>, A::Error> {
                skip_map(map)?;
                Ok(First::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<First<T>, E> {
                Ok(First::default())
            }
            other_values_are_default!(scalars => First::default());
        }
        deserializer.deserialize_any(FirstVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

/// Whether any object in `json` repeats a key (which the tree reads, keeping the last).
#[cfg(test)]
pub(crate) fn repeats_a_key(json: &str) -> bool {
    struct Check(bool);
    impl<'de> serde::de::Visitor<'de> for &mut Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                self.0 |= !keys.insert(key);
                map.next_value_seed(&mut *self)?;
            }
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(&mut *self)?.is_some() {}
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for &mut Check {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let mut check = Check(false);
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(&mut check, &mut deserializer).unwrap();
    check.0
}
