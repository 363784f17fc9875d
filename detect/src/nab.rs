//! Scoring of anomaly scores the way the Numenta Anomaly Benchmark does: labelled windows, a probationary
//! period, a scaled sigmoid rewarding early detections, three cost profiles, one threshold for the whole
//! corpus, and normalisation between the null detector (0) and a perfect one (100).
//!
//! Written from NAB's documented rules (see `benches/data/nab/README.md` and the NAB whitepaper), not from
//! its code.

/// Costs of one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub true_positive_weight: f64,
    pub false_positive_weight: f64,
    pub false_negative_weight: f64,
}

pub const STANDARD: Profile =
    Profile { name: "standard", true_positive_weight: 1.0, false_positive_weight: 0.11, false_negative_weight: 1.0 };
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP",
    true_positive_weight: 1.0,
    false_positive_weight: 0.22,
    false_negative_weight: 1.0,
};
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN",
    true_positive_weight: 1.0,
    false_positive_weight: 0.11,
    false_negative_weight: 2.0,
};
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// Share of a file, at most `PROBATION_ROWS_MAX` rows, that is not scored: the detector is learning.
pub const PROBATION_SHARE: f64 = 0.15;
pub const PROBATION_ROWS_MAX: f64 = PROBATION_SHARE * 5000.0;

/// One scored file: its anomaly scores and its labelled windows as inclusive row index ranges.
#[derive(Debug, Clone)]
pub struct ScoredFile {
    pub name: String,
    pub scores: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

/// `2 * sigmoid(-5 x) - 1`: 0.987 at the left edge of a window (x = -1), 0 at its right edge, towards -1
/// past it; -1 from 3 window widths on.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * relative_position).exp()) - 1.0
    }
}

pub fn probation_rows(n_rows: usize) -> usize {
    ((PROBATION_SHARE * n_rows as f64).floor()).min(PROBATION_ROWS_MAX) as usize
}

/// What a detection at each row is worth: inside a window the weighted true-positive reward of its
/// position, outside the weighted false-positive cost of its distance past the previous window. `None`
/// for probationary rows, which are not scored.
#[derive(Debug, Clone)]
struct RowValues {
    /// Per row: (index of the window it is in, or None; value of a detection there).
    rows: Vec<Option<(Option<usize>, f64)>>,
    n_scored_windows: usize,
}

fn row_values(n_rows: usize, windows: &[(usize, usize)], profile: Profile) -> RowValues {
    let probation = probation_rows(n_rows);
    let max_true_positive = scaled_sigmoid(-1.0);
    let mut rows = Vec::with_capacity(n_rows);
    let mut previous_window: Option<(usize, f64)> = None; // (right index, width)
    let mut window_iter = windows.iter().enumerate().peekable();
    let mut current: Option<(usize, usize, usize)> = None; // (window idx, left, right)
    let mut scored_windows = std::collections::BTreeSet::new();
    for row_idx in 0..n_rows {
        if current.is_none() {
            if let Some(&(window_idx, &(left, right))) = window_iter.peek() {
                if left == row_idx {
                    current = Some((window_idx, left, right));
                    window_iter.next();
                }
            }
        }
        let value = match current {
            Some((window_idx, left, right)) => {
                let width = (right - left + 1) as f64;
                let position = -((right - row_idx + 1) as f64) / width;
                (Some(window_idx), scaled_sigmoid(position) * profile.true_positive_weight / max_true_positive)
            }
            None => {
                let position = match previous_window {
                    Some((right, width)) => (row_idx - right) as f64 / (width - 1.0).max(1.0),
                    None => 3.0,
                };
                (None, scaled_sigmoid(position) * profile.false_positive_weight)
            }
        };
        if row_idx >= probation {
            if let Some(window_idx) = value.0 {
                scored_windows.insert(window_idx);
            }
            rows.push(Some(value));
        } else {
            rows.push(None);
        }
        if let Some((_, left, right)) = current {
            if row_idx == right {
                previous_window = Some((right, (right - left + 1) as f64));
                current = None;
            }
        }
    }
    RowValues { rows, n_scored_windows: scored_windows.len() }
}

/// The raw score of one file at each threshold of `thresholds` (sorted descending): a row is a detection
/// when its anomaly score is at least the threshold. Each window counts its best detection, or the
/// false-negative cost; each detection outside windows adds its (negative) value.
pub fn file_scores_by_threshold(file: &ScoredFile, profile: Profile, thresholds: &[f64]) -> Vec<f64> {
    assert!(thresholds.windows(2).all(|w| w[0] >= w[1]), "thresholds must be sorted descending");
    let values = row_values(file.scores.len(), &file.windows, profile);
    let mut order: Vec<usize> = (0..file.scores.len()).filter(|&i| values.rows[i].is_some()).collect();
    order.sort_by(|&a, &b| file.scores[b].total_cmp(&file.scores[a]));
    let mut window_best: Vec<Option<f64>> = vec![None; file.windows.len()];
    let mut false_positives = 0.0;
    let mut missed = values.n_scored_windows as f64 * profile.false_negative_weight;
    let mut window_total = 0.0;
    let mut next = 0;
    let mut out = Vec::with_capacity(thresholds.len());
    for &threshold in thresholds {
        while next < order.len() && file.scores[order[next]] >= threshold {
            let (window, value) = values.rows[order[next]].expect("only scored rows are ordered");
            match window {
                Some(window_idx) => match window_best[window_idx] {
                    None => {
                        window_best[window_idx] = Some(value);
                        missed -= profile.false_negative_weight;
                        window_total += value;
                    }
                    Some(best) if value > best => {
                        window_total += value - best;
                        window_best[window_idx] = Some(value);
                    }
                    Some(_) => {}
                },
                None => false_positives += value,
            }
            next += 1;
        }
        out.push(window_total + false_positives - missed);
    }
    out
}

/// The result of scoring a corpus under one profile.
#[derive(Debug, Clone)]
pub struct CorpusScore {
    pub profile: Profile,
    pub threshold: f64,
    pub normalised: f64,
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

/// Scores a corpus under a profile with the one threshold that maximises the total.
pub fn score_corpus(files: &[ScoredFile], profile: Profile) -> CorpusScore {
    let mut thresholds: Vec<f64> = files.iter().flat_map(|f| f.scores.iter().copied()).collect();
    thresholds.push(1.1);
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut totals = vec![0.0; thresholds.len()];
    for file in files {
        for (total, score) in totals.iter_mut().zip(file_scores_by_threshold(file, profile, &thresholds)) {
            *total += score;
        }
    }
    let (best_idx, raw) = totals
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .expect("there is at least the threshold above every score");
    let threshold = thresholds[best_idx];
    let null: f64 = files.iter().map(|f| file_scores_by_threshold(f, profile, &[1.1])[0]).sum();
    let perfect: f64 = files
        .iter()
        .map(|file| {
            let mut scores = vec![0.0; file.scores.len()];
            for &(left, _) in &file.windows {
                scores[left] = 1.0;
            }
            let perfect_file = ScoredFile { name: file.name.clone(), scores, windows: file.windows.clone() };
            file_scores_by_threshold(&perfect_file, profile, &[1.0])[0]
        })
        .sum();
    let (mut true_positives, mut false_positives, mut false_negatives) = (0, 0, 0);
    for file in files {
        let values = row_values(file.scores.len(), &file.windows, profile);
        let mut detected = vec![false; file.windows.len()];
        for (row_idx, value) in values.rows.iter().enumerate() {
            let Some((window, _)) = value else { continue };
            if file.scores[row_idx] >= threshold {
                match window {
                    Some(window_idx) => detected[*window_idx] = true,
                    None => false_positives += 1,
                }
            }
        }
        true_positives += detected.iter().filter(|d| **d).count();
        false_negatives += values.n_scored_windows - detected.iter().filter(|d| **d).count();
    }
    CorpusScore {
        profile,
        threshold,
        normalised: 100.0 * (raw - null) / (perfect - null),
        raw,
        null,
        perfect,
        true_positives,
        false_positives,
        false_negatives,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(scores: Vec<f64>, windows: Vec<(usize, usize)>) -> ScoredFile {
        ScoredFile { name: "f".into(), scores, windows }
    }

    #[test]
    fn the_scaled_sigmoid_has_nabs_landmarks() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn probation_is_fifteen_percent_up_to_750_rows() {
        assert_eq!(probation_rows(1000), 150);
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(10_000), 750);
    }

    #[test]
    fn null_perfect_early_and_late_detections_score_in_order() {
        // 1000 rows, probation 150, one window of 100 rows.
        let windows = vec![(500, 599)];
        let score_at = |rows: &[usize]| {
            let mut scores = vec![0.0; 1000];
            for &row in rows {
                scores[row] = 1.0;
            }
            file_scores_by_threshold(&file(scores, windows.clone()), STANDARD, &[0.5])[0]
        };
        assert_eq!(score_at(&[]), -1.0);
        assert!((score_at(&[500]) - 1.0).abs() < 1e-12);
        let middle = score_at(&[550]);
        assert!((middle - 0.84828 / 0.98661).abs() < 1e-3, "{middle}");
        assert!(score_at(&[599]) < 0.1 && score_at(&[599]) > 0.0);
        // Only the best detection of a window counts.
        assert!((score_at(&[500, 520, 590]) - 1.0).abs() < 1e-12);
        // A false positive far from any window costs the full weight; one in probation costs nothing.
        assert!((score_at(&[300]) - (-1.0 - 0.11)).abs() < 1e-12);
        assert_eq!(score_at(&[100]), -1.0);
        // Just after a window a false positive costs almost nothing, later the full weight.
        let just_after = score_at(&[500, 601]) - 1.0;
        let long_after = score_at(&[500, 900]) - 1.0;
        assert!(just_after > -0.02 && just_after < 0.0, "{just_after}");
        assert!((long_after + 0.11).abs() < 1e-6, "{long_after}");
    }

    #[test]
    fn the_corpus_threshold_maximises_the_total_and_normalises_to_0_and_100() {
        let windows = vec![(500, 599)];
        let mut scores = vec![0.1; 1000];
        scores[500] = 0.9;
        scores[300] = 0.7;
        let corpus = [file(scores, windows.clone())];
        let result = score_corpus(&corpus, STANDARD);
        assert_eq!(result.threshold, 0.9);
        assert!((result.normalised - 100.0).abs() < 1e-9);
        assert_eq!((result.true_positives, result.false_positives, result.false_negatives), (1, 0, 0));
        let nothing = score_corpus(&[file(vec![0.0; 1000], windows)], STANDARD);
        assert!(nothing.normalised.abs() < 1e-9);
        assert_eq!(nothing.false_negatives, 1);
    }
}
