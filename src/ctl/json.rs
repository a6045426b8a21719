//! etcdctl's `-w json`: Go's `encoding/json` applied to etcd's gogo-protobuf structs.
//!
//! Three Go rules shape every byte. Fields come out in struct order, under the name in their json
//! tag (the proto field name, so `cluster_id` in headers but `dbSize` in a status). Every proto
//! field is tagged `omitempty`, so zero numbers, `false`, empty byte strings, empty lists and nil
//! messages are left out. And `[]byte` is base64 (standard alphabet, padded) while strings are
//! escaped the Go way: `<`, `>` and `&` as `\u003c`-style escapes, control bytes as `\u00XX`
//! except `\n`, `\r`, `\t`, and invalid UTF-8 as U+FFFD. The builder below keeps those rules in
//! one place so the printers only list fields.

use base64::Engine as _;

use super::gofmt::decode_rune;

/// A JSON object under construction, with `omitempty` helpers.
#[derive(Default)]
pub struct Obj {
    buf: String,
    fields: usize,
}

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `"name":<raw json>` unconditionally.
    pub fn raw(mut self, name: &str, json: &str) -> Self {
        if self.fields > 0 {
            self.buf.push(',');
        }
        self.buf.push_str(&string(name.as_bytes()));
        self.buf.push(':');
        self.buf.push_str(json);
        self.fields += 1;
        self
    }

    /// A signed integer field, left out when zero.
    pub fn int(self, name: &str, v: i64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    /// An unsigned integer field, left out when zero.
    pub fn uint(self, name: &str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    /// A boolean field, left out when false.
    pub fn boolean(self, name: &str, v: bool) -> Self {
        if v {
            self.raw(name, "true")
        } else {
            self
        }
    }

    /// A byte-string field (base64), left out when empty.
    pub fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &base64(v))
        }
    }

    /// A string field, left out when empty.
    pub fn str(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &string(v.as_bytes()))
        }
    }

    /// A nested message, left out when absent.
    pub fn opt(self, name: &str, v: Option<String>) -> Self {
        match v {
            Some(json) => self.raw(name, &json),
            None => self,
        }
    }

    /// A repeated field of already-encoded elements, left out when empty.
    pub fn list(self, name: &str, items: &[String]) -> Self {
        if items.is_empty() {
            self
        } else {
            self.raw(name, &array(items))
        }
    }

    pub fn finish(self) -> String {
        format!("{{{}}}", self.buf)
    }
}

/// Go's json of a `[]byte`: a base64 string (standard alphabet, padded).
pub fn base64(v: &[u8]) -> String {
    format!(
        "\"{}\"",
        ::base64::engine::general_purpose::STANDARD.encode(v)
    )
}

/// A JSON array of already-encoded elements.
pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// A Go `encoding/json` string literal for `s`.
pub fn string(s: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while !rest.is_empty() {
        let (decoded, width) = decode_rune(rest);
        let width = width.max(1);
        rest = &rest[width..];
        let Some(c) = decoded else {
            out.push_str("\\ufffd");
            continue;
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string(b"3.4.23"), r#""3.4.23""#);
        assert_eq!(string(b"a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(string(b"\x08\x0c\n\x01"), r#""\u0008\u000c\n\u0001""#);
        assert_eq!(string(b"\xffok"), r#""\ufffdok""#);
        assert_eq!(string("é\"".as_bytes()), "\"é\\\"\"");
    }

    #[test]
    fn omitempty_leaves_out_zero_values() {
        let json = Obj::new()
            .uint("cluster_id", 0)
            .int("revision", 15)
            .boolean("more", false)
            .bytes("key", b"foo")
            .bytes("value", b"")
            .list("kvs", &[])
            .finish();
        assert_eq!(json, r#"{"revision":15,"key":"Zm9v"}"#);
        assert_eq!(Obj::new().finish(), "{}");
    }
}
