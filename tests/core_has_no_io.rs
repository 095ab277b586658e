//! Architecture invariant: the core does no IO and reads no clock (ARCHITECTURE.md). This
//! test reads the core's sources and fails on any import or call that would break that.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio", "quinn", "axum", "redb", "rustls", "std::net", "std::fs", "std::io", "std::thread", "std::process",
    "std::time", "Instant::", "SystemTime", "std::env", "println!", "eprintln!",
];

#[test]
fn the_core_imports_no_io_and_reads_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut checked = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/core exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        checked += 1;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(checked >= 10, "expected the core's sources, found {checked} files");
    assert!(found.is_empty(), "the core must not do IO:\n{}", found.join("\n"));
}
