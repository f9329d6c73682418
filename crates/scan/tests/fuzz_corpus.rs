//! The fuzz corpora of the scanner's targets (`fuzz/corpus/packet`, `fuzz/corpus/port_list`)
//! replayed through the same checks the fuzz targets run, so every input the fuzzer kept,
//! crashes it found included, is a regression test on stable Rust in `make test`.

#[test]
fn packet_corpus() {
    portwarden_lab::replay_corpus("packet", 10, portwarden_scan::fuzzing::packet);
}

#[test]
fn port_list_corpus() {
    portwarden_lab::replay_corpus("port_list", 10, portwarden_scan::fuzzing::port_list);
}
