//! etcd's flags, environment variables and config file on real processes, side by side with
//! etcd 3.4.23: a unit file, manifest or test harness written for etcd must start cairn unchanged.
//!
//! Each test does the same to both servers and compares what a user sees: the exit code and first
//! error line for a malformed flag, the fatal conflict of a variable with a flag, a member started
//! from the environment or from a YAML file alone, the ready lines in the log, and the health and
//! metrics endpoints on `--listen-metrics-urls`.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::http_get;
use common::{etcdctl, free_port, Kind, Opts, Server};

const KINDS: [Kind; 2] = [Kind::Etcd, Kind::Cairn];

/// Runs `kind`'s server with `args` and `env` in `dir`, and returns (exit code, stderr) once it
/// exits, or kills it after `timeout`.
fn run_to_exit(
    kind: Kind,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
    timeout: Duration,
) -> (Option<i32>, String) {
    let mut child = Command::new(kind.program())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            return (None, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_flags_get_etcds_first_line_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--pre-vote=x"],
        vec!["--snapshot-count=abc"],
        vec!["--no-such-flag"],
        vec!["-no-such-flag"],
        vec!["--grpc-keepalive-interval=5x"],
        vec!["--experimental-initial-corrupt-check=maybe"],
    ] {
        let [etcd, cairn] = KINDS.map(|k| {
            let (code, err) = run_to_exit(k, &args, &[], dir.path(), Duration::from_secs(10));
            (code, err.lines().next().unwrap_or_default().to_string())
        });
        assert_eq!(cairn, etcd, "{args:?}");
        assert_eq!(cairn.0, Some(2), "{args:?}");
    }
}

#[test]
fn a_variable_that_repeats_a_command_line_flag_is_fatal_as_in_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let want = "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)";
    for kind in KINDS {
        let (code, err) = run_to_exit(
            kind,
            &["--name", "x", "--data-dir", data],
            &[("ETCD_NAME", "y")],
            dir.path(),
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(1), "{}: {err}", kind.label());
        assert!(err.contains(want), "{}: {err}", kind.label());
    }
}

/// Starts `kind` from the environment alone, or from a config file alone, and checks the member
/// it serves is the one described there (by name and client URL).
#[test]
fn a_member_starts_from_etcd_variables_or_from_an_etcd_yaml_file_alone() {
    for kind in KINDS {
        for source in ["env", "file"] {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.path().join("data").display().to_string();
            let settings = [
                ("name", "from-".to_string() + source),
                ("data-dir", data),
                ("listen-client-urls", client_url.clone()),
                ("advertise-client-urls", client_url.clone()),
                ("listen-peer-urls", peer_url.clone()),
                ("initial-advertise-peer-urls", peer_url.clone()),
                ("initial-cluster", format!("from-{source}={peer_url}")),
            ];
            let mut cmd = Command::new(kind.program());
            cmd.current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if source == "env" {
                for (k, v) in &settings {
                    cmd.env(format!("ETCD_{}", k.to_uppercase().replace('-', "_")), v);
                }
            } else {
                let yaml: String = settings
                    .iter()
                    .map(|(k, v)| format!("{k}: '{v}'\n"))
                    .chain(["snapshot-count: 10000\nclient-transport-security:\n  client-cert-auth: false\n".to_string()])
                    .collect();
                let path = dir.path().join("etcd.conf.yml");
                std::fs::write(&path, yaml).unwrap();
                // The file replaces flags and variables: a wrong name here must not count.
                cmd.arg("--config-file").arg(&path).arg("--name=ignored");
            }
            let mut child = cmd.spawn().expect("spawn");
            let endpoint = format!("127.0.0.1:{client}");
            let deadline = Instant::now() + Duration::from_secs(20);
            let listed = loop {
                let out = etcdctl(&endpoint, &["member", "list"], None);
                if out.success() || Instant::now() > deadline {
                    break out;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                listed.success(),
                "{} from {source}: {listed:?}",
                kind.label()
            );
            assert!(
                listed.stdout.contains(&format!(
                    "started, from-{source}, {peer_url}, {client_url}, false"
                )),
                "{} from {source}: {}",
                kind.label(),
                listed.stdout
            );
        }
    }
}

#[test]
fn the_ready_lines_and_the_metrics_listener_are_etcds() {
    for kind in KINDS {
        let metrics = free_port();
        let server = Server::start(
            kind,
            Opts {
                extra_args: vec![
                    "--listen-metrics-urls".into(),
                    format!("http://127.0.0.1:{metrics}"),
                    // Accepted by both (with a warning from cairn, which does not check yet).
                    "--experimental-initial-corrupt-check".into(),
                ],
                ..Opts::default()
            },
        );
        // etcd's e2e suite and scripts wait for these two lines.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(server.log().contains("enabled capabilities for version")
            && server.log().contains("published"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = server.log();
        assert!(
            log.contains("enabled capabilities for version") && log.contains("published"),
            "{}: {}",
            kind.label(),
            server.log_tail()
        );
        let (code, body) = http_get(metrics, "/health", Duration::from_secs(5)).unwrap();
        assert_eq!(
            (code, body.trim()),
            (200, r#"{"health":"true"}"#),
            "{}",
            kind.label()
        );
        let (code, body) = http_get(metrics, "/metrics", Duration::from_secs(5)).unwrap();
        assert_eq!(code, 200, "{}", kind.label());
        assert!(
            body.contains("etcd_server_has_leader 1"),
            "{}: {body}",
            kind.label()
        );
        // The client API is not on the metrics port.
        let out = etcdctl(
            &format!("127.0.0.1:{metrics}"),
            &["--dial-timeout=1s", "--command-timeout=2s", "get", "k"],
            None,
        );
        assert!(!out.success(), "{}: {out:?}", kind.label());
    }
}

/// `--wal-dir` puts the WAL on a disk of its own, and a restart recovers from it.
#[test]
fn the_wal_goes_to_wal_dir_and_a_restart_recovers_from_it() {
    for kind in KINDS {
        let wal = tempfile::tempdir().unwrap();
        let wal_dir = wal.path().join("wal");
        let mut server = Server::start(
            kind,
            Opts {
                extra_args: vec!["--wal-dir".into(), wal_dir.display().to_string()],
                ..Opts::default()
            },
        );
        let put = server.etcdctl(&["put", "k", "v"], None);
        assert!(put.success(), "{}: {put:?}", kind.label());
        server.sigkill();
        server.restart();
        let got = server.etcdctl(&["get", "k", "--print-value-only"], None);
        assert_eq!(got.stdout, "v\n", "{}: {got:?}", kind.label());
        let wals: Vec<_> = std::fs::read_dir(&wal_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .collect();
        assert!(
            !wals.is_empty(),
            "{}: no WAL file in {wal_dir:?}",
            kind.label()
        );
        assert!(
            !server.data_dir().join("member").join("wal").exists(),
            "{}: a WAL in the data dir too",
            kind.label()
        );
    }
}

/// `--auto-compaction-mode=periodic --auto-compaction-retention=2s`: the history older than the
/// retention is compacted away on its own, as etcd does it.
#[test]
fn periodic_auto_compaction_drops_old_revisions_on_its_own() {
    for kind in KINDS {
        let server = Server::start(
            kind,
            Opts {
                extra_args: vec![
                    "--auto-compaction-mode=periodic".into(),
                    "--auto-compaction-retention=2s".into(),
                ],
                ..Opts::default()
            },
        );
        for i in 0..5 {
            let put = server.etcdctl(&["put", "k", &format!("v{i}")], None);
            assert!(put.success(), "{}: {put:?}", kind.label());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let old = loop {
            let old = server.etcdctl(&["get", "k", "--rev=2"], None);
            if !old.success() || Instant::now() > deadline {
                break old;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            old.stderr
                .contains("etcdserver: mvcc: required revision has been compacted"),
            "{}: {old:?}",
            kind.label()
        );
        let now = server.etcdctl(&["get", "k", "--print-value-only"], None);
        assert_eq!(now.stdout, "v4\n", "{}", kind.label());
    }
}

/// `--experimental-initial-corrupt-check`: a member whose stored value was damaged while it was
/// down (one byte changed in its LMDB file, which nothing else checks) refuses to serve with
/// etcd's message, and the healthy members pass the same check.
#[test]
fn the_initial_corrupt_check_refuses_a_member_whose_data_differ() {
    use common::cluster::Cluster;
    let mut cluster = Cluster::start(Kind::Cairn, 3, &["--experimental-initial-corrupt-check"]);
    cluster.put(0, "a", "one-of-a-kind");
    let down = 2;
    cluster.wait_value(down, "a", "one-of-a-kind", true, Duration::from_secs(10));
    cluster.members[down].sigterm();
    damage_value(
        &cluster.members[down].data_dir().join("member").join("db"),
        b"one-of-a-kind",
        b"one-of-a-kinD",
    );
    cluster.members[down].spawn_again();
    let exited = cluster.members[down].wait_exit(Duration::from_secs(20));
    let log = cluster.members[down].log();
    assert!(exited.is_some(), "the damaged member kept running: {log}");
    assert!(
        log.contains(&format!(
            "{:x} found data inconsistency with peers",
            cluster.ids[down]
        )),
        "{log}"
    );
    // The healthy members pass the same check when they restart.
    cluster.members[0].sigterm();
    cluster.members[0].restart();
    assert_eq!(
        cluster.get(0, "a", false).unwrap().as_deref(),
        Some("one-of-a-kind")
    );
}

/// Replaces `from` by `to` (the same length) in the one kv record of the LMDB store in `db` that
/// holds it: damage no checksum of cairn's covers, as a disk or a bug could do.
fn damage_value(db: &std::path::Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    // SAFETY: the member is stopped; nothing else has the file open.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(1 << 30)
            .max_dbs(8)
            .open(db)
            .expect("open the stopped member's LMDB")
    };
    let kv = env
        .create_databases_and_commit(env.write_txn().unwrap(), |opener, wtxn| {
            let kv = opener
                .create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, Some("kv"))?;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(kv))
        })
        .unwrap()
        .unwrap_commit();
    let mut txn = env.write_txn().unwrap();
    let hits: Vec<(Vec<u8>, Vec<u8>)> = kv
        .iter(&txn)
        .unwrap()
        .map(|r| r.unwrap())
        .filter(|(_, v)| v.windows(from.len()).any(|w| w == from))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(hits.len(), 1, "records holding the value");
    let (key, mut value) = hits.into_iter().next().unwrap();
    let at = value.windows(from.len()).position(|w| w == from).unwrap();
    value[at..at + to.len()].copy_from_slice(to);
    kv.put(&mut txn, &key, &value).unwrap();
    txn.commit().unwrap();
}

/// `gateway start`: etcd's TCP gateway forwards a client to the cluster; the same command line
/// for both.
#[test]
fn the_gateway_subcommand_forwards_clients_to_the_cluster() {
    for kind in KINDS {
        let server = Server::start(kind, Opts::default());
        let listen = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gateway.log");
        let mut gateway = Command::new(kind.program())
            .args([
                "gateway",
                &format!("--endpoints={}", server.endpoint()),
                "start",
                "--listen-addr",
                &listen,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("gateway.err")).unwrap())
            .spawn()
            .expect("spawn the gateway");
        let deadline = Instant::now() + Duration::from_secs(10);
        let put = loop {
            let put = etcdctl(&listen, &["put", "via", "gateway"], None);
            if put.success() || Instant::now() > deadline {
                break put;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let got = server.etcdctl(&["get", "via", "--print-value-only"], None);
        let _ = gateway.kill();
        let _ = gateway.wait();
        let said = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("gateway.err")).unwrap_or_default();
        assert!(put.success(), "{}: {put:?}\n{said}", kind.label());
        assert_eq!(got.stdout, "gateway\n", "{}", kind.label());
        assert!(
            said.contains("ready to proxy client requests"),
            "{}: {said}",
            kind.label()
        );
    }
}
