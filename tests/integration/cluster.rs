//! Node membership through heartbeats (DESIGN §16, issue 18's first slice) against the
//! in-process S3 server and the memory store: conditional writes, etags read with the bytes,
//! liveness judged on each node's own (here: manual) monotonic clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use patina::cluster::{Membership, heartbeat_key};
use patina::lease::{LeaseBody, Mono, Timing};
use patina::store::Store;

use crate::support::s3::S3Server;

fn s(secs: u64) -> Mono {
    Mono(Duration::from_secs(secs))
}

fn wall() -> DateTime<Utc> {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

const T: Timing = Timing {
    ttl: Duration::from_secs(30),
    margin: Duration::from_secs(3),
};

async fn two_nodes_see_each_other_come_stall_and_go(store: Store) {
    let mut a = Membership::new(store.clone(), "a", T);
    let mut b = Membership::new(store.clone(), "b", T);
    a.beat(s(0), wall(), false).await.unwrap();
    b.beat(s(0), wall(), false).await.unwrap();
    assert_eq!(b.live(s(0)), ["a", "b"]);
    a.beat(s(10), wall(), false).await.unwrap();
    assert_eq!(a.live(s(10)), ["a", "b"]);
    let body: LeaseBody =
        serde_json::from_slice(&store.get(&heartbeat_key("a")).await.unwrap()).unwrap();
    assert_eq!((body.node.as_str(), body.generation), ("a", 1));

    // b stalls (SIGSTOP): a keeps beating and stops counting b once b's heartbeat has not
    // changed for longer than the ttl on a's clock (first seen at 10 s).
    for t in [20, 30, 40] {
        a.beat(s(t), wall(), false).await.unwrap();
        assert_eq!(a.live(s(t)), ["a", "b"], "at {t} s");
    }
    a.beat(s(41), wall(), false).await.unwrap();
    assert_eq!(a.live(s(41)), ["a"]);

    // b wakes at 45 s: before talking to storage it knows it is not valid; one beat renews
    // its own heartbeat (nobody took it) and it is valid and live again for a.
    assert!(!b.valid(s(45)));
    // Nor does it count anyone else: it has seen nothing move for longer than the ttl.
    assert!(b.live(s(45)).is_empty());
    b.beat(s(45), wall(), false).await.unwrap();
    assert!(b.valid(s(45)));
    a.beat(s(50), wall(), false).await.unwrap();
    assert_eq!(a.live(s(50)), ["a", "b"]);

    // a leaves (shutdown): its heartbeat is released and b drops it at once.
    a.beat(s(55), wall(), true).await.unwrap();
    assert!(!a.valid(s(55)));
    b.beat(s(56), wall(), false).await.unwrap();
    assert_eq!(b.live(s(56)), ["b"]);
    let body: LeaseBody =
        serde_json::from_slice(&store.get(&heartbeat_key("a")).await.unwrap()).unwrap();
    assert!(body.released);
    // And comes back: its own released heartbeat is taken again, with the next generation.
    a.beat(s(60), wall(), false).await.unwrap();
    let body: LeaseBody =
        serde_json::from_slice(&store.get(&heartbeat_key("a")).await.unwrap()).unwrap();
    assert_eq!((body.released, body.generation), (false, 2));
    b.beat(s(61), wall(), false).await.unwrap();
    assert_eq!(b.live(s(61)), ["a", "b"]);
}

#[tokio::test]
async fn heartbeats_on_the_in_process_s3_server() {
    let server = S3Server::start().await;
    two_nodes_see_each_other_come_stall_and_go(server.store("patina/")).await;
}

#[tokio::test]
async fn heartbeats_on_the_memory_store() {
    two_nodes_see_each_other_come_stall_and_go(Store::memory("")).await;
}

#[tokio::test]
async fn a_heartbeat_written_behind_a_nodes_back_takes_its_validity() {
    // Two processes with the same node name (a misconfiguration) or a restored bucket: the
    // etag this node holds is gone, so its renewal is refused and it is not valid.
    let store = Store::memory("");
    let mut a = Membership::new(store.clone(), "a", T);
    a.beat(s(0), wall(), false).await.unwrap();
    assert!(a.valid(s(1)));
    store
        .put(
            &heartbeat_key("a"),
            bytes::Bytes::from_static(
                br#"{"node":"a","generation":9,"expiresAt":"2026-11-30T12:00:30Z"}"#,
            ),
            patina::store::PutMode::Overwrite,
        )
        .await
        .unwrap();
    a.beat(s(2), wall(), false).await.unwrap();
    // It saw a heartbeat under its own name that it did not write: it takes it back with a
    // newer generation (fencing whatever wrote it), as a restarted node does.
    let body: LeaseBody =
        serde_json::from_slice(&store.get(&heartbeat_key("a")).await.unwrap()).unwrap();
    assert_eq!(body.generation, 10);
    assert!(a.valid(s(2)));
}
