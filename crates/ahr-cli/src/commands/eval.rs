//! `ahr eval`: learned policies and known cache rules in one harness on held-out data, with the
//! Pareto front of task metric against KV bytes per token (DESIGN.md §7).
//!
//! Write-time rules (the policy, an entropy threshold, a memory-matched random rule) run in the
//! rank environment, token by token over the physical cache, with its accounting. Uniform
//! choices and eviction rules (StreamingLLM sink + window, H2O heavy hitters) run as parallel
//! forwards with per-key visibility, which equal the decode (tested in `ahr-tpa`). Bytes per
//! token are the cache's peak over a sequence divided by its length; for write-time rules that
//! is every stored token's bytes, for eviction rules the most entries held at once.

use std::path::{Path, PathBuf};

use ahr_env::EnvSpec;
use ahr_policy::obs::GLOBAL_FEATURES;
use ahr_policy::{Granularity, ObsBatch};
use ahr_tasks::{Batch, Metrics, Task};
use ahr_tpa::checkpoint::{fingerprint, load_model};
use ahr_tpa::{Choices, Model, cost};
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use serde::Serialize;

use super::train_policy::{PolicyEval, evaluate_rule};
use crate::args::Common;
use crate::baselines::{self, NEVER};
use crate::device::device;
use crate::evaluate::label_logprobs;
use crate::files::load_env_model;

/// Baseline families `--baselines` accepts.
pub const BASELINES: [&str; 5] = ["uniform", "window", "heavy-hitter", "entropy", "random"];

/// One point of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Rule or policy name (`policy:<dir>`, `uniform`, `window`, …, `model:<dir>`).
    pub name: String,
    /// Its setting (`rank:2`, `sinks=4,window=16`, …).
    pub setting: String,
    /// Task metric (accuracy, or bits per byte for text).
    pub metric: f64,
    /// Mean task loss over labelled positions (nats).
    pub loss: f64,
    /// KV bytes per token over all layers (peak cache / sequence length).
    pub kv_bytes_per_token: f64,
    /// Attention FLOPs per token over all layers.
    pub flops_per_token: f64,
    /// Whether no other point is at least as good on both axes and better on one.
    pub on_front: bool,
}

/// What the policy achieves against the baselines.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyVerdict {
    /// Policy name.
    pub name: String,
    /// On the Pareto front.
    pub on_front: bool,
    /// Better than every baseline point that uses at most its bytes per token.
    pub dominates_baselines_at_its_memory: bool,
    /// Baseline points at most its bytes with a metric at least as good.
    pub matched_or_beaten_by: Vec<String>,
}

/// `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct EvalOutput {
    /// Metric name.
    pub metric: String,
    /// Whether a larger metric is better.
    pub higher_is_better: bool,
    /// Held-out sequences per point.
    pub sequences: usize,
    /// Every point.
    pub points: Vec<Point>,
    /// One verdict per policy.
    pub policies: Vec<PolicyVerdict>,
    /// How each family was run.
    pub notes: Vec<String>,
}

/// Options of `ahr eval`.
#[derive(Clone, Debug)]
pub struct EvalArgs {
    /// Model directories; the first runs the policies and baselines, the rest are extra points.
    pub models: Vec<PathBuf>,
    /// Env spec.
    pub env: PathBuf,
    /// Policy directories (for the first model).
    pub policies: Vec<PathBuf>,
    /// Baseline families.
    pub baselines: Vec<String>,
    /// Held-out sequences per point (default: the whole held-out set).
    pub sequences: Option<usize>,
    /// Output directory.
    pub out: PathBuf,
}

/// What every evaluated point shares: the model, the held-out data and how much of it.
pub(crate) struct Harness<'a> {
    pub(crate) model: &'a Model,
    pub(crate) task: &'a Task,
    pub(crate) spec: &'a EnvSpec,
    pub(crate) sequences: usize,
    pub(crate) dev: &'a burn::tensor::Device,
    pub(crate) text: bool,
}

impl Harness<'_> {
    fn metric(&self, m: &Metrics) -> f64 {
        if self.text { m.bits_per_token() } else { m.accuracy() }
    }

    /// Exact attention FLOPs of a sequence (positions 1…T−1, the environment's normaliser).
    fn exact_flops_per_token(&self, seq_len: usize) -> f64 {
        let cfg = self.model.config();
        let exact = |n: usize| {
            let mut c = vec![0; cfg.menu.len()];
            c[cfg.exact_index()] = n;
            c
        };
        let total: usize = (1..seq_len).map(|t| cfg.n_layers * cost::step_attention_flops(cfg, &exact(t))).sum();
        total as f64 / seq_len as f64
    }

    /// A write-time rule through the rank environment.
    fn env_point(
        &self,
        name: &str,
        setting: &str,
        spec: &EnvSpec,
        window: usize,
        act: impl FnMut(&ObsBatch) -> Vec<usize>,
    ) -> (Point, PolicyEval) {
        let e = evaluate_rule(self.model, self.task, spec, window, Some(self.sequences), self.dev, act);
        let seq_len = self.task.valid_batch(0, 1).seq_len;
        let metric = if self.text { e.task_loss / std::f64::consts::LN_2 } else { e.accuracy };
        let point = Point {
            name: name.into(),
            setting: setting.into(),
            metric,
            loss: e.task_loss,
            kv_bytes_per_token: e.kv_bytes_per_token,
            flops_per_token: e.flops_frac * self.exact_flops_per_token(seq_len),
            on_front: false,
        };
        (point, e)
    }

    /// A rule given as storage choices (with evictions) per batch, through parallel forwards.
    pub(crate) fn parallel_point(
        &self,
        name: &str,
        setting: &str,
        rule: &dyn Fn(&Batch) -> Result<Choices>,
    ) -> Result<Point> {
        let cfg = self.model.config();
        let mut metrics = Metrics::default();
        let (mut bytes, mut flops, mut seqs) = (0f64, 0f64, 0usize);
        let batch_size = self.spec.env.streams.max(8);
        for batch in self.task.valid_batches(batch_size) {
            if seqs >= self.sequences {
                break;
            }
            let choices = rule(&batch)?;
            let (b_n, t_n) = (batch.batch_size, batch.seq_len);
            if let Some((logp, logits, labels)) = label_logprobs(self.model, &batch, &choices, self.dev)? {
                let n = labels.dims()[0];
                let correct = logits.argmax(1).reshape([n]).equal(labels).int().sum().into_scalar::<i64>() as u64;
                metrics.add(-logp.sum().into_scalar::<f32>() as f64, correct, n as u64);
            }
            for b in 0..b_n {
                for l in 0..cfg.n_layers {
                    let ev: Vec<u32> =
                        (0..t_n).map(|t| choices.visible_until(cfg, b, t, l).map_or(NEVER, |e| e as u32)).collect();
                    let option = |t: usize| cfg.menu[choices.get(b, t, l)];
                    // Peak bytes: the most bytes visible at once (current token included).
                    let peak = (0..t_n)
                        .map(|q| {
                            (0..=q).filter(|&k| ev[k] as usize > q).map(|k| cost::bytes_per_token(cfg, option(k))).sum()
                        })
                        .max()
                        .unwrap_or(0usize);
                    bytes += peak as f64 / t_n as f64;
                    for q in 1..t_n {
                        let mut counts = vec![0; cfg.menu.len()];
                        for k in (0..q).filter(|&k| ev[k] as usize > q) {
                            counts[choices.get(b, k, l)] += 1;
                        }
                        flops += cost::step_attention_flops(cfg, &counts) as f64 / t_n as f64;
                    }
                }
            }
            seqs += b_n;
        }
        if metrics.count == 0 {
            bail!("the held-out data has no labelled positions");
        }
        Ok(Point {
            name: name.into(),
            setting: setting.into(),
            metric: self.metric(&metrics),
            loss: metrics.loss(),
            kv_bytes_per_token: bytes / seqs as f64,
            flops_per_token: flops / seqs as f64,
            on_front: false,
        })
    }
}

/// Mark the Pareto front: more metric (or less, for bits) and fewer bytes are better.
pub fn mark_front(points: &mut [Point], higher_is_better: bool) {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let at_least = |a: f64, b: f64| if higher_is_better { a >= b } else { a <= b };
    let snapshot: Vec<(f64, f64)> = points.iter().map(|p| (p.kv_bytes_per_token, p.metric)).collect();
    for (i, p) in points.iter_mut().enumerate() {
        p.on_front = !snapshot.iter().enumerate().any(|(j, &(bytes, metric))| {
            j != i
                && bytes <= p.kv_bytes_per_token
                && at_least(metric, p.metric)
                && (bytes < p.kv_bytes_per_token || better(metric, p.metric))
        });
    }
}

/// Run `ahr eval`.
pub fn eval(a: &EvalArgs, common: &Common) -> Result<EvalOutput> {
    let dev = device(&common.device)?;
    for b in &a.baselines {
        if !BASELINES.contains(&b.as_str()) {
            bail!("--baselines: unknown `{b}`; choose from {}", BASELINES.join(", "));
        }
    }
    let Some(main_dir) = a.models.first() else { bail!("give at least one --model") };
    let spec = EnvSpec::load(&a.env)?;
    let model = load_env_model(main_dir, &spec, &a.env, &dev)?;
    // Load every input before the (long) evaluation starts, so a bad path fails at once.
    let others = a.models.iter().skip(1).map(|d| Ok((d, load_model(d, &dev)?))).collect::<Result<Vec<_>>>()?;
    let cfg = model.config().clone();
    let task = Task::load(&spec.task).with_context(|| format!("{}: cannot load the task", a.env.display()))?;
    if task.vocab_needed() > cfg.vocab_size {
        bail!("{} needs a vocabulary of {} but the model has {}", a.env.display(), task.vocab_needed(), cfg.vocab_size);
    }
    let text = task.metric_name() == "bits_per_byte";
    let sequences = a.sequences.unwrap_or(task.valid_examples()).min(task.valid_examples()).max(1);
    let h = Harness { model: &model, task: &task, spec: &spec, sequences, dev: &dev, text };
    let mut points = Vec::new();
    let mut notes = Vec::new();
    let seq_len = task.valid_batch(0, 1).seq_len;
    let (l_n, exact) = (cfg.n_layers, cfg.exact_index());
    let log = |p: &Point| {
        eprintln!(
            "{:<28} {:<22} {} {:.4}  bytes/token {:.1}",
            p.name,
            p.setting,
            task.metric_name(),
            p.metric,
            p.kv_bytes_per_token
        )
    };

    // Policies first: the random baseline is matched to their memory.
    let fp = fingerprint(main_dir)?;
    let loaded = a
        .policies
        .iter()
        .map(|dir| Ok((dir, ahr_policy::export::load_policy(dir, &cfg, &fp, &dev)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut policy_names = Vec::new();
    let mut policy_freqs: Vec<(String, Vec<f64>)> = Vec::new();
    let mut policy_tokens: Vec<(String, usize)> = Vec::new();
    for (dir, (manifest, net)) in loaded {
        let mut pspec = spec.clone();
        pspec.reward.budget = manifest.budget;
        pspec.env.granularity = manifest.granularity;
        let name = format!("policy:{}", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        let setting = match manifest.budget {
            Some(b) => format!("budget={b}"),
            None => match manifest.granularity {
                Granularity::PerToken => "per-token".into(),
                Granularity::PerLayer => "per-layer".into(),
            },
        };
        let (point, e) = h.env_point(&name, &setting, &pspec, manifest.policy.window, |obs| {
            net.act_deterministic(obs, &manifest.norm, &dev)
        });
        log(&point);
        let mut freqs = vec![0f64; cfg.menu.len()];
        for row in &e.option_counts {
            for (o, c) in row.iter().enumerate() {
                freqs[o] += *c as f64;
            }
        }
        policy_freqs.push((name.clone(), freqs));
        // The most tokens a cache rule may hold at once and stay within the policy's bytes.
        let tokens = (point.kv_bytes_per_token * seq_len as f64 / cost::exact_bytes_per_token(&cfg) as f64).floor();
        policy_tokens.push((name.clone(), tokens as usize));
        policy_names.push(name);
        points.push(point);
    }
    notes.push("policies, entropy and random: rank environment (token-by-token decode, deterministic)".into());

    let mut token_spec = spec.clone();
    token_spec.env.granularity = Granularity::PerToken;
    token_spec.reward.budget = None;
    for family in &a.baselines {
        match family.as_str() {
            "uniform" => {
                for (i, o) in cfg.menu.iter().enumerate() {
                    let p = h.parallel_point("uniform", &o.to_string(), &|b: &Batch| {
                        Ok(Choices::filled(b.batch_size, b.seq_len, l_n, i))
                    })?;
                    log(&p);
                    points.push(p);
                }
            }
            "window" => {
                let sinks = 4.min(seq_len / 4);
                // Fixed windows, then per policy the largest window within its bytes (the
                // cache holds sinks + window + the current token).
                let fixed = [16, 8, 4, 2].map(|div| ((seq_len / div).max(1), String::new()));
                let matched = policy_tokens
                    .iter()
                    .filter(|(_, n)| *n > sinks + 1)
                    .map(|(name, n)| (n - sinks - 1, format!(",matched={name}")));
                for (window, label) in fixed.into_iter().chain(matched) {
                    let ev = baselines::window_evictions(seq_len, sinks, window);
                    let setting = format!("sinks={sinks},window={window}{label}");
                    let p = h.parallel_point("window", &setting, &|b: &Batch| {
                        let all: Vec<u32> = (0..b.batch_size)
                            .flat_map(|_| ev.iter().flat_map(|&e| std::iter::repeat_n(e, l_n)))
                            .collect();
                        Ok(Choices::exact(&cfg, b.batch_size, b.seq_len).with_evictions(all))
                    })?;
                    log(&p);
                    points.push(p);
                }
                notes.push(
                    "window: StreamingLLM attention sinks + recent window, keys kept exact until evicted; \
                     `matched=P`: the largest window within policy P's bytes"
                        .into(),
                );
            }
            "heavy-hitter" => {
                let fixed = [16, 8, 4, 2].map(|div| ((seq_len / div).max(2), String::new()));
                let matched =
                    policy_tokens.iter().filter(|(_, n)| *n > 3).map(|(name, n)| (n - 1, format!(",matched={name}")));
                for (budget, label) in fixed.into_iter().chain(matched) {
                    let (heavy, recent) = (budget / 2, budget - budget / 2);
                    let setting = format!("heavy={heavy},recent={recent}{label}");
                    let p = h.parallel_point("heavy-hitter", &setting, &|b: &Batch| {
                        h2o_choices(&model, b, heavy, recent, &dev)
                    })?;
                    log(&p);
                    points.push(p);
                }
                notes.push(
                    "heavy-hitter: H2O per layer, attention (mean over heads) accumulated from the full-cache \
                     forward, so the scores never suffer from earlier evictions (optimistic for H2O); \
                     `matched=P`: the largest budget within policy P's bytes"
                        .into(),
                );
            }
            "entropy" => {
                let idx = GLOBAL_FEATURES.iter().position(|f| *f == "pred_entropy").expect("feature exists");
                let dim = GLOBAL_FEATURES.len() + 3 * l_n;
                for tau in [0.1f32, 0.25, 0.4, 0.55, 0.7] {
                    let (p, _) = h.env_point("entropy", &format!("tau={tau}"), &token_spec, 1, |obs| {
                        (0..obs.len)
                            .flat_map(|r| {
                                let c = baselines::entropy_choice(obs.features[r * dim + idx], tau, exact);
                                std::iter::repeat_n(c, l_n)
                            })
                            .collect()
                    });
                    log(&p);
                    points.push(p);
                }
                notes.push("entropy: exact when the model's next-token entropy / ln V ≥ tau, else drop".into());
            }
            "random" => {
                let targets = if policy_freqs.is_empty() {
                    let mut half = vec![0.0; cfg.menu.len()];
                    half[0] = 1.0;
                    half[exact] = 1.0;
                    vec![("half".to_string(), half)]
                } else {
                    policy_freqs.clone()
                };
                for (matched, freqs) in targets {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                    let (p, _) = h.env_point("random", &format!("matched={matched}"), &token_spec, 1, |obs| {
                        (0..obs.len * l_n).map(|_| baselines::random_choice(&freqs, &mut rng)).collect()
                    });
                    log(&p);
                    points.push(p);
                }
                notes.push("random: options drawn per token and layer with the policy's option frequencies".into());
            }
            _ => unreachable!("checked above"),
        }
    }

    for (dir, other) in &others {
        let name = format!("model:{}", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        let oh = Harness { model: other, ..h };
        let ocfg = other.config().clone();
        let i = ocfg.exact_index();
        let p = oh.parallel_point(&name, &format!("{:?} exact", ocfg.attention).to_lowercase(), &|b: &Batch| {
            Ok(Choices::filled(b.batch_size, b.seq_len, ocfg.n_layers, i))
        })?;
        log(&p);
        points.push(p);
    }

    let higher_is_better = !text;
    mark_front(&mut points, higher_is_better);
    let policies = policy_names
        .iter()
        .map(|name| {
            let p = points.iter().find(|p| &p.name == name).expect("policy point");
            let beaten_by: Vec<String> = points
                .iter()
                .filter(|q| !q.name.starts_with("policy:") && !q.name.starts_with("model:"))
                .filter(|q| q.kv_bytes_per_token <= p.kv_bytes_per_token)
                .filter(|q| if higher_is_better { q.metric >= p.metric } else { q.metric <= p.metric })
                .map(|q| format!("{} {}", q.name, q.setting))
                .collect();
            PolicyVerdict {
                name: name.clone(),
                on_front: p.on_front,
                dominates_baselines_at_its_memory: beaten_by.is_empty(),
                matched_or_beaten_by: beaten_by,
            }
        })
        .collect();
    let output = EvalOutput { metric: task.metric_name().into(), higher_is_better, sequences, points, policies, notes };
    write_outputs(&a.out, &output)?;
    Ok(output)
}

/// H2O evictions for a batch: attention maps of the full-cache forward, mean over heads.
fn h2o_choices(model: &Model, b: &Batch, heavy: usize, recent: usize, dev: &burn::tensor::Device) -> Result<Choices> {
    let cfg = model.config();
    let (b_n, t_n, l_n) = (b.batch_size, b.seq_len, cfg.n_layers);
    let exact = Choices::exact(cfg, b_n, t_n);
    let maps = model.attention_maps(model.tokens(&b.inputs, b_n, t_n, dev)?, &exact)?;
    let mut ev = vec![NEVER; b_n * t_n * l_n];
    for (l, map) in maps.into_iter().enumerate() {
        let mean = map.mean_dim(1).into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for s in 0..b_n {
            let e = baselines::heavy_hitter_evictions(&mean[s * t_n * t_n..(s + 1) * t_n * t_n], t_n, heavy, recent);
            for (t, v) in e.into_iter().enumerate() {
                ev[(s * t_n + t) * l_n + l] = v;
            }
        }
    }
    Ok(exact.with_evictions(ev))
}

fn write_outputs(out: &Path, o: &EvalOutput) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    super::write_json(&out.join("metrics.json"), o)?;
    let mut csv = String::from("name,setting,metric,kv_bytes_per_token,flops_per_token\n");
    for p in &o.points {
        csv.push_str(&format!(
            "{},\"{}\",{:.6},{:.3},{:.1}\n",
            p.name, p.setting, p.metric, p.kv_bytes_per_token, p.flops_per_token
        ));
    }
    ahr_tpa::checkpoint::write_atomic(&out.join("pareto.csv"), csv.as_bytes())?;
    let mut sorted: Vec<&Point> = o.points.iter().collect();
    sorted.sort_by(|a, b| a.kv_bytes_per_token.total_cmp(&b.kv_bytes_per_token));
    let mut md = format!(
        "| name | setting | {} | KV bytes/token | attention FLOPs/token | Pareto |\n|---|---|---:|---:|---:|:-:|\n",
        o.metric
    );
    for p in sorted {
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.1} | {:.0} | {} |\n",
            p.name,
            p.setting,
            p.metric,
            p.kv_bytes_per_token,
            p.flops_per_token,
            if p.on_front { "★" } else { "" }
        ));
    }
    for v in &o.policies {
        md.push_str(&format!(
            "\n{}: on the front: {}; dominates every baseline at its memory: {}{}\n",
            v.name,
            v.on_front,
            v.dominates_baselines_at_its_memory,
            if v.matched_or_beaten_by.is_empty() {
                String::new()
            } else {
                format!(" (matched or beaten by {})", v.matched_or_beaten_by.join("; "))
            }
        ));
    }
    ahr_tpa::checkpoint::write_atomic(&out.join("pareto.md"), md.as_bytes())?;
    crate::plot::pareto(&out.join("pareto.svg"), &out.join("pareto.png"), o)?;
    Ok(())
}
