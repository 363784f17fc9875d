//! Project rules checked on every `cargo test`: crate dependency edges, module headers, and patterns
//! that the style guide forbids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

#[test]
fn workspace_crates_depend_only_along_the_allowed_edges() {
    // ingest, detect and query may depend on store; store on no workspace crate; the binary on all.
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let workspace: BTreeSet<String> = packages.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "coldtrail",
            &[
                "coldtrail-store",
                "coldtrail-ingest",
                "coldtrail-detect",
                "coldtrail-query",
                "coldtrail-workload",
                "coldtrail-alerting",
            ][..],
        ),
        ("coldtrail-workload", &["coldtrail-store"][..]),
        // Alerts reach delivery as stored rows, never straight from a detector.
        ("coldtrail-alerting", &["coldtrail-store"][..]),
        ("coldtrail-store", &[][..]),
        ("coldtrail-ingest", &["coldtrail-store"][..]),
        // The workload generator only in detect's tests (scenario tests on generated traffic).
        ("coldtrail-detect", &["coldtrail-store", "coldtrail-workload"][..]),
        ("coldtrail-query", &["coldtrail-store"][..]),
    ]);
    assert_eq!(workspace, allowed.keys().map(|k| k.to_string()).collect::<BTreeSet<_>>());
    for package in packages {
        let name = package["name"].as_str().unwrap();
        for dependency in package["dependencies"].as_array().unwrap() {
            let dependency = dependency["name"].as_str().unwrap();
            if workspace.contains(dependency) {
                assert!(allowed[name].contains(&dependency), "{name} must not depend on {dependency}");
                if name == "coldtrail-detect" && dependency == "coldtrail-workload" {
                    assert_eq!(
                        dependency_kind(dependency_entry(package, dependency)),
                        "dev",
                        "detect may use workload in tests only"
                    );
                }
            }
        }
    }
}

fn dependency_entry<'a>(package: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    package["dependencies"].as_array().unwrap().iter().find(|d| d["name"] == name).unwrap()
}

fn dependency_kind(dependency: &serde_json::Value) -> &str {
    dependency["kind"].as_str().unwrap_or("normal")
}

#[test]
fn heavy_dependencies_live_in_one_crate_each() {
    let homes = [("rdkafka", "ingest"), ("linfa", "detect"), ("datafusion", "query"), ("pgwire", "query")];
    for (dependency, home) in homes {
        for krate in ["store", "ingest", "detect", "query", "workload", "alerting"] {
            if krate == home {
                continue;
            }
            let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
            assert!(
                !manifest.lines().any(|l| l.trim_start().starts_with(&format!("{dependency} "))
                    || l.trim_start().starts_with(&format!("{dependency}="))),
                "{dependency} belongs in {home}, not {krate}"
            );
        }
    }
}

fn rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "store", "ingest", "detect", "query", "workload", "alerting", "tests"] {
        collect(&root().join(dir), &mut files);
    }
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("//!"), "{} must open with a //! line saying what it is", file.display());
    }
}

#[test]
fn forbidden_patterns_are_absent() {
    // Built from pieces so that this file does not match itself.
    let unbounded = ["unbounded", "_channel"].concat();
    let ignore = ["#[", "ignore"].concat();
    let should_panic = ["#[", "should_panic"].concat();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(root()).unwrap().display().to_string();
        assert!(!text.contains(&unbounded), "{relative}: channels must be bounded");
        assert!(!text.contains(&ignore), "{relative}: no ignored tests");
        assert!(!text.contains(&should_panic), "{relative}: assert the Err instead of a panic");
        let library =
            ["store/src", "ingest/src", "detect/src", "query/src"].iter().any(|lib| relative.starts_with(lib));
        if library {
            assert!(!text.contains("anyhow"), "{relative}: libraries return their own error types");
        }
    }
}
