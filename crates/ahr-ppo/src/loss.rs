//! The PPO objective (CleanRL): clipped surrogate, optionally clipped value loss, entropy bonus.

use burn::tensor::Tensor;

/// Loss terms of one minibatch; `total` carries the graph.
#[derive(Clone, Debug)]
pub struct PpoLoss {
    /// `pg_loss − ent_coef·entropy + vf_coef·v_loss`.
    pub total: Tensor<1>,
    /// Clipped surrogate loss.
    pub pg_loss: Tensor<1>,
    /// Value loss.
    pub v_loss: Tensor<1>,
    /// Mean entropy.
    pub entropy: Tensor<1>,
    /// `((ratio − 1) − log ratio).mean()`.
    pub approx_kl: Tensor<1>,
    /// `(−log ratio).mean()`.
    pub old_approx_kl: Tensor<1>,
    /// Fraction of ratios outside `1 ± clip_coef`.
    pub clipfrac: Tensor<1>,
}

/// Coefficients of the objective.
#[derive(Clone, Copy, Debug)]
pub struct LossCoefs {
    /// Surrogate clip.
    pub clip_coef: f64,
    /// Clip the value loss.
    pub clip_vloss: bool,
    /// Entropy bonus.
    pub ent_coef: f64,
    /// Value loss weight.
    pub vf_coef: f64,
}

/// PPO loss over a minibatch.
///
/// # Shapes
/// All inputs `[M]`: new and old log-probabilities, (normalised) advantages, new values,
/// old values, returns, entropies.
pub fn ppo_loss(
    new_logp: Tensor<1>,
    old_logp: Tensor<1>,
    adv: Tensor<1>,
    new_value: Tensor<1>,
    old_value: Tensor<1>,
    returns: Tensor<1>,
    entropy: Tensor<1>,
    c: LossCoefs,
) -> PpoLoss {
    let logratio = new_logp - old_logp;
    let ratio = logratio.clone().exp();
    let old_approx_kl = logratio.clone().neg().mean();
    let approx_kl = ((ratio.clone() - 1.0) - logratio).mean();
    let clipfrac = (ratio.clone() - 1.0).abs().greater_elem(c.clip_coef).float().mean();
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.neg() * ratio.clamp(1.0 - c.clip_coef, 1.0 + c.clip_coef);
    let pg_loss = pg1.max_pair(pg2).mean();
    let v_unclipped = (new_value.clone() - returns.clone()).square();
    let v_loss = if c.clip_vloss {
        let v_clipped = old_value.clone() + (new_value - old_value).clamp(-c.clip_coef, c.clip_coef);
        let v_clipped = (v_clipped - returns).square();
        v_unclipped.max_pair(v_clipped).mean() * 0.5
    } else {
        v_unclipped.mean() * 0.5
    };
    let entropy = entropy.mean();
    let total = pg_loss.clone() - entropy.clone() * c.ent_coef + v_loss.clone() * c.vf_coef;
    PpoLoss { total, pg_loss, v_loss, entropy, approx_kl, old_approx_kl, clipfrac }
}

/// Advantage normalisation `(A − mean) / (std + 1e-8)` (std with Bessel's correction, as torch).
pub fn normalize_advantages(adv: Tensor<1>) -> Tensor<1> {
    let n = adv.dims()[0];
    let mean = adv.clone().mean();
    let centered = adv - mean;
    let var = centered.clone().square().sum() / ((n.max(2) - 1) as f64);
    centered / (var.sqrt() + 1e-8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &ahr_tpa::device::from_env())
    }

    fn s(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn clipped_surrogate_on_chosen_ratios() {
        // ratios e^{0.5} ≈ 1.6487 (A = +1, clipped to 1.2) and e^{−0.5} ≈ 0.6065 (A = −2, clipped to 0.8).
        // Per-sample loss = max(−A·r, −A·clip(r)): sample 0 → max(−1.6487, −1.2) = −1.2;
        // sample 1 → max(1.2131, 1.6) = 1.6. Mean = 0.2.
        let c = LossCoefs { clip_coef: 0.2, clip_vloss: true, ent_coef: 0.01, vf_coef: 0.5 };
        // Values: new (1.0, 0.0), old (0.5, 0.5), returns (2.0, 0.0).
        // unclipped: (1−2)² = 1, (0−0)² = 0; clipped: 0.5+0.2 = 0.7 → (0.7−2)² = 1.69, 0.5−0.2 = 0.3 → 0.09.
        // v_loss = 0.5·mean(max) = 0.5·(1.69 + 0.09)/2 = 0.445.
        let l = ppo_loss(
            t(&[0.5, -0.5]),
            t(&[0.0, 0.0]),
            t(&[1.0, -2.0]),
            t(&[1.0, 0.0]),
            t(&[0.5, 0.5]),
            t(&[2.0, 0.0]),
            t(&[0.3, 0.5]),
            c,
        );
        assert!((s(l.pg_loss.clone()) - 0.2).abs() < 1e-5);
        assert!((s(l.v_loss.clone()) - 0.445).abs() < 1e-5);
        assert!((s(l.entropy.clone()) - 0.4).abs() < 1e-6);
        assert!((s(l.total) - (0.2 - 0.004 + 0.2225)).abs() < 1e-5);
        assert_eq!(s(l.clipfrac), 1.0);
        let kl = ((0.5f32.exp() - 1.0 - 0.5) + ((-0.5f32).exp() - 1.0 + 0.5)) / 2.0;
        assert!((s(l.approx_kl) - kl).abs() < 1e-6);
        let unclipped = ppo_loss(
            t(&[0.05]),
            t(&[0.0]),
            t(&[1.0]),
            t(&[1.0]),
            t(&[0.5]),
            t(&[2.0]),
            t(&[0.0]),
            LossCoefs { clip_vloss: false, ..c },
        );
        assert!((s(unclipped.pg_loss) + 0.05f32.exp()).abs() < 1e-5);
        assert!((s(unclipped.v_loss) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn normalised_advantages_have_zero_mean_unit_std() {
        let a = normalize_advantages(t(&[1.0, 2.0, 3.0, 4.0])).into_data().try_to_vec::<f32>().unwrap();
        let sd = (5.0f32 / 3.0).sqrt();
        for (x, y) in a.iter().zip([-1.5, -0.5, 0.5, 1.5]) {
            assert!((x - y / sd).abs() < 1e-5);
        }
    }
}
