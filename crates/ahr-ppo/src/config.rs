//! PPO hyper-parameters with CleanRL's names and defaults (`ppo.py`).

use ahr_policy::PolicyConfig;
use ahr_tpa::Invalid;
use serde::{Deserialize, Serialize};

/// A PPO run config (`configs/ppo/*.toml`); missing keys take CleanRL's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Environment steps over all environments.
    pub total_timesteps: u64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Environment instances (each may hold several streams).
    pub num_envs: usize,
    /// Steps per environment per rollout.
    pub num_steps: usize,
    /// Anneal the learning rate linearly to 0.
    pub anneal_lr: bool,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub gae_lambda: f64,
    /// How rewards are credited to actions (`return`: CleanRL's GAE on the whole reward).
    pub credit: Credit,
    /// What an advantage is measured against (`value`: the critic, CleanRL).
    pub baseline: AdvantageBaseline,
    /// Minibatches per epoch.
    pub num_minibatches: usize,
    /// Epochs per update.
    pub update_epochs: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Surrogate clipping coefficient.
    pub clip_coef: f64,
    /// Clip the value loss.
    pub clip_vloss: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Stop an update early when the approximate KL exceeds this.
    pub target_kl: Option<f64>,
    /// Normalise observations with running statistics (saved with the policy).
    pub norm_obs: bool,
    /// Reset every environment at the start of each rollout (exact resume; rank envs).
    pub reset_each_iteration: bool,
    /// Save a checkpoint every this many iterations.
    pub checkpoint_every: u64,
    /// Budget mode's target memory fraction; overrides the env file's `[reward] budget`.
    pub budget: Option<f64>,
    /// Budget mode's starting target; overrides the env file's `[reward] budget_start`.
    pub budget_start: Option<f64>,
    /// Budget mode's tightening fraction; overrides the env file's `[reward] budget_anneal`.
    pub budget_anneal: Option<f64>,
    /// Budget mode's kind (`at-most` or `target`); overrides the env file's `[reward] budget_kind`.
    pub budget_kind: Option<ahr_env::BudgetKind>,
    /// Budget mode's starting λ; overrides the env file's `[reward] lambda_init`.
    pub lambda_init: Option<f64>,
    /// Budget mode's integral gain; overrides the env file's `[reward] lambda_lr`.
    pub lambda_lr: Option<f64>,
    /// Budget mode's proportional gain; overrides the env file's `[reward] lambda_kp`.
    pub lambda_kp: Option<f64>,
    /// After training, price the exported policy's deterministic decisions so that they hold the
    /// budget on this many training sequences (`ahr calibrate`; budget mode only): PPO meets the
    /// budget while sampling, the most probable options hold another memory. Absent: not calibrated.
    pub calibrate: Option<usize>,
    /// The actor-critic network.
    pub policy: PolicyConfig,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            total_timesteps: 500_000,
            learning_rate: 2.5e-4,
            num_envs: 4,
            num_steps: 128,
            anneal_lr: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            credit: Credit::Return,
            baseline: AdvantageBaseline::Value,
            num_minibatches: 4,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            norm_obs: true,
            reset_each_iteration: false,
            checkpoint_every: 10,
            budget: None,
            budget_start: None,
            budget_anneal: None,
            budget_kind: None,
            lambda_init: None,
            lambda_lr: None,
            lambda_kp: None,
            calibrate: None,
            policy: PolicyConfig::default(),
        }
    }
}

/// How the advantage of an action is estimated from the rewards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credit {
    /// GAE over the whole reward (CleanRL).
    #[default]
    Return,
    /// The part of each reward that its step's action alone caused (the environment says which:
    /// [`ahr_env::VecStep::immediate`], in rank environments the charge for the bytes just
    /// written) goes to that action only; GAE, and the value function, take the rest. Later
    /// actions' charges then no longer add their noise to an earlier action's advantage — the
    /// difference rewards of multi-agent credit assignment. A token's bytes depend on its own
    /// choice alone; what this drops is an action's sway on later choices through the cache-fill
    /// features they observe.
    Split,
}

/// What an action's advantage is measured against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageBaseline {
    /// The critic's value, with GAE (CleanRL).
    #[default]
    Value,
    /// The partner stream's return-to-go on the same sequence (environments whose rows come in
    /// pairs, `[env] paired = true`): `A_t = G_t − G'_t`, Monte Carlo returns, no GAE — the
    /// leave-one-out baseline of RLOO. What the sequence itself decides (where its queries fall,
    /// how hard it is) cancels, which no critic that sees one token's features can predict; the
    /// critic is still trained on `G_t` and bootstraps a rollout that ends mid-episode.
    Partner,
}

impl PpoConfig {
    /// Rows per rollout: `num_steps × rows_per_step`.
    pub fn batch_size(&self, rows_per_step: usize) -> usize {
        self.num_steps * rows_per_step
    }

    /// Iterations to cover `total_timesteps`.
    pub fn num_iterations(&self, rows_per_step: usize) -> u64 {
        (self.total_timesteps / self.batch_size(rows_per_step).max(1) as u64).max(1)
    }

    /// Learning rate of iteration `it` (0-based) of `num_iterations`: CleanRL's linear annealing
    /// `(1 − it / n) · learning_rate` with `anneal_lr`, else constant.
    pub fn learning_rate_at(&self, it: u64, num_iterations: u64) -> f64 {
        if self.anneal_lr {
            (1.0 - it as f64 / num_iterations.max(1) as f64) * self.learning_rate
        } else {
            self.learning_rate
        }
    }

    /// Range checks.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (name, v) in [
            ("num_envs", self.num_envs as u64),
            ("num_steps", self.num_steps as u64),
            ("num_minibatches", self.num_minibatches as u64),
            ("update_epochs", self.update_epochs as u64),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if v == 0 {
                return Err(Invalid::new(name, "must be at least 1, found 0"));
            }
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(Invalid::new("learning_rate", format!("must be > 0, found {}", self.learning_rate)));
        }
        if !self.policy.prior_logit.is_finite() {
            return Err(Invalid::new(
                "policy.prior_logit",
                format!("must be finite, found {}", self.policy.prior_logit),
            ));
        }
        if self.policy.prior_frozen && self.policy.prior_table.is_none() && self.policy.prior.is_empty() {
            return Err(Invalid::new(
                "policy.prior_frozen",
                "keeps a prior where it starts: set `prior` or `prior_table`",
            ));
        }
        if self.calibrate == Some(0) {
            return Err(Invalid::new("calibrate", "calibrates on at least 1 training sequence, found 0"));
        }
        for (name, v) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Invalid::new(name, format!("must lie in [0, 1], found {v}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PpoConfig;

    #[test]
    fn validation_names_the_setting_at_fault() {
        assert!(PpoConfig::default().validate().is_ok());
        let err = |c: PpoConfig| c.validate().unwrap_err();
        assert_eq!(err(PpoConfig { gae_lambda: 1.5, ..Default::default() }).setting, "gae_lambda");
        assert_eq!(err(PpoConfig { num_minibatches: 0, ..Default::default() }).setting, "num_minibatches");
        assert_eq!(err(PpoConfig { calibrate: Some(0), ..Default::default() }).setting, "calibrate");
        let frozen = ahr_policy::PolicyConfig { prior_frozen: true, ..Default::default() };
        assert_eq!(err(PpoConfig { policy: frozen, ..Default::default() }).setting, "policy.prior_frozen");
        let lr = err(PpoConfig { learning_rate: -1.0, ..Default::default() });
        assert_eq!(lr.to_string(), "learning_rate: must be > 0, found -1");
    }

    #[test]
    fn learning_rate_anneals_linearly_to_zero() {
        let cfg = PpoConfig { learning_rate: 1e-3, anneal_lr: true, ..Default::default() };
        let lrs: Vec<f64> = (0..4).map(|it| cfg.learning_rate_at(it, 4)).collect();
        for (got, want) in lrs.iter().zip([1e-3, 7.5e-4, 5e-4, 2.5e-4]) {
            assert!((got - want).abs() < 1e-15, "{lrs:?}");
        }
        let flat = PpoConfig { anneal_lr: false, ..cfg };
        assert_eq!(flat.learning_rate_at(3, 4), 1e-3);
    }
}
