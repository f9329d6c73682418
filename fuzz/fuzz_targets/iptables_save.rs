//! `iptables-save` output through the parser, printed back and parsed again, then planned
//! against; invariants in `portwarden_netfilter::save::fuzz_check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portwarden_netfilter::save::fuzz_check(data));
