//! Running Patina in production: the systemd unit, version, completions, manual page, logs.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn patina(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patina"))
        .args(args)
        .env_remove("PATINA_CONFIG")
        .env_remove("PATINA_LOG_FORMAT")
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn systemd_analyze() -> &'static str {
    crate::support::require("systemd-analyze", "apt-get install -y systemd")
}

/// The shipped unit, with ExecStart pointing at this build (verify checks the binary exists).
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("examples/systemd/patina.service"))
        .unwrap()
        .replace("/usr/local/bin/patina", env!("CARGO_BIN_EXE_patina"));
    let path = dir.join("patina.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_well_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=patina",
        "EnvironmentFile=-/etc/patina/patina.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    let verify = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new(systemd_analyze())
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{out}"));
    let score: f64 = line
        .split("level for patina.service:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    // systemd rates 0–2 "OK" (anything above is MEDIUM, EXPOSED or UNSAFE).
    assert!(score <= 2.0, "{line}");
}

#[test]
fn version_names_the_commit() {
    let o = patina(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8(o.stdout).unwrap();
    assert!(
        v.starts_with(&format!("patina {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

#[test]
fn completions_and_manual_page() {
    for shell in ["bash", "zsh", "fish"] {
        let o = patina(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(
            script.contains("restore") && script.contains("catalog"),
            "{shell}"
        );
    }
    let bad = patina(&["completions", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
    let man = patina(&["man"]);
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(
        page.contains(".TH patina 1") && page.contains("restore"),
        "{page}"
    );
}

#[test]
fn json_logs_carry_one_event_per_backup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(ROOT).join("examples/data/demo-app.db"),
        dir.path().join("demo.db"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("patina.toml"),
        "[storage]\nurl = \"file://backups\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[database]]\nname = \"demo\"\nkind = \"sqlite\"\npath = \"demo.db\"\npriority = \"critical\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_patina"))
        .args(["backup", "--log-format", "json"])
        .current_dir(dir.path())
        .env_remove("PATINA_CONFIG")
        .env("PATINA_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8(o.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let committed = events
        .iter()
        .find(|e| e["message"] == "backup committed")
        .expect("a backup committed event");
    assert_eq!(committed["database"], "demo");
    assert!(committed["size"].as_u64().unwrap() > 0);
    assert!(committed["seconds"].as_f64().is_some());
    assert_eq!(committed["level"], "INFO");
}

#[test]
fn the_daemon_speaks_sd_notify() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(
        Path::new(ROOT).join("examples/data/demo-app.db"),
        p.join("demo.db"),
    )
    .unwrap();
    std::fs::write(
        p.join("patina.toml"),
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"1s\"\n[storage]\nurl = \"file://backups\"\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[database]]\nname = \"demo\"\nkind = \"sqlite\"\npath = \"demo.db\"\npriority = \"critical\"\n",
    )
    .unwrap();
    let socket_path = p.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_patina"))
        .args(["run", "--shutdown-grace", "5s"])
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("PATINA_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 1024];
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{seen}");
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    };
    wait_for("READY=1");
    wait_for("WATCHDOG=1");
    wait_for("STATUS=1 database");
    wait_for("last backup");
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-HUP");
    wait_for("RELOADING=1");
    signal("-TERM");
    wait_for("STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The metric names Patina exposes, with a histogram's series suffixes.
fn exposed_metrics() -> std::collections::BTreeSet<String> {
    patina::metrics::NAMES
        .iter()
        .flat_map(|n| ["", "_bucket", "_sum", "_count"].map(|suffix| format!("patina_{n}{suffix}")))
        .collect()
}

fn referenced_metrics(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("patina_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn prometheus_rules_pass_promtool_and_use_real_metric_names() {
    crate::support::require(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    );
    let rules = Path::new(ROOT).join("examples/prometheus/alerts.yml");
    let o = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The rules' own unit tests: the drill rules fire when the last drill failed and after 8
    // days without a passed one, and not otherwise.
    let o = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(Path::new(ROOT).join("examples/prometheus"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("promtool")
        .args(["check", "config"])
        .arg(Path::new(ROOT).join("examples/prometheus/scrape.yml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let exposed = exposed_metrics();
    assert!(
        exposed.contains("patina_backup_last_success_timestamp_seconds"),
        "{exposed:?}"
    );
    let rules = std::fs::read_to_string(rules).unwrap();
    let dashboard =
        std::fs::read_to_string(Path::new(ROOT).join("examples/grafana/patina.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    for (file, text) in [("alerts.yml", &rules), ("patina.json", &dashboard)] {
        for name in referenced_metrics(text) {
            assert!(
                exposed.contains(&name),
                "{file} uses {name}, which Patina does not expose"
            );
        }
    }
}
