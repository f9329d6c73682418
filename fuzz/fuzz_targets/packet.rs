//! The scanner's receive path on raw packets, and probe/reply/ICMP round trips; invariants in
//! `portwarden_scan::fuzzing::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portwarden_scan::fuzzing::packet(data));
