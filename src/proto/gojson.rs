//! How etcd's JSON gateway reads integers and bytes, for the serde impls `build.rs` generates.
//!
//! etcd 3.4 decodes JSON requests with golang/protobuf's jsonpb, which hands each integer and
//! bytes field to Go's `encoding/json`. Its rules differ from the generic ones in small ways that
//! clients notice: bytes are standard base64 only (padding required, `\r` and `\n` skipped,
//! URL-safe letters refused), an integer may be quoted, and every mistake has Go's message
//! (`illegal base64 data at input byte 3`, `json: cannot unmarshal number 1.5 into Go value of
//! type int64`). `build.rs` points the generated code at these two types instead of pbjson's.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A bytes field: standard base64 with Go's decoder and errors.
pub struct Bytes<T>(pub T);

/// An integer field: a JSON number or a quoted one, with Go's range checks and errors.
pub struct Number<T>(pub T);

/// `encoding/base64.StdEncoding.DecodeString`, with its error offsets.
pub fn decode_base64(src: &[u8]) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let is_newline = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        // One quantum: up to four symbols, skipping newlines, perhaps ended by padding.
        let mut quantum = [0u32; 4];
        let mut len = 4;
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required: a short final quantum is corrupt where it began.
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = value(c) {
                quantum[j] = v;
                j += 1;
                continue;
            }
            if is_newline(c) {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            // Padding: allowed after two or three symbols, and only at the very end.
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    while si < src.len() && is_newline(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && is_newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                return Err(corrupt(si));
            }
            len = j;
            break;
        }
        let bits = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3];
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        out.extend_from_slice(&bytes[..len - 1]);
    }
    Ok(out)
}

/// Go's name for a JSON value's kind, as `encoding/json` reports a type mismatch.
fn cannot_unmarshal<E: de::Error>(kind: &str, go_type: &str) -> E {
    E::custom(format!(
        "json: cannot unmarshal {kind} into Go value of type {go_type}"
    ))
}

impl<'de, T: From<Vec<u8>>> Deserialize<'de> for Bytes<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        const GO_TYPE: &str = "[]uint8";
        impl<'de, T: From<Vec<u8>>> Visitor<'de> for V<T> {
            type Value = Bytes<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                decode_base64(s.as_bytes())
                    .map(|b| Bytes(T::from(b)))
                    .map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Bytes(T::from(Vec::new())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(cannot_unmarshal("bool", GO_TYPE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(cannot_unmarshal("number", GO_TYPE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(cannot_unmarshal("number", GO_TYPE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(cannot_unmarshal("number", GO_TYPE))
            }
            /// Go also fills a `[]byte` from an array of numbers, one byte each.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<serde_json::Value>()? {
                    let kind = match &v {
                        serde_json::Value::Number(n) => {
                            let literal = n.to_string();
                            match literal.parse::<u8>() {
                                Ok(b) => {
                                    out.push(b);
                                    continue;
                                }
                                Err(_) => {
                                    return Err(de::Error::custom(format!(
                                    "json: cannot unmarshal number {literal} into Go value of type uint8"
                                )))
                                }
                            }
                        }
                        serde_json::Value::Null => {
                            out.push(0);
                            continue;
                        }
                        serde_json::Value::Bool(_) => "bool",
                        serde_json::Value::String(_) => "string",
                        serde_json::Value::Array(_) => "array",
                        serde_json::Value::Object(_) => "object",
                    };
                    return Err(cannot_unmarshal(kind, "uint8"));
                }
                Ok(Bytes(T::from(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(cannot_unmarshal("object", GO_TYPE))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// The integer types of etcd's request fields, with their Go names.
pub trait GoInt: Sized {
    const GO_TYPE: &'static str;
    fn from_i128(v: i128) -> Option<Self>;
}

macro_rules! go_int {
    ($($t:ty => $name:literal),+) => {
        $(impl GoInt for $t {
            const GO_TYPE: &'static str = $name;
            fn from_i128(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        })+
    };
}
go_int!(i64 => "int64", u64 => "uint64", i32 => "int32", u32 => "uint32");

/// Go's check of a JSON number literal against an integer type.
fn number_from_literal<T: GoInt, E: de::Error>(literal: &str) -> Result<T, E> {
    let out_of_type = || {
        E::custom(format!(
            "json: cannot unmarshal number {literal} into Go value of type {}",
            T::GO_TYPE
        ))
    };
    literal
        .parse::<i128>()
        .ok()
        .and_then(T::from_i128)
        .ok_or_else(out_of_type)
}

impl<'de, T: GoInt> Deserialize<'de> for Number<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: GoInt> Visitor<'de> for V<T> {
            type Value = Number<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                number_from_literal(&v.to_string()).map(Number)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                number_from_literal(&v.to_string()).map(Number)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "json: cannot unmarshal number {v} into Go value of type {}",
                    T::GO_TYPE
                )))
            }
            /// jsonpb drops the quotes of a quoted integer and decodes what is inside as JSON.
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                let inner = s.trim_matches(|c: char| c.is_ascii_whitespace());
                if inner.is_empty() {
                    return Err(E::custom("unexpected end of JSON input"));
                }
                match serde_json::from_str::<serde_json::Value>(inner) {
                    Ok(serde_json::Value::Number(_)) => number_from_literal(inner).map(Number),
                    Ok(serde_json::Value::Null) => T::from_i128(0)
                        .map(Number)
                        .ok_or_else(|| E::custom("zero is representable in every integer type")),
                    Ok(serde_json::Value::Bool(_)) => Err(cannot_unmarshal("bool", T::GO_TYPE)),
                    Ok(serde_json::Value::String(_)) => Err(cannot_unmarshal("string", T::GO_TYPE)),
                    Ok(serde_json::Value::Array(_)) => Err(cannot_unmarshal("array", T::GO_TYPE)),
                    Ok(serde_json::Value::Object(_)) => Err(cannot_unmarshal("object", T::GO_TYPE)),
                    Err(e) => Err(E::custom(syntax_error(inner.as_bytes(), &e))),
                }
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(cannot_unmarshal("bool", T::GO_TYPE))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(cannot_unmarshal("array", T::GO_TYPE))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(cannot_unmarshal("object", T::GO_TYPE))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// Go's `encoding/json` wording for a syntax error in `text`, for the common cases; serde_json's
/// wording otherwise.
pub fn syntax_error(text: &[u8], e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected EOF".to_string();
    }
    let message = e.to_string();
    let context = if message.starts_with("expected value") || message.starts_with("expected ident")
    {
        "looking for beginning of value"
    } else if message.starts_with("key must be a string") || message.starts_with("trailing comma") {
        "looking for beginning of object key string"
    } else if message.starts_with("expected `:`") {
        "after object key"
    } else if message.starts_with("expected `,` or `}`") {
        "after object key:value pair"
    } else if message.starts_with("expected `,` or `]`") {
        "after array element"
    } else if message.starts_with("trailing characters") {
        "after top-level value"
    } else {
        return message;
    };
    match offending_char(text, e.line(), e.column()) {
        Some(c) => format!("invalid character {} {context}", quote_char(c)),
        None => message,
    }
}

/// The first significant character at or after serde_json's position (1-based line and column,
/// the column counting bytes; at the end of input it points one past the last byte).
fn offending_char(text: &[u8], line: usize, column: usize) -> Option<char> {
    let text = std::str::from_utf8(text).ok()?;
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let at = line_start + column.saturating_sub(1);
    let rest = text
        .get(at..)
        .filter(|r| !r.is_empty())
        .or_else(|| text.get(at.saturating_sub(1)..))?;
    rest.chars().find(|c| !c.is_ascii_whitespace())
}

/// Go's `quoteChar`.
fn quote_char(c: char) -> String {
    match c {
        '\'' => r"'\''".to_string(),
        '"' => r#"'"'"#.to_string(),
        c if c.is_control() => format!("{c:?}"),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_errors_point_where_go_points() {
        // Offsets as Go's StdEncoding reports them (checked against etcd 3.4's gateway).
        let err = |s: &str| decode_base64(s.as_bytes()).unwrap_err();
        assert_eq!(err("not base64!"), "illegal base64 data at input byte 3");
        assert_eq!(err("Zm9"), "illegal base64 data at input byte 0");
        assert_eq!(err("Zm8"), "illegal base64 data at input byte 0");
        assert_eq!(err("Zm9v===="), "illegal base64 data at input byte 4");
        assert_eq!(err("Zm9v_-"), "illegal base64 data at input byte 4");
        assert_eq!(err("Z m9v"), "illegal base64 data at input byte 1");
        assert_eq!(decode_base64(b"Zm9v\n").unwrap(), b"foo");
        assert_eq!(decode_base64(b"Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64(b"Zg==").unwrap(), b"f");
        assert_eq!(decode_base64(b"").unwrap(), b"");
    }

    #[test]
    fn integers_may_be_quoted_and_fail_with_go_messages() {
        let n = |json: &str| {
            serde_json::from_str::<Number<i64>>(json)
                .map(|n| n.0)
                .map_err(|e| e.to_string())
        };
        assert_eq!(n("7"), Ok(7));
        assert_eq!(n("\"7\""), Ok(7));
        assert_eq!(n("-1"), Ok(-1));
        let msg = |json: &str| n(json).unwrap_err();
        assert!(
            msg("1.5").starts_with("json: cannot unmarshal number 1.5 into Go value of type int64")
        );
        assert!(msg("\"1e2\"")
            .starts_with("json: cannot unmarshal number 1e2 into Go value of type int64"));
        assert!(msg("true").starts_with("json: cannot unmarshal bool into Go value of type int64"));
        assert!(msg("\"abc\"").starts_with("invalid character 'a' looking for beginning of value"));
        assert!(msg("\"9223372036854775808\"").starts_with(
            "json: cannot unmarshal number 9223372036854775808 into Go value of type int64"
        ));
        let u = serde_json::from_str::<Number<u64>>("-1").map(|n| n.0);
        assert!(u
            .unwrap_err()
            .to_string()
            .starts_with("json: cannot unmarshal number -1 into Go value of type uint64"));
    }
}
