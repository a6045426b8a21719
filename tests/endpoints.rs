//! etcdctl's endpoint forms: `--endpoints http://host:port` and `--cluster` (which dials every
//! member's client URL) make Go's client send a URL as the HTTP/2 `:authority` of Maintenance
//! calls. etcd ignores it; cairn must accept it too (see src/api/authority.rs). Each check runs
//! against etcd as well, to show the expectations are etcd's.

mod common;

use common::{etcdctl, Kind, Opts, Server};

fn endpoint_forms(kind: Kind) {
    let server = Server::start(kind, Opts::default());
    let url = server.url();
    for args in [
        &["put", "k", "v"][..],
        &["endpoint", "status"],
        &["endpoint", "status", "--cluster"],
        &["endpoint", "hashkv", "--cluster"],
        &["endpoint", "health", "--cluster"],
        &["defrag"],
        &["defrag", "--cluster"],
    ] {
        let out = etcdctl(&url, args, None);
        assert!(
            out.success(),
            "{}: etcdctl --endpoints {url} {}: {out:?}",
            kind.label(),
            args.join(" ")
        );
        if args[0] != "put" {
            assert!(
                out.stdout.contains(&url) || out.stderr.contains(&url),
                "{}: {} does not name {url}: {out:?}",
                kind.label(),
                args.join(" ")
            );
        }
    }
    // The status row of the URL endpoint is the member itself.
    let out = etcdctl(&url, &["endpoint", "status", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["Endpoint"], serde_json::json!(url));
    assert!(
        v[0]["Status"]["header"]["revision"].as_i64() >= Some(2),
        "{v}"
    );
}

#[test]
fn cairn_accepts_url_endpoints_and_cluster_wide_endpoint_commands() {
    endpoint_forms(Kind::Cairn);
}

#[test]
fn etcd_passes_the_endpoint_forms_check() {
    endpoint_forms(Kind::Etcd);
}
