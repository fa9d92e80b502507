//! `ahr bench …`: throughput figures measured side by side in one process.

use std::path::PathBuf;
use std::time::Instant;

use ahr_tasks::Task;
use ahr_tpa::{Model, cost};
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
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
    let spec = EnvFile::load(env)?;
    let model = ahr_train::load_env_model(model_dir, &spec, env, &dev)?;
    let task = ahr_env::load_task(&spec, env, model.config()).map_err(anyhow::Error::msg)?;
    let seq_len = task.train_batch(0, 0, 1).seq_len;
    let mut runs: Vec<RolloutRun> = Vec::new();
    for &w in workers {
        let envs: Vec<_> = (0..num_envs).map(|_| ahr_env::make_env(&model, &task, &spec, false, 1, &dev)).collect();
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

/// One decode measurement.
#[derive(Debug, Serialize)]
pub struct DecodeRun {
    /// Tokens in the cache.
    pub ctx: usize,
    /// Streams decoded together.
    pub batch: usize,
    /// `dense-mha`, `uniform:<option>` or `policy`.
    pub cache: String,
    /// Median wall time of one decode step (all streams), milliseconds.
    pub step_ms: f64,
    /// Every timed step, milliseconds, in the order measured (after the warm-up steps).
    pub repeats_ms: Vec<f64>,
    /// Cache bytes held (all streams).
    pub bytes: usize,
    /// `(cache bytes + weight bytes) / bandwidth`, milliseconds: the memory-bound floor.
    pub bound_ms: f64,
    /// `step_ms / bound_ms`.
    pub over_bound: f64,
    /// Dense MHA step time at the same ctx and batch divided by this one (speed-up).
    pub speedup_vs_dense: f64,
    /// The uniform exact option's step time at the same ctx and batch divided by this one.
    pub speedup_vs_exact: f64,
}

/// What `ahr bench decode` writes.
#[derive(Debug, Serialize)]
pub struct DecodeReport {
    /// Measured read bandwidth of this machine through the same backend, GB/s.
    pub bandwidth_gbps: f64,
    /// Bytes of the model's weights (read once per step).
    pub weight_bytes: usize,
    /// The policy's option mix per layer `[layer][option]` as fractions (when a policy is given).
    pub policy_mix: Option<Vec<Vec<f64>>>,
    /// Every measurement.
    pub runs: Vec<DecodeRun>,
}

/// Read bandwidth: the best of ten full reads (sum) of a 256 MiB tensor.
fn measure_bandwidth(dev: &burn::tensor::Device) -> f64 {
    let n = 64 << 20;
    let x = burn::tensor::Tensor::<1>::ones([n], dev);
    let mut best = f64::MAX;
    for _ in 0..10 {
        let start = Instant::now();
        let _ = x.clone().sum().into_scalar::<f32>();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (n * 4) as f64 / best / 1e9
}

/// Per-layer option fractions of a policy's decisions over `prompts`.
fn policy_mix(
    model: &Model,
    policy: &ahr_infer::RankPolicy,
    prompts: &[Vec<u32>],
    dev: &burn::tensor::Device,
) -> Result<Vec<Vec<f64>>> {
    let cfg = model.config();
    let run = ahr_infer::Generator::new(model, ahr_infer::Chooser::Policy(policy), dev).run(prompts, 1)?;
    let mut mix = vec![vec![0f64; cfg.menu.len()]; cfg.n_layers];
    for row in &run.choices {
        for (i, &c) in row.iter().enumerate() {
            mix[i % cfg.n_layers][c] += 1.0;
        }
    }
    for row in &mut mix {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= total);
    }
    Ok(mix)
}

/// Token counts per layer and option for `ctx` tokens in proportions `mix` (rounded, summing to
/// ctx), then what the cache still holds: of a `recent:W` option only its share of the last W.
fn counts_for(menu: &[ahr_tpa::StoreOption], mix: &[Vec<f64>], ctx: usize) -> Vec<Vec<usize>> {
    mix.iter()
        .map(|row| {
            let mut c: Vec<usize> = row.iter().map(|f| (f * ctx as f64).floor() as usize).collect();
            let short = ctx - c.iter().sum::<usize>();
            let top = (0..c.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            c[top] += short;
            for (o, w) in menu.iter().enumerate().filter_map(|(o, opt)| Some((o, opt.window()?))) {
                c[o] = c[o].min((row[o] * w.min(ctx) as f64).round() as usize);
            }
            c
        })
        .collect()
}

/// Warm-up steps before any cache is timed.
const WARMUP_STEPS: usize = 3;

/// Wall time (ms) of one decode step of `model` over `cache`.
fn time_step(model: &Model, cache: &ahr_tpa::KvCache, dev: &burn::tensor::Device) -> Result<f64> {
    let b = cache.batch();
    let ids: Vec<u32> = (0..b as u32).map(|i| 1 + i % (model.config().vocab_size as u32 - 1)).collect();
    let start = Instant::now();
    let (logits, _) = model.step(model.tokens(&ids, b, 1, dev)?, cache)?;
    let _ = logits.into_data();
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `ahr bench decode`: decode-step latency over a dense MHA cache, every uniform menu choice and
/// the policy's ragged cache, side by side, with the memory-bandwidth bound.
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
    if ctxs.is_empty() || batches.is_empty() || ctxs.contains(&0) || batches.contains(&0) || reps == 0 {
        bail!("--ctx, --batch and --reps need positive values");
    }
    let mix = match policy_dir {
        Some(dir) => {
            let policy = ahr_infer::RankPolicy::load(dir, &model, &ahr_tpa::checkpoint::fingerprint(model_dir)?, &dev)?;
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
            Some(policy_mix(&model, &policy, &prompts, &dev)?)
        }
        None => None,
    };
    let mut mha_cfg = cfg.clone();
    mha_cfg.attention = ahr_tpa::AttentionKind::Mha;
    mha_cfg.kv_heads = None;
    mha_cfg.menu = vec![ahr_tpa::StoreOption::Full];
    mha_cfg.validate().map_err(|e| anyhow::anyhow!("dense MHA twin: {e}"))?;
    let mha = Model::new(&mha_cfg, &dev);
    let bandwidth_gbps = measure_bandwidth(&dev);
    let weight_bytes = burn::module::Module::num_params(&model) * 4;
    let mut runs = Vec::new();
    for &ctx in ctxs {
        for &batch in batches {
            let mut kinds: Vec<(String, &Model, ahr_tpa::ModelConfig, Vec<Vec<usize>>)> =
                vec![("dense-mha".into(), &mha, mha_cfg.clone(), vec![vec![ctx]; cfg.n_layers])];
            for (i, o) in cfg.menu.iter().enumerate() {
                let mut one = vec![vec![0.0; cfg.menu.len()]; cfg.n_layers];
                one.iter_mut().for_each(|row| row[i] = 1.0);
                kinds.push((format!("uniform:{o}"), &model, cfg.clone(), counts_for(&cfg.menu, &one, ctx)));
            }
            if let Some(mix) = &mix {
                kinds.push(("policy".into(), &model, cfg.clone(), counts_for(&cfg.menu, mix, ctx)));
            }
            // Like with like: every cache is built first and warmed up, then each repeat times one
            // step of every cache in a fresh random order, so drift and cache effects spread evenly.
            let caches = kinds
                .iter()
                .map(|(_, _, c, counts)| {
                    ahr_tpa::KvCache::synthetic(c, batch, counts, ahr_tpa::Storage::for_device(&dev), &dev)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            for ((_, m, _, _), cache) in kinds.iter().zip(&caches) {
                for _ in 0..WARMUP_STEPS {
                    time_step(m, cache, &dev)?;
                }
            }
            let mut times = vec![Vec::with_capacity(reps); kinds.len()];
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64((ctx * 31 + batch) as u64);
            for _ in 0..reps {
                order.shuffle(&mut rng);
                for &k in &order {
                    times[k].push(time_step(kinds[k].1, &caches[k], &dev)?);
                }
            }
            let dense = median(&times[0]);
            let exact_name = format!("uniform:{}", cfg.exact_option());
            let exact = kinds.iter().position(|k| k.0 == exact_name).map_or(f64::NAN, |k| median(&times[k]));
            for (((name, _, _, _), cache), repeats_ms) in kinds.into_iter().zip(&caches).zip(times) {
                let step_ms = median(&repeats_ms);
                let bytes = cache.bytes();
                let bound_ms = (bytes + weight_bytes) as f64 / (bandwidth_gbps * 1e9) * 1e3;
                eprintln!(
                    "ctx {ctx:>6} batch {batch:>2} {name:<14} {step_ms:>9.2} ms  {bytes:>11} bytes  bound {bound_ms:.3} ms"
                );
                runs.push(DecodeRun {
                    ctx,
                    batch,
                    cache: name,
                    step_ms,
                    repeats_ms,
                    bytes,
                    bound_ms,
                    over_bound: step_ms / bound_ms,
                    speedup_vs_dense: dense / step_ms,
                    speedup_vs_exact: exact / step_ms,
                });
            }
        }
    }
    let report = DecodeReport { bandwidth_gbps, weight_bytes, policy_mix: mix, runs };
    if let Some(path) = out {
        super::write_json(path, &report)?;
    }
    Ok(report)
}
