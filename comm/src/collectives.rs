//! `allgatherv`, `allreduce` and `broadcast` over the staging buffers.
//!
//! Every collective step writes into staging buffer `epoch % 2`, passes one
//! barrier, and reads. A rank can only write the same buffer again two
//! barriers later, after every peer has arrived at the barrier in between,
//! that is after every peer finished reading: one barrier per step, no
//! second "done reading" barrier. Payloads larger than a buffer are moved in
//! windows, one step each.
//!
//! Broadcasts of at most `COBRE_SHM_EAGER_MAX_BYTES` are not barriers: they
//! go through the eager ring (`Barrier::eager_publish` in `sync`), so a
//! rank can be epochs ahead of a peer that still reads the last staged step.
//! Every collective that writes staging or inline areas therefore settles
//! first (`Job::settle`; free unless eager broadcasts came since the last
//! barrier), which restores the rule above.
#![forbid(unsafe_code)]

use std::mem::{align_of, size_of, size_of_val};

use cobre_comm::{CommError, ReduceOp};

use crate::error::collective_failed;
use crate::job::{Cma, Job};
use crate::os::cma;
use crate::reduce;
use crate::sync::{OpKind, Signature};
use crate::views;

/// Validate `allgatherv` arguments exactly as `cobre_comm::LocalBackend`
/// does, generalised to `size` ranks.
///
/// # Errors
/// `InvalidBufferSize` with the same fields the local backend reports.
pub(crate) fn check_allgatherv(
    rank: usize,
    size: usize,
    send_len: usize,
    recv_len: usize,
    counts: &[usize],
    displs: &[usize],
) -> Result<(), CommError> {
    let bad = |expected, actual| CommError::InvalidBufferSize {
        operation: "allgatherv",
        expected,
        actual,
    };
    if counts.len() != size {
        return Err(bad(size, counts.len()));
    }
    if displs.len() != size {
        return Err(bad(size, displs.len()));
    }
    if send_len != counts[rank] {
        return Err(bad(counts[rank], send_len));
    }
    let required = counts
        .iter()
        .zip(displs)
        .map(|(&c, &d)| d.saturating_add(c))
        .max()
        .unwrap_or(0);
    if recv_len < required {
        return Err(bad(required, recv_len));
    }
    Ok(())
}

/// Validate `allreduce` arguments exactly as `cobre_comm::LocalBackend` does.
///
/// # Errors
/// `InvalidBufferSize` with the local backend's fields.
pub(crate) fn check_allreduce(send_len: usize, recv_len: usize) -> Result<(), CommError> {
    if send_len != recv_len {
        return Err(CommError::InvalidBufferSize {
            operation: "allreduce",
            expected: send_len,
            actual: recv_len,
        });
    }
    if send_len == 0 {
        return Err(CommError::InvalidBufferSize {
            operation: "allreduce",
            expected: 1,
            actual: 0,
        });
    }
    Ok(())
}

/// Largest element alignment an eager broadcast payload honours (its offset
/// in the slot is a multiple of 16).
const EAGER_ALIGN: usize = 16;

/// From this many ranks on, a large `allreduce` chunk is reduced by
/// reduce-scatter + allgather (each rank folds 1/R of it, then copies the
/// rest) instead of every rank folding all of it: ·n element reads
/// per rank become about 2n plus one barrier, a gain from 4 ranks.
const REDUCE_SCATTER_MIN_RANKS: usize = 4;

/// Chunks smaller than this stay with one barrier (the second barrier costs
/// more than the folds it saves).
const REDUCE_SCATTER_MIN_BYTES: usize = 32 << 10;

/// Rank `rank`'s share `[lo, hi)` of `m` elements of `elem` bytes over
/// `size` ranks: contiguous, in rank order, whole hot lines each so that
/// no two ranks write one line.
fn share(m: usize, rank: usize, size: usize, elem: usize) -> (usize, usize) {
    let line = (cobre_shm_layout::HOT_LINE / elem.max(1)).max(1);
    let per = m.div_ceil(size.max(1)).div_ceil(line) * line;
    let lo = rank.saturating_mul(per).min(m);
    (lo, lo.saturating_add(per).min(m))
}

/// The arguments every rank of one `allgatherv` shares, validated: each
/// rank's block length and place in the receive buffer, and the barrier
/// signature and operation name.
#[derive(Clone, Copy)]
struct Blocks<'a> {
    counts: &'a [usize],
    displs: &'a [usize],
    sig: u32,
    op: &'static str,
}

impl Job {
    fn staging(&self, parity_epoch: u32) -> usize {
        self.control
            .layout()
            .staging_buffer(parity_epoch as usize & 1)
    }

    fn staging_bytes(&self) -> usize {
        self.control.layout().staging_bytes
    }

    /// Bytes of one rank's slot when a staging buffer is shared out among
    /// the ranks: whole hot lines, so no two ranks write one line.
    fn slot_bytes(&self) -> usize {
        (self.staging_bytes() / self.size) & !(cobre_shm_layout::HOT_LINE - 1)
    }

    /// When a payload of `len` `T`s fits an inline area: each rank's area
    /// for the next barrier, by rank (the same answer on every rank: `len`,
    /// `T` and the epoch are shared). A peer that sees a rank's arrival
    /// word holds the payload too, so a small collective moves one line per
    /// rank instead of two.
    fn inline_areas<T>(&self, len: usize) -> Option<impl Fn(usize) -> usize + '_> {
        let fits = len.saturating_mul(size_of::<T>()) <= cobre_shm_layout::INLINE_BYTES
            && std::mem::align_of::<T>() <= 8;
        let parity = self.epoch() as usize & 1;
        let layout = self.control.layout();
        fits.then_some(move |rank| layout.inline_area(rank, parity))
    }

    /// Write a broadcast root's `src` into the staging buffers at `offset`:
    /// with non-temporal stores when its size is in this rank's streaming
    /// range (the receivers then read it from memory instead of out of the
    /// root's cache), with plain ones otherwise. Only broadcasts: when every
    /// rank writes and reads at once (allgatherv, allreduce) streaming was
    /// level up to 128 KiB and slower from 256 KiB (`benches/README.md`,
    /// "Streaming stores").
    fn stage_as_root<T: Copy>(&self, offset: usize, src: &[T]) {
        let seg = self.control.segment();
        if self.stream.contains(&size_of_val(src)) {
            views::put_streaming(seg, offset, src);
        } else {
            views::put(seg, offset, src);
        }
    }

    /// Elements of `T` per window.
    fn window<T>(&self, op: &'static str) -> Result<usize, CommError> {
        let per = self.staging_bytes() / size_of::<T>().max(1);
        if per == 0 {
            return Err(collective_failed(
                op,
                format!(
                    "element type {} ({} bytes) is larger than the {}-byte staging buffer; \
                     raise COBRE_SHM_STAGING_BYTES",
                    std::any::type_name::<T>(),
                    size_of::<T>(),
                    self.staging_bytes()
                ),
            ));
        }
        Ok(per)
    }

    pub(crate) fn allgatherv<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<(), CommError> {
        check_allgatherv(self.rank, self.size, send.len(), recv.len(), counts, displs)?;
        let mut sig = Signature::new(OpKind::Allgatherv).element::<T>();
        for &c in counts {
            sig = sig.mix(c as u64);
        }
        let blocks = Blocks {
            counts,
            displs,
            sig: sig.finish(),
            op: "allgatherv",
        };
        self.gather(send, recv, blocks, true)
    }

    /// Every rank's `word`, in rank order, through one barrier with `sig`.
    pub(crate) fn exchange_word(
        &self,
        word: u64,
        sig: u32,
        op: &'static str,
    ) -> Result<Vec<u64>, CommError> {
        Ok(self
            .exchange_words([word], sig, op)?
            .into_iter()
            .map(|[w]| w)
            .collect())
    }

    /// Every rank's `words`, in rank order, through one barrier with `sig`.
    pub(crate) fn exchange_words<const N: usize>(
        &self,
        words: [u64; N],
        sig: u32,
        op: &'static str,
    ) -> Result<Vec<[u64; N]>, CommError> {
        let mut out = vec![0u64; N * self.size];
        let counts = vec![N; self.size];
        let displs: Vec<usize> = (0..self.size).map(|r| r * N).collect();
        // Always staged: the single-copy path itself exchanges addresses here.
        let blocks = Blocks {
            counts: &counts,
            displs: &displs,
            sig,
            op,
        };
        self.gather(&words, &mut out, blocks, false)?;
        Ok(out
            .chunks_exact(N)
            .map(|c| {
                let mut w = [0u64; N];
                w.copy_from_slice(c);
                w
            })
            .collect())
    }

    /// Whether a message of `bytes` moves by cross-memory reads (the same
    /// answer on every rank: the threshold and `bytes` are shared).
    fn single_copy(&self, bytes: usize) -> Option<&Cma> {
        self.cma.as_ref().filter(|c| bytes >= c.min_bytes)
    }

    /// The `allgatherv` protocol on validated arguments; cross-memory reads
    /// only when `single_copy_allowed`.
    fn gather<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        b: Blocks<'_>,
        single_copy_allowed: bool,
    ) -> Result<(), CommError> {
        let (counts, displs) = (b.counts, b.displs);
        let me = self.rank;
        recv[displs[me]..displs[me] + counts[me]].copy_from_slice(send);
        self.settle(b.op)?;
        let total: usize = counts.iter().sum();
        if self.size == 1 || total == 0 || size_of::<T>() == 0 {
            // Nothing to move (decided from arguments every rank shares):
            // still an implicit barrier.
            return self.barrier(b.sig, b.op);
        }
        let largest = counts.iter().copied().max().unwrap_or(0);
        if let Some(at) = self.inline_areas::<T>(largest) {
            return self.gather_inline(send, recv, b, at);
        }
        let cma = self
            .single_copy(total.saturating_mul(size_of::<T>()))
            .filter(|_| single_copy_allowed);
        match cma {
            Some(cma) => self.gather_single_copy(cma, send, recv, b),
            None => self.gather_staged(send, recv, b),
        }
    }

    /// `allgatherv` of blocks that each fit an inline area (rank `r`'s at
    /// `at(r)`): every rank publishes its block beside its arrival word, and
    /// peers copy it from the line they read to see the arrival.
    fn gather_inline<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        b: Blocks<'_>,
        at: impl Fn(usize) -> usize,
    ) -> Result<(), CommError> {
        let seg = self.control.segment();
        views::put(seg, at(self.rank), send);
        self.barrier(b.sig, b.op)?;
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let d = b.displs[r];
            views::get(seg, at(r), &mut recv[d..d + b.counts[r]]);
        }
        Ok(())
    }

    /// `allgatherv` by cross-memory reads: the ranks exchange the addresses
    /// of their send buffers (one barrier), each reads every peer's block
    /// straight into its receive buffer (one copy, all ranks in parallel),
    /// and a second barrier keeps every send buffer alive until all reads
    /// are done.
    fn gather_single_copy<T: Copy + 'static>(
        &self,
        cma: &Cma,
        send: &[T],
        recv: &mut [T],
        b: Blocks<'_>,
    ) -> Result<(), CommError> {
        let Blocks {
            counts,
            displs,
            sig,
            op,
        } = b;
        let addrs = self.exchange_word(send.as_ptr() as u64, sig, op)?;
        let elem = size_of::<T>();
        let bytes = views::bytes_mut(recv);
        let mut failure = None;
        for r in (1..self.size).map(|k| (self.rank + k) % self.size) {
            let (lo, n) = (displs[r] * elem, counts[r] * elem);
            if n == 0 || failure.is_some() {
                continue;
            }
            if let Err(e) = cma::read(cma.pids[r], addrs[r], &mut bytes[lo..lo + n]) {
                failure = Some(collective_failed(
                    op,
                    format!("reading rank {r}'s block (process_vm_readv): {e}"),
                ));
            }
        }
        self.barrier(sig, op)?;
        failure.map_or(Ok(()), Err)
    }

    /// `allgatherv` through the staging buffers, window by window (more
    /// than one rank, something to move: [`Self::gather`] checked).
    fn gather_staged<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        b: Blocks<'_>,
    ) -> Result<(), CommError> {
        let Blocks {
            counts,
            displs,
            sig,
            op,
        } = b;
        let me = self.rank;
        let total: usize = counts.iter().sum();
        let elem = size_of::<T>();
        let window = self.window::<T>(op)?;
        if total > window && self.slot_bytes() >= elem {
            return self.gather_slotted(send, recv, b);
        }
        let my_start: usize = counts[..me].iter().sum();
        let my_end = my_start + counts[me];
        let mut w0 = 0;
        while w0 < total {
            let w1 = (w0 + window).min(total);
            let buf = self.staging(self.epoch());
            let seg = self.control.segment();
            let (lo, hi) = (my_start.max(w0), my_end.min(w1));
            if lo < hi {
                views::put(
                    seg,
                    buf + (lo - w0) * elem,
                    &send[lo - my_start..hi - my_start],
                );
            }
            self.barrier(sig, op)?;
            let mut start = 0;
            for (r, (&c, &d)) in counts.iter().zip(displs).enumerate() {
                let (lo, hi) = (start.max(w0), (start + c).min(w1));
                if r != me && lo < hi {
                    views::get(
                        seg,
                        buf + (lo - w0) * elem,
                        &mut recv[d + lo - start..d + hi - start],
                    );
                }
                start += c;
            }
            w0 = w1;
        }
        Ok(())
    }

    /// `allgatherv` larger than a staging buffer: the buffer is cut into
    /// one [`Self::slot_bytes`] slot per rank, and in every step each
    /// rank publishes the next piece of its own block in its slot and reads
    /// the peers' pieces, so all ranks copy at once in every step instead of
    /// waiting for the window that holds their block.
    fn gather_slotted<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        b: Blocks<'_>,
    ) -> Result<(), CommError> {
        let (counts, displs) = (b.counts, b.displs);
        let slot_bytes = self.slot_bytes();
        let slot = slot_bytes / size_of::<T>();
        let steps = counts.iter().map(|c| c.div_ceil(slot)).max().unwrap_or(0);
        let piece = |count: usize, k: usize| {
            let lo = k.saturating_mul(slot).min(count);
            (lo, lo.saturating_add(slot).min(count))
        };
        for k in 0..steps {
            let buf = self.staging(self.epoch());
            let seg = self.control.segment();
            let (lo, hi) = piece(counts[self.rank], k);
            if lo < hi {
                views::put(seg, buf + self.rank * slot_bytes, &send[lo..hi]);
            }
            self.barrier(b.sig, b.op)?;
            for r in (0..self.size).filter(|&r| r != self.rank) {
                let (lo, hi) = piece(counts[r], k);
                if lo < hi {
                    let at = displs[r];
                    views::get(seg, buf + r * slot_bytes, &mut recv[at + lo..at + hi]);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn broadcast<T: Copy + 'static>(
        &self,
        buf: &mut [T],
        root: usize,
    ) -> Result<(), CommError> {
        const OP: &str = "broadcast";
        if root >= self.size {
            return Err(CommError::InvalidRoot {
                root,
                size: self.size,
            });
        }
        let moves = !buf.is_empty() && size_of::<T>() != 0 && self.size > 1;
        let eager = moves && size_of_val(buf) <= self.eager_max && align_of::<T>() <= EAGER_ALIGN;
        // The path is in the signature: ranks that disagree on it (another
        // `COBRE_SHM_EAGER_MAX_BYTES`) stop with a mismatch.
        let sig = Signature::new(OpKind::Broadcast)
            .element::<T>()
            .mix(buf.len() as u64)
            .mix(root as u64)
            .mix(u64::from(eager))
            .finish();
        if !moves {
            return self.barrier(sig, OP);
        }
        if eager {
            return self.broadcast_eager(buf, root, sig);
        }
        self.settle(OP)?;
        // No single-copy path: the staging buffers' two copies stay in
        // cache and were faster than cross-memory reads at every size
        // measured (benches/README.md, "Collectives"). A payload that fits
        // the root's inline area goes there instead, in one step.
        let window = self.window::<T>(OP)?;
        for chunk in buf.chunks_mut(window) {
            let off = match self.inline_areas::<T>(chunk.len()) {
                Some(at) => at(root),
                None => self.staging(self.epoch()),
            };
            if self.rank == root {
                self.stage_as_root(off, chunk);
            }
            self.barrier(sig, OP)?;
            if self.rank != root {
                views::get(self.control.segment(), off, chunk);
            }
        }
        Ok(())
    }

    /// A broadcast small enough for a slot of the eager ring: the root
    /// publishes it there and returns, the others wait for that slot only
    /// (see [`crate::sync::Barrier::eager_publish`]).
    fn broadcast_eager<T: Copy + 'static>(
        &self,
        buf: &mut [T],
        root: usize,
        sig: u32,
    ) -> Result<(), CommError> {
        const OP: &str = "broadcast";
        let seg = self.control.segment();
        if self.rank == root {
            self.sync
                .eager_publish(&self.control, sig, OP, |at| views::put(seg, at, buf))?;
        } else {
            self.sync
                .eager_receive(&self.control, root, sig, OP, |at| views::get(seg, at, buf))?;
        }
        Ok(())
    }

    pub(crate) fn allreduce<T: Copy + 'static>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        const OP: &str = "allreduce";
        check_allreduce(send.len(), recv.len())?;
        self.settle(OP)?;
        let reducer = reduce::Reducer::<T>::new(op).map_err(|msg| collective_failed(OP, msg))?;
        let sig = Signature::new(OpKind::Allreduce)
            .element::<T>()
            .mix(send.len() as u64)
            .mix(op as u64)
            .finish();
        if let Some(at) = self.inline_areas::<T>(send.len()) {
            views::put(self.control.segment(), at(self.rank), send);
            self.barrier(sig, OP)?;
            self.fold_in_rank_order(&reducer, recv, send, at);
            return Ok(());
        }
        let elem = size_of::<T>();
        let per_rank = self.slot_bytes();
        let chunk = per_rank / elem;
        if chunk == 0 {
            return Err(collective_failed(
                OP,
                format!(
                    "{} ranks do not fit one {}-byte slot each in the {}-byte staging buffer; \
                     raise COBRE_SHM_STAGING_BYTES",
                    self.size,
                    cobre_shm_layout::HOT_LINE,
                    self.staging_bytes()
                ),
            ));
        }
        let mut i0 = 0;
        while i0 < send.len() {
            let i1 = (i0 + chunk).min(send.len());
            let buf = self.staging(self.epoch());
            let seg = self.control.segment();
            views::put(seg, buf + self.rank * per_rank, &send[i0..i1]);
            self.barrier(sig, OP)?;
            // A whole slot always qualifies (small staging buffers in tests).
            let scatter = self.size >= REDUCE_SCATTER_MIN_RANKS
                && (i1 - i0) * elem >= REDUCE_SCATTER_MIN_BYTES.min(chunk * elem);
            let (lo, hi) = if scatter {
                share(i1 - i0, self.rank, self.size, elem)
            } else {
                (0, i1 - i0)
            };
            let out = &mut recv[i0 + lo..i0 + hi];
            let mine = &send[i0 + lo..i0 + hi];
            self.fold_in_rank_order(&reducer, out, mine, |r| buf + r * per_rank + lo * elem);
            if scatter {
                self.share_reduced(&mut recv[i0..i1], (lo, hi), sig)?;
            }
            i0 = i1;
        }
        Ok(())
    }

    /// Fold every rank's contribution into `out`: this rank's is `mine`,
    /// rank `r`'s lies at offset `at(r)` of the control segment. Every
    /// element is folded in rank order 0, 1, …, R-1, whoever folds it, so
    /// the result does not depend on the path or the chunk.
    fn fold_in_rank_order<T: Copy + 'static>(
        &self,
        reducer: &reduce::Reducer<T>,
        out: &mut [T],
        mine: &[T],
        at: impl Fn(usize) -> usize,
    ) {
        let seg = self.control.segment();
        for r in 0..self.size {
            if r == self.rank {
                if r == 0 {
                    out.copy_from_slice(mine);
                } else {
                    reducer.fold(out, mine);
                }
            } else if r == 0 {
                views::get(seg, at(r), out);
            } else {
                reducer.fold_shared(out, seg, at(r));
            }
        }
    }

    /// Reduce-scatter's second half: publish this rank's reduced share
    /// `range` of `chunk` in the other staging buffer (the one of the epoch
    /// after the contributions' barrier, which nobody reads any more), pass
    /// one barrier, and copy the other ranks' shares.
    fn share_reduced<T: Copy + 'static>(
        &self,
        chunk: &mut [T],
        (lo, hi): (usize, usize),
        sig: u32,
    ) -> Result<(), CommError> {
        let elem = size_of::<T>();
        let out = self.staging(self.epoch());
        let seg = self.control.segment();
        views::put(seg, out + lo * elem, &chunk[lo..hi]);
        self.barrier(sig, "allreduce")?;
        views::get(seg, out, &mut chunk[..lo]);
        let m = chunk.len();
        views::get(seg, out + hi * elem, &mut chunk[hi..m]);
        Ok(())
    }
}

/// The barrier and staging protocols raced between threads standing in for
/// ranks, over a control block in heap memory. Under Miri
/// (`cargo +nightly miri test -p cobre-shm protocol`) this checks that every
/// shared access is ordered: a plain read of staged bytes that raced with a
/// peer's write would be reported as a data race.
#[cfg(test)]
mod protocol_tests {
    use std::sync::Arc;

    use cobre_comm::ReduceOp;

    use crate::config::BarrierShape;
    use crate::control::Control;
    use crate::job::Job;
    use crate::sync::{OpKind, Signature};

    fn run_ranks(size: usize, body: fn(&Job)) {
        run_ranks_with(size, BarrierShape::Flat, body);
    }

    fn run_ranks_with(size: usize, shape: BarrierShape, body: fn(&Job)) {
        let ctl = Control::in_memory(size, cobre_shm_layout::PAGE);
        let handles: Vec<_> = (0..size)
            .map(|r| {
                let job = Arc::new(Job::in_memory(ctl.share(), r, size, shape));
                std::thread::spawn(move || body(&job))
            })
            .collect();
        for h in handles {
            h.join().expect("rank thread");
        }
    }

    fn rounds() -> usize {
        if cfg!(miri) {
            3
        } else {
            200
        }
    }

    /// Reduce-scatter (4 ranks, whole-slot chunks) folds every element in
    /// rank order: the result equals the sequential fold, bit for bit.
    #[test]
    fn protocol_reduce_scatter_is_rank_ordered() {
        run_ranks(4, |job| {
            let (r, n) = (job.rank, job.size);
            let v = |q: usize, i: usize| {
                ((q * 7919 + i * 104_729) % 1000) as f64 * 1e-3 + 1e10 * (q % 2) as f64
            };
            for round in 0..rounds() {
                let len = 700 + round;
                let send: Vec<f64> = (0..len).map(|i| v(r, i)).collect();
                let mut sum = vec![0.0; len];
                job.allreduce(&send, &mut sum, ReduceOp::Sum)
                    .expect("allreduce");
                for (i, s) in sum.iter().enumerate() {
                    let want = (1..n).fold(v(0, i), |a, q| a + v(q, i));
                    assert_eq!(s.to_bits(), want.to_bits(), "element {i}");
                }
            }
        });
    }

    /// Payloads small enough for the inline areas beside the arrival words
    /// (up to 24 bytes), alternating with staged ones so both parities of
    /// both paths follow each other: every value arrives intact.
    #[test]
    fn protocol_inline_payloads_interleave_with_staged_ones() {
        run_ranks(3, |job| {
            let (r, n) = (job.rank, job.size);
            for round in 0..rounds() {
                let len = 1 + round % 3 + if round % 4 == 3 { 40 } else { 0 };
                let send: Vec<f64> = (0..len).map(|i| (r * 10 + i + round) as f64).collect();
                let mut sum = vec![0.0; len];
                job.allreduce(&send, &mut sum, ReduceOp::Sum)
                    .expect("allreduce");
                for (i, s) in sum.iter().enumerate() {
                    let want: f64 = (0..n).map(|q| (q * 10 + i + round) as f64).sum();
                    assert_eq!(*s, want);
                }
                let counts: Vec<usize> = (0..n).map(|q| (q + round) % 4).collect();
                allgatherv_checked(job, &counts, round);
                let root = round % n;
                let mut buf: Vec<u16> =
                    vec![if r == root { round as u16 } else { 0 }; 1 + round % 12];
                job.broadcast(&mut buf, root).expect("broadcast");
                assert!(buf.iter().all(|&v| v == round as u16));
            }
        });
    }

    #[test]
    fn protocol_barrier_gather_reduce_broadcast() {
        run_ranks(3, exercise);
    }

    /// The tree barrier at sizes that leave parents with 1–4 children over
    /// one to three levels (and 1 rank: no tree at all) passes the same
    /// exchange as the flat one.
    #[test]
    fn protocol_tree_barrier_at_every_shape() {
        let sizes: &[usize] = if cfg!(miri) {
            &[2, 6]
        } else {
            &[1, 2, 5, 6, 9, 17, 21, 22]
        };
        for &size in sizes {
            run_ranks_with(size, BarrierShape::Tree, exercise);
        }
    }

    /// Both shapes in turn, switched by every rank at the same epochs in
    /// an irregular pattern (flat→tree, tree→flat, several of one in a
    /// row), between and inside rounds of the exchange: every value
    /// arrives intact, so a switch never lets a rank read staging a peer
    /// still writes or pass a barrier early.
    #[test]
    fn protocol_barrier_shape_switches_between_collectives() {
        let sizes: &[usize] = if cfg!(miri) { &[3] } else { &[2, 5, 6, 17, 22] };
        for &size in sizes {
            run_ranks(size, |job| {
                for k in 0..if cfg!(miri) { 4 } else { 12 } {
                    job.sync.set_tree((k * 5 + k / 3) % 3 == 0);
                    exercise_for(job, 2, |round| {
                        job.sync.set_tree((k + round) % 2 == 0);
                    });
                }
            });
        }
    }

    /// The start-up measurement on threads: every rank ends on the same
    /// shape and timings (rank 0's), both timings are positive, and the
    /// exchange then passes at that shape.
    #[test]
    fn protocol_measured_shape_is_agreed_by_every_rank() {
        use std::sync::Mutex;
        static SEEN: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        let sizes: &[usize] = if cfg!(miri) { &[2] } else { &[1, 3, 9] };
        for &size in sizes {
            SEEN.lock().expect("lock").clear();
            run_ranks(size, |job| {
                let choice = job.measure_barrier_shapes().expect("measure");
                let (flat, tree) = choice.measured.expect("timings");
                assert!(flat > 0.0 && tree > 0.0, "{choice}");
                assert_eq!(choice.tree, tree < flat, "{choice}");
                assert_eq!(job.sync.is_tree(), choice.tree);
                SEEN.lock()
                    .expect("lock")
                    .push((job.rank, format!("{choice}")));
                exercise(job);
            });
            let seen = SEEN.lock().expect("lock");
            assert_eq!(seen.len(), size);
            assert!(seen.iter().all(|(_, c)| *c == seen[0].1), "{seen:?}");
        }
    }

    /// Bursts of eager broadcasts — long enough to wrap the ring twice,
    /// from one root that runs ahead or from a moving one, of 1–4096 bytes
    /// of three element types — between staged collectives that reuse the
    /// staging and inline areas, while one rank lags behind: every value
    /// arrives intact, so a root never overwrites a slot a peer still reads
    /// and a rank that ran ahead settles before it writes staging again.
    #[test]
    fn protocol_eager_broadcasts_run_ahead_between_staged_collectives() {
        let cases: &[(usize, BarrierShape)] = if cfg!(miri) {
            &[(3, BarrierShape::Flat)]
        } else {
            &[
                (2, BarrierShape::Flat),
                (3, BarrierShape::Flat),
                (5, BarrierShape::Flat),
                (6, BarrierShape::Tree),
            ]
        };
        for &(size, shape) in cases {
            run_ranks_with(size, shape, eager_bursts);
        }
    }

    fn eager_bursts(job: &Job) {
        let n = job.size;
        let ring = cobre_shm_layout::EAGER_SLOTS;
        for round in 0..if cfg!(miri) { 4 } else { 24 } {
            // Long bursts wrap the ring twice with one root running ahead;
            // short ones of odd and even length put the collectives after
            // them on either staging parity.
            let long = if round % 3 == 0 {
                2 * ring + 3
            } else {
                1 + round % 4
            };
            eager_burst(job, round, long, |k| {
                if round % 2 == 0 {
                    round % n
                } else {
                    (k + round) % n
                }
            });
            // Each collective below is read by the lagging rank while the
            // others, after a short burst whose root is not that rank, write
            // the same areas again: only settling orders the two.
            let root = |_| 0;
            allreduce_inline(job, round);
            eager_burst(job, round, 1 + round % 2, root);
            allreduce_inline(job, round + 1);
            eager_burst(job, round, 2 - round % 2, root);
            allgatherv_staged(job, round);
            eager_burst(job, round, 1 + round % 2, root);
            allgatherv_staged(job, round + 1);
            if round % 4 == 1 {
                job.barrier(Signature::new(OpKind::Barrier).finish(), "barrier")
                    .expect("barrier");
            }
        }
    }

    /// `count` broadcasts from `root(k)` (eager up to the job's limit) of
    /// 1–4096 bytes and three element types, checked; the last rank lags
    /// now and then.
    fn eager_burst(job: &Job, round: usize, count: usize, root: impl Fn(usize) -> usize) {
        let (r, n) = (job.rank, job.size);
        for k in 0..count {
            let root = root(k);
            let tag = (round * 1000 + k) as u64;
            if r == n - 1 && k % 7 == 0 {
                std::thread::yield_now();
            }
            match k % 3 {
                0 => {
                    let len = 1 + (k + round) % 32;
                    let mut b = vec![if r == root { tag } else { 0 }; len];
                    job.broadcast(&mut b, root).expect("broadcast u64");
                    assert!(b.iter().all(|&v| v == tag), "round {round} k {k}");
                }
                1 => {
                    let len = 1 + (k * 97 + round * 13) % cobre_shm_layout::EAGER_BYTES;
                    let byte = |i: usize| (tag as usize + i) as u8;
                    let mut b: Vec<u8> = (0..len)
                        .map(|i| if r == root { byte(i) } else { 0 })
                        .collect();
                    job.broadcast(&mut b, root).expect("broadcast u8");
                    assert!(b.iter().enumerate().all(|(i, &v)| v == byte(i)));
                }
                _ => {
                    let v = u128::from(tag) << 64 | 7;
                    let mut b = [if r == root { v } else { 0 }; 3];
                    job.broadcast(&mut b, root).expect("broadcast u128");
                    assert!(b.iter().all(|&x| x == v), "round {round} k {k}");
                }
            }
        }
    }

    /// An allreduce through the inline areas, checked.
    fn allreduce_inline(job: &Job, round: usize) {
        let (r, n) = (job.rank, job.size);
        let send = [(r + round) as f64, 1.0];
        let mut sum = [0.0; 2];
        job.allreduce(&send, &mut sum, ReduceOp::Sum)
            .expect("allreduce");
        let want: f64 = (0..n).map(|q| (q + round) as f64).sum();
        assert_eq!(sum, [want, n as f64]);
    }

    /// An allgatherv through a staging buffer, checked.
    fn allgatherv_staged(job: &Job, round: usize) {
        let counts: Vec<usize> = (0..job.size).map(|q| 40 + q).collect();
        allgatherv_checked(job, &counts, round);
    }

    /// An allgatherv of `counts[q]` values from each rank `q`, every value
    /// checked on every rank.
    fn allgatherv_checked(job: &Job, counts: &[usize], round: usize) {
        let (r, n) = (job.rank, job.size);
        let displs = cobre_comm::prefix_displs(counts);
        let mine: Vec<u64> = (0..counts[r])
            .map(|i| (r * 100 + i + round) as u64)
            .collect();
        let mut all = vec![0u64; counts.iter().sum()];
        job.allgatherv(&mine, &mut all, counts, &displs)
            .expect("allgatherv");
        for q in 0..n {
            for i in 0..counts[q] {
                assert_eq!(all[displs[q] + i], (q * 100 + i + round) as u64);
            }
        }
    }

    /// A rank that runs an eager broadcast while its peers call allreduce
    /// at the same step: every rank gets a collective mismatch (the root at
    /// its next collective), in both barrier shapes.
    #[test]
    fn protocol_eager_broadcast_against_allreduce_is_a_mismatch() {
        let cases: &[(usize, BarrierShape)] = if cfg!(miri) {
            &[(2, BarrierShape::Flat)]
        } else {
            &[
                (2, BarrierShape::Flat),
                (3, BarrierShape::Flat),
                (6, BarrierShape::Tree),
            ]
        };
        for &(size, shape) in cases {
            run_ranks_with(size, shape, |job| {
                let err = if job.rank == 1 {
                    job.broadcast(&mut [1u64], 1)
                        .and_then(|()| {
                            job.barrier(Signature::new(OpKind::Barrier).finish(), "barrier")
                        })
                        .expect_err("the others called allreduce")
                } else {
                    job.allreduce(&[1.0f64], &mut [0.0], ReduceOp::Sum)
                        .expect_err("rank 1 called broadcast")
                };
                assert!(err.to_string().contains("collective mismatch"), "{err}");
            });
        }
    }

    /// Two ranks that both broadcast as root at the same step: a mismatch
    /// for everyone, and no rank returns the other root's payload as its own.
    #[test]
    fn protocol_two_eager_roots_are_a_mismatch() {
        run_ranks(3, |job| {
            let root = if job.rank == 2 { 0 } else { job.rank };
            let mut b = [job.rank as u64 + 10];
            let res = job
                .broadcast(&mut b, root)
                .and_then(|()| job.barrier(Signature::new(OpKind::Barrier).finish(), "barrier"));
            let err = res.expect_err("ranks 0 and 1 both claimed the broadcast");
            assert!(err.to_string().contains("collective mismatch"), "{err}");
            // Rank 1's value reached neither rank 0 nor its receiver, rank
            // 0's never reached rank 1.
            let other_root = if job.rank == 1 { 10 } else { 11 };
            assert_ne!(b[0], other_root, "rank {}", job.rank);
        });
    }

    /// A second thread of one rank entering a collective while the first
    /// waits inside one is refused before it touches anything shared; the
    /// first completes, and the rank's next calls work.
    #[test]
    fn protocol_a_second_thread_inside_a_collective_is_refused() {
        use std::sync::mpsc::channel;
        let ctl = Control::in_memory(2, cobre_shm_layout::PAGE);
        let jobs: Vec<Arc<Job>> = (0..2)
            .map(|r| Arc::new(Job::in_memory(ctl.share(), r, 2, BarrierShape::Flat)))
            .collect();
        let barrier = |job: &Job| {
            job.serial("barrier", || {
                job.barrier(Signature::new(OpKind::Barrier).finish(), "barrier")
            })
        };
        let (inside_tx, inside_rx) = channel();
        let (go_tx, go_rx) = channel::<()>();
        let late = Arc::clone(&jobs[1]);
        let rank1 = std::thread::spawn(move || {
            go_rx.recv().expect("go");
            barrier(&late).expect("rank 1's barrier");
            barrier(&late).expect("rank 1's second barrier");
        });
        let first = Arc::clone(&jobs[0]);
        let waiting = std::thread::spawn(move || {
            first.serial("barrier", || {
                inside_tx.send(()).expect("inside");
                first.barrier(Signature::new(OpKind::Barrier).finish(), "barrier")
            })
        });
        inside_rx.recv().expect("the first thread is inside");
        // Without the refusal this call would enter the protocol beside the
        // first one and wait for a rank 1 allreduce that never comes.
        let (done_tx, done_rx) = channel();
        let second = Arc::clone(&jobs[0]);
        std::thread::spawn(move || {
            let res = second.serial("allreduce", || {
                second.allreduce(&[1.0f64], &mut [0.0], ReduceOp::Sum)
            });
            let _ = done_tx.send(res);
        });
        let err = done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the second call returns at once")
            .expect_err("the second thread's call is refused");
        assert!(err.to_string().contains("must not overlap"), "{err}");
        go_tx.send(()).expect("go");
        waiting
            .join()
            .expect("first thread")
            .expect("the first barrier completes");
        barrier(&jobs[0]).expect("rank 0's next barrier");
        rank1.join().expect("rank 1");
    }

    /// Barriers, allgatherv of uneven blocks across several windows (a rank
    /// sending nothing every other round), allreduce and broadcast from a
    /// moving root, checked value by value on every rank.
    fn exercise(job: &Job) {
        exercise_for(job, rounds(), |_| {});
    }

    /// [`exercise`] for `rounds` rounds, calling `between` after each
    /// round's barrier.
    fn exercise_for(job: &Job, rounds: usize, between: impl Fn(usize)) {
        let (r, n) = (job.rank, job.size);
        for round in 0..rounds {
            job.barrier(Signature::new(OpKind::Barrier).finish(), "barrier")
                .expect("barrier");
            between(round);
            // Up to 700 u64 per rank: 2100 × 8 bytes spans several 4 KiB
            // windows; every other round rank 1 sends nothing.
            let counts: Vec<usize> = (0..n)
                .map(|q| {
                    if q == 1 && round % 2 == 1 {
                        0
                    } else {
                        1 + (q * 349 + round) % 700
                    }
                })
                .collect();
            let displs = cobre_comm::prefix_displs(&counts);
            let mine: Vec<u64> = (0..counts[r]).map(|i| (r * 1_000_000 + i) as u64).collect();
            let mut all = vec![0u64; counts.iter().sum()];
            job.allgatherv(&mine, &mut all, &counts, &displs)
                .expect("allgatherv");
            for q in 0..n {
                for i in 0..counts[q] {
                    assert_eq!(all[displs[q] + i], (q * 1_000_000 + i) as u64);
                }
            }
            let send: Vec<f64> = (0..600).map(|i| (r + i + round) as f64).collect();
            let mut sum = vec![0.0; 600];
            job.allreduce(&send, &mut sum, ReduceOp::Sum)
                .expect("allreduce");
            for (i, s) in sum.iter().enumerate() {
                let want: f64 = (0..n).map(|q| (q + i + round) as f64).sum();
                assert_eq!(*s, want);
            }
            let mut buf: Vec<u32> = if r == round % n {
                (0..1500).map(|i| i as u32 + round as u32).collect()
            } else {
                vec![0; 1500]
            };
            job.broadcast(&mut buf, round % n).expect("broadcast");
            assert!(buf
                .iter()
                .enumerate()
                .all(|(i, &v)| v == i as u32 + round as u32));
        }
    }
}
