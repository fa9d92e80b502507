//! Does the attention output a key moves say what evicting it costs? `tova-ema` scores a held key
//! by the (smoothed log of the) weight the queries give it; what evicting it changes at a query is
//! the attention output, per head by `w (o − v) / (1 − w)` — a key whose value is what the head
//! outputs anyway costs nothing however much weight it draws, one whose value is far from it costs
//! in proportion. Each score here is smoothed as `tova-ema`'s (the exponential mean of its log at
//! the env's decay) and the key scoring least leaves once a layer is over the env's budget, with
//! the rule's own cache (`own_cache::watched_evictions`: the same memory at every step); the first
//! row, the weight itself, must reproduce `tova-ema`. Scores (per held key, query heads h):
//!
//! - `weight`: the mean over heads of w_h (`tova-ema`);
//! - `output moved`: Σ_h ‖w_h (v_h − o_h)‖ / (1 − w_h), o_h the head's output over the held keys;
//! - `output moved, no renormalisation`: Σ_h w_h ‖v_h − o_h‖;
//! - `residual moved`: ‖W_o Δo‖, Δo the heads' `w_h (o_h − v_h) / (1 − w_h)` side by side and W_o
//!   the layer's output projection — the change evicting the key makes to the residual stream at
//!   this query, to first order of what follows;
//! - `weight × distance^α`: the mean weight times (mean_h ‖v_h − o_h‖)^α, α from `EVICT_ALPHAS`
//!   (default 0.25, 0.5).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_output -- \
//!   policies/models/text-python-wide envs/text-python-short-evict25.toml 64
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::own_cache::{self, RuleStep};
use ahr_eval::{Baseline, Family, PointKind};
use ahr_policy::evict::{log_weight, smooth_step};
use ahr_tasks::Batch;
use ahr_tpa::Choices;
use anyhow::{Context, Result, bail};

/// What a score reads of one held key at one query: per-head weights, value and the heads' outputs.
struct Seen<'a> {
    weights: &'a [f32],
    value: &'a [f32],
    outputs: &'a [f32],
    head_dim: usize,
    /// The layer's output projection, row-major `[h · d_h, d]`.
    w_o: &'a [f32],
}

impl Seen<'_> {
    /// ‖v_h − o_h‖ per head.
    fn distances(&self) -> impl Iterator<Item = f64> + '_ {
        let dh = self.head_dim;
        (0..self.weights.len()).map(move |h| {
            let (v, o) = (&self.value[h * dh..(h + 1) * dh], &self.outputs[h * dh..(h + 1) * dh]);
            v.iter().zip(o).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
        })
    }

    /// ‖W_o Δo‖ for Δo = the heads' `w_h (o_h − v_h) / (1 − w_h)`.
    fn residual_moved(&self) -> f32 {
        let dh = self.head_dim;
        let width = self.weights.len() * dh;
        let d = self.w_o.len() / width;
        let mut out = vec![0f32; d];
        for (h, &w) in self.weights.iter().enumerate() {
            let c = w / (1.0 - w).max(1e-6);
            for j in 0..dh {
                let x = c * (self.outputs[h * dh + j] - self.value[h * dh + j]);
                let row = &self.w_o[(h * dh + j) * d..(h * dh + j + 1) * d];
                out.iter_mut().zip(row).for_each(|(o, r)| *o += x * r);
            }
        }
        out.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn mean_weight(&self) -> f32 {
        self.weights.iter().sum::<f32>() / self.weights.len() as f32
    }
}

type Score = Box<dyn Fn(&Seen) -> f32>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences] = &args[..] else {
        bail!("usage: evict_output MODEL ENV SEQUENCES");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let alphas: Vec<f32> = std::env::var("EVICT_ALPHAS")
        .unwrap_or_else(|_| "0.25,0.5".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse().context("EVICT_ALPHAS"))
        .collect::<Result<_>>()?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let (eviction, store) = run.eviction().map_err(|e| anyhow::anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let (l_n, dh, budget, decay) = (cfg.n_layers, cfg.head_dim, eviction.budget, eviction.decay);
    let rule = Baseline::tova_ema(budget, eviction.store, decay);

    let mut rows: Vec<(String, Score)> = vec![
        ("weight (tova-ema)".into(), Box::new(|s: &Seen| s.mean_weight())),
        (
            "output moved".into(),
            Box::new(|s: &Seen| {
                s.weights
                    .iter()
                    .zip(s.distances())
                    .map(|(&w, d)| w as f64 * d / (1.0 - w as f64).max(1e-6))
                    .sum::<f64>() as f32
            }),
        ),
        (
            "output moved, no renormalisation".into(),
            Box::new(|s: &Seen| s.weights.iter().zip(s.distances()).map(|(&w, d)| w as f64 * d).sum::<f64>() as f32),
        ),
        ("residual moved (through W_o)".into(), Box::new(|s: &Seen| s.residual_moved())),
    ];
    for alpha in alphas {
        rows.push((
            format!("weight × distance^{alpha}"),
            Box::new(move |s: &Seen| {
                let d = s.distances().sum::<f64>() / s.weights.len() as f64;
                s.mean_weight() * (d as f32).powf(alpha)
            }),
        ));
    }

    let w_o: Vec<Vec<f32>> =
        model.blocks.iter().map(|b| ahr_tpa::host::to_host(b.attn.o.weight.val())).collect::<Result<_, _>>()?;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = ahr_tpa::cost::exact_bytes_per_token(&cfg) as f64;
    println!(
        "| eviction score ({} held-out windows, budget {budget}, decay {decay}, the rule's cache) | bits/byte | memory (of exact) | against `tova-ema`, paired (95 %; positive: better) |",
        h.sequences
    );
    println!("|---|---:|---:|---|");
    let mut first: Option<Vec<ahr_tasks::Metrics>> = None;
    for (name, score) in &rows {
        let run = |batch: &Batch| {
            // Per (stream, layer, position): the smoothed log score.
            let mut smoothed = vec![0f64; batch.batch_size * l_n * batch.seq_len];
            let mut watch = |s: RuleStep| {
                let base = (s.stream * l_n + s.layer) * batch.seq_len;
                let weights: Vec<Vec<f32>> = s.held.iter().map(|&k| (s.head_weights)(k)).collect();
                let vals: Vec<&[f32]> = s.held.iter().map(|&k| s.values[k].as_slice()).collect();
                let outputs = ahr_policy::evict::head_outputs(&weights, &vals, dh);
                for (&k, w) in s.held.iter().zip(&weights) {
                    let seen =
                        Seen { weights: w, value: &s.values[k], outputs: &outputs, head_dim: dh, w_o: &w_o[s.layer] };
                    let x = score(&seen);
                    let m = &mut smoothed[base + k];
                    *m = if k == s.query { log_weight(x) } else { smooth_step(*m, x, decay) };
                }
                (s.held.len() > budget).then(|| {
                    *s.held
                        .iter()
                        .min_by(|&&a, &&b| smoothed[base + a].total_cmp(&smoothed[base + b]).then(a.cmp(&b)))
                        .expect("a held key")
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
    Ok(())
}
