//! `ahr bench …`: throughput figures measured side by side in one process.

use std::path::PathBuf;
use std::time::Instant;

use ahr_infer::bench::DecodeReport;
use ahr_tasks::Task;
use ahr_tpa::{Model, cost};
use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::args::Common;
use crate::device::device;
use ahr_train::files::{EnvFile, ModelFile};
use ahr_train::pretrain::{StepTimings, optimizer, sample_choices, train_step};

#[derive(Debug, Serialize)]
struct TrainRun {
    model_config: PathBuf,
    /// `cpu`, `tch-cpu`, … or `pytorch-eager` / `pytorch-eager-cuda` (the reference script).
    device: String,
    attention: String,
    params: usize,
    kv_bytes_per_token_exact: usize,
    steps: u64,
    tokens_per_sec: f64,
    ratio_to_first: f64,
    /// Seconds per step in forward, backward and update.
    seconds_per_step: StepTimings,
}

/// The same training step in plain PyTorch eager (`bench/pytorch_reference.py`).
#[derive(Debug, Clone)]
pub struct PyTorchReference {
    /// The Python that runs it (with torch installed).
    pub python: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

/// Pretraining tokens/s of each preset on the same data, with ratios against the first.
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
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let devices: Vec<String> = if devices.is_empty() { vec![common.device.clone()] } else { devices.to_vec() };
    let resolved = devices.iter().map(|d| Ok((d.clone(), device(d)?))).collect::<Result<Vec<_>>>()?;
    let mut runs: Vec<TrainRun> = Vec::new();
    for ((name, dev), path) in resolved.iter().flat_map(|d| model_configs.iter().map(move |p| (d, p))) {
        let train_dev = dev.clone().autodiff();
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
            "{:<32} {:<18} {:>4} {:>9} params  {:>8.0} tokens/s  ×{:.2}",
            path.display(),
            name,
            format!("{:?}", cfg.attention).to_lowercase(),
            params,
            tps,
            tps / first
        );
        runs.push(TrainRun {
            model_config: path.clone(),
            device: name.clone(),
            attention: format!("{:?}", cfg.attention).to_lowercase(),
            params,
            kv_bytes_per_token_exact: cost::exact_bytes_per_token(cfg),
            steps,
            tokens_per_sec: tps,
            ratio_to_first: tps / first,
            seconds_per_step: timings,
        });
    }
    if let Some(reference) = pytorch {
        let name = match reference.device.as_str() {
            "cpu" => "pytorch-eager".to_string(),
            other => format!("pytorch-eager-{}", other.replace(':', "")),
        };
        for path in model_configs {
            let file = ModelFile::load(path)?;
            let batch = task.train_batch(0, 0, file.pretrain.batch_size);
            let tps = pytorch_reference(reference, &file, &batch, steps)?;
            let first = runs.first().map_or(tps, |r| r.tokens_per_sec);
            println!(
                "{:<32} {:<18} {:>4} {:>9}         {:>8.0} tokens/s  ×{:.2}",
                path.display(),
                name,
                "",
                "",
                tps,
                tps / first
            );
            runs.push(TrainRun {
                model_config: path.clone(),
                device: name.clone(),
                attention: format!("{:?}", file.model.attention).to_lowercase(),
                params: 0,
                kv_bytes_per_token_exact: cost::exact_bytes_per_token(&file.model),
                steps,
                tokens_per_sec: tps,
                ratio_to_first: tps / first,
                seconds_per_step: StepTimings::default(),
            });
        }
    }
    if let Some(out) = out {
        super::write_json(out, &runs)?;
    }
    Ok(())
}

/// Tokens/s of the same preset's training step in plain PyTorch eager (`bench/pytorch_reference.py`).
fn pytorch_reference(
    reference: &PyTorchReference,
    file: &ModelFile,
    batch: &ahr_tasks::Batch,
    steps: u64,
) -> Result<f64> {
    let python = &reference.python;
    let script = std::path::Path::new("bench/pytorch_reference.py");
    if !script.is_file() {
        bail!("--pytorch: run from the repository root ({} not found)", script.display());
    }
    let tmp = std::env::temp_dir().join(format!("ahr-bench-{}.json", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string(&file.model)?)?;
    let pc = &file.pretrain;
    let exact = if pc.nested.exact_warmup_steps > steps { 1.0 } else { pc.nested.exact_fraction };
    let labelled = (batch.labelled() / batch.batch_size.max(1)).max(1);
    let output = std::process::Command::new(python)
        .arg(script)
        .args(["--config", &tmp.display().to_string()])
        .args(["--batch", &batch.batch_size.to_string(), "--seq-len", &batch.seq_len.to_string()])
        .args(["--labelled", &labelled.to_string(), "--steps", &steps.to_string()])
        .args(["--exact-fraction", &exact.to_string(), "--lr", &pc.learning_rate.to_string()])
        .args(["--device", &reference.device])
        .envs(crate::alloc::child_env())
        .output()
        .with_context(|| format!("--pytorch: cannot run {}", python.display()))?;
    let _ = std::fs::remove_file(&tmp);
    if !output.status.success() {
        bail!("the PyTorch reference failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the PyTorch reference printed `{}`", line.trim()))?;
    v["tokens_per_sec"].as_f64().context("the PyTorch reference printed no tokens_per_sec")
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
    let spec = EnvFile::load(env)?;
    let model = ahr_train::load_env_model(model_dir, &spec, env, &dev)?;
    let task = ahr_env::load_task(&spec, env, model.config()).map_err(anyhow::Error::msg)?;
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
