//! Can an evicter learn from each decision's effect on the loss? Labels from counterfactuals
//! (`examples/evict_counterfactual.rs`) on *training* windows of a learned-eviction env: at sampled
//! queries, every key a layer holds is evicted in place of `tova-ema`'s victim (decay 0.9, its
//! own cache; the rule goes on after that) and Δ, the window's loss in bits minus the rule's, is
//! kept with the candidate's features as the environment shows them ([`Drawn`]). A linear score
//! of the features (per layer, the candidates of a decision centred on their mean: only the
//! ranking within a decision is fitted) is fitted by ridge regression to Δ; the candidate with
//! the lowest predicted Δ is evicted. Printed: on decisions of windows left out of the fit, the
//! mean Δ of the candidate the fit picks (the rule's victim is 0; negative: better than the rule);
//! then the fitted score run as an evicter in the environment on the held-out windows, beside
//! `tova-ema` 0.9 (`smooth`), every row at the same memory. `EVICT_DISTILL_OUT=FILE` writes the
//! labels and the fits' weights as JSON; `EVICT_DISTILL_LABELS=FILE` reads the labels from such a
//! file instead of computing them.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_distill -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml 48 2 64
//! ```

use std::path::PathBuf;

use ahr_eval::harness::{Harness, schedule_losses};
use ahr_eval::own_cache::{self, RuleStep};
use ahr_eval::{Baseline, Family, PointKind};
use ahr_policy::evict::{CANDIDATE_FEATURES, Drawn};
use ahr_tasks::Batch;
use ahr_tpa::Choices;
use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Features per candidate: the environment's ([`CANDIDATE_FEATURES`]), then two a cache can
/// compute from the stored keys: the largest cosine similarity of the key with another held key of
/// its layer (redundancy: a near twin answers the same queries) and its cosine similarity with the
/// mean held key (KeyDiff's score, Park et al. 2025).
const F: usize = CANDIDATE_FEATURES.len() + 2;

/// The training stream's seed (the windows the labels come from; never the held-out ones).
const TRAIN_SEED: u64 = 1;

/// The decay of the rule the labels overrule (`tova-ema`) and of the features' `smooth`.
const RULE_DECAY: f32 = 0.9;

/// Ridge penalty of the fit.
const RIDGE: f64 = 1e-3;

/// One decision: each held key's features and Δ (the rule's victim 0).
#[derive(Serialize, Deserialize)]
struct Decision {
    window: usize,
    query: usize,
    layer: usize,
    positions: Vec<usize>,
    victim: usize,
    /// Computed again from the window whenever the labels are read, so not written.
    #[serde(default, skip_serializing)]
    features: Vec<Vec<f32>>,
    delta_bits: Vec<f64>,
}

/// What every held key drew, per stream, layer and position, as the environment's book keeps it.
struct Book {
    drawn: Vec<Vec<Option<Drawn>>>,
    layers: usize,
    seq_len: usize,
    decay: f32,
}

impl Book {
    fn new(streams: usize, layers: usize, seq_len: usize) -> Self {
        Self { drawn: vec![vec![None; seq_len]; streams * layers], layers, seq_len, decay: RULE_DECAY }
    }

    /// Record a step: every held key draws the query's weight, the new one joins.
    fn observe(&mut self, s: &RuleStep, token: u32) {
        assert!(s.query < self.seq_len);
        let book = &mut self.drawn[s.stream * self.layers + s.layer];
        for &k in &s.held[..s.held.len() - 1] {
            book[k].as_mut().expect("a held key was written").draw((s.weight)(k));
        }
        book[s.query] = Some(Drawn::new(s.query, token, (s.weight)(s.query), self.decay));
    }

    /// The held keys' features at a step already observed (the key similarities cost
    /// O(held² · d): only at the steps that decide).
    fn features(&self, s: &RuleStep) -> Vec<Vec<f32>> {
        let book = &self.drawn[s.stream * self.layers + s.layer];
        let keys: Vec<&[f32]> = s.held.iter().map(|&k| s.keys[k].as_slice()).collect();
        let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let norms: Vec<f32> = keys.iter().map(|k| norm(k)).collect();
        let dim = keys[0].len();
        let mut mean = vec![0f32; dim];
        for k in &keys {
            for (m, v) in mean.iter_mut().zip(k.iter()) {
                *m += v / keys.len() as f32;
            }
        }
        let mean_norm = norm(&mean);
        (0..keys.len())
            .map(|i| {
                let twin = (0..keys.len())
                    .filter(|&j| j != i)
                    .map(|j| dot(keys[i], keys[j]) / (norms[i] * norms[j]))
                    .fold(-1.0f32, f32::max);
                let to_mean = dot(keys[i], &mean) / (norms[i] * mean_norm);
                let drawn = book[s.held[i]].as_ref().expect("held");
                let mut x = drawn.features(s.query, s.layer, self.layers).to_vec();
                x.extend([twin, to_mean]);
                x
            })
            .collect()
    }
}

/// The fitted design: the features (all, or the environment's only), the squares of the continuous
/// ones.
fn design(x: &[f32], extra: bool) -> Vec<f64> {
    let continuous = 8; // smooth … age
    let base = CANDIDATE_FEATURES.len();
    let mut out: Vec<f64> = x[..base].iter().map(|&v| v as f64).collect();
    out.extend(x[..continuous].iter().map(|&v| (v as f64).powi(2)));
    if extra {
        out.extend(x[base..].iter().map(|&v| v as f64));
        out.extend(x[base..].iter().map(|&v| (v as f64).powi(2)));
    }
    out
}

/// Solve `a · w = b` (`a` symmetric positive definite, `n × n`) by Cholesky.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Result<Vec<f64>> {
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|k| a[j * n + k].powi(2)).sum::<f64>();
        if d <= 0.0 {
            bail!("the design is singular at column {j}");
        }
        a[j * n + j] = d.sqrt();
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            a[i * n + j] = s / a[j * n + j];
        }
    }
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|k| a[i * n + k] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|k| a[k * n + i] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    Ok(b)
}

/// A linear score per layer: Δ predicted from the design.
struct Fit {
    weights: Vec<Vec<f64>>,
    extra: bool,
}

impl Fit {
    /// Per layer, the ridge fit of Δ on the design, each decision's candidates centred on their
    /// mean (only the ranking within a decision is fitted).
    fn new(decisions: &[&Decision], layers: usize, extra: bool) -> Result<Self> {
        let n = design(&[0.0; F], extra).len();
        let weights = (0..layers)
            .map(|l| {
                let (mut a, mut b) = (vec![0.0; n * n], vec![0.0; n]);
                for d in decisions.iter().filter(|d| d.layer == l) {
                    let phi: Vec<Vec<f64>> = d.features.iter().map(|x| design(x, extra)).collect();
                    let mean: Vec<f64> =
                        (0..n).map(|j| phi.iter().map(|p| p[j]).sum::<f64>() / phi.len() as f64).collect();
                    let dm = d.delta_bits.iter().sum::<f64>() / d.delta_bits.len() as f64;
                    for (p, &y) in phi.iter().zip(&d.delta_bits) {
                        let x: Vec<f64> = p.iter().zip(&mean).map(|(v, m)| v - m).collect();
                        for i in 0..n {
                            b[i] += x[i] * (y - dm);
                            for j in 0..n {
                                a[i * n + j] += x[i] * x[j];
                            }
                        }
                    }
                }
                for i in 0..n {
                    a[i * n + i] += RIDGE * (1.0 + a[i * n + i]);
                }
                solve(a, b, n)
            })
            .collect::<Result<_>>()?;
        Ok(Self { weights, extra })
    }

    /// Predicted Δ (bits) of evicting a candidate with features `x` in layer `l`.
    fn delta(&self, l: usize, x: &[f32]) -> f64 {
        design(x, self.extra).iter().zip(&self.weights[l]).map(|(p, w)| p * w).sum()
    }
}

/// The evicters compared: the candidate with the highest score leaves.
type Score<'a> = Box<dyn Fn(usize, &[f32]) -> f64 + 'a>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, windows, points, held_out] = &args[..] else {
        bail!(
            "usage: evict_distill MODEL ENV TRAIN_WINDOWS POINTS HELD_OUT (decision queries per window; held-out windows to judge on)"
        );
    };
    let windows: usize = windows.parse().context("TRAIN_WINDOWS")?;
    let points: usize = points.parse().context("POINTS")?;
    let held_out: usize = held_out.parse().context("HELD_OUT")?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let (eviction, store) = run.eviction().map_err(|e| anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let (budget, l_n) = (eviction.budget, cfg.n_layers);
    let rule = Baseline::tova_ema(budget, eviction.store, RULE_DECAY);
    let mut rng = StdRng::seed_from_u64(0);

    // Labels (or those an earlier run wrote: `EVICT_DISTILL_LABELS=FILE`, its `EVICT_DISTILL_OUT`;
    // the features are computed again, the labels do not depend on them).
    let loaded: Vec<Decision> = match std::env::var("EVICT_DISTILL_LABELS") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
            serde_json::from_value(v["decisions"].clone()).with_context(|| format!("{path}: decisions"))?
        }
        Err(_) => Vec::new(),
    };
    let windows = if loaded.is_empty() { windows } else { loaded.iter().map(|d| d.window + 1).max().unwrap_or(0) };
    let mut decisions = Vec::new();
    for w in 0..windows {
        let seq = task.train_batch(TRAIN_SEED, w as u64, 1);
        let t_n = seq.seq_len;
        let mut queries: Vec<usize> = if loaded.is_empty() {
            (0..points).map(|_| rng.random_range(budget..t_n - 1)).collect()
        } else {
            loaded.iter().filter(|d| d.window == w).map(|d| d.query).collect()
        };
        queries.sort_unstable();
        queries.dedup();
        let mut book = Book::new(1, l_n, t_n);
        // The decisions seen, their victim and Δ filled in below.
        let mut seen: Vec<Decision> = Vec::new();
        let mut watch = |s: RuleStep| {
            book.observe(&s, seq.inputs[s.query]);
            if queries.contains(&s.query) {
                let features = book.features(&s);
                seen.push(Decision {
                    window: w,
                    query: s.query,
                    layer: s.layer,
                    positions: s.held.to_vec(),
                    victim: 0,
                    features,
                    delta_bits: Vec::new(),
                });
            }
            None
        };
        let base = own_cache::watched_evictions(&model, &seq, &rule, &[], &mut watch, &dev)?;
        if !loaded.is_empty() {
            for mut d in seen {
                let label = loaded
                    .iter()
                    .find(|x| (x.window, x.query, x.layer) == (w, d.query, d.layer))
                    .context("a labelled decision")?;
                if label.positions != d.positions {
                    bail!("window {w} query {} layer {}: the labels' held keys differ", d.query, d.layer);
                }
                (d.victim, d.delta_bits) = (label.victim, label.delta_bits.clone());
                decisions.push(d);
            }
            continue;
        }
        let base_loss: f64 = schedule_losses(&model, &seq, store, std::slice::from_ref(&base), &dev)?[0].iter().sum();
        for mut d in seen {
            let (q, l, positions) = (d.query, d.layer, &d.positions);
            let victim = positions
                .iter()
                .position(|&k| base[k * l_n + l] == (q + 1) as u32)
                .context("the rule evicts at every query past its budget")?;
            let forced: Vec<_> = positions.iter().map(|&k| Some((q, l, k))).collect();
            let ev = own_cache::forced_evictions(&model, &seq.repeat_each(positions.len()), &rule, &forced, &dev)?;
            let schedules: Vec<Vec<u32>> = ev.chunks(t_n * l_n).map(<[u32]>::to_vec).collect();
            let delta_bits: Vec<f64> = schedule_losses(&model, &seq, store, &schedules, &dev)?
                .iter()
                .map(|x| x.iter().sum::<f64>() - base_loss)
                .collect();
            if delta_bits[victim].abs() > 1e-6 * base_loss {
                bail!("forcing the rule's own victim changed its loss by {} bits", delta_bits[victim]);
            }
            (d.victim, d.delta_bits) = (victim, delta_bits);
            decisions.push(d);
        }
        eprintln!("window {w}: {} decisions", decisions.len());
    }

    // How well a fit ranks candidates on windows it did not see (5 folds by window).
    let folds = 5;
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    println!(
        "| layer | decisions | Δ of the pick (bits; the rule's victim 0), held-out folds: fit on the env's features | fit with the key features | `smooth` | the best candidate |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let argmin = |d: &Decision, score: &dyn Fn(&[f32]) -> f64| {
        (0..d.features.len()).min_by(|&a, &b| score(&d.features[a]).total_cmp(&score(&d.features[b]))).unwrap_or(0)
    };
    let mut picked = vec![[Vec::new(), Vec::new(), Vec::new()]; l_n];
    for fold in 0..folds {
        let train: Vec<&Decision> = decisions.iter().filter(|d| d.window % folds != fold).collect();
        let fits = [Fit::new(&train, l_n, false)?, Fit::new(&train, l_n, true)?];
        for d in decisions.iter().filter(|d| d.window % folds == fold) {
            for (i, f) in fits.iter().enumerate() {
                picked[d.layer][i].push(d.delta_bits[argmin(d, &|x| f.delta(d.layer, x))]);
            }
            // tova-ema's own score from the features: the highest `smooth` leaves (its victim).
            picked[d.layer][2].push(d.delta_bits[argmin(d, &|x| -(x[0] as f64))]);
        }
    }
    for (l, p) in picked.iter().enumerate() {
        let best: Vec<f64> = decisions
            .iter()
            .filter(|d| d.layer == l)
            .map(|d| d.delta_bits.iter().copied().fold(0.0, f64::min))
            .collect();
        println!(
            "| {l} | {} | {:+.3} | {:+.3} | {:+.3} | {:+.3} |",
            p[0].len(),
            mean(&p[0]),
            mean(&p[1]),
            mean(&p[2]),
            mean(&best)
        );
    }

    // Fits on every label, run as evicters with the rule's cache on the held-out windows.
    let all: Vec<&Decision> = decisions.iter().collect();
    let (plain, keyed) = (Fit::new(&all, l_n, false)?, Fit::new(&all, l_n, true)?);
    let scale = ahr_policy::evict::PRIOR_SCALE as f64;
    let mut rows: Vec<(String, Score)> = vec![
        ("smooth (tova-ema, decay 0.9)".into(), Box::new(|_, x: &[f32]| x[0] as f64)),
        ("the fit on the env's features".into(), Box::new(|l, x: &[f32]| -plain.delta(l, x))),
        ("the fit with the key features".into(), Box::new(|l, x: &[f32]| -keyed.delta(l, x))),
        ("redundancy: the key with the nearest twin".into(), Box::new(|_, x: &[f32]| x[F - 2] as f64)),
        ("KeyDiff: the key nearest the mean key".into(), Box::new(|_, x: &[f32]| x[F - 1] as f64)),
    ];
    // The rule's score in log-weight units (−mean ln w) minus β × a fit's predicted Δ in bits:
    // the fit as a correction to the rule (`EVICT_DISTILL_MIX=0.3,1`).
    let mixes: Vec<f64> = std::env::var("EVICT_DISTILL_MIX")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("EVICT_DISTILL_MIX"))
        .collect::<Result<_>>()?;
    for beta in mixes {
        for (name, fit) in [("env's features", &plain), ("key features", &keyed)] {
            let score: Score = Box::new(move |l, x: &[f32]| x[0] as f64 * scale - beta * fit.delta(l, x));
            rows.push((format!("smooth − {beta} × the fit's Δ ({name})"), score));
        }
    }
    let h = Harness::new(&model, &task, &spec, held_out, &dev, false)?;
    let exact = ahr_tpa::cost::exact_bytes_per_token(&cfg) as f64;
    println!(
        "\n| evicter ({} held-out windows, budget {budget}, the rule's cache) | bits/byte | memory (of exact) | against `smooth`, paired (95 %; positive: better) |",
        h.sequences
    );
    println!("|---|---:|---:|---|");
    let mut first: Option<Vec<ahr_tasks::Metrics>> = None;
    for (name, score) in &rows {
        let run = |batch: &Batch| {
            let mut book = Book::new(batch.batch_size, l_n, batch.seq_len);
            let mut watch = |s: RuleStep| {
                book.observe(&s, batch.inputs[s.stream * batch.seq_len + s.query]);
                (s.held.len() > budget).then(|| {
                    let features = book.features(&s);
                    let best = (0..features.len())
                        .max_by(|&a, &b| {
                            score(s.layer, &features[a]).total_cmp(&score(s.layer, &features[b])).then(b.cmp(&a))
                        })
                        .expect("a held key");
                    s.held[best]
                })
            };
            let ev = own_cache::watched_evictions(&model, batch, &rule, &[], &mut watch, &dev)?;
            Ok(Choices::from_fn(batch.batch_size, batch.seq_len, l_n, |_, _, _| store).with_evictions(ev))
        };
        let p = h.batch_rule_point(name, PointKind::Rule(Family::TovaEma), "", &run)?;
        let against = match first.as_ref().and_then(|rule| ahr_eval::judge::paired(&p.per_sequence, rule, h.metric())) {
            Some(m) => m.to_string(),
            None => "—".into(),
        };
        println!("| {name} | {:.4} | {:.4} | {against} |", p.metric, p.kv_bytes_per_token / exact);
        first.get_or_insert(p.per_sequence);
    }
    if let Ok(path) = std::env::var("EVICT_DISTILL_OUT") {
        let out = serde_json::json!({
            "features": CANDIDATE_FEATURES.iter().copied().chain(["twin", "to_mean"]).collect::<Vec<_>>(),
            "weights_env_features": plain.weights,
            "weights_key_features": keyed.weights,
            "decisions": decisions,
        });
        std::fs::write(&path, serde_json::to_string(&out)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
