//! TLS on the client and peer ports, side by side with etcd 3.4.23, through the real `etcdctl`.
//!
//! Certificates are made at test time (a CA, a server certificate for `localhost` and
//! 127.0.0.1, client certificates from that CA and from a stranger's, a revocation list). Each
//! test starts etcd and cairn the same way and checks that a user sees the same: what is served
//! to whom, which clients are refused, where `--auto-tls` keeps its certificate, and the error
//! etcd gives for a bad TLS flag. The last tests run three-member clusters whose members talk
//! TLS to each other.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{etcdctl_bin, free_port, run_bounded, Kind, Output};

const KINDS: [Kind; 2] = [Kind::Etcd, Kind::Cairn];
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificates of one test, as PEM files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = authority("test ca");
        let stranger = authority("stranger ca");
        write("ca.crt", ca.cert.pem());
        let leaf = |name: &str, issuer: &Authority, serial: u64, server: bool| {
            let mut p = rcgen::CertificateParams::new(if server {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                Vec::new()
            })
            .unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.serial_number = Some(rcgen::SerialNumber::from(serial));
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        for (name, issuer, serial, server) in [
            ("server", &ca, 10, true),
            ("client", &ca, 11, false),
            ("revoked", &ca, 12, false),
            ("stranger", &stranger, 13, false),
        ] {
            let (cert, key) = leaf(name, issuer, serial, server);
            write(&format!("{name}.crt"), cert);
            write(&format!("{name}.key"), key);
        }
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(12u64),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca.cert, &ca.key)
        .unwrap();
        write("revoke.crl", crl.pem().unwrap());
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The server flags for TLS on the client port, client certificates required.
    fn server_flags(&self) -> Vec<String> {
        vec![
            "--cert-file".into(),
            self.path("server.crt"),
            "--key-file".into(),
            self.path("server.key"),
            "--trusted-ca-file".into(),
            self.path("ca.crt"),
        ]
    }

    /// The peer-port equivalents of [`Certs::server_flags`].
    fn peer_flags(&self) -> Vec<String> {
        vec![
            "--peer-cert-file".into(),
            self.path("server.crt"),
            "--peer-key-file".into(),
            self.path("server.key"),
            "--peer-trusted-ca-file".into(),
            self.path("ca.crt"),
        ]
    }

    /// etcdctl's flags to present the client certificate `who` (`client`, `revoked`, ...).
    fn ctl(&self, who: &str) -> Vec<String> {
        vec![
            format!("--cacert={}", self.path("ca.crt")),
            format!("--cert={}", self.path(&format!("{who}.crt"))),
            format!("--key={}", self.path(&format!("{who}.key"))),
        ]
    }
}

struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn authority(name: &str) -> Authority {
    let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Authority { cert, key }
}

/// A server process with its data dir and log.
struct Proc {
    kind: Kind,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(kind: Kind, args: &[String]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(kind.program())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc {
            kind,
            child: Some(child),
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; returns its exit code and log.
    fn exit(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `etcdctl <tls> get` at `endpoint` until it answers; fails the test with the log.
    fn wait_ready(&mut self, endpoint: &str, tls: &[String]) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = ctl(endpoint, tls, &["get", "readiness-probe"]);
            if out.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.kind.label(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready: {out:?}\n{}",
                self.kind.label(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- {} log ---\n{}", self.kind.label(), self.log());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `etcdctl --endpoints endpoint <tls> <args>`, bounded.
fn ctl(endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    ctl_with(&etcdctl_bin(), endpoint, tls, args)
}

/// [`ctl`] with another etcdctl-compatible tool (cairnctl).
fn ctl_with(tool: &Path, endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    let mut cmd = Command::new(tool);
    cmd.env_clear()
        .env("ETCDCTL_API", "3")
        .env("PATH", "/usr/bin:/bin")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=4s")
        .args(tls)
        .args(args);
    run_bounded(cmd, None, Duration::from_secs(20))
}

/// etcdctl's last stderr line (its `Error: ...`), without the retry log lines before it.
fn last_error(o: &Output) -> String {
    o.stderr.lines().last().unwrap_or_default().to_string()
}

/// A single member serving clients on `urls` (peers in plaintext), with `extra` flags.
fn single(port: u16, urls: &str, extra: &[String]) -> Vec<String> {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let _ = port;
    let mut args: Vec<String> = [
        "--name",
        "m",
        "--listen-client-urls",
        urls,
        "--advertise-client-urls",
        urls.split(',').next().unwrap(),
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("m={peer}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

#[test]
fn a_tls_client_port_serves_certified_clients_and_refuses_the_others_as_etcd_does() {
    let certs = Certs::new();
    let mut outs = Vec::new();
    for kind in KINDS {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut p = Proc::spawn(kind, &single(port, &url, &certs.server_flags()));
        p.wait_ready(&url, &certs.ctl("client"));
        let plain = format!("http://127.0.0.1:{port}");
        let localhost = format!("https://localhost:{port}");
        let none = vec![format!("--cacert={}", certs.path("ca.crt"))];
        let runs = [
            ("put", ctl(&url, &certs.ctl("client"), &["put", "k", "v"])),
            ("get", ctl(&localhost, &certs.ctl("client"), &["get", "k"])),
            ("no client cert", ctl(&url, &none, &["get", "k"])),
            ("stranger", ctl(&url, &certs.ctl("stranger"), &["get", "k"])),
            ("plaintext", ctl(&plain, &[], &["get", "k"])),
            ("no ca", ctl(&url, &[], &["get", "k"])),
        ];
        outs.push(runs.map(|(what, o)| {
            let err = if o.success() {
                String::new()
            } else {
                last_error(&o)
            };
            (what, o.code, o.stdout, err)
        }));
        drop(p);
    }
    let (etcd, cairn) = (&outs[0], &outs[1]);
    for (e, c) in etcd.iter().zip(cairn.iter()) {
        assert_eq!(e.1, c.1, "{}: exit code: etcd {e:?}, cairn {c:?}", e.0);
        assert_eq!(e.2, c.2, "{}: stdout", e.0);
    }
    // What the refused clients were told: a dial that never completes, for both.
    for e in &etcd[2..] {
        assert_ne!(e.1, Some(0), "etcd served {}", e.0);
    }
    assert_eq!(cairn[1].2, "k\nv\n");
}

#[test]
fn cairnctl_takes_etcdctls_tls_flags_against_etcd_and_cairn() {
    let certs = Certs::new();
    let cairnctl = PathBuf::from(env!("CARGO_BIN_EXE_cairnctl"));
    let flags = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|f| f.replace("{dir}", &certs.path("")))
            .collect()
    };
    let client = flags(&[
        "--cacert={dir}ca.crt",
        "--cert={dir}client.crt",
        "--key={dir}client.key",
    ]);
    for kind in KINDS {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let bare = format!("127.0.0.1:{port}");
        let mut p = Proc::spawn(kind, &single(port, &url, &certs.server_flags()));
        p.wait_ready(&url, &certs.ctl("client"));
        let snap_dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, &str, Vec<String>, Vec<String>)> = vec![
            ("put", &url, client.clone(), flags(&["put", "k", "v"])),
            (
                "no scheme: TLS by the flags",
                &bare,
                client.clone(),
                flags(&["get", "k"]),
            ),
            (
                "no client certificate",
                &url,
                flags(&["--cacert={dir}ca.crt"]),
                flags(&["get", "k"]),
            ),
            (
                "a stranger's certificate",
                &url,
                flags(&[
                    "--cacert={dir}ca.crt",
                    "--cert={dir}stranger.crt",
                    "--key={dir}stranger.key",
                ]),
                flags(&["get", "k"]),
            ),
            ("https without a CA", &url, Vec::new(), flags(&["get", "k"])),
            (
                "skip verification",
                &url,
                flags(&[
                    "--insecure-transport=false",
                    "--insecure-skip-tls-verify",
                    "--cert={dir}client.crt",
                    "--key={dir}client.key",
                ]),
                flags(&["get", "k", "--print-value-only"]),
            ),
            (
                "a certificate without its key",
                &url,
                flags(&["--cert={dir}client.crt"]),
                flags(&["get", "k"]),
            ),
            (
                "a missing CA file",
                &url,
                flags(&["--cacert={dir}nope.crt"]),
                flags(&["get", "k"]),
            ),
            (
                "endpoint health",
                &url,
                client.clone(),
                flags(&["endpoint", "health"]),
            ),
            (
                "snapshot save",
                &url,
                client.clone(),
                vec![
                    "snapshot".into(),
                    "save".into(),
                    snap_dir.path().join("s.db").display().to_string(),
                ],
            ),
        ];
        for (what, endpoint, tls, args) in &cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let e = ctl(endpoint, tls, &args);
            let c = ctl_with(&cairnctl, endpoint, tls, &args);
            let show = |o: &Output| {
                (
                    o.code,
                    o.stdout.clone(),
                    if o.success() {
                        String::new()
                    } else {
                        last_error(o)
                    },
                )
            };
            let (e, c) = (show(&e), show(&c));
            // endpoint health prints how long the check took.
            let took = |t: &str| t.split(" took = ").next().unwrap_or_default().to_string();
            assert_eq!(
                (e.0, took(&e.1), &e.2),
                (c.0, took(&c.1), &c.2),
                "{} server, {what}: etcdctl {e:?}, cairnctl {c:?}",
                kind.label()
            );
        }
        // The snapshot cairnctl saved over TLS is the server's database, as etcdctl's is.
        let saved = std::fs::metadata(snap_dir.path().join("s.db"))
            .unwrap()
            .len();
        assert!(saved > 0, "{}: empty snapshot", kind.label());
        drop(p);
    }
}

#[test]
fn one_port_serves_http_and_https_urls_as_etcd_does() {
    let certs = Certs::new();
    for kind in KINDS {
        let port = free_port();
        let (plain, tls) = (
            format!("http://127.0.0.1:{port}"),
            format!("https://127.0.0.1:{port}"),
        );
        let mut p = Proc::spawn(
            kind,
            &single(port, &format!("{plain},{tls}"), &certs.server_flags()),
        );
        p.wait_ready(&tls, &certs.ctl("client"));
        let put = ctl(&tls, &certs.ctl("client"), &["put", "a", "1"]);
        assert!(put.success(), "{}: {put:?}", kind.label());
        let health = common::cluster::http_get(port, "/health", Duration::from_secs(5));
        assert_eq!(
            health.map(|(code, body)| (code, body.contains("\"health\":\"true\""))),
            Ok((200, true)),
            "{}",
            kind.label()
        );
        // etcd 3.4 answers plain HTTP/1 here but not plaintext gRPC (the call never
        // completes on a port it shares with TLS); cairn serves the http:// URL it was given
        // in full.
        if kind == Kind::Cairn {
            let get = ctl(&plain, &[], &["get", "a", "--print-value-only"]);
            assert_eq!(get.stdout, "1\n", "{get:?}");
        }
        assert!(
            // etcd's capnslog and zap loggers word it differently; both say this.
            p.log().contains(" is HTTP while "),
            "{} does not warn that the http URL ignores the certificate:\n{}",
            kind.label(),
            p.log()
        );
    }
}

#[test]
fn auto_tls_keeps_a_self_signed_certificate_in_the_data_dir_as_etcd_does() {
    // etcdctl dials plaintext unless given a TLS file or `--insecure-transport=false`.
    let skip = vec![
        "--insecure-transport=false".to_string(),
        "--insecure-skip-tls-verify".to_string(),
    ];
    for kind in KINDS {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut p = Proc::spawn(kind, &single(port, &url, &["--auto-tls".to_string()]));
        p.wait_ready(&url, &skip);
        let cert = p.data().join("fixtures/client/cert.pem");
        let key = p.data().join("fixtures/client/key.pem");
        assert!(cert.is_file() && key.is_file(), "{}", kind.label());
        assert!(ctl(&url, &skip, &["put", "x", "y"]).success());
        // Unverified, the self-signed certificate is refused by the client.
        let verified = ctl(&url, &skip[..1], &["get", "x"]);
        assert!(!verified.success(), "{}: {verified:?}", kind.label());
        // The certificate itself verifies for the listen URL's host with its own file as CA.
        let pinned = vec![format!("--cacert={}", cert.display())];
        let get = ctl(&url, &pinned, &["get", "x", "--print-value-only"]);
        assert_eq!(get.stdout, "y\n", "{}: {get:?}", kind.label());
    }
}

#[test]
fn a_revoked_client_certificate_is_refused_as_etcd_refuses_it() {
    let certs = Certs::new();
    let mut flags = certs.server_flags();
    flags.extend([
        "--client-cert-auth".to_string(),
        "--client-crl-file".into(),
        certs.path("revoke.crl"),
    ]);
    for kind in KINDS {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut p = Proc::spawn(kind, &single(port, &url, &flags));
        p.wait_ready(&url, &certs.ctl("client"));
        let revoked = ctl(&url, &certs.ctl("revoked"), &["put", "k", "v"]);
        assert!(
            !revoked.success(),
            "{} served a revoked certificate",
            kind.label()
        );
        let good = ctl(&url, &certs.ctl("client"), &["put", "k", "v"]);
        assert!(good.success(), "{}: {good:?}", kind.label());
    }
}

#[test]
fn bad_tls_flags_stop_the_start_with_etcds_error() {
    let certs = Certs::new();
    let p = |s: &str| certs.path(s);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "with HTTPS scheme"),
        (
            vec!["--cert-file".into(), p("server.crt")],
            "KeyFile and CertFile must both be present",
        ),
        (
            vec![
                "--cert-file".into(),
                p("server.crt"),
                "--key-file".into(),
                p("client.key"),
            ],
            "tls: private key does not match public key",
        ),
        (
            vec![
                "--cert-file".into(),
                p("server.crt"),
                "--key-file".into(),
                p("ca.crt"),
            ],
            "tls: found a certificate rather than a key in the PEM for the private key",
        ),
        (
            vec![
                "--cert-file".into(),
                p("nope.crt"),
                "--key-file".into(),
                p("server.key"),
            ],
            "no such file or directory",
        ),
        (
            vec![
                "--cert-file".into(),
                p("server.crt"),
                "--key-file".into(),
                p("server.key"),
                "--cipher-suites".into(),
                "TLS_NO_SUCH_SUITE".into(),
            ],
            "unexpected TLS cipher suite \"TLS_NO_SUCH_SUITE\"",
        ),
    ];
    for (extra, want) in cases {
        for kind in KINDS {
            let port = free_port();
            let url = format!("https://127.0.0.1:{port}");
            let (code, log) = Proc::spawn(kind, &single(port, &url, &extra)).exit();
            assert_eq!(code, Some(1), "{} {extra:?}:\n{log}", kind.label());
            let line = log
                .lines()
                .find(|l| l.contains(want))
                .unwrap_or_else(|| panic!("{} {extra:?}: no {want:?} in\n{log}", kind.label()));
            if kind == Kind::Cairn {
                assert!(line.starts_with("cairn: "), "{line}");
            }
        }
    }
}

/// Three members of `kind` talking to each other with `peer` flags (client ports in
/// plaintext); returns the processes and their client URLs.
fn cluster(kind: Kind, peer: &[String]) -> (Vec<Proc>, Vec<String>) {
    let (mut procs, urls) = spawn_cluster(kind, peer);
    for (p, url) in procs.iter_mut().zip(&urls) {
        p.wait_ready(url, &[]);
    }
    (procs, urls)
}

/// [`cluster`] without waiting for it to serve.
fn spawn_cluster(kind: Kind, peer: &[String]) -> (Vec<Proc>, Vec<String>) {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, pp))| format!("m{i}=https://127.0.0.1:{pp}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for (i, (cp, pp)) in ports.iter().enumerate() {
        let client = format!("http://127.0.0.1:{cp}");
        let peer_url = format!("https://127.0.0.1:{pp}");
        let mut args: Vec<String> = [
            "--name",
            &format!("m{i}"),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &initial,
            "--initial-cluster-token",
            "tls-cluster",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(peer.iter().cloned());
        procs.push(Proc::spawn(kind, &args));
        urls.push(client);
    }
    (procs, urls)
}

/// Writes through one member, reads linearizably through another, and lists the members: the
/// raft traffic between them went over TLS.
fn check_cluster(kind: Kind, urls: &[String]) {
    let put = ctl(&urls[0], &[], &["put", "over", "tls"]);
    assert!(put.success(), "{}: {put:?}", kind.label());
    let get = ctl(&urls[2], &[], &["get", "over", "--print-value-only"]);
    assert_eq!(get.stdout, "tls\n", "{}: {get:?}", kind.label());
    let list = ctl(&urls[1], &[], &["member", "list"]);
    assert_eq!(
        list.stdout.matches(", started, ").count(),
        3,
        "{}: {list:?}",
        kind.label()
    );
    assert_eq!(list.stdout.matches("https://127.0.0.1:").count(), 3);
}

#[test]
fn members_talk_to_each_other_over_peer_tls_as_in_etcd() {
    let certs = Certs::new();
    let mut peer = certs.peer_flags();
    peer.push("--peer-client-cert-auth".into());
    for kind in KINDS {
        let (_procs, urls) = cluster(kind, &peer);
        check_cluster(kind, &urls);
    }
}

#[test]
fn peer_certificate_name_rules_admit_the_named_members_only_as_in_etcd() {
    let certs = Certs::new();
    // Every member shows the `server` certificate: CN "server", valid for localhost and
    // 127.0.0.1.
    let cases = [
        ("--peer-cert-allowed-cn=server", true),
        ("--peer-cert-allowed-hostname=localhost", true),
        ("--peer-cert-allowed-cn=someone-else", false),
        ("--peer-cert-allowed-hostname=elsewhere.example", false),
    ];
    for kind in KINDS {
        for (rule, admitted) in cases {
            let mut peer = certs.peer_flags();
            peer.push("--peer-client-cert-auth".into());
            peer.push(rule.into());
            if admitted {
                let (_procs, urls) = cluster(kind, &peer);
                check_cluster(kind, &urls);
                continue;
            }
            let (mut procs, urls) = spawn_cluster(kind, &peer);
            // Long enough for an election among members that could talk.
            std::thread::sleep(Duration::from_secs(4));
            let put = ctl(&urls[0], &[], &["put", "k", "v"]);
            assert!(
                !put.success(),
                "{} {rule}: members that refuse each other made a quorum: {put:?}",
                kind.label()
            );
            for p in &mut procs {
                let running = p.child.as_mut().unwrap().try_wait().unwrap().is_none();
                assert!(
                    running,
                    "{} {rule}: a member exited:\n{}",
                    kind.label(),
                    p.log()
                );
            }
            // The refused side's alert, in Go's words, in the logs (etcd's e2e suite waits
            // for this line).
            assert!(
                procs
                    .iter()
                    .any(|p| p.log().contains("remote error: tls: bad certificate")),
                "{} {rule}: no refusal logged:\n{}",
                kind.label(),
                procs[0].log()
            );
        }
        // Both rules at once: etcd's error, at start.
        let mut peer = certs.peer_flags();
        peer.push("--peer-cert-allowed-cn=server".into());
        peer.push("--peer-cert-allowed-hostname=localhost".into());
        let (procs, _urls) = spawn_cluster(kind, &peer);
        let (code, log) = procs.into_iter().next().unwrap().exit();
        assert_ne!(code, Some(0), "{}: {log}", kind.label());
        assert!(
            log.contains("AllowedCN and AllowedHostname are mutually exclusive"),
            "{}: {log}",
            kind.label()
        );
    }
}

#[test]
fn members_talk_to_each_other_over_peer_auto_tls_as_in_etcd() {
    for kind in KINDS {
        let (procs, urls) = cluster(kind, &["--peer-auto-tls".to_string()]);
        check_cluster(kind, &urls);
        for p in &procs {
            assert!(
                Path::new(&p.data().join("fixtures/peer/cert.pem")).is_file(),
                "{}",
                kind.label()
            );
        }
    }
}
