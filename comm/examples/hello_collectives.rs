//! Every rank reports itself, then the ranks agree on a sum, gather their
//! pids and read one region the leader filled. Run under the launcher:
//! `cobre-shm -p 4 -- target/release/examples/hello_collectives`.

use cobre_comm::{Communicator, ReduceOp, SharedMemoryProvider, SharedRegion};

fn main() {
    let comm = match cobre_shm::create_communicator() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hello_collectives: {e}");
            std::process::exit(2);
        }
    };
    let (r, n) = (comm.rank(), comm.size());
    let run = || -> Result<(), cobre_comm::CommError> {
        let mut total = [0u64];
        comm.allreduce(&[r as u64 + 1], &mut total, ReduceOp::Sum)?;
        let mut pids = vec![0u32; n];
        let counts = vec![1; n];
        let displs: Vec<usize> = (0..n).collect();
        comm.allgatherv(&[std::process::id()], &mut pids, &counts, &displs)?;
        // One copy per node: only the leader gets a writable slice (followers
        // get an empty one); everyone reads after the fence.
        let mut region = comm.create_shared_region::<u64>(n)?;
        for (i, slot) in region.as_mut_slice().iter_mut().enumerate() {
            *slot = (i as u64 + 1) * 100;
        }
        region.fence()?;
        println!(
            "rank {r} of {n} ({}): sum of 1..={n} = {}, pids {pids:?}, shared region {:?}",
            comm.backend_name(),
            total[0],
            region.as_slice()
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("rank {r}: {e}");
        std::process::exit(1);
    }
}
