//! Rollout throughput: environments stepped by the crossbeam workers under a fixed random policy,
//! the measurement behind `ahr bench rollout` (1 and N workers side by side).

use std::time::Instant;

use ahr_env::VecEnv;
use ahr_policy::net::PolicyDims;
use ahr_policy::{ActorCritic, PolicyConfig, RunningNorm};
use burn::tensor::Device;
use serde::Serialize;

use crate::workers::{RolloutSettings, Snapshot, Workers};

/// One worker count's throughput.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutRun {
    /// Rollout worker threads.
    pub workers: usize,
    /// Environment steps (rows) collected.
    pub env_steps: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Environment steps per second.
    pub sps: f64,
    /// SPS over the first worker count's SPS.
    pub ratio_to_first: f64,
}

/// Collect `iterations` rollouts of `num_steps` steps from the environments `make_envs` builds,
/// once per worker count; `log` sees each finished run.
pub fn rollout(
    make_envs: impl Fn() -> Vec<Box<dyn VecEnv>>,
    workers: &[usize],
    num_steps: usize,
    iterations: u64,
    dev: &Device,
    mut log: impl FnMut(&RolloutRun),
) -> Result<Vec<RolloutRun>, String> {
    let mut runs: Vec<RolloutRun> = Vec::new();
    for &w in workers {
        let envs = make_envs();
        let first = envs.first().ok_or("no environments")?;
        let obs = first.obs_spec();
        let dims = PolicyDims {
            obs_dim: obs.dim(),
            vocab_size: obs.vocab_size,
            heads: first.heads(),
            options: first.options(),
            candidate_features: obs.candidate_features,
        };
        let rows: usize = envs.iter().map(|e| e.num_envs()).sum();
        let settings =
            RolloutSettings { num_steps, gamma: 0.99, seed: 0, reset_each_iteration: true, device: dev.clone() };
        let pool = Workers::new(envs, w, settings);
        let net = ActorCritic::new(&PolicyConfig::default(), dims, dev);
        let norm = RunningNorm::new(dims.obs_dim);
        let start = Instant::now();
        for it in 0..iterations {
            let snap = Snapshot { net: net.clone(), norm: norm.clone(), lambda_mem: 1.0, iteration: it, first_env: 0 };
            pool.collect(&snap)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let env_steps = iterations * (rows * num_steps) as u64;
        let sps = env_steps as f64 / seconds;
        let base = runs.first().map_or(sps, |r| r.sps);
        let run = RolloutRun { workers: w, env_steps, seconds, sps, ratio_to_first: sps / base };
        log(&run);
        runs.push(run);
    }
    Ok(runs)
}
