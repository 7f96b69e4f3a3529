//! Hostile input to the policy loader: random bytes, random mutations of a valid policy, deep
//! nesting and huge values must give a clean error (or a valid policy) — never a panic, a hang
//! or a secret in the message.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const SECRET: &str = "s3cr3t-never-print-me";

fn valid_policy() -> String {
    format!(
        "[daemon]\napi_token = \"{SECRET}\"\n[storage]\nurl = \"s3://bucket\"\nendpoint = \"http://127.0.0.1:9000\"\n\
         access_key_id = \"AKIA\"\nsecret_access_key = \"{SECRET}\"\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n[retention]\ndaily = \"7d\"\n\
         [cloudflare]\naccount_id = \"acc\"\napi_token = \"{SECRET}\"\n\
         [[database]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n\
         [[database]]\nname = \"b\"\nkind = \"d1\"\nid = \"45eae4c7-8ae7-4078-9218-8e1677a4360f\"\npriority = \"critical\"\n\
         [[alert]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://hooks.example/{SECRET}\"\non = [\"failure\"]\n"
    )
}

fn load(text: &str) {
    let result = patina::config::from_str(text, "patina.toml", Path::new("/srv"), &|v| {
        (v == "SET").then(|| SECRET.to_string())
    });
    if let Err(e) = result {
        let message = e.to_string();
        assert!(!e.problems.is_empty());
        assert!(!message.contains(SECRET), "a secret leaked into: {message}");
        for p in &e.problems {
            assert!(p.file == "patina.toml");
        }
    }
}

#[test]
fn the_valid_policy_is_valid() {
    let text = valid_policy();
    patina::config::from_str(&text, "patina.toml", Path::new("/srv"), &|_| None).unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
            load(&String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutations_of_a_valid_policy_never_panic_or_leak() {
    let base = valid_policy();
    let edits = proptest::collection::vec(
        (
            0usize..base.len(),
            0usize..8,
            prop_oneof![
                Just(String::new()),
                Just("\"".to_string()),
                Just("[".to_string()),
                Just("]]".to_string()),
                Just("=".to_string()),
                Just("\n".to_string()),
                Just("${SET}".to_string()),
                Just("${MISSING}".to_string()),
                Just("$${".to_string()),
                Just("9999999999999999999999".to_string()),
                Just("-1".to_string()),
                Just("\u{0}".to_string()),
                Just("é🦀".to_string()),
                ".{0,6}",
            ],
        ),
        1..6,
    );
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&edits, |edits| {
            let mut text = base.clone();
            for (at, remove, insert) in edits {
                let mut at = at.min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + remove).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, &insert);
            }
            load(&text);
            Ok(())
        })
        .unwrap();
}

#[test]
fn pathological_documents_are_refused_quickly() {
    let deep = format!("x = {}1{}", "[".repeat(5000), "]".repeat(5000));
    let wide = format!("[daemon]\nstate_dir = \"{}\"\n", "a".repeat(1 << 20));
    let many = "[[database]]\nname = \"a\"\n".repeat(20_000);
    for text in [deep, wide, many] {
        let started = std::time::Instant::now();
        load(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }
}
