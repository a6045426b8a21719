//! The `txn` input language: compares such as `mod("k") > "0"` and request lines such as
//! `put k v --prev-kv`.
//!
//! etcdctl parses a compare with Go's `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)` after
//! splitting the line at its first `(`, and reports how far the scan got when it fails; so this
//! module reproduces that scanner (quoted strings with Go escapes or back quotes, a space in the
//! format needing at least one space in the input, `%s` reading up to the next space) rather than
//! a friendlier grammar. A request line is split into words by etcdctl's `Argify` regular
//! expression and then parsed as a `get`, `put` or `del` command line, flags and all.
//!
//! Three bugs of etcdctl 3.4.23 are kept on purpose, since they decide what its users see:
//!
//! * an operator other than `=`, `!=`, `>`, `<` panics ("Unknown result op"), and so does every
//!   `lease(...)` compare ("bad value"), because 3.4 passes the lease operand to clientv3 as a
//!   string;
//! * `Argify` strips a single-quoted word with `word[1 : len(words)-1]`, indexing by the number of
//!   words on the line instead of the word's length: `put 't 1' 'v v'` writes key `t` with value
//!   `v`, and a slice past either end panics.
//!
//! A panic exits with status 2 after Go's panic text.

use std::io::Write;

use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::{request_op, Compare, RequestOp};

use super::flags::{Flags, HELP};
use super::{gofmt, help, ops, Fail, EXIT_INVALID_INPUT};

/// etcdctl's `Argify`: the words of a request line. Double-quoted words are unquoted with Go
/// rules (an invalid escape is an error), single-quoted words lose their quotes.
pub fn argify(line: &str) -> Result<Vec<String>, Fail> {
    let chars: Vec<char> = line.chars().collect();
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // "(?:[^"\\]|\\.)*"
            let mut j = i + 1;
            let mut closed = None;
            while j < chars.len() {
                match chars[j] {
                    '\\' if j + 1 < chars.len() && chars[j + 1] != '\n' => j += 2,
                    '\\' => break,
                    '"' => {
                        closed = Some(j);
                        break;
                    }
                    _ => j += 1,
                }
            }
            if let Some(end) = closed {
                let quoted: String = chars[i..=end].iter().collect();
                let value = gofmt::unquote(&quoted)
                    .map_err(|()| Fail::Error(EXIT_INVALID_INPUT, "invalid syntax".into()))?;
                words.push(Word::Plain(String::from_utf8_lossy(&value).into_owned()));
                i = end + 1;
                continue;
            }
        } else if c == '\'' {
            // '[^']*', stripped below once the number of words is known.
            if let Some(off) = chars[i + 1..].iter().position(|&x| x == '\'') {
                words.push(Word::SingleQuoted(chars[i..i + 2 + off].iter().collect()));
                i = i + 2 + off;
                continue;
            }
        } else if !is_space(c) {
            // [^'"\s]\S*[^'"\s]?
            let mut j = i + 1;
            while j < chars.len() && !is_space(chars[j]) {
                j += 1;
            }
            words.push(Word::Plain(chars[i..j].iter().collect()));
            i = j;
            continue;
        }
        i += 1;
    }
    let count = words.len();
    words
        .into_iter()
        .map(|w| match w {
            Word::Plain(s) => Ok(s),
            Word::SingleQuoted(s) => {
                // etcdctl 3.4: `args[i] = args[i][1 : len(args)-1]`.
                let bytes = s.as_bytes();
                let end = count.wrapping_sub(1);
                if count == 0 || end > bytes.len() {
                    let message = format!(
                        "slice bounds out of range [:{end}] with length {}",
                        bytes.len()
                    );
                    return Err(Fail::Panic(PanicSite::ArgifySlice {
                        message,
                        line_bytes: line.len(),
                    }));
                }
                if end < 1 {
                    let message = format!("slice bounds out of range [1:{end}]");
                    return Err(Fail::Panic(PanicSite::ArgifySlice {
                        message,
                        line_bytes: line.len(),
                    }));
                }
                Ok(String::from_utf8_lossy(&bytes[1..end]).into_owned())
            }
        })
        .collect()
}

/// A word of a request line before single-quoted words are stripped.
enum Word {
    Plain(String),
    SingleQuoted(String),
}

/// The state of an emulated `fmt.Sscanf` over one input string.
struct Scanner {
    input: Vec<char>,
    pos: usize,
}

/// A failed scan; how many operands were stored before it is tracked by the caller.
struct ScanError;

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// `SkipSpace` for Sscanf: spaces are skipped, a newline is an error.
    fn skip_space(&mut self) -> Result<(), ScanError> {
        while let Some(c) = self.peek() {
            if c == '\r' && self.input.get(self.pos + 1) == Some(&'\n') {
                self.pos += 1;
                continue;
            }
            if c == '\n' {
                return Err(ScanError);
            }
            if !gofmt::is_scan_space(c) {
                break;
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn not_eof(&self) -> Result<(), ScanError> {
        self.peek().map(|_| ()).ok_or(ScanError)
    }

    /// A literal rune of the format.
    fn literal(&mut self, want: char) -> Result<(), ScanError> {
        match self.next() {
            Some(c) if c == want => Ok(()),
            _ => Err(ScanError),
        }
    }

    /// A lone space in the format: one or more spaces, or the end of the input.
    fn format_space(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => return Ok(()),
            Some('\n') => return Err(ScanError),
            Some(c) if !gofmt::is_scan_space(c) => return Err(ScanError),
            Some(_) => {}
        }
        while let Some(c) = self.peek() {
            if !gofmt::is_scan_space(c) || c == '\n' {
                break;
            }
            self.pos += 1;
        }
        Ok(())
    }

    /// `%q`: a Go double-quoted or back-quoted string.
    fn quoted(&mut self) -> Result<Vec<u8>, ScanError> {
        self.skip_space()?;
        self.not_eof()?;
        match self.next() {
            Some('`') => {
                let mut s = String::new();
                loop {
                    match self.next() {
                        Some('`') => return Ok(s.into_bytes()),
                        Some(c) => s.push(c),
                        None => return Err(ScanError),
                    }
                }
            }
            Some('"') => {
                let mut s = String::from('"');
                loop {
                    let c = self.next().ok_or(ScanError)?;
                    s.push(c);
                    if c == '\\' {
                        s.push(self.next().ok_or(ScanError)?);
                    } else if c == '"' {
                        break;
                    }
                }
                gofmt::unquote(&s).map_err(|()| ScanError)
            }
            _ => Err(ScanError),
        }
    }

    /// `%s`: the next run of non-space runes.
    fn word(&mut self) -> Result<String, ScanError> {
        self.skip_space()?;
        self.not_eof()?;
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if gofmt::is_scan_space(c) {
                break;
            }
            s.push(c);
            self.pos += 1;
        }
        Ok(s)
    }
}

/// `fmt.Sscanf(input, "%q) %s %q", &key, &op, &val)`: the number of operands stored and their
/// values (empty when not stored).
fn scan_compare(input: &str) -> (usize, Vec<u8>, String, Vec<u8>) {
    let mut s = Scanner {
        input: input.chars().collect(),
        pos: 0,
    };
    let (mut key, mut op, mut val) = (Vec::new(), String::new(), Vec::new());
    let mut n = 0;
    let _ = (|| -> Result<(), ScanError> {
        key = s.quoted()?;
        n = 1;
        s.literal(')')?;
        s.format_space()?;
        op = s.word()?;
        n = 2;
        s.format_space()?;
        val = s.quoted()?;
        n = 3;
        Ok(())
    })();
    (n, key, op, val)
}

/// etcdctl's `parseCompare`.
pub fn parse_compare(line: &str) -> Result<Compare, Fail> {
    let malformed = |detail: String| {
        Fail::Error(
            EXIT_INVALID_INPUT,
            format!("malformed comparison: {detail}"),
        )
    };
    let Some((target, rest)) = line.split_once('(') else {
        return Err(malformed(line.to_string()));
    };
    let (n, key, op, val) = scan_compare(rest);
    if n != 3 {
        return Err(malformed(format!(
            "{line}; got {target}({}) {op} {}",
            gofmt::quote(&key),
            gofmt::quote(&val)
        )));
    }
    let invalid = || {
        Fail::Error(
            EXIT_INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        )
    };
    let int_operand = || -> Result<i64, Fail> {
        let text = String::from_utf8_lossy(&val).into_owned();
        gofmt::parse_int(&text, 10).map_err(|_| invalid())
    };
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int_operand()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(int_operand()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int_operand()?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(val.clone())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(0)),
        other => return Err(malformed(format!("{line} (unknown target {other})"))),
    };
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ if target == CompareTarget::Lease => {
            return Err(Fail::Panic(PanicSite::LeaseUnknownResultOp))
        }
        _ => return Err(Fail::Panic(PanicSite::UnknownResultOp)),
    };
    if target == CompareTarget::Lease {
        return Err(Fail::Panic(PanicSite::LeaseBadValue));
    }
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Where etcdctl 3.4.23 panics: on some `txn` input, and printing `member promote`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PanicSite {
    /// `clientv3.Compare` with an operator it does not know.
    UnknownResultOp,
    /// The same, for a lease compare (a different call site).
    LeaseUnknownResultOp,
    /// `clientv3.Compare` on a lease with a string operand.
    LeaseBadValue,
    /// `Argify` slicing a single-quoted word out of range.
    ArgifySlice { message: String, line_bytes: usize },
    /// `member promote` printing in any format but simple: etcdctl 3.4's printers have no
    /// `MemberPromote` and call it on a nil interface. `args` is how many arguments cobra handed
    /// the command (they show in the trace).
    MemberPromotePrinter { args: usize },
    /// `alarm list` or `alarm disarm` printing with `-w fields`: the fields printer reads the
    /// header etcd never sends. `args` as for `MemberPromotePrinter`.
    AlarmFieldsPrinter { disarm: bool, args: usize },
    /// `Argify`'s slicing bug on an interactive `watch` line. Besides the message and the
    /// line's length, the trace shows how many process arguments, command arguments and
    /// positional arguments there were, and the lengths of `ETCDCTL_WATCH_KEY` and
    /// `ETCDCTL_WATCH_RANGE_END` (`None` when unset: Go shows a nil pointer then).
    WatchArgifySlice {
        message: String,
        line_bytes: usize,
        os_args: usize,
        args: usize,
        positional: usize,
        env_key_bytes: Option<usize>,
        env_range_bytes: Option<usize>,
    },
}

/// The commands a request line may name, in the order cobra searches them for a prefix match.
const REQUEST_COMMANDS: &[&str] = &["put", "get", "del", "help", "completion"];

/// etcdctl's `parseRequestUnion`: one request line of a `txn` section. A flag error prints the
/// command's usage to `err` first, as cobra does.
pub fn parse_request(line: &str, err: &mut dyn Write) -> Result<RequestOp, Fail> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(Fail::Error(
            EXIT_INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        ));
    }
    let invalid = || Fail::Error(EXIT_INVALID_INPUT, format!("invalid txn request: {line}"));
    let word = first_command_word(&args).ok_or_else(invalid)?;
    let name = REQUEST_COMMANDS
        .iter()
        .find(|c| **c == word)
        .or_else(|| {
            let matches: Vec<&&str> = REQUEST_COMMANDS
                .iter()
                .filter(|c| c.starts_with(&word))
                .collect();
            (matches.len() == 1).then(|| matches[0])
        })
        .copied()
        .ok_or_else(invalid)?;
    let (defs, usage) = match name {
        "put" => (ops::PUT_FLAGS, help::TXN_PUT_USAGE),
        "get" => (ops::GET_FLAGS, help::TXN_GET_USAGE),
        "del" => (ops::DEL_FLAGS, help::TXN_DEL_USAGE),
        _ => return Err(invalid()),
    };
    let mut rest = args.clone();
    if let Some(at) = rest.iter().position(|a| *a == word) {
        rest.remove(at);
    }
    let mut flags = Flags::new(defs);
    let positional = match flags.parse(&rest) {
        Ok(p) => p,
        Err(_) => {
            let _ = writeln!(err, "{usage}");
            return Err(invalid());
        }
    };
    if flags.bool(HELP.name) {
        return Err(invalid());
    }
    let request = match name {
        "put" => {
            request_op::Request::RequestPut(ops::put_request(&flags, &positional, &mut || None)?)
        }
        "get" => request_op::Request::RequestRange(ops::range_request(&flags, &positional)?),
        _ => request_op::Request::RequestDeleteRange(ops::delete_request(&flags, &positional)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// cobra's `stripFlags` for a root whose only flag is `--help`: the first word that is not a
/// flag or a flag's value.
fn first_command_word(args: &[String]) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        let remaining = args.len() - i;
        if s == "--" {
            return None;
        }
        let long_takes_value = s.starts_with("--") && !s.contains('=') && &s[2..] != "help";
        let short_takes_value = s.starts_with('-') && !s.contains('=') && s.len() == 2 && s != "-h";
        if long_takes_value || short_takes_value {
            if remaining <= 1 {
                return None;
            }
            i += 1;
            continue;
        }
        if !s.is_empty() && !s.starts_with('-') {
            return Some(s.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn err_text(r: Result<Compare, Fail>) -> String {
        match r.unwrap_err() {
            Fail::Error(3, msg) => msg,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn argify_splits_like_etcdctl() {
        let words = argify(r#"put "t 1" plain"#).unwrap();
        assert_eq!(words, vec!["put", "t 1", "plain"]);
        // etcdctl 3.4's slicing bug: 't 1' with three words on the line becomes "t".
        assert_eq!(argify("put 't 1' 'v v'").unwrap(), vec!["put", "t", "v"]);
        assert_eq!(
            argify("put 'abcdef' 'xyz' a b").unwrap(),
            vec!["put", "abc", "xyz", "a", "b"]
        );
        assert_eq!(
            argify("'abc'").unwrap_err_panic(),
            PanicSite::ArgifySlice {
                message: "slice bounds out of range [1:0]".into(),
                line_bytes: 5
            }
        );
        assert_eq!(
            argify("put a 'b' c d e f g").unwrap_err_panic(),
            PanicSite::ArgifySlice {
                message: "slice bounds out of range [:7] with length 3".into(),
                line_bytes: 19
            }
        );
        assert_eq!(
            argify(r#"put t1 "a\"b""#).unwrap(),
            vec!["put", "t1", "a\"b"]
        );
        // An unterminated quote is skipped and the rest is a plain word.
        assert_eq!(
            argify(r#"put t1 "unterminated"#).unwrap(),
            vec!["put", "t1", "unterminated"]
        );
        assert!(
            matches!(argify(r#"put t1 "a\qb""#), Err(Fail::Error(3, m)) if m == "invalid syntax")
        );
    }

    #[test]
    fn compares_parse_into_etcd_compares() {
        let c = parse_compare(r#"mod("k") > "0""#).unwrap();
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.key, b"k");
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(0)));

        let c = parse_compare(r#"val("t1") != "c""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"c".to_vec())));
        assert_eq!(c.result, CompareResult::NotEqual as i32);

        let c = parse_compare(r#"c( "t\x31")   <   "13""#).unwrap();
        assert_eq!(c.key, b"t1");
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(13)));

        let c = parse_compare(r#"ver(`k`) = "3""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Version(3)));
    }

    #[test]
    fn compare_errors_match_etcdctl() {
        // Each expected text was printed by etcdctl 3.4.23 after "Error: ".
        let cases = [
            (
                r#"version("t1") > 3"#,
                r#"malformed comparison: version("t1") > 3; got version("t1") > """#,
            ),
            (
                r#"value(t1) = "c""#,
                r#"malformed comparison: value(t1) = "c"; got value("")  """#,
            ),
            (
                r#"value("t1")="c""#,
                r#"malformed comparison: value("t1")="c"; got value("t1")  """#,
            ),
            (
                r#"value("t1")"#,
                r#"malformed comparison: value("t1"); got value("t1")  """#,
            ),
            (
                r#"value("t1") ="#,
                r#"malformed comparison: value("t1") =; got value("t1") = """#,
            ),
            (
                r#"value("t1" ) = "c""#,
                r#"malformed comparison: value("t1" ) = "c"; got value("t1")  """#,
            ),
            ("nothing", "malformed comparison: nothing"),
            (
                r#"foo("t1") = "1""#,
                r#"malformed comparison: foo("t1") = "1" (unknown target foo)"#,
            ),
            (
                r#"value ("t1") = "c""#,
                r#"malformed comparison: value ("t1") = "c" (unknown target value )"#,
            ),
            (
                r#"version("t1") = "x""#,
                r#"invalid txn compare request: version("t1") = "x""#,
            ),
            (
                r#"version("t1") = "99999999999999999999""#,
                r#"invalid txn compare request: version("t1") = "99999999999999999999""#,
            ),
            (
                "put t1 c --prev-kv",
                "malformed comparison: put t1 c --prev-kv",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(err_text(parse_compare(line)), want, "{line}");
        }
    }

    #[test]
    fn etcdctl_panics_are_kept() {
        for (line, site) in [
            (r#"value("t1") == "c""#, PanicSite::UnknownResultOp),
            (r#"value("t1") >= "c""#, PanicSite::UnknownResultOp),
            (r#"lease("t1") = "0""#, PanicSite::LeaseBadValue),
            (r#"lease("t1") == "0""#, PanicSite::LeaseUnknownResultOp),
        ] {
            assert!(
                matches!(parse_compare(line), Err(Fail::Panic(s)) if s == site),
                "{line}"
            );
        }
    }

    trait PanicOf {
        fn unwrap_err_panic(self) -> PanicSite;
    }

    impl<T: std::fmt::Debug> PanicOf for Result<T, Fail> {
        fn unwrap_err_panic(self) -> PanicSite {
            match self.unwrap_err() {
                Fail::Panic(site) => site,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn request_lines_become_ops() {
        let mut sink = Vec::new();
        let op = parse_request("put t1 b --prev-kv", &mut sink).unwrap();
        assert_eq!(
            op.request,
            Some(request_op::Request::RequestPut(PutRequest {
                key: b"t1".to_vec(),
                value: b"b".to_vec(),
                prev_kv: true,
                ..Default::default()
            }))
        );
        let op = parse_request("d k --prefix", &mut sink).unwrap();
        assert_eq!(
            op.request,
            Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    ..Default::default()
                }
            ))
        );
        assert!(sink.is_empty());
    }

    #[test]
    fn request_line_errors_match_etcdctl() {
        let mut sink = Vec::new();
        let msg = |r: Result<RequestOp, Fail>| match r.unwrap_err() {
            Fail::Error(code, m) => (code, m),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(parse_request("get", &mut sink)),
            (3, "invalid txn compare request: get".into())
        );
        assert_eq!(
            msg(parse_request("delete t1", &mut sink)),
            (3, "invalid txn request: delete t1".into())
        );
        assert_eq!(
            msg(parse_request("put t1", &mut sink)),
            (
                128,
                "put command needs 1 argument and input from stdin or 2 arguments".into()
            )
        );
        assert!(sink.is_empty());
        assert_eq!(
            msg(parse_request("get t1 --bogus", &mut sink)),
            (3, "invalid txn request: get t1 --bogus".into())
        );
        assert_eq!(
            String::from_utf8(sink).unwrap(),
            format!("{}\n", help::TXN_GET_USAGE)
        );
    }
}
