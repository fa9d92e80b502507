//! `ahr bench …`: throughput figures measured side by side in one process.

use std::path::PathBuf;
use std::time::Instant;

use ahr_tasks::Task;
use ahr_tpa::{Model, cost};
use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::args::Common;
use crate::device::device;
use crate::files::{EnvFile, ModelFile};
use crate::pretrain::{StepTimings, optimizer, sample_choices, train_step};

#[derive(Debug, Serialize)]
struct TrainRun {
    model_config: PathBuf,
    attention: String,
    params: usize,
    kv_bytes_per_token_exact: usize,
    steps: u64,
    tokens_per_sec: f64,
    ratio_to_first: f64,
    /// Seconds per step in forward, backward and update.
    seconds_per_step: StepTimings,
}

/// Pretraining tokens/s of each preset on the same data, with ratios against the first.
pub fn bench_train(
    model_configs: &[PathBuf],
    head_at: crate::evaluate::HeadAt,
    env: &std::path::Path,
    steps: u64,
    out: Option<&std::path::Path>,
    common: &Common,
) -> Result<()> {
    let dev = device(&common.device)?;
    let train_dev = dev.clone().autodiff();
    let task =
        Task::load(&EnvFile::load(env)?.task).with_context(|| format!("{}: cannot load the task", env.display()))?;
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let mut runs: Vec<TrainRun> = Vec::new();
    for path in model_configs {
        let file = ModelFile::load(path)?;
        let (cfg, pc) = (&file.model, &file.pretrain);
        if task.vocab_needed() > cfg.vocab_size {
            bail!(
                "{}: vocab_size {} is smaller than the task needs ({})",
                path.display(),
                cfg.vocab_size,
                task.vocab_needed()
            );
        }
        let mut model = Model::new(cfg, &train_dev);
        let params = burn::module::Module::num_params(&model);
        let mut optim = optimizer(pc);
        let mut tokens = 0u64;
        let mut start = Instant::now();
        let mut timings = StepTimings::default();
        for step in 0..=steps {
            if step == 1 {
                // Step 0 warms up allocations and caches; the clock starts after it.
                start = Instant::now();
                tokens = 0;
                timings = StepTimings::default();
            }
            let batch = task.train_batch(0, step, pc.batch_size);
            let choices = sample_choices(cfg, &pc.nested, 0, step, batch.batch_size, batch.seq_len);
            let (next, _, _) = train_step(
                model,
                &mut optim,
                &batch,
                &choices,
                pc.lr_at(step),
                pc.max_grad_norm,
                &train_dev,
                head_at,
                &mut timings,
            )?;
            model = next;
            tokens += (batch.batch_size * batch.seq_len) as u64;
        }
        let tps = tokens as f64 / start.elapsed().as_secs_f64();
        let per_step = |x: f64| x / steps as f64;
        let timings = StepTimings {
            forward: per_step(timings.forward),
            backward: per_step(timings.backward),
            update: per_step(timings.update),
        };
        let first = runs.first().map_or(tps, |r| r.tokens_per_sec);
        println!(
            "{:<32} {:>4} {:>9} params  {:>8.0} tokens/s  ×{:.2}",
            path.display(),
            format!("{:?}", cfg.attention).to_lowercase(),
            params,
            tps,
            tps / first
        );
        runs.push(TrainRun {
            model_config: path.clone(),
            attention: format!("{:?}", cfg.attention).to_lowercase(),
            params,
            kv_bytes_per_token_exact: cost::exact_bytes_per_token(cfg),
            steps,
            tokens_per_sec: tps,
            ratio_to_first: tps / first,
            seconds_per_step: timings,
        });
    }
    if let Some(out) = out {
        super::write_json(out, &runs)?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RolloutRun {
    workers: usize,
    env_steps: u64,
    seconds: f64,
    sps: f64,
    ratio_to_first: f64,
}

/// Rollout throughput of the rank environment with different worker counts, side by side.
pub fn bench_rollout(
    model_dir: &std::path::Path,
    env: &std::path::Path,
    workers: &[usize],
    num_envs: usize,
    iterations: u64,
    out: Option<&std::path::Path>,
    common: &Common,
) -> Result<()> {
    use ahr_policy::net::PolicyDims;
    use ahr_policy::{ActorCritic, PolicyConfig, RunningNorm};
    use ahr_ppo::workers::{RolloutSettings, Snapshot, Workers};

    let dev = device(&common.device)?;
    let model = ahr_tpa::checkpoint::load_model(model_dir, &dev)?;
    let spec = EnvFile::load(env)?;
    let task = Task::load(&spec.task).with_context(|| format!("{}: cannot load the task", env.display()))?;
    let seq_len = task.train_batch(0, 0, 1).seq_len;
    let mut runs: Vec<RolloutRun> = Vec::new();
    for &w in workers {
        let envs: Vec<_> =
            (0..num_envs).map(|_| super::train_policy::make_env(&model, &task, &spec, false, 1, &dev)).collect();
        let obs = envs[0].obs_spec();
        let dims = PolicyDims {
            obs_dim: obs.dim(),
            vocab_size: obs.vocab_size,
            heads: envs[0].heads(),
            options: envs[0].options(),
        };
        let rows: usize = envs.iter().map(|e| e.num_envs()).sum();
        let settings = RolloutSettings {
            num_steps: seq_len,
            gamma: 0.99,
            seed: 0,
            reset_each_iteration: true,
            device: dev.clone(),
        };
        let pool = Workers::new(envs, w, settings);
        let net = ActorCritic::new(&PolicyConfig::default(), dims, &dev);
        let norm = RunningNorm::new(dims.obs_dim);
        let start = Instant::now();
        for it in 0..iterations {
            let snap = Snapshot { net: net.clone(), norm: norm.clone(), lambda_mem: 1.0, iteration: it };
            pool.collect(&snap).map_err(anyhow::Error::msg)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let env_steps = iterations * (rows * seq_len) as u64;
        let sps = env_steps as f64 / seconds;
        let first = runs.first().map_or(sps, |r| r.sps);
        println!("{w} worker(s): {env_steps} env steps in {seconds:.2} s = {sps:.0} SPS  ×{:.2}", sps / first);
        runs.push(RolloutRun { workers: w, env_steps, seconds, sps, ratio_to_first: sps / first });
    }
    if let Some(out) = out {
        super::write_json(out, &runs)?;
    }
    Ok(())
}
