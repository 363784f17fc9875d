//! NAB benchmark of the univariate detector: runs it over every series of `benches/data/nab/` (35 series of
//! NAB's corpus, gzipped; see its README) and scores the results with NAB's rules under its three profiles,
//! one threshold per profile for the corpus.
//!
//! `cargo bench -p coldtrail-detect --bench nab` (set `NAB_DIR` to use another copy of the data, such as a
//! checkout of NAB with its whole corpus: `data/<category>/<file>.csv`, plain or gzipped, and
//! `labels/combined_windows.json`;
//! `NAB_RESULTS=DIR` writes NAB's results files `<category>/<detector>_<file>.csv`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use detect::nab::{score_corpus, ScoredFile, PROFILES};
use detect::series::median_step;
use detect::{SeriesConfig, SeriesDetector};

fn main() {
    let root = std::env::var_os("NAB_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("benches/data/nab")
    });
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("labels/combined_windows.json")).expect("labels"))
            .expect("labels are JSON");
    let mut names: Vec<&String> = labels.as_object().expect("labels map files to windows").keys().collect();
    names.sort();
    let started = Instant::now();
    let mut n_rows = 0;
    let mut files = Vec::new();
    for name in names {
        let text = read_series(&root.join("data").join(name));
        let mut times = Vec::new();
        let mut stamps = Vec::new();
        let mut values = Vec::new();
        for line in text.lines().skip(1) {
            let (stamp, value) = line.split_once(',').expect("timestamp,value");
            let ts = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").expect("NAB timestamp");
            times.push(ts.and_utc().timestamp_micros());
            stamps.push(stamp.to_string());
            values.push(value.parse::<f64>().expect("numeric value"));
        }
        let config = SeriesConfig::for_step(median_step(&times));
        let mut detector = SeriesDetector::new(config);
        let scores: Vec<f64> = times.iter().zip(&values).map(|(ts, v)| detector.observe(*ts, *v).score).collect();
        n_rows += scores.len();
        let windows = labels[name]
            .as_array()
            .expect("windows")
            .iter()
            .map(|window| {
                let index_of = |at: usize| {
                    let stamp = &window[at].as_str().expect("window bound")[..19];
                    stamps.iter().position(|s| s == stamp).expect("window bound is a row")
                };
                (index_of(0), index_of(1))
            })
            .collect();
        if let Some(dir) = std::env::var_os("NAB_RESULTS") {
            let (category, file) = name.split_once('/').expect("category/file");
            let out = PathBuf::from(dir).join(category);
            std::fs::create_dir_all(&out).expect("results dir");
            let mut csv = String::from("timestamp,value,anomaly_score\n");
            for ((stamp, value), score) in stamps.iter().zip(&values).zip(&scores) {
                csv.push_str(&format!("{stamp},{value},{score}\n"));
            }
            std::fs::write(out.join(format!("coldtrail_{file}")), csv).expect("results file");
        }
        files.push(ScoredFile { name: name.clone(), scores, windows });
    }
    let elapsed = started.elapsed();
    println!(
        "{} files, {n_rows} rows, detector time {:.1} ms ({:.2} µs per row)",
        files.len(),
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / n_rows as f64
    );
    println!("| profile | score | threshold | TP | FP | FN |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for profile in PROFILES {
        let result = score_corpus(&files, profile);
        println!(
            "| {} | {:.1} | {:.4} | {} | {} | {} |",
            profile.name,
            result.normalised,
            result.threshold,
            result.true_positives,
            result.false_positives,
            result.false_negatives
        );
    }
    if std::env::var_os("NAB_PER_FILE").is_some() {
        let threshold = std::env::var("NAB_THRESHOLD")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| score_corpus(&files, PROFILES[0]).threshold);
        for file in &files {
            let probation = detect::nab::probation_rows(file.scores.len());
            let inside = |row: usize| file.windows.iter().any(|&(left, right)| (left..=right).contains(&row));
            let detections: Vec<usize> =
                (probation..file.scores.len()).filter(|&r| file.scores[r] >= threshold).collect();
            let false_positives: Vec<usize> = detections.iter().copied().filter(|&r| !inside(r)).collect();
            let found = file.windows.iter().filter(|&&(l, r)| detections.iter().any(|d| (l..=r).contains(d))).count();
            println!(
                "{:55} windows {:?} found {found} false positives {} at {:?}",
                file.name,
                file.windows,
                false_positives.len(),
                &false_positives[..false_positives.len().min(8)]
            );
        }
    }
}

/// One series file as text: `<name>` as NAB ships it, or `<name>.gz` as this repository keeps it.
fn read_series(path: &Path) -> String {
    if let Ok(text) = std::fs::read_to_string(path) {
        return text;
    }
    let gzipped = path.with_file_name(format!("{}.gz", path.file_name().expect("a file name").to_string_lossy()));
    let file =
        std::fs::File::open(&gzipped).unwrap_or_else(|e| panic!("{} (nor {}): {e}", path.display(), gzipped.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).expect("a gzipped series");
    text
}
