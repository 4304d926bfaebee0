//! No input exits by panic or signal: property tests over the case parser
//! (in process: random values at random places of real case files) and the
//! command line (the real binary, with `--dry-run` so that nothing runs).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cobre_shm_sddp::hydrothermal::{case::Case, HydroThermal};
use proptest::prelude::*;
use serde_json::Value;

/// Values that break parsers.
fn nasty() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        Just(serde_json::json!(1e-308)),
        Just(serde_json::json!(4294967296u64)),
        Just(serde_json::json!(100000000u64)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("x")),
        Just(serde_json::json!([])),
        Just(serde_json::json!([[]])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(true)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
    ]
}

/// Replace (or delete, when `value` is `None`) the `pick`-th node of `v`.
fn mutate(v: &mut Value, pick: &mut usize, value: &Option<Value>) -> bool {
    if *pick == 0 {
        match value {
            Some(n) => *v = n.clone(),
            None => *v = Value::Null,
        }
        return true;
    }
    *pick -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| mutate(x, pick, value)),
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                if *pick == 0 && value.is_none() {
                    o.remove(&k);
                    return true;
                }
                if let Some(x) = o.get_mut(&k) {
                    if mutate(x, pick, value) {
                        return true;
                    }
                }
            }
            false
        }
        _ => false,
    }
}

fn bases() -> Vec<Value> {
    let generated = cobre_shm_sddp::hydrothermal::generate::generate(
        &cobre_shm_sddp::hydrothermal::generate::GenerateSpec {
            hydros: 3,
            stages: 4,
            openings: 2,
            thermals: 2,
            seed: 1,
        },
    );
    vec![
        serde_json::from_str(cobre_shm_sddp::hydrothermal::case::TUTORIAL_CASE).expect("tutorial"),
        serde_json::to_value(generated).expect("generated"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn the_case_parser_never_panics(
        which in 0usize..2,
        edits in proptest::collection::vec((0usize..400, proptest::option::of(nasty())), 1..4),
    ) {
        let mut v = bases()[which].clone();
        for (pick, value) in &edits {
            let mut p = *pick;
            mutate(&mut v, &mut p, value);
        }
        let text = v.to_string();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(case) = Case::parse(&text, "fuzz", "fuzz") {
                // A case that parses can be sized and laid out.
                let (opts, seed) = cobre_shm_sddp::hydrothermal::options(&case, 1);
                let _ = cobre_shm_sddp::sizes(&HydroThermal::new(&case, seed), &opts);
                let _ = cobre_shm_sddp::hydrothermal::lp::Shape::of(&case);
            }
        }));
        prop_assert!(outcome.is_ok(), "panicked on {text}");
    }
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-p".to_string()),
        Just("--threads".to_string()),
        Just("--timeout".to_string()),
        Just("--bind".to_string()),
        Just("--mempolicy".to_string()),
        Just("-q".to_string()),
        Just("-v".to_string()),
        Just("train".to_string()),
        Just("generate".to_string()),
        Just("topology".to_string()),
        Just("--iterations".to_string()),
        Just("--forward-passes".to_string()),
        Just("--warm-group".to_string()),
        Just("--time-limit".to_string()),
        Just("--seed".to_string()),
        Just("--cut-selection".to_string()),
        Just("--checkpoint-every".to_string()),
        Just("--hydros".to_string()),
        Just("--stages".to_string()),
        Just("--openings".to_string()),
        Just("--".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775808".to_string()),
        Just("1e300".to_string()),
        Just("NaN".to_string()),
        Just("level1".to_string()),
        Just("node:1".to_string()),
        Just(String::new()),
        "[a-z0-9:._/-]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn the_command_line_never_panics(args in proptest::collection::vec(token(), 0..7)) {
        let t = Instant::now();
        let mut child = Command::new(common::launcher_bin())
            .args(&args)
            .arg("--dry-run")
            .current_dir(std::env::temp_dir())
            .env("COBRE_SHM_TIMEOUT_SECS", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                prop_assert!(false, "{args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let code = status.code();
        prop_assert!(code.is_some(), "{args:?} died of a signal: {status}");
        prop_assert!(!matches!(code, Some(101 | 134)), "{args:?} panicked or aborted: {status}");
    }
}
