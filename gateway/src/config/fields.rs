//! Every key a configuration file can hold, read from the config structs themselves: a
//! deserializer that answers every request with a placeholder and records, for each struct it
//! is asked for, the TOML path of each field (`iscsi.portal.listen`). It exists so a test can
//! hold docs/configuration.md's reference table to the structs in both directions.

use std::collections::BTreeSet;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// The TOML path of every field `T` deserializes, nested structs included (array elements
/// share their array's path).
pub fn paths<'de, T: serde::Deserialize<'de>>() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    T::deserialize(Recorder {
        path: String::new(),
        out: &mut out,
    })
    .expect("the recorder satisfies every config type");
    out
}

/// Why a type could not be walked (never expected for the config structs).
#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct Recorder<'a> {
    path: String,
    out: &'a mut BTreeSet<String>,
}

impl Recorder<'_> {
    fn child(&mut self, field: &str) -> Recorder<'_> {
        let path = if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        };
        self.out.insert(path.clone());
        Recorder {
            path,
            out: self.out,
        }
    }
}

/// Hands out `left` elements (one for a list, the arity of a tuple), each recorded at `path`.
struct Elements<'a, 'b> {
    rec: &'b mut Recorder<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, '_> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        s: S,
    ) -> Result<Option<S::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let rec = Recorder {
            path: self.rec.path.clone(),
            out: &mut *self.rec.out,
        };
        s.deserialize(rec).map(Some)
    }
}

/// The fields of one struct, each with a recorder at its path.
struct Fields<'a, 'b> {
    rec: &'b mut Recorder<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    current: &'static str,
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        match self.fields.next() {
            Some(f) => {
                self.current = f;
                k.deserialize((*f).into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, v: V) -> Result<V::Value, Error> {
        v.deserialize(self.rec.child(self.current))
    }
}

/// The first variant of an enum, with its contents recorded at the enum's path.
struct FirstVariant<'a, 'b>(&'b mut Recorder<'a>);

impl<'de, 'a, 'b> de::EnumAccess<'de> for FirstVariant<'a, 'b> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, v: V) -> Result<(V::Value, Self), Error> {
        let first = v.deserialize(de::value::U32Deserializer::<Error>::new(0))?;
        Ok((first, self))
    }
}

impl<'de> de::VariantAccess<'de> for FirstVariant<'_, '_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, t: T) -> Result<T::Value, Error> {
        t.deserialize(Recorder {
            path: self.0.path.clone(),
            out: &mut *self.0.out,
        })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            rec: self.0,
            left: len,
        })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            rec: self.0,
            fields: fields.iter(),
            current: "",
        })
    }
}

impl<'de> de::Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    // Untagged and custom types ask for "anything": a number satisfies the config's (`Size`).
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(1.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_char('x')
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("x")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("x")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bytes(b"x")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            rec: &mut self,
            left: len,
        })
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            rec: &mut self,
            left: 1,
        })
    }
    fn deserialize_tuple<V: Visitor<'de>>(mut self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            rec: &mut self,
            left: len,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_map(de::value::MapDeserializer::<
            std::iter::Empty<(String, String)>,
            Error,
        >::new(std::iter::empty()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            rec: &mut self,
            fields: fields.iter(),
            current: "",
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_enum(FirstVariant(&mut self))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    // Addresses then come as their binary form (enums of byte arrays), which needs no
    // valid text.
    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 byte_buf identifier
    }
}
