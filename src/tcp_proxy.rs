//! `cairn gateway start`: etcd's gateway, a stateless TCP forwarder in front of a cluster.
//!
//! Every connection accepted on `--listen-addr` is joined byte for byte to one of the
//! `--endpoints`, tried in turn from a rotating start; an endpoint that refuses a connection is
//! skipped for `--retry-delay`, as etcd's gateway does. It knows nothing of gRPC: clients speak to
//! the cluster through it exactly as they would directly. DNS discovery (`--discovery-srv`) is not
//! supported and is refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::io::{Clock, RuntimeClock};

/// How long the gateway waits for an endpoint to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most connections the gateway forwards at once; more wait in the listen backlog.
pub const CONNECTIONS_MAX: usize = 10_000;

/// The gateway's settings, from etcd's `gateway start` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen_addr: String,
    pub endpoints: Vec<String>,
    pub retry_delay: Duration,
}

const USAGE: &str = "Usage:
  cairn gateway start [flags]

Flags:
      --endpoints strings      comma separated etcd cluster endpoints (default [127.0.0.1:2379])
      --listen-addr string     listen address (default \"127.0.0.1:23790\")
      --retry-delay duration   duration of delay before retrying failed endpoints (default 1m0s)
";

/// Parses `gateway [flags] start [flags]` (the words after the program name and `gateway`).
/// `Err` holds the text to print and the exit code.
pub fn parse(args: &[String]) -> Result<Options, (String, u8)> {
    let mut opts = Options {
        listen_addr: "127.0.0.1:23790".into(),
        endpoints: vec!["127.0.0.1:2379".into()],
        retry_delay: Duration::from_secs(60),
    };
    let mut started = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "start" {
            started = true;
            continue;
        }
        if arg == "-h" || arg == "--help" {
            return Err((USAGE.into(), 0));
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err((
                format!("Error: unknown command {arg:?} for \"cairn gateway\"\n"),
                1,
            ));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| (format!("Error: flag needs an argument: --{name}\n"), 1))
        };
        match name {
            "listen-addr" => opts.listen_addr = value()?,
            "endpoints" => {
                opts.endpoints = value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect()
            }
            "retry-delay" => {
                let v = value()?;
                opts.retry_delay = crate::config::go_duration(&v).map_err(|_| {
                    (
                        format!("Error: invalid argument {v:?} for \"--retry-delay\" flag: time: invalid duration {}\n", crate::gofmt::quote(v.as_bytes())),
                        1,
                    )
                })?;
            }
            "discovery-srv" | "discovery-srv-name" | "trusted-ca-file" => {
                if !value()?.is_empty() {
                    return Err((
                        format!("Error: --{name}: DNS discovery is not supported; list the cluster with --endpoints\n"),
                        1,
                    ));
                }
            }
            "insecure-discovery" => {}
            _ => return Err((format!("Error: unknown flag: --{name}\n"), 1)),
        }
    }
    if !started {
        return Err((USAGE.into(), 0));
    }
    if opts.endpoints.is_empty() {
        return Err(("Error: --endpoints lists no endpoint\n".into(), 1));
    }
    Ok(opts)
}

/// An endpoint and, after a refused connection, until when it is skipped (on the clock's scale).
struct Remote {
    addr: String,
    skipped_until: Option<Duration>,
}

/// Serves until the listener fails.
pub async fn run(opts: Options) -> std::io::Result<()> {
    let listen: SocketAddr = tokio::net::lookup_host(&opts.listen_addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {}", opts.listen_addr)))?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let remotes = Arc::new(Mutex::new(
        opts.endpoints
            .iter()
            .map(|e| Remote {
                addr: e.trim_start_matches("http://").to_string(),
                skipped_until: None,
            })
            .collect::<Vec<_>>(),
    ));
    tracing::info!(
        "ready to proxy client requests to [{}]",
        opts.endpoints.join(" ")
    );
    let clock: Arc<dyn Clock> = Arc::new(RuntimeClock::new());
    let next = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (inbound, peer) = listener.accept().await?;
        let (remotes, clock, next) = (remotes.clone(), clock.clone(), next.clone());
        let retry_delay = opts.retry_delay;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = forward(inbound, &remotes, clock.as_ref(), &next, retry_delay).await {
                tracing::warn!(%peer, error = %e, "gateway connection ended");
            }
        });
    }
}

/// Joins `inbound` to the first endpoint, from a rotating start, that accepts a connection.
async fn forward(
    mut inbound: tokio::net::TcpStream,
    remotes: &Mutex<Vec<Remote>>,
    clock: &dyn Clock,
    next: &AtomicUsize,
    retry_delay: Duration,
) -> std::io::Result<()> {
    let count = remotes.lock().expect("gateway remotes").len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..count {
        let at = (start + i) % count;
        let addr = {
            let list = remotes.lock().expect("gateway remotes");
            let r = &list[at];
            if r.skipped_until.is_some_and(|t| t > clock.now()) {
                continue;
            }
            r.addr.clone()
        };
        let connect = tokio::net::TcpStream::connect(&addr);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(mut outbound)) => {
                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
                return Ok(());
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %addr, error = %e, "failed to connect; skipping it for the retry delay")
            }
            Err(_) => {
                tracing::warn!(endpoint = %addr, "connect timed out; skipping it for the retry delay")
            }
        }
        remotes.lock().expect("gateway remotes")[at].skipped_until =
            Some(clock.now() + retry_delay);
    }
    Err(std::io::Error::other("no endpoint accepted the connection"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_parse_before_and_after_start_as_cobra_takes_them() {
        let o = parse(&words(
            "--endpoints=a:1,b:2 start --listen-addr 127.0.0.1:9 --retry-delay=5s",
        ))
        .unwrap();
        assert_eq!(o.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(o.listen_addr, "127.0.0.1:9");
        assert_eq!(o.retry_delay, Duration::from_secs(5));
        assert_eq!(
            parse(&words("start")).unwrap().endpoints,
            vec!["127.0.0.1:2379"]
        );
        assert_eq!(
            parse(&words("")).unwrap_err().1,
            0,
            "without start: the usage"
        );
        assert_eq!(parse(&words("start --bogus")).unwrap_err().1, 1);
        assert_eq!(
            parse(&words("start --discovery-srv example.com"))
                .unwrap_err()
                .1,
            1
        );
    }
}
