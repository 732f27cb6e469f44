//! Memory figures of the running process for benchmarks, read from `/proc/self/status` (Linux).

/// A `kB` field of `/proc/self/status` (`"VmHWM:"` peak resident set, `"VmRSS:"`, `"RssAnon:"`, ...) in
/// bytes; 0 where it cannot be read.
pub fn bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

/// The peak resident set size so far (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    bytes("VmHWM:")
}

/// The bytes this process has caused to be read from storage so far (`read_bytes` of `/proc/self/io`:
/// reads served from the page cache do not count); 0 where it cannot be read.
pub fn storage_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("read_bytes:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}
