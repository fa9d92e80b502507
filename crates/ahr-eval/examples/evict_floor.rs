//! Does memory that follows the attention beat a fixed budget? `tova-ema` with a fixed budget
//! against the same rule with a log-weight floor (`rules::Held::with_floor`): after each query
//! every held key whose smoothed weight is below the floor leaves too, the budget only a cap — so
//! a layer holds few keys where the queries spread their attention thinly and more where they
//! read many. Each rule runs with its own cache on the held-out sequences of ENV (its task only);
//! memory is the judge's measure (time-averaged bytes per token), so a floored rule is compared
//! with the fixed-budget curve at the memory it actually used.
//!
//! `EVICT_DECAY` (default 0.5), `EVICT_BUDGETS` (the fixed curve, default 15,20,25,30,35),
//! `EVICT_CAPS` (default 50,100) and `EVICT_FLOORS` (weights, default 0.003,0.01,0.02,0.04).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_floor -- \
//!   policies/models/text-python-wide envs/text-python-short-evict25.toml 64
//! ```

use std::path::PathBuf;

use ahr_eval::Baseline;
use ahr_eval::baseline::Scores;
use ahr_eval::harness::Harness;
use ahr_tpa::StoreOption;
use anyhow::{Context, Result, bail};

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let v = std::env::var(name).unwrap_or_else(|_| default.into());
    v.split(',').filter(|s| !s.is_empty()).map(|s| s.trim().parse::<T>().with_context(|| name.to_string())).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences] = &args[..] else {
        bail!("usage: evict_floor MODEL ENV SEQUENCES");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let decay: f32 = list("EVICT_DECAY", "0.5")?.first().copied().context("EVICT_DECAY")?;
    let budgets: Vec<usize> = list("EVICT_BUDGETS", "15,20,25,30,35")?;
    let caps: Vec<usize> = list("EVICT_CAPS", "50,100")?;
    let floors: Vec<f32> = list("EVICT_FLOORS", "0.003,0.01,0.02,0.04")?;
    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } =
        ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = ahr_tpa::cost::exact_bytes_per_token(model.config()) as f64;
    let rule = |budget, floor: Option<f32>| Baseline::Tova {
        budget,
        store: StoreOption::Full,
        scores: Scores::Cache,
        decay,
        floor: floor.map(f32::ln),
        output: false,
        tier2: None,
        keep: None,
        tilt: 0,
        pooled: None,
    };
    println!("| rule ({} held-out sequences, decay {decay}) | bits/byte | bytes/token | of exact |", h.sequences);
    println!("|---|---:|---:|---:|");
    let mut curve = Vec::new();
    let row = |name: String, b: &Baseline| -> Result<(f64, f64)> {
        let p = h.rule_point(b)?;
        println!(
            "| {name} | {:.4} | {:.1} | {:.2} % |",
            p.metric,
            p.kv_bytes_per_token,
            100.0 * p.kv_bytes_per_token / exact
        );
        Ok((p.kv_bytes_per_token, p.metric))
    };
    for &b in &budgets {
        curve.push(row(format!("fixed budget {b}"), &rule(b, None))?);
    }
    // The fixed curve at a floored rule's memory, by linear interpolation between its neighbours.
    let at = |mem: f64| -> Option<f64> {
        curve.windows(2).find(|w| w[0].0 <= mem && mem <= w[1].0).map(|w| {
            let f = (mem - w[0].0) / (w[1].0 - w[0].0).max(1e-12);
            w[0].1 + f * (w[1].1 - w[0].1)
        })
    };
    let mut gains = Vec::new();
    for &cap in &caps {
        for &floor in &floors {
            let (mem, metric) = row(format!("cap {cap}, floor {floor}"), &rule(cap, Some(floor)))?;
            if let Some(fixed) = at(mem) {
                gains.push(format!(
                    "cap {cap}, floor {floor}: {:+.4} bits/byte at {mem:.1} bytes/token",
                    fixed - metric
                ));
            }
        }
    }
    println!("\nFloored rules against the fixed-budget curve at their memory (positive: the floor is better):\n");
    for g in gains {
        println!("- {g}");
    }
    Ok(())
}
