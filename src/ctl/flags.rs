//! Flag parsing the way etcdctl's libraries (spf13/pflag under spf13/cobra) do it.
//!
//! clap would reject or reword half of what etcdctl accepts, so this is a small pflag: flags may
//! come anywhere among the arguments, `--` ends them, long flags take `--name=value` or
//! `--name value`, boolean flags take no value unless written `--name=false`, short flags may be
//! glued (`-wjson`, `-w=json`), a repeated slice flag appends, and every error message is pflag's.
//! The global flags can also come from `ETCDCTL_*` environment variables, applied later (when the
//! command builds its client, as etcdctl does) by [`Flags::apply_env`].

use std::collections::{BTreeMap, HashSet};

use super::gofmt;

/// What a flag holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Duration,
    Slice,
    /// A flag that takes any value and keeps none (etcdctl's `discardValue`).
    Discard,
}

/// One flag definition.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: &'static str,
}

const fn def(name: &'static str, kind: Kind, default: &'static str) -> Def {
    Def {
        name,
        short: None,
        kind,
        default,
    }
}

/// The flags every etcdctl command inherits from the root, in pflag's (sorted) order.
pub const GLOBAL: &[Def] = &[
    def("cacert", Kind::Str, ""),
    def("cert", Kind::Str, ""),
    def("command-timeout", Kind::Duration, "5s"),
    def("debug", Kind::Bool, "false"),
    def("dial-timeout", Kind::Duration, "2s"),
    Def {
        name: "discovery-srv",
        short: Some('d'),
        kind: Kind::Str,
        default: "",
    },
    def("discovery-srv-name", Kind::Str, ""),
    def("endpoints", Kind::Slice, "127.0.0.1:2379"),
    def("hex", Kind::Bool, "false"),
    def("insecure-discovery", Kind::Bool, "true"),
    def("insecure-skip-tls-verify", Kind::Bool, "false"),
    def("insecure-transport", Kind::Bool, "true"),
    def("keepalive-time", Kind::Duration, "2s"),
    def("keepalive-timeout", Kind::Duration, "6s"),
    def("key", Kind::Str, ""),
    def("password", Kind::Str, ""),
    def("user", Kind::Str, ""),
    Def {
        name: "write-out",
        short: Some('w'),
        kind: Kind::Str,
        default: "simple",
    },
];

/// cobra's `-h, --help`, defined on every command.
pub const HELP: Def = Def {
    name: "help",
    short: Some('h'),
    kind: Kind::Bool,
    default: "false",
};

/// `endpoint --cluster`, a persistent flag its subcommands inherit.
pub const CLUSTER: Def = def("cluster", Kind::Bool, "false");

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
    /// Nanoseconds.
    Duration(i128),
    Slice(Vec<String>),
}

/// A set of flag definitions and their current values.
#[derive(Clone, Debug)]
pub struct Flags {
    defs: Vec<Def>,
    values: BTreeMap<&'static str, Value>,
    changed: HashSet<&'static str>,
}

impl Flags {
    pub fn new(defs: &[Def]) -> Self {
        let mut values = BTreeMap::new();
        for d in defs {
            let v = match d.kind {
                Kind::Bool => Value::Bool(d.default == "true"),
                Kind::Str => Value::Str(d.default.to_string()),
                Kind::Int => Value::Int(d.default.parse().unwrap_or(0)),
                Kind::Duration => Value::Duration(gofmt::parse_duration(d.default).unwrap_or(0)),
                Kind::Slice => Value::Slice(split_csv(d.default)),
                Kind::Discard => Value::Str(String::new()),
            };
            values.insert(d.name, v);
        }
        Flags {
            defs: defs.to_vec(),
            values,
            changed: HashSet::new(),
        }
    }

    /// Adds a flag after parsing (as etcdctl adds flags to a command's inherited set before
    /// reading the environment).
    pub fn define(&mut self, d: Def) {
        if !self.has(d.name) {
            self.defs.push(d);
            self.values.insert(d.name, Value::Str(String::new()));
        }
    }

    /// Whether the set defines the flag.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn lookup(&self, name: &str) -> Option<Def> {
        self.defs.iter().copied().find(|d| d.name == name)
    }

    fn lookup_short(&self, c: char) -> Option<Def> {
        self.defs.iter().copied().find(|d| d.short == Some(c))
    }

    /// Whether the flag takes no value (pflag's `NoOptDefVal`).
    pub fn is_bool(&self, name: &str) -> bool {
        self.lookup(name).is_some_and(|d| d.kind == Kind::Bool)
    }

    pub fn is_bool_short(&self, c: char) -> bool {
        self.lookup_short(c).is_some_and(|d| d.kind == Kind::Bool)
    }

    /// pflag's `FlagSet.Set`: parses `value` for the flag and marks it changed.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let d = self
            .lookup(name)
            .ok_or_else(|| format!("no such flag -{name}"))?;
        let parsed = match d.kind {
            Kind::Bool => Value::Bool(gofmt::parse_bool(value)?),
            Kind::Str => Value::Str(value.to_string()),
            Kind::Int => Value::Int(gofmt::parse_int(value, 0)?),
            Kind::Duration => Value::Duration(gofmt::parse_duration(value)?),
            Kind::Discard => Value::Str(String::new()),
            Kind::Slice => {
                let mut items = split_csv(value);
                if self.changed.contains(d.name) {
                    if let Some(Value::Slice(old)) = self.values.get(d.name) {
                        let mut all = old.clone();
                        all.append(&mut items);
                        items = all;
                    }
                }
                Value::Slice(items)
            }
        };
        self.values.insert(d.name, parsed);
        self.changed.insert(d.name);
        Ok(())
    }

    fn set_from_arg(&mut self, d: Def, value: &str) -> Result<(), String> {
        self.set(d.name, value).map_err(|e| {
            let name = match d.short {
                Some(c) => format!("-{c}, --{}", d.name),
                None => format!("--{}", d.name),
            };
            format!(
                "invalid argument {} for {} flag: {e}",
                gofmt::quote(value.as_bytes()),
                gofmt::quote(name.as_bytes())
            )
        })
    }

    /// pflag's `Parse` with interspersed flags: sets every flag found in `args` and returns the
    /// positional arguments, or pflag's error text.
    pub fn parse(&mut self, args: &[String]) -> Result<Vec<String>, String> {
        let mut positional = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let s = &args[i];
            i += 1;
            if s.len() < 2 || !s.starts_with('-') {
                positional.push(s.clone());
                continue;
            }
            if let Some(long) = s.strip_prefix("--") {
                if long.is_empty() {
                    positional.extend(args[i..].iter().cloned());
                    break;
                }
                if long.starts_with('-') || long.starts_with('=') {
                    return Err(format!("bad flag syntax: {s}"));
                }
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let d = self
                    .lookup(name)
                    .ok_or_else(|| format!("unknown flag: --{name}"))?;
                let value = match inline {
                    Some(v) => v.to_string(),
                    None if d.kind == Kind::Bool => "true".to_string(),
                    None if i < args.len() => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => return Err(format!("flag needs an argument: {s}")),
                };
                self.set_from_arg(d, &value)?;
                continue;
            }
            let shorthands: Vec<char> = s[1..].chars().collect();
            let mut k = 0;
            while k < shorthands.len() {
                let c = shorthands[k];
                let all: String = shorthands[k..].iter().collect();
                let d = self
                    .lookup_short(c)
                    .ok_or_else(|| format!("unknown shorthand flag: '{c}' in -{all}"))?;
                let value;
                if shorthands.len() > k + 2 && shorthands[k + 1] == '=' {
                    value = shorthands[k + 2..].iter().collect();
                    k = shorthands.len();
                } else if d.kind == Kind::Bool {
                    value = "true".to_string();
                    k += 1;
                } else if shorthands.len() > k + 1 {
                    value = shorthands[k + 1..].iter().collect();
                    k = shorthands.len();
                } else if i < args.len() {
                    value = args[i].clone();
                    i += 1;
                    k += 1;
                } else {
                    return Err(format!("flag needs an argument: '{c}' in -{all}"));
                }
                self.set_from_arg(d, &value)?;
            }
        }
        Ok(positional)
    }

    /// pflag's `Value.String()` of a flag, as `--debug` lists it.
    pub fn display(&self, name: &str) -> String {
        match self.values.get(name) {
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Int(v)) => v.to_string(),
            Some(Value::Duration(v)) => gofmt::duration_string(*v),
            Some(Value::Slice(v)) => format!("[{}]", v.join(",")),
            None => String::new(),
        }
    }

    pub fn changed(&self, name: &str) -> bool {
        self.changed.contains(name)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    pub fn str(&self, name: &str) -> String {
        match self.values.get(name) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        }
    }

    /// Nanoseconds.
    pub fn duration(&self, name: &str) -> i128 {
        match self.values.get(name) {
            Some(Value::Duration(v)) => *v,
            _ => 0,
        }
    }

    pub fn slice(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(Value::Slice(v)) => v.clone(),
            _ => Vec::new(),
        }
    }

    /// etcd's `flags.SetPflagsFromEnv("ETCDCTL", inherited)`: each inherited flag not given on the
    /// command line takes the value of `ETCDCTL_<NAME>` when that is set and non-empty (a value
    /// that does not parse is ignored). Returns what etcd's `verifyEnv` then says about the
    /// environment, in environment order.
    pub fn apply_env(
        &mut self,
        inherited: &[&'static str],
        env: &[(String, String)],
    ) -> Vec<EnvNotice> {
        let mut used = HashSet::new();
        let mut shadowed = HashSet::new();
        for name in inherited {
            let key = env_name(name);
            if self.changed(name) {
                shadowed.insert(key);
                continue;
            }
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == key) {
                if !v.is_empty() {
                    used.insert(key.clone());
                    let _ = self.set(name, v);
                }
            }
        }
        let mut notices = Vec::new();
        for (k, v) in env {
            if used.contains(k) {
                continue;
            }
            if shadowed.contains(k) {
                notices.push(EnvNotice::Shadowed(k.clone()));
                return notices;
            }
            if k.starts_with("ETCDCTL_") {
                notices.push(EnvNotice::Unrecognized(format!("{k}={v}")));
            }
        }
        notices
    }
}

/// What etcd's `verifyEnv` reports about `ETCDCTL_*` variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvNotice {
    /// A warning: `unrecognized environment variable NAME=value`.
    Unrecognized(String),
    /// Fatal: the variable and its command-line flag were both given.
    Shadowed(String),
}

/// `flags.FlagToEnv("ETCDCTL", name)`.
pub fn env_name(flag: &str) -> String {
    format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_"))
}

/// pflag reads slice values as one CSV record.
fn split_csv(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    out.push(field);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn get_flags() -> Flags {
        let mut defs = GLOBAL.to_vec();
        defs.push(HELP);
        defs.push(def("prefix", Kind::Bool, "false"));
        defs.push(def("limit", Kind::Int, "0"));
        Flags::new(&defs)
    }

    #[test]
    fn interspersed_and_glued_forms() {
        let mut f = get_flags();
        let pos = f
            .parse(&args(&["foo", "--prefix", "-wjson", "--limit", "3", "bar"]))
            .unwrap();
        assert_eq!(pos, args(&["foo", "bar"]));
        assert!(f.bool("prefix"));
        assert_eq!(f.str("write-out"), "json");
        assert_eq!(f.int("limit"), 3);

        let mut f = get_flags();
        f.parse(&args(&["-w=fields", "--hex=false", "--dial-timeout=3s"]))
            .unwrap();
        assert_eq!(f.str("write-out"), "fields");
        assert!(!f.bool("hex"));
        assert_eq!(f.duration("dial-timeout"), 3_000_000_000);
    }

    #[test]
    fn double_dash_ends_flags() {
        let mut f = get_flags();
        let pos = f.parse(&args(&["--", "-k", "--prefix"])).unwrap();
        assert_eq!(pos, args(&["-k", "--prefix"]));
        assert!(!f.bool("prefix"));
    }

    #[test]
    fn errors_are_pflags() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "unknown flag: --bogus"),
            (&["-x"], "unknown shorthand flag: 'x' in -x"),
            (&["--limit"], "flag needs an argument: --limit"),
            (&["-w"], "flag needs an argument: 'w' in -w"),
            (
                &["--limit=x"],
                r#"invalid argument "x" for "--limit" flag: strconv.ParseInt: parsing "x": invalid syntax"#,
            ),
            (
                &["--hex=bogus"],
                r#"invalid argument "bogus" for "--hex" flag: strconv.ParseBool: parsing "bogus": invalid syntax"#,
            ),
            (
                &["--dial-timeout=xx"],
                r#"invalid argument "xx" for "--dial-timeout" flag: time: invalid duration "xx""#,
            ),
            (&["---x"], "bad flag syntax: ---x"),
        ];
        for (input, want) in cases {
            let mut f = get_flags();
            assert_eq!(f.parse(&args(input)).unwrap_err(), *want, "{input:?}");
        }
    }

    #[test]
    fn endpoints_replace_then_append() {
        let mut f = get_flags();
        assert_eq!(f.slice("endpoints"), args(&["127.0.0.1:2379"]));
        f.parse(&args(&["--endpoints", "a:1,b:2", "--endpoints=c:3"]))
            .unwrap();
        assert_eq!(f.slice("endpoints"), args(&["a:1", "b:2", "c:3"]));
        let mut f = get_flags();
        f.parse(&args(&["--endpoints="])).unwrap();
        assert!(f.slice("endpoints").is_empty());
    }

    #[test]
    fn environment_fills_unset_global_flags() {
        let names: Vec<&'static str> = GLOBAL.iter().map(|d| d.name).collect();
        let env = vec![
            ("ETCDCTL_WRITE_OUT".to_string(), "json".to_string()),
            ("ETCDCTL_HEX".to_string(), "bogus".to_string()),
            ("ETCDCTL_FOO".to_string(), "bar".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let mut f = get_flags();
        let notices = f.apply_env(&names, &env);
        assert_eq!(f.str("write-out"), "json");
        assert!(!f.bool("hex"));
        assert_eq!(
            notices,
            vec![EnvNotice::Unrecognized("ETCDCTL_FOO=bar".into())]
        );

        let mut f = get_flags();
        f.parse(&args(&["-w", "fields"])).unwrap();
        let notices = f.apply_env(&names, &env);
        assert_eq!(
            notices,
            vec![EnvNotice::Shadowed("ETCDCTL_WRITE_OUT".into())]
        );
    }
}
