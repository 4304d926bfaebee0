//! Damaged files are refused, never trusted: a checkpoint with one bit
//! flipped anywhere is refused before any rank starts, naming the file; the
//! intact one resumes bit-identically; a run killed while it writes
//! checkpoints, or stopped by a full file system, leaves a checkpoint that
//! resumes.
//!
//! `COBRE_SHM_SWEEP_FULL=1` flips a bit of every byte instead of 2,400
//! evenly spread bytes. The full-file-system test needs root (a private tmpfs) and prints a
//! NOTICE and returns when it cannot run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{launcher_bin, send_signal};
use nix::sys::signal::Signal;

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("int-{tag}"))
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

/// `cobre-shm -q -p 1 [--dry-run] train CASE --forward-passes 4 --seed 5
/// --output OUT EXTRA…`.
fn train(case: &Path, out: &Path, dry_run: bool, extra: &[&str]) -> Output {
    let mut c = Command::new(launcher_bin());
    c.args(["-q", "-p", "1"]);
    if dry_run {
        c.arg("--dry-run");
    }
    c.arg("train")
        .arg(case)
        .args(["--forward-passes", "4", "--seed", "5", "--output"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run cobre-shm")
}

fn resume_args(from: &Path, iterations: usize) -> Vec<String> {
    vec![
        "--iterations".into(),
        iterations.to_string(),
        "--resume".into(),
        from.to_string_lossy().into_owned(),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What a study's results are, clock columns left out.
fn results(dir: &Path) -> (String, String) {
    (
        common::csv_without_clock(dir),
        std::fs::read_to_string(dir.join("policy.json")).expect("policy.json"),
    )
}

/// Byte positions to damage: every byte when there are at most `most`,
/// otherwise `most` positions spread evenly from the first byte to the last.
fn positions(len: usize, most: usize) -> Vec<usize> {
    if len <= most {
        return (0..len).collect();
    }
    (0..most).map(|k| k * (len - 1) / (most - 1)).collect()
}

#[test]
fn a_checkpoint_with_any_bit_flipped_is_refused_naming_the_file() {
    let dir = workdir("sweep");
    let case = dir.join("c.json");
    common::generate_case(&case, [3, 6, 3, 2, 5]);
    let base = dir.join("base");
    let o = train(&case, &base, false, &["--iterations", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let intact = std::fs::read(base.join("checkpoint.bin")).expect("checkpoint.bin");
    // Every byte with COBRE_SHM_SWEEP_FULL=1; by default 2,400 positions
    // spread evenly (every fourth byte of this checkpoint).
    let most = if std::env::var_os("COBRE_SHM_SWEEP_FULL").is_some() {
        usize::MAX
    } else {
        2400
    };
    let spots = positions(intact.len(), most);
    assert!(
        spots.len() >= 1000 || spots.len() == intact.len(),
        "{} positions over {} bytes",
        spots.len(),
        intact.len()
    );
    // Two workers, each with its own damaged copy.
    let workers = 2;
    let outcomes: Vec<(usize, bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (dir, case, intact, spots) = (&dir, &case, &intact, &spots);
                s.spawn(move || {
                    let rx = dir.join(format!("rx{w}"));
                    std::fs::create_dir_all(&rx).expect("copy dir");
                    let file = rx.join("checkpoint.bin");
                    let args = resume_args(&rx, 8);
                    let mut seen = Vec::new();
                    for (k, &at) in spots.iter().enumerate().skip(w).step_by(workers) {
                        let mut bytes = intact.clone();
                        bytes[at] ^= 1 << (k % 8);
                        std::fs::write(&file, &bytes).expect("write damaged copy");
                        // Every fortieth flip resumes for real; the rest stop
                        // after the checks that run before any rank starts.
                        let o = train(case, &dir.join(format!("ox{w}")), k % 40 != 0, &refs(&args));
                        let msg = text(&o);
                        let refused = o.status.code() == Some(2);
                        seen.push((at, refused, msg));
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sweep worker"))
            .collect()
    });
    let accepted: Vec<usize> = outcomes
        .iter()
        .filter(|(_, refused, _)| !refused)
        .map(|(at, _, _)| *at)
        .collect();
    let unnamed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, refused, msg)| *refused && !msg.contains("checkpoint.bin"))
        .map(|(_, _, msg)| msg.as_str())
        .collect();
    println!(
        "{} flips over {} bytes: {} refused naming the file, {} accepted",
        outcomes.len(),
        intact.len(),
        outcomes.len() - accepted.len() - unnamed.len(),
        accepted.len()
    );
    assert!(
        accepted.is_empty(),
        "damaged checkpoints accepted (byte offsets): {accepted:?}"
    );
    assert!(
        unnamed.is_empty(),
        "refusals that do not name the file: {unnamed:?}"
    );
    let sample = &outcomes[outcomes.len() / 2].2;
    assert!(
        sample.contains("damaged") || sample.contains("not a complete"),
        "{sample}"
    );
    // The intact checkpoint resumes, and the result is the uninterrupted run's.
    let o = train(
        &case,
        &dir.join("resumed"),
        false,
        &refs(&resume_args(&base, 8)),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = train(&case, &dir.join("full"), false, &["--iterations", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        results(&dir.join("full")) == results(&dir.join("resumed")),
        "the intact checkpoint did not resume to the uninterrupted run's results"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The checkpoint in `out` (or the intact one kept before it) resumes:
/// the run with `--dry-run` is accepted.
fn resumable(case: &Path, out: &Path, scratch: &Path) -> Result<(), String> {
    let o = train(case, scratch, true, &refs(&resume_args(out, 2000)));
    if o.status.success() {
        return Ok(());
    }
    let msg = text(&o);
    // A damaged newest file that names an intact previous one is also a
    // resumable study: follow the advice it gives.
    if let Some(prev) = msg
        .split("--resume ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .filter(|p| p.ends_with(".bin"))
    {
        let o = train(
            case,
            scratch,
            true,
            &refs(&resume_args(Path::new(prev), 2000)),
        );
        if o.status.success() {
            return Ok(());
        }
    }
    Err(msg)
}

#[test]
fn a_run_killed_while_writing_checkpoints_leaves_one_that_resumes() {
    let dir = workdir("kill");
    let case = dir.join("c.json");
    common::generate_case(&case, [4, 8, 3, 2, 6]);
    let out = dir.join("study");
    let o = train(
        &case,
        &out,
        false,
        &["--iterations", "2", "--checkpoint-every", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Each run resumes the study into its own directory with a checkpoint
    // every iteration, and is killed (the launcher and its ranks) after a
    // different delay: at different points of writing.
    let mut killed = 0;
    for (i, ms) in [5u64, 20, 35, 50, 80, 110, 150, 200, 260, 330]
        .iter()
        .enumerate()
    {
        let args = resume_args(&out, 1000);
        let mut job = Command::new(launcher_bin())
            .args(["-q", "-p", "2", "train"])
            .arg(&case)
            .args([
                "--forward-passes",
                "4",
                "--seed",
                "5",
                "--checkpoint-every",
                "1",
            ])
            .args(&args)
            .arg("--output")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start");
        std::thread::sleep(Duration::from_millis(*ms));
        // The whole tree: the launcher's ranks are in process groups of their own.
        let pids = cobre_shm::launch::descendants(job.id());
        for p in &pids {
            let _ = send_signal(*p, Signal::SIGKILL);
        }
        let status = job.wait().expect("wait");
        killed += usize::from(!status.success());
        resumable(&case, &out, &dir.join(format!("dry{i}")))
            .unwrap_or_else(|m| panic!("after a SIGKILL at {ms} ms the study cannot resume: {m}"));
    }
    println!("{killed} of 10 runs killed before they finished; every one left a resumable study");
    assert!(
        killed > 0,
        "no run was killed: the delays are too long for this machine"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_file_system_during_a_checkpoint_keeps_the_previous_one() {
    if !nix::unistd::geteuid().is_root() {
        println!("NOTICE: not root: cannot mount a private tmpfs; skipped");
        return;
    }
    let dir = workdir("full");
    let case = dir.join("c.json");
    common::generate_case(&case, [4, 8, 3, 2, 6]);
    // In a private mount namespace: a 2 MiB tmpfs holds the study; after 2
    // iterations the rest of it is filled, and a resumed run must fail to
    // write its checkpoint and leave the previous one intact.
    let script = r#"exec 2>&1
mount -t tmpfs -o size=2m tmpfs "$D" || exit 97
run() { "$L" -q -p 1 train "$C" --forward-passes 4 --seed 5 --output "$D/study" "$@"; }
run --iterations 2 --checkpoint-every 1 || { echo "first run failed"; exit 1; }
cp "$D/study/checkpoint.bin" "$W/before.bin"
dd if=/dev/zero of="$D/fill" bs=4096 2>/dev/null
run --iterations 12 --checkpoint-every 1 --resume "$D/study"; echo "full-exit=$?"
cmp "$D/study/checkpoint.bin" "$W/before.bin" && echo "checkpoint-kept"
rm -f "$D/fill"
run --iterations 12 --resume "$D/study" && echo "resumed-exit=0"
umount "$D""#;
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("L", launcher_bin())
        .env("C", &case)
        .env("D", &mnt)
        .env("W", &dir)
        .output()
        .expect("unshare");
    let out = text(&o);
    if o.status.code() == Some(97) || out.contains("unshare failed") {
        println!("NOTICE: cannot mount a private tmpfs here ({out}); skipped");
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    assert!(!out.contains("first run failed"), "{out}");
    assert!(
        !out.contains("full-exit=0"),
        "the run with a full file system reported success: {out}"
    );
    assert!(
        out.contains("No space left") || out.contains("ENOSPC"),
        "the error does not say the disk is full: {out}"
    );
    assert!(out.contains("checkpoint-kept"), "{out}");
    assert!(out.contains("resumed-exit=0"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
