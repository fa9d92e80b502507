//! How much a split of the memory between layers chosen per sequence could be worth — an upper
//! bound for a learned split (a pooled evicter deciding which layer gives up a key). The rule a
//! learned evicter of the env starts from (`Baseline::of_eviction`: its budget, decay, second tier
//! and byte class) runs untilted and at every tilt given (`tova-layers`: layer l holds
//! `evict::tilted(budget, tilt, l, L)` keys, the layers together what the untilted rule holds), on
//! the env's held-out sequences, and each sequence's loss is kept. An oracle that knows them picks
//! one tilt per sequence. A split decided per sequence could not beat the oracle (a split moved
//! within a sequence might, but only by what the oracle's per-sequence choice already shows it
//! varies); if the oracle is close to the best fixed tilt, a learned split has little to win.
//! Margins are positive where the first named is better, in the env's metric.
//!
//! A placebo tells how much of the oracle's margin is what any per-sequence pick among settings
//! of one memory finds: `nats` runs the env's rule (its own tilt) with the byte-class bonus at
//! each value given instead — settings that move no memory between layers.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example tilt_oracle -- \
//!   policies/models/text-python-tpa envs/text-python-tpa-layers.toml 64 tilt -6,-3,0,2,4,6,8,10,12,15
//! cargo run --release -p ahr-eval --example tilt_oracle -- \
//!   policies/models/text-python-tpa envs/text-python-tpa-layers.toml 64 nats 0,0.15,0.3,0.45,0.6
//! ```

use std::path::PathBuf;

use ahr_eval::baseline::Baseline;
use ahr_eval::harness::Harness;
use ahr_eval::judge::par_map;
use ahr_tasks::Metrics;
use ahr_tpa::cost;
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, kind, values] = &args[..] else {
        bail!("usage: tilt_oracle MODEL ENV SEQUENCES tilt|nats VALUES (comma-separated)");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let values: Vec<f32> =
        values.split(',').map(|v| v.trim().parse::<f32>().context("VALUES")).collect::<Result<_>>()?;

    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let (eviction, _) = run.eviction().map_err(|e| anyhow::anyhow!("{}: {e}", env_path.display()))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let layers = cfg.n_layers;
    let rule = Baseline::of_eviction(&eviction);
    // Each option: its value and the rule run with it; the first is the reference ("untilted").
    let options: Vec<(f32, Baseline)> = match kind.as_str() {
        "tilt" => {
            let mut tilts: Vec<i32> = values.iter().map(|&v| v.round() as i32).collect();
            if let Some(t) = tilts.iter().find(|t| t.unsigned_abs() as usize >= eviction.budget) {
                bail!("tilt {t}: at most the budget ({}) less one either way", eviction.budget);
            }
            tilts.retain(|&t| t != 0);
            tilts.insert(0, 0);
            tilts.iter().map(|&t| (t as f32, rule.tilted(t))).collect()
        }
        "nats" => {
            let Some(keep) = eviction.keep else {
                bail!("{}: nats needs a byte class kept (keep = …)", env_path.display())
            };
            values.iter().map(|&nats| (nats, rule.keeping(ahr_policy::evict::ClassBonus { nats, ..keep }))).collect()
        }
        other => bail!("{other}: tilt or nats"),
    };
    eprintln!(
        "rule: {} ({}), {kind} {:?}",
        rule.name(),
        rule.setting(),
        options.iter().map(|o| o.0).collect::<Vec<_>>()
    );

    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let metric = h.metric();
    let runs: Vec<(f64, Vec<Metrics>)> = par_map(&options, 2, |(v, rule)| {
        let point = h.rule_point(rule)?;
        eprintln!("{kind} {v:+}: {:.4} at {:.2} %", point.metric, 100.0 * point.kv_bytes_per_token / exact);
        Ok((point.kv_bytes_per_token / exact, point.per_sequence))
    })?;
    let sequences = runs[0].1.len();
    let budgets = |rule: &Baseline| {
        (0..layers).map(|l| rule.budget_at(l, layers).unwrap_or(0).to_string()).collect::<Vec<_>>().join("/")
    };
    let pooled = |choice: &dyn Fn(usize) -> usize| {
        let mut total = Metrics::default();
        for s in 0..sequences {
            let m = &runs[choice(s)].1[s];
            total.add(m.loss_sum, m.correct, m.count);
        }
        metric.of(&total)
    };
    // How much `a` is better than `b`.
    let gain = |a: f64, b: f64| if metric.higher_is_better() { a - b } else { b - a };
    let fixed: Vec<f64> = (0..options.len()).map(|c| pooled(&|_| c)).collect();
    let best = (0..options.len()).reduce(|a, b| if metric.better(fixed[b], fixed[a]) { b } else { a }).expect("a tilt");
    // Per sequence the tilt whose loss (or wrong answers) is least: the metric counts both the same way.
    let spent = |m: &Metrics| match metric {
        ahr_tasks::Metric::BitsPerByte => m.loss_sum,
        ahr_tasks::Metric::Accuracy => (m.count - m.correct) as f64,
    };
    let picks: Vec<usize> = (0..sequences)
        .map(|s| {
            (0..options.len()).min_by(|&a, &b| spent(&runs[a].1[s]).total_cmp(&spent(&runs[b].1[s]))).expect("a tilt")
        })
        .collect();
    let oracle = pooled(&|s| picks[s]);

    println!("rule: {} ({}), {sequences} held-out sequences\n", rule.name(), rule.setting());
    println!("| {kind} | keys per layer | metric | memory | against the first | sequences it is best on |");
    println!("|---:|---|---:|---:|---:|---:|");
    let first = 0;
    for (c, (v, rule)) in options.iter().enumerate() {
        println!(
            "| {v:+} | {} | {:.4} | {:.2} % | {:+.4} | {} |",
            budgets(rule),
            fixed[c],
            100.0 * runs[c].0,
            gain(fixed[c], fixed[first]),
            picks.iter().filter(|&&p| p == c).count()
        );
    }
    let (lo, hi) = runs.iter().map(|r| r.0).fold((f64::MAX, f64::MIN), |(lo, hi), m| (lo.min(m), hi.max(m)));
    println!(
        "\nbest fixed {kind} {:+}: {:.4}; oracle per sequence: {oracle:.4} ({:+.4} over the best fixed {kind}, \
         {:+.4} over the first; memory {:.2}–{:.2} %)",
        options[best].0,
        fixed[best],
        gain(oracle, fixed[best]),
        gain(oracle, fixed[first]),
        100.0 * lo,
        100.0 * hi
    );
    Ok(())
}
