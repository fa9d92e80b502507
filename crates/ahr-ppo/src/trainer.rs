//! The PPO loop, CleanRL's `ppo.py` order: rollout (`workers`) → GAE (`buffer`) → epochs ×
//! shuffled minibatches (`update`) → logging (`logging`); budget mode's λ (the controller is the
//! env's, `ahr_env::BudgetController`); checkpoints and exact resume (`checkpoint`).
//!
//! DD-PPO (Wijmans et al. 2019; DESIGN.md §11) when joined to a group with [`Trainer::with_comm`]: every
//! rank keeps its own rollout workers and environments, computes GAE on its own rollout and sums
//! gradients over ranks at every minibatch (the same minibatch count everywhere); advantage
//! normalisation, the target-KL stop, the observation statistics and budget mode's λ are computed
//! from values summed over ranks, so the ranks never diverge. Rank r's E environments are
//! environments rE … rE + E − 1 of the run (seeded as such), so N ranks sample exactly what one
//! process with N·E environments samples, and with one minibatch per update they take its steps
//! too (up to float summation order). With one process every collective is the identity and
//! training is exactly the single-process loop.

use std::time::Instant;

use ahr_dist::{Comm, broadcast_module, module_digest};
use ahr_env::{BudgetController, EpisodeStats, VecEnv};
use ahr_policy::net::PolicyDims;
use ahr_policy::{ActorCritic, ObsSpec, RunningNorm};
use burn::module::Module;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::buffer::{flatten, mean};
use crate::config::PpoConfig;
use crate::loss::LossCoefs;
use crate::metrics::MetricsSink;
use crate::workers::{RolloutSettings, Snapshot, Workers};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A rollout worker failed.
    #[error("{0}")]
    Worker(String),
    /// The loss or a gradient became NaN/inf.
    #[error("{0}")]
    NonFinite(String),
    /// Checkpoint I/O.
    #[error(transparent)]
    Io(#[from] ahr_tpa::Error),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// Training state saved in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Iterations done.
    pub iteration: u64,
    /// Environment steps done (rows).
    pub global_step: u64,
    /// Observation normalisation.
    pub norm: RunningNorm,
    /// Current memory weight.
    pub lambda_mem: f64,
    /// Budget mode's integral term (absent in checkpoints from before the PI controller).
    #[serde(default)]
    pub lambda_integral: Option<f64>,
}

/// Summary of one iteration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IterationReport {
    /// Iteration (1-based).
    pub iteration: u64,
    /// Environment steps so far.
    pub global_step: u64,
    /// Mean return of episodes finished in this iteration (NaN if none).
    pub episodic_return: f64,
    /// Mean memory fraction of those episodes.
    pub mem_frac: f64,
    /// Mean task accuracy of those episodes.
    pub accuracy: f64,
    /// λ after this iteration.
    pub lambda_mem: f64,
    /// Rollout steps per second.
    pub sps: f64,
    /// Minibatch gradient steps of this iteration's update (fewer than epochs × minibatches when
    /// the target-KL stop ends it early).
    pub updates: u64,
}

/// Result of [`Trainer::train`].
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// All finished episodes of the last 20 % of iterations (at least the last one).
    pub last_episodes: Vec<EpisodeStats>,
    /// Per-iteration reports.
    pub reports: Vec<IterationReport>,
    /// Overall environment steps per second during rollouts.
    pub rollout_sps: f64,
}

/// PPO over a set of environments.
pub struct Trainer {
    pub(crate) cfg: PpoConfig,
    pub(crate) net: ActorCritic,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) state: TrainState,
    pub(crate) budget: Option<BudgetController>,
    pub(crate) workers: Workers,
    pub(crate) obs_spec: ObsSpec,
    pub(crate) dims: PolicyDims,
    pub(crate) rows_per_step: usize,
    pub(crate) seed: u64,
    pub(crate) train_device: Device,
    pub(crate) comm: Comm,
}

impl Trainer {
    /// Build a trainer over `envs` (all alike) with `num_workers` rollout threads.
    pub fn new(
        cfg: PpoConfig,
        envs: Vec<Box<dyn VecEnv>>,
        num_workers: usize,
        seed: u64,
        lambda_mem: f64,
        budget: Option<BudgetController>,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.validate().map_err(|e| TrainError::Other(e.to_string()))?;
        let first = envs.first().ok_or_else(|| TrainError::Other("no environments".into()))?;
        let obs_spec = first.obs_spec();
        let dims = PolicyDims {
            obs_dim: obs_spec.dim(),
            vocab_size: obs_spec.vocab_size,
            heads: first.heads(),
            options: first.options(),
            candidate_features: obs_spec.candidate_features,
        };
        if cfg.baseline == crate::AdvantageBaseline::Partner && envs.iter().any(|e| e.group() != 2) {
            return Err(TrainError::Other(
                "baseline = \"partner\" needs paired environments (env file: [env] paired = true)".into(),
            ));
        }
        let rows_per_step = envs.iter().map(|e| e.num_envs()).sum();
        let train_device = device.clone().autodiff();
        device.seed(seed);
        let net = ActorCritic::new(&cfg.policy, dims, &train_device);
        let optim = AdamConfig::new().with_epsilon(1e-5).init();
        let settings = RolloutSettings {
            num_steps: cfg.num_steps,
            gamma: cfg.gamma,
            seed,
            reset_each_iteration: cfg.reset_each_iteration,
            device: device.clone(),
        };
        let workers = Workers::new(envs, num_workers, settings);
        let state = TrainState {
            iteration: 0,
            global_step: 0,
            norm: RunningNorm::new(dims.obs_dim),
            lambda_mem,
            lambda_integral: None,
        };
        let comm = Comm::single();
        Ok(Self { cfg, net, optim, state, budget, workers, obs_spec, dims, rows_per_step, seed, train_device, comm })
    }

    /// Start the actor from a rule: head `h` prefers option `prefer[h]` by the config's
    /// `[policy] prior_logit` ([`ahr_policy::PolicyConfig::prior`]). Call before
    /// [`Trainer::with_comm`] (which gives every rank rank 0's network); a resumed run loads its
    /// checkpoint's network over it.
    pub fn with_prior(mut self, prefer: &[Option<usize>]) -> Self {
        self.net = self.net.with_prior(prefer, self.cfg.policy.prior_logit);
        self
    }

    /// Start the actor from a per-token rule: `prefer[t · layers + l]` is token `t`'s option on
    /// layer `l` ([`ahr_policy::PolicyConfig::prior_table`], resolved by
    /// [`ahr_policy::PriorTable::resolve`]). Call as [`Trainer::with_prior`].
    pub fn with_token_prior(mut self, prefer: &[usize], layers: usize) -> Result<Self, String> {
        self.net = self.net.with_token_prior(prefer, layers, self.cfg.policy.prior_logit)?;
        Ok(self)
    }

    /// This trainer as one rank of a DD-PPO group (module docs): every rank builds its trainer with
    /// the same arguments and its own environments (the same number on every rank), then calls
    /// this; the policy becomes rank 0's and rank r's environments are numbered (seeded) from
    /// r × their count on. `total_timesteps` counts the steps of all ranks together. Every rank
    /// must then call [`Trainer::train`]; an error on one rank leaves the others waiting: end the
    /// job with [`Comm::abort`].
    pub fn with_comm(mut self, comm: Comm) -> Self {
        self.net = broadcast_module(&comm, self.net);
        self.comm = comm;
        self
    }

    /// Iterations the config asks for (environment steps of all ranks together).
    pub fn num_iterations(&self) -> u64 {
        self.cfg.num_iterations(self.rows_per_step * self.comm.size())
    }

    /// The process group this trainer is a rank of.
    pub fn comm(&self) -> Comm {
        self.comm
    }

    /// The training state (iteration, normalisation, λ).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The policy on the inference device.
    pub fn policy(&self) -> ActorCritic {
        self.net.valid()
    }

    /// Observation spec and network sizes.
    pub fn spec(&self) -> (&ObsSpec, PolicyDims) {
        (&self.obs_spec, self.dims)
    }

    /// Run the remaining iterations. `on_iteration` sees each report (progress bars, checkpoints);
    /// returning an error stops the run.
    pub fn train(
        &mut self,
        sink: &mut dyn MetricsSink,
        mut on_iteration: impl FnMut(&Trainer, &IterationReport) -> Result<(), TrainError>,
    ) -> Result<TrainOutcome, TrainError> {
        let num_iterations = self.num_iterations();
        let tail_from = num_iterations - (num_iterations / 5).max(1);
        let mut outcome = TrainOutcome { last_episodes: Vec::new(), reports: Vec::new(), rollout_sps: 0.0 };
        let (mut rollout_secs, mut rollout_steps) = (0f64, 0u64);
        let coefs = LossCoefs {
            clip_coef: self.cfg.clip_coef,
            clip_vloss: self.cfg.clip_vloss,
            ent_coef: self.cfg.ent_coef,
            vf_coef: self.cfg.vf_coef,
        };
        while self.state.iteration < num_iterations {
            let it = self.state.iteration;
            let lr = self.cfg.learning_rate_at(it, num_iterations);
            let snapshot = Snapshot {
                net: self.net.valid(),
                norm: self.state.norm.clone(),
                lambda_mem: self.state.lambda_mem,
                iteration: it,
                first_env: self.comm.rank() * self.workers.num_envs(),
            };
            let start = Instant::now();
            let chunks = self.workers.collect(&snapshot).map_err(TrainError::Worker)?;
            let secs = start.elapsed().as_secs_f64();
            let rollout = flatten(chunks, self.dims.heads, &self.cfg);
            let steps = (rollout.obs.len) as u64;
            rollout_secs += secs;
            rollout_steps += steps;
            self.state.global_step += steps * self.comm.size() as u64;

            let stats = self.update(&rollout, lr, coefs, it)?;
            if self.cfg.norm_obs {
                // Every rank's observations (the sums are the identity in one process).
                let comm = self.comm;
                self.state.norm.update_with(&rollout.obs.features, rollout.obs.len, |x| comm.sum_f64(x));
            }
            let episodes = &rollout.episodes;
            let fields: [fn(&EpisodeStats) -> f64; 3] = [|e| e.ret, |e| e.mem_frac, |e| e.accuracy];
            let [episodic_return, mem_frac, accuracy] = fields.map(|f| self.global_mean(episodes.iter().map(f)));
            if let Some(b) = self.budget
                && mem_frac.is_finite()
            {
                let progress = it as f64 / num_iterations as f64;
                let (lambda, integral) = b.step(self.state.lambda_mem, self.state.lambda_integral, mem_frac, progress);
                self.state.lambda_mem = lambda;
                self.state.lambda_integral = Some(integral);
            }
            self.state.iteration += 1;
            if self.comm.is_distributed() && !self.comm.agree(module_digest(&self.net)) {
                return Err(TrainError::Other(format!(
                    "iteration {}: the ranks' policies differ; DD-PPO updates must stay identical",
                    self.state.iteration
                )));
            }
            let report = IterationReport {
                iteration: self.state.iteration,
                global_step: self.state.global_step,
                episodic_return,
                mem_frac,
                accuracy,
                lambda_mem: self.state.lambda_mem,
                sps: steps as f64 / secs.max(1e-9),
                updates: stats.updates,
            };
            self.log(sink, &report, &stats, episodes, lr);
            if it >= tail_from {
                outcome.last_episodes.extend(episodes.iter().cloned());
            }
            on_iteration(self, &report)?;
            outcome.reports.push(report);
        }
        sink.flush();
        outcome.rollout_sps = rollout_steps as f64 / rollout_secs.max(1e-9);
        Ok(outcome)
    }

    /// Mean of `values` over every rank's (NaN if there are none); every rank must call it.
    pub(crate) fn global_mean(&self, values: impl Iterator<Item = f64>) -> f64 {
        if !self.comm.is_distributed() {
            return mean(values);
        }
        let mut sums = values.fold([0.0, 0.0], |[s, n], v| [s + v, n + 1.0]);
        self.comm.sum_f64(&mut sums);
        if sums[1] == 0.0 { f64::NAN } else { sums[0] / sums[1] }
    }
}
