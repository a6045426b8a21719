//! `snapshot save | restore | status`: backups of one member's backend, and new data dirs made
//! from them (see `server::restore` for what a snapshot is and what restore keeps).

use std::io::Write;
use std::path::Path;

use super::client::{self, Client, TargetStyle};
use super::commands::{client_config, Config};
use super::flags::{Def, Flags, Kind, HELP};
use super::printer::Format;
use super::{gofmt, table, Console, Fail, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR};
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::SnapshotRequest;
use crate::server::restore::{self, RestoreError, SnapshotStatus};

/// etcdctl exits with this when a snapshot is asked of more than one endpoint.
const EXIT_INTERRUPTED: i32 = super::EXIT_INTERRUPTED;

const fn string(name: &'static str, default: &'static str) -> Def {
    Def {
        name,
        short: None,
        kind: Kind::Str,
        default,
    }
}

/// `snapshot restore`'s own flags, in pflag's (sorted) order.
pub const RESTORE_FLAGS: &[Def] = &[
    string("data-dir", ""),
    HELP,
    string("initial-advertise-peer-urls", "http://localhost:2380"),
    string("initial-cluster", "default=http://localhost:2380"),
    string("initial-cluster-token", "etcd-cluster"),
    string("name", "default"),
    Def {
        name: "skip-hash-check",
        short: None,
        kind: Kind::Bool,
        default: "false",
    },
    string("wal-dir", ""),
];

/// `snapshot save <file>`: streams one member's backend into `<file>.part`, syncs it, and
/// renames it into place.
pub async fn save(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    if args.len() != 1 {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "snapshot save expects one argument".into(),
        ));
    }
    let cfg: Config = client_config(&mut flags, inherited, env, io)?;
    if cfg.endpoints.len() != 1 {
        return Err(Fail::Error(
            EXIT_INTERRUPTED,
            format!(
                "snapshot must be requested to one selected node, not multiple [{}]",
                cfg.endpoints.join(" ")
            ),
        ));
    }
    let path = &args[0];
    let part = format!("{path}.part");
    let fail = |e: String| Fail::Error(EXIT_INTERRUPTED, e);
    let mut c = Client::new(
        cfg.endpoints.clone(),
        TargetStyle::Passthrough,
        &cfg.security,
    );
    let channel = c
        .connect(Some(crate::ctl::clock::now() + cfg.dial_timeout))
        .await
        .map_err(|e| fail(e.etcdctl_text()))?;
    let mut stream = MaintenanceClient::new(channel)
        .max_decoding_message_size(client::recv_limit())
        .snapshot(c.stream_request(SnapshotRequest {}))
        .await
        .map_err(|s| fail(client::CallError::from_status(&s).etcdctl_text()))?
        .into_inner();
    let mut file = std::fs::File::create(&part).map_err(|e| fail(format!("{part}: {e}")))?;
    let written = async {
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| client::CallError::from_status(&s).etcdctl_text())?
        {
            file.write_all(&msg.blob)
                .map_err(|e| format!("write {part}: {e}"))?;
        }
        file.sync_all().map_err(|e| format!("sync {part}: {e}"))?;
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(fail(e));
    }
    std::fs::rename(&part, path).map_err(|e| fail(format!("rename {part}: {e}")))?;
    let _ = writeln!(io.out, "Snapshot saved at {path}");
    Ok(())
}

/// `snapshot status <file>`: hash, revision, records and size of a saved snapshot.
pub fn status(flags: Flags, args: Vec<String>, io: &mut Console<'_>) -> Result<(), Fail> {
    if args.len() != 1 {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "snapshot status requires exactly one argument".into(),
        ));
    }
    let format = Format::parse(&flags.str("write-out"))
        .ok_or_else(|| Fail::Error(EXIT_BAD_FEATURE, "unsupported output format".into()))?;
    if format == Format::Protobuf {
        return Err(Fail::Error(
            EXIT_BAD_FEATURE,
            "protobuf not supported as output format".into(),
        ));
    }
    let st = restore::status(Path::new(&args[0]), &std::env::temp_dir())
        .map_err(|e| Fail::Error(EXIT_ERROR, error_text(&e)))?;
    let _ = io.out.write_all(render_status(format, &st).as_bytes());
    Ok(())
}

fn render_status(format: Format, st: &SnapshotStatus) -> String {
    match format {
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_keys, st.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            st.hash, st.revision, st.total_keys, st.total_size
        ),
        Format::Table => table::render(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_keys.to_string(),
                gofmt::humanize_bytes(st.total_size),
            ]],
        ),
        Format::Simple | Format::Protobuf => format!(
            "{:x}, {}, {}, {}\n",
            st.hash,
            st.revision,
            st.total_keys,
            gofmt::humanize_bytes(st.total_size)
        ),
    }
}

/// etcdctl's text for a failed restore or status: Go's quoting and file-error wording.
fn error_text(e: &RestoreError) -> String {
    match e {
        RestoreError::DataDirExists(dir) => format!(
            "data-dir {} exists",
            gofmt::quote(dir.display().to_string().as_bytes())
        ),
        RestoreError::Io { op, path, source } => format!(
            "{op} {}: {}",
            path.display(),
            gofmt::os_error_reason(source)
        ),
        other => other.to_string(),
    }
}

/// `snapshot restore <file>`: a new member's data dir from a snapshot, for the cluster the
/// `--initial-*` flags describe.
pub fn restore(flags: Flags, args: Vec<String>, io: &mut Console<'_>) -> Result<(), Fail> {
    if args.len() != 1 {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "snapshot restore requires exactly one argument".into(),
        ));
    }
    let name = flags.str("name");
    let data_dir = match flags.str("data-dir") {
        d if d.is_empty() => format!("{name}.etcd"),
        d => d,
    };
    let wal_flag = flags.str("wal-dir");
    // The member's configuration exactly as `cairn` derives it from the same flags.
    let argv: Vec<String> = [
        "cairn",
        "--name",
        &name,
        "--data-dir",
        &data_dir,
        "--initial-cluster",
        &flags.str("initial-cluster"),
        "--initial-cluster-token",
        &flags.str("initial-cluster-token"),
        "--initial-advertise-peer-urls",
        &flags.str("initial-advertise-peer-urls"),
        "--wal-dir",
        &wal_flag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The server's environment variables are not the restore's: only these flags count.
    let cfg = crate::config::Config::from_args_and_env(&argv, &[])
        .map_err(|e| Fail::Error(EXIT_ERROR, e.to_string()))?
        .server;
    let snapshot = &args[0];
    let wal_dir = cfg.wal_dir().display().to_string();
    let snap_dir = format!("{data_dir}/member/snap");
    let log = |io: &mut Console<'_>, msg: &str| {
        let _ = writeln!(
            io.err,
            "{{\"level\":\"info\",\"msg\":\"{msg}\",\"path\":{},\"wal-dir\":{},\"data-dir\":{},\"snap-dir\":{}}}",
            gofmt::quote(snapshot.as_bytes()),
            gofmt::quote(wal_dir.as_bytes()),
            gofmt::quote(data_dir.as_bytes()),
            gofmt::quote(snap_dir.as_bytes()),
        );
    };
    if !Path::new(&data_dir).exists() {
        log(io, "restoring snapshot");
    }
    restore::restore(Path::new(snapshot), &cfg, flags.bool("skip-hash-check"))
        .map_err(|e| Fail::Error(EXIT_ERROR, error_text(&e)))?;
    for m in &cfg.initial_cluster {
        let urls: Vec<String> = m
            .peer_urls
            .iter()
            .map(|u| gofmt::quote(u.as_bytes()))
            .collect();
        let _ = writeln!(
            io.err,
            "{{\"level\":\"info\",\"msg\":\"added member\",\"cluster-id\":\"{:x}\",\"local-member-id\":\"0\",\"added-peer-id\":\"{:x}\",\"added-peer-peer-urls\":[{}]}}",
            cfg.cluster_id,
            m.id,
            urls.join(",")
        );
    }
    log(io, "restored snapshot");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_formats_match_etcdctl() {
        // Captured from etcdctl 3.4.23 `snapshot status` (values of an etcd snapshot).
        let st = SnapshotStatus {
            hash: 4064050180,
            revision: 2,
            total_keys: 5,
            total_size: 20480,
        };
        assert_eq!(
            render_status(Format::Simple, &st),
            "f23c7c04, 2, 5, 20 kB\n"
        );
        assert_eq!(
            render_status(Format::Json, &st),
            "{\"hash\":4064050180,\"revision\":2,\"totalKey\":5,\"totalSize\":20480}\n"
        );
        assert_eq!(
            render_status(Format::Fields, &st),
            "\"Hash\" : 4064050180\n\"Revision\" : 2\n\"Keys\" : 5\n\"Size\" : 20480\n"
        );
        assert_eq!(
            render_status(Format::Table, &st),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | f23c7c04 |        2 |          5 |      20 kB |\n\
             +----------+----------+------------+------------+\n"
        );
    }
}
