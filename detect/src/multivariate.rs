//! The multivariate detector: a Gaussian mixture (linfa) over one function's standardised per-minute
//! feature vectors, fitted on its recent minutes and refitted periodically; the negative log-likelihood
//! of a new minute, calibrated by its own history, is the score. It catches combinations that no single
//! series shows: normal rate with long durations and high memory (a miner), or new callers with bigger
//! payloads at normal error rates.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::features::MinuteFeatures;
use crate::series::TailModel;

pub const FEATURE_NAMES: [&str; 8] = [
    "log_invocations",
    "error_ratio",
    "log_duration_p50_ms",
    "log_duration_p95_ms",
    "memory_used_ratio",
    "cold_start_ratio",
    "log_gb_seconds_per_invocation",
    "log_payload_bytes",
];
const DIMENSIONS: usize = FEATURE_NAMES.len();
/// Minutes over which one unusual combination is reported once.
const REPORT_COOLDOWN_MINUTES: usize = 150;

/// The feature vector of one minute with invocations.
pub fn feature_vector(features: &MinuteFeatures) -> Option<[f64; DIMENSIONS]> {
    if features.invocations == 0 {
        return None;
    }
    let n = features.invocations as f64;
    Some([
        n.ln_1p(),
        (features.errors + features.timeouts) as f64 / n,
        features.duration_p50_ms.ln_1p(),
        features.duration_p95_ms.ln_1p(),
        features.memory_used_ratio,
        features.cold_starts as f64 / n,
        (features.gb_seconds / n * 1_000.0).ln_1p(),
        features.payload_bytes_mean.ln_1p(),
    ])
}

/// The fewest events behind a share (errors, cold starts) for its deviation to count: one error in two
/// invocations is half of them failing, and nothing to report.
const SHARE_EVENTS_MIN: u64 = 3;

/// The events behind feature `d` of `feature_vector` when it is a share of the invocations.
fn share_events(features: &MinuteFeatures, d: usize) -> Option<u64> {
    match d {
        1 => Some(features.errors + features.timeouts),
        5 => Some(features.cold_starts),
        _ => None,
    }
}

/// Tuning of the multivariate detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultivariateConfig {
    /// Minutes of history kept for fitting.
    pub history_minutes: usize,
    /// Minutes with invocations needed before the first fit.
    pub fit_minutes_min: usize,
    /// Minutes between refits.
    pub refit_every_minutes: usize,
    pub components: usize,
}

impl Default for MultivariateConfig {
    fn default() -> Self {
        MultivariateConfig { history_minutes: 720, fit_minutes_min: 240, refit_every_minutes: 60, components: 2 }
    }
}

/// A fitted mixture, kept as plain numbers so that it checkpoints with the rest of the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mixture {
    center: Vec<f64>,
    scale: Vec<f64>,
    log_weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    precisions: Vec<Vec<f64>>,
    log_dets: Vec<f64>,
}

/// The verdict on one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariateVerdict {
    pub score: f64,
    pub negative_log_likelihood: f64,
    /// The features furthest from the closest component, in standard deviations, largest first.
    pub deviations: Vec<(&'static str, f64, f64, f64)>,
}

/// One function's multivariate state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Multivariate {
    config: MultivariateConfig,
    history: VecDeque<[f64; DIMENSIONS]>,
    #[serde(default)]
    phase: usize,
    mixture: Option<Mixture>,
    since_fit: usize,
    tail: TailModel,
    /// The lowest negative log-likelihood of the training minutes: scores start from there.
    nll_offset: f64,
    recent_peak: f64,
    fit_failures: u64,
}

impl Multivariate {
    pub fn new(config: MultivariateConfig) -> Self {
        Multivariate::with_phase(config, 0)
    }

    /// A detector whose first fit waits `phase` extra minutes (modulo the refit period), so that the
    /// fits of many functions that started together spread over the period instead of stalling one
    /// minute.
    pub fn with_phase(config: MultivariateConfig, phase: usize) -> Self {
        let phase = phase % config.refit_every_minutes.max(1);
        Multivariate {
            phase,
            history: VecDeque::with_capacity(config.history_minutes + 1),
            mixture: None,
            since_fit: 0,
            tail: TailModel::new(1_000),
            nll_offset: 0.0,
            recent_peak: 0.0,
            fit_failures: 0,
            config,
        }
    }

    pub fn fit_failures(&self) -> u64 {
        self.fit_failures
    }

    pub fn is_fitted(&self) -> bool {
        self.mixture.is_some()
    }

    /// Scores one minute against the current mixture, then remembers it and refits when due.
    pub fn observe(&mut self, features: &MinuteFeatures) -> Option<MultivariateVerdict> {
        let vector = feature_vector(features)?;
        let verdict = self.mixture.as_ref().map(|mixture| {
            let (nll, component) = mixture.negative_log_likelihood(&vector);
            let raw = self.tail.score((nll - self.nll_offset).max(0.0));
            let score = crate::series::report_once(&mut self.recent_peak, raw, REPORT_COOLDOWN_MINUTES);
            let mut deviations: Vec<(&'static str, f64, f64, f64)> = (0..DIMENSIONS)
                .filter(|d| share_events(features, *d).is_none_or(|events| events >= SHARE_EVENTS_MIN))
                .map(|d| {
                    let mean = mixture.means[component][d] * mixture.scale[d] + mixture.center[d];
                    let z = (vector[d] - mean) / mixture.scale[d];
                    (FEATURE_NAMES[d], z, vector[d], mean)
                })
                .collect();
            deviations.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            deviations.retain(|d| d.1.abs() >= 2.0);
            deviations.truncate(3);
            MultivariateVerdict { score, negative_log_likelihood: nll, deviations }
        });
        if self.history.len() == self.config.history_minutes {
            self.history.pop_front();
        }
        self.history.push_back(vector);
        self.since_fit += 1;
        let due = self.mixture.is_none() || self.since_fit >= self.config.refit_every_minutes;
        let enough = self.history.len() >= self.config.fit_minutes_min + self.phase
            || (self.history.len() == self.config.history_minutes && self.history.len() >= self.config.fit_minutes_min);
        if due && enough {
            self.fit();
        }
        verdict
    }

    /// Fits the mixture on the remembered minutes. A failed fit keeps the previous mixture.
    pub fn fit(&mut self) {
        self.since_fit = 0;
        match Mixture::fit(&self.history, self.config.components) {
            Some(mixture) => {
                // Scores are calibrated against how likely the minutes the mixture was fitted on are under
                // it: a new minute is as surprising as its rank among them.
                let training: Vec<f64> =
                    self.history.iter().map(|vector| mixture.negative_log_likelihood(vector).0).collect();
                self.nll_offset = training.iter().copied().fold(f64::INFINITY, f64::min);
                self.tail = TailModel::new(self.config.history_minutes);
                for nll in training {
                    self.tail.learn(nll - self.nll_offset);
                }
                self.mixture = Some(mixture);
            }
            None => self.fit_failures += 1,
        }
    }
}

impl Mixture {
    fn fit(history: &VecDeque<[f64; DIMENSIONS]>, components: usize) -> Option<Mixture> {
        let n = history.len();
        let mut center = vec![0.0; DIMENSIONS];
        let mut scale = vec![0.0; DIMENSIONS];
        for d in 0..DIMENSIONS {
            let mut column: Vec<f64> = history.iter().map(|v| v[d]).collect();
            column.sort_by(f64::total_cmp);
            let median = column[n / 2];
            let mut deviations: Vec<f64> = column.iter().map(|v| (v - median).abs()).collect();
            deviations.sort_by(f64::total_cmp);
            center[d] = median;
            // A feature that never moves still gets a unit of spread: a move is then a surprise, not a
            // division by zero.
            scale[d] = (1.4826 * deviations[n / 2]).max(column[n - 1] - column[0]).max(0.05);
        }
        let records = Array2::from_shape_fn((n, DIMENSIONS), |(i, d)| (history[i][d] - center[d]) / scale[d]);
        let dataset = DatasetBase::from(records);
        let model: GaussianMixtureModel<f64> = GaussianMixtureModel::params(components.max(1))
            .n_runs(1)
            .max_n_iterations(200)
            .tolerance(1e-4)
            .reg_covariance(1e-2)
            .fit(&dataset)
            .ok()?;
        let mut log_dets = Vec::with_capacity(components);
        let mut means = Vec::with_capacity(components);
        let mut precisions = Vec::with_capacity(components);
        for k in 0..model.weights().len() {
            let covariance = model.covariances().index_axis(ndarray::Axis(0), k);
            let log_det = log_determinant(&covariance.to_owned())?;
            log_dets.push(log_det);
            means.push(model.means().row(k).to_vec());
            precisions.push(model.precisions().index_axis(ndarray::Axis(0), k).iter().copied().collect());
        }
        Some(Mixture {
            center,
            scale,
            log_weights: model.weights().iter().map(|w| w.max(1e-12).ln()).collect(),
            means,
            precisions,
            log_dets,
        })
    }

    /// Negative log-likelihood of a raw vector and the index of the most likely component.
    fn negative_log_likelihood(&self, vector: &[f64; DIMENSIONS]) -> (f64, usize) {
        let x: Vec<f64> = (0..DIMENSIONS).map(|d| (vector[d] - self.center[d]) / self.scale[d]).collect();
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        let mut terms = Vec::with_capacity(self.means.len());
        for k in 0..self.means.len() {
            let diff: Vec<f64> = x.iter().zip(&self.means[k]).map(|(a, b)| a - b).collect();
            let mut quadratic = 0.0;
            for i in 0..DIMENSIONS {
                for j in 0..DIMENSIONS {
                    quadratic += diff[i] * self.precisions[k][i * DIMENSIONS + j] * diff[j];
                }
            }
            let log_density = -0.5 * (DIMENSIONS as f64 * log_two_pi + self.log_dets[k] + quadratic);
            terms.push(self.log_weights[k] + log_density);
        }
        let (best, max) =
            terms.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).expect("a mixture has components");
        let log_likelihood = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
        (-log_likelihood, best)
    }
}

/// log |A| of a symmetric positive definite matrix by Cholesky; `None` if it is not positive definite.
fn log_determinant(matrix: &Array2<f64>) -> Option<f64> {
    let n = matrix.nrows();
    let mut lower = vec![0.0; n * n];
    let mut log_det = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let mut sum = matrix[(i, j)];
            for k in 0..j {
                sum -= lower[i * n + k] * lower[j * n + k];
            }
            if i == j {
                if sum <= 0.0 {
                    return None;
                }
                lower[i * n + i] = sum.sqrt();
                log_det += 2.0 * lower[i * n + i].ln();
            } else {
                lower[i * n + j] = sum / lower[j * n + j];
            }
        }
    }
    Some(log_det)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(invocations: u64, p50: f64, p95: f64, memory: f64, noise: f64) -> MinuteFeatures {
        MinuteFeatures {
            function: "f".to_string(),
            minute_us: 0,
            invocations,
            errors: 0,
            timeouts: 0,
            throttles: 0,
            crashes: 0,
            cold_starts: 1,
            duration_p50_ms: p50 * (1.0 + 0.05 * noise),
            duration_p95_ms: p95 * (1.0 + 0.05 * noise),
            duration_max_ms: p95 * 1.2,
            memory_used_ratio: memory + 0.02 * noise,
            gb_seconds: invocations as f64 * p50 / 1000.0 * 0.5,
            gb_seconds_typical: invocations as f64 * p50 / 1000.0 * 0.5,
            source_ips: 5,
            principals: 0,
            environments: 3,
            payload_bytes_mean: 120.0 + 5.0 * noise,
            callers: vec![],
            evidence: Default::default(),
        }
    }

    #[test]
    fn log_determinants_match_known_matrices() {
        let identity = Array2::<f64>::eye(3);
        assert!(log_determinant(&identity).unwrap().abs() < 1e-12);
        let diagonal = Array2::from_diag(&ndarray::arr1(&[2.0, 3.0]));
        assert!((log_determinant(&diagonal).unwrap() - 6f64.ln()).abs() < 1e-12);
        assert!(log_determinant(&Array2::from_diag(&ndarray::arr1(&[1.0, -1.0]))).is_none());
    }

    #[test]
    fn an_unusual_combination_scores_high_and_names_its_features() {
        let mut model = Multivariate::new(MultivariateConfig { fit_minutes_min: 100, ..Default::default() });
        let noise = |i: usize| (((i * 7919) % 101) as f64 / 50.0) - 1.0;
        let mut worst_normal: f64 = 0.0;
        for i in 0..400 {
            let verdict = model.observe(&minute(40 + (i % 9) as u64, 80.0, 200.0, 0.4, noise(i)));
            if i > 300 {
                worst_normal = worst_normal.max(verdict.map_or(0.0, |v| v.score));
            }
        }
        assert!(model.is_fitted());
        // Same rate, durations pinned high and memory near the limit: a miner.
        let mining = model.observe(&minute(44, 2_900.0, 2_990.0, 0.97, 0.0)).expect("fitted");
        assert!(mining.score > worst_normal.max(0.6), "mining {mining:?}, normal up to {worst_normal}");
        let named: Vec<&str> = mining.deviations.iter().map(|d| d.0).collect();
        assert!(named.contains(&"log_duration_p50_ms") || named.contains(&"log_duration_p95_ms"), "{named:?}");
    }
}
