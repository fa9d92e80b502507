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
//! labels and the fit as JSON; `EVICT_DISTILL_LABELS=FILE` reads the labels from such a file
//! instead of computing them.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_distill -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml 48 2 64
//! ```

use std::path::PathBuf;

use ahr_eval::Baseline;
use ahr_eval::baseline::Scores;
use ahr_eval::harness::schedule_losses;
use ahr_eval::own_cache::{self, RuleStep};
use ahr_policy::evict::{CANDIDATE_FEATURES, Drawn, evict_by};
use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

const F: usize = CANDIDATE_FEATURES.len();

/// The training stream's seed (the windows the labels come from; never the held-out ones).
const TRAIN_SEED: u64 = 1;

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
    features: Vec<[f32; F]>,
    delta_bits: Vec<f64>,
}

/// The fitted design: the features, their squares (the continuous ones), for each layer apart.
fn design(x: &[f32]) -> Vec<f64> {
    let continuous = 8; // smooth … age
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    out.extend(x[..continuous].iter().map(|&v| (v as f64).powi(2)));
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

/// Per layer, the ridge fit of Δ on the design, each decision's candidates centred on their mean.
fn fit(decisions: &[&Decision], layers: usize) -> Result<Vec<Vec<f64>>> {
    let n = design(&[0.0; F]).len();
    (0..layers)
        .map(|l| {
            let (mut a, mut b) = (vec![0.0; n * n], vec![0.0; n]);
            for d in decisions.iter().filter(|d| d.layer == l) {
                let phi: Vec<Vec<f64>> = d.features.iter().map(|x| design(x)).collect();
                let mean: Vec<f64> = (0..n).map(|j| phi.iter().map(|p| p[j]).sum::<f64>() / phi.len() as f64).collect();
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
        .collect()
}

fn predict(w: &[f64], x: &[f32]) -> f64 {
    design(x).iter().zip(w).map(|(p, w)| p * w).sum()
}

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
    let ahr_train::EnvRun { spec, model, task } =
        ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let Some(eviction) = spec.env.evict else { bail!("{env}: not a learned-eviction env ([env] evict)") };
    let cfg = model.config().clone();
    let store = cfg.option_index(eviction.store).map_err(|e| anyhow!("{e}"))?;
    let (budget, l_n) = (eviction.budget, cfg.n_layers);
    let rule = Baseline::Tova { budget, store: eviction.store, scores: Scores::Cache, decay: 0.9 };
    let mut rng = StdRng::seed_from_u64(0);

    // Labels (or those an earlier run wrote: `EVICT_DISTILL_LABELS=FILE`, its `EVICT_DISTILL_OUT`).
    let mut decisions: Vec<Decision> = match std::env::var("EVICT_DISTILL_LABELS") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
            serde_json::from_value(v["decisions"].clone()).with_context(|| format!("{path}: decisions"))?
        }
        Err(_) => Vec::new(),
    };
    let windows = if decisions.is_empty() { windows } else { 0 };
    for w in 0..windows {
        let seq = task.train_batch(TRAIN_SEED, w as u64, 1);
        let t_n = seq.seq_len;
        let mut queries: Vec<usize> = (0..points).map(|_| rng.random_range(budget..t_n - 1)).collect();
        queries.sort_unstable();
        queries.dedup();
        // What every held key drew, per layer and position, as the environment's book keeps it.
        let mut drawn: Vec<Vec<Option<Drawn>>> = vec![vec![None; t_n]; l_n];
        // The decisions seen, their victim and Δ filled in below.
        let mut seen: Vec<Decision> = Vec::new();
        let mut watch = |s: RuleStep| {
            let book = &mut drawn[s.layer];
            for &k in &s.held[..s.held.len() - 1] {
                book[k].as_mut().expect("a held key was written").draw((s.weight)(k));
            }
            book[s.query] = Some(Drawn::new(s.query, seq.inputs[s.query], (s.weight)(s.query)));
            if queries.contains(&s.query) {
                let features = s.held.iter().map(|&k| book[k].as_ref().expect("held").features(s.query, s.layer, l_n));
                seen.push(Decision {
                    window: w,
                    query: s.query,
                    layer: s.layer,
                    positions: s.held.to_vec(),
                    victim: 0,
                    features: features.collect(),
                    delta_bits: Vec::new(),
                });
            }
        };
        let base = own_cache::watched_evictions(&model, &seq, &rule, &[], &mut watch, &dev)?;
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
    let mut picked = vec![Vec::new(); l_n];
    let mut smooth_picked = vec![Vec::new(); l_n];
    for fold in 0..folds {
        let train: Vec<&Decision> = decisions.iter().filter(|d| d.window % folds != fold).collect();
        let w = fit(&train, l_n)?;
        for d in decisions.iter().filter(|d| d.window % folds == fold) {
            let argmin = |score: &dyn Fn(&[f32; F]) -> f64| {
                (0..d.features.len())
                    .min_by(|&a, &b| score(&d.features[a]).total_cmp(&score(&d.features[b])))
                    .unwrap_or(0)
            };
            picked[d.layer].push(d.delta_bits[argmin(&|x| predict(&w[d.layer], x))]);
            // tova-ema's own score from the features: the highest `smooth` leaves (its victim, Δ 0,
            // up to ties and float rounding).
            smooth_picked[d.layer].push(d.delta_bits[argmin(&|x| -(x[0] as f64))]);
        }
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    println!(
        "| layer | decisions | Δ of the fit's pick, held-out folds (bits) | Δ of `smooth`'s pick (the rule: 0) | Δ of the best candidate |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for l in 0..l_n {
        let best: Vec<f64> = decisions
            .iter()
            .filter(|d| d.layer == l)
            .map(|d| d.delta_bits.iter().copied().fold(0.0, f64::min))
            .collect();
        println!(
            "| {l} | {} | {:+.3} | {:+.3} | {:+.3} |",
            picked[l].len(),
            mean(&picked[l]),
            mean(&smooth_picked[l]),
            mean(&best)
        );
    }

    // The fit on every label, run as an evicter on the held-out windows.
    let all: Vec<&Decision> = decisions.iter().collect();
    let w = fit(&all, l_n)?;
    let slots = eviction.slots();
    println!("\n| evicter ({held_out} held-out windows, budget {budget}) | bits/byte | memory (of exact) |");
    println!("|---|---:|---:|");
    type Score<'a> = Box<dyn Fn(usize, &[f32]) -> f32 + 'a>;
    let rows: Vec<(&str, Score)> = vec![
        ("smooth (tova-ema, decay 0.9)", Box::new(|_, x: &[f32]| x[0])),
        ("fitted on the counterfactual labels", Box::new(|l, x: &[f32]| -predict(&w[l], x) as f32)),
    ];
    for (name, score) in &rows {
        let e = ahr_env::evaluate_rule(&model, &task, &spec, 1, Some(held_out), &dev, |obs| {
            evict_by(obs, l_n, slots, score.as_ref())
        })?;
        println!("| {name} | {:.4} | {:.4} |", e.task_loss / std::f64::consts::LN_2, e.mem_frac);
    }
    if let Ok(path) = std::env::var("EVICT_DISTILL_OUT") {
        let out = serde_json::json!({ "features": CANDIDATE_FEATURES, "weights_per_layer": w, "decisions": decisions });
        std::fs::write(&path, serde_json::to_string(&out)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
