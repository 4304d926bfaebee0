//! Failure behaviour of the shm backend with real processes: dead ranks,
//! aborts, mismatched collectives, bad or foreign segments, late starters.
//! Every test bounds its own time and checks `/dev/shm` afterwards.

mod common;

use std::time::{Duration, Instant};

use cobre_comm::{BackendError, CommError, Communicator, ReduceOp};
use cobre_shm::launch::Segment;
use cobre_shm::{ShmBackend, ShmConfig};
use cobre_shm_layout as layout;
use common::{assert_no_leftovers, spawn, unique_name};

fn env_of(name: &str, case: &str) -> Vec<(&'static str, String)> {
    vec![
        ("COBRE_SHM_NAME", name.to_string()),
        ("COBRE_COMM_BACKEND", "shm".to_string()),
        ("COBRE_TEST_CASE", case.to_string()),
    ]
}

/// Entry point of rank processes (ignored in normal runs).
#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    let Ok(case) = std::env::var("COBRE_TEST_CASE") else {
        return;
    };
    let victim: usize = std::env::var("COBRE_TEST_VICTIM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let attached = ShmBackend::from_env();
    if case == "wait_for_missing_rank" {
        // Size 3 with 2 processes: the handshake cannot complete.
        let err = attached.expect_err("a rank is missing");
        println!("ATTACH-ERROR: {err}");
        assert!(err.to_string().contains("died"), "{err}");
        return;
    }
    if case == "attach_fails" {
        let want = std::env::var("COBRE_TEST_EXPECT").unwrap_or_default();
        match attached {
            Err(e) => {
                let msg = e.to_string();
                println!("ATTACH-ERROR: {msg}");
                assert!(
                    matches!(e, BackendError::InitializationFailed { .. }),
                    "{e:?}"
                );
                assert!(msg.contains(&want), "expected '{want}' in: {msg}");
                return;
            }
            Ok(_) => panic!("attach should fail with '{want}'"),
        }
    }
    let c = attached.expect("attach");
    let r = c.rank();
    match case.as_str() {
        "barrier_once" => c.barrier().expect("barrier"),
        "wait_for_missing_rank" => unreachable!("attach cannot complete"),
        "victim_sleeps" | "victim_root_sleeps" => {
            if r == victim {
                println!("VICTIM-READY");
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            let t = Instant::now();
            let err = if case == "victim_root_sleeps" {
                // An eager broadcast: the receivers wait for the root only.
                c.broadcast(&mut [0u64; 4], victim)
                    .expect_err("the root never publishes")
            } else {
                c.barrier().expect_err("the victim never arrives")
            };
            println!("FAILED-AFTER-MS={} ERROR={err}", t.elapsed().as_millis());
            assert!(
                matches!(
                    err,
                    CommError::CollectiveFailed {
                        operation: "barrier" | "broadcast",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("died"), "{err}");
            // The next collective fails at once too.
            assert!(c.allreduce(&[1.0], &mut [0.0], ReduceOp::Sum).is_err());
        }
        "abort_rank1" => {
            c.barrier().expect("first barrier");
            if r == 1 {
                c.abort(7);
            }
            let t = Instant::now();
            let err = c.barrier().expect_err("rank 1 aborted");
            println!("FAILED-AFTER-MS={} ERROR={err}", t.elapsed().as_millis());
            assert!(err.to_string().contains("abort(7)"), "{err}");
            // Without a launcher the aborting rank stops us; exit cleanly if
            // we got here first.
        }
        "mismatch" => {
            // The last rank is the odd one: under the tree barrier it is a
            // leaf, found by its parent only.
            let res = if r + 1 < c.size() {
                c.allreduce(&[1.0f64], &mut [0.0], ReduceOp::Sum)
            } else {
                c.barrier()
            };
            let err = res.expect_err("ranks called different collectives");
            assert!(err.to_string().contains("collective mismatch"), "{err}");
        }
        "late_last_broadcast" => {
            // The last rank arrives late while rank 1 waits for it.
            if r + 1 == c.size() {
                std::thread::sleep(Duration::from_millis(300));
            }
            let mut v = [if r == 0 { 42u64 } else { 0 }];
            c.broadcast(&mut v, 0).expect("broadcast");
            assert_eq!(v[0], 42);
            println!("RANK-{r}-DONE");
        }
        "bcast_mismatch" => {
            // Rank 0 broadcasts while rank 1 reduces: both are told, rank 0
            // in the broadcast or at its next collective.
            if r == 0 {
                let first = c.broadcast(&mut [1.0f64], 0);
                let next = first.and_then(|()| c.barrier());
                let err = next.expect_err("rank 1 called allreduce");
                assert!(err.to_string().contains("collective mismatch"), "{err}");
            } else {
                let err = c
                    .allreduce(&[1.0f64], &mut [0.0], ReduceOp::Sum)
                    .expect_err("rank 0 called broadcast");
                assert!(err.to_string().contains("collective mismatch"), "{err}");
            }
            println!("RANK-{r}-SAW-MISMATCH");
        }
        "report_barrier" => {
            println!("BARRIER {}", c.barrier_choice());
            oversubscribed_sums(&c);
        }
        "oversubscribed" => oversubscribed_sums(&c),
        "overlapping_calls" => {
            overlapping_calls_are_refused(&c);
            println!("RANK-{r}-DONE");
        }
        "eager_bursts" => {
            eager_bursts(&c);
            println!("RANK-{r}-DONE");
        }
        other => panic!("unknown case {other}"),
    }
}

/// A second thread's collective call while another thread of the same rank
/// is inside one (a barrier that waits for the late rank 1) fails at once
/// with an error that names the rule, for every entry point; the waiting
/// call and the job go on unharmed.
fn overlapping_calls_are_refused(c: &ShmBackend) {
    use cobre_comm::{LocalCommunicator, SharedMemoryProvider, SharedRegion};
    let r = c.rank();
    let mut region = c.create_shared_region::<u64>(4).expect("region");
    c.barrier().expect("barrier");
    if r == 1 {
        std::thread::sleep(Duration::from_secs(3));
        c.barrier()
            .expect("the barrier rank 0's first thread waits in");
    } else {
        std::thread::scope(|s| {
            let waiting = s.spawn(|| c.barrier());
            // The first thread is inside its barrier well before rank 1 comes.
            std::thread::sleep(Duration::from_millis(500));
            assert!(!waiting.is_finished(), "rank 1 is not there yet");
            let refused = [
                ("allreduce", c.allreduce(&[1u64], &mut [0], ReduceOp::Sum)),
                ("broadcast", c.broadcast(&mut [1u64], 0)),
                (
                    "allgatherv",
                    c.allgatherv(&[1u64], &mut [0; 2], &[1, 1], &[0, 1]),
                ),
                ("barrier", c.barrier()),
                ("barrier", c.local_comm().barrier()),
                ("fence", region.fence()),
                ("publish_blocks", region.publish_blocks(0, &[2, 2], &[7, 7])),
                (
                    "create_shared_region",
                    c.create_shared_region::<u64>(4).map(drop),
                ),
            ];
            for (op, res) in refused {
                let err = res.expect_err("a second thread's call overlaps the first's");
                println!("REFUSED {op}: {err}");
                assert!(err.to_string().contains("must not overlap"), "{err}");
                assert!(err.to_string().contains(&format!("'{op}'")), "{err}");
            }
            assert!(!waiting.is_finished(), "the refusals released nobody");
            waiting
                .join()
                .expect("first thread")
                .expect("the first thread's barrier completes");
        });
    }
    // The job is intact: every entry point works again, values checked.
    let mut sum = [0u64];
    c.allreduce(&[r as u64 + 1], &mut sum, ReduceOp::Sum)
        .expect("allreduce");
    assert_eq!(sum[0], 3);
    region
        .publish_blocks(0, &[2, 2], &[10 * r as u64, 10 * r as u64 + 1])
        .expect("publish_blocks");
    assert_eq!(region.as_slice(), &[0, 1, 10, 11]);
}

/// 2000 allreduces of one value, each checked.
fn oversubscribed_sums(c: &ShmBackend) {
    let (r, n) = (c.rank() as u64, c.size() as u64);
    for step in 0..2000u64 {
        let mut s = [0u64];
        c.allreduce(&[step + r], &mut s, ReduceOp::Sum)
            .expect("allreduce");
        assert_eq!(s[0], n * step + n * (n - 1) / 2);
    }
}

/// Broadcasts of 8 bytes to 4.8 KiB (eager ones let roots run ahead)
/// from roots that change every call or stay for a run of calls, with an
/// allreduce every 37 calls; the last call is a broadcast after which its
/// root exits at once.
fn eager_bursts(c: &ShmBackend) {
    let (r, n) = (c.rank(), c.size());
    for step in 0..3000usize {
        let root = if (step / 200) % 2 == 0 {
            step % n
        } else {
            (step / 200) % n
        };
        let tag = step as u64 * 1_000_003;
        // 8 B – 4.8 KiB: eager up to the limit (4 KiB when oversubscribed),
        // staged above it.
        let mut b = vec![if r == root { tag } else { 0 }; 1 + (step * 7) % 600];
        c.broadcast(&mut b, root).expect("broadcast");
        assert!(b.iter().all(|&v| v == tag), "step {step}: {b:?}");
        if step % 37 == 36 {
            let mut s = [0u64];
            c.allreduce(&[tag + r as u64], &mut s, ReduceOp::Sum)
                .expect("allreduce");
            assert_eq!(s[0], n as u64 * tag + (n * (n - 1) / 2) as u64);
        }
    }
}

#[test]
fn sigkill_during_barrier_fails_survivors_within_a_second() {
    sigkill_fails_survivors_within_a_second("victim_sleeps");
}

/// The same with the survivors waiting for an eager broadcast from the
/// victim (they watch the root only).
#[test]
fn sigkill_of_a_broadcast_root_fails_its_receivers_within_a_second() {
    sigkill_fails_survivors_within_a_second("victim_root_sleeps");
}

fn sigkill_fails_survivors_within_a_second(case: &str) {
    let name = unique_name("sigkill");
    let victim = 1;
    let ranks = spawn(
        "rank_entry",
        3,
        &[
            env_of(&name, case),
            vec![
                ("COBRE_TEST_VICTIM", victim.to_string()),
                ("COBRE_SHM_TIMEOUT_SECS", "30".into()),
            ],
        ]
        .concat(),
        &[],
    );
    // Let everyone attach and the survivors sit in the barrier.
    std::thread::sleep(Duration::from_millis(400));
    let killed_at = Instant::now();
    common::send_signal(ranks.pids[victim], nix::sys::signal::Signal::SIGKILL).expect("sigkill");
    let out = ranks.wait(Duration::from_secs(20));
    for o in &out {
        if o.rank == victim {
            assert!(!o.status.success(), "the victim was killed");
            continue;
        }
        assert!(o.status.success(), "{}", o.describe());
        let after = o.ended.duration_since(killed_at);
        assert!(
            after < Duration::from_secs(1),
            "rank {} took {after:?} to fail\n{}",
            o.rank,
            o.describe()
        );
        assert!(o.stdout.contains("died"), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

#[test]
fn abort_stops_every_rank_quickly() {
    let name = unique_name("abort");
    let t = Instant::now();
    let out =
        spawn("rank_entry", 3, &env_of(&name, "abort_rank1"), &[]).wait(Duration::from_secs(20));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(out[1].status.code(), Some(7), "{}", out[1].describe());
    for o in [&out[0], &out[2]] {
        // Either the survivor saw the abort (exit 0 after its assertion) or
        // rank 1's SIGTERM reached it first.
        let ok = o.status.success() && o.stdout.contains("abort(7)");
        let terminated = std::os::unix::process::ExitStatusExt::signal(&o.status) == Some(15);
        assert!(ok || terminated, "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

#[test]
fn mismatched_collectives_fail_instead_of_exchanging_garbage() {
    let name = unique_name("mismatch");
    for o in spawn("rank_entry", 2, &env_of(&name, "mismatch"), &[]).wait(Duration::from_secs(20)) {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

#[test]
fn world_size_mismatch_is_reported_to_both_sides() {
    let name = unique_name("worldsize");
    let mut env = env_of(&name, "attach_fails");
    env.push(("COBRE_SHM_TIMEOUT_SECS", "20".into()));
    let ranks = spawn(
        "rank_entry",
        2,
        &env,
        &[
            (0, "COBRE_TEST_EXPECT", "world size mismatch".into()),
            (1, "COBRE_SHM_SIZE", "3".into()),
            (1, "COBRE_TEST_EXPECT", "COBRE_SHM_SIZE=3".into()),
        ],
    );
    let t = Instant::now();
    let out = ranks.wait(Duration::from_secs(20));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "rank 0 must learn at once, took {:?}",
        t.elapsed()
    );
    for o in &out {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

#[test]
fn duplicate_rank_is_reported() {
    let name = unique_name("duplicate");
    // Ranks 0 and 1 of 3, plus a second process claiming rank 1: whichever
    // rank-1 process comes second is refused, and everyone learns why.
    let mut env = env_of(&name, "attach_fails");
    env.push(("COBRE_SHM_TIMEOUT_SECS", "20".into()));
    let ranks = spawn(
        "rank_entry",
        3,
        &env,
        &[
            (0, "COBRE_SHM_SIZE", "3".into()),
            (0, "COBRE_TEST_EXPECT", "already taken".into()),
            (1, "COBRE_SHM_SIZE", "3".into()),
            (1, "COBRE_TEST_EXPECT", "already taken".into()),
            (2, "COBRE_SHM_RANK", "1".into()),
            (2, "COBRE_TEST_EXPECT", "already taken".into()),
        ],
    );
    for o in ranks.wait(Duration::from_secs(20)) {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

#[test]
fn late_rank_zero_is_waited_for() {
    let name = unique_name("late");
    let env = env_of(&name, "barrier_once");
    let f = spawn_single(&env, 1, 2);
    std::thread::sleep(Duration::from_millis(300));
    let z = spawn_single(&env, 0, 2);
    for o in f
        .wait(Duration::from_secs(20))
        .into_iter()
        .chain(z.wait(Duration::from_secs(20)))
    {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

fn spawn_single(env: &[(&'static str, String)], rank: usize, size: usize) -> common::Ranks {
    // `spawn` numbers ranks from 0; override the rank of a single process.
    spawn(
        "rank_entry",
        1,
        &[env.to_vec(), vec![("COBRE_SHM_SIZE", size.to_string())]].concat(),
        &[(0, "COBRE_SHM_RANK", rank.to_string())],
    )
}

#[test]
fn missing_rank_times_out_with_a_clear_error() {
    let name = unique_name("missing");
    let mut env = env_of(&name, "attach_fails");
    env.push(("COBRE_SHM_ATTACH_TIMEOUT_SECS", "1".into()));
    let t = Instant::now();
    let out = spawn(
        "rank_entry",
        1,
        &[
            env,
            vec![
                ("COBRE_SHM_SIZE", "2".into()),
                ("COBRE_TEST_EXPECT", "ranks [1] never arrived".into()),
            ],
        ]
        .concat(),
        &[],
    )
    .wait(Duration::from_secs(20));
    assert!(out[0].status.success(), "{}", out[0].describe());
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_no_leftovers(&name);
}

/// Eight ranks on two CPUs, 3000 eager broadcasts between allreduces:
/// every value intact, nobody taken for dead when the last root leaves.
#[test]
fn eager_broadcasts_run_ahead_on_eight_ranks_over_two_cores() {
    every_rank_is_done("eager", "eager_bursts", 8, Duration::from_secs(60));
}

/// Two threads of one rank inside collectives at once (which cobre-comm's
/// contract forbids) would interleave their steps of the shared protocol
/// and exchange each other's data; the second is refused instead.
#[test]
fn overlapping_collective_calls_of_one_rank_are_refused() {
    every_rank_is_done("overlap", "overlapping_calls", 2, Duration::from_secs(30));
}

/// Run `case` on `ranks` ranks: every rank exits 0 having printed
/// "RANK-r-DONE", and nothing is left in `/dev/shm`.
fn every_rank_is_done(tag: &str, case: &str, ranks: usize, timeout: Duration) {
    let name = unique_name(tag);
    for o in spawn("rank_entry", ranks, &env_of(&name, case), &[]).wait(timeout) {
        assert!(o.status.success(), "{}", o.describe());
        assert!(
            o.stdout.contains(&format!("RANK-{}-DONE", o.rank)),
            "{}",
            o.describe()
        );
    }
    assert_no_leftovers(&name);
}

#[test]
fn eight_ranks_on_two_cores_survive_oversubscription() {
    let name = unique_name("oversub");
    let t = Instant::now();
    for o in
        spawn("rank_entry", 8, &env_of(&name, "oversubscribed"), &[]).wait(Duration::from_secs(60))
    {
        assert!(o.status.success(), "{}", o.describe());
    }
    println!("8 ranks x 2000 allreduce: {:?}", t.elapsed());
    assert_no_leftovers(&name);
}

/// A broadcast root whose last collective was that broadcast may leave
/// while a rank still waits for a third, late one: that rank must not find
/// the root gone and report it dead (it would if the root's broadcast
/// returned before everyone arrived and the root exited at once).
#[test]
fn a_root_leaving_after_its_last_broadcast_is_not_taken_for_dead() {
    every_rank_is_done(
        "late-bcast",
        "late_last_broadcast",
        3,
        Duration::from_secs(20),
    );
}

/// A broadcast root that meets another collective is told so, in the
/// broadcast or at the latest in its next collective; the other rank at
/// once.
#[test]
fn a_mismatch_with_a_broadcast_root_reaches_both_ranks() {
    let name = unique_name("bcast-mismatch");
    for o in
        spawn("rank_entry", 2, &env_of(&name, "bcast_mismatch"), &[]).wait(Duration::from_secs(20))
    {
        assert!(o.status.success(), "{}", o.describe());
        assert!(o.stdout.contains("SAW-MISMATCH"), "{}", o.describe());
    }
    assert_no_leftovers(&name);
}

/// The tree barrier (forced with `COBRE_SHM_BARRIER=tree`; `auto` picks it
/// only where it measured faster at start-up) keeps the flat one's promises at
/// sizes with two levels: values intact under oversubscription, a
/// mismatched leaf found, a killed leaf named to every survivor in under a
/// second.
#[test]
fn tree_barrier_exchanges_finds_mismatches_and_dead_leaves() {
    let tree = ("COBRE_SHM_BARRIER", "tree".to_string());
    let name = unique_name("tree-oversub");
    let env = [env_of(&name, "oversubscribed"), vec![tree.clone()]].concat();
    for o in spawn("rank_entry", 7, &env, &[]).wait(Duration::from_secs(60)) {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);

    let name = unique_name("tree-mismatch");
    let env = [env_of(&name, "mismatch"), vec![tree.clone()]].concat();
    for o in spawn("rank_entry", 6, &env, &[]).wait(Duration::from_secs(20)) {
        assert!(o.status.success(), "{}", o.describe());
    }
    assert_no_leftovers(&name);

    let name = unique_name("tree-kill");
    let victim = 5; // child of rank 1, grandchild of rank 0
    let env = [
        env_of(&name, "victim_sleeps"),
        vec![tree, ("COBRE_TEST_VICTIM", victim.to_string())],
    ]
    .concat();
    let ranks = spawn("rank_entry", 6, &env, &[]);
    std::thread::sleep(Duration::from_millis(400));
    let killed_at = Instant::now();
    common::send_signal(ranks.pids[victim], nix::sys::signal::Signal::SIGKILL).expect("sigkill");
    for o in ranks.wait(Duration::from_secs(20)) {
        if o.rank == victim {
            continue;
        }
        assert!(o.status.success(), "{}", o.describe());
        assert!(o.stdout.contains("died"), "{}", o.describe());
        let after = o.ended.duration_since(killed_at);
        assert!(
            after < Duration::from_secs(1),
            "rank {} took {after:?}",
            o.rank
        );
    }
    assert_no_leftovers(&name);
}

/// Ranks that disagree on the barrier shape stop at attach with a
/// mismatch instead of waiting for each other forever. Without a launcher a
/// rank that comes to attach after the others gave up finds no segment and
/// fails by the attach timeout (3 s here), as any late rank of a failed job.
#[test]
fn ranks_with_different_barrier_shapes_stop_at_attach() {
    ranks_with_different_settings_stop_at_attach("COBRE_SHM_BARRIER", None, "tree");
}

/// The same for ranks that disagree on which broadcasts are eager (one
/// would publish in the ring while the other waits at a barrier).
#[test]
fn ranks_with_different_eager_limits_stop_at_attach() {
    ranks_with_different_settings_stop_at_attach("COBRE_SHM_EAGER_MAX_BYTES", None, "0");
}

/// The same for ranks started by hand that were told different CPU counts
/// (two 1 CPU, the third 64), or where only one was told a count: the
/// others would count their masks instead.
#[test]
fn ranks_with_different_cpu_counts_stop_at_attach() {
    ranks_with_different_settings_stop_at_attach("COBRE_SHM_JOB_CPUS", Some("1"), "64");
    ranks_with_different_settings_stop_at_attach("COBRE_SHM_JOB_CPUS", None, "2");
}

/// Three ranks, the last with `var=value` (the others with `common`, or
/// without the variable): every rank fails at attach within seconds, told
/// which settings to align.
fn ranks_with_different_settings_stop_at_attach(
    var: &'static str,
    common: Option<&str>,
    value: &str,
) {
    let name = unique_name("shapes");
    let t = Instant::now();
    let env = [
        env_of(&name, "barrier_once"),
        vec![("COBRE_SHM_ATTACH_TIMEOUT_SECS", "3".to_string())],
        common.map(|v| (var, v.to_string())).into_iter().collect(),
    ]
    .concat();
    let out = spawn("rank_entry", 3, &env, &[(2, var, value.into())]).wait(Duration::from_secs(20));
    let all: Vec<String> = out.iter().map(common::RankOutcome::describe).collect();
    let all = all.join("\n");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "{:?}\n{all}",
        t.elapsed()
    );
    assert!(out.iter().all(|o| !o.status.success()), "{all}");
    assert!(all.contains("settings mismatch at attach"), "{all}");
    assert!(all.contains(var), "{all}");
    assert_no_leftovers(&name);
}

/// `COBRE_SHM_BARRIER=measure` (what `auto` does from 3 ranks with a CPU
/// each): every rank times both shapes at attach, and all end on rank 0's
/// choice — the same line on every rank, with the timings — then exchange
/// intact values (3 and 4 ranks, oversubscribed here).
#[test]
fn measured_barrier_shape_is_the_same_on_every_rank() {
    for ranks in [3, 4] {
        let name = unique_name("measure");
        let env = [
            env_of(&name, "report_barrier"),
            vec![("COBRE_SHM_BARRIER", "measure".to_string())],
        ]
        .concat();
        let out = spawn("rank_entry", ranks, &env, &[]).wait(Duration::from_secs(60));
        let lines: Vec<String> = out
            .iter()
            .map(|o| {
                assert!(o.status.success(), "{}", o.describe());
                o.stdout
                    .lines()
                    .find(|l| l.starts_with("BARRIER "))
                    .unwrap_or_else(|| panic!("no BARRIER line\n{}", o.describe()))
                    .to_string()
            })
            .collect();
        println!("{ranks} ranks: {}", lines[0]);
        assert!(lines.iter().all(|l| *l == lines[0]), "{lines:?}");
        assert!(lines[0].contains("measured at start-up"), "{lines:?}");
        assert_no_leftovers(&name);
    }
}

/// Write a control-segment header by hand, as another build or a dead run
/// would have left it. The returned segment holds the creator lock.
fn fake_control(
    name: &str,
    world: usize,
    tweak: impl FnOnce(&mut layout::SegmentHeader),
) -> Segment {
    let lay = layout::ControlLayout::new(world, layout::DEFAULT_STAGING_BYTES).expect("layout");
    let seg = Segment::create_exclusive(name, lay.total_bytes).expect("create fake segment");
    assert!(seg.try_lock_byte(layout::CREATOR_LOCK_BYTE).expect("lock"));
    let mut info = layout::ControlInfo {
        staging_bytes: layout::DEFAULT_STAGING_BYTES as u64,
        mempolicy: 0,
        mempolicy_node: 0,
        digest: 0,
        reserved: [0; 5],
    };
    let mut h = layout::SegmentHeader {
        magic: layout::MAGIC,
        layout_version: layout::LAYOUT_VERSION,
        kind: layout::SegmentKind::Control as u32,
        fingerprint: layout::FINGERPRINT,
        total_bytes: lay.total_bytes as u64,
        data_offset: lay.staging as u64,
        world_size: world as u32,
        creator_pid: std::process::id(),
        created_unix_ns: 0,
        state: layout::STATE_READY,
        abort: 0,
    };
    tweak(&mut h);
    info.digest = layout::control_digest(&h, &info);
    common::write_segment_bytes(name, lay.info, bytemuck::bytes_of(&info));
    seg.write_header(&h);
    seg.atomic_u32(layout::HEADER_STATE_OFFSET)
        .store(h.state, std::sync::atomic::Ordering::Release);
    seg
}

fn attach_error(cfg: &ShmConfig) -> String {
    match ShmBackend::attach(cfg) {
        Err(e @ BackendError::InitializationFailed { .. }) => e.to_string(),
        Err(other) => panic!("expected InitializationFailed, got {other:?}"),
        Ok(_) => panic!("attach should fail"),
    }
}

fn follower_cfg(name: &str) -> ShmConfig {
    let mut cfg = ShmConfig::new(name, 1, 2);
    cfg.creator_pid = Some(std::process::id());
    cfg.attach_timeout = Duration::from_secs(2);
    cfg
}

#[test]
fn layout_version_mismatch_is_refused() {
    let name = unique_name("version");
    let fake = fake_control(&name, 2, |h| h.layout_version = layout::LAYOUT_VERSION + 1);
    let msg = attach_error(&follower_cfg(&name));
    assert!(
        msg.contains(&format!("layout version {}", layout::LAYOUT_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains("same cobre-shm build"), "{msg}");
    drop(fake);
    Segment::unlink(&name).expect("unlink");
    assert_no_leftovers(&name);
}

#[test]
fn a_damaged_header_is_refused_not_trusted() {
    // Every byte of the header outside the two live words, and every byte
    // of the job parameters: one flipped bit is refused at attach.
    let lay = layout::ControlLayout::new(2, layout::DEFAULT_STAGING_BYTES).expect("layout");
    let live = [
        layout::HEADER_STATE_OFFSET..layout::HEADER_STATE_OFFSET + 4,
        layout::HEADER_ABORT_OFFSET..layout::HEADER_ABORT_OFFSET + 4,
    ];
    let positions: Vec<usize> = (0..size_of::<layout::SegmentHeader>())
        .filter(|b| !live.iter().any(|r| r.contains(b)))
        .chain(lay.info..lay.info + size_of::<layout::ControlInfo>())
        .collect();
    let mut refused = 0;
    for at in positions.iter().copied() {
        let name = unique_name("damaged");
        let fake = fake_control(&name, 2, |_| {});
        let mut byte = [0u8];
        common::read_segment_bytes(&name, at, &mut byte);
        common::write_segment_bytes(&name, at, &[byte[0] ^ 0x10]);
        let mut cfg = follower_cfg(&name);
        cfg.attach_timeout = Duration::from_millis(300);
        if ShmBackend::attach(&cfg).is_err() {
            refused += 1;
        } else {
            panic!("a flip at header byte {at} was accepted");
        }
        drop(fake);
        Segment::unlink(&name).expect("unlink");
    }
    assert_eq!(refused, positions.len());
}

#[test]
fn fingerprint_mismatch_is_refused() {
    let name = unique_name("fingerprint");
    let fake = fake_control(&name, 2, |h| h.fingerprint ^= 1);
    let msg = attach_error(&follower_cfg(&name));
    assert!(msg.contains("fingerprint"), "{msg}");
    drop(fake);
    Segment::unlink(&name).expect("unlink");
}

#[test]
fn foreign_segment_is_refused_and_left_alone() {
    let name = unique_name("foreign");
    let seg = Segment::create_exclusive(&name, 8192).expect("create");
    common::write_segment_bytes(&name, 0, b"not a cobre segment at all");
    // Rank 0 wants to create the name: refused, nothing removed.
    let msg = attach_error(&ShmConfig::new(&name, 0, 2));
    assert!(
        msg.contains("already exists") && msg.contains("not a cobre-shm segment"),
        "{msg}"
    );
    // A follower opening it: refused at once.
    let mut cfg = ShmConfig::new(&name, 1, 2);
    cfg.attach_timeout = Duration::from_secs(5);
    let t = Instant::now();
    let msg = attach_error(&cfg);
    assert!(msg.contains("is not a cobre-shm segment"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // Still there, unchanged.
    assert_eq!(common::leftovers(&name).len(), 1);
    let head = std::fs::read(format!("/dev/shm{name}")).expect("read the segment");
    assert_eq!(&head[..26], b"not a cobre segment at all");
    drop(seg);
    Segment::unlink(&name).expect("unlink");
}

#[test]
fn stale_segment_of_a_dead_creator_is_reported() {
    let name = unique_name("stale");
    let fake = fake_control(&name, 2, |h| h.creator_pid = 1);
    drop(fake); // releases the creator lock: the creator is "dead"
    let mut cfg = ShmConfig::new(&name, 1, 2);
    cfg.attach_timeout = Duration::from_secs(2);
    let msg = attach_error(&cfg);
    assert!(
        msg.contains("stale") && msg.contains("cobre-shm clean"),
        "{msg}"
    );
    let msg = attach_error(&ShmConfig::new(&name, 0, 2));
    assert!(
        msg.contains("already exists") && msg.contains("dead"),
        "{msg}"
    );
    assert_eq!(
        common::leftovers(&name).len(),
        1,
        "nothing removed that the run did not create"
    );
    Segment::unlink(&name).expect("unlink");
}

#[test]
fn creator_dying_in_the_handshake_leaves_nothing_behind() {
    let name = unique_name("creatordies");
    let env = [
        env_of(&name, "wait_for_missing_rank"),
        vec![("COBRE_SHM_TIMEOUT_SECS", "30".into())],
    ]
    .concat();
    // Ranks 0 and 1 of a job of 3: both attach and wait for rank 2.
    let ranks = spawn(
        "rank_entry",
        2,
        &env,
        &[
            (0, "COBRE_SHM_SIZE", "3".into()),
            (1, "COBRE_SHM_SIZE", "3".into()),
        ],
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        common::leftovers(&name).len(),
        1,
        "the control segment exists while the job starts"
    );
    let killed_at = Instant::now();
    common::send_signal(ranks.pids[0], nix::sys::signal::Signal::SIGKILL).expect("sigkill");
    let out = ranks.wait(Duration::from_secs(20));
    assert!(out[1].status.success(), "{}", out[1].describe());
    assert!(
        out[1].ended.duration_since(killed_at) < Duration::from_secs(1),
        "{}",
        out[1].describe()
    );
    assert_no_leftovers(&name);
}
