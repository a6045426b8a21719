//! The workload: clients calling the real gRPC services through madsim-tonic, and the history of
//! what they asked and what they were told.
//!
//! Every client runs on its own simulated host and, for each operation, picks a member at random,
//! connects, and calls it with a deadline. A write whose call fails or times out after it may have
//! reached the server has an *unknown* outcome: it may or may not take effect, at any later time.
//! The checkers must accept both. Values are unique (`c<client>-<n>`), so any value read names the
//! one write that produced it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::io::{Rng, SplitMix64};
use cairn::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::request_op::Request as TxnOp;
use cairn::proto::etcdserverpb::response_op::Response as TxnResp;
use cairn::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};

use crate::world::World;

pub use crate::history::{Op, OpKind, OpResult, Outcome, Seen};

#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<Op>>,
}

impl History {
    fn invoke(&self, world: &World, client: usize, node: &str, kind: OpKind) -> usize {
        let mut ops = self.ops.lock().expect("history lock");
        let id = ops.len();
        world.event(
            "invoke",
            format!(
                "\"op\":{id},\"client\":{client},\"node\":\"{node}\",\"call\":{}",
                serde_json::Value::String(format!("{kind:?}"))
            ),
        );
        ops.push(Op {
            id,
            client,
            node: node.to_string(),
            kind,
            invoke_ns: world.now().as_nanos() as u64,
            complete_ns: u64::MAX,
            outcome: Outcome::Pending,
        });
        id
    }

    fn complete(&self, world: &World, id: usize, outcome: Outcome) {
        world.event(
            "complete",
            format!(
                "\"op\":{id},\"result\":{}",
                serde_json::Value::String(format!("{outcome:?}"))
            ),
        );
        let mut ops = self.ops.lock().expect("history lock");
        let op = &mut ops[id];
        if !matches!(outcome, Outcome::Unknown(_)) {
            op.complete_ns = world.now().as_nanos() as u64;
        }
        op.outcome = outcome;
    }

    /// The history with every still-pending operation turned into an unknown outcome.
    pub fn finish(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().expect("history lock").clone();
        for op in &mut ops {
            if op.outcome == Outcome::Pending {
                op.outcome = Outcome::Unknown("never completed".into());
                op.complete_ns = u64::MAX;
            }
        }
        ops
    }
}

/// Where the clients send requests: (name, "http://ip:port").
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub keys: usize,
    pub timeout: Duration,
    pub think_max: Duration,
    /// Weights of put, linearizable get, serializable get, delete, cas.
    pub weights: [u64; 5],
}

fn seen(resp: &RangeResponse) -> Seen {
    resp.kvs.first().map(|kv| {
        (
            String::from_utf8_lossy(&kv.value).into_owned(),
            kv.mod_revision,
        )
    })
}

fn header_rev<T>(h: &Option<T>, f: impl Fn(&T) -> i64) -> i64 {
    h.as_ref().map(f).unwrap_or(0)
}

/// Performs one operation against `url` and returns its outcome.
pub async fn call(url: &str, kind: &OpKind, timeout: Duration) -> Outcome {
    let is_write = !matches!(kind, OpKind::Get { .. });
    let fut = async {
        let mut client = match KvClient::connect(url.to_string()).await {
            Ok(c) => c,
            // Nothing was sent: the operation certainly had no effect.
            Err(e) => return Outcome::Failed(format!("connect: {e}")),
        };
        let r = match kind.clone() {
            OpKind::Put { key, value } => client
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    ..Default::default()
                })
                .await
                .map(|r| OpResult::Put {
                    rev: header_rev(&r.into_inner().header, |h| h.revision),
                }),
            OpKind::Get { key, linearizable } => client
                .range(RangeRequest {
                    key: key.into_bytes(),
                    serializable: !linearizable,
                    ..Default::default()
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    OpResult::Get {
                        rev: header_rev(&r.header, |h| h.revision),
                        kv: seen(&r),
                    }
                }),
            OpKind::Delete { key } => client
                .delete_range(DeleteRangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    OpResult::Delete {
                        rev: header_rev(&r.header, |h| h.revision),
                        deleted: r.deleted,
                    }
                }),
            OpKind::Cas { key, expect, value } => {
                let compare = match expect {
                    Some(v) => Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::Value(v.into_bytes())),
                        ..Default::default()
                    },
                    None => Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Version as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::Version(0)),
                        ..Default::default()
                    },
                };
                let txn = TxnRequest {
                    compare: vec![compare],
                    success: vec![RequestOp {
                        request: Some(TxnOp::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: value.into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(TxnOp::RequestRange(RangeRequest {
                            key: key.into_bytes(),
                            ..Default::default()
                        })),
                    }],
                };
                client.txn(txn).await.map(|r| {
                    let r = r.into_inner();
                    let kv = r.responses.first().and_then(|op| match &op.response {
                        Some(TxnResp::ResponseRange(rr)) => seen(rr),
                        _ => None,
                    });
                    OpResult::Cas {
                        rev: header_rev(&r.header, |h| h.revision),
                        succeeded: r.succeeded,
                        kv,
                    }
                })
            }
        };
        match r {
            Ok(res) => Outcome::Ok(res),
            Err(status) if is_write => {
                Outcome::Unknown(format!("{:?}: {}", status.code(), status.message()))
            }
            Err(status) => Outcome::Failed(format!("{:?}: {}", status.code(), status.message())),
        }
    };
    match madsim::time::timeout(timeout, fut).await {
        Ok(o) => o,
        Err(_) if is_write => Outcome::Unknown("client timeout".into()),
        Err(_) => Outcome::Failed("client timeout".into()),
    }
}

/// Runs one client until `stop` is set.
pub async fn client(
    world: Arc<World>,
    history: Arc<History>,
    endpoints: Vec<Endpoint>,
    cfg: WorkloadConfig,
    client: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SplitMix64::new(seed);
    let mut n = 0u64;
    // The last value this client saw per key: what its compare-and-swaps expect.
    let mut last: std::collections::BTreeMap<String, Option<String>> =
        std::collections::BTreeMap::new();
    let total: u64 = cfg.weights.iter().sum();
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{}", rng.range(0, cfg.keys as u64));
        n += 1;
        let value = format!("c{client}-{n}");
        let mut pick = rng.range(0, total.max(1));
        let mut which = 0;
        for (i, w) in cfg.weights.iter().enumerate() {
            if pick < *w {
                which = i;
                break;
            }
            pick -= w;
        }
        let kind = match which {
            0 => OpKind::Put { key, value },
            1 => OpKind::Get {
                key,
                linearizable: true,
            },
            2 => OpKind::Get {
                key,
                linearizable: false,
            },
            3 => OpKind::Delete { key },
            _ => OpKind::Cas {
                expect: last.get(&key).cloned().flatten(),
                key,
                value,
            },
        };
        let ep = &endpoints[rng.range(0, endpoints.len() as u64) as usize];
        let id = history.invoke(&world, client, &ep.name, kind.clone());
        let outcome = call(&ep.url, &kind, cfg.timeout).await;
        match &outcome {
            Outcome::Ok(OpResult::Get { kv, .. }) | Outcome::Ok(OpResult::Cas { kv, .. }) => {
                last.insert(kind.key().to_string(), kv.as_ref().map(|(v, _)| v.clone()));
            }
            Outcome::Ok(OpResult::Put { .. }) => {
                if let OpKind::Put { key, value } = &kind {
                    last.insert(key.clone(), Some(value.clone()));
                }
            }
            _ => {}
        }
        history.complete(&world, id, outcome);
        let think = rng.range(0, cfg.think_max.as_millis() as u64 + 1);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}

/// A final linearizable read of `key`, retried across members until one answers or the deadline
/// passes. Recorded in the history like any other read.
pub async fn final_read(
    world: &World,
    history: &History,
    endpoints: &[Endpoint],
    key: &str,
    deadline: Duration,
) -> bool {
    let start = world.now();
    let mut i = 0;
    while world.now() - start < deadline {
        let ep = &endpoints[i % endpoints.len()];
        i += 1;
        let kind = OpKind::Get {
            key: key.to_string(),
            linearizable: true,
        };
        let id = history.invoke(world, usize::MAX, &ep.name, kind.clone());
        let outcome = call(&ep.url, &kind, Duration::from_secs(2)).await;
        let ok = matches!(outcome, Outcome::Ok(_));
        history.complete(world, id, outcome);
        if ok {
            return true;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
