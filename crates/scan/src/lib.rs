//! nmap-identical port scanning for portwarden (work in progress).
