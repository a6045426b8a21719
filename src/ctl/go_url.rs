//! The peer-URL check clientv3 runs before `MemberAdd` and `MemberUpdate`.
//!
//! clientv3 refuses a bad peer URL in the client, "fail-fast before panic in rafthttp", with
//! etcd's `types.NewURLs`: each comma-separated item is trimmed, parsed by Go's `net/url`, and
//! must then have an `http`, `https`, `unix` or `unixs` scheme, a `host:port` authority and no
//! path. The error texts reach the user verbatim (`Error: parse "127.0.0.1:2380": first path
//! segment in URL cannot contain colon`), so this is a small copy of the parts of Go 1.19's
//! `url.Parse` and `net.SplitHostPort` that can fail, with their messages.

use super::gofmt::quote;

/// etcd's `types.NewURLs`: `Ok` when every URL is acceptable, else the first error's text.
pub fn check_urls(urls: &[String]) -> Result<(), String> {
    if urls.is_empty() {
        return Err("no valid URLs given".into());
    }
    for raw in urls {
        let trimmed = super::gofmt::trim_space(raw);
        let url = parse(trimmed)?;
        if !matches!(url.scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {trimmed}"
            ));
        }
        if !split_host_port_ok(&url.host) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {trimmed}"
            ));
        }
        if !url.path.is_empty() {
            return Err(format!("URL must not contain a path: {trimmed}"));
        }
    }
    Ok(())
}

/// The parts of a parsed URL that `NewURLs` looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Url {
    scheme: String,
    host: String,
    path: String,
}

/// Go's `url.Parse`, errors included (`parse "<url>": <reason>`).
fn parse(raw: &str) -> Result<Url, String> {
    let (body, fragment) = match raw.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (raw, None),
    };
    let url = parse_body(body).map_err(|e| format!("parse {}: {e}", quote(body.as_bytes())))?;
    if let Some(f) = fragment {
        unescape(f, Mode::Fragment).map_err(|e| format!("parse {}: {e}", quote(raw.as_bytes())))?;
    }
    Ok(url)
}

fn parse_body(raw: &str) -> Result<Url, String> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = Url::default();
    if raw == "*" {
        url.path = "*".into();
        return Ok(url);
    }
    let (scheme, rest) = scheme(raw)?;
    url.scheme = scheme.to_lowercase();
    let mut rest = rest;
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, _query)) = rest.split_once('?') {
        rest = before;
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // A rootless path is opaque: no host, no path.
            return Ok(url);
        }
        let segment = rest.split('/').next().unwrap_or("");
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, path) = match authority_and_path.find('/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (authority_and_path, ""),
        };
        url.host = parse_authority(authority)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    Ok(url)
}

/// Go's `getScheme`.
fn scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i == 0 => return Ok(("", raw)),
            b'0'..=b'9' | b'+' | b'-' | b'.' => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(authority: &str) -> Result<String, String> {
    let at = authority.rfind('@');
    let host = parse_host(match at {
        Some(i) => &authority[i + 1..],
        None => authority,
    })?;
    if let Some(i) = at {
        let userinfo = &authority[..i];
        let valid = userinfo.chars().all(|r| {
            r.is_ascii_alphanumeric()
                || matches!(
                    r,
                    '-' | '.'
                        | '_'
                        | ':'
                        | '~'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '*'
                        | '+'
                        | ','
                        | ';'
                        | '='
                        | '%'
                        | '@'
                )
        });
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        match userinfo.split_once(':') {
            Some((user, password)) => {
                unescape(user, Mode::UserPassword)?;
                unescape(password, Mode::UserPassword)?;
            }
            None => {
                unescape(userinfo, Mode::UserPassword)?;
            }
        }
    }
    Ok(host)
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty() || port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Go's `parseHost`.
fn parse_host(host: &str) -> Result<String, String> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!(
                "invalid port {} after host",
                quote(colon_port.as_bytes())
            ));
        }
        if let Some(zone) = host[..i].find("%25") {
            let a = unescape(&host[..zone], Mode::Host)?;
            let b = unescape(&host[zone..i], Mode::Zone)?;
            let c = unescape(&host[i..], Mode::Host)?;
            return Ok(a + &b + &c);
        }
    } else if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(format!(
                "invalid port {} after host",
                quote(colon_port.as_bytes())
            ));
        }
    }
    unescape(host, Mode::Host)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    Fragment,
}

/// Go's `shouldEscape`, for the modes above.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, Mode::Host | Mode::Zone)
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => return c == b'?',
            Mode::UserPassword => return matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::Fragment => return false,
            Mode::Host | Mode::Zone => {}
        },
        _ => {}
    }
    if mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Go's `unescape`: checks `%` escapes (and, in a host, the characters allowed) and decodes.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let b = s.as_bytes();
    let escape_error =
        |from: usize, len: usize| format!("invalid URL escape {}", quote(&b[from..from + len]));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if i + 2 >= b.len()
                    || !b[i + 1].is_ascii_hexdigit()
                    || !b[i + 2].is_ascii_hexdigit()
                {
                    return Err(escape_error(i, (b.len() - i).min(3)));
                }
                if mode == Mode::Host && unhex(b[i + 1]) < 8 && &b[i..i + 3] != b"%25" {
                    return Err(escape_error(i, 3));
                }
                let v = unhex(b[i + 1]) << 4 | unhex(b[i + 2]);
                if mode == Mode::Zone
                    && &b[i..i + 3] != b"%25"
                    && v != b' '
                    && should_escape(v, Mode::Host)
                {
                    return Err(escape_error(i, 3));
                }
                out.push(v);
                i += 3;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape(c, mode) {
                    return Err(format!(
                        "invalid character {} in host name",
                        quote(&b[i..i + 1])
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether Go's `net.SplitHostPort` accepts `hostport`.
fn split_host_port_ok(hostport: &str) -> bool {
    let b = hostport.as_bytes();
    let Some(i) = hostport.rfind(':') else {
        return false;
    };
    let (j, k);
    if b[0] == b'[' {
        let Some(end) = hostport.find(']') else {
            return false;
        };
        if end + 1 != i {
            return false;
        }
        j = 1;
        k = end + 1;
    } else {
        if hostport[..i].contains(':') {
            return false;
        }
        j = 0;
        k = 0;
    }
    !hostport[j..].contains('[') && !hostport[k..].contains(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(u: &str) -> Result<(), String> {
        check_urls(&[u.to_string()])
    }

    #[test]
    fn errors_match_etcdctl() {
        // Each captured from `etcdctl member add nn --peer-urls=<url>` (etcdctl 3.4.23, Go 1.19).
        let cases = [
            (
                "127.0.0.1:2380",
                "parse \"127.0.0.1:2380\": first path segment in URL cannot contain colon",
            ),
            (
                "ftp://a:1",
                "URL scheme must be http, https, unix, or unixs: ftp://a:1",
            ),
            (
                "http://a",
                "URL address does not have the form \"host:port\": http://a",
            ),
            ("http://a:1/p", "URL must not contain a path: http://a:1/p"),
            ("http://a:1/", "URL must not contain a path: http://a:1/"),
            (
                "http://a:x",
                "parse \"http://a:x\": invalid port \":x\" after host",
            ),
            (
                "http://a b:1",
                "parse \"http://a b:1\": invalid character \" \" in host name",
            ),
            (":foo", "parse \":foo\": missing protocol scheme"),
            ("", "URL scheme must be http, https, unix, or unixs: "),
            (
                "http://%zz:1",
                "parse \"http://%zz:1\": invalid URL escape \"%zz\"",
            ),
            (
                "unix://sock",
                "URL address does not have the form \"host:port\": unix://sock",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(check(url).unwrap_err(), want, "{url}");
        }
    }

    #[test]
    fn accepted_like_etcdctl() {
        for url in [
            "http://127.0.0.1:2380",
            "http://[::1]:5",
            " http://a:1",
            "http://a:1?x=1",
            "HTTP://a:1",
            "http://a:1#f",
            "http://:1",
            "https://user:pw@host:7",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }
}
