//! Project rules checked on every `cargo test`: crate dependency edges, module headers, patterns that the
//! style guide forbids, and no path that leads out of the repository (a fresh clone has nothing beside it).

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

/// Lines of Rust the binary crate (`src/`) may hold: CLI arguments, configuration, wiring and printing.
/// Runtime loops and logic belong in the libraries, where their tests are.
const BINARY_LINES_MAX: usize = 2_200;

#[test]
fn the_binary_stays_wiring() {
    let mut files = Vec::new();
    collect(&root().join("src"), &mut files);
    let lines: usize = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
    assert!(
        lines <= BINARY_LINES_MAX,
        "src/ holds {lines} lines, more than {BINARY_LINES_MAX}: move runtime and logic into a library"
    );
}

#[test]
fn every_ingest_source_stores_through_the_sink() {
    // `StoreSink` slices appends to the frame limit and keeps positions on the last slice; a source that
    // appended itself could fail on a large input forever.
    let mut files = Vec::new();
    collect(&root().join("ingest/src"), &mut files);
    for file in files.iter().filter(|f| !f.ends_with("sink.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for call in ["store.append(", ".append_checked(", "store().append("] {
            assert!(!code.contains(call), "{}: stores with {call}; use ingest::StoreSink", file.display());
        }
    }
}

#[test]
fn rows_are_typed_outside_the_store() {
    // A row is written and read as its typed row (`store::tables`, `store::alerts`): positional cells and
    // column lookups by name let a writer and a reader disagree about a column without a compiler error.
    let mut files = Vec::new();
    for krate in ["ingest", "detect", "workload", "alerting", "src"] {
        collect(&root().join(krate).join(if krate == "src" { "" } else { "src" }), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for pattern in [".push(&[", "column_by_name(", "Value::Text(", "Value::Time("] {
            assert!(!code.contains(pattern), "{}: `{pattern}`; use a typed row of store::tables", file.display());
        }
    }
}

#[test]
fn the_http_server_library_serves_only_the_http_components() {
    // axum serves the HTTP source (ingest) and the SQL API (query); a detector or the store has no business
    // with a server. Tests may run a real receiver with it (alerting's webhook tests do).
    for krate in ["store", "detect", "workload", "alerting"] {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let dependencies = manifest.split("[dev-dependencies]").next().unwrap_or_default();
        assert!(
            !dependencies.lines().any(|l| l.trim_start().starts_with("axum")),
            "axum belongs in ingest or query, not {krate}"
        );
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
        let library = ["store/src", "ingest/src", "detect/src", "query/src", "workload/src", "alerting/src"]
            .iter()
            .any(|lib| relative.starts_with(lib));
        if library {
            assert!(!text.contains("anyhow"), "{relative}: libraries return their own error types");
        }
    }
}

/// Every source whose paths a fresh clone must resolve: Rust code (tests, benches, examples and the code
/// they call), and the CI, end-to-end and bench scripts.
fn sources_that_read_paths() -> Vec<PathBuf> {
    let mut files = rust_files();
    for dir in [".ci", "tests/e2e", "bench"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            let script = path.extension().is_some_and(|e| e == "sh" || e == "py") || path.ends_with(".ci/run");
            if script {
                files.push(path);
            }
        }
    }
    files
}

/// Paths in `text` that leave the repository, as `line: text` strings. `file` is where the source lies
/// relative to the repository root (`ingest/tests/formats.rs`). Two things are caught:
/// - the shared data folder beside a checkout (its name or `shared/data`), which a clone does not have;
/// - a run of `..` that climbs above the root from where the path is resolved: the source's own directory
///   for `include_str!`, `include_bytes!` and scripts, the crate's directory (`CARGO_MANIFEST_DIR`) for
///   other Rust code. Only lines that read paths count (within two lines of `CARGO_MANIFEST_DIR`, `.join(`,
///   `include_…!`, `fs::read`, `open(`, `Path::new`, `dirname`, `os.path`, `cd`, …), so payloads such as
///   `../../etc/passwd` in detection tests are not paths.
fn paths_leaving_the_repository(file: &Path, text: &str) -> Vec<String> {
    let beside = [["..", "/shared"].concat(), ["shared", "/data"].concat()];
    let climb = regex::Regex::new(r#"(?:^|["'/\s(])((?:\.\.(?:/|\\|"|'|$))+)"#).unwrap();
    let markers = [
        "CARGO_MANIFEST_DIR",
        ".join(",
        "include_str!",
        "include_bytes!",
        "fs::read",
        "read_to_string",
        "read_dir",
        "File::open",
        "open(",
        "Path::new",
        "PathBuf::from",
        "dirname",
        "os.path",
        "cd ",
    ];
    let rust = file.extension().is_some_and(|e| e == "rs");
    let depth_of = |dir: &Path| dir.components().count();
    let file_dir = file.parent().unwrap_or(Path::new(""));
    let crate_dir =
        file.ancestors().skip(1).find(|dir| root().join(dir).join("Cargo.toml").is_file()).unwrap_or(Path::new(""));
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if beside.iter().any(|b| line.contains(b.as_str())) {
            found.push(format!("{}: {}", index + 1, line.trim()));
            continue;
        }
        let context = lines[index.saturating_sub(2)..(index + 3).min(lines.len())].join("\n");
        if !markers.iter().any(|m| context.contains(m)) {
            continue;
        }
        let ups: usize = climb.captures_iter(line).map(|c| c[1].matches("..").count()).sum();
        let included = line.contains("include_str!") || line.contains("include_bytes!");
        let base = if rust && !included { depth_of(crate_dir) } else { depth_of(file_dir) };
        if ups > base {
            found.push(format!("{}: {}", index + 1, line.trim()));
        }
    }
    found
}

#[test]
fn no_test_bench_or_script_reads_outside_the_repository() {
    for file in sources_that_read_paths() {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(root()).unwrap();
        if relative == Path::new("tests/tidy.rs") {
            // This check's own examples of what it catches.
            continue;
        }
        let found = paths_leaving_the_repository(relative, &text);
        assert!(
            found.is_empty(),
            "{}: reads a path outside the repository (copy the data into it):\n{}",
            relative.display(),
            found.join("\n")
        );
    }
}

#[test]
fn the_outside_path_check_catches_what_a_clone_would_not_have() {
    let shared = ["..", "/shared/data/nab"].concat();
    let leaving = [
        ("ingest/tests/formats.rs", format!("    let dir = format!(\"{{}}/../{shared}\", env!(\"CARGO_MANIFEST_DIR\"));")),
        ("tests/security.rs", "    root.join(\"../other-checkout/data\")".to_string()),
        ("ingest/src/trigger.rs", "    let path = format!(\n        \"{}/../../data/x.json\",\n        std::env::var(\"CARGO_MANIFEST_DIR\").unwrap());".to_string()),
        ("detect/src/security/sigma.rs", "include_str!(\"../../../../outside.yml\")".to_string()),
        ("tests/e2e/run.sh", "nab=\"$(dirname \"$0\")/../../../data/x.csv\"".to_string()),
        ("bench/x.py", format!("open('/work/{}')", &shared[3..])),
    ];
    for (file, text) in &leaving {
        assert!(!paths_leaving_the_repository(Path::new(file), text).is_empty(), "{file} should be caught:\n{text}");
    }
    let inside = [
        ("ingest/tests/formats.rs", "    root.join(\"../tests/data\")"),
        ("detect/src/security/sigma.rs", "include_str!(\"../../rules/sigma/x.yml\")"),
        ("tests/e2e/run.sh", "cd \"$(dirname \"$0\")/../..\""),
        ("detect/src/security/mod.rs", "    let alerts = log_alerts(\"file=../../../../etc/passwd\");"),
    ];
    for (file, text) in inside {
        assert!(paths_leaving_the_repository(Path::new(file), text).is_empty(), "{file} stays inside:\n{text}");
    }
}
