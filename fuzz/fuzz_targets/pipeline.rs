//! Fuzz target: see `vxtap_suite::fuzz_checks::pipeline` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxtap_suite::fuzz_checks::pipeline(data));
