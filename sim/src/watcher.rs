//! Watchers: clients that hold etcd Watch streams open on the key space and record every event,
//! as a real etcd client does. A stream may break (its member crashed, paused or stopped
//! answering); the watcher then opens a new one on another member from the revision after the
//! last one it knows complete, which is what etcd's clients do and what etcd's ordered, reliable,
//! gap-free delivery on one stream makes correct. Every second the watcher asks for a progress
//! response: its revision promises that every event up to it was sent, which both extends what
//! the checker can call complete and detects a stream that went silent.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::io::{Rng, SplitMix64};
use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest};

use crate::history::{SegmentEnd, WatchEvent, WatchLog, WatchSegment};
use crate::workload::Endpoint;
use crate::world::World;

/// Silent progress intervals after which a stream counts as broken.
const SILENT_INTERVALS_MAX: u32 = 3;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Events a watcher keeps; beyond it the run stops watching (bounded memory).
pub const WATCH_EVENTS_MAX: usize = 200_000;

/// When a watcher may stop: once it covers `target` (set after the heal), or when told to give up.
#[derive(Debug)]
pub struct WatchControl {
    pub target: AtomicI64,
    pub give_up: AtomicBool,
}

impl Default for WatchControl {
    fn default() -> Self {
        WatchControl {
            target: AtomicI64::new(i64::MAX),
            give_up: AtomicBool::new(false),
        }
    }
}

fn covered(log: &WatchLog) -> i64 {
    log.segments.last().map_or(0, |s| s.covered_to())
}

/// Runs one watcher until it has delivered everything up to `control.target` or gives up. The
/// log is shared so that the harness sees it even if the watcher is still running; the endpoint
/// list is shared so that it follows membership changes, as an etcd client's endpoint sync does.
pub async fn watcher(
    world: Arc<World>,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    log: Arc<Mutex<WatchLog>>,
    start_rev: i64,
    seed: u64,
    control: Arc<WatchControl>,
) {
    let mut rng = SplitMix64::new(seed);
    let (w, key, range_end) = {
        let l = log.lock().expect("watch log");
        (l.watcher, l.key.clone(), l.range_end.clone())
    };
    // 0: from "now" (the created response names it).
    let mut next = start_rev;
    loop {
        {
            let l = log.lock().expect("watch log");
            let events: usize = l.segments.iter().map(|s| s.events.len()).sum();
            if covered(&l) >= control.target.load(Ordering::Relaxed)
                || control.give_up.load(Ordering::Relaxed)
                || events >= WATCH_EVENTS_MAX
            {
                return;
            }
        }
        let ep = {
            let eps = endpoints.lock().expect("endpoints");
            eps[rng.range(0, eps.len() as u64) as usize].clone()
        };
        let ep = &ep;
        let connect =
            madsim::time::timeout(Duration::from_secs(1), WatchClient::connect(ep.url.clone()))
                .await;
        let Ok(Ok(mut client)) = connect else {
            madsim::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(8);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.clone().into_bytes(),
                range_end: range_end.clone().into_bytes(),
                start_revision: next,
                ..Default::default()
            })),
        };
        if tx.try_send(create).is_err() {
            continue;
        }
        let opened = madsim::time::timeout(
            Duration::from_secs(2),
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(resp)) = opened else {
            madsim::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = resp.into_inner();
        world.event(
            "watch_open",
            format!(
                "\"watcher\":{w},\"node\":\"{}\",\"key\":{},\"range_end\":{},\"start_rev\":{next}",
                ep.name,
                serde_json::Value::String(key.clone()),
                serde_json::Value::String(range_end.clone())
            ),
        );
        let index = {
            let mut l = log.lock().expect("watch log");
            l.segments.push(WatchSegment {
                node: ep.name.clone(),
                start_rev: next.max(1),
                events: Vec::new(),
                progress_rev: 0,
                end: SegmentEnd::Open,
            });
            l.segments.len() - 1
        };
        let mut silent = 0;
        let mut created = false;
        let end = loop {
            {
                let l = log.lock().expect("watch log");
                if covered(&l) >= control.target.load(Ordering::Relaxed)
                    || control.give_up.load(Ordering::Relaxed)
                {
                    break SegmentEnd::Open;
                }
            }
            let msg = match madsim::time::timeout(PROGRESS_INTERVAL, stream.message()).await {
                Err(_) => {
                    silent += 1;
                    if silent > SILENT_INTERVALS_MAX {
                        break SegmentEnd::Broken("silent".into());
                    }
                    let progress = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    let _ = tx.try_send(progress);
                    continue;
                }
                Ok(Err(status)) => {
                    break SegmentEnd::Broken(format!("{:?}: {}", status.code(), status.message()))
                }
                Ok(Ok(None)) => break SegmentEnd::Broken("stream ended".into()),
                Ok(Ok(Some(m))) => m,
            };
            silent = 0;
            let header_rev = msg.header.as_ref().map_or(0, |h| h.revision);
            if msg.created {
                created = true;
                if msg.canceled {
                    break SegmentEnd::Canceled(msg.cancel_reason);
                }
                if next == 0 {
                    log.lock().expect("watch log").segments[index].start_rev = header_rev + 1;
                }
                continue;
            }
            if msg.canceled {
                if msg.compact_revision > 0 {
                    break SegmentEnd::Compacted(msg.compact_revision);
                }
                break SegmentEnd::Canceled(msg.cancel_reason);
            }
            if !created {
                // Nothing may come before the created response.
                world.fail(format!(
                    "watcher {w}: a response on {} before the watch was created: {msg:?}",
                    ep.name
                ));
                break SegmentEnd::Broken("response before created".into());
            }
            if msg.events.is_empty() {
                if msg.watch_id == -1 {
                    let mut l = log.lock().expect("watch log");
                    let seg = &mut l.segments[index];
                    seg.progress_rev = seg.progress_rev.max(header_rev);
                }
                continue;
            }
            let events: Vec<WatchEvent> = msg
                .events
                .iter()
                .map(|e| {
                    let kv = e.kv.clone().unwrap_or_default();
                    WatchEvent {
                        rev: kv.mod_revision,
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        put: e.r#type == 0,
                        value: String::from_utf8_lossy(&kv.value).into_owned(),
                        create_rev: kv.create_revision,
                        version: kv.version,
                    }
                })
                .collect();
            world.event(
                "watch_events",
                format!(
                    "\"watcher\":{w},\"node\":\"{}\",\"revs\":{:?}",
                    ep.name,
                    events.iter().map(|e| e.rev).collect::<Vec<_>>()
                ),
            );
            log.lock().expect("watch log").segments[index]
                .events
                .extend(events);
        };
        drop(tx);
        if !created {
            // The watch never started on that member: this stream delivered nothing.
            log.lock().expect("watch log").segments.pop();
            world.event(
                "watch_end",
                format!(
                    "\"watcher\":{w},\"node\":\"{}\",\"end\":{}",
                    ep.name,
                    serde_json::Value::String(format!("not created: {end:?}"))
                ),
            );
            madsim::time::sleep(Duration::from_millis(rng.range(0, 200))).await;
            continue;
        }
        let (covered_to, start) = {
            let mut l = log.lock().expect("watch log");
            let seg = &mut l.segments[index];
            seg.end = end.clone();
            (seg.covered_to(), seg.start_rev)
        };
        world.event(
            "watch_end",
            format!(
                "\"watcher\":{w},\"node\":\"{}\",\"start_rev\":{start},\"covered_to\":{covered_to},\"end\":{}",
                ep.name,
                serde_json::Value::String(format!("{end:?}"))
            ),
        );
        next = match &end {
            SegmentEnd::Open => return,
            SegmentEnd::Compacted(c) => (*c).max(covered_to + 1),
            _ => covered_to + 1,
        };
        if let SegmentEnd::Canceled(_) = end {
            // Not expected for a valid request: record it and stop this watcher.
            world.fail(format!(
                "watcher {w}: watch cancelled on {}: {end:?}",
                ep.name
            ));
            return;
        }
        madsim::time::sleep(Duration::from_millis(rng.range(0, 200))).await;
    }
}
