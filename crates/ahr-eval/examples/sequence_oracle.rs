//! How much a per-sequence choice could be worth — an upper bound for policies that adapt their
//! memory to how hard a sequence is (issue 16, item 3). Every per-layer pair of the menu's timed
//! options (windows and demotion schedules; the same pair for every token of a sequence) runs in
//! the rank environment on the env's held-out sequences, and each sequence's loss is kept. Then
//! an oracle that knows every sequence's losses picks one pair per sequence, trading loss against
//! memory with one price λ for the whole set (each sequence: the pair minimising its loss +
//! λ·its bytes), and a sweep over λ traces its front. Printed per memory given: the best single
//! pair for all sequences (a fixed per-layer rule) and the oracle's mixture, in the env's metric.
//! A rule or a policy that chose per sequence could not beat the oracle; if the oracle beats the
//! fixed rule by little, per-sequence adaptation has little to win on this task and model.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example sequence_oracle -- \
//!   policies/models/text-python envs/text-python-demote.toml 32 0.076,0.08,0.089,0.12
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::judge::par_map;
use ahr_tasks::{Metric, Metrics};
use ahr_tpa::cost;
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, memories] = &args[..] else {
        bail!("usage: sequence_oracle MODEL ENV SEQUENCES MEMORIES (fractions, comma-separated)");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let memories: Vec<f64> =
        memories.split(',').map(|m| m.parse::<f64>().context("MEMORIES")).collect::<Result<_>>()?;

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    let n_layers = cfg.n_layers;
    if n_layers != 2 {
        bail!("{}: a 2-layer model is needed (found {n_layers} layers)", model_dir.display());
    }
    let timed: Vec<usize> = (0..cfg.menu.len()).filter(|&i| cfg.menu[i].is_timed()).collect();
    if timed.is_empty() {
        bail!("{}: the menu has no windows or schedules", env_path.display());
    }
    let pairs: Vec<[usize; 2]> = timed.iter().flat_map(|&a| timed.iter().map(move |&b| [a, b])).collect();
    eprintln!("{} per-layer pairs", pairs.len());

    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let metric = h.metric();
    let runs: Vec<(f64, Vec<Metrics>)> = par_map(&pairs, 2, |pair| {
        let (point, _) = h.env_point("pair", "", &spec, 1, |obs| {
            (0..obs.len).flat_map(|_| pair.iter().copied()).collect::<Vec<_>>()
        })?;
        Ok((point.kv_bytes_per_token / exact, point.per_sequence))
    })?;
    let describe = |p: &[usize; 2]| format!("L0 {}, L1 {}", cfg.menu[p[0]], cfg.menu[p[1]]);
    let pooled = |choice: &dyn Fn(usize) -> usize| {
        let mut total = Metrics::default();
        let mut memory = 0.0;
        for s in 0..sequences {
            let (mem, per) = &runs[choice(s)];
            total.add(per[s].loss_sum, per[s].correct, per[s].count);
            memory += mem;
        }
        (metric.of(&total), memory / sequences as f64)
    };

    // The fixed rules: one pair for every sequence.
    let fixed: Vec<(f64, f64)> = (0..pairs.len()).map(|c| pooled(&|_| c)).collect();
    // The oracle's front: one price for all sequences, each picking its cheapest pair at it —
    // what the metric counts (nats of loss, or wrong answers) plus the price times its memory per
    // labelled position.
    let spent = |m: &Metrics| match metric {
        Metric::BitsPerByte => m.loss_sum,
        Metric::Accuracy => (m.count - m.correct) as f64,
    };
    let mut front = Vec::new();
    let prices = (0..=400).map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0));
    for lambda in std::iter::once(0.0).chain(prices) {
        let pick = |s: usize| {
            (0..pairs.len())
                .min_by(|&a, &b| {
                    let cost = |c: usize| spent(&runs[c].1[s]) + lambda * runs[c].0 * runs[c].1[s].count as f64;
                    cost(a).total_cmp(&cost(b))
                })
                .expect("at least one pair")
        };
        let picks: Vec<usize> = (0..sequences).map(pick).collect();
        let (m, mem) = pooled(&|s| picks[s]);
        front.push((lambda, m, mem, picks));
    }

    let better = |a: f64, b: f64| metric.better(a, b);
    println!("| pair | metric | memory |\n|---|---:|---:|");
    for (p, (m, mem)) in pairs.iter().zip(&fixed) {
        println!("| {} | {m:.4} | {:.2} % |", describe(p), 100.0 * mem);
    }
    println!(
        "\n| memory ≤ | best fixed pair | metric | memory | oracle per sequence | memory | distinct pairs | oracle − fixed |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for m in memories {
        let fits = |mem: f64| mem <= m * (1.0 + 1e-9);
        let best_fixed = (0..pairs.len())
            .filter(|&c| fits(fixed[c].1))
            .reduce(|a, b| if better(fixed[b].0, fixed[a].0) { b } else { a });
        let best_oracle = front.iter().filter(|f| fits(f.2)).reduce(|a, b| if better(b.1, a.1) { b } else { a });
        let fixed_cells = match best_fixed {
            Some(c) => format!("{} | {:.4} | {:.2} %", describe(&pairs[c]), fixed[c].0, 100.0 * fixed[c].1),
            None => "(nothing fits) | | ".into(),
        };
        let oracle_cells = match best_oracle {
            Some((_, om, omem, picks)) => {
                let mut distinct = picks.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let gap = best_fixed.map(|c| format!("{:+.4}", om - fixed[c].0)).unwrap_or_default();
                format!("{om:.4} | {:.2} % | {} | {gap}", 100.0 * omem, distinct.len())
            }
            None => "(nothing fits) | | |".into(),
        };
        println!("| {:.1} % | {fixed_cells} | {oracle_cells} |", 100.0 * m);
    }
    Ok(())
}
