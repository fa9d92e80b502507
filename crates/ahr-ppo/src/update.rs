//! One PPO update: `update_epochs` passes over shuffled minibatches of the rollout, the clipped
//! losses, global grad-norm clipping, Adam, and the target-KL stop.

use ahr_dist::all_reduce_grads;
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
        if self.comm.is_distributed() && self.comm.sum(n as f64) != (n * self.comm.size()) as f64 {
            return Err(TrainError::Other(format!(
                "rank {}: its rollout has {n} rows, another rank's differs; DD-PPO needs the same env layout on every rank",
                self.comm.rank()
            )));
        }
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
                    adv = match self.comm.is_distributed() {
                        false => normalize_advantages(adv),
                        true => self.normalize_across_ranks(mb.iter().map(|&i| r.advantages[i]).collect(), adv),
                    };
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
                let scalar = |x: &Tensor<1>| x.clone().into_scalar::<f32>() as f64;
                // Minibatch means of every rank, averaged (equal minibatch sizes everywhere), so the
                // non-finite check and the target-KL stop are the same decision on every rank.
                let mut means = [
                    &loss.total,
                    &loss.pg_loss,
                    &loss.v_loss,
                    &loss.entropy,
                    &loss.old_approx_kl,
                    &loss.approx_kl,
                    &loss.clipfrac,
                ]
                .map(scalar);
                if self.comm.is_distributed() {
                    self.comm.sum_f64(&mut means);
                    means.iter_mut().for_each(|m| *m /= self.comm.size() as f64);
                }
                let [total, pg_loss, v_loss, entropy, old_approx_kl, kl, clipfrac] = means;
                if !total.is_finite() {
                    return Err(TrainError::NonFinite(format!(
                        "the PPO loss became {total} at iteration {}",
                        iteration + 1
                    )));
                }
                let objective = match self.comm.is_distributed() {
                    false => loss.total,
                    true => loss.total / self.comm.size() as f32,
                };
                let mut grads = GradientsParams::from_grads(objective.backward(), &self.net);
                all_reduce_grads(&self.comm, &self.net, &mut grads);
                clip_global_norm(&self.net, &mut grads, self.cfg.max_grad_norm);
                self.net = self.optim.step(lr, self.net.clone(), grads);
                stats.pg_loss += pg_loss;
                stats.v_loss += v_loss;
                stats.entropy += entropy;
                stats.old_approx_kl += old_approx_kl;
                stats.approx_kl += kl;
                stats.clipfrac += clipfrac;
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
        stats.explained_variance = match self.comm.is_distributed() {
            false => explained_variance(&r.values, &r.returns),
            true => self.explained_variance_across_ranks(&r.values, &r.returns),
        };
        stats.updates = batches as u64;
        Ok(stats)
    }

    /// [`explained_variance`] over every rank's rollout, from summed moments.
    fn explained_variance_across_ranks(&self, values: &[f32], returns: &[f32]) -> f64 {
        let mut sums = [0.0f64; 5];
        for (&y, &v) in returns.iter().zip(values) {
            let (y, d) = (y as f64, (y - v) as f64);
            for (s, x) in sums.iter_mut().zip([1.0, y, y * y, d, d * d]) {
                *s += x;
            }
        }
        self.comm.sum_f64(&mut sums);
        let [n, y, yy, d, dd] = sums;
        let var = |s: f64, ss: f64| ss / n - (s / n).powi(2);
        let vy = var(y, yy);
        if n == 0.0 || vy == 0.0 { f64::NAN } else { 1.0 - var(d, dd) / vy }
    }

    /// [`normalize_advantages`] over the union of every rank's minibatch: mean and unbiased
    /// variance from sums over ranks (`host` holds this rank's values of `adv`).
    fn normalize_across_ranks(&self, host: Vec<f32>, adv: Tensor<1>) -> Tensor<1> {
        let mut sums = [host.len() as f64, host.iter().map(|&a| a as f64).sum()];
        self.comm.sum_f64(&mut sums);
        let [n, total] = sums;
        let mean = total / n;
        let squares = self.comm.sum(host.iter().map(|&a| (a as f64 - mean).powi(2)).sum());
        let std = (squares / (n.max(2.0) - 1.0)).sqrt();
        (adv - mean as f32) / (std as f32 + 1e-8)
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
