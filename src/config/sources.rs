//! Where flag values come from, as etcd takes them: the command line (Go's `-flag` as well as
//! `--flag`), `ETCD_*` (or `CAIRN_*`) environment variables, or one YAML `--config-file`.
//!
//! Everything is turned into one command line that the parser then reads, so each source gets
//! the same value checks and the same error texts:
//! - a config file replaces the command line and the environment entirely, as in etcd ("if a
//!   configuration file is provided, other command line flags and environment variables will be
//!   ignored");
//! - otherwise each flag not on the command line is taken from `CAIRN_<FLAG>` or else
//!   `ETCD_<FLAG>` (upper case, dashes as underscores); a variable that names a flag also given on
//!   the command line is etcd's fatal conflict; an `ETCD_`/`CAIRN_` variable that names no flag
//!   gets a warning.

use super::ConfigError;

/// The environment prefixes, the first winning when both name a flag.
const PREFIXES: [&str; 2] = ["CAIRN", "ETCD"];

/// Variables with one of the prefixes that are not flags and are read elsewhere.
const NOT_FLAGS: &[&str] = &["ETCDCTL_API"];

/// The command line to parse and the warnings met on the way.
pub struct Gathered {
    pub args: Vec<String>,
    pub warnings: Vec<String>,
}

/// Merges the sources into one command line. `flags` lists every long flag the parser knows.
pub fn gather(
    args: &[String],
    env: &[(String, String)],
    flags: &[String],
) -> Result<Gathered, ConfigError> {
    let args = go_style_flags(args);
    let mut warnings = Vec::new();
    let program = args.first().cloned().unwrap_or_else(|| "cairn".into());
    let from_env = |name: &str| -> Option<(String, String)> {
        PREFIXES.iter().find_map(|p| {
            let key = env_key(p, name);
            env.iter()
                .find(|(k, v)| *k == key && !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
        })
    };
    let config_file =
        flag_value(&args, "config-file").or_else(|| from_env("config-file").map(|(_, v)| v));
    if let Some(path) = config_file {
        let mut out = vec![program];
        out.extend(from_config_file(&path, flags, &mut warnings)?);
        return Ok(Gathered {
            args: out,
            warnings,
        });
    }
    let given: Vec<&str> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect();
    let mut out = args.clone();
    let mut used: Vec<String> = Vec::new();
    for name in flags {
        for p in PREFIXES {
            let key = env_key(p, name);
            if env.iter().any(|(k, v)| *k == key && !v.is_empty()) && given.contains(&name.as_str())
            {
                return Err(ConfigError::Invalid(format!(
                    "conflicting environment variable {key:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
                )));
            }
        }
        if let Some((key, value)) = from_env(name) {
            out.push(format!("--{name}={value}"));
            used.push(key);
        }
    }
    for (k, v) in env {
        let ours = PREFIXES.iter().any(|p| k.starts_with(&format!("{p}_")));
        let is_flag = flags
            .iter()
            .any(|f| PREFIXES.iter().any(|p| env_key(p, f) == *k));
        if ours && !is_flag && !used.contains(k) && !NOT_FLAGS.contains(&k.as_str()) {
            warnings.push(format!("unrecognized environment variable {k}={v}"));
        }
    }
    Ok(Gathered {
        args: out,
        warnings,
    })
}

/// `ETCD_DATA_DIR` for `data-dir`.
fn env_key(prefix: &str, flag: &str) -> String {
    format!("{prefix}_{}", flag.to_uppercase().replace('-', "_"))
}

/// The value of `--name=v` or `--name v` on the command line.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&format!("{long}=")) {
            return Some(v.to_string());
        }
        if *a == long {
            return it.next().cloned();
        }
    }
    None
}

/// Go's flag package accepts `-name value`; the parser wants `--name`. Rewrites single-dash long
/// flags.
pub fn go_style_flags(args: &[String]) -> Vec<String> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                format!("-{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// The keys of etcd's `client-transport-security` and `peer-transport-security` sections, with
/// the flags they stand for.
const CLIENT_TLS_KEYS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("crl-file", "client-crl-file"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
];
const PEER_TLS_KEYS: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("crl-file", "peer-crl-file"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
];

/// Reads etcd's YAML configuration file into `--flag=value` arguments.
fn from_config_file(
    path: &str,
    flags: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "error verifying flags, open {path}: {}. See 'cairn --help'.",
            crate::gofmt::os_error_reason(&e)
        ))
    })?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        ConfigError::Invalid(format!(
            "error verifying flags, {path}: {e}. See 'cairn --help'."
        ))
    })?;
    let mut out = Vec::new();
    let map = match doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(out),
        _ => {
            return Err(ConfigError::Invalid(format!(
                "error verifying flags, {path}: the configuration must be a mapping of keys to values. See 'cairn --help'."
            )))
        }
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            warnings.push(format!("{path}: ignored a key that is not a string: {k:?}"));
            continue;
        };
        let section = match key {
            "client-transport-security" => Some(CLIENT_TLS_KEYS),
            "peer-transport-security" => Some(PEER_TLS_KEYS),
            _ => None,
        };
        if let Some(keys) = section {
            let serde_yaml::Value::Mapping(inner) = v else {
                continue;
            };
            for (ik, iv) in inner {
                let Some(ik) = ik.as_str() else { continue };
                match keys.iter().find(|(k, _)| *k == ik) {
                    Some((_, flag)) => push_value(&mut out, flag, &iv, path)?,
                    None => warnings.push(format!("{path}: ignored unknown key {key}.{ik}")),
                }
            }
            continue;
        }
        if key == "config-file" {
            continue;
        }
        if !flags.iter().any(|f| f == key) {
            warnings.push(format!("{path}: ignored unknown key {key}"));
            continue;
        }
        push_value(&mut out, key, &v, path)?;
    }
    Ok(out)
}

/// Appends `--flag=value` for one YAML value; nothing for null or an empty string (etcd's zero
/// value, the default).
fn push_value(
    out: &mut Vec<String>,
    flag: &str,
    v: &serde_yaml::Value,
    path: &str,
) -> Result<(), ConfigError> {
    use serde_yaml::Value;
    let text = match v {
        Value::Null => return Ok(()),
        Value::Bool(b) => b.to_string(),
        // etcd reads its YAML through JSON into Go durations: a number is nanoseconds.
        Value::Number(n) if super::catalogue::is_duration(flag) => format!("{n}ns"),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => return Ok(()),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            if parts.is_empty() {
                return Ok(());
            }
            parts.join(",")
        }
        _ => {
            return Err(ConfigError::Invalid(format!(
            "error verifying flags, {path}: {flag} must be a scalar or a list. See 'cairn --help'."
        )))
        }
    };
    out.push(format!("--{flag}={text}"));
    Ok(())
}
