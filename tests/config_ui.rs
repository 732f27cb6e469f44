//! Golden-file tests of configuration errors: `spindle validate --config config_ui/<case>.toml` must print
//! exactly `config_ui/<case>.err` on standard error and exit with code 2.
//!
//! To accept new output after an intended change: `SPINDLE_BLESS=1 cargo test --test config_ui`, then review
//! the diff of the `.err` files like code.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests")
}

#[test]
fn every_case_prints_its_golden_errors() {
    let dir = cases_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir.join("config_ui"))
        .expect("tests/config_ui exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 12,
        "at least 12 cases, found {}",
        cases.len()
    );
    let bless = std::env::var("SPINDLE_BLESS").as_deref() == Ok("1");
    let mut failures = Vec::new();
    for case in &cases {
        let relative = case.strip_prefix(&dir).expect("case under tests/");
        let output = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["validate", "--config"])
            .arg(relative)
            .output()
            .expect("spindle runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &stderr).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if output.status.code() != Some(2) {
            failures.push(format!(
                "{}: exit code {:?}, expected 2",
                relative.display(),
                output.status.code()
            ));
        }
        if stderr != expected {
            failures.push(format!(
                "{}: output differs from {}\n--- expected\n{expected}\n--- actual\n{stderr}",
                relative.display(),
                expected_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_example_configuration_is_valid() {
    let dir = cases_dir().join("..");
    let output = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .current_dir(&dir)
        .args(["validate", "--config", "connectors.toml"])
        .output()
        .expect("spindle runs");
    assert!(
        output.status.success(),
        "connectors.toml must stay valid:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("connectors.toml is valid: 2 source(s)"),
        "{stdout}"
    );
}
