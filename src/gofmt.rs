//! The pieces of Go's standard library whose output etcdctl's users see, and whose parsing etcd's
//! flags follow (`strconv.ParseBool`, `time.ParseDuration`).
//!
//! etcdctl is a Go program, so every number, duration, quoted string and parse error it prints is
//! formatted by Go's `fmt`, `strconv` and `time` packages (and db sizes by go-humanize). Byte-for-byte
//! parity means reproducing those formatters, not approximating them with Rust's: `{:?}` of a
//! string is not `%q`, and `Duration`'s `Debug` is not `time.Duration.String()`. Each function here
//! names the Go function it mirrors and is tested against strings captured from real etcdctl.

use std::fmt::Write as _;

/// `strconv.Quote`: a double-quoted Go string literal. Printable runes (Go's `unicode.IsPrint`)
/// stay as they are, the rest become `\a`-style, `\xNN`, `\uNNNN` or `\UNNNNNNNN` escapes, and
/// bytes that are not UTF-8 become `\xNN`.
pub fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while !rest.is_empty() {
        let (decoded, width) = decode_rune(rest);
        let Some(r) = decoded else {
            let _ = write!(out, "\\x{:02x}", rest[0]);
            rest = &rest[1..];
            continue;
        };
        rest = &rest[width..];
        match r {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if is_print(r) => out.push(r),
            _ if (r as u32) < 0x20 || r == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", r as u32);
            }
            _ if (r as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", r as u32);
            }
            _ => {
                let _ = write!(out, "\\U{:08x}", r as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Decodes one UTF-8 rune from the front of `s`: `(Some(rune), width)`, or `(None, 1)` for a byte
/// that does not start a valid sequence (Go's `utf8.DecodeRune` returning `RuneError`).
pub fn decode_rune(s: &[u8]) -> (Option<char>, usize) {
    let width = match s.first() {
        None => return (None, 0),
        Some(b) if *b < 0x80 => 1,
        Some(b) if *b >= 0xf0 => 4,
        Some(b) if *b >= 0xe0 => 3,
        Some(b) if *b >= 0xc0 => 2,
        Some(_) => return (None, 1),
    };
    match s.get(..width).and_then(|p| std::str::from_utf8(p).ok()) {
        Some(text) => (text.chars().next(), width),
        None => (None, 1),
    }
}

/// Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols and the ASCII space),
/// approximated without Unicode category tables: controls, non-ASCII spaces, format characters,
/// private-use code points and noncharacters are not printable; everything else is.
pub fn is_print(r: char) -> bool {
    let c = r as u32;
    if r == ' ' {
        return true;
    }
    if r.is_control() || r.is_whitespace() {
        return false;
    }
    let format_chars: &[(u32, u32)] = &[
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x180e, 0x180e),
        (0x200b, 0x200f),
        (0x202a, 0x202e),
        (0x2060, 0x2064),
        (0x2066, 0x206f),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0x110bd, 0x110bd),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0001, 0xe0001),
        (0xe0020, 0xe007f),
        (0xe000, 0xf8ff),
        (0xf0000, 0x10ffff),
        (0xfdd0, 0xfdef),
    ];
    if format_chars.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) {
        return false;
    }
    (c & 0xfffe) != 0xfffe
}

/// `time.Duration.String()`: "1.5s", "2m3.000000004s", "850µs", "0s".
pub fn duration_string(nanos: i128) -> String {
    let neg = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        if u == 0 {
            return "0s".to_string();
        }
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (frac, int) = frac_digits(u, prec);
        out.push_str(&int.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let (frac, secs) = frac_digits(u, 9);
        u = secs;
        let s = u % 60;
        u /= 60;
        let mut text = format!("{s}{frac}s");
        if u > 0 {
            text = format!("{}m{text}", u % 60);
            u /= 60;
            if u > 0 {
                text = format!("{u}h{text}");
            }
        }
        out.push_str(&text);
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Go's `fmtFrac`: the fraction of `v / 10^prec` without trailing zeros (and without the dot when
/// the fraction is zero), plus the integer part.
fn frac_digits(v: u128, prec: u32) -> (String, u128) {
    let div = 10u128.pow(prec);
    let (int, frac) = (v / div, v % div);
    if prec == 0 || frac == 0 {
        return (String::new(), int);
    }
    let digits = format!("{:0width$}", frac, width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), int)
}

/// `time.ParseDuration`, with Go's error texts.
pub fn parse_duration(s: &str) -> Result<i128, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {}", quote(orig.as_bytes()));
    let mut rest = s;
    let mut neg = false;
    if let Some(c) = rest.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            rest = &rest[1..];
        }
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if rest.starts_with('.') {
            rest = &rest[1..];
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            rest = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                quote(orig.as_bytes())
            ));
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit.as_bytes()),
                    quote(orig.as_bytes())
                ))
            }
        };
        let number: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            if frac_part.is_empty() { "0" } else { frac_part }
        )
        .parse()
        .map_err(|_| invalid())?;
        total += number * scale;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let nanos = total.round() as i128;
    Ok(if neg { -nanos } else { nanos })
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            quote(s.as_bytes())
        )),
    }
}

/// `strconv.ParseInt(s, base, 64)` for base 0 (prefix-detected, underscores allowed), 10 or 16,
/// with Go's error texts.
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let syntax = || {
        format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            quote(s.as_bytes())
        )
    };
    let range = || {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            quote(s.as_bytes())
        )
    };
    let mut body = s;
    let mut neg = false;
    if let Some(first) = body.as_bytes().first() {
        if *first == b'+' || *first == b'-' {
            neg = *first == b'-';
            body = &body[1..];
        }
    }
    if body.is_empty() {
        return Err(syntax());
    }
    let mut radix = base;
    let mut digits = body;
    let mut prefixed = false;
    if base == 0 {
        radix = 10;
        let lower = body.to_ascii_lowercase();
        if body.len() >= 2 && body.starts_with('0') {
            prefixed = true;
            if lower.starts_with("0x") {
                radix = 16;
                digits = &body[2..];
            } else if lower.starts_with("0o") {
                radix = 8;
                digits = &body[2..];
            } else if lower.starts_with("0b") {
                radix = 2;
                digits = &body[2..];
            } else {
                radix = 8;
                digits = &body[1..];
            }
        }
    }
    let mut value: u128 = 0;
    let mut saw_digit = false;
    let mut last_underscore = prefixed;
    for c in digits.chars() {
        if c == '_' && base == 0 {
            if last_underscore && saw_digit {
                return Err(syntax());
            }
            last_underscore = true;
            continue;
        }
        let Some(d) = c.to_digit(radix) else {
            return Err(syntax());
        };
        saw_digit = true;
        last_underscore = false;
        value = value
            .saturating_mul(radix as u128)
            .saturating_add(d as u128);
    }
    if !saw_digit || (base == 0 && last_underscore && digits.ends_with('_')) {
        return Err(syntax());
    }
    let limit = if neg { 1u128 << 63 } else { (1u128 << 63) - 1 };
    if value > limit {
        return Err(range());
    }
    let v = value as i128;
    Ok((if neg { -v } else { v }) as i64)
}

/// `strconv.ParseUint(s, base, 64)` for base 10 or 16 (no sign, prefix or underscores), with
/// Go's error texts.
pub fn parse_uint(s: &str, base: u32) -> Result<u64, String> {
    let fail = |what: &str| format!("strconv.ParseUint: parsing {}: {what}", quote(s.as_bytes()));
    if s.is_empty() {
        return Err(fail("invalid syntax"));
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    for c in s.chars() {
        let Some(d) = c.to_digit(base) else {
            return Err(fail("invalid syntax"));
        };
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    if overflow {
        return Err(fail("value out of range"));
    }
    Ok(value)
}

/// Go's `fmt.Sprintf("%016x", v)` of a signed integer: zero-padded hex, the sign counting
/// towards the width.
pub fn hex016(v: i64) -> String {
    if v < 0 {
        format!("-{:015x}", v.unsigned_abs())
    } else {
        format!("{v:016x}")
    }
}

/// Go's `%v` of a `[]string`: the elements between brackets, separated by spaces.
pub fn string_slice(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// What Go's os package says after the path for a failed file operation: "no such file or
/// directory", "permission denied", else the system's text without Rust's "(os error N)".
pub fn os_error_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            text.to_lowercase()
        }
    }
}

/// go-humanize's `Bytes`: SI units, "20 kB", "1.5 MB", "9 B".
pub fn humanize_bytes(size: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let base: f64 = 1000.0;
    let e = ((size as f64).ln() / base.ln()).floor();
    let suffix = SIZES[e as usize];
    let val = ((size as f64) / base.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// Go's `strconv.Unquote` for a double-quoted or back-quoted literal (quotes included).
pub fn unquote(s: &str) -> Result<Vec<u8>, ()> {
    let bytes = s.as_bytes();
    if bytes.len() < 2 {
        return Err(());
    }
    let quote_char = bytes[0];
    if quote_char != bytes[bytes.len() - 1] {
        return Err(());
    }
    let inner = &s[1..s.len() - 1];
    if quote_char == b'`' {
        if inner.contains('`') {
            return Err(());
        }
        return Ok(inner.replace('\r', "").into_bytes());
    }
    if quote_char != b'"' || inner.contains('\n') {
        return Err(());
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(()),
            '\\' => {
                let e = chars.next().ok_or(())?;
                match e {
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'v' => out.push(11),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v: u32 = 0;
                        for _ in 0..n {
                            let d = chars.next().and_then(|h| h.to_digit(16)).ok_or(())?;
                            v = (v << 4) | d;
                        }
                        if e == 'x' {
                            out.push(v as u8);
                        } else {
                            let r = char::from_u32(v).ok_or(())?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(r.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8).ok_or(())?;
                        for _ in 0..2 {
                            let d = chars.next().and_then(|h| h.to_digit(8)).ok_or(())?;
                            v = (v << 3) | d;
                        }
                        if v > 255 {
                            return Err(());
                        }
                        out.push(v as u8);
                    }
                    _ => return Err(()),
                }
            }
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Ok(out)
}

/// Go's `strings.TrimSpace` (Unicode white space on both ends).
pub fn trim_space(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace())
}

/// The space set of Go's `fmt` scanner (`isSpace` in fmt/scan.go).
pub fn is_scan_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// The civil date and time of a Unix timestamp shifted by `offset_secs`:
/// (year, month, day, hour, minute, second).
pub fn civil(unix_secs: i64, offset_secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let t = unix_secs + offset_secs;
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        (sod % 60) as u32,
    )
}

/// zap's ISO8601 time encoder: "2006-01-02T15:04:05.000Z0700".
pub fn zap_time(unix_secs: i64, nanos: u32, offset_secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs, offset_secs);
    let zone = if offset_secs == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_secs < 0 { '-' } else { '+' };
        let a = offset_secs.abs();
        format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
    };
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}{zone}",
        nanos / 1_000_000
    )
}

/// capnslog's timestamp: "2006-01-02 15:04:05.000000" in local time.
pub fn capnslog_time(unix_secs: i64, nanos: u32, offset_secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs, offset_secs);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:06}",
        nanos / 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_uint_hex_like_strconv() {
        assert_eq!(parse_uint("8b467035691db75e", 16), Ok(0x8b467035691db75e));
        assert_eq!(parse_uint("FF", 16), Ok(255));
        for bad in ["", "-5", "+5", "0x10", "zz"] {
            assert_eq!(
                parse_uint(bad, 16),
                Err(format!(
                    "strconv.ParseUint: parsing {}: invalid syntax",
                    quote(bad.as_bytes())
                ))
            );
        }
        assert_eq!(
            parse_uint("ffffffffffffffffff", 16),
            Err("strconv.ParseUint: parsing \"ffffffffffffffffff\": value out of range".into())
        );
    }

    #[test]
    fn hex016_pads_like_go() {
        assert_eq!(hex016(0x1234), "0000000000001234");
        assert_eq!(hex016(0x2dfca217e9fb6505), "2dfca217e9fb6505");
        assert_eq!(hex016(-0x10), "-000000000000010");
        assert_eq!(string_slice(&["k1".into(), "k 2".into()]), "[k1 k 2]");
    }

    #[test]
    fn quote_matches_go_strconv_quote() {
        // `etcdctl get k2 -w fields` printed "Value" : "x\"y<>&é" for the value x"y<>&é.
        assert_eq!(quote("x\"y<>&é".as_bytes()), r#""x\"y<>&é""#);
        assert_eq!(quote(b"a\nb\x00\x7f"), r#""a\nb\x00\x7f""#);
        assert_eq!(quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(quote("\u{a0}\u{200b}".as_bytes()), r#""\u00a0\u200b""#);
        assert_eq!(quote("\u{10ffff}".as_bytes()), r#""\U0010ffff""#);
        assert_eq!(quote(b""), r#""""#);
    }

    #[test]
    fn duration_string_matches_go() {
        assert_eq!(duration_string(0), "0s");
        assert_eq!(duration_string(999), "999ns");
        assert_eq!(duration_string(1_500), "1.5µs");
        assert_eq!(duration_string(1_965_233), "1.965233ms");
        assert_eq!(duration_string(5_001_105_543), "5.001105543s");
        assert_eq!(duration_string(2_000_000_000), "2s");
        assert_eq!(duration_string(62_500_000_000), "1m2.5s");
        assert_eq!(duration_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration_string(-1_000_000), "-1ms");
    }

    #[test]
    fn parse_duration_matches_go() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(
            parse_duration("xx"),
            Err(r#"time: invalid duration "xx""#.to_string())
        );
        assert_eq!(
            parse_duration("5"),
            Err(r#"time: missing unit in duration "5""#.to_string())
        );
        assert_eq!(
            parse_duration("5x"),
            Err(r#"time: unknown unit "x" in duration "5x""#.to_string())
        );
    }

    #[test]
    fn parse_int_matches_go_errors() {
        assert_eq!(parse_int("42", 10), Ok(42));
        assert_eq!(parse_int("-7", 10), Ok(-7));
        assert_eq!(parse_int("0x10", 0), Ok(16));
        assert_eq!(parse_int("1a", 16), Ok(26));
        assert_eq!(
            parse_int("abc", 10),
            Err(r#"strconv.ParseInt: parsing "abc": invalid syntax"#.to_string())
        );
        assert_eq!(
            parse_int("99999999999999999999", 10),
            Err(
                r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#
                    .to_string()
            )
        );
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.to_string())
        );
        assert!(parse_int("", 10).is_err());
    }

    #[test]
    fn parse_bool_matches_go() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("F"), Ok(false));
        assert_eq!(
            parse_bool("bogus"),
            Err(r#"strconv.ParseBool: parsing "bogus": invalid syntax"#.to_string())
        );
    }

    #[test]
    fn humanize_bytes_matches_go_humanize() {
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(24576), "25 kB");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(1_500_000), "1.5 MB");
        assert_eq!(humanize_bytes(82_000), "82 kB");
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(1_000_000), "1.0 MB");
        // 123.5 rounds half to even, as Go's %.0f does.
        assert_eq!(humanize_bytes(123_456_789), "124 MB");
    }

    #[test]
    fn unquote_matches_go() {
        assert_eq!(unquote(r#""a\"b""#), Ok(b"a\"b".to_vec()));
        assert_eq!(unquote(r#""t\x31""#), Ok(b"t1".to_vec()));
        assert_eq!(unquote(r#""\101\u00e9""#), Ok("Aé".as_bytes().to_vec()));
        assert_eq!(unquote(r#""a\qb""#), Err(()));
        assert_eq!(unquote(r#""a\'b""#), Err(()));
        assert_eq!(unquote("`raw\\n`"), Ok(b"raw\\n".to_vec()));
    }

    #[test]
    fn timestamps_match_zap_and_capnslog() {
        // 2026-11-26T12:03:07.848Z
        let secs = 1_795_694_587;
        assert_eq!(zap_time(secs, 848_123_456, 0), "2026-11-26T12:03:07.848Z");
        assert_eq!(zap_time(secs, 0, 3600), "2026-11-26T13:03:07.000+0100");
        assert_eq!(
            capnslog_time(secs, 774_115_000, 0),
            "2026-11-26 12:03:07.774115"
        );
    }
}
