//! Solving stage LPs on one worker thread: a HiGHS workspace with its
//! recovery ladder (`workspace`) and the stored bases it warm-starts from
//! (`basis`).
#![forbid(unsafe_code)]

pub mod basis;
pub mod workspace;
