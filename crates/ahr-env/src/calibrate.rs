//! Deployment's memory calibration (`ahr calibrate`): the price on memory at which a policy's
//! deterministic decisions hold a target memory on the task's training sequences.
//!
//! PPO in budget mode meets the budget with the *sampling* policy; deployment takes the most
//! probable option, which holds another memory (the Python documentation's 10 % policies held
//! 8.4–9.3 % of the exact bytes held out).
//! Shifting every option's log-probability by `−price · cost` (cost: the option's time-averaged
//! bytes relative to the exact option's) moves the argmax along one axis, cheaper for a positive
//! price, dearer for a negative one. Memory falls as the price rises (up to the discrete steps of
//! an argmax and the `budget_left` feature's feedback), so a bracket and a bisection find it: the
//! price kept is the one whose memory is closest to the target *without exceeding it*.

use ahr_policy::export::{Calibration, price_shift};
use ahr_policy::{ActorCritic, RunningNorm};
use ahr_tasks::Task;
use ahr_tpa::{Model, ModelConfig, cost};

use crate::factory::make_env;
use crate::spec::EnvSpec;
use crate::vec_env::{EnvError, run_episodes};

/// Largest |price| the bracket tries. The shift is price × cost, and a cheap option's cost is
/// small (`recent:8` over 256-token windows: ~0.07 of the exact bytes), so the price must reach
/// far beyond a logit gap: 4096 moves such an option by ~280 nats (5 % policies on
/// 256-byte text need 100-150).
pub const MAX_PRICE: f64 = 4096.0;
/// Bisection steps after the bracket.
pub const BISECTION_STEPS: usize = 16;
/// The search stops once a price's memory is within this of the target (below it).
pub const TOLERANCE: f64 = 1e-4;

/// Per menu option of `cfg`, its time-averaged bytes over a sequence of `seq_len` tokens relative
/// to the exact option's ([`cost::charged_bytes`] summed over the positions): `drop` 0, `rank:ρ`
/// its bytes over the exact bytes, `recent:W` about `W / T` of the exact option.
pub fn option_costs(cfg: &ModelConfig, seq_len: usize) -> Vec<f64> {
    let total = |o| (0..seq_len).map(|t| cost::charged_bytes(cfg, o, t, seq_len)).sum::<f64>();
    let exact = total(cfg.exact_option());
    cfg.menu.iter().map(|&o| total(o) / exact).collect()
}

/// What a calibration search did: every price tried and the memory it held, in order.
#[derive(Clone, Debug, Default)]
pub struct CalibrationTrace {
    /// `(price, memory fraction)` per probe.
    pub probes: Vec<(f64, f64)>,
}

/// Errors of [`calibrate`].
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// The environment failed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// No price up to [`MAX_PRICE`] brings the memory down to the target.
    #[error(
        "no price brings the memory down to {target}: the deterministic policy still holds {low:.4} of the exact \
         bytes at price {MAX_PRICE} (options its masks force, or timed options that cost more than their price says)"
    )]
    Unreachable {
        /// The target.
        target: f64,
        /// Memory at the highest price tried.
        low: f64,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

/// The deterministic policy's mean memory fraction on the first `sequences` training sequences of
/// the task's stream for `seed` (with whatever deployment shift `net` carries).
#[allow(clippy::too_many_arguments)]
pub fn training_memory(
    model: &Model,
    task: &Task,
    spec: &EnvSpec,
    net: &ActorCritic,
    norm: &RunningNorm,
    window: usize,
    sequences: usize,
    seed: u64,
    dev: &burn::tensor::Device,
) -> Result<f64, EnvError> {
    let streams = spec.env.streams.max(1);
    let mut env = make_env(model, task, spec, false, window, dev);
    let mut stats = run_episodes(env.as_mut(), sequences.div_ceil(streams) * streams, seed, |obs| {
        net.act_deterministic(obs, norm, dev)
    })?;
    stats.truncate(sequences);
    Ok(stats.iter().map(|e| e.mem_frac).sum::<f64>() / stats.len().max(1) as f64)
}

/// Find the price at which `net`'s deterministic decisions hold `target` (a fraction of the exact
/// choice's bytes) on `sequences` training sequences (seed `seed`): the [`Calibration`] to write
/// into its manifest, and every probe. A shift `net` already carries plays no part.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model: &Model,
    task: &Task,
    spec: &EnvSpec,
    net: &ActorCritic,
    norm: &RunningNorm,
    window: usize,
    target: f64,
    sequences: usize,
    seed: u64,
    dev: &burn::tensor::Device,
    mut progress: impl FnMut(f64, f64),
) -> Result<(Calibration, CalibrationTrace), CalibrateError> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(CalibrateError::Invalid(format!("the target must be in (0, 1], not {target}")));
    }
    if sequences == 0 {
        return Err(CalibrateError::Invalid("calibrate on at least one sequence".into()));
    }
    let seq_len = task.valid_batch(0, 1).seq_len;
    let costs = option_costs(model.config(), seq_len);
    let mut trace = CalibrationTrace::default();
    let mut probe = |trace: &mut CalibrationTrace, price: f64| -> Result<f64, EnvError> {
        // Any shift `net` carries is replaced.
        let priced = net.clone().with_deploy_shift(price_shift(&costs, price));
        let m = training_memory(model, task, spec, &priced, norm, window, sequences, seed, dev)?;
        trace.probes.push((price, m));
        progress(price, m);
        Ok(m)
    };
    let uncalibrated = probe(&mut trace, 0.0)?;
    // The tightest bracket known: a price holding more than the target and one holding at most it.
    let (mut above, mut below) = if uncalibrated > target { (Some(0.0), None) } else { (None, Some(0.0)) };
    let step: f64 = if uncalibrated > target { 1.0 } else { -1.0 };
    let mut price = step;
    while above.is_none() || below.is_none() {
        if price.abs() > MAX_PRICE {
            if below.is_none() {
                // The last probe was the dearest price, and it held more than the target.
                let low = trace.probes.last().map_or(f64::NAN, |&(_, m)| m);
                return Err(CalibrateError::Unreachable { target, low });
            }
            // Even the lowest price holds less than the target: keep the most memory found.
            break;
        }
        if probe(&mut trace, price)? > target {
            above = Some(price);
        } else {
            below = Some(price);
        }
        price *= 2.0;
    }
    if let (Some(mut above), Some(mut below)) = (above, below) {
        for _ in 0..BISECTION_STEPS {
            if best_within(&trace.probes, target).is_some_and(|(_, m)| target - m <= TOLERANCE) {
                break;
            }
            let mid = 0.5 * (above + below);
            if probe(&mut trace, mid)? > target {
                above = mid;
            } else {
                below = mid;
            }
        }
    }
    let (price, memory) = best_within(&trace.probes, target).expect("the bracket holds a price within the target");
    let calibration = Calibration { price, costs, target, memory, memory_uncalibrated: uncalibrated, sequences, seed };
    Ok((calibration, trace))
}

/// Of the probes at or below `target`, the one with the most memory (ties: the smallest |price|).
fn best_within(probes: &[(f64, f64)], target: f64) -> Option<(f64, f64)> {
    probes.iter().copied().filter(|&(_, m)| m <= target).fold(None, |best, (p, m)| match best {
        Some((bp, bm)) if bm > m || (bm == m && bp.abs() <= p.abs()) => Some((bp, bm)),
        _ => Some((p, m)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_within_keeps_the_most_memory_under_the_target() {
        let probes = [(0.0, 0.08), (-1.0, 0.12), (-0.5, 0.099), (-0.25, 0.095), (-0.75, 0.099)];
        assert_eq!(best_within(&probes, 0.10), Some((-0.5, 0.099)));
        assert_eq!(best_within(&probes, 0.05), None);
        assert_eq!(best_within(&probes, 0.12), Some((-1.0, 0.12)));
    }

    #[test]
    fn the_dearest_price_moves_a_short_window_past_any_logit_gap() {
        // `recent:8` over 256 tokens costs ~7 % of the exact option: the price bound must still
        // shift it against `drop` by more than a trained policy's logit gap (tens of nats; the
        // 5 % policies needed prices of 100-150). At 64 it moved it by 4.4.
        let cfg = ModelConfig::tiny().with_timed(&["recent:8".parse().unwrap()]).unwrap();
        let costs = option_costs(&cfg, 256);
        let recent = cfg.menu.iter().position(|o| o.to_string() == "recent:8").unwrap();
        assert!((0.05..0.09).contains(&costs[recent]), "recent:8 costs {}", costs[recent]);
        assert!(MAX_PRICE * costs[recent] > 100.0, "the price bound moves recent:8 by {}", MAX_PRICE * costs[recent]);
    }
}
