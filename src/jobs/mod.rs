//! The job system: long-running work and the workers that run it. Today the forgery queue
//! ([`forge`]): items claimed under `FOR UPDATE SKIP LOCKED` and held under leases.

pub mod forge;
