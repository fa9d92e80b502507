//! The decode benchmark behind `ahr bench decode`: per-step latency of a dense MHA twin, every
//! uniform menu choice and a policy's ragged cache, side by side and like with like (every cache
//! built and warmed up first, each repeat times every cache once in a fresh random order), with
//! the memory-bandwidth bound `(cache + weight bytes) / read bandwidth`. With `cold`, every
//! timed step starts from caches swept clean ([`cold_sweep_bytes`] read on every core first), so
//! every cache and weight streams from memory — a server's state once its requests' caches
//! together outgrow the last-level cache — whatever part of it this machine's L3 would keep.

use std::time::Instant;

use ahr_tpa::{HostModel, KvCache, Model};
use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::generate::{Chooser, Generator, InferError, RankPolicy};

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
    /// Whether every timed step started from swept caches.
    pub cold: bool,
    /// Bytes read before each timed step when `cold` ([`cold_sweep_bytes`]), else 0.
    pub cold_sweep_bytes: usize,
    /// The policy's option mix per layer `[layer][option]` as fractions (when a policy is given).
    pub policy_mix: Option<Vec<Vec<f64>>>,
    /// Every measurement.
    pub runs: Vec<DecodeRun>,
}

/// Read bandwidth from memory: the best of ten full reads (sum) of a tensor of at least 256 MiB and
/// of `sweep_bytes` (four times the largest CPU cache, [`cold_sweep_bytes`]), so that the cache
/// serves little of it (a 256 MiB tensor fitted in a 260 MiB L3).
fn measure_bandwidth(dev: &Device, sweep_bytes: usize) -> f64 {
    let n = sweep_bytes.max(256 << 20) / size_of::<f32>();
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
    policy: &RankPolicy,
    prompts: &[Vec<u32>],
    dev: &Device,
) -> Result<Vec<Vec<f64>>, InferError> {
    let cfg = model.config();
    let run = Generator::new(model, Chooser::Policy(policy), dev).run(prompts, 1)?;
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
/// ctx), then what the cache still holds: of an expiring option (`recent:W`, `first/W/drop`) only
/// its share of the last W. (Demoted tokens are held in their first form here.)
fn counts_for(menu: &[ahr_tpa::StoreOption], mix: &[Vec<f64>], ctx: usize) -> Vec<Vec<usize>> {
    mix.iter()
        .map(|row| {
            let mut c: Vec<usize> = row.iter().map(|f| (f * ctx as f64).floor() as usize).collect();
            let short = ctx - c.iter().sum::<usize>();
            let top = (0..c.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            c[top] += short;
            for (o, w) in menu
                .iter()
                .enumerate()
                .filter_map(|(o, opt)| Some((o, opt.window()?)).filter(|_| opt.expires_at(0).is_some()))
            {
                c[o] = c[o].min((row[o] * w.min(ctx) as f64).round() as usize);
            }
            c
        })
        .collect()
}

/// Bytes read before each timed step with `cold` at least: four times the 32 MiB L3 of the machine
/// the first cold benchmarks were measured on. [`cold_sweep_bytes`] takes more where the L3 is larger.
pub const COLD_SWEEP_BYTES: usize = 128 << 20;

/// What a cold step sweeps: four times this machine's largest cache (Linux sysfs, cpu 0), and at
/// least [`COLD_SWEEP_BYTES`] — so that nothing of the KV cache or the weights is left in it
/// (a fixed 128 MiB left half of a 260 MiB L3 untouched).
pub fn cold_sweep_bytes() -> usize {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let largest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| parse_cache_size(&std::fs::read_to_string(e.path().join("size")).ok()?))
        .max()
        .unwrap_or(0);
    sweep_for_cache(largest)
}

/// [`cold_sweep_bytes`] for a largest cache of `bytes`.
fn sweep_for_cache(bytes: usize) -> usize {
    (4 * bytes).max(COLD_SWEEP_BYTES)
}

/// A sysfs cache size (`"266240K"`, `"32M"`, `"1G"`, or bytes) in bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    digits.parse::<usize>().ok().map(|n| n * scale)
}

/// Read `buf` on every thread of the pool (each a part), so that every core's caches hold it.
fn sweep(buf: &[f32]) {
    use rayon::prelude::*;
    let part = buf.len().div_ceil(rayon::current_num_threads().max(1));
    std::hint::black_box(buf.par_chunks(part).map(|c| c.iter().sum::<f32>()).sum::<f32>());
}

/// Warm-up steps before any cache is timed.
const WARMUP_STEPS: usize = 3;

/// Wall time (ms) of one decode step of `model` (through `host` when given, as `generate` and the
/// environment step) over `cache`.
fn time_step(model: &Model, host: Option<&HostModel>, cache: &KvCache, dev: &Device) -> Result<f64, InferError> {
    let b = cache.batch();
    let ids: Vec<u32> = (0..b as u32).map(|i| 1 + i % (model.config().vocab_size as u32 - 1)).collect();
    let start = Instant::now();
    let out = model.step_ids(host, &ids, cache, false, dev)?;
    let _ = out.logits.into_data();
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run the benchmark at every `ctxs` × `batches`, `reps` timed steps per cache; the policy's option
/// mix is measured on `prompts` (one row per stream); with `cold` each timed step starts from swept
/// caches ([`cold_sweep_bytes`]). `log` sees each finished run. Every step runs on a worker of the
/// decode pool ([`ahr_tpa::host::on_workers`]), as a serving loop would.
pub fn decode(
    model: &Model,
    policy: Option<(&RankPolicy, &[Vec<u32>])>,
    ctxs: &[usize],
    batches: &[usize],
    reps: usize,
    cold: bool,
    dev: &Device,
    log: impl FnMut(&DecodeRun) + Send,
) -> Result<DecodeReport, InferError> {
    ahr_tpa::host::on_workers(|| decode_here(model, policy, ctxs, batches, reps, cold, dev, log))
}

fn decode_here(
    model: &Model,
    policy: Option<(&RankPolicy, &[Vec<u32>])>,
    ctxs: &[usize],
    batches: &[usize],
    reps: usize,
    cold: bool,
    dev: &Device,
    mut log: impl FnMut(&DecodeRun),
) -> Result<DecodeReport, InferError> {
    let cfg = model.config().clone();
    if ctxs.is_empty() || batches.is_empty() || ctxs.contains(&0) || batches.contains(&0) || reps == 0 {
        return Err(InferError::Input("contexts, batches and repeats need positive values".into()));
    }
    let mix = match policy {
        Some((p, prompts)) => Some(policy_mix(model, p, prompts, dev)?),
        None => None,
    };
    let mut mha_cfg = cfg.clone();
    mha_cfg.attention = ahr_tpa::AttentionKind::Mha;
    mha_cfg.kv_heads = None;
    mha_cfg.menu = vec![ahr_tpa::StoreOption::Full];
    mha_cfg.validate().map_err(|e| InferError::Input(format!("dense MHA twin: {e}")))?;
    let mha = Model::new(&mha_cfg, dev);
    let (host, mha_host) = (model.host_model(dev)?, mha.host_model(dev)?);
    let sweep_bytes = cold_sweep_bytes();
    let bandwidth_gbps = measure_bandwidth(dev, sweep_bytes);
    let weight_bytes = burn::module::Module::num_params(model) * 4;
    let cold_sweep_bytes = if cold { sweep_bytes } else { 0 };
    let swept = cold.then(|| vec![1f32; sweep_bytes / size_of::<f32>()]);
    let mut runs = Vec::new();
    for &ctx in ctxs {
        for &batch in batches {
            let mut kinds: Vec<(String, &Model, ahr_tpa::ModelConfig, Vec<Vec<usize>>)> =
                vec![("dense-mha".into(), &mha, mha_cfg.clone(), vec![vec![ctx]; cfg.n_layers])];
            for (i, o) in cfg.menu.iter().enumerate() {
                let mut one = vec![vec![0.0; cfg.menu.len()]; cfg.n_layers];
                one.iter_mut().for_each(|row| row[i] = 1.0);
                kinds.push((format!("uniform:{o}"), model, cfg.clone(), counts_for(&cfg.menu, &one, ctx)));
            }
            if let Some(mix) = &mix {
                let mut counts = counts_for(&cfg.menu, mix, ctx);
                // A learned-eviction policy holds at most its layer's budget, all at its store.
                if let Some(e) = policy.and_then(|(p, _)| p.manifest().evict) {
                    let layers = counts.len();
                    for (l, row) in counts.iter_mut().enumerate() {
                        row.iter_mut().for_each(|c| *c = (*c).min(e.budget_of(l, layers)));
                    }
                }
                kinds.push(("policy".into(), model, cfg.clone(), counts));
            }
            // Like with like: every cache is built first and warmed up, then each repeat times one
            // step of every cache in a fresh random order, so drift and cache effects spread evenly.
            let caches = kinds
                .iter()
                .map(|(_, _, c, counts)| KvCache::synthetic(c, batch, counts, ahr_tpa::Storage::for_device(dev), dev))
                .collect::<Result<Vec<_>, _>>()?;
            let host_of = |k: usize| if k == 0 { mha_host.as_ref() } else { host.as_ref() };
            for (k, ((_, m, _, _), cache)) in kinds.iter().zip(&caches).enumerate() {
                for _ in 0..WARMUP_STEPS {
                    time_step(m, host_of(k), cache, dev)?;
                }
            }
            let mut times = vec![Vec::with_capacity(reps); kinds.len()];
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64((ctx * 31 + batch) as u64);
            for _ in 0..reps {
                order.shuffle(&mut rng);
                for &k in &order {
                    if let Some(buf) = &swept {
                        sweep(buf);
                    }
                    times[k].push(time_step(kinds[k].1, host_of(k), &caches[k], dev)?);
                }
            }
            let dense = median(&times[0]);
            let exact_name = format!("uniform:{}", cfg.exact_option());
            let exact = kinds.iter().position(|k| k.0 == exact_name).map_or(f64::NAN, |k| median(&times[k]));
            for (((name, _, _, _), cache), repeats_ms) in kinds.into_iter().zip(&caches).zip(times) {
                let step_ms = median(&repeats_ms);
                let bytes = cache.bytes();
                let bound_ms = (bytes + weight_bytes) as f64 / (bandwidth_gbps * 1e9) * 1e3;
                let run = DecodeRun {
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
                };
                log(&run);
                runs.push(run);
            }
        }
    }
    Ok(DecodeReport { bandwidth_gbps, weight_bytes, cold, cold_sweep_bytes, policy_mix: mix, runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sysfs sizes as Linux writes them, and the sweep they ask for: four times the largest cache,
    /// never less than the 128 MiB floor.
    #[test]
    fn cold_sweeps_four_times_the_largest_cache() {
        assert_eq!(parse_cache_size("266240K\n"), Some(260 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size("12 KiB"), None);
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(sweep_for_cache(260 << 20), 1040 << 20);
        assert_eq!(sweep_for_cache(32 << 20), 128 << 20);
        assert_eq!(sweep_for_cache(0), COLD_SWEEP_BYTES);
        assert!(cold_sweep_bytes() >= COLD_SWEEP_BYTES);
    }
}
