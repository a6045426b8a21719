//! Backups end to end: the real etcdctl saves a snapshot of a running cairn (Maintenance.Snapshot:
//! the backend, then its SHA-256), `cairnctl snapshot status` reads it, `cairnctl snapshot restore`
//! makes a new member's data dir from it, and that member serves the old keys, revisions and
//! leases in a new cluster. Damaged files are refused with etcdctl's messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Kind, Opts, Output, Server};

fn cairnctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .env_clear()
        .args(args)
        .output()
        .expect("run cairnctl");
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

fn restore(file: &Path, data_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "snapshot".to_string(),
        "restore".into(),
        file.display().to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cairnctl(&refs)
}

#[test]
fn a_saved_snapshot_restores_into_a_new_cluster_with_its_keys_and_leases() {
    let source = Server::start(Kind::Cairn, Opts::default());
    for i in 0..30 {
        assert!(source
            .etcdctl(&["put", &format!("k{i:02}"), &format!("v{i}")], None)
            .success());
    }
    let lease = source.etcdctl(&["lease", "grant", "900"], None);
    assert!(lease.success(), "{lease:?}");
    let lease_id = lease.stdout.split_whitespace().nth(1).unwrap().to_string();
    assert!(source
        .etcdctl(&["put", "leased", "x", "--lease", &lease_id], None)
        .success());
    let before = source.etcdctl(&["get", "k", "--prefix", "-w", "json"], None);
    let before: serde_json::Value = serde_json::from_str(&before.stdout).unwrap();
    let revision = before["header"]["revision"].as_i64().unwrap();

    // Save with the real etcdctl: the file is the backend plus the SHA-256 of it, as etcd's.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.db");
    let saved = source.etcdctl(&["snapshot", "save", file.to_str().unwrap()], None);
    assert!(saved.success(), "{saved:?}");
    assert_eq!(
        saved.stdout,
        format!("Snapshot saved at {}\n", file.display())
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() % 512, 32, "backend pages plus a 32-byte digest");
    {
        use sha2::Digest as _;
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        assert_eq!(sha2::Sha256::digest(body).as_slice(), digest);
    }
    let status = cairnctl(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["revision"].as_i64(), Some(revision));
    assert_eq!(status["totalSize"].as_u64(), Some(bytes.len() as u64));
    // etcdctl and defrag work against cairn too.
    let defrag = source.etcdctl(&["defrag"], None);
    assert!(defrag.success(), "{defrag:?}");
    assert_eq!(
        defrag.stdout,
        format!(
            "Finished defragmenting etcd member[{}]\n",
            source.endpoint()
        )
    );

    // Damage is refused with etcdctl's messages and leaves no data dir behind.
    let flipped = work.path().join("flipped.db");
    let mut damaged = bytes.clone();
    damaged[100] ^= 1;
    std::fs::write(&flipped, &damaged).unwrap();
    let out = restore(&flipped, &work.path().join("bad"), &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("Error: expected sha256"),
        "{}",
        out.stderr
    );
    assert!(!work.path().join("bad").exists());
    let bare = work.path().join("bare.db");
    std::fs::write(&bare, &bytes[..bytes.len() - 32]).unwrap();
    let out = restore(&bare, &work.path().join("bad"), &[]);
    assert!(
        out.stderr
            .contains("Error: snapshot missing hash but --skip-hash-check=false"),
        "{out:?}"
    );

    // A new single-member cluster from the backup, started as `cairn` with the same flags.
    let mut target = Server::spawn(Kind::Cairn, Opts::default());
    target.wait_ready();
    target.sigterm();
    let data_dir: PathBuf = target.data_dir();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let peer = common::PEER_URL_ADVERTISED;
    let flags = [
        "--name",
        "default",
        "--initial-cluster",
        &format!("default={peer}"),
        "--initial-advertise-peer-urls",
        peer,
    ];
    let out = restore(&file, &data_dir, &flags);
    assert!(out.success(), "{out:?}");
    let again = restore(&file, &data_dir, &flags);
    assert_eq!(
        again.stderr,
        format!(
            "Error: data-dir {:?} exists\n",
            data_dir.display().to_string()
        )
    );
    target.restart();

    let after = target.etcdctl(&["get", "k", "--prefix", "-w", "json"], None);
    let after: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(after["kvs"], before["kvs"], "keys with their revisions");
    let leases = target.etcdctl(&["lease", "list"], None);
    assert!(leases.stdout.contains(&lease_id), "{leases:?}");
    let ttl = target.etcdctl(&["lease", "timetolive", &lease_id, "--keys"], None);
    assert!(ttl.stdout.contains("attached keys([leased])"), "{ttl:?}");
    // The new cluster is a new one: its own identity, one member, and writes go on from the
    // restored revision.
    let members = target.etcdctl(&["member", "list"], None);
    assert_eq!(members.stdout.lines().count(), 1, "{members:?}");
    let put = target.etcdctl(&["put", "after", "1", "-w", "json"], None);
    let put: serde_json::Value = serde_json::from_str(&put.stdout).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(revision + 1));
}
