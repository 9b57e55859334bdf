//! What each fuzz target does with one input, as plain functions: the libFuzzer entries in
//! `fuzz/fuzz_targets/` call them under coverage-guided fuzzing (`cargo xtask fuzz`), and
//! `tests/replay.rs` runs them over every checked-in seed, the minimized corpora and any local
//! crash reproducer as part of the ordinary test suite. A panic is the finding in both.

pub mod admission;
pub mod cel;
pub mod flow_config;
pub mod http_body;
pub mod link_path;
pub mod reload;
pub mod upstream_answer;
