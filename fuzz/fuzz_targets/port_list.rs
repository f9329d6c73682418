//! Both port-list parsers on the same text: the policy syntax (`"22,80,8000-8100"`) and the
//! scanner's nmap `-p` syntax; invariants in `portwarden_policy::fuzzing::port_list` and
//! `portwarden_scan::ports::fuzz_check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portwarden_policy::fuzzing::port_list(data);
    if let Ok(text) = std::str::from_utf8(data) {
        portwarden_scan::ports::fuzz_check(text);
    }
});
