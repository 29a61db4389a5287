//! Developer tools: the end-to-end demo, test fixtures, synthetic bulk data and the benchmarks.
//! Nothing in the product depends on this folder.

pub mod bench;
pub mod bench_store;
pub mod bench_web;
pub mod demo;
pub mod demo_captions;
pub mod fixtures;
pub mod synthetic;
