//! libFuzzer entry for [`fiso_fuzz_targets::upstream_answer`] (what it exercises and its input
//! format are documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fiso_fuzz_targets::upstream_answer::run(data));
