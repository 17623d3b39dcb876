//! Helpers for plugin config structs (`serde` derive): fields an operator may write either as
//! one value or as a list, e.g. `dst-port = 5060` or `dst-port = [5060, "16384-32767"]`.
//!
//! Errors keep the element's own message (`invalid DSCP `ef2`: …`), unlike an untagged enum.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BoolDeserializer, I64Deserializer, StrDeserializer, U64Deserializer};
use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// `#[serde(default, deserialize_with = "mgre_sdk::config::one_or_many")]`: reads `T` or a
/// list of `T` into a `Vec<T>`. A single value may be a string, integer or boolean.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_any(OneOrMany(PhantomData))
}

struct OneOrMany<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or a list of values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(out)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Vec<T>, E> {
        T::deserialize(StrDeserializer::<E>::new(v)).map(|t| vec![t])
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Vec<T>, E> {
        T::deserialize(U64Deserializer::<E>::new(v)).map(|t| vec![t])
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Vec<T>, E> {
        T::deserialize(I64Deserializer::<E>::new(v)).map(|t| vec![t])
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Vec<T>, E> {
        T::deserialize(BoolDeserializer::<E>::new(v)).map(|t| vec![t])
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use crate::net::{Dscp, PortRange};

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(default, deserialize_with = "super::one_or_many")]
        ports: Vec<PortRange>,
        #[serde(default, deserialize_with = "super::one_or_many")]
        dscp: Vec<Dscp>,
    }

    fn parse(json: &str) -> Result<Probe, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn one_value_or_a_list() {
        let p = parse(r#"{"ports": 5060, "dscp": "ef"}"#).unwrap();
        assert_eq!(
            (p.ports, p.dscp),
            (vec![PortRange::single(5060)], vec![Dscp::EF])
        );
        let p = parse(r#"{"ports": [20, "16384-32767"], "dscp": [46, "cs1"]}"#).unwrap();
        assert_eq!(p.ports[1], "16384-32767".parse().unwrap());
        assert_eq!(p.dscp, [Dscp::EF, Dscp::CS1]);
        assert!(parse("{}").unwrap().ports.is_empty());
    }

    #[test]
    fn element_errors_are_kept() {
        let e = parse(r#"{"dscp": ["ef", "af44"]}"#).unwrap_err();
        assert!(
            e.starts_with("invalid DSCP `af44`: a DSCP is a number"),
            "{e}"
        );
        let e = parse(r#"{"ports": 70000}"#).unwrap_err();
        assert!(e.starts_with("invalid port or port range 70000:"), "{e}");
        let e = parse(r#"{"ports": {"a": 1}}"#).unwrap_err();
        assert!(e.contains("expected a value or a list of values"), "{e}");
    }
}
