//! A small deterministic random number generator (SplitMix64) and the distributions the workload draws from.

/// SplitMix64: fast, good enough for traffic shapes, and identical on every platform for one seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed ^ 0x9E37_79B9_7F4A_7C15 }
    }

    /// An independent generator derived from this one's seed and a label, so that adding draws in one
    /// part of the workload does not shift every other part.
    pub fn fork(&self, label: u64) -> Rng {
        let mut forked = Rng { state: self.state ^ label.wrapping_mul(0xD1B5_4A32_D192_ED03) };
        forked.next_u64();
        forked
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson-distributed count with mean `mean` (Knuth below 30, a rounded normal above).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let mut product = self.unit();
            let mut count = 0;
            while product > limit {
                product *= self.unit();
                count += 1;
            }
            return count;
        }
        (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64
    }

    /// Lower-case hex of `n_digits` random digits.
    pub fn hex(&mut self, n_digits: usize, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut bits = 0u64;
        for digit_idx in 0..n_digits {
            if digit_idx % 16 == 0 {
                bits = self.next_u64();
            }
            out.push(DIGITS[(bits & 15) as usize] as char);
            bits >>= 4;
        }
    }

    /// A version-4 UUID, as Lambda request ids look.
    pub fn uuid(&mut self) -> String {
        let mut text = String::with_capacity(36);
        for (part_idx, n_digits) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if part_idx > 0 {
                text.push('-');
            }
            match part_idx {
                2 => {
                    text.push('4');
                    self.hex(n_digits - 1, &mut text);
                }
                3 => {
                    text.push(['8', '9', 'a', 'b'][self.below(4)]);
                    self.hex(n_digits - 1, &mut text);
                }
                _ => self.hex(n_digits, &mut text),
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws_and_forks_differ() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let draws_a: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let draws_b: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(draws_a, draws_b);
        assert_ne!(Rng::new(7).fork(1).next_u64(), Rng::new(7).fork(2).next_u64());
    }

    #[test]
    fn distributions_have_their_means() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        for mean in [0.5, 4.0, 80.0] {
            let total: u64 = (0..n).map(|_| rng.poisson(mean)).sum();
            let observed = total as f64 / n as f64;
            assert!((observed - mean).abs() < mean * 0.02 + 0.01, "poisson({mean}) mean {observed}");
        }
        let mut samples: Vec<f64> = (0..n).map(|_| rng.log_normal(120.0, 0.5)).collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[n / 2];
        assert!((median - 120.0).abs() < 3.0, "log-normal median {median}");
        let below: usize = (0..n).filter(|_| rng.below(10) < 3).count();
        assert!((below as f64 / n as f64 - 0.3).abs() < 0.01);
    }

    #[test]
    fn uuids_look_like_lambda_request_ids() {
        let mut rng = Rng::new(3);
        let id = rng.uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(id.split('-').map(str::len).eq([8, 4, 4, 4, 12]));
        assert_ne!(id, rng.uuid());
    }
}
