//! `cobre-shm bench` as a user runs it (small sizes, so it takes seconds):
//! the report, the plots and `results.json` are written, and the numbers in
//! the report and the plots are the measured ones. Also: no output of the
//! launcher carries an escape byte when it is not written to a terminal.

mod common;

use std::process::Command;

use common::launcher_bin;

fn workdir(tag: &str) -> std::path::PathBuf {
    common::work_dir(&format!("bench-test-{tag}"))
}

#[test]
fn quick_bench_writes_a_report_that_holds_the_measured_numbers() {
    let dir = workdir("report");
    let out = dir.join("report");
    let o = Command::new(launcher_bin())
        .args([
            "bench",
            "--quick",
            "--rank-counts",
            "2",
            "--sizes",
            "8,65536",
            "--only",
            "machine,collectives,sddp,memory",
            "--repeat",
            "2",
            "--fresh-buffers",
            "--output",
        ])
        .arg(&out)
        .output()
        .expect("bench");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains('\x1b') && !String::from_utf8_lossy(&o.stdout).contains('\x1b'));
    assert!(
        stderr.contains("bench: ["),
        "progress lines on a non-terminal: {stderr}"
    );
    let read =
        |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let report = read("report.md");
    let results: serde_json::Value = serde_json::from_str(&read("results.json")).expect("json");
    // Every shm point of results.json appears in the report's table and in
    // the plot of its operation.
    let shm = results["collectives"]
        .as_array()
        .expect("collectives")
        .iter()
        .find(|c| c["backend"] == "shm")
        .expect("shm sweep");
    assert!(shm["error"].is_null(), "{shm}");
    assert_eq!(results["fresh_buffers"], true);
    assert!(
        report.contains("Buffers: fresh"),
        "buffer pattern not stated"
    );
    assert!(
        stderr.contains("(round 2 of 2)"),
        "two interleaved rounds: {stderr}"
    );
    let points = shm["points"].as_array().expect("points");
    assert_eq!(points.len(), 1 + 3 * 2, "barrier + 3 operations × 2 sizes");
    // Each run reports its barrier shape: `auto` is flat at 2 ranks, and
    // the forced-tree column meets at the tree.
    assert_eq!(shm["barrier"], serde_json::json!(["flat", "flat"]));
    assert!(report.contains("— barrier: flat ×2"), "{report}");
    assert!(report.contains("— barrier: tree ×2"), "{report}");
    for p in points {
        let (op, us) = (p["op"].as_str().expect("op"), p["us"].as_f64().expect("us"));
        assert!(us > 0.0 && us.is_finite(), "{p}");
        assert!(
            report.contains(&format!("{us:.2}")),
            "{op} {us:.2} not in the report"
        );
        if op != "barrier" {
            // One panel per operation, each with the shm series in its legend.
            let texts = svg_texts(&read("latency.svg"));
            assert!(texts.iter().any(|t| t == op), "no {op} panel: {texts:?}");
            assert!(texts.iter().any(|t| t == "shm · 2 ranks"), "{texts:?}");
        }
    }
    // The SDDP rows: 1×1, 1×2, 2×1 on this machine (every split of its CPUs),
    // the same lower bound everywhere, and the memory runs.
    let scaling = results["sddp_scaling"].as_array().expect("scaling");
    assert!(!scaling.is_empty());
    let lb = scaling[0]["lower_bound"].as_f64().expect("lower bound");
    for run in scaling {
        assert!(run["error"].is_null(), "{run}");
        assert_eq!(run["lower_bound"].as_f64(), Some(lb), "{run}");
        let per = run["secs_per_iteration"].as_f64().expect("time");
        assert!(
            report.contains(&format!("{per:.3}")),
            "{per:.3} not in the report"
        );
    }
    assert!(!report.contains("lower bounds differ"));
    let memory = results["memory"].as_array().expect("memory");
    assert_eq!(memory.len(), 2);
    let (shared, replicated) = (
        memory[0]["node_pss_mb"].as_f64().expect("pss"),
        memory[1]["node_pss_mb"].as_f64().expect("pss"),
    );
    assert!(
        report.contains(&format!("{shared:.1} MB"))
            && report.contains(&format!("{replicated:.1} MB"))
    );
    assert!(svg_texts(&read("memory.svg")).contains(&"node PSS at the end".to_string()));
    assert!(
        replicated > shared,
        "--replicate {replicated} MB vs shared {shared} MB"
    );
    // The ceiling: memcpy measured at every message size, in the table
    // beside the shm GB/s and in the bandwidth plot.
    let memcpy = results["machine"]["memcpy_gbps"]
        .as_array()
        .expect("memcpy");
    for p in points.iter().filter(|p| p["op"] != "barrier") {
        let bytes = p["bytes"].as_u64().expect("bytes");
        let g = memcpy
            .iter()
            .find(|m| m["bytes"].as_u64() == Some(bytes))
            .and_then(|m| m["gbps"].as_f64())
            .unwrap_or_else(|| panic!("no memcpy at {bytes} B: {memcpy:?}"));
        assert!(g > 0.0 && report.contains(&format!(" {g:.1} |")), "{g}");
    }
    assert!(report.contains("| shm GB/s | memcpy GB/s |"));
    assert!(read("bandwidth.svg").contains("memcpy of the same size"));
    for f in [
        "bandwidth.svg",
        "sddp_speedup.svg",
        "latency.svg",
        "ratio_mpi_over_shm.svg",
    ] {
        assert!(read(f).starts_with("<svg"), "{f}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The text of every `<text>` element of an SVG document, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

#[test]
fn no_escape_bytes_when_not_a_terminal() {
    let dir = workdir("esc");
    // Success with progress and info lines, and a failure, both into pipes.
    let runs: [&[&str]; 3] = [
        &["-p", "2", "train", "--iterations", "2", "--output"],
        &["-v", "-p", "2", "train", "--iterations", "2", "--output"],
        &["-p", "2", "train", "/nonexistent.json", "--output"],
    ];
    for args in runs {
        let o = Command::new(launcher_bin())
            .args(args)
            .arg(dir.join("out"))
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .output()
            .expect("run");
        for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                !bytes.contains(&0x1b),
                "{args:?}: ESC in {name}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    // -q: nothing at all on success.
    let o = Command::new(launcher_bin())
        .args(["-q", "-p", "2", "train", "--iterations", "2", "--output"])
        .arg(dir.join("quiet"))
        .output()
        .expect("run");
    assert!(o.status.success());
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "-q printed: {o:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
