//! Both port-list parsers on the same text: the policy syntax (`"22,80,8000-8100"`) and the
//! scanner's nmap `-p` syntax; invariants in `portwarden_policy::fuzzing::port_list` and
//! `portwarden_scan::fuzzing::port_list`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portwarden_policy::fuzzing::port_list(data);
    portwarden_scan::fuzzing::port_list(data);
});
