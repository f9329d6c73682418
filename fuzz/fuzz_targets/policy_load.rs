//! One policy file's bytes through the loader and validator (`portwarden validate FILE`), then
//! intent compilation; invariants in `portwarden_policy::fuzzing::policy_load`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portwarden_policy::fuzzing::policy_load(data));
