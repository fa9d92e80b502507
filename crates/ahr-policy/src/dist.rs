//! Masked multi-categorical distribution: one categorical per head (per layer), invalid options
//! masked to a large negative logit before sampling, log-probability and entropy.

use burn::tensor::{Bool, Int, Tensor};
use rand::{Rng, RngExt};

use crate::ops::{exp, exp_in_place, log_softmax};

/// Logit given to invalid options.
const MASKED_LOGIT: f32 = -1.0e9;

/// Independent categoricals over `[N, heads, options]`.
#[derive(Clone, Debug)]
pub struct MaskedMultiCategorical {
    log_probs: Tensor<3>,
}

impl MaskedMultiCategorical {
    /// # Shapes
    /// - `logits`: `[N, H, M]`; `mask`: `[N, H, M]`, true = allowed (each head needs one).
    pub fn new(logits: Tensor<3>, mask: Tensor<3, Bool>) -> Self {
        let masked = logits.mask_fill(mask.bool_not(), MASKED_LOGIT);
        Self { log_probs: log_softmax(masked, 2) }
    }

    /// Log-probabilities `[N, H, M]`.
    pub fn log_probs(&self) -> Tensor<3> {
        self.log_probs.clone()
    }

    /// Joint log-probability of `actions` `[N, H]`: the sum over heads, `[N]`.
    pub fn log_prob(&self, actions: Tensor<2, Int>) -> Tensor<1> {
        let [n, h] = actions.dims();
        self.log_probs.clone().gather(2, actions.reshape([n, h, 1])).sum_dim(1).reshape([n])
    }

    /// Joint entropy (sum over heads), `[N]`.
    pub fn entropy(&self) -> Tensor<1> {
        let [n, _, _] = self.log_probs.dims();
        let p = exp(self.log_probs.clone());
        (p * self.log_probs.clone()).sum_dims(&[1, 2]).neg().reshape([n])
    }

    /// Probabilities on the host, `[N·H·M]` row-major.
    pub fn probs_host(&self) -> Vec<f32> {
        let mut p = self.log_probs.clone().into_data().try_to_vec::<f32>().expect("log-probabilities should be f32");
        exp_in_place(&mut p);
        p
    }
}

/// Sample one option per (row, head) from host probabilities `[N, H, M]`, row-major.
pub fn sample_host(probs: &[f32], options: usize, rng: &mut impl Rng) -> Vec<usize> {
    probs
        .chunks(options)
        .map(|p| {
            let mut u = rng.random::<f32>() * p.iter().sum::<f32>();
            for (i, &w) in p.iter().enumerate() {
                if u < w {
                    return i;
                }
                u -= w;
            }
            // Rounding left u ≥ 0: take the last option with mass.
            p.iter().rposition(|&w| w > 0.0).unwrap_or(0)
        })
        .collect()
}

/// The most probable option per (row, head) from host probabilities.
pub fn argmax_host(probs: &[f32], options: usize) -> Vec<usize> {
    probs
        .chunks(options)
        .map(|p| p.iter().enumerate().fold((0, f32::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use rand::SeedableRng;

    fn dist(logits: Vec<f32>, mask: Vec<bool>, n: usize, h: usize, m: usize) -> MaskedMultiCategorical {
        let dev = ahr_tpa::device::from_env();
        MaskedMultiCategorical::new(
            Tensor::from_data(TensorData::new(logits, [n, h, m]), &dev),
            Tensor::from_data(TensorData::new(mask, [n, h, m]), &dev),
        )
    }

    #[test]
    fn log_prob_and_entropy_match_hand_computation() {
        // One row, two heads of three options. Head 0: logits (0, ln 3, −50) with option 2 masked
        // → p = (1/4, 3/4, 0). Head 1: logits (1, 1, 7) with option 2 masked → p = (1/2, 1/2, 0).
        let d = dist(vec![0.0, 3f32.ln(), -50.0, 1.0, 1.0, 7.0], vec![true, true, false, true, true, false], 1, 2, 3);
        let dev = ahr_tpa::device::from_env();
        let a = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 0], [1, 2]), &dev);
        let lp = d.log_prob(a).into_scalar::<f32>();
        assert!((lp - (0.75f32.ln() + 0.5f32.ln())).abs() < 1e-5, "{lp}");
        let h = d.entropy().into_scalar::<f32>();
        let expect = -(0.25f32 * 0.25f32.ln() + 0.75 * 0.75f32.ln()) + 2f32.ln();
        assert!((h - expect).abs() < 1e-5, "{h} vs {expect}");
    }

    #[test]
    fn masked_options_are_never_sampled_or_chosen() {
        let n = 200;
        let logits: Vec<f32> = (0..n * 4).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mask: Vec<bool> = (0..n * 4).map(|i| i % 4 != 3 && (i / 4) % 5 != i % 4).collect();
        let d = dist(logits, mask.clone(), n, 1, 4);
        let probs = d.probs_host();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for _ in 0..20 {
            for (row, a) in sample_host(&probs, 4, &mut rng).into_iter().enumerate() {
                assert!(mask[row * 4 + a], "row {row} sampled masked option {a}");
            }
        }
        for (row, a) in argmax_host(&probs, 4).into_iter().enumerate() {
            assert!(mask[row * 4 + a]);
        }
    }
}
