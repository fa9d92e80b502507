//! `ahr bench …`: throughput figures measured side by side in one process.

use std::path::PathBuf;

use ahr_infer::bench::DecodeReport;
use ahr_tasks::Task;
use ahr_train::bench::TrainRun;
use ahr_train::files::EnvFile;
use anyhow::{Context, Result};

use crate::args::Common;
use crate::device::device;

pub use ahr_train::bench::PyTorchReference;

/// Pretraining tokens/s of each preset on the same data, with ratios against the first
/// (`ahr_train::bench`).
pub fn bench_train(
    model_configs: &[PathBuf],
    devices: &[String],
    pytorch: Option<&PyTorchReference>,
    head_at: ahr_train::evaluate::HeadAt,
    env: &std::path::Path,
    steps: u64,
    out: Option<&std::path::Path>,
    common: &Common,
) -> Result<()> {
    let task =
        Task::load(&EnvFile::load(env)?.task).with_context(|| format!("{}: cannot load the task", env.display()))?;
    let devices: Vec<String> = if devices.is_empty() { vec![common.device.clone()] } else { devices.to_vec() };
    let resolved = devices.iter().map(|d| Ok((d.clone(), device(d)?))).collect::<Result<Vec<_>>>()?;
    let mut runs: Vec<TrainRun> = Vec::new();
    let mut report = |mut run: TrainRun| {
        let first = runs.first().map_or(run.tokens_per_sec, |r| r.tokens_per_sec);
        run.ratio_to_first = run.tokens_per_sec / first;
        let params = if run.params > 0 { format!("{} params", run.params) } else { String::new() };
        println!(
            "{:<32} {:<18} {:>4} {:>16}  {:>8.0} tokens/s  ×{:.2}",
            run.model_config.display(),
            run.device,
            run.attention,
            params,
            run.tokens_per_sec,
            run.ratio_to_first
        );
        runs.push(run);
    };
    for ((name, dev), path) in resolved.iter().flat_map(|d| model_configs.iter().map(move |p| (d, p))) {
        report(ahr_train::bench::train_throughput(path, name, dev, &task, steps, head_at)?);
    }
    if let Some(reference) = pytorch {
        for path in model_configs {
            report(reference.run(path, &task, steps, &crate::alloc::child_env())?);
        }
    }
    if let Some(out) = out {
        super::write_json(out, &runs)?;
    }
    Ok(())
}

/// Rollout throughput of the rank environment with different worker counts, side by side
/// (`ahr_ppo::bench::rollout`).
pub fn bench_rollout(
    model_dir: &std::path::Path,
    env: &std::path::Path,
    workers: &[usize],
    num_envs: usize,
    iterations: u64,
    out: Option<&std::path::Path>,
    common: &Common,
) -> Result<()> {
    let dev = device(&common.device)?;
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(model_dir, env, &dev)?;
    let seq_len = task.train_batch(0, 0, 1).seq_len;
    let make = || (0..num_envs).map(|_| ahr_env::make_env(&model, &task, &spec, false, 1, &dev)).collect();
    let runs = ahr_ppo::bench::rollout(make, workers, seq_len, iterations, &dev, |r| {
        println!(
            "{} worker(s): {} env steps in {:.2} s = {:.0} SPS  ×{:.2}",
            r.workers, r.env_steps, r.seconds, r.sps, r.ratio_to_first
        )
    })
    .map_err(anyhow::Error::msg)?;
    if let Some(out) = out {
        super::write_json(out, &runs)?;
    }
    Ok(())
}

/// `ahr bench decode` (see `ahr_infer::bench`): the policy's option mix is measured on 8
/// held-out sequences of `env` (or on fixed pseudo-random prompts).
pub fn bench_decode(
    model_dir: &std::path::Path,
    policy_dir: Option<&std::path::Path>,
    env: Option<&std::path::Path>,
    ctxs: &[usize],
    batches: &[usize],
    reps: usize,
    cold: bool,
    out: Option<&std::path::Path>,
    common: &Common,
) -> Result<DecodeReport> {
    let dev = device(&common.device)?;
    let model = ahr_train::load_policy_model(model_dir, policy_dir, &dev)?;
    let cfg = model.config().clone();
    let policy = match policy_dir {
        Some(dir) => {
            Some(ahr_infer::RankPolicy::load(dir, &model, &ahr_tpa::checkpoint::fingerprint(model_dir)?, &dev)?)
        }
        None => None,
    };
    let prompts: Vec<Vec<u32>> = match env {
        Some(path) => {
            let task = ahr_env::load_task(&EnvFile::load(path)?, path, &cfg).map_err(anyhow::Error::msg)?;
            let b = task.valid_batch(0, 8);
            b.inputs.chunks(b.seq_len).map(<[u32]>::to_vec).collect()
        }
        None => (0..8u32)
            .map(|s| (0..256u32).map(|t| 1 + (s * 7919 + t * 104_729) % (cfg.vocab_size as u32 - 1)).collect())
            .collect(),
    };
    let report = ahr_infer::bench::decode(
        &model,
        policy.as_ref().map(|p| (p, prompts.as_slice())),
        ctxs,
        batches,
        reps,
        cold,
        &dev,
        |r| {
            eprintln!(
                "ctx {:>6} batch {:>2} {:<14} {:>9.2} ms  {:>11} bytes  bound {:.3} ms",
                r.ctx, r.batch, r.cache, r.step_ms, r.bytes, r.bound_ms
            )
        },
    )
    .map_err(|e| match e {
        ahr_infer::InferError::Input(m) => anyhow::anyhow!("--ctx, --batch, --reps: {m}"),
        e => e.into(),
    })?;
    if let Some(path) = out {
        super::write_json(path, &report)?;
    }
    Ok(report)
}
