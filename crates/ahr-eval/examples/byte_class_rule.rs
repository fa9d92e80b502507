//! A rule that reads the byte — what a practitioner writes after seeing that a text policy keeps
//! rare and uncertain bytes longer (docs/FINDINGS.md, twenty-fourth session): per layer, bytes of
//! a class get one storage option (a longer window or a demotion schedule), all other bytes
//! another, run in the rank environment on the env's held-out windows. A grid over the classes
//! (whitespace; not a letter or digit; not a lower-case letter) and, per layer, the env menu's
//! windows and schedules as the two options (the rest at one of the three cheapest); prints every
//! setting at or below MAX_MEMORY (a fraction of the exact bytes) and the best one below each
//! memory given (lower is better: bits per byte). For 2-layer byte-level models.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example byte_class_rule -- \
//!   policies/models/text-tiny envs/text-demote.toml 32 0.115 0.100,0.1115,0.1083
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::judge::par_map;
use ahr_tpa::{StoreOption, cost};
use anyhow::{Context, Result, bail};

/// A byte class: its name and its test.
type Class = (&'static str, fn(u8) -> bool);

/// The byte classes the grid tries.
const CLASSES: [Class; 3] = [
    ("whitespace", |b| b.is_ascii_whitespace()),
    ("not alphanumeric", |b| !b.is_ascii_alphanumeric()),
    ("not lower-case", |b| !b.is_ascii_lowercase()),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, max_memory, memories] = &args[..] else {
        bail!("usage: byte_class_rule MODEL ENV SEQUENCES MAX_MEMORY MEMORIES (fractions, comma-separated)");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let max_memory: f64 = max_memory.parse().context("MAX_MEMORY")?;
    let memories: Vec<f64> =
        memories.split(',').map(|m| m.parse::<f64>().context("MEMORIES")).collect::<Result<_>>()?;

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    if cfg.n_layers != 2 || cfg.vocab_size > 256 {
        bail!(
            "{}: a 2-layer byte-level model is needed (found {} layers, {} tokens)",
            model_dir.display(),
            cfg.n_layers,
            cfg.vocab_size
        );
    }
    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    let t_n = task.valid_batch(0, 1).seq_len;
    // The options a byte may get: the menu's windows and schedules (timed options).
    let timed: Vec<usize> = (0..cfg.menu.len()).filter(|&i| cfg.menu[i].is_timed()).collect();
    if timed.len() < 2 {
        bail!("{}: the menu needs at least two windows or schedules", env_path.display());
    }
    let memory_of = |o: StoreOption| cost::sequence_cost(&cfg, t_n, |_, _| (o, None)).kv_bytes_per_token / exact;
    let memory: Vec<f64> = cfg.menu.iter().map(|&o| memory_of(o)).collect();
    // Per layer (short, long): the class gets `long`, the rest `short` — one of the three cheapest
    // options (at these memories most bytes get little) — `long` holding more.
    let mut cheapest = timed.clone();
    cheapest.sort_by(|&a, &b| memory[a].total_cmp(&memory[b]));
    cheapest.truncate(3);
    let pairs: Vec<(usize, usize)> = cheapest
        .iter()
        .flat_map(|&s| timed.iter().map(move |&l| (s, l)))
        .filter(|&(s, l)| memory[s] < memory[l])
        .collect();
    let mut settings = Vec::new();
    for class in 0..CLASSES.len() {
        for &p0 in &pairs {
            for &p1 in &pairs {
                let per_layer = [p0, p1];
                // Skip settings that cannot fit: the rest's options alone cost more than allowed.
                let floor = (memory[p0.0] + memory[p1.0]) / 2.0;
                if floor <= max_memory {
                    settings.push((class, per_layer));
                }
            }
        }
    }
    eprintln!("{} settings", settings.len());
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let points = par_map(&settings, 2, |&(class, per_layer)| {
        let in_class = CLASSES[class].1;
        let (point, _) = h.env_point("byte-class", "", &spec, 1, |obs| {
            (0..obs.len)
                .flat_map(|r| {
                    let long = in_class(obs.tokens[r] as u8);
                    per_layer.iter().map(move |&(s, l)| if long { l } else { s })
                })
                .collect()
        })?;
        Ok((point.metric, point.kv_bytes_per_token / exact))
    })?;
    let describe = |&(class, per_layer): &(usize, [(usize, usize); 2])| {
        let layer = |l: usize| format!("L{l}: {} else {}", cfg.menu[per_layer[l].1], cfg.menu[per_layer[l].0]);
        format!("{}: {}; {}", CLASSES[class].0, layer(0), layer(1))
    };
    println!("| setting | metric | memory |\n|---|---:|---:|");
    for (s, (metric, mem)) in settings.iter().zip(&points) {
        if *mem <= max_memory {
            println!("| {} | {metric:.4} | {:.2} % |", describe(s), 100.0 * mem);
        }
    }
    println!("\n| memory ≤ | best byte-class setting | metric | memory |\n|---:|---|---:|---:|");
    for m in memories {
        let best = settings
            .iter()
            .zip(&points)
            .filter(|(_, (_, mem))| *mem <= m * (1.0 + 1e-9))
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0));
        match best {
            Some((s, (metric, mem))) => {
                println!("| {:.1} % | {} | {metric:.4} | {:.2} % |", 100.0 * m, describe(s), 100.0 * mem)
            }
            None => println!("| {:.1} % | (nothing fits) | | |", 100.0 * m),
        }
    }
    Ok(())
}
