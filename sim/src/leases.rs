//! The lease workload: clients grant leases with short TTLs, attach fresh keys to them, and then
//! revoke them, keep them alive for a while, or let them expire. After an acknowledged revoke a
//! client reads the lease's keys linearizably (they must be gone) and sometimes tries one more put
//! attached to the lease (it must fail). Leased keys are `L<client>-<n>-<j>`, each written once,
//! outside the key space of the KV workload and its linearizability checker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::io::{Rng, SplitMix64};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::lease_client::LeaseClient;
use cairn::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};

use crate::history::{LeaseOp, LeaseOpKind, LeaseOutcome, LeaseResult};
use crate::workload::Endpoint;
use crate::world::World;

/// The prefix of every leased key.
pub const LEASED_PREFIX: &str = "L";
/// Keys attached to one lease at most.
const KEYS_PER_LEASE_MAX: u64 = 3;

#[derive(Default)]
pub struct LeaseHistory {
    pub ops: Mutex<Vec<LeaseOp>>,
}

impl LeaseHistory {
    fn invoke(&self, world: &World, client: usize, node: &str, kind: LeaseOpKind) -> usize {
        let mut ops = self.ops.lock().expect("lease history");
        let id = ops.len();
        world.event(
            "lease_invoke",
            format!(
                "\"op\":{id},\"client\":{client},\"node\":\"{node}\",\"call\":{}",
                serde_json::Value::String(format!("{kind:?}"))
            ),
        );
        ops.push(LeaseOp {
            id,
            client,
            node: node.to_string(),
            kind,
            invoke_ns: world.now().as_nanos() as u64,
            complete_ns: u64::MAX,
            outcome: LeaseOutcome::Unknown("never completed".into()),
        });
        id
    }

    fn complete(&self, world: &World, id: usize, outcome: LeaseOutcome) {
        world.event(
            "lease_complete",
            format!(
                "\"op\":{id},\"result\":{}",
                serde_json::Value::String(format!("{outcome:?}"))
            ),
        );
        let mut ops = self.ops.lock().expect("lease history");
        if matches!(outcome, LeaseOutcome::Ok(_)) {
            ops[id].complete_ns = world.now().as_nanos() as u64;
        }
        ops[id].outcome = outcome;
    }

    pub fn finish(&self) -> Vec<LeaseOp> {
        self.ops.lock().expect("lease history").clone()
    }
}

/// Performs one lease operation against `url`.
pub async fn call(url: &str, kind: &LeaseOpKind, timeout: Duration) -> LeaseOutcome {
    let is_write = !matches!(
        kind,
        LeaseOpKind::Get { .. } | LeaseOpKind::KeepAlive { .. }
    );
    let fut = async {
        let status = match kind.clone() {
            LeaseOpKind::Get { key } => {
                let mut c = match KvClient::connect(url.to_string()).await {
                    Ok(c) => c,
                    Err(e) => return LeaseOutcome::Failed(format!("connect: {e}")),
                };
                match c
                    .range(RangeRequest {
                        key: key.into_bytes(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => {
                        let value = r
                            .into_inner()
                            .kvs
                            .first()
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                        return LeaseOutcome::Ok(LeaseResult::Get { value });
                    }
                    Err(s) => s,
                }
            }
            LeaseOpKind::Put { lease, key, value } => {
                let mut c = match KvClient::connect(url.to_string()).await {
                    Ok(c) => c,
                    Err(e) => return LeaseOutcome::Failed(format!("connect: {e}")),
                };
                match c
                    .put(PutRequest {
                        key: key.into_bytes(),
                        value: value.into_bytes(),
                        lease,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => {
                        let rev = r.into_inner().header.map_or(0, |h| h.revision);
                        return LeaseOutcome::Ok(LeaseResult::Put { rev });
                    }
                    Err(s) => s,
                }
            }
            other => {
                let mut c = match LeaseClient::connect(url.to_string()).await {
                    Ok(c) => c,
                    Err(e) => return LeaseOutcome::Failed(format!("connect: {e}")),
                };
                let r = match other {
                    LeaseOpKind::Grant { ttl } => c
                        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                        .await
                        .map(|r| {
                            let r = r.into_inner();
                            LeaseResult::Granted {
                                lease: r.id,
                                ttl: r.ttl,
                            }
                        }),
                    LeaseOpKind::Revoke { lease } => c
                        .lease_revoke(LeaseRevokeRequest { id: lease })
                        .await
                        .map(|r| LeaseResult::Revoked {
                            rev: r.into_inner().header.map_or(0, |h| h.revision),
                        }),
                    LeaseOpKind::KeepAlive { lease } => {
                        let req = LeaseKeepAliveRequest { id: lease };
                        match c.lease_keep_alive(tokio_stream::iter(vec![req])).await {
                            Ok(r) => match r.into_inner().message().await {
                                Ok(Some(m)) => Ok(LeaseResult::KeptAlive { ttl: m.ttl }),
                                Ok(None) => {
                                    return LeaseOutcome::Failed("keep-alive stream ended".into())
                                }
                                Err(s) => Err(s),
                            },
                            Err(s) => Err(s),
                        }
                    }
                    LeaseOpKind::Get { .. } | LeaseOpKind::Put { .. } => unreachable!(),
                };
                match r {
                    Ok(res) => return LeaseOutcome::Ok(res),
                    Err(s) => s,
                }
            }
        };
        let msg = format!("{:?}: {}", status.code(), status.message());
        if is_write {
            LeaseOutcome::Unknown(msg)
        } else {
            LeaseOutcome::Failed(msg)
        }
    };
    match madsim::time::timeout(timeout, fut).await {
        Ok(o) => o,
        Err(_) if is_write => LeaseOutcome::Unknown("client timeout".into()),
        Err(_) => LeaseOutcome::Failed("client timeout".into()),
    }
}

/// Runs one lease client until `stop` is set.
pub async fn client(
    world: Arc<World>,
    history: Arc<LeaseHistory>,
    endpoints: Vec<Endpoint>,
    client: usize,
    seed: u64,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SplitMix64::new(seed);
    let mut n = 0u64;
    let pick =
        |rng: &mut SplitMix64| endpoints[rng.range(0, endpoints.len() as u64) as usize].clone();
    let run = |rng: &mut SplitMix64, kind: LeaseOpKind| {
        let ep = pick(rng);
        let history = history.clone();
        let world = world.clone();
        async move {
            let id = history.invoke(&world, client, &ep.name, kind.clone());
            let outcome = call(&ep.url, &kind, timeout).await;
            history.complete(&world, id, outcome.clone());
            outcome
        }
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ttl = rng.range(2, 6) as i64;
        let lease = match run(&mut rng, LeaseOpKind::Grant { ttl }).await {
            LeaseOutcome::Ok(LeaseResult::Granted { lease, .. }) => lease,
            _ => {
                madsim::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
                continue;
            }
        };
        let mut keys = Vec::new();
        for j in 0..rng.range(1, KEYS_PER_LEASE_MAX + 1) {
            let key = format!("{LEASED_PREFIX}{client}-{n}-{j}");
            let value = format!("l{client}-{n}-{j}");
            keys.push(key.clone());
            run(&mut rng, LeaseOpKind::Put { lease, key, value }).await;
        }
        match rng.range(0, 10) {
            // Revoke, then check that the keys are gone and the lease cannot take new keys.
            0..=3 => {
                madsim::time::sleep(Duration::from_millis(rng.range(0, 1000))).await;
                if let LeaseOutcome::Ok(_) = run(&mut rng, LeaseOpKind::Revoke { lease }).await {
                    for key in &keys {
                        run(&mut rng, LeaseOpKind::Get { key: key.clone() }).await;
                    }
                    if rng.range(0, 2) == 0 {
                        let key = format!("{LEASED_PREFIX}{client}-{n}-late");
                        let value = format!("l{client}-{n}-late");
                        run(&mut rng, LeaseOpKind::Put { lease, key, value }).await;
                    }
                    if rng.range(0, 2) == 0 {
                        run(&mut rng, LeaseOpKind::KeepAlive { lease }).await;
                    }
                }
            }
            // Keep alive for a while (only the leader answers), then let it expire.
            4..=6 => {
                let rounds = rng.range(1, 6);
                for _ in 0..rounds {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    madsim::time::sleep(Duration::from_millis(rng.range(200, 700))).await;
                    run(&mut rng, LeaseOpKind::KeepAlive { lease }).await;
                }
            }
            // Let it expire; read the keys meanwhile (either answer is fine).
            _ => {
                madsim::time::sleep(Duration::from_millis(rng.range(0, 500))).await;
                for key in &keys {
                    run(&mut rng, LeaseOpKind::Get { key: key.clone() }).await;
                }
            }
        }
        madsim::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
    }
}
