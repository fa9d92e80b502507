//! The PPO loop, CleanRL's `ppo.py` order: rollout → GAE → epochs × shuffled minibatches →
//! logging; plus budget mode's λ (the controller is the env's, `ahr_env::BudgetController`),
//! checkpoints and exact resume.

use std::path::Path;
use std::time::Instant;

use ahr_env::{BudgetController, EpisodeStats, VecEnv};
use ahr_policy::net::PolicyDims;
use ahr_policy::{ActorCritic, MaskedMultiCategorical, ObsBatch, ObsSpec, RunningNorm};
use ahr_tpa::checkpoint::{load_record, save_record, write_atomic};
use ahr_tpa::grad::clip_global_norm;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::PpoConfig;
use crate::gae::gae;
use crate::loss::{LossCoefs, normalize_advantages, ppo_loss};
use crate::metrics::MetricsSink;
use crate::workers::{Chunk, RolloutSettings, Snapshot, Workers, derive_seed};

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

/// The flattened rollout of one iteration, rows ordered `[step][env][stream]`.
struct Rollout {
    obs: ObsBatch,
    actions: Vec<usize>,
    logprobs: Vec<f32>,
    values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    episodes: Vec<EpisodeStats>,
}

fn flatten(chunks: Vec<Chunk>, heads: usize, gamma: f64, lambda: f64) -> Rollout {
    let n: usize = chunks.iter().map(|c| c.rows).sum();
    let steps = chunks.first().map_or(0, |c| c.obs.len());
    let mut r = Rollout {
        obs: ObsBatch::default(),
        actions: Vec::with_capacity(steps * n * heads),
        logprobs: Vec::with_capacity(steps * n),
        values: Vec::with_capacity(steps * n),
        advantages: Vec::new(),
        returns: Vec::new(),
        episodes: Vec::new(),
    };
    let (mut rewards, mut dones) = (Vec::with_capacity(steps * n), Vec::with_capacity(steps * n));
    for t in 0..steps {
        for c in &chunks {
            r.obs.extend(&c.obs[t]);
            let rows = t * c.rows..(t + 1) * c.rows;
            r.actions.extend_from_slice(&c.actions[rows.start * heads..rows.end * heads]);
            r.logprobs.extend_from_slice(&c.logprobs[rows.clone()]);
            r.values.extend_from_slice(&c.values[rows.clone()]);
            rewards.extend_from_slice(&c.rewards[rows.clone()]);
            dones.extend_from_slice(&c.dones[rows]);
        }
    }
    let next_value: Vec<f32> = chunks.iter().flat_map(|c| c.next_value.iter().copied()).collect();
    let next_done: Vec<bool> = chunks.iter().flat_map(|c| c.next_done.iter().copied()).collect();
    (r.advantages, r.returns) = gae(&rewards, &r.values, &dones, &next_value, &next_done, n, gamma, lambda);
    r.episodes = chunks.into_iter().flat_map(|c| c.episodes).collect();
    r
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// PPO over a set of environments.
pub struct Trainer {
    cfg: PpoConfig,
    net: ActorCritic,
    optim: ModuleOptimizer,
    state: TrainState,
    budget: Option<BudgetController>,
    workers: Workers,
    obs_spec: ObsSpec,
    dims: PolicyDims,
    rows_per_step: usize,
    seed: u64,
    train_device: Device,
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
        cfg.validate().map_err(TrainError::Other)?;
        let first = envs.first().ok_or_else(|| TrainError::Other("no environments".into()))?;
        let obs_spec = first.obs_spec();
        let dims = PolicyDims {
            obs_dim: obs_spec.dim(),
            vocab_size: obs_spec.vocab_size,
            heads: first.heads(),
            options: first.options(),
        };
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
        Ok(Self { cfg, net, optim, state, budget, workers, obs_spec, dims, rows_per_step, seed, train_device })
    }

    /// Iterations the config asks for.
    pub fn num_iterations(&self) -> u64 {
        self.cfg.num_iterations(self.rows_per_step)
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

    /// Save `policy.bpk`, `optim.bpk` and `state.json` into `dir` (each atomically).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| ahr_tpa::Error::io(dir, e))?;
        save_record(self.net.clone(), &dir.join("policy.bpk"))?;
        let optim_path = dir.join("optim.bpk");
        ahr_tpa::checkpoint::write_atomic_with(&optim_path, |tmp| {
            self.optim.save(tmp).map_err(|e| ahr_tpa::Error::Input(format!("{}: {e}", tmp.display())))
        })?;
        let json = serde_json::to_string_pretty(&self.state).expect("state should serialise");
        write_atomic(&dir.join("state.json"), json.as_bytes())?;
        Ok(())
    }

    /// Restore from a checkpoint written by [`Trainer::save_checkpoint`].
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        self.net = load_record(self.net.clone(), &dir.join("policy.bpk"))?;
        let optim_path = dir.join("optim.bpk");
        self.optim = AdamConfig::new()
            .with_epsilon(1e-5)
            .init()
            .load(&optim_path)
            .map_err(|e| TrainError::Other(format!("{}: {e}", optim_path.display())))?;
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| ahr_tpa::Error::io(&state_path, e))?;
        self.state =
            serde_json::from_str(&text).map_err(|e| TrainError::Other(format!("{}: {e}", state_path.display())))?;
        Ok(())
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
            let lr = if self.cfg.anneal_lr {
                (1.0 - it as f64 / num_iterations as f64) * self.cfg.learning_rate
            } else {
                self.cfg.learning_rate
            };
            let snapshot = Snapshot {
                net: self.net.valid(),
                norm: self.state.norm.clone(),
                lambda_mem: self.state.lambda_mem,
                iteration: it,
            };
            let start = Instant::now();
            let chunks = self.workers.collect(&snapshot).map_err(TrainError::Worker)?;
            let secs = start.elapsed().as_secs_f64();
            let rollout = flatten(chunks, self.dims.heads, self.cfg.gamma, self.cfg.gae_lambda);
            let steps = (rollout.obs.len) as u64;
            rollout_secs += secs;
            rollout_steps += steps;
            self.state.global_step += steps;

            let stats = self.update(&rollout, lr, coefs, it)?;
            if self.cfg.norm_obs {
                self.state.norm.update(&rollout.obs.features, rollout.obs.len);
            }
            let episodes = &rollout.episodes;
            let mem_frac = mean(episodes.iter().map(|e| e.mem_frac));
            if let Some(b) = self.budget
                && mem_frac.is_finite()
            {
                let (lambda, integral) = b.step(self.state.lambda_mem, self.state.lambda_integral, mem_frac);
                self.state.lambda_mem = lambda;
                self.state.lambda_integral = Some(integral);
            }
            self.state.iteration += 1;
            let report = IterationReport {
                iteration: self.state.iteration,
                global_step: self.state.global_step,
                episodic_return: mean(episodes.iter().map(|e| e.ret)),
                mem_frac,
                accuracy: mean(episodes.iter().map(|e| e.accuracy)),
                lambda_mem: self.state.lambda_mem,
                sps: steps as f64 / secs.max(1e-9),
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

    fn log(
        &self,
        sink: &mut dyn MetricsSink,
        r: &IterationReport,
        s: &UpdateStats,
        episodes: &[EpisodeStats],
        lr: f64,
    ) {
        let step = r.global_step;
        sink.scalar("charts/learning_rate", lr, step);
        sink.scalar("charts/SPS", r.sps, step);
        if !episodes.is_empty() {
            sink.scalar("charts/episodic_return", r.episodic_return, step);
            sink.scalar("charts/episodic_length", mean(episodes.iter().map(|e| e.len as f64)), step);
        }
        sink.scalar("losses/value_loss", s.v_loss, step);
        sink.scalar("losses/policy_loss", s.pg_loss, step);
        sink.scalar("losses/entropy", s.entropy, step);
        sink.scalar("losses/old_approx_kl", s.old_approx_kl, step);
        sink.scalar("losses/approx_kl", s.approx_kl, step);
        sink.scalar("losses/clipfrac", s.clipfrac, step);
        sink.scalar("losses/explained_variance", s.explained_variance, step);
        let has_ranks = episodes.iter().any(|e| !e.option_counts.is_empty());
        if has_ranks {
            sink.scalar("env/task_loss", mean(episodes.iter().map(|e| e.task_loss)), step);
            sink.scalar("env/accuracy", r.accuracy, step);
            sink.scalar("env/mem_frac", r.mem_frac, step);
            sink.scalar("env/flops_frac", mean(episodes.iter().map(|e| e.flops_frac)), step);
            sink.scalar("env/lambda_mem", r.lambda_mem, step);
            let layers = episodes[0].option_counts.len();
            for l in 0..layers {
                let options = episodes[0].option_counts[l].len();
                let counts: Vec<u64> =
                    (0..options).map(|o| episodes.iter().map(|e| e.option_counts[l][o]).sum()).collect();
                sink.histogram(&format!("ranks/layer_{l}"), &counts, step);
            }
        }
    }

    fn update(&mut self, r: &Rollout, lr: f64, coefs: LossCoefs, iteration: u64) -> Result<UpdateStats, TrainError> {
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
        Ok(stats)
    }
}

/// Means over the update's minibatches.
#[derive(Clone, Copy, Debug, Default)]
struct UpdateStats {
    pg_loss: f64,
    v_loss: f64,
    entropy: f64,
    old_approx_kl: f64,
    approx_kl: f64,
    clipfrac: f64,
    explained_variance: f64,
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
