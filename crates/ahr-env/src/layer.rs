//! The rank environment, per-layer mode: one option per layer for a whole sequence, a contextual
//! bandit (DESIGN.md §5). The context is what the per-token agent sees at the first token; the
//! sequence then runs through one parallel forward with those choices, and the reward is
//! `−w_task·Σ loss − λ_mem·mem − λ_flops·flops` over the sequence (the per-token return's terms).

use ahr_policy::{ObsBatch, ObsSpec};
use ahr_tasks::IGNORE;
use ahr_tpa::{Choices, Model, StoreOption, cost};
use burn::tensor::Device;

use crate::rank::{RankEnv, parallel_nll};
use crate::spec::{RewardConfig, TaskBaseline};
use crate::vec_env::{EnvError, EpisodeStats, VecEnv, VecStep};

/// Per-layer rank environment over `streams` sequences per step.
pub struct LayerEnv {
    inner: RankEnv,
    model: Model,
    reward: RewardConfig,
    device: Device,
    lambda_mem: f64,
}

impl LayerEnv {
    /// An environment over `model` and `task` (see [`RankEnv::new`]).
    pub fn new(model: Model, task: ahr_tasks::Task, reward: RewardConfig, streams: usize, device: Device) -> Self {
        let lambda_mem = crate::budget::initial_lambda(&reward);
        let inner = RankEnv::new(model.clone(), task, reward.clone(), streams, device.clone());
        Self { inner, model, reward, device, lambda_mem }
    }

    /// Build observations of layout `version` (see [`RankEnv::with_obs_version`]).
    pub fn with_obs_version(mut self, version: u32) -> Self {
        self.inner = self.inner.with_obs_version(version);
        self
    }

    /// See [`RankEnv::with_positions_seen`].
    pub fn with_positions_seen(mut self, positions: Option<usize>) -> Self {
        self.inner = self.inner.with_positions_seen(positions);
        self
    }

    /// Draw episodes from the task's held-out set (see [`RankEnv::held_out`]).
    pub fn held_out(mut self) -> Self {
        self.inner = self.inner.held_out();
        self
    }
}

impl VecEnv for LayerEnv {
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }

    fn obs_spec(&self) -> ObsSpec {
        self.inner.obs_spec()
    }

    fn heads(&self) -> usize {
        self.inner.heads()
    }

    fn options(&self) -> usize {
        self.inner.options()
    }

    fn reset(&mut self, seed: u64) -> Result<ObsBatch, EnvError> {
        self.inner.reset(seed)
    }

    fn set_lambda_mem(&mut self, lambda: f64) {
        self.lambda_mem = lambda;
    }

    fn step(&mut self, actions: &[usize]) -> Result<VecStep, EnvError> {
        let cfg = self.model.config().clone();
        let batch = self.inner.batch().clone();
        let (b_n, t_n, l_n) = (batch.batch_size, batch.seq_len, cfg.n_layers);
        let choices = Choices::from_fn(b_n, t_n, l_n, |b, _, l| actions[b * l_n + l]);
        let (nll, argmax) = parallel_nll(&self.model, &batch, &choices, &self.device)?;
        let safe: Vec<i64> = batch.labels.iter().map(|&l| if l == IGNORE { 0 } else { l }).collect();
        // Under TaskBaseline::Exact the task term is measured against the exact choice's loss.
        let base = match self.reward.task_baseline {
            TaskBaseline::None => vec![0.0; b_n * t_n],
            TaskBaseline::Exact => parallel_nll(&self.model, &batch, &Choices::exact(&cfg, b_n, t_n), &self.device)?.0,
        };
        let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
        let exact_flops = cost::exact_sequence_flops(&cfg, t_n).max(1.0);
        let mut reward = vec![0f32; b_n];
        let mut episodes = Vec::with_capacity(b_n);
        for b in 0..b_n {
            let (mut loss, mut base_loss, mut labelled, mut correct) = (0f64, 0f64, 0u64, 0u64);
            for t in 0..t_n {
                let i = b * t_n + t;
                if batch.labels[i] != IGNORE {
                    loss += nll[i] as f64;
                    base_loss += base[i] as f64;
                    labelled += 1;
                    correct += (argmax[i] == safe[i]) as u64;
                }
            }
            let opts: Vec<StoreOption> = (0..l_n).map(|l| cfg.menu[actions[b * l_n + l]]).collect();
            let c = cost::sequence_cost(&cfg, t_n, |_, l| (opts[l], None));
            let mem = c.kv_bytes_per_token / exact_bytes;
            let flops = c.flops_per_token * t_n as f64 / exact_flops;
            let r = -self.reward.w_task * (loss - base_loss) - self.lambda_mem * mem - self.reward.lambda_flops * flops;
            reward[b] = r as f32;
            let mut counts = vec![vec![0u64; cfg.menu.len()]; l_n];
            for l in 0..l_n {
                counts[l][actions[b * l_n + l]] = t_n as u64;
            }
            episodes.push(EpisodeStats {
                reviews: 0,
                review_changes: 0,
                evictions: Vec::new(),
                demotions: Vec::new(),
                ret: r,
                len: 1,
                task_loss: loss / labelled.max(1) as f64,
                accuracy: correct as f64 / labelled.max(1) as f64,
                loss_sum: loss,
                labelled,
                correct,
                mem_frac: mem,
                peak_frac: c.peak_bytes_per_token / exact_bytes,
                flops_frac: flops,
                option_counts: counts,
                position_counts: Vec::new(),
            });
        }
        Ok(VecStep::all_done(self.inner.next_episode()?, reward, episodes))
    }
}
