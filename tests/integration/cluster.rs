//! Node membership through heartbeats (DESIGN §16, issue 18's first slice) against the
//! in-process S3 server and the memory store: conditional writes, etags read with the bytes,
//! liveness judged on each node's own (here: manual) monotonic clock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::io::Write as _;
use std::sync::Arc;

use patina::cluster::{Leases, Membership, Node, claim, heartbeat_key, lease_key};
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

/// One round at `t`: every node in `up` beats, then settles its leases; returns who holds what.
async fn round(
    store: &Store,
    nodes: &mut [(Membership, Leases)],
    up: &[bool],
    dbs: &[String],
    t: u64,
) -> BTreeMap<String, (String, u64)> {
    for (i, (m, _)) in nodes.iter_mut().enumerate() {
        if up[i] {
            m.beat(s(t), wall(), false).await.unwrap();
        }
    }
    let mut holders = BTreeMap::new();
    for (i, (m, l)) in nodes.iter_mut().enumerate() {
        if up[i] {
            let table = l
                .settle(
                    store,
                    m,
                    dbs,
                    &Default::default(),
                    false,
                    None,
                    s(t),
                    wall(),
                )
                .await
                .unwrap();
            for (db, held) in table.held {
                let previous = holders.insert(db.clone(), (m.node().to_string(), held.generation));
                assert!(previous.is_none(), "{db} held twice at {t} s: {previous:?}");
            }
        }
    }
    holders
}

#[tokio::test]
async fn leases_spread_move_to_the_living_and_fence_a_stalled_holder() {
    let server = S3Server::start().await;
    let store = server.store("patina/");
    let dbs: Vec<String> = (0..6).map(|i| format!("db{i}")).collect();
    let mut nodes: Vec<(Membership, Leases)> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (Membership::new(store.clone(), n, T), Leases::default()))
        .collect();
    // Two rounds: the first lets everyone see everyone; by the second, each holds its share.
    round(&store, &mut nodes, &[true; 3], &dbs, 0).await;
    let holders = round(&store, &mut nodes, &[true; 3], &dbs, 5).await;
    assert_eq!(holders.len(), 6, "{holders:?}");
    for node in ["a", "b", "c"] {
        assert_eq!(
            holders.values().filter(|(n, _)| n == node).count(),
            2,
            "{holders:?}"
        );
    }
    let c_generation: BTreeMap<String, u64> = holders
        .iter()
        .filter(|(_, (n, _))| n == "c")
        .map(|(db, (_, g))| (db.clone(), *g))
        .collect();
    let of_c: Vec<String> = c_generation.keys().cloned().collect();

    // c stalls (SIGSTOP) holding two leases; its heartbeat last changed at 0 s, which a and
    // b first saw at 5 s. Until they have seen it unchanged for longer than the ttl (35 s on
    // their clocks), its databases stay with it: nobody else takes them.
    for t in [10, 20, 30, 35] {
        let holders = round(&store, &mut nodes, &[true, true, false], &dbs, t).await;
        assert!(of_c.iter().all(|db| !holders.contains_key(db)), "at {t} s");
    }
    // Then a and b take them over with the next generation.
    let holders = round(&store, &mut nodes, &[true, true, false], &dbs, 40).await;
    assert_eq!(holders.len(), 6, "{holders:?}");
    for db in &of_c {
        let (node, generation) = &holders[db];
        assert_ne!(node, "c");
        assert_eq!(*generation, c_generation[db] + 1, "{db}");
    }

    // c wakes at 60 s: before any write it may not act under the leases it lost, and a claim
    // a took for a fire stops c committing that fire twice.
    let (c_members, c_leases) = &nodes[2];
    for db in &of_c {
        assert_eq!(
            c_leases
                .confirm(&store, c_members, &lease_key(db), s(60))
                .await
                .unwrap(),
            None,
            "{db}"
        );
    }
    let db = &of_c[0];
    let (holder, generation) = holders[db].clone();
    assert!(
        claim(&store, db, "20261130T030000Z", &holder, generation)
            .await
            .unwrap()
    );
    assert!(!claim(&store, db, "20261130T030000Z", "c", 1).await.unwrap());

    // Once c beats again it is live, and the databases rebalance: each holder above its
    // share releases, and c takes back two (a newer generation), never two holders at once.
    let mut last = BTreeMap::new();
    for t in [60, 65, 70, 75] {
        last = round(&store, &mut nodes, &[true; 3], &dbs, t).await;
    }
    assert_eq!(last.len(), 6, "{last:?}");
    for node in ["a", "b", "c"] {
        assert_eq!(
            last.values().filter(|(n, _)| n == node).count(),
            2,
            "{last:?}"
        );
    }
    let (c_members, c_leases) = &nodes[2];
    let back: Vec<&String> = last
        .iter()
        .filter(|(_, (n, _))| n == "c")
        .map(|(db, _)| db)
        .collect();
    for db in back {
        let generation = c_leases
            .confirm(&store, c_members, &lease_key(db), s(75))
            .await
            .unwrap();
        assert!(generation.is_some_and(|g| g >= 2), "{db}: {generation:?}");
    }
}

/// `[storage]` on `server` signed with a node's own key (the journal names the signer).
fn storage_as(server: &S3Server, key: &str) -> patina::policy::Storage {
    let mut storage = server.storage("patina/");
    storage.access_key_id = Some(patina::policy::Secret::new(key.to_string()));
    storage.secret_access_key = Some(patina::policy::Secret::new(format!("{key}-secret")));
    storage
}

#[test]
fn a_holder_paused_mid_upload_writes_nothing_after_its_lease_is_taken() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(S3Server::start_journaled(&[
        ("node-a", "node-a-secret"),
        ("node-b", "node-b-secret"),
    ]));
    let store_a = Store::open(&storage_as(&server, "node-a")).unwrap();
    let store_b = Store::open(&storage_as(&server, "node-b")).unwrap();
    let ttl = Duration::from_secs(3);
    let dbs = vec!["db".to_string()];
    let none = std::collections::BTreeSet::new();
    let (a, b) = rt.block_on(async {
        let a = Node::new(store_a.clone(), "a", ttl);
        let b = Node::new(store_b.clone(), "b", ttl);
        // a alone: it takes the database.
        a.renew(false).await;
        a.settle(&dbs, &none, false, None).await.unwrap();
        assert!(a.holds("db"));
        (a, b)
    });
    let ticket = Arc::new(
        rt.block_on(a.claim("db", "20261130T030000Z", "job-a"))
            .unwrap(),
    );
    assert_eq!(ticket.generation(), 1);

    // a starts uploading and sends its first part.
    let key = "daily/2026-11-30/db/20261130T030001Z.sql.zst";
    let _enter = rt.enter();
    let (mut sink, upload) = store_a.start_upload_guarded(key, Some(ticket.guard()));
    let part = vec![7u8; patina::store::PART_SIZE];
    sink.write_all(&part).unwrap();

    // Then it stalls: no heartbeat, no settle. b beats and settles until it has seen a's
    // heartbeat unchanged for longer than the ttl and takes the lease over.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    rt.block_on(async {
        loop {
            b.renew(false).await;
            b.settle(&dbs, &none, false, None).await.unwrap();
            if b.holds("db") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "b never took the lease"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let taken_at = server.journal().len();

    // a wakes up and goes on: its next part is refused before it is sent, the upload is
    // abandoned (nothing visible at the key), and it cannot commit.
    let rest = sink.write_all(&part).and_then(|()| sink.finish());
    let uploaded = rt.block_on(upload).unwrap();
    assert!(rest.is_err() || uploaded.is_err(), "the upload went on");
    let err = uploaded.unwrap_err().to_string();
    assert!(err.contains("lost the lease"), "{err}");
    let commit =
        rt.block_on(ticket.commit("daily/2026-11-30/db/20261130T030001Z.manifest.json", b"{}"));
    assert!(commit.unwrap_err().contains("lost the lease"));
    assert!(rt.block_on(store_a.head(key)).unwrap().is_none());
    let after: Vec<_> = server.journal()[taken_at..]
        .iter()
        .filter(|e| e.signer == "node-a" && e.method != "DELETE")
        .cloned()
        .collect();
    assert!(
        after.is_empty(),
        "a wrote after losing its lease: {after:?}"
    );

    // b claims the same fire: a's claim, from an older generation, is taken over.
    let b_ticket = rt
        .block_on(b.claim("db", "20261130T030000Z", "job-b"))
        .unwrap();
    assert_eq!(b_ticket.generation(), 2);
    rt.block_on(b_ticket.commit(
        "daily/2026-11-30/db/20261130T030005Z.manifest.json",
        b"{\"m\":1}",
    ))
    .unwrap();
    // Once committed, nobody claims that fire again — a neither, whatever it believes.
    let again = rt.block_on(b.claim("db", "20261130T030000Z", "job-b2"));
    assert!(
        matches!(again, Err(patina::cluster::Refused::Done { .. })),
        "{again:?}"
    );
    drop(_enter);
}

/// Claims are kept as long as the dumps they fenced, and a day more (DESIGN §16): the
/// maintenance holder removes older ones on its full listings, at most 1,000 a pass, and never
/// on a pass that listed only the newest keys.
#[tokio::test]
async fn claims_past_the_daily_retention_and_a_day_are_cleaned_a_thousand_a_pass() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db"),
        dir.path().join("app.db"),
    )
    .unwrap();
    let text = "[daemon]\nlisten = \"127.0.0.1:0\"\n\n\
                [storage]\nurl = \"s3://patina\"\n\n\
                [cluster]\nlease_ttl = \"30s\"\nnode = \"a\"\n\n\
                [retention]\ndaily = \"7d\"\nweekly = \"off\"\n\n[priorities.normal]\nschedule = \"0 3 * * *\"\n\n\
                [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"normal\"\nschedule = \"0 3 * * *\"\n";
    let mut policy = patina::config::from_str(text, "patina.toml", dir.path(), &|_| None).unwrap();
    policy.storage = server.storage("patina/");
    let store = Store::open(&policy.storage).unwrap();

    // 1,005 claims of fires nine days ago (past 7 d + 1 d), and 3 of yesterday, written into
    // the served folder with those times.
    let now = Utc::now();
    let claims = server.bucket_dir().join("patina/claims");
    let seed = |db: &str, n: usize, age: chrono::Duration| {
        let folder = claims.join(db);
        std::fs::create_dir_all(&folder).unwrap();
        let at = std::time::SystemTime::from(now - age);
        for i in 0..n {
            let path = folder.join(format!("2026{i:04}T030000Z.json"));
            std::fs::write(&path, br#"{"state":"committed"}"#).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
    };
    seed("old", 1005, chrono::Duration::days(9));
    seed("recent", 3, chrono::Duration::days(1));

    let catalog = Arc::new(std::sync::Mutex::new(
        patina::catalog::Catalog::open(&policy.daemon.state_dir).unwrap(),
    ));
    let clock = patina::reconcile::ManualClock::new(now);
    let node = Node::new(store.clone(), "a", Duration::from_secs(30));
    node.renew(false).await;
    let reconciler = patina::reconcile::Reconciler::new(
        Arc::new(policy),
        store.clone(),
        catalog,
        clock.clock(),
        Arc::new(patina::backup::Quiet),
    )
    .with_cluster(Arc::clone(&node));
    let claims_of = |db: &'static str| {
        let store = store.clone();
        async move { store.list(&format!("claims/{db}/")).await.unwrap().len() }
    };

    // The first pass lists everything, takes the maintenance lease and cleans 1,000.
    let r = reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    assert!(r.full_listing);
    assert!(node.maintains().is_some());
    assert_eq!(r.debris_removed, 1000, "{:?}", r.errors);
    assert_eq!(claims_of("old").await, 5);
    // The backup it started claimed its fire: that claim is new, and stays.
    assert_eq!(claims_of("app").await, 1);

    // A pass between full listings cleans nothing.
    clock.advance(chrono::Duration::minutes(1));
    node.renew(false).await;
    let r = reconciler.run_once().await.unwrap();
    assert!(!r.full_listing);
    assert_eq!(r.debris_removed, 0);
    assert_eq!(claims_of("old").await, 5);

    // The next full listing cleans the rest; yesterday's claims and the new one stay.
    clock.advance(chrono::Duration::minutes(61));
    node.renew(false).await;
    let r = reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    assert!(r.full_listing);
    assert_eq!(r.debris_removed, 5, "{:?}", r.errors);
    assert_eq!(claims_of("old").await, 0);
    assert_eq!(claims_of("recent").await, 3);
    assert!(claims_of("app").await >= 1);
}
