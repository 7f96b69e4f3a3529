//! Storage faults: a fault-injecting proxy between Patina and the real in-process S3 server.
//! Transient 503s and resets are retried; an outage fails backups cleanly (nothing reported
//! committed that is not); a failed or truncated listing deletes nothing; everything recovers
//! when the proxy heals.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use patina::backup::{self, JobRequest, Quiet};
use patina::catalog::Catalog;
use patina::manifest::Trigger;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::{ObjectStoreBackend, Store};

use crate::support::faulty::{Fault, FaultyProxy};
use crate::support::s3::S3Server;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct Rig {
    _dir: tempfile::TempDir,
    server: S3Server,
    proxy: FaultyProxy,
    store: Store,
    catalog: Arc<Mutex<Catalog>>,
    clock: ManualClock,
    reconciler: Reconciler,
    policy: Arc<patina::policy::Policy>,
}

/// Storage through the proxy, with fast retries and no pooled connections (so every request
/// meets the proxy's current fault).
async fn rig(retention: &str) -> Rig {
    let server = S3Server::start().await;
    let proxy = FaultyProxy::start(server.addr).await;
    let s3 = AmazonS3Builder::new()
        .with_endpoint(proxy.endpoint())
        .with_bucket_name(&server.bucket)
        .with_region("auto")
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(&server.secret_key)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
        })
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_pool_max_idle_per_host(0)
                .with_timeout(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let backend = ObjectStoreBackend::new(Arc::new(s3), format!("s3://{}/", server.bucket));
    let store = Store::with_backend(Arc::new(backend), "patina/").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(DEMO_DB, dir.path().join("app.db")).unwrap();
    let text = format!(
        "[storage]\nurl = \"memory://\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n{retention}\n\
         [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n"
    );
    let policy =
        Arc::new(patina::config::from_str(&text, "patina.toml", dir.path(), &|_| None).unwrap());
    let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
    let clock = ManualClock::new(t("2026-11-16T03:00:10Z"));
    let reconciler = Reconciler::new(
        Arc::clone(&policy),
        store.clone(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(Quiet),
    );
    Rig {
        _dir: dir,
        server,
        proxy,
        store,
        catalog,
        clock,
        reconciler,
        policy,
    }
}

/// Keys in the bucket, read from the server's folder (not through the proxy).
fn bucket_keys(server: &S3Server) -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if !key.contains(".s3s") && !key.starts_with('.') {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&server.bucket_dir(), &server.bucket_dir(), &mut out);
    out
}

#[tokio::test]
async fn transient_errors_are_retried_and_the_backup_commits() {
    let r = rig("").await;
    // The pass lists (1 request) and then backs up: the first attempts of those requests meet
    // 503s and resets, the retries get through.
    r.proxy.inject(&[
        Fault::Unavailable,
        Fault::Reset,
        Fault::Pass,
        Fault::Unavailable,
        Fault::Pass,
        Fault::Unavailable,
    ]);
    let report = r.reconciler.run_once().await.unwrap();
    r.reconciler.wait_idle().await;
    assert_eq!(report.backups_started, 1);
    let keys = bucket_keys(&r.server);
    assert!(
        keys.iter().any(|k| k.ends_with(".manifest.json")),
        "not committed: {keys:?}"
    );
    assert!(r.proxy.connections() >= 6);
    assert!(r.reconciler.plan().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn an_outage_fails_backups_cleanly_and_deletes_nothing_until_it_heals() {
    let r = rig("[retention]\ndaily = \"1d\"\nweekly = \"off\"\n").await;
    // Three nightly backups while all is well.
    for day in 0..3 {
        r.clock
            .set(t("2026-11-16T03:00:10Z") + chrono::Duration::days(day));
        r.reconciler.run_once().await.unwrap();
        r.reconciler.wait_idle().await;
    }
    let before = bucket_keys(&r.server);
    assert_eq!(
        before
            .iter()
            .filter(|k| k.ends_with(".manifest.json"))
            .count(),
        2,
        "{before:?}"
    );

    // A day later retention would delete the older dumps — but storage is down.
    r.clock.set(t("2026-11-20T03:00:10Z"));
    r.proxy.outage(Fault::Unavailable);
    let err = r.reconciler.run_once().await.unwrap_err();
    assert!(err.to_string().contains("nothing is deleted"), "{err}");
    assert_eq!(
        bucket_keys(&r.server),
        before,
        "nothing may change during the outage"
    );
    let snapshot = r.reconciler.snapshot();
    assert!(snapshot.last_pass.unwrap().error.is_some());

    // A manual backup during the outage fails cleanly: no manifest, the job says failed.
    let ctx = backup::Context {
        policy: Arc::clone(&r.policy),
        store: r.store.clone(),
        catalog: Arc::clone(&r.catalog),
        clock: r.clock.clock(),
        tickets: None,
    };
    let report = backup::run_job(
        &ctx,
        JobRequest {
            job_id: None,
            databases: vec!["app".into()],
            trigger: Trigger::Manual,
            initiated_by: Some("test".into()),
            reason: None,
        },
        Arc::new(Quiet),
    )
    .await
    .unwrap();
    assert_eq!(report.failed(), 1);
    let message = report.results[0].1.as_ref().unwrap_err().to_string();
    assert!(
        message.contains("s3://"),
        "the error names the object: {message}"
    );
    assert_eq!(bucket_keys(&r.server), before);
    let job = &r.catalog.lock().unwrap().recent_jobs(1).unwrap()[0];
    assert_eq!(job.status, "failed");

    // A listing cut off half way is no listing either.
    r.proxy.heal();
    r.proxy.outage(Fault::Truncate(300));
    assert!(r.reconciler.run_once().await.is_err());
    assert_eq!(bucket_keys(&r.server), before);

    // Healed: after the failed attempt's backoff the backup is taken, and retention catches up.
    r.proxy.heal();
    r.clock.advance(chrono::Duration::minutes(2));
    let report = r.reconciler.run_once().await.unwrap();
    r.reconciler.wait_idle().await;
    assert!(report.deleted >= 1, "{report:?}");
    let after = bucket_keys(&r.server);
    let manifests: Vec<&String> = after
        .iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .collect();
    assert!(
        manifests.iter().any(|k| k.contains("2026-11-20")),
        "{after:?}"
    );
    assert!(r.reconciler.snapshot().last_pass.unwrap().error.is_none());
}

#[tokio::test]
async fn a_storage_outage_alerts_once_and_resolves_when_it_heals() {
    use crate::support::receiver::Receiver;
    use patina::alert::{Alerts, DeliveryConfig};

    let rx = Receiver::start().await;
    let mut r = rig("").await;
    // A policy with a webhook sink listening to failures.
    let text = format!(
        "[storage]\nurl = \"memory://\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\non = [\"failure\"]\n\
         [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n",
        rx.url("/hook")
    );
    let policy =
        Arc::new(patina::config::from_str(&text, "patina.toml", r._dir.path(), &|_| None).unwrap());
    let alerts = Alerts::start(
        Arc::clone(&policy),
        Arc::new(patina::daemon::CatalogHistory(Arc::clone(&r.catalog))),
        r.clock.clock(),
        DeliveryConfig {
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            ..DeliveryConfig::default()
        },
    );
    r.reconciler = Reconciler::new(
        Arc::clone(&policy),
        r.store.clone(),
        Arc::clone(&r.catalog),
        r.clock.clock(),
        Arc::new(Quiet),
    )
    .with_alerts(alerts.clone());
    r.reconciler.run_once().await.unwrap();
    r.reconciler.wait_idle().await;

    r.proxy.outage(Fault::Unavailable);
    for _ in 0..20 {
        r.clock.advance(chrono::Duration::minutes(1));
        assert!(r.reconciler.run_once().await.is_err());
    }
    let got = rx.wait_for("/hook", 1, Duration::from_secs(10)).await;
    let alert = got[0].json();
    assert_eq!(alert["type"], "storage_unreachable", "{alert}");
    assert_eq!(alert["state"], "firing");
    assert!(
        alert["location"].as_str().unwrap().starts_with("s3://"),
        "{alert}"
    );

    r.proxy.heal();
    r.clock.advance(chrono::Duration::minutes(1));
    r.reconciler.run_once().await.unwrap();
    r.reconciler.wait_idle().await;
    let got = rx.wait_for("/hook", 2, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        2,
        "one alert when it started, one when it resolved — no storm"
    );
    assert_eq!(got[1].json()["state"], "resolved");
    alerts.shutdown(Duration::from_secs(2)).await;
}
