//! Serde helpers for fixed-size byte arrays: raw bytes in binary formats, base64url text in
//! human-readable ones (JSON, TOML).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

pub(crate) fn deserialize_vec<'de, D: Deserializer<'de>>(
    deserializer: D,
    max_len: usize,
) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor(usize);
    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {} bytes", self.0)
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > self.0 {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            let bytes = URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| E::custom("invalid base64url"))?;
            self.visit_bytes(&bytes)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if out.len() == self.0 {
                    return Err(de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(BytesVisitor(max_len))
    } else {
        deserializer.deserialize_bytes(BytesVisitor(max_len))
    }
}

pub(crate) fn deserialize_array<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    let v = deserialize_vec(deserializer, N)?;
    v.try_into()
        .map_err(|v: Vec<u8>| de::Error::invalid_length(v.len(), &"an exact length"))
}
