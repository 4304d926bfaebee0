//! The data every rank reads, once per node under shm: append-only lanes of
//! a communicator region (`store`), the stage-LP cache (`cache`), and the
//! cut pool with its trial points (`pool`).
#![forbid(unsafe_code)]

pub mod cache;
pub mod pool;
pub mod store;
