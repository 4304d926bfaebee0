//! Nothing lost, nobody in: another local user cannot squat, plant or read
//! a job's segments; a full `/dev/shm` is an error, never a SIGBUS; absurd
//! numbers are refused before anything is allocated; outputs stay inside
//! `output/`, are published atomically and checked before training; a
//! stopped rank is named, a busy one is not killed; a sent SIGSEGV ends the
//! job as a crash; what a rank started dies with it; error lines stay whole;
//! a rank without its job's name is refused; studies checkpoint and resume
//! bit-identically, also after SIGTERM.
//!
//! Tests that need root (another user, a private tmpfs, a read-only mount)
//! print a NOTICE and return when they cannot run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cobre_comm::{Communicator, SharedMemoryProvider};
use common::{launcher_bin, send_signal};
use nix::sys::signal::Signal;

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("rel-{tag}"))
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `sh -c script` as the unprivileged user `nobody`, when possible.
fn as_nobody(script: &str) -> Option<Output> {
    if !is_root() {
        println!("NOTICE: not root: cannot act as another user; skipped");
        return None;
    }
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .map_err(|e| println!("NOTICE: setpriv unavailable ({e}); skipped"))
        .ok()
}

/// Run `script` (with `$L` the launcher) in a private mount namespace whose
/// `/dev/shm` is a fresh tmpfs of `size`, when possible.
fn in_small_shm(size: &str, script: &str) -> Option<Output> {
    if !is_root() {
        println!("NOTICE: not root: cannot mount a private tmpfs; skipped");
        return None;
    }
    let full =
        format!("exec 2>&1\nmount -t tmpfs -o size={size} tmpfs /dev/shm || exit 97\n{script}");
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &full])
        .env("L", launcher_bin())
        .env("T", std::env::current_exe().expect("test binary"))
        .output()
        .ok()?;
    if o.status.code() == Some(97) || !o.status.success() && text(&o).contains("unshare failed") {
        println!(
            "NOTICE: cannot mount a private tmpfs here ({}); skipped",
            text(&o)
        );
        return None;
    }
    Some(o)
}

/// Rank behaviours started through the launcher (`-- <this binary>`).
#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    let Ok(case) = std::env::var("COBRE_TEST_CASE") else {
        return;
    };
    let comm = match cobre_shm::create_communicator() {
        Ok(c) => c,
        Err(e) => {
            println!("NOCOMM {e}");
            std::process::exit(5);
        }
    };
    let r = comm.rank();
    match case.as_str() {
        "stop_me" => {
            // The test stops rank 1 (SIGSTOP from outside) while it sleeps.
            comm.barrier().expect("barrier");
            println!("READY rank={r} pid={}", std::process::id());
            if r == 1 {
                std::thread::sleep(Duration::from_secs(5));
            }
            let e = comm.barrier().expect_err("rank 1 is stopped");
            println!("FAILED {e}");
            std::process::exit(1);
        }
        "report_cpus" => {
            // What this rank counts as the job's CPUs, after a barrier.
            comm.barrier().expect("barrier");
            let cobre_shm::Comm::Shm(shm) = &comm else {
                panic!("not the shm backend")
            };
            println!("CPUS {}", shm.job_cpus());
        }
        "busy_rank0" => {
            comm.barrier().expect("barrier");
            if r == 0 {
                std::thread::sleep(Duration::from_secs(3));
            }
            comm.barrier().expect("a busy peer is waited for");
        }
        "fill_shm" => {
            // 1 MiB regions until /dev/shm is full: an error, never a SIGBUS.
            let mut held = Vec::new();
            for _ in 0..64 {
                match comm.create_shared_region::<u8>(1 << 20) {
                    Ok(region) => held.push(region),
                    Err(e) => {
                        println!("FULL after {} regions: {e}", held.len());
                        std::process::exit(0);
                    }
                }
            }
            println!("NEVER FULL");
        }
        "staging" => {
            // An allreduce over several chunks at whatever staging size the
            // launcher chose, checked element by element.
            let n = 3 << 17; // 3 MiB of f64
            let send: Vec<f64> = (0..n).map(|i| (i % 1000 + r) as f64).collect();
            let mut recv = vec![0.0; n];
            comm.allreduce(&send, &mut recv, cobre_comm::ReduceOp::Sum)
                .expect("allreduce");
            let size = comm.size();
            let ranks_sum = (size * (size - 1) / 2) as f64;
            let wrong = (0..n)
                .filter(|&i| recv[i] != (size * (i % 1000)) as f64 + ranks_sum)
                .count();
            if let (0, cobre_shm::Comm::Shm(shm)) = (r, &comm) {
                println!("STAGING {} WRONG {wrong}", shm.staging_bytes());
            }
            assert_eq!(wrong, 0);
        }
        "region_2m" => {
            let region = comm.create_shared_region::<u8>(2 << 20);
            comm.barrier().expect("barrier");
            match region {
                Ok(_) => println!("REGION ok"),
                Err(e) => {
                    println!("REGION failed: {e}");
                    std::process::exit(4);
                }
            }
        }
        other => panic!("unknown case {other}"),
    }
}

fn launch(args: &[&str], case: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(launcher_bin());
    cmd.args(args)
        .arg("--")
        .arg(exe)
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", case)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cobre-shm")
}

// ---- Security

#[test]
fn job_names_are_unpredictable() {
    let names: Vec<String> = (0..2)
        .map(|_| {
            let o = Command::new(launcher_bin())
                .args(["-p", "1", "--", "sh", "-c", "echo $COBRE_SHM_NAME"])
                .output()
                .expect("run");
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect();
    for n in &names {
        let random = n.rsplit('.').next().unwrap_or("");
        assert!(
            n.starts_with("/cobre-shm.")
                && random.len() == 32
                && random.chars().all(|c| c.is_ascii_hexdigit()),
            "{n}"
        );
    }
    assert_ne!(names[0], names[1]);
}

#[test]
fn another_user_cannot_plant_or_read_segments() {
    let name = common::unique_name("planted");
    let plant = format!("umask 0; printf x > /dev/shm{name}");
    let Some(o) = as_nobody(&plant) else { return };
    assert!(o.status.success(), "{}", text(&o));
    // A follower started by hand refuses the planted segment at once.
    let t = Instant::now();
    let o = Command::new(std::env::current_exe().expect("exe"))
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", "stop_me")
        .env("COBRE_SHM_NAME", &name)
        .env("COBRE_SHM_RANK", "1")
        .env("COBRE_SHM_SIZE", "2")
        .output()
        .expect("run rank");
    let out = text(&o);
    assert!(out.contains("belongs to user 65534"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Rank 0 cannot create it either, and says whose it is.
    let o = Command::new(std::env::current_exe().expect("exe"))
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", "stop_me")
        .env("COBRE_SHM_NAME", &name)
        .env("COBRE_SHM_RANK", "0")
        .env("COBRE_SHM_SIZE", "2")
        .output()
        .expect("run rank");
    let out = text(&o);
    assert!(
        out.contains("already exists") && out.contains("65534"),
        "{out}"
    );
    // Left untouched.
    assert_eq!(
        std::fs::read(format!("/dev/shm{name}")).expect("still there"),
        b"x"
    );
    let _ = std::fs::remove_file(format!("/dev/shm{name}"));
    // The job's own segments cannot be read by that user.
    let mut job = Command::new(launcher_bin())
        .args(["-p", "1", "--", "sh", "-c", "echo $COBRE_SHM_NAME; sleep 2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start");
    let mut first = String::new();
    let mut out = job.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while std::io::Read::read(&mut out, &mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        first.push(byte[0] as char);
    }
    let o = as_nobody(&format!("cat /dev/shm{first}")).expect("as nobody");
    assert!(
        !o.status.success(),
        "another user read {first}: {}",
        text(&o)
    );
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    let _ = job.wait();
}

// ---- Resources

/// Whether 16 ranks outnumber this machine's CPUs (else says it skips).
fn sixteen_ranks_oversubscribe() -> bool {
    let cpus = cobre_shm::machine::online_cpus();
    if cpus >= 16 {
        println!("NOTICE: {cpus} CPUs: 16 ranks are not oversubscribed here; skipped");
    }
    cpus < 16
}

#[test]
fn oversubscribed_jobs_stage_in_larger_buffers_that_fit_dev_shm() {
    if !sixteen_ranks_oversubscribe() {
        return;
    }
    let script = r#"
COBRE_TEST_CASE=staging "$L" -p 16 -- "$T" rank_entry --exact --ignored --nocapture -q; echo "exit=$?"
COBRE_TEST_CASE=staging "$L" -p 1 -- "$T" rank_entry --exact --ignored --nocapture -q; echo "exit=$?"
"#;
    // 1 MiB per rank when /dev/shm has room; an eighth of it when not.
    for (size, want) in [("1g", 16 << 20), ("48m", 6 << 20)] {
        let Some(o) = in_small_shm(size, script) else {
            return;
        };
        let out = text(&o);
        let seen: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("STAGING") || l.starts_with("exit="))
            .collect();
        let first = format!("STAGING {want} WRONG 0");
        assert_eq!(
            seen,
            [
                first.as_str(),
                "exit=0",
                "STAGING 4194304 WRONG 0",
                "exit=0"
            ],
            "/dev/shm of {size}: {out}"
        );
    }
}

#[test]
fn a_run_whose_data_needs_the_room_keeps_the_default_staging_buffers() {
    use cobre_shm_sddp::hydrothermal::{case, options, HydroThermal};
    if !sixteen_ranks_oversubscribe() {
        return;
    }
    // The bundled case with enough cuts for about 40 MB of shared data.
    let tutorial = case::Case::parse(case::TUTORIAL_CASE, "bundled", "tutorial").expect("case");
    let (mut opts, seed) = options(&tutorial, 1);
    let model = HydroThermal::new(&tutorial, seed);
    opts.forward_passes = 64;
    opts.iterations = 16;
    let shared = loop {
        let b = cobre_shm_sddp::sizes(&model, &opts)
            .expect("sizes")
            .shared_bytes();
        if b >= 40 << 20 || opts.iterations > 1 << 20 {
            break b;
        }
        opts.iterations *= 2;
    };
    // Room for the data and 2 x 4 MiB, not for the 2 x 1/8 of /dev/shm that
    // 16 ranks on fewer CPUs would otherwise get.
    let mib = (shared >> 20) + 10;
    let script = format!(
        r#"
cd "$(mktemp -d)"
echo "== auto"; "$L" -p 16 --dry-run train --iterations {i} --forward-passes 64; echo "exit=$?"
echo "== set"; COBRE_SHM_STAGING_BYTES=16777216 "$L" -p 16 --dry-run train --iterations {i} --forward-passes 64; echo "exit=$?"
"#,
        i = opts.iterations
    );
    let Some(o) = in_small_shm(&format!("{mib}m"), &script) else {
        return;
    };
    let out = text(&o);
    let (auto, set) = out.split_once("== set").expect("both sections");
    assert!(
        auto.contains("staging buffers of 4096 KiB instead of")
            && auto.contains("case and sizes: ok")
            && auto.contains("exit=0"),
        "{out}"
    );
    // A size the user set is kept: the run is refused with the numbers.
    assert!(
        set.contains("exit=2")
            && set.contains("staging buffers 33.6 MB")
            && set.contains("COBRE_SHM_STAGING_BYTES=4194304"),
        "{out}"
    );
}

#[test]
fn a_full_dev_shm_is_an_error_never_a_sigbus() {
    let script = r#"
set -u
echo "== control"; "$L" -p 2 -- true; echo "exit=$?"
echo "== regions"; COBRE_SHM_STAGING_BYTES=65536 COBRE_TEST_CASE=fill_shm "$L" -p 2 -- "$T" rank_entry --exact --ignored --nocapture -q; echo "exit=$?"
echo "== race"
COBRE_SHM_STAGING_BYTES=65536 COBRE_TEST_CASE=region_2m "$L" -p 2 -- "$T" rank_entry --exact --ignored --nocapture -q > /tmp/race1.$$ 2>&1 &
COBRE_SHM_STAGING_BYTES=65536 COBRE_TEST_CASE=region_2m "$L" -p 2 -- "$T" rank_entry --exact --ignored --nocapture -q > /tmp/race2.$$ 2>&1 &
wait; echo "-- job"; cat /tmp/race1.$$; echo "-- job"; cat /tmp/race2.$$; rm -f /tmp/race1.$$ /tmp/race2.$$
echo "== headerless"
umask 077
: > /dev/shm/cobre-shm.999999999.deadbeefdeadbeefdeadbeefdeadbeef
touch -d '1 hour ago' /dev/shm/cobre-shm.999999999.deadbeefdeadbeefdeadbeefdeadbeef
: > /dev/shm/cobre-shm.999999998.young
"$L" clean; echo "== listing"; ls /dev/shm; rm -f /dev/shm/cobre-shm.999999998.young
echo "== left"; ls /dev/shm | wc -l
"#;
    let Some(o) = in_small_shm("3m", script) else {
        return;
    };
    let out = text(&o);
    // The lines after "== name", up to the next "== " header.
    let section = |name: &str| -> &str {
        let start = out
            .find(&format!("== {name}\n"))
            .map_or(out.len(), |i| i + name.len() + 4);
        let rest = &out[start..];
        &rest[..rest.find("== ").unwrap_or(rest.len())]
    };
    let control = section("control");
    assert!(
        control.contains("exit=2") && control.contains("/dev/shm has no room"),
        "{out}"
    );
    let regions = section("regions");
    assert!(
        regions.contains("FULL after") && regions.contains("/dev/shm"),
        "{out}"
    );
    assert!(!out.contains("SIGBUS"), "{out}");
    // Racing for the same room, each job either gets its region or fails
    // saying /dev/shm is full — never a SIGBUS.
    // (Once one rank of a job exits with an error the launcher stops the
    // other, so a failed job may report from one rank only.)
    let race = section("race");
    for job in race.split("-- job").skip(1) {
        let (ok, full) = (
            job.matches("REGION ok").count(),
            job.matches("REGION failed").count(),
        );
        assert!(
            (ok == 2 && full == 0) || (ok == 0 && full >= 1),
            "each job gets its region on both ranks or fails saying why: {out}"
        );
        assert!(job.matches("does not have room").count() >= full, "{out}");
    }
    assert!(!race.contains("SIGBUS") && !race.contains("NEVER"), "{out}");
    let headerless = section("headerless");
    assert!(
        headerless.contains("deadbeefdeadbeefdeadbeefdeadbeef")
            && headerless.contains("stale: removed"),
        "{out}"
    );
    let listing = section("listing");
    assert!(
        !listing.contains("deadbeef"),
        "dead header-less segment kept: {out}"
    );
    assert!(
        listing.contains("999999998.young"),
        "young one removed: {out}"
    );
    assert!(section("left").trim().starts_with('0'), "{out}");
}

// ---- Placement

/// Each rank prints where it may run and the job's CPU count.
const WHERE: &str = r#"echo "rank=$COBRE_SHM_RANK job_cpus=$COBRE_SHM_JOB_CPUS $(grep Cpus_allowed_list /proc/self/status | tr -d '\t')""#;

/// The `WHERE` lines of both ranks of a 2-rank job, sorted.
fn where_lines(o: &Output) -> Vec<String> {
    let out = text(o);
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("rank="))
        .map(str::to_string)
        .collect();
    lines.sort();
    assert!(o.status.success(), "{out}");
    lines
}

const ON_CPU_0: [&str; 2] = [
    "rank=0 job_cpus=1 Cpus_allowed_list:0",
    "rank=1 job_cpus=1 Cpus_allowed_list:0",
];

#[test]
fn ranks_stay_inside_the_launchers_affinity_mask() {
    if cobre_shm::machine::online_cpus() < 2 {
        println!("NOTICE: one CPU: no narrower affinity mask to test; skipped");
        return;
    }
    let Ok(o) = Command::new("taskset")
        .args(["-c", "0"])
        .arg(launcher_bin())
        .args(["-p", "2", "--", "sh", "-c", WHERE])
        .output()
    else {
        println!("NOTICE: taskset unavailable; skipped");
        return;
    };
    assert_eq!(where_lines(&o), ON_CPU_0);
}

/// A cpuset cgroup (v1 or v2) holding CPU 0 only, removed when dropped.
struct CpusetOfCpu0(PathBuf);

impl CpusetOfCpu0 {
    /// One for a test that needs `cpus` CPUs (2 or more) and root; `None`,
    /// with a notice, where that or a cpuset controller is missing.
    fn for_test(cpus: usize) -> Option<Self> {
        if !is_root() || cpus < 2 {
            println!("NOTICE: needs root and 2 CPUs to make a cpuset; skipped");
            return None;
        }
        Self::create()
            .map_err(|e| println!("NOTICE: cannot make a cpuset here ({e}); skipped"))
            .ok()
    }

    /// Whether the shell that was to join the cpuset could not (it exits
    /// 97 then); says so in a notice.
    fn not_joined(o: &Output) -> bool {
        let failed = o.status.code() == Some(97);
        if failed {
            println!("NOTICE: cannot join a cpuset here ({}); skipped", text(o));
        }
        failed
    }

    fn create() -> Result<Self, String> {
        // One per test: tests of this binary make theirs at the same time.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cobre-shm-test.{}.{n}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpuset");
        let v2 = Path::new("/sys/fs/cgroup");
        let write = |p: PathBuf, v: &str| {
            std::fs::write(&p, v).map_err(|e| format!("{}: {e}", p.display()))
        };
        if v1.join("cpuset.cpus").exists() {
            let d = v1.join(name);
            std::fs::create_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            let guard = Self(d.clone());
            let mems = std::fs::read_to_string(v1.join("cpuset.mems")).unwrap_or_default();
            write(d.join("cpuset.cpus"), "0")?;
            write(d.join("cpuset.mems"), mems.trim())?;
            return Ok(guard);
        }
        let controllers =
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpuset") {
            write(v2.join("cgroup.subtree_control"), "+cpuset")?;
            let d = v2.join(name);
            std::fs::create_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            let guard = Self(d.clone());
            write(d.join("cpuset.cpus"), "0")?;
            return Ok(guard);
        }
        Err("no cpuset controller mounted".into())
    }

    /// The file a process writes its pid to, to join.
    fn tasks(&self) -> PathBuf {
        let v1 = self.0.join("tasks");
        if v1.exists() {
            v1
        } else {
            self.0.join("cgroup.procs")
        }
    }
}

impl Drop for CpusetOfCpu0 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn ranks_start_inside_a_cpuset_narrower_than_the_machine() {
    // A batch system's (or a container's) cpuset: binding a rank to a CPU
    // outside it fails, so the launcher must place ranks inside it.
    let Some(cpuset) = CpusetOfCpu0::for_test(cobre_shm::machine::online_cpus()) else {
        return;
    };
    let o = Command::new("sh")
        .args([
            "-c",
            r#"echo $$ > "$TASKS" || exit 97; exec "$L" -p 2 -- sh -c "$WHERE""#,
        ])
        .env("TASKS", cpuset.tasks())
        .env("L", launcher_bin())
        .env("WHERE", WHERE)
        .output()
        .expect("sh");
    if CpusetOfCpu0::not_joined(&o) {
        return;
    }
    assert_eq!(where_lines(&o), ON_CPU_0);
}

/// The `CPUS <n>` line both ranks of a `report_cpus` job printed, after
/// asserting there are two and they agree.
fn both_ranks_report(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let seen: Vec<&str> = out.lines().filter(|l| l.starts_with("CPUS ")).collect();
    assert_eq!(seen.len(), 2, "{}", text(o));
    assert_eq!(seen[0], seen[1], "{}", text(o));
    seen[0].to_string()
}

#[test]
fn hand_started_ranks_count_the_cpus_of_their_cpuset() {
    // Ranks started without the launcher (no COBRE_SHM_JOB_CPUS) inside a
    // container's or batch job's cpuset share its CPUs, not the machine's.
    // The rank outside the test's cpuset must see 2 CPUs or more.
    let here = cobre_shm::machine::cpuset_cpus().unwrap_or(usize::MAX);
    let Some(cpuset) = CpusetOfCpu0::for_test(cobre_shm::machine::online_cpus().min(here)) else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    const ARGS: &str = "rank_entry --exact --ignored --nocapture -q";
    let rank = |r: usize| format!(r#"COBRE_SHM_RANK={r} "$T" {ARGS}"#);
    let by_hand = |script: &str, name: &str| {
        Command::new("sh")
            .args(["-c", script])
            .env("TASKS", cpuset.tasks())
            .env("T", &exe)
            .env("COBRE_SHM_NAME", name)
            .env("COBRE_SHM_SIZE", "2")
            .env("COBRE_SHM_ATTACH_TIMEOUT_SECS", "5")
            .env("COBRE_TEST_CASE", "report_cpus")
            .env_remove("COBRE_SHM_JOB_CPUS")
            .stdin(Stdio::null())
            .output()
            .expect("sh")
    };
    // Both ranks inside the cpuset of CPU 0: one CPU for two ranks.
    let name = common::unique_name("cpuset-both");
    let o = by_hand(
        &format!(
            r#"echo $$ > "$TASKS" || exit 97; {} & {}; wait $!"#,
            rank(0),
            rank(1)
        ),
        &name,
    );
    if CpusetOfCpu0::not_joined(&o) {
        return;
    }
    assert_eq!(both_ranks_report(&o), "CPUS 1", "{}", text(&o));
    common::assert_no_leftovers(&name);
    // Rank 0 inside (CPU 0), rank 1 outside (2 CPUs or more): their cpusets
    // disagree, but their masks let each have a CPU of its own, and both
    // count 2.
    let name = common::unique_name("cpuset-one");
    let o = by_hand(
        &format!(
            r#"COBRE_SHM_RANK=0 sh -c 'echo $$ > "$TASKS" && exec "$T" {ARGS}' & {}; wait $!"#,
            rank(1)
        ),
        &name,
    );
    assert_eq!(both_ranks_report(&o), "CPUS 2", "{}", text(&o));
    common::assert_no_leftovers(&name);
}

#[test]
fn hand_started_ranks_under_one_taskset_share_its_cpus() {
    // Ranks started by hand under `taskset` count what their affinity masks
    // leave them, compared at attach: two ranks on CPU 0 share one CPU (and
    // yield instead of spinning) although their cpuset has more; on two
    // CPUs each has one.
    // The affinity mask lies inside the cpuset: two CPUs here are two there.
    let allowed = cobre_shm::machine::allowed_cpus().unwrap_or_default();
    let [a, b, ..] = allowed[..] else {
        println!("NOTICE: fewer than two CPUs allowed here; taskset test skipped");
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let by_hand = |tag: &str, masks: [u32; 2], job_cpus: Option<&str>| {
        let name = common::unique_name(tag);
        let script = format!(
            r#"COBRE_SHM_RANK=0 taskset -c {} "$T" rank_entry --exact --ignored --nocapture -q & COBRE_SHM_RANK=1 taskset -c {} "$T" rank_entry --exact --ignored --nocapture -q; wait $!"#,
            masks[0], masks[1]
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .env("T", &exe)
            .env("COBRE_SHM_NAME", &name)
            .env("COBRE_SHM_SIZE", "2")
            .env("COBRE_SHM_ATTACH_TIMEOUT_SECS", "10")
            .env("COBRE_TEST_CASE", "report_cpus")
            .env_remove("COBRE_SHM_JOB_CPUS")
            .stdin(Stdio::null());
        if let Some(n) = job_cpus {
            cmd.env("COBRE_SHM_JOB_CPUS", n);
        }
        let o = cmd.output().expect("sh");
        common::assert_no_leftovers(&name);
        both_ranks_report(&o)
    };
    assert_eq!(by_hand("taskset-same", [a, a], None), "CPUS 1");
    assert_eq!(by_hand("taskset-own", [a, b], None), "CPUS 2");
    // A figure the user gives wins over the masks.
    assert_eq!(by_hand("taskset-told", [a, a], Some("2")), "CPUS 2");
}

// ---- Numbers

#[test]
fn absurd_numbers_are_refused_before_anything_is_allocated() {
    let dir = workdir("numbers");
    let case = dir.join("case.json");
    common::generate_case(&case, [3, 4, 3, 2, 1]);
    let c = case.to_string_lossy().to_string();
    let out = dir.join("out").to_string_lossy().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "train",
                &c,
                "--iterations",
                "9223372036854775808",
                "--output",
                &out,
            ],
            "iterations",
        ),
        (
            vec![
                "train",
                &c,
                "--forward-passes",
                "1000000000000",
                "--output",
                &out,
            ],
            "forward",
        ),
        (vec!["-p", "18446744073709551615", "--dry-run"], "at most"),
        (vec!["-p", "1000000000", "--dry-run"], "at most"),
        (vec!["--timeout", "1e300", "train", &c], "--timeout"),
        (
            vec!["--threads", "100000", "train", &c, "--output", &out],
            "worker threads",
        ),
        (vec!["generate", "--hydros", "100000000"], "too large"),
        (vec!["train", &c, "--time-limit", "1e300"], "--time-limit"),
    ];
    for (args, needle) in cases {
        let t = Instant::now();
        let o = Command::new(launcher_bin())
            .args(&args)
            .output()
            .expect("run");
        let err = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    // A case whose generated tree would not fit.
    let text_case = std::fs::read_to_string(&case).expect("case");
    let huge = text_case.replacen("\"openings\": 3", "\"openings\": 100000000", 1);
    assert_ne!(huge, text_case);
    let bad = dir.join("huge.json");
    std::fs::write(&bad, huge).expect("write");
    let o = Command::new(launcher_bin())
        .args(["train"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("inflow_model.openings"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

// ---- Outputs

#[test]
fn outputs_stay_inside_output_and_are_checked_first() {
    let dir = workdir("outputs");
    let case = dir.join("case.json");
    common::generate_case(&case, [2, 3, 2, 1, 1]);
    let evil = std::fs::read_to_string(&case).expect("case").replacen(
        "\"name\": \"synthetic",
        "\"name\": \"../../escaped/x",
        1,
    );
    std::fs::write(&case, evil).expect("write");
    let o = Command::new(launcher_bin())
        .current_dir(&dir)
        .args([
            "-q",
            "train",
            "case.json",
            "--iterations",
            "2",
            "--forward-passes",
            "2",
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    let made: Vec<String> = std::fs::read_dir(dir.join("output"))
        .expect("output/")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].starts_with("_.._escaped_x"), "{made:?}");
    assert!(!dir.parent().expect("parent").join("escaped").exists());
    assert!(dir
        .join("output")
        .join(&made[0])
        .join("checkpoint.bin")
        .exists());
    let _ = std::fs::remove_dir_all(&dir);
    // A read-only output directory is refused before training.
    if !is_root() {
        println!("NOTICE: not root: cannot mount read-only; skipped the read-only check");
        return;
    }
    let script = r#"mkdir -p /tmp/ro.$$ && mount -t tmpfs -o ro,size=1m tmpfs /tmp/ro.$$ || exit 97
"$L" generate --output /tmp/case.$$.json >/dev/null
start=$(date +%s%N); "$L" train /tmp/case.$$.json --output /tmp/ro.$$/out; echo "exit=$?"; end=$(date +%s%N)
echo "ms=$(( (end - start) / 1000000 ))"; umount /tmp/ro.$$; rm -rf /tmp/ro.$$ /tmp/case.$$.json"#;
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("L", launcher_bin())
        .output()
        .expect("unshare");
    let out = text(&o);
    if o.status.code() == Some(97) {
        println!("NOTICE: cannot mount here: {out}; skipped");
        return;
    }
    assert!(
        out.contains("exit=2") && out.contains("cannot be written"),
        "{out}"
    );
    let ms: u64 = out
        .split("ms=")
        .nth(1)
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("timing");
    assert!(ms < 3000, "refused only after {ms} ms: {out}");
}

// ---- Liveness

/// Run the `stop_me` case under the launcher with `args` and `env`,
/// SIGSTOP rank 1 once it reports ready, and return the job's text. The
/// launcher's last line must name rank 1 as stopped.
fn stop_rank1(args: &[&str], env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(launcher_bin());
    cmd.args(args)
        .arg("--")
        .arg(exe)
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", "stop_me")
        .env("COBRE_SHM_STOPPED_SECS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut job = cmd.spawn().expect("start");
    let stdout = job.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let rank1 = loop {
        let l = lines.next().expect("rank 1 reports").expect("line");
        if let Some(p) = l.strip_prefix("READY rank=1 pid=") {
            break p.trim().parse::<u32>().expect("pid");
        }
    };
    send_signal(rank1, Signal::SIGSTOP).expect("stop rank 1");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let o = job.wait_with_output().expect("wait");
    let o = Output {
        stdout: (rest.join("\n") + "\n").into_bytes(),
        ..o
    };
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with("cobre-shm:"))
        .unwrap_or("");
    assert!(
        last.contains("rank 1 (pid") && last.contains("stopped"),
        "the launcher names rank 1: {out}"
    );
    out
}

#[test]
fn a_stopped_rank_is_named_and_a_busy_one_is_waited_for() {
    let t = Instant::now();
    let out = stop_rank1(&["-p", "2"], &[]);
    assert!(
        out.contains("rank 1") && out.contains("has been stopped"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // No fixed deadline after attach: a 3 s single-rank phase is fine...
    let o = launch(
        &["-p", "2"],
        "busy_rank0",
        &[("COBRE_SHM_ATTACH_TIMEOUT_SECS", "1")],
    );
    assert!(o.status.success(), "{}", text(&o));
    // ...unless the user asks for a hard bound.
    let o = launch(&["-p", "2", "--timeout", "1"], "busy_rank0", &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("timed out"), "{}", text(&o));
}

/// Under the tree barrier (forced, 6 ranks: rank 1 is rank 5's parent) a
/// stopped inner rank is named as under the flat one.
#[test]
fn a_stopped_rank_is_named_under_the_tree_barrier() {
    stop_rank1(&["-p", "6"], &[("COBRE_SHM_BARRIER", "tree")]);
}

/// Pids of the children of `parent`.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn one_sigsegv_ends_the_job_as_a_crash() {
    let dir = workdir("segv");
    let case = dir.join("case.json");
    common::generate_case(&case, [4, 6, 3, 2, 1]);
    let mut job = Command::new(launcher_bin())
        .args(["-p", "2", "-q", "train"])
        .arg(&case)
        .args([
            "--iterations",
            "100000",
            "--checkpoint-every",
            "0",
            "--output",
        ])
        .arg(dir.join("out"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ranks = loop {
        let c = children(job.id());
        if c.len() == 2 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ranks.len(), 2, "two ranks");
    std::thread::sleep(Duration::from_millis(500));
    send_signal(ranks[1], Signal::SIGSEGV).expect("signal");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().expect("wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the job did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut job.stderr.take().expect("stderr"), &mut err);
    assert_eq!(status.code(), Some(139), "{err}");
    assert!(err.contains("SIGSEGV") && err.contains("rank 1"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn what_a_rank_started_dies_with_the_job() {
    let marker = format!("25.{}", std::process::id() % 1000);
    let script = format!(
        "sleep {marker} & sleep {marker} & if [ $COBRE_SHM_RANK = 2 ]; then sleep 0.3; exit 3; fi; wait"
    );
    let o = Command::new(launcher_bin())
        .args(["-p", "3", "--", "sh", "-c", &script])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let left = || {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let t = Instant::now();
    while left() > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), 0, "processes started by the ranks outlived the job");
    // Also when every rank succeeds but leaves something behind.
    let o = Command::new(launcher_bin())
        .args([
            "-p",
            "2",
            "--",
            "sh",
            "-c",
            &format!("sleep {marker} & exit 0"),
        ])
        .output()
        .expect("run");
    assert!(o.status.success());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(left(), 0, "a background process outlived a successful job");
}

#[test]
fn error_lines_of_many_ranks_stay_whole() {
    let dir = workdir("lines");
    let case = dir.join("case.json");
    common::generate_case(&case, [8, 4, 2, 1, 1]);
    let o = Command::new(launcher_bin())
        .args(["-p", "4", "train"])
        .arg(&case)
        .args([
            "--iterations",
            "3",
            "--forward-passes",
            "8",
            "--inject-solver-fault",
            "stage=2,iteration=1,rungs=9",
            "--output",
        ])
        .arg(dir.join("out"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("training failed"))
        .collect();
    assert!(failures.len() >= 2, "{err}");
    for l in err.lines().filter(|l| !l.trim().is_empty()) {
        let tags = l.matches("cobre-shm:").count() + l.matches(" INFO ").count();
        assert_eq!(tags, 1, "a torn line: {l:?}\n{err}");
        assert!(l.starts_with("cobre-shm:") || l.contains(" INFO "), "{l:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_rank_without_its_job_name_is_refused() {
    let o = Command::new(std::env::current_exe().expect("exe"))
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", "stop_me")
        .env("COBRE_SHM_NAME", "")
        .env("COBRE_SHM_SIZE", "2")
        .env("COBRE_SHM_RANK", "1")
        .env_remove("COBRE_COMM_BACKEND")
        .output()
        .expect("run");
    let out = text(&o);
    assert!(
        out.contains("NOCOMM") && out.contains("COBRE_SHM_NAME"),
        "{out}"
    );
}

// ---- Checkpoint and resume

fn train(dir: &Path, case: &Path, layout: &[&str], out: &str, extra: &[&str]) -> Output {
    Command::new(launcher_bin())
        .args(layout)
        .args(["-q", "train"])
        .arg(case)
        .args(["--forward-passes", "8", "--output"])
        .arg(dir.join(out))
        .args(extra)
        .args(if extra.contains(&"--seed") {
            vec![]
        } else {
            vec!["--seed", "3"]
        })
        .output()
        .expect("run")
}

fn results(dir: &Path, out: &str) -> (String, String) {
    (
        common::csv_without_clock(&dir.join(out)),
        std::fs::read_to_string(dir.join(out).join("policy.json")).expect("policy"),
    )
}

#[test]
fn a_resumed_study_is_bit_identical_to_an_uninterrupted_one() {
    let dir = workdir("resume");
    let case = dir.join("case.json");
    common::generate_case(&case, [4, 6, 3, 2, 7]);
    let o = train(&dir, &case, &["-p", "1"], "full", &["--iterations", "6"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = train(&dir, &case, &["-p", "2"], "part", &["--iterations", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let part = dir.join("part").to_string_lossy().to_string();
    let o = train(
        &dir,
        &case,
        &["-p", "1", "--threads", "2"],
        "resumed",
        &["--iterations", "6", "--resume", &part],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        results(&dir, "full") == results(&dir, "resumed"),
        "resumed run differs"
    );
    // Another seed, another case, or nothing left to do: refused, saying why.
    let o = train(
        &dir,
        &case,
        &["-p", "1"],
        "x",
        &["--iterations", "6", "--resume", &part, "--seed", "4"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("sampled with seed 3, not 4"),
        "{}",
        text(&o)
    );
    let other = dir.join("other.json");
    common::generate_case(&other, [4, 6, 3, 2, 8]);
    let o = train(
        &dir,
        &other,
        &["-p", "1"],
        "x",
        &["--iterations", "6", "--resume", &part],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("another case"), "{}", text(&o));
    let o = train(
        &dir,
        &case,
        &["-p", "1"],
        "x",
        &["--iterations", "3", "--resume", &part],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("already holds 3 iterations"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_writes_a_final_checkpoint_that_resumes_exactly() {
    let dir = workdir("sigterm");
    let case = dir.join("case.json");
    common::generate_case(&case, [6, 8, 4, 2, 9]);
    let o = train(
        &dir,
        &case,
        &["-p", "1"],
        "full",
        &["--iterations", "40", "--checkpoint-every", "0"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut job = Command::new(launcher_bin())
        .args(["-p", "2", "train"])
        .arg(&case)
        .args([
            "--forward-passes",
            "8",
            "--seed",
            "3",
            "--iterations",
            "40",
            "--checkpoint-every",
            "0",
            "--output",
        ])
        .arg(dir.join("cut"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    // SIGTERM once the first iteration is reported: the other 39 cannot
    // finish before it arrives, so the run must stop early.
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(job.stderr.take().expect("stderr")));
    let mut err = String::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        err.push_str(&line);
        err.push('\n');
        if line.contains("iteration    1/40") {
            send_signal(job.id(), Signal::SIGTERM).expect("signal");
            break;
        }
    }
    for line in lines {
        err.push_str(&line.unwrap_or_default());
        err.push('\n');
    }
    let status = job.wait().expect("wait");
    assert!(
        !status.success(),
        "the run finished all 40 iterations although SIGTERM came after the first: {err}"
    );
    assert_eq!(status.code(), Some(143), "{err}");
    let done = std::fs::read_to_string(dir.join("cut").join("convergence.csv"))
        .expect("outputs written on SIGTERM")
        .lines()
        .count()
        - 1;
    assert!(dir.join("cut").join("checkpoint.bin").exists(), "{err}");
    assert_eq!(
        common::summary(&dir.join("cut"))["stop_reason"],
        "interrupted"
    );
    let cut = dir.join("cut").to_string_lossy().to_string();
    let o = train(
        &dir,
        &case,
        &["-p", "1"],
        "resumed",
        &[
            "--iterations",
            "40",
            "--checkpoint-every",
            "0",
            "--resume",
            &cut,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        results(&dir, "full") == results(&dir, "resumed"),
        "resumed after SIGTERM at {done} differs"
    );
    let _ = std::fs::remove_dir_all(dir);
}
