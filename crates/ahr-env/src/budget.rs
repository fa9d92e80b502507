//! Budget mode's controller of the memory price λ (DESIGN.md §5): it belongs with the reward it
//! prices. A trainer calls [`BudgetController::step`] once per iteration with the mean memory
//! fraction of that iteration's episodes and sends the new λ to every environment. The target
//! may start looser and tighten linearly over part of the run ([`BudgetController::target_at`]):
//! a curriculum that lets a policy learn what is worth keeping before memory gets scarce.

use serde::{Deserialize, Serialize};

use crate::spec::{BudgetKind, RewardConfig};

/// A PI-controlled Lagrange multiplier (Stooke et al., 2020, "Responsive Safety in RL by PID
/// Lagrangian Methods"). With `e = mem_frac − target`, the integral `λ_I ← max(0, λ_I + lr·e)`
/// (plain dual ascent) and the applied `λ = max(0, λ_I + kp·e)`; `kp = 0` is dual ascent alone.
/// The proportional term damps the overshoot that dual ascent's lag causes. A two-sided budget
/// (`budget_kind = "target"`) drops the `max(0, ·)`: the budget becomes an equality constraint,
/// and a negative λ pays the policy for memory it leaves unused.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetController {
    /// Target memory fraction.
    pub target: f64,
    /// Dual-ascent step (integral gain).
    pub lr: f64,
    /// Proportional gain.
    pub kp: f64,
    /// Hold the target (λ may go negative) instead of only capping memory at it (λ ≥ 0).
    #[serde(default)]
    pub two_sided: bool,
    /// Target at the start of the run (`None`: `target` throughout).
    #[serde(default)]
    pub start: Option<f64>,
    /// Fraction of the run over which the target moves linearly from `start` to `target`.
    pub anneal: f64,
}

impl BudgetController {
    /// The controller of a reward config in budget mode (`None` otherwise).
    pub fn from_reward(reward: &RewardConfig) -> Option<Self> {
        reward.budget.map(|target| Self {
            target,
            lr: reward.lambda_lr,
            kp: reward.lambda_kp,
            two_sided: reward.budget_kind == BudgetKind::Target,
            start: reward.budget_start,
            anneal: reward.budget_anneal,
        })
    }

    /// The target at `progress` ∈ [0, 1] of the run: `start` at 0, `target` from `anneal` on,
    /// linear between.
    pub fn target_at(&self, progress: f64) -> f64 {
        match self.start {
            Some(start) if progress < self.anneal => start + (self.target - start) * progress / self.anneal,
            _ => self.target,
        }
    }

    /// One update from the mean memory fraction of the iteration at `progress` ∈ [0, 1] of the
    /// run: the new `(λ, integral)` from the current λ and integral (`None` before the first
    /// update: the integral starts at λ).
    pub fn step(&self, lambda: f64, integral: Option<f64>, mem_frac: f64, progress: f64) -> (f64, f64) {
        let error = mem_frac - self.target_at(progress);
        let floor = if self.two_sided { f64::NEG_INFINITY } else { 0.0 };
        let integral = (integral.unwrap_or(lambda) + self.lr * error).max(floor);
        ((integral + self.kp * error).max(floor), integral)
    }
}

/// The memory price an environment starts from: `lambda_init` in budget mode, else `lambda_mem`.
pub fn initial_lambda(reward: &RewardConfig) -> f64 {
    if reward.budget.is_some() { reward.lambda_init } else { reward.lambda_mem }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: target 0.3, lr 0.5, kp 2; memory 0.5 (error 0.2) from λ = 1:
    /// integral 1 + 0.1 = 1.1, λ = 1.1 + 0.4 = 1.5. Then memory 0.1 (error −0.2): integral
    /// 1.1 − 0.1 = 1.0, λ = 1.0 − 0.4 = 0.6. A cap clamps at 0; a target goes negative.
    #[test]
    fn pi_update_by_hand() {
        let c = BudgetController { target: 0.3, lr: 0.5, kp: 2.0, two_sided: false, start: None, anneal: 0.5 };
        let (l, i) = c.step(1.0, None, 0.5, 0.0);
        assert!((l - 1.5).abs() < 1e-12 && (i - 1.1).abs() < 1e-12, "{l} {i}");
        let (l, i) = c.step(l, Some(i), 0.1, 0.9);
        assert!((l - 0.6).abs() < 1e-12 && (i - 1.0).abs() < 1e-12, "{l} {i}");
        let (l, _) = c.step(0.0, Some(0.0), 0.0, 0.0);
        assert_eq!(l, 0.0, "a cap never pays for unused memory");
        let two = BudgetController { two_sided: true, ..c };
        let (l, i) = two.step(0.0, Some(0.0), 0.0, 0.0);
        assert!((i + 0.15).abs() < 1e-12 && (l + 0.75).abs() < 1e-12, "{l} {i}");
        let reward = RewardConfig { budget: Some(0.3), lambda_init: 7.0, ..Default::default() };
        assert_eq!(initial_lambda(&reward), 7.0);
        assert_eq!(BudgetController::from_reward(&reward).map(|b| b.target), Some(0.3));
        assert_eq!(BudgetController::from_reward(&RewardConfig::default()), None);
    }

    /// Hand-computed: from 0.5 to 0.1 over the first 40 % of the run; at 10 % of the run the
    /// target is 0.5 − 0.4·0.25 = 0.4, and memory 0.5 (error 0.1) moves λ by lr·0.1 = 0.05.
    #[test]
    fn a_tightening_target_by_hand() {
        let c = BudgetController { target: 0.1, lr: 0.5, kp: 0.0, two_sided: false, start: Some(0.5), anneal: 0.4 };
        for (progress, target) in [(0.0, 0.5), (0.1, 0.4), (0.2, 0.3), (0.4, 0.1), (0.9, 0.1)] {
            assert!((c.target_at(progress) - target).abs() < 1e-12, "{progress}: {}", c.target_at(progress));
        }
        let (l, i) = c.step(1.0, None, 0.5, 0.1);
        assert!((l - 1.05).abs() < 1e-12 && (i - 1.05).abs() < 1e-12, "{l} {i}");
        let fixed = BudgetController { start: None, ..c };
        assert_eq!(fixed.target_at(0.0), 0.1);
        let reward =
            RewardConfig { budget: Some(0.1), budget_start: Some(0.3), budget_anneal: 0.6, ..Default::default() };
        let from = BudgetController::from_reward(&reward).unwrap();
        assert_eq!((from.start, from.anneal), (Some(0.3), 0.6));
    }
}
