//! Fuzz target: see `vxtap_suite::fuzz_checks::switch_ops` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxtap_suite::fuzz_checks::switch_ops(data));
