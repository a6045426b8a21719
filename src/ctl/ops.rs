//! The requests behind `get`, `put` and `del`, built from parsed flags and arguments.
//!
//! etcdctl builds the same operation for the top-level command and for a line of `txn` input
//! (it re-parses the line with the command's own flags), so both paths share these builders and
//! their validation: which argument counts are accepted, in which order the checks run, and the
//! exact error text and exit code of each.

use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

use super::flags::{Def, Flags, Kind, HELP};
use super::{gofmt, Fail, EXIT_BAD_ARGS, EXIT_BAD_FEATURE};

const fn local(name: &'static str, kind: Kind, default: &'static str) -> Def {
    Def {
        name,
        short: None,
        kind,
        default,
    }
}

/// `get`'s own flags. The last five are cairnctl extensions that etcdctl 3.4 does not have.
pub const GET_FLAGS: &[Def] = &[
    local("consistency", Kind::Str, "l"),
    local("from-key", Kind::Bool, "false"),
    HELP,
    local("keys-only", Kind::Bool, "false"),
    local("limit", Kind::Int, "0"),
    local("order", Kind::Str, ""),
    local("prefix", Kind::Bool, "false"),
    local("print-value-only", Kind::Bool, "false"),
    local("rev", Kind::Int, "0"),
    local("sort-by", Kind::Str, ""),
    local("count-only", Kind::Bool, "false"),
    local("min-mod-rev", Kind::Int, "0"),
    local("max-mod-rev", Kind::Int, "0"),
    local("min-create-rev", Kind::Int, "0"),
    local("max-create-rev", Kind::Int, "0"),
];

/// `put`'s own flags.
pub const PUT_FLAGS: &[Def] = &[
    HELP,
    local("ignore-lease", Kind::Bool, "false"),
    local("ignore-value", Kind::Bool, "false"),
    local("lease", Kind::Str, "0"),
    local("prev-kv", Kind::Bool, "false"),
];

/// `del`'s own flags.
pub const DEL_FLAGS: &[Def] = &[
    local("from-key", Kind::Bool, "false"),
    HELP,
    local("prefix", Kind::Bool, "false"),
    local("prev-kv", Kind::Bool, "false"),
];

/// clientv3's `GetPrefixRangeEnd`: the first key after every key with this prefix, or `\0` (the
/// end of the key space) when there is none.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn bad_args(msg: &str) -> Fail {
    Fail::Error(EXIT_BAD_ARGS, msg.to_string())
}

/// etcdctl's `getGetOp`.
pub fn range_request(flags: &Flags, args: &[String]) -> Result<RangeRequest, Fail> {
    if args.is_empty() {
        return Err(bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    }
    let prefix = flags.bool("prefix");
    let from_key = flags.bool("from-key");
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if flags.bool("keys-only") && flags.bool("count-only") {
        return Err(bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let mut req = RangeRequest::default();
    match flags.str("consistency").as_str() {
        "s" => req.serializable = true,
        "l" => {}
        other => {
            return Err(Fail::Error(
                EXIT_BAD_FEATURE,
                format!(
                    "unknown consistency flag {}",
                    gofmt::quote(other.as_bytes())
                ),
            ))
        }
    }
    req.key = args[0].as_bytes().to_vec();
    if args.len() > 1 {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        req.range_end = args[1].as_bytes().to_vec();
    }
    req.limit = flags.int("limit");
    if flags.int("rev") > 0 {
        req.revision = flags.int("rev");
    }
    let order_flag = flags.str("order");
    let mut order = match order_flag.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(Fail::Error(
                EXIT_BAD_FEATURE,
                format!("bad sort order {order_flag}"),
            ))
        }
    };
    let target_flag = flags.str("sort-by");
    let target = match target_flag.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(Fail::Error(
                EXIT_BAD_FEATURE,
                format!("bad sort target {target_flag}"),
            ))
        }
    };
    // clientv3's WithSort: keys already come back in ascending key order, so that sort is dropped.
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    req.sort_order = order as i32;
    req.sort_target = target as i32;
    if prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_end(&req.key);
        }
    }
    if from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    req.keys_only = flags.bool("keys-only");
    req.count_only = flags.bool("count-only");
    req.min_mod_revision = flags.int("min-mod-rev");
    req.max_mod_revision = flags.int("max-mod-rev");
    req.min_create_revision = flags.int("min-create-rev");
    req.max_create_revision = flags.int("max-create-rev");
    Ok(req)
}

/// etcdctl's `getPutOp`. `stdin` supplies the value when only the key is given.
pub fn put_request(
    flags: &Flags,
    args: &[String],
    stdin: &mut dyn FnMut() -> Option<Vec<u8>>,
) -> Result<PutRequest, Fail> {
    const NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
    if args.is_empty() {
        return Err(bad_args(NEEDS));
    }
    let ignore_value = flags.bool("ignore-value");
    if ignore_value && args.len() > 1 {
        return Err(bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut req = PutRequest {
        key: args[0].as_bytes().to_vec(),
        ..Default::default()
    };
    if !ignore_value {
        req.value = match args.get(1) {
            Some(v) => v.as_bytes().to_vec(),
            None => match stdin() {
                Some(v) if !v.is_empty() => v,
                _ => return Err(bad_args(NEEDS)),
            },
        };
    }
    req.lease = gofmt::parse_int(&flags.str("lease"), 16)
        .map_err(|e| bad_args(&format!("bad lease ID ({e}), expecting ID in Hex")))?;
    req.prev_kv = flags.bool("prev-kv");
    req.ignore_value = ignore_value;
    req.ignore_lease = flags.bool("ignore-lease");
    Ok(req)
}

/// etcdctl's `getDelOp`.
pub fn delete_request(flags: &Flags, args: &[String]) -> Result<DeleteRangeRequest, Fail> {
    if args.is_empty() || args.len() > 2 {
        return Err(bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    let prefix = flags.bool("prefix");
    let from_key = flags.bool("from-key");
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut req = DeleteRangeRequest {
        key: args[0].as_bytes().to_vec(),
        ..Default::default()
    };
    if args.len() > 1 {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        req.range_end = args[1].as_bytes().to_vec();
    }
    if prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_end(&req.key);
        }
    }
    req.prev_kv = flags.bool("prev-kv");
    if from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(defs: &[Def], args: &[&str]) -> (Flags, Vec<String>) {
        let mut f = Flags::new(defs);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let pos = f.parse(&args).unwrap();
        (f, pos)
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T, Fail>) -> (i32, String) {
        match r.unwrap_err() {
            Fail::Error(code, msg) => (code, msg),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefix_end_increments_last_byte_below_ff() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn get_prefix_and_sort_build_etcdctls_request() {
        let (f, pos) = parsed(
            GET_FLAGS,
            &["k", "--prefix", "--sort-by=modify", "--order=descend"],
        );
        let r = range_request(&f, &pos).unwrap();
        assert_eq!(r.key, b"k");
        assert_eq!(r.range_end, b"l");
        assert_eq!(r.sort_target, SortTarget::Mod as i32);
        assert_eq!(r.sort_order, SortOrder::Descend as i32);

        let (f, pos) = parsed(GET_FLAGS, &["", "--from-key", "--order=ASCEND"]);
        let r = range_request(&f, &pos).unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        assert_eq!(r.sort_order, SortOrder::None as i32);
    }

    #[test]
    fn get_argument_errors_match_etcdctl() {
        let (f, pos) = parsed(GET_FLAGS, &[]);
        assert_eq!(
            err_of(range_request(&f, &pos)),
            (
                128,
                "get command needs one argument as key and an optional argument as range_end"
                    .into()
            )
        );
        let (f, pos) = parsed(GET_FLAGS, &["a", "--consistency", "x"]);
        assert_eq!(
            err_of(range_request(&f, &pos)),
            (4, "unknown consistency flag \"x\"".into())
        );
        let (f, pos) = parsed(GET_FLAGS, &["a", "--order", "foo"]);
        assert_eq!(
            err_of(range_request(&f, &pos)),
            (4, "bad sort order foo".into())
        );
        let (f, pos) = parsed(GET_FLAGS, &["a", "--sort-by", "foo"]);
        assert_eq!(
            err_of(range_request(&f, &pos)),
            (4, "bad sort target foo".into())
        );
        let (f, pos) = parsed(GET_FLAGS, &["a", "b", "--prefix"]);
        assert_eq!(
            err_of(range_request(&f, &pos)).1,
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set"
        );
    }

    #[test]
    fn put_reads_stdin_and_parses_hex_lease() {
        let (f, pos) = parsed(PUT_FLAGS, &["k", "--lease=1a", "--prev-kv"]);
        let r = put_request(&f, &pos, &mut || Some(b"from stdin\n".to_vec())).unwrap();
        assert_eq!(r.value, b"from stdin\n");
        assert_eq!(r.lease, 26);
        assert!(r.prev_kv);

        let (f, pos) = parsed(PUT_FLAGS, &["k"]);
        assert_eq!(
            err_of(put_request(&f, &pos, &mut || Some(Vec::new()))),
            (
                128,
                "put command needs 1 argument and input from stdin or 2 arguments".into()
            )
        );
        let (f, pos) = parsed(PUT_FLAGS, &["k", "v", "--lease=zz"]);
        assert_eq!(
            err_of(put_request(&f, &pos, &mut || None)).1,
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
        let (f, pos) = parsed(PUT_FLAGS, &["k", "v", "--ignore-value"]);
        assert_eq!(
            err_of(put_request(&f, &pos, &mut || None)).1,
            "put command needs only 1 argument when 'ignore-value' is set"
        );
    }

    #[test]
    fn del_validates_like_etcdctl() {
        let (f, pos) = parsed(DEL_FLAGS, &["a", "b", "c"]);
        assert_eq!(
            err_of(delete_request(&f, &pos)),
            (
                128,
                "del command needs one argument as key and an optional argument as range_end"
                    .into()
            )
        );
        let (f, pos) = parsed(DEL_FLAGS, &["a", "--prefix", "--prev-kv"]);
        let r = delete_request(&f, &pos).unwrap();
        assert_eq!(
            (r.key, r.range_end, r.prev_kv),
            (b"a".to_vec(), b"b".to_vec(), true)
        );
    }
}
