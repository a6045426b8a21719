//! # Watch: etcd's event streams
//!
//! A client opens one bidirectional gRPC stream and multiplexes any number of *watchers* over it.
//! Each watcher covers a key or a key range (the `RangeRequest` conventions: an empty `range_end`
//! is the single key, `"\0"` every key from `key` on, anything else `[key, range_end)`) and
//! receives, in revision order and exactly once, every put and delete of those keys from its
//! start revision on. One task per stream ([`open`]) owns all of the stream's watchers: it reads
//! the client's requests, the store's history and the live feed of applied revisions, and writes
//! responses to a bounded queue that the gRPC layer drains.
//!
//! ## History first, then the live feed
//!
//! Events come from two places. The node publishes the events of every applied revision once, on
//! a bounded broadcast channel ([`Server::subscribe_events`]): the *live feed*. Older revisions
//! are in the store, and [`Store::events_between`](crate::mvcc::Store::events_between) replays
//! them, with `prev_kv`. A watcher whose start revision is at or below the current revision needs
//! history first and the feed after it, and the switch must neither lose nor repeat a revision.
//! Two facts make it exact:
//!
//! 1. The stream subscribes to the feed when it opens, before any watcher reads history.
//! 2. The node commits a revision to the store before it publishes it on the feed.
//!
//! So when a catch-up read ends at the store's current revision C, no revision above C can have
//! passed the stream's receiver yet: the watcher records `next_rev = C + 1` and from then on takes
//! from the feed exactly the revisions at or above `next_rev`. Revisions up to C that are still
//! queued in the receiver are skipped (history delivered them); everything above C is still ahead.
//!
//! Each watcher is therefore in one of etcd's two groups: *synced* (fed by the live feed) or
//! *unsynced* (catching up from history, in bounded steps interleaved with everything else the
//! stream does, so one watcher replaying a long history delays neither its siblings nor the
//! client's requests). A new watcher starting at 0 ("from now on") or above the current revision
//! is synced at once; one starting at or below it is unsynced until its history is read.
//!
//! ## Slow watchers
//!
//! The feed keeps [`EVENT_BUFFER_MAX`](super::EVENT_BUFFER_MAX) revisions. A client that reads
//! slowly fills its stream's response queue ([`WATCH_RESPONSES_MAX`]); the stream task then waits
//! on that queue and stops draining the feed, and once the feed overruns the receiver, the
//! receiver reports the lag and resumes at the oldest revision still buffered. The revisions in
//! between are gone from the feed but not from the store: the stream moves every synced watcher
//! back to unsynced, and each catches up from history from its own `next_rev`, exactly as a new
//! watcher would, then rejoins the feed. Nothing is lost and nothing repeats. Only if compaction
//! removed those revisions meanwhile is the watcher cancelled, as etcd cancels it (below).
//!
//! ## What etcd 3.4 sends
//!
//! The responses are etcd 3.4.23's, checked against it with etcdctl and the etcd-client crate:
//!
//! - **Create**: `created`, the watch id and a header at the current revision. The id is the
//!   client's if it chose one (non-zero) that is free on the stream, otherwise the next free id of
//!   the stream's counter, which starts at 0 and never goes back. A duplicate id or an empty range
//!   (`key >= range_end`) answers `created` and `canceled` with watch id -1 and etcd's reason.
//! - **Events**: a live revision is one response whose header carries that revision; catch-up
//!   responses carry many revisions and, as in etcd, the header holds the current revision of the
//!   read. The events of one revision are never split over responses, unless the watcher asked for
//!   `fragment` and the response reaches etcd's request size limit: then it is sent in fragments,
//!   all but the last flagged `fragment`. Filters drop puts or deletes; `prev_kv` is sent only if
//!   asked for. A response whose events were all filtered out is not sent.
//! - **Compacted**: a watcher whose next revision was compacted gets one response with
//!   `canceled`, `compact_revision` = the compaction floor, a header at revision 0 and no reason
//!   (clients derive "required revision has been compacted" from `compact_revision`). Its id stays
//!   taken until the client cancels it, as in etcd.
//! - **Cancel**: `canceled` with the id and a header at the current revision; an unknown id gets
//!   no answer at all.
//! - **Progress request**: a header and watch id -1, no events. Its revision promises that every
//!   event up to it was sent, so it waits until every watcher of the stream is synced and names
//!   the last revision the stream took from the feed (normally the current revision, as etcd 3.4.23
//!   answers; etcd 3.4.23 answers at once even while a watcher catches up, a bug later releases
//!   fixed in this same way).
//! - **Progress notify**: every [`PROGRESS_NOTIFY_INTERVAL`], each synced watcher that asked for
//!   it and was sent no events during the last interval gets an empty response with its id.
//!
//! ## Limits
//!
//! Every queue and batch is bounded: [`WATCH_RESPONSES_MAX`] responses wait for the client,
//! [`WATCHERS_PER_STREAM_MAX`] watchers share a stream, one catch-up step reads at most
//! [`CATCH_UP_EVENTS_MAX`] events from at most [`CATCH_UP_REVISIONS_MAX`] revisions, and a
//! catch-up response holds whole revisions up to the request size limit that etcd also uses for
//! fragments (`--max-request-bytes` plus gRPC overhead).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use prost::Message as _;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};

use super::Server;
use crate::mvcc::{KeySpan, MvccError};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;

/// Responses queued for the client of one stream (etcd's watch channel holds 128). When the queue
/// is full the stream waits, and if the live feed overruns it meanwhile, its watchers resynchronise
/// from history.
pub const WATCH_RESPONSES_MAX: usize = 128;
/// Watchers on one stream, counting cancelled-by-compaction ones the client has not cancelled yet.
pub const WATCHERS_PER_STREAM_MAX: usize = 65_536;
/// Events one catch-up step reads from history (the rest of the revision it stops in comes too).
pub const CATCH_UP_EVENTS_MAX: usize = 1_000;
/// Revisions one catch-up step scans, so that a watcher of a rarely written key over a long
/// history does not hold the stream's task in one long read.
pub const CATCH_UP_REVISIONS_MAX: i64 = 10_000;
/// Feed batches taken without waiting before a progress response (at most what the feed holds).
const DRAIN_BATCHES_MAX: usize = super::EVENT_BUFFER_MAX;
/// How often watchers that asked for `progress_notify` hear the current revision while idle
/// (etcd's `progressReportInterval`; etcd adds up to 10% jitter, cairn does not).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// etcd's `mvcc.ErrEmptyWatcherRange`.
pub const EMPTY_RANGE_REASON: &str = "mvcc: watcher range is empty";
/// etcd's `mvcc.ErrWatcherDuplicateID`.
pub const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// Refusal of a watcher beyond [`WATCHERS_PER_STREAM_MAX`] (etcd has no such limit).
pub const TOO_MANY_WATCHERS_REASON: &str = "cairn: too many watchers on one stream";

/// Opens a watch stream: subscribes to the live feed now, then spawns the task that serves
/// `requests` (the client's side of the stream) until the client goes away. The returned receiver
/// yields the responses; dropping it ends the stream. An error on `requests` ends the stream; its
/// end (the client closed its side) does not: as in etcd, the watchers keep running.
pub fn open<S, E>(server: &Server, requests: S) -> mpsc::Receiver<WatchResponse>
where
    S: Stream<Item = Result<WatchRequest, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel(WATCH_RESPONSES_MAX);
    // Subscribe before anything reads the store: see "History first, then the live feed".
    let live = server.subscribe_events();
    let live_rev = server.store().current_revision();
    let stream = WatchStream {
        server: server.clone(),
        response_bytes_max: server.config().max_request_bytes + super::GRPC_OVERHEAD_BYTES,
        watchers: BTreeMap::new(),
        next_id: 0,
        catch_up_cursor: 0,
        live,
        live_rev,
        progress_requested: false,
        progress_timer: None,
        out: tx,
    };
    tokio::spawn(stream.run(requests));
    rx
}

/// The client went away (the response receiver was dropped) or the node stopped.
#[derive(Debug)]
struct Closed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Fed by the live feed from `next_rev` on.
    Synced,
    /// Catching up from history from `next_rev` on.
    Unsynced,
    /// Its next revision was compacted: cancelled, but its id stays taken until the client
    /// cancels it (etcd keeps it in the stream until then).
    Compacted,
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// No events were sent since the last progress tick: the next tick sends a notification.
    progress_due: bool,
    /// The next revision this watcher must deliver; every matching event below it was sent.
    next_rev: i64,
    phase: Phase,
}

impl Watcher {
    fn span(&self) -> KeySpan<'_> {
        KeySpan::new(&self.key, &self.range_end)
    }

    /// Whether the filters let `e` through (the key is checked separately).
    fn passes(&self, e: &Event) -> bool {
        match e.r#type() {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        }
    }

    /// The event as this watcher sends it: without `prev_kv` unless it asked for it.
    fn shape(&self, mut e: Event) -> Event {
        if !self.prev_kv {
            e.prev_kv = None;
        }
        e
    }
}

struct WatchStream {
    server: Server,
    /// etcd's request size limit, which it also uses to cut fragments.
    response_bytes_max: usize,
    watchers: BTreeMap<i64, Watcher>,
    /// The stream's id counter for watchers that do not choose their id.
    next_id: i64,
    /// Where the round-robin over unsynced watchers resumes.
    catch_up_cursor: i64,
    live: broadcast::Receiver<Arc<Vec<Event>>>,
    /// The newest revision taken from the feed (at first, the current revision when the stream
    /// subscribed): every synced watcher has been sent every matching event up to it.
    live_rev: i64,
    /// The client asked for a progress response that is not sent yet.
    progress_requested: bool,
    /// Runs only while some watcher asked for progress notifications.
    progress_timer: Option<tokio::time::Interval>,
    out: mpsc::Sender<WatchResponse>,
}

impl WatchStream {
    async fn run<S, E>(mut self, mut requests: S)
    where
        S: Stream<Item = Result<WatchRequest, E>> + Unpin,
        E: Display,
    {
        let _ = self.serve(&mut requests).await;
        tracing::debug!(watchers = self.watchers.len(), "watch stream closed");
    }

    async fn serve<S, E>(&mut self, requests: &mut S) -> Result<(), Closed>
    where
        S: Stream<Item = Result<WatchRequest, E>> + Unpin,
        E: Display,
    {
        let mut requests_open = true;
        loop {
            // One catch-up step per turn at most, so that a long replay shares the task fairly
            // with requests and the live feed.
            self.catch_up_step().await?;
            if self.progress_requested {
                self.answer_progress_request().await?;
            }
            let catching_up = self.watchers.values().any(|w| w.phase == Phase::Unsynced);
            let timer = &mut self.progress_timer;
            let tick = async {
                match timer {
                    Some(timer) => {
                        timer.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.out.closed() => return Err(Closed),
                request = requests.next(), if requests_open => match request {
                    Some(Ok(request)) => self.on_request(request).await?,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch stream: client request failed");
                        return Err(Closed);
                    }
                    None => requests_open = false,
                },
                batch = self.live.recv() => match batch {
                    Ok(batch) => self.on_live(&batch).await?,
                    Err(RecvError::Lagged(skipped)) => self.on_lag(skipped),
                    Err(RecvError::Closed) => return Err(Closed),
                },
                _ = tick => self.on_progress_tick().await?,
                _ = std::future::ready(()), if catching_up => {}
            }
        }
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Closed> {
        self.out.send(response).await.map_err(|_| Closed)
    }

    /// A response of this stream with a header at `revision`.
    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.server.header(revision)),
            watch_id,
            ..WatchResponse::default()
        }
    }

    async fn on_request(&mut self, request: WatchRequest) -> Result<(), Closed> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                // etcd answers only the cancellation of a watcher the stream has.
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let current = self.server.store().current_revision();
                    let mut r = self.response(current, cancel.watch_id);
                    r.canceled = true;
                    self.send(r).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            // An empty request is ignored, as etcd ignores it.
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Closed> {
        let current = self.server.store().current_revision();
        // etcd's defaults: an empty key is "\0", the smallest key.
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key
        };
        let empty_range =
            matches!(KeySpan::new(&key, &create.range_end), KeySpan::Range(k, e) if k >= e);
        let refusal = if empty_range {
            Some(EMPTY_RANGE_REASON)
        } else if create.watch_id != 0 && self.watchers.contains_key(&create.watch_id) {
            Some(DUPLICATE_ID_REASON)
        } else if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            Some(TOO_MANY_WATCHERS_REASON)
        } else {
            None
        };
        if let Some(reason) = refusal {
            let mut r = self.response(current, -1);
            r.created = true;
            r.canceled = true;
            r.cancel_reason = reason.to_string();
            return self.send(r).await;
        }
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let next_rev = if create.start_revision == 0 {
            current + 1
        } else {
            create.start_revision
        };
        let filters: Vec<Option<FilterType>> = create
            .filters
            .iter()
            .map(|f| FilterType::try_from(*f).ok())
            .collect();
        let watcher = Watcher {
            key,
            range_end: create.range_end,
            no_put: filters.contains(&Some(FilterType::Noput)),
            no_delete: filters.contains(&Some(FilterType::Nodelete)),
            prev_kv: create.prev_kv,
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            progress_due: true,
            next_rev,
            // Nothing above `current` has passed the feed's receiver yet (the node publishes a
            // revision only after committing it), so a watcher starting above it can follow the
            // feed at once.
            phase: if next_rev > current {
                Phase::Synced
            } else {
                Phase::Unsynced
            },
        };
        if watcher.progress_notify && self.progress_timer.is_none() {
            // `interval` completes its first tick at once: reset it so that the first
            // notification comes one interval from now.
            let mut timer = tokio::time::interval(PROGRESS_NOTIFY_INTERVAL);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.reset();
            self.progress_timer = Some(timer);
        }
        let previous = self.watchers.insert(id, watcher);
        assert!(previous.is_none(), "watch id {id} was free");
        let mut r = self.response(current, id);
        r.created = true;
        self.send(r).await
    }

    /// One revision from the live feed: every synced watcher that has not seen it gets its
    /// share of the events.
    async fn on_live(&mut self, batch: &[Event]) -> Result<(), Closed> {
        let rev = batch
            .first()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        assert!(rev > 0, "the feed carries only non-empty revisions");
        assert!(
            batch
                .iter()
                .all(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rev)),
            "one feed batch is one revision"
        );
        self.live_rev = self.live_rev.max(rev);
        let mut outgoing: Vec<(i64, Vec<Event>)> = Vec::new();
        for (&id, w) in self.watchers.iter_mut() {
            if w.phase != Phase::Synced || rev < w.next_rev {
                continue;
            }
            if rev > w.next_rev {
                // The feed skipped revisions without reporting a lag: a member that installs a
                // snapshot from its leader jumps ahead without publishing what it skipped. The
                // store has them: replay history rather than lose events.
                tracing::warn!(
                    id,
                    expected = w.next_rev,
                    rev,
                    "gap in the event feed; resyncing"
                );
                w.phase = Phase::Unsynced;
                continue;
            }
            w.next_rev = rev + 1;
            let span = w.span();
            let events: Vec<Event> = batch
                .iter()
                .filter(|e| span.contains(&e.kv.as_ref().expect("checked above").key))
                .filter(|e| w.passes(e))
                .map(|e| w.shape(e.clone()))
                .collect();
            if !events.is_empty() {
                outgoing.push((id, events));
            }
        }
        for (id, events) in outgoing {
            self.send_events(id, rev, events).await?;
        }
        Ok(())
    }

    /// The feed overran this stream: every synced watcher may have missed revisions, so each
    /// resynchronises from history from its own next revision.
    fn on_lag(&mut self, skipped: u64) {
        let mut resynced = 0usize;
        for w in self.watchers.values_mut() {
            if w.phase == Phase::Synced {
                w.phase = Phase::Unsynced;
                resynced += 1;
            }
        }
        tracing::debug!(
            skipped,
            resynced,
            "watch stream lagged behind the event feed; resyncing from history"
        );
    }

    /// Takes whatever the feed holds right now, so that a progress response names the newest
    /// revision this stream can vouch for.
    async fn drain_live(&mut self) -> Result<(), Closed> {
        for _ in 0..DRAIN_BATCHES_MAX {
            match self.live.try_recv() {
                Ok(batch) => self.on_live(&batch).await?,
                Err(TryRecvError::Lagged(skipped)) => self.on_lag(skipped),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return Err(Closed),
            }
        }
        Ok(())
    }

    fn all_synced(&self) -> bool {
        self.watchers.values().all(|w| w.phase != Phase::Unsynced)
    }

    /// Answers the client's progress request once every watcher is synced (until then the
    /// catch-up steps run and this is tried again each turn).
    async fn answer_progress_request(&mut self) -> Result<(), Closed> {
        if !self.all_synced() {
            return Ok(());
        }
        self.drain_live().await?;
        if !self.all_synced() {
            return Ok(());
        }
        self.progress_requested = false;
        self.send(self.response(self.live_rev, -1)).await
    }

    async fn on_progress_tick(&mut self) -> Result<(), Closed> {
        self.drain_live().await?;
        let mut due: Vec<i64> = Vec::new();
        for (&id, w) in self.watchers.iter_mut() {
            if !w.progress_notify || w.phase == Phase::Compacted {
                continue;
            }
            if w.progress_due && w.phase == Phase::Synced {
                due.push(id);
            }
            w.progress_due = true;
        }
        for id in due {
            self.send(self.response(self.live_rev, id)).await?;
        }
        if !self.watchers.values().any(|w| w.progress_notify) {
            self.progress_timer = None;
        }
        Ok(())
    }

    /// The next unsynced watcher in round-robin order.
    fn next_unsynced(&self) -> Option<i64> {
        let unsynced = |(id, w): (&i64, &Watcher)| (w.phase == Phase::Unsynced).then_some(*id);
        self.watchers
            .range(self.catch_up_cursor..)
            .find_map(unsynced)
            .or_else(|| {
                self.watchers
                    .range(..self.catch_up_cursor)
                    .find_map(unsynced)
            })
    }

    /// Reads the next stretch of one unsynced watcher's history and sends it; the watcher joins
    /// the feed when the stretch reaches the current revision.
    async fn catch_up_step(&mut self) -> Result<(), Closed> {
        let Some(id) = self.next_unsynced() else {
            return Ok(());
        };
        self.catch_up_cursor = id.saturating_add(1);
        let store = self.server.store().clone();
        let current = store.current_revision();
        let w = self.watchers.get_mut(&id).expect("found above");
        let start = w.next_rev;
        if start > current {
            // Nothing above the current revision has been published yet (a watcher with a
            // future start revision that was moved here by a lag): the feed has all it needs.
            w.phase = Phase::Synced;
            return Ok(());
        }
        let end = current.min(start.max(1).saturating_add(CATCH_UP_REVISIONS_MAX - 1));
        let read = store.events_between(start, end, &w.key, &w.range_end, CATCH_UP_EVENTS_MAX);
        let events = match read {
            Ok(events) => events,
            Err(MvccError::Compacted) => {
                w.phase = Phase::Compacted;
                let floor = store.first_revision();
                tracing::debug!(id, start, floor, "watcher's next revision was compacted");
                let mut r = self.response(0, id);
                r.canceled = true;
                r.compact_revision = floor;
                return self.send(r).await;
            }
            Err(e) => {
                // A local storage failure: the watcher cannot go on, the stream can.
                tracing::error!(id, start, error = %e, "watch history read failed");
                self.watchers.remove(&id);
                let mut r = self.response(current, id);
                r.canceled = true;
                r.cancel_reason = e.to_string();
                return self.send(r).await;
            }
        };
        let last_rev = events
            .last()
            .map(|e| e.kv.as_ref().expect("events carry kv").mod_revision);
        if let Some(last) = last_rev {
            assert!(
                (start..=end).contains(&last),
                "history of {start}..={end} ended at {last}"
            );
        }
        // Cut short by the event limit: resume after the last revision read, else after `end`.
        let read_to = match last_rev {
            Some(last) if events.len() >= CATCH_UP_EVENTS_MAX => last,
            _ => end,
        };
        w.next_rev = read_to + 1;
        if read_to == current && crate::bugs::active(crate::bugs::Bug::WatchSkipRevision) {
            w.next_rev += 1;
        }
        if read_to == current {
            w.phase = Phase::Synced;
        }
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| w.passes(e))
            .map(|e| w.shape(e))
            .collect();
        for batch in group_revisions(events, self.response_bytes_max) {
            // As etcd does, a catch-up response carries the revision the read went up to.
            self.send_events(id, current, batch).await?;
        }
        Ok(())
    }

    /// Sends `events` to watcher `id` in one response (or in fragments, if it asked for them
    /// and the response is too large), and cancels its next progress notification.
    async fn send_events(
        &mut self,
        id: i64,
        revision: i64,
        events: Vec<Event>,
    ) -> Result<(), Closed> {
        debug_assert!(!events.is_empty());
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        w.progress_due = false;
        let fragment = w.fragment;
        let mut r = self.response(revision, id);
        r.events = events;
        if fragment {
            for part in fragments(r, self.response_bytes_max) {
                self.send(part).await?;
            }
            Ok(())
        } else {
            self.send(r).await
        }
    }
}

/// Bytes an event adds to an encoded `WatchResponse` (field 11, length-delimited).
fn event_bytes(e: &Event) -> usize {
    let len = e.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

fn event_rev(e: &Event) -> i64 {
    e.kv.as_ref().expect("events carry kv").mod_revision
}

/// Groups catch-up events into responses of whole revisions, starting a new response when the
/// next revision would take the current one to `bytes_max` or beyond. A single revision larger
/// than that still travels whole.
fn group_revisions(events: Vec<Event>, bytes_max: usize) -> Vec<Vec<Event>> {
    let mut groups: Vec<Vec<Event>> = Vec::new();
    let mut group: Vec<Event> = Vec::new();
    let mut group_bytes = 0usize;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        let rev = event_rev(&first);
        let mut revision = vec![first];
        while let Some(e) = events.next_if(|e| event_rev(e) == rev) {
            revision.push(e);
        }
        let bytes: usize = revision.iter().map(event_bytes).sum();
        if !group.is_empty() && group_bytes + bytes >= bytes_max {
            groups.push(std::mem::take(&mut group));
            group_bytes = 0;
        }
        group.extend(revision);
        group_bytes += bytes;
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// etcd's `sendFragments`: a response of at least two events whose encoding reaches
/// `bytes_max` is cut into fragments that each stay below it (or hold a single event), all
/// flagged `fragment` except the last.
fn fragments(response: WatchResponse, bytes_max: usize) -> Vec<WatchResponse> {
    if response.encoded_len() < bytes_max || response.events.len() < 2 {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base_bytes = template.encoded_len();
    let mut parts: Vec<WatchResponse> = Vec::new();
    let mut part = template.clone();
    let mut part_bytes = base_bytes;
    for e in events {
        let bytes = event_bytes(&e);
        if !part.events.is_empty() && part_bytes + bytes >= bytes_max {
            parts.push(std::mem::replace(&mut part, template.clone()));
            part_bytes = base_bytes;
        }
        part.events.push(e);
        part_bytes += bytes;
    }
    part.fragment = false;
    parts.push(part);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn event(key: &str, rev: i64, value_bytes: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: vec![b'v'; value_bytes],
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn revs(group: &[Event]) -> Vec<i64> {
        group.iter().map(event_rev).collect()
    }

    #[test]
    fn small_history_is_one_response() {
        let events = vec![event("a", 2, 1), event("b", 2, 1), event("a", 3, 1)];
        let groups = group_revisions(events, 1024);
        assert_eq!(groups.len(), 1);
        assert_eq!(revs(&groups[0]), [2, 2, 3]);
    }

    #[test]
    fn large_history_is_cut_between_revisions_only() {
        // Each event is a little over 100 bytes: two revisions of two events each exceed 300.
        let events = vec![
            event("a", 2, 100),
            event("b", 2, 100),
            event("a", 3, 100),
            event("b", 3, 100),
            event("c", 4, 100),
        ];
        let groups = group_revisions(events, 300);
        let shape: Vec<Vec<i64>> = groups.iter().map(|g| revs(g)).collect();
        assert_eq!(shape, [vec![2, 2], vec![3, 3], vec![4]]);
        // A revision larger than the limit still travels whole.
        let big = vec![event("a", 5, 100), event("b", 5, 100), event("c", 5, 100)];
        assert_eq!(group_revisions(big, 50).len(), 1);
    }

    #[test]
    fn fragments_follow_etcd() {
        let response = WatchResponse {
            watch_id: 7,
            events: (0..5).map(|i| event(&format!("k{i}"), 9, 100)).collect(),
            ..WatchResponse::default()
        };
        // Below the limit, or a single event: sent as is.
        assert_eq!(
            fragments(response.clone(), 1 << 20),
            std::slice::from_ref(&response)
        );
        let single = WatchResponse {
            events: vec![event("k", 9, 1000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(single.clone(), 10), [single]);
        // Above it: every fragment stays below the limit, all but the last are flagged.
        let parts = fragments(response.clone(), 300);
        assert!(parts.len() > 1, "{parts:?}");
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.watch_id, 7);
            assert!(p.encoded_len() < 300 || p.events.len() == 1);
        }
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(rejoined, response.events);
    }

    /// A single-member server on a temporary directory, for tests that need the whole path from
    /// a proposal to the feed.
    #[cfg(not(madsim))]
    mod live {
        use super::*;
        use crate::io::{FsDisk, LocalTransport, RuntimeClock, SplitMix64};
        use crate::proto::etcdserverpb::{
            CompactionRequest, PutRequest, WatchCancelRequest, WatchProgressRequest,
        };
        use crate::server::{InitialMember, ServerConfig, ServerIo};
        use tokio::sync::watch as status_watch;

        const WAIT: Duration = Duration::from_secs(10);

        struct Member {
            server: Server,
            _stop: status_watch::Sender<bool>,
            /// The node reads peer messages from this channel: it must stay open.
            _inbound: mpsc::Sender<::raft::eraftpb::Message>,
            _dir: tempfile::TempDir,
        }

        async fn start() -> Member {
            let dir = tempfile::TempDir::new().unwrap();
            let member = InitialMember {
                name: "default".into(),
                id: 0x8e9e_05c5_2164_694d,
                peer_urls: vec!["http://localhost:2380".into()],
            };
            let cfg = ServerConfig {
                name: "default".into(),
                auto_compaction: None,
                wal_dir: None,
                data_dir: dir.path().join("data"),
                member_id: member.id,
                cluster_id: 0xcdf8_1819_4e3a_8c32,
                initial_cluster: vec![member],
                client_urls: vec!["http://127.0.0.1:2379".into()],
                heartbeat_interval: Duration::from_millis(10),
                election_timeout: Duration::from_millis(50),
                snapshot_count: 100_000,
                snapshot_catch_up_entries: crate::raft::SNAPSHOT_CATCH_UP_ENTRIES,
                max_request_bytes: crate::config::MAX_REQUEST_BYTES_DEFAULT,
                max_txn_ops: 128,
                quota_backend_bytes: 1 << 30,
                strict_reconfig_check: true,
                join_existing: false,
            };
            let io = ServerIo {
                disk: Arc::new(FsDisk),
                clock: Arc::new(RuntimeClock::new()),
                transport: Arc::new(LocalTransport),
                rng: Box::new(SplitMix64::new(7)),
            };
            let (stop, stop_rx) = status_watch::channel(false);
            let (server, inbound, _node) = Server::start(cfg, io, stop_rx).unwrap();
            let mut status = server.watch_status();
            tokio::time::timeout(WAIT, status.wait_for(|s| s.is_leader))
                .await
                .expect("elected in time")
                .unwrap();
            Member {
                server,
                _stop: stop,
                _inbound: inbound,
                _dir: dir,
            }
        }

        async fn put(server: &Server, key: &str, value: &str) -> i64 {
            let r = server
                .put(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..PutRequest::default()
                })
                .await
                .unwrap();
            r.header.unwrap().revision
        }

        /// Overruns a stream whose client does not read: sequential puts first fill its
        /// response queue (the stream then waits on it), then a burst of concurrent puts,
        /// applied in large batches, overruns the feed behind it.
        async fn overrun(server: &Server) {
            for i in 0..WATCH_RESPONSES_MAX + 2 {
                put(server, &format!("k{i:05}"), "queued").await;
            }
            put_many(
                server,
                crate::server::EVENT_BUFFER_MAX + WATCH_RESPONSES_MAX,
            )
            .await;
        }

        /// Puts `count` keys concurrently (group commit makes this fast).
        async fn put_many(server: &Server, count: usize) {
            let tasks: Vec<_> = (0..count)
                .map(|i| {
                    let s = server.clone();
                    tokio::spawn(async move { put(&s, &format!("k{i:05}"), "v").await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }

        type Requests = mpsc::Sender<Result<WatchRequest, String>>;

        fn open_stream(server: &Server) -> (Requests, mpsc::Receiver<WatchResponse>) {
            let (tx, rx) = mpsc::channel::<Result<WatchRequest, String>>(16);
            let requests =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
                );
            (tx, open(server, Box::pin(requests)))
        }

        async fn request(tx: &Requests, union: RequestUnion) {
            tx.send(Ok(WatchRequest {
                request_union: Some(union),
            }))
            .await
            .unwrap();
        }

        async fn next(rx: &mut mpsc::Receiver<WatchResponse>) -> WatchResponse {
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("a response in time")
                .expect("stream open")
        }

        fn watch_prefix(prefix: &str, start_revision: i64) -> RequestUnion {
            let mut end = prefix.as_bytes().to_vec();
            *end.last_mut().unwrap() += 1;
            RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.into(),
                range_end: end,
                start_revision,
                ..WatchCreateRequest::default()
            })
        }

        /// Reads responses until the events of revisions up to `last` were seen; returns the
        /// revisions of all events in order.
        async fn collect_until(rx: &mut mpsc::Receiver<WatchResponse>, last: i64) -> Vec<i64> {
            let mut seen = Vec::new();
            while seen.last().copied().unwrap_or(0) < last {
                let r = next(rx).await;
                assert!(!r.canceled, "unexpected cancel: {r:?}");
                seen.extend(r.events.iter().map(event_rev));
            }
            seen
        }

        #[tokio::test]
        async fn history_then_live_without_gap_or_duplicate() {
            let m = start().await;
            let s = &m.server;
            for i in 0..5 {
                put(s, "k", &i.to_string()).await;
            }
            let (tx, mut rx) = open_stream(s);
            request(&tx, watch_prefix("k", 2)).await;
            let created = next(&mut rx).await;
            assert!(created.created && !created.canceled);
            assert_eq!(created.header.unwrap().revision, 6);
            put(s, "k", "live").await;
            assert_eq!(collect_until(&mut rx, 7).await, [2, 3, 4, 5, 6, 7]);
            // Progress: nothing is pending, so it names the current revision.
            request(&tx, RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
            let p = next(&mut rx).await;
            assert_eq!((p.watch_id, p.header.unwrap().revision), (-1, 7));
            // Cancel, then an unknown id: only the first is answered.
            request(
                &tx,
                RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 0 }),
            )
            .await;
            let c = next(&mut rx).await;
            assert!(c.canceled && c.watch_id == 0);
            request(
                &tx,
                RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 0 }),
            )
            .await;
            request(&tx, RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
            assert_eq!(next(&mut rx).await.watch_id, -1);
        }

        /// A client that does not read while the feed overruns its stream still gets every
        /// revision exactly once: the stream resynchronises its watchers from history.
        #[tokio::test]
        async fn lagging_stream_resyncs_from_history() {
            let m = start().await;
            let s = &m.server;
            let (tx, mut rx) = open_stream(s);
            request(&tx, watch_prefix("k", 0)).await;
            assert!(next(&mut rx).await.created);
            let first = s.store().current_revision() + 1;
            overrun(s).await;
            let last = s.store().current_revision();
            let seen = collect_until(&mut rx, last).await;
            let expected: Vec<i64> = (first..=last).collect();
            assert_eq!(seen, expected);
        }

        /// A lagging watcher whose missed revisions were compacted meanwhile is cancelled with
        /// the compaction floor, as etcd cancels it.
        #[tokio::test]
        async fn lagging_watcher_past_compaction_is_cancelled() {
            let m = start().await;
            let s = &m.server;
            let (tx, mut rx) = open_stream(s);
            request(&tx, watch_prefix("k", 0)).await;
            assert!(next(&mut rx).await.created);
            overrun(s).await;
            let floor = s.store().current_revision();
            s.compact(CompactionRequest {
                revision: floor,
                physical: false,
            })
            .await
            .unwrap();
            let mut last_seen = 0;
            loop {
                let r = next(&mut rx).await;
                if r.canceled {
                    assert_eq!(r.compact_revision, floor);
                    assert_eq!(r.header.unwrap().revision, 0);
                    assert!(r.cancel_reason.is_empty());
                    break;
                }
                for e in &r.events {
                    if last_seen > 0 {
                        assert_eq!(event_rev(e), last_seen + 1, "no gap, no repeat");
                    }
                    last_seen = event_rev(e);
                }
            }
            assert!(
                last_seen < floor,
                "some revisions were skipped before the cancel"
            );
            // The compacted watcher keeps its id until the client cancels it.
            request(&tx, watch_prefix("k", 0)).await;
            assert_eq!(next(&mut rx).await.watch_id, 1);
        }
    }
}
