//! Counters and histograms of one member, rendered in Prometheus' text format under etcd's metric
//! names (`etcd_server_*`, `etcd_disk_*`, `etcd_mvcc_*`) so that existing etcd dashboards and alerts
//! read cairn unchanged. Updated with relaxed atomics from the node task; read by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms' buckets: etcd's, 1 ms doubling to ~8 s.
pub const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in DURATION_BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, bound) in DURATION_BUCKETS_SECONDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything `/metrics` reports that the node and server count.
#[derive(Debug, Default)]
pub struct Metrics {
    pub leader_changes: AtomicU64,
    pub proposals_committed: AtomicU64,
    pub proposals_applied: AtomicU64,
    pub proposals_pending: AtomicU64,
    pub proposals_failed: AtomicU64,
    /// Entries not applied because their request was applied before (cairn's own metric).
    pub proposals_duplicated: AtomicU64,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub read_indexes: AtomicU64,
    pub read_index_failures: AtomicU64,
    /// Keys written by applied entries (etcd's `etcd_mvcc_put_total`).
    pub mvcc_puts: AtomicU64,
}

/// Values read at render time rather than counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub has_leader: bool,
    pub is_leader: bool,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub db_size_bytes: u64,
    pub db_size_in_use_bytes: u64,
    pub quota_backend_bytes: u64,
    pub revision: i64,
    pub compact_revision: i64,
}

impl Metrics {
    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        // `name` may carry labels (`name{label="value"}`); HELP and TYPE name the bare metric.
        let mut gauge = |name: &str, help: &str, kind: &str, v: String| {
            let bare = name.split('{').next().unwrap_or(name);
            let _ = writeln!(out, "# HELP {bare} {help}");
            let _ = writeln!(out, "# TYPE {bare} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        gauge(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            "gauge",
            u8::from(g.has_leader).to_string(),
        );
        gauge(
            "etcd_server_is_leader",
            "Whether or not this member is a leader.",
            "gauge",
            u8::from(g.is_leader).to_string(),
        );
        gauge(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            "counter",
            load(&self.leader_changes),
        );
        gauge(
            "etcd_server_term",
            "The current raft term.",
            "gauge",
            g.term.to_string(),
        );
        gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            "gauge",
            g.commit.to_string(),
        );
        gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            "gauge",
            g.applied.to_string(),
        );
        gauge(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            "gauge",
            load(&self.proposals_pending),
        );
        gauge(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            "counter",
            load(&self.proposals_failed),
        );
        gauge(
            "cairn_server_proposals_duplicated_total",
            "The total number of committed entries not applied because their request was applied before.",
            "counter",
            load(&self.proposals_duplicated),
        );
        gauge(
            "etcd_server_read_indexes_total",
            "The total number of ReadIndex rounds requested.",
            "counter",
            load(&self.read_indexes),
        );
        gauge(
            "etcd_server_read_indexes_failed_total",
            "The total number of failed read indexes seen.",
            "counter",
            load(&self.read_index_failures),
        );
        gauge(
            "etcd_mvcc_put_total",
            "Total number of puts seen by this member.",
            "counter",
            load(&self.mvcc_puts),
        );
        gauge(
            &format!(
                "etcd_server_version{{server_version=\"{}\"}}",
                super::ETCD_API_VERSION
            ),
            "Which version is running. 1 for 'server_version' label with current version.",
            "gauge",
            "1".into(),
        );
        gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            "gauge",
            g.db_size_bytes.to_string(),
        );
        gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            "gauge",
            g.db_size_in_use_bytes.to_string(),
        );
        gauge(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            "gauge",
            g.quota_backend_bytes.to_string(),
        );
        gauge(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            "gauge",
            g.revision.to_string(),
        );
        gauge(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            "gauge",
            g.compact_revision.to_string(),
        );
        self.wal_fsync.render(
            &mut out,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
        );
        self.backend_commit.render(
            &mut out,
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered_in_prometheus_text() {
        let m = Metrics::default();
        m.wal_fsync.observe(Duration::from_micros(500));
        m.wal_fsync.observe(Duration::from_millis(3));
        m.leader_changes.fetch_add(2, Ordering::Relaxed);
        let text = m.render(Gauges {
            has_leader: true,
            term: 7,
            ..Default::default()
        });
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 2\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 2\n"));
        assert!(text.contains("etcd_server_leader_changes_seen_total 2\n"));
        assert!(text.contains("etcd_server_has_leader 1\n"));
        assert!(text.contains("etcd_server_version{server_version=\"3.4.23\"} 1\n"));
        assert!(text.contains("# TYPE etcd_server_version gauge\n"));
        assert!(text.contains("etcd_server_term 7\n"));
    }
}
