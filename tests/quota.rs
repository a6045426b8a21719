//! The space quota and the NOSPACE alarm, end to end on real processes, compared with etcd 3.4.23
//! doing the same (issue 8: a backend that fills up must stop writes, not members).
//!
//! One script runs against a 3-member etcd cluster and a 3-member cairn cluster, both started
//! with `--quota-backend-bytes=1048576`, through Debian's `etcdctl`: fill the backend past the
//! quota until a put is refused, see etcd's error and the alarm on every member (also after a
//! member restarts), keep reading and deleting, compact, defragment, disarm, and write again.
//! Every step's exit code, stdout and `Error:` lines must match etcd's after normalising what
//! differs between two clusters anyway (member ids and ports, revisions, and how many puts fit:
//! bolt and LMDB lay pages out differently). Which member raises the alarm is a race in etcd too
//! (the member a client wrote through, or any member applying a write at its quota), so alarm
//! lines name "a member of this cluster" and are compared as sets. The figures the script
//! measures (puts that fit, backend sizes) are printed; run with `--nocapture` to see them, and
//! with `CAIRN_DIFF_VERBOSE=1` to see etcd's outcome of every step.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Normalizer};
use common::{Kind, Output};

const QUOTA_BYTES: u64 = 1024 * 1024;
/// The value of every filling put: 16 KiB, so the quota is reached in a few dozen puts.
const VALUE_BYTES: usize = 16 * 1024;
/// Puts the fill may take before the test gives up on the quota ever being enforced.
const FILL_PUTS_MAX: usize = 200;
/// How long every member may take to apply the alarm after the refused put.
const ALARM_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn nospace_alarm_stops_writes_on_every_member_until_disarmed_as_in_etcd() {
    let (etcd, cairn) = std::thread::scope(|s| {
        let etcd = s.spawn(|| quota_script(Kind::Etcd));
        let cairn = s.spawn(|| quota_script(Kind::Cairn));
        (
            etcd.join().expect("etcd script"),
            cairn.join().expect("cairn script"),
        )
    });
    if std::env::var_os("CAIRN_DIFF_VERBOSE").is_some() {
        for (what, e) in &etcd {
            eprintln!("{what}: {e:?}");
        }
    }
    let mut diffs = Vec::new();
    assert_eq!(
        etcd.len(),
        cairn.len(),
        "the scripts recorded different steps"
    );
    for ((what, e), (_, c)) in etcd.iter().zip(&cairn) {
        if e != c {
            diffs.push(format!("{what}:\n  etcd:  {e:?}\n  cairn: {c:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} outputs differ from etcd's:\n{}",
        diffs.len(),
        etcd.len(),
        diffs.join("\n")
    );
}

/// What a command printed, reduced to what must match: the exit code, stdout, and etcdctl's
/// `Error:` lines (its JSON log lines carry timestamps and random client ids).
fn outcome(out: &Output, n: &Normalizer) -> String {
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect();
    any_member(&n.apply(&format!(
        "exit {:?}\n{}{}",
        out.code,
        out.stdout,
        errors.join("\n")
    )))
}

/// Alarm lines name the member that raised the alarm, which is a race: any member's id reads
/// `<member-id>`, and the lines are sorted and deduplicated.
fn any_member(text: &str) -> String {
    let mut text = text.to_string();
    for i in 1..=3 {
        text = text.replace(&format!("<n{i}-id>"), "<member-id>");
    }
    text
}

fn line_set(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.dedup();
    lines.join("\n")
}

/// `endpoint status -w json` of member `i`: (revision, dbSize, dbSizeInUse, errors).
fn status(cluster: &Cluster, i: usize) -> (i64, u64, u64, Vec<String>) {
    let out = cluster.ctl(i, &["-w", "json", "endpoint", "status"]);
    assert!(out.success(), "endpoint status: {out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("status JSON");
    let st = &v[0]["Status"];
    let errors = st["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (
        st["header"]["revision"].as_i64().unwrap_or(0),
        st["dbSize"].as_u64().unwrap_or(0),
        st["dbSizeInUse"].as_u64().unwrap_or(0),
        errors,
    )
}

/// `GET /health` on member `i`: the status code and the `health` field.
fn health(cluster: &Cluster, i: usize) -> Result<(u16, bool), String> {
    let port = cluster.members[i].client_port;
    common::cluster::http_get(port, "/health", Duration::from_secs(5))
        .map(|(code, body)| (code, body.contains("\"health\":\"true\"")))
}

/// Polls `alarm list` on member `i` until it prints something; returns what it printed.
fn wait_alarm(cluster: &Cluster, i: usize) -> Output {
    let start = Instant::now();
    loop {
        let out = cluster.ctl(i, &["alarm", "list"]);
        if (out.success() && !out.stdout.is_empty()) || start.elapsed() > ALARM_TIMEOUT {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quota_script(kind: Kind) -> Vec<(String, String)> {
    let quota_flag = format!("--quota-backend-bytes={QUOTA_BYTES}");
    let mut cluster = Cluster::start(kind, 3, &[&quota_flag]);
    let all = cluster.all();
    let cluster_id = {
        let out = cluster.ctl(0, &["-w", "json", "endpoint", "status"]);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("status JSON");
        v[0]["Status"]["header"]["cluster_id"]
            .as_u64()
            .expect("cluster id")
    };
    let n = Normalizer::new(&cluster, cluster_id);
    let label = kind.label();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, text: String| seen.push((what.to_string(), text));
    let txn = |cluster: &Cluster, i: usize, stdin: &str| {
        let mut args: Vec<&str> = common::cluster::CTL_BOUNDS.to_vec();
        args.push("txn");
        common::etcdctl(&cluster.members[i].endpoint(), &args, Some(stdin))
    };

    // 1. Fill past the quota through member 0, until a put is refused.
    let value = "x".repeat(VALUE_BYTES);
    let mut accepted = 0;
    let refused = loop {
        assert!(
            accepted < FILL_PUTS_MAX,
            "{label}: {FILL_PUTS_MAX} puts of {VALUE_BYTES} bytes fit in a quota of {QUOTA_BYTES}"
        );
        let key = format!("k{accepted:03}");
        let out = cluster.ctl(0, &["put", &key, &value]);
        if !out.success() {
            break out;
        }
        accepted += 1;
    };
    let (_, db_full, in_use_full, _) = status(&cluster, 0);
    eprintln!(
        "{label}: {accepted} puts of {VALUE_BYTES} bytes fit in a quota of {QUOTA_BYTES} bytes \
         (then: db size {db_full}, in use {in_use_full})"
    );
    assert!(accepted >= 10, "{label}: only {accepted} puts fit");
    record("the put past the quota", outcome(&refused, &n));

    // 2. The alarm, on every member; writes refused through every member.
    for i in all.clone() {
        record(
            &format!("alarm list on n{}", i + 1),
            line_set(&outcome(&wait_alarm(&cluster, i), &n)),
        );
        let errors = status(&cluster, i).3.join("\n");
        record(
            &format!("status errors of n{}", i + 1),
            line_set(&any_member(&n.apply(&errors))),
        );
        record(
            &format!("small put through n{}", i + 1),
            outcome(&cluster.ctl(i, &["put", "small", "v"]), &n),
        );
        // etcd 3.4 reports a member with a raised alarm unhealthy.
        record(
            &format!("/health of n{} under the alarm", i + 1),
            format!("{:?}", health(&cluster, i)),
        );
    }
    record(
        "txn with a put",
        outcome(&txn(&cluster, 1, "\nput t v\n\n\n"), &n),
    );
    record(
        "lease grant",
        outcome(&cluster.ctl(2, &["lease", "grant", "100"]), &n),
    );

    // 3. The alarm is persisted: a restarted member still has it and still refuses.
    cluster.members[2].sigterm();
    cluster.members[2].restart();
    record(
        "alarm list on n3 after its restart",
        line_set(&outcome(&wait_alarm(&cluster, 2), &n)),
    );
    record(
        "small put through n3 after its restart",
        outcome(&cluster.ctl(2, &["put", "small", "v"]), &n),
    );

    // 4. Reads and deletes go on.
    for i in all.clone() {
        let out = cluster.ctl(i, &["get", "--consistency=s", "k000", "--print-value-only"]);
        record(
            &format!("serializable get through n{}", i + 1),
            format!("exit {:?}, {} bytes", out.code, out.stdout.len()),
        );
    }
    let out = cluster.ctl(1, &["get", "k001", "--print-value-only"]);
    record(
        "linearizable get",
        format!("exit {:?}, {} bytes", out.code, out.stdout.len()),
    );
    record(
        "delete one key",
        outcome(&cluster.ctl(1, &["del", "k000"]), &n),
    );
    record(
        "txn with a delete only",
        outcome(&txn(&cluster, 0, "\ndel k001\n\n\n"), &n),
    );
    let out = cluster.ctl(0, &["del", "--prefix", "k"]);
    // How many keys are left depends on how many puts fit (and etcd 3.4 applies the put it
    // refuses at apply): the count is checked, not compared.
    let deleted: usize = out.stdout.trim().parse().unwrap_or(0);
    eprintln!("{label}: the last delete removed {deleted} keys ({accepted} puts were accepted)");
    record(
        "delete the rest",
        format!("exit {:?}, deleted some: {}", out.code, deleted > 0),
    );
    record(
        "small put after the deletes",
        outcome(&cluster.ctl(0, &["put", "small", "v"]), &n),
    );

    // 5. Compaction and defragmentation work; writes stay refused while the alarm is active.
    let (revision, _, _, _) = status(&cluster, 0);
    let out = cluster.ctl(0, &["compaction", &revision.to_string()]);
    record(
        "compaction",
        outcome(&out, &n).replace(&revision.to_string(), "<rev>"),
    );
    record(
        "small put after the compaction",
        outcome(&cluster.ctl(1, &["put", "small", "v"]), &n),
    );
    record(
        "defrag --cluster",
        line_set(&outcome(&cluster.ctl(0, &["defrag", "--cluster"]), &n)),
    );
    for i in all.clone() {
        let (_, db, in_use, errors) = status(&cluster, i);
        eprintln!(
            "{label}: n{} after delete, compaction and defrag: db size {db}, in use {in_use}",
            i + 1
        );
        // What each counts against the quota: etcd its file, cairn the LMDB pages in use.
        let counted = match kind {
            Kind::Etcd => db,
            Kind::Cairn => in_use,
        };
        record(
            &format!("n{} has room again", i + 1),
            (counted < QUOTA_BYTES / 2).to_string(),
        );
        record(
            &format!("status errors of n{} before the disarm", i + 1),
            line_set(&any_member(&n.apply(&errors.join("\n")))),
        );
    }
    record(
        "small put after the defrag",
        outcome(&cluster.ctl(2, &["put", "small", "v"]), &n),
    );

    // 6. Disarm: the alarm is gone everywhere and every member takes writes again.
    record(
        "alarm disarm",
        line_set(&outcome(&cluster.ctl(1, &["alarm", "disarm"]), &n)),
    );
    for i in all.clone() {
        record(
            &format!("/health of n{} after the disarm", i + 1),
            format!("{:?}", health(&cluster, i)),
        );
        record(
            &format!("alarm list on n{} after the disarm", i + 1),
            outcome(&cluster.ctl(i, &["alarm", "list"]), &n),
        );
        record(
            &format!("put through n{} after the disarm", i + 1),
            outcome(
                &cluster.ctl(i, &["put", &format!("after{}", i + 1), "v"]),
                &n,
            ),
        );
        record(
            &format!("status errors of n{} after the disarm", i + 1),
            status(&cluster, i).3.join("\n"),
        );
    }
    record(
        "get after the disarm",
        outcome(&cluster.ctl(0, &["get", "--prefix", "after"]), &n),
    );
    record(
        "lease grant after the disarm",
        outcome(&cluster.ctl(0, &["lease", "grant", "100"]), &n)
            .split_whitespace()
            .filter(|w| !w.chars().all(|c| c.is_ascii_hexdigit()))
            .collect::<Vec<_>>()
            .join(" "),
    );

    // 7. cairnctl prints what etcdctl prints for `alarm` (in every format, with an alarm raised
    //    through the Alarm RPC, as etcdctl has no command for that) and for `defrag`.
    let endpoint = cluster.members[0].endpoint();
    let member = cluster.ids[0];
    for w in ["simple", "json", "fields", "table", "protobuf"] {
        raise_nospace(&endpoint, member);
        let args = ["-w", w, "alarm", "list"];
        record(
            &format!("cairnctl alarm list -w {w}"),
            same_as_etcdctl(&endpoint, &args, &n),
        );
        let disarmed_by = |tool: fn(&str, &[&str]) -> Output| {
            raise_nospace(&endpoint, member);
            tool(&endpoint, &["-w", w, "alarm", "disarm"])
        };
        let (e, c) = (disarmed_by(etcdctl_run), disarmed_by(cairnctl_run));
        record(
            &format!("cairnctl alarm disarm -w {w}"),
            compare_tools(&e, &c, &n),
        );
        record(
            &format!("cairnctl alarm disarm -w {w} with nothing to disarm"),
            same_as_etcdctl(&endpoint, &["-w", w, "alarm", "disarm"], &n),
        );
    }
    for args in [
        &["alarm", "list", "extra"][..],
        &["alarm", "disarm", "x"],
        &["alarm"],
        &["alarm", "li"],
        &["alarm", "--help"],
        &["defrag"],
        &["defrag", "--cluster"],
        &["defrag", "-h"],
    ] {
        // `--cluster` goes in member list order, which is by member id.
        record(
            &format!("cairnctl {}", args.join(" ")),
            line_set(&same_as_etcdctl(&endpoint, args, &n)),
        );
    }
    seen
}

fn etcdctl_run(endpoint: &str, args: &[&str]) -> Output {
    let mut all: Vec<&str> = common::cluster::CTL_BOUNDS.to_vec();
    all.extend_from_slice(args);
    common::etcdctl(endpoint, &all, None)
}

fn cairnctl_run(endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairnctl"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--endpoints")
        .arg(endpoint)
        .args(common::cluster::CTL_BOUNDS)
        .args(args);
    common::run_bounded(cmd, None, common::ETCDCTL_TIMEOUT)
}

/// Runs `args` with etcdctl and with cairnctl; returns etcdctl's outcome if both agree, or both
/// outcomes.
fn same_as_etcdctl(endpoint: &str, args: &[&str], n: &Normalizer) -> String {
    compare_tools(
        &etcdctl_run(endpoint, args),
        &cairnctl_run(endpoint, args),
        n,
    )
}

fn compare_tools(e: &Output, c: &Output, n: &Normalizer) -> String {
    if e.stdout.contains('\u{12}') {
        // Protobuf holds the member id in binary, which does not normalise across clusters.
        return if e == c {
            format!("exit {:?}, the same bytes", e.code)
        } else {
            format!("etcdctl: {e:?}, cairnctl: {c:?}")
        };
    }
    // A Go panic's trace holds addresses that differ from run to run of etcdctl itself: its
    // first line and the exit status must match.
    let shown = |o: &Output| {
        if o.stderr.starts_with("panic: ") {
            let first = o.stderr.lines().next().unwrap_or_default();
            format!("exit {:?}\n{}{first}", o.code, o.stdout)
        } else {
            outcome(o, n)
        }
    };
    let (e, c) = (shown(e), shown(c));
    if e == c {
        e
    } else {
        format!("etcdctl: {e:?}, cairnctl: {c:?}")
    }
}

/// Raises a NOSPACE alarm for `member` through the Alarm RPC.
fn raise_nospace(endpoint: &str, member: u64) {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client};
    let rt = real_tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut client = Client::connect([endpoint], None).await.expect("connect");
        let mut options = AlarmOptions::new();
        options.with_member(member);
        client
            .alarm(AlarmAction::Activate, AlarmType::Nospace, Some(options))
            .await
            .expect("raise the NOSPACE alarm");
    });
}
