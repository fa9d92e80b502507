//! `ahr train-policy` and `ahr cartpole`: PPO runs.

use std::path::Path;

use ahr_ppo::Trainer;
use ahr_ppo::trainer::TrainError;
use ahr_train::policy::{PolicyRunArgs, load_ppo_config};
use anyhow::Result;
use serde::Serialize;

use crate::args::{Common, TrainPolicyArgs};
use crate::cartpole::CartPoleVec;
use crate::device::device;
use crate::progress::Progress;

/// Train a rank policy with PPO and export it (see [`crate::stages::train_policy`]).
pub fn train_policy(a: &TrainPolicyArgs, common: &Common, comm: &ahr_dist::Comm) -> Result<()> {
    crate::stages::train_policy(&PolicyRunArgs::from(a), &device(&common.device)?, comm)
}

/// What `ahr cartpole` writes.
#[derive(Debug, Serialize)]
pub struct CartPoleReport {
    /// Mean return of the last 20 finished episodes.
    pub episodic_return_last20: f64,
    /// Environment steps.
    pub env_steps: u64,
    /// Rollout steps per second.
    pub sps: f64,
    /// Seed.
    pub seed: u64,
}

/// Train PPO on CartPole-v1.
pub fn cartpole(
    config: &Path,
    seed: u64,
    workers: usize,
    out: Option<&Path>,
    common: &Common,
) -> Result<CartPoleReport> {
    let dev = device(&common.device)?;
    let ppo = load_ppo_config(config)?;
    let envs: Vec<Box<dyn ahr_env::VecEnv>> =
        (0..ppo.num_envs).map(|_| Box::new(CartPoleVec::new(1)) as Box<dyn ahr_env::VecEnv>).collect();
    let mut trainer = Trainer::new(ppo, envs, workers, seed, 0.0, None, dev)?;
    let mut progress = Progress::new("iteration", trainer.num_iterations());
    let total = trainer.num_iterations();
    let mut sink = ahr_ppo::metrics::NullSink;
    let outcome = trainer.train(&mut sink, |_, r| {
        progress.update(r.iteration, total, &format!("return {:.1} | {:.0} SPS", r.episodic_return, r.sps));
        Ok::<(), TrainError>(())
    })?;
    drop(progress);
    let eps = &outcome.last_episodes;
    let last: Vec<f64> = eps.iter().rev().take(20).map(|e| e.ret).collect();
    let report = CartPoleReport {
        episodic_return_last20: last.iter().sum::<f64>() / last.len().max(1) as f64,
        env_steps: trainer.state().global_step,
        sps: outcome.rollout_sps,
        seed,
    };
    println!(
        "CartPole-v1 seed {seed}: mean return of the last 20 episodes {:.1} after {} steps ({:.0} SPS)",
        report.episodic_return_last20, report.env_steps, report.sps
    );
    if let Some(out) = out {
        super::write_json(out, &report)?;
    }
    Ok(report)
}
