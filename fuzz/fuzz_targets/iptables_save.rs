//! `iptables-save` output through the parser, printed back and parsed again, then planned
//! against; invariants in `portwarden_netfilter::fuzzing::iptables_save`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portwarden_netfilter::fuzzing::iptables_save(data));
