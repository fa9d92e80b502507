//! One PPO update: `update_epochs` passes over shuffled minibatches of the rollout, the clipped
//! losses, global grad-norm clipping, Adam, and the target-KL stop.

use ahr_policy::MaskedMultiCategorical;
use ahr_tpa::grad::clip_global_norm;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::buffer::Rollout;
use crate::loss::{LossCoefs, normalize_advantages, ppo_loss};
use crate::trainer::{TrainError, Trainer};
use crate::workers::derive_seed;

impl Trainer {
    pub(crate) fn update(
        &mut self,
        r: &Rollout,
        lr: f64,
        coefs: LossCoefs,
        iteration: u64,
    ) -> Result<UpdateStats, TrainError> {
        let n = r.obs.len;
        let heads = self.dims.heads;
        let mb_size = (n / self.cfg.num_minibatches).max(1);
        let mut inds: Vec<usize> = (0..n).collect();
        let mut rng = StdRng::seed_from_u64(derive_seed(self.seed ^ 0xabcd, usize::MAX, iteration));
        let dev = self.train_device.clone();
        let f1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &dev);
        let mut stats = UpdateStats::default();
        let mut batches = 0f64;
        'epochs: for _ in 0..self.cfg.update_epochs {
            inds.shuffle(&mut rng);
            for mb in inds.chunks(mb_size) {
                let obs = r.obs.select(mb);
                let t = self.net.obs_tensors(&obs, &self.state.norm, &dev);
                let dist = MaskedMultiCategorical::new(self.net.logits(&t), t.masks.clone());
                let acts: Vec<i64> =
                    mb.iter().flat_map(|&i| r.actions[i * heads..(i + 1) * heads].iter().map(|&a| a as i64)).collect();
                let acts = Tensor::<2, Int>::from_data(TensorData::new(acts, [mb.len(), heads]), &dev);
                let new_logp = dist.log_prob(acts);
                let entropy = dist.entropy();
                let new_value = self.net.value(&t);
                let pick = |v: &[f32]| f1(mb.iter().map(|&i| v[i]).collect());
                let mut adv = pick(&r.advantages);
                if self.cfg.norm_adv && mb.len() > 1 {
                    adv = normalize_advantages(adv);
                }
                let loss = ppo_loss(
                    new_logp,
                    pick(&r.logprobs),
                    adv,
                    new_value,
                    pick(&r.values),
                    pick(&r.returns),
                    entropy,
                    coefs,
                );
                let total = loss.total.clone().into_scalar::<f32>();
                if !total.is_finite() {
                    return Err(TrainError::NonFinite(format!(
                        "the PPO loss became {total} at iteration {}",
                        iteration + 1
                    )));
                }
                let mut grads = GradientsParams::from_grads(loss.total.backward(), &self.net);
                clip_global_norm(&self.net, &mut grads, self.cfg.max_grad_norm);
                self.net = self.optim.step(lr, self.net.clone(), grads);
                let scalar = |x: Tensor<1>| x.into_scalar::<f32>() as f64;
                stats.pg_loss += scalar(loss.pg_loss);
                stats.v_loss += scalar(loss.v_loss);
                stats.entropy += scalar(loss.entropy);
                stats.old_approx_kl += scalar(loss.old_approx_kl);
                let kl = scalar(loss.approx_kl);
                stats.approx_kl += kl;
                stats.clipfrac += scalar(loss.clipfrac);
                batches += 1.0;
                if self.cfg.target_kl.is_some_and(|target| kl > target) {
                    break 'epochs;
                }
            }
        }
        for x in [
            &mut stats.pg_loss,
            &mut stats.v_loss,
            &mut stats.entropy,
            &mut stats.old_approx_kl,
            &mut stats.approx_kl,
            &mut stats.clipfrac,
        ] {
            *x /= batches.max(1.0);
        }
        stats.explained_variance = explained_variance(&r.values, &r.returns);
        stats.updates = batches as u64;
        Ok(stats)
    }
}

/// Means over the update's minibatches.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UpdateStats {
    pub(crate) pg_loss: f64,
    pub(crate) v_loss: f64,
    pub(crate) entropy: f64,
    pub(crate) old_approx_kl: f64,
    pub(crate) approx_kl: f64,
    pub(crate) clipfrac: f64,
    pub(crate) explained_variance: f64,
    pub(crate) updates: u64,
}

/// `1 − Var(returns − values) / Var(returns)` (NaN when the returns are constant).
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |x: &[f64]| {
        let m = x.iter().sum::<f64>() / x.len().max(1) as f64;
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len().max(1) as f64
    };
    let y: Vec<f64> = returns.iter().map(|&v| v as f64).collect();
    let diff: Vec<f64> = returns.iter().zip(values).map(|(&r, &v)| (r - v) as f64).collect();
    let vy = var(&y);
    if vy == 0.0 { f64::NAN } else { 1.0 - var(&diff) / vy }
}

#[cfg(test)]
mod tests {
    use super::explained_variance;

    /// Hand-computed: a perfect critic explains everything, a zero critic nothing, and a critic
    /// off by a constant explains all the variance; constant returns have nothing to explain.
    #[test]
    fn explained_variance_by_hand() {
        let returns = [1.0, 2.0, 3.0];
        assert_eq!(explained_variance(&returns, &returns), 1.0);
        assert_eq!(explained_variance(&[2.0, 2.0, 2.0], &returns), 0.0);
        assert_eq!(explained_variance(&[0.0, 1.0, 2.0], &returns), 1.0);
        // values [1, 1, 4]: residuals [0, 1, −1], variance 2/3 against Var(returns) = 2/3 → 0.
        assert!((explained_variance(&[1.0, 1.0, 4.0], &returns)).abs() < 1e-12);
        // values [1, 2, 2]: residuals [0, 0, 1], variance 2/9 → 1 − (2/9)/(2/3) = 2/3.
        assert!((explained_variance(&[1.0, 2.0, 2.0], &returns) - 2.0 / 3.0).abs() < 1e-12);
        assert!(explained_variance(&[0.0, 1.0], &[5.0, 5.0]).is_nan());
    }
}
