//! What a per-token write decision could be worth beyond a per-token table, and how much of it
//! causal context predicts (issue 16).
//!
//! **Effects.** Start from a table (a `PriorTable` file: each byte's option per layer, what
//! `ahr fit-rule --family token-table` writes) on the env's held-out windows (or, given SEED, on
//! training windows of that seed); for every token, layer and other option of the judge's menu,
//! measure what storing that one entry differently does to the window's loss (one parallel forward
//! per change, everything else as the table has it). An oracle that knows those effects picks, for
//! every entry on its own, the option minimising its effect + λ · its bytes (one price λ for all),
//! and the picks run together through the model, against the table at the same memory. The oracle
//! reads the window's own labels: it can beat the exact cache (by dropping what misleads the model
//! on these very bytes), so it bounds hindsight, not what a causal decision could reach.
//!
//! **Fit** (`token_oracle fit`). Predict the training windows' effects from what a decision could
//! see (ridge regression: the byte alone — a table refitted from first-order effects — the byte
//! with causal context at its write, and, as non-causal references, with the attention the token
//! draws from the next 16 / 64 / all queries), pick per entry by the prediction at one price and a
//! toll κ per entry moved off the table (a trust region: the effects are first order), and run the
//! picks on the held-out windows: bits per byte at the table's memory, paired against it.
//!
//! Both write their tables to stdout. The effects go to OUT (`effects.bin`, f32 little-endian
//! `[window][t][l][o]` in bits, 0 at the table's option; `effects.json`: the windows' bytes and
//! labels, the table's options, the window's loss under it, each option's bytes).
//!
//! ```bash
//! E=target/release/examples/token_oracle; M=policies/models/text-tiny; ENV=envs/text-demote-python.toml
//! T=configs/prior/text-demote-python-table-10pct.json
//! $E $M $ENV $T 48 held48                  # held-out windows (~25 s each on 2 cores)
//! $E $M $ENV $T 32 train-s1 1              # training windows of seed 1
//! $E fit $M $ENV train-s1 held48           # TRAIN_DIR may list several, comma-separated
//! ```

use std::path::PathBuf;

use ahr_eval::harness::{Harness, demotion_stores};
use ahr_eval::judge::par_map;
use ahr_tasks::{Batch, IGNORE};
use ahr_tpa::{Choices, Model, StoreOption, cost};
use anyhow::{Context, Result, anyhow, bail};

/// Counterfactual rows per parallel forward.
const ROWS: usize = 64;
/// The ridge penalty of `fit` (features are scaled to about [0, 1]; in the first runs 10 read no
/// worse than 1).
const RIDGE: f64 = 10.0;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "fit") {
        return fit(&args[1..]);
    }
    let (model, env, table, sequences, out, train) = match &args[..] {
        [m, e, t, n, o] => (m, e, t, n, o, None),
        [m, e, t, n, o, s] => (m, e, t, n, o, Some(s.parse::<u64>().context("SEED")?)),
        _ => bail!("usage: token_oracle MODEL ENV TABLE SEQUENCES OUT [SEED: training windows of this seed]"),
    };
    let (model_dir, env_path, out) = (PathBuf::from(model), PathBuf::from(env), PathBuf::from(out));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let h = match train {
        Some(seed) => Harness::training(&model, &task, &spec, sequences, seed, &dev)?,
        None => Harness::new(&model, &task, &spec, sequences, &dev, false)?,
    };
    let t_n = h.seq_len();
    // The judge's menu: the env's options and the demotion schedules the rules may use.
    let rules = model.clone().with_timed(&demotion_stores(model.config(), t_n))?;
    let cfg = rules.config().clone();
    let (l_n, o_n) = (cfg.n_layers, cfg.menu.len());
    let names: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
    let table = ahr_policy::net::PriorTable::load(&PathBuf::from(table))
        .map_err(anyhow::Error::msg)?
        .resolve(&names, l_n, cfg.vocab_size)
        .map_err(anyhow::Error::msg)?;

    // Each entry's time-averaged bytes, as a fraction of the exact cache's (additive over entries).
    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    let bytes: Vec<f64> = (0..t_n * l_n * o_n)
        .map(|i| {
            let (t, l, o) = (i / (l_n * o_n), i / o_n % l_n, i % o_n);
            let one = |tt: usize, ll: usize| {
                let opt = if (tt, ll) == (t, l) { cfg.menu[o] } else { StoreOption::Drop };
                (opt, None, None)
            };
            cost::sequence_cost_demoted(&cfg, t_n, one).kv_bytes_per_token / exact
        })
        .collect();

    let windows: Vec<Batch> = h.batches().flat_map(|b| (0..b.batch_size).map(|i| b.rows(i..i + 1))).collect();
    let base: Vec<Vec<usize>> = windows
        .iter()
        .map(|w| (0..t_n * l_n).map(|i| table[w.inputs[i / l_n] as usize * l_n + i % l_n]).collect())
        .collect();
    let started = std::time::Instant::now();
    let effects: Vec<(f64, Vec<f32>)> = par_map(&(0..windows.len()).collect::<Vec<_>>(), 2, |&w| {
        let r = counterfactuals(&rules, &windows[w], &base[w], o_n, &dev);
        eprintln!("window {w}: {:.0} s", started.elapsed().as_secs_f64());
        r
    })?;
    let labels: usize = windows.iter().map(|w| w.labels.iter().filter(|&&l| l != IGNORE).count()).sum::<usize>();
    write_effects(&out, &windows, &base, &effects, &bytes, &names, l_n)?;

    // The table itself.
    let base_loss: f64 = effects.iter().map(|e| e.0).sum();
    let base_mem = memory(&base, &bytes, o_n);
    println!("| allocation | λ | predicted bits/byte | bits/byte | memory | entries changed |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| table | | | {:.4} | {:.2} % | |", base_loss / labels as f64, 100.0 * base_mem);
    // The oracle at a price: every entry on its own. λ in bits per (fraction of exact, summed over
    // entries) — the price at the table's memory, then a few either side.
    let effect = |w: usize, c: usize| effects[w].1[c] as f64;
    let oracle = |lambda: f64| pick(&base, &bytes, o_n, effect, lambda, 0.0);
    let at_table = price_for(base_mem, |lambda| memory(&oracle(lambda), &bytes, o_n));
    let indices: Vec<usize> = (0..windows.len()).collect();
    for lambda in [at_table / 4.0, at_table / 2.0, at_table, at_table * 2.0, at_table * 4.0] {
        let picks = oracle(lambda);
        let predicted = (base_loss
            + picks
                .iter()
                .enumerate()
                .map(|(w, p)| p.iter().enumerate().map(|(i, &o)| effect(w, i * o_n + o)).sum::<f64>())
                .sum::<f64>())
            / labels as f64;
        let loss: f64 = par_map(&indices, 2, |&w| window_loss(&rules, &windows[w], &picks[w], &dev))?.iter().sum();
        let changed: usize =
            picks.iter().zip(&base).map(|(p, b)| p.iter().zip(b).filter(|(x, y)| x != y).count()).sum();
        println!(
            "| oracle | {lambda:.4} | {predicted:.4} | {:.4} | {:.2} % | {:.1} % |",
            loss / labels as f64,
            100.0 * memory(&picks, &bytes, o_n),
            100.0 * changed as f64 / (windows.len() * t_n * l_n) as f64
        );
    }
    Ok(())
}

/// Per window, each entry's option minimising its effect `pred(window, (t·L + l)·O + o)` — 0 at
/// the table's option — plus `kappa` if it leaves the table's option, plus `lambda` times its
/// bytes over the table's: what the oracle (the effects themselves, `kappa` 0) or a prediction
/// picks at one price.
fn pick(
    table: &[Vec<usize>],
    bytes: &[f64],
    o_n: usize,
    pred: impl Fn(usize, usize) -> f64,
    lambda: f64,
    kappa: f64,
) -> Vec<Vec<usize>> {
    let pred = &pred;
    table
        .iter()
        .enumerate()
        .map(|(w, tw)| {
            tw.iter()
                .enumerate()
                .map(|(i, &b)| {
                    let cost = |o: usize| {
                        let p = if o == b { 0.0 } else { pred(w, i * o_n + o) + kappa };
                        p + lambda * (bytes[i * o_n + o] - bytes[i * o_n + b])
                    };
                    (0..o_n).min_by(|&a, &c| cost(a).total_cmp(&cost(c))).expect("a menu")
                })
                .collect()
        })
        .collect()
}

/// Mean over windows of the picks' memory (a fraction of the exact cache's).
fn memory(picks: &[Vec<usize>], bytes: &[f64], o_n: usize) -> f64 {
    picks.iter().map(|p| p.iter().enumerate().map(|(i, &o)| bytes[i * o_n + o]).sum::<f64>()).sum::<f64>()
        / picks.len() as f64
}

/// The price at which the picks hold at most `target` (bisection on a log scale from 0 to 10⁶).
fn price_for(target: f64, memory_at: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1e6f64);
    for _ in 0..60 {
        let mid = (lo * hi).sqrt().max(lo + 1e-9);
        if memory_at(mid) > target { lo = mid } else { hi = mid }
    }
    hi
}

/// The loss of one window (bits, summed over its labels) under `picks` (`[t][l]`, menu indices).
fn window_loss(model: &Model, window: &Batch, picks: &[usize], dev: &burn::tensor::Device) -> Result<f64> {
    let l_n = model.config().n_layers;
    let choices = Choices::from_fn(1, window.seq_len, l_n, |_, t, l| picks[t * l_n + l]);
    Ok(row_losses(model, window, &choices, 1, dev)?[0])
}

/// Bits of every row of `batch` (a window repeated) under `choices`, summed over its labels.
fn row_losses(
    model: &Model,
    batch: &Batch,
    choices: &Choices,
    rows: usize,
    dev: &burn::tensor::Device,
) -> Result<Vec<f64>> {
    let batch = batch.repeat_each(rows);
    let (logp, _, _) = ahr_train::evaluate::label_logprobs(model, &batch, choices, dev)?
        .ok_or_else(|| anyhow!("the window has no labelled positions"))?;
    let logp = logp.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
    let per = logp.len() / rows;
    Ok(logp.chunks(per).map(|c| c.iter().map(|&x| -x as f64 / std::f64::consts::LN_2).sum()).collect())
}

/// The window's loss under `base`, and every entry's effect `[t][l][o]` (bits; 0 at its own
/// option): the loss with that one entry stored at `o` minus the base loss.
fn counterfactuals(
    model: &Model,
    window: &Batch,
    base: &[usize],
    o_n: usize,
    dev: &burn::tensor::Device,
) -> Result<(f64, Vec<f32>)> {
    let (t_n, l_n) = (window.seq_len, model.config().n_layers);
    let base_loss = window_loss(model, window, base, dev)?;
    let changes: Vec<(usize, usize)> =
        (0..t_n * l_n).flat_map(|i| (0..o_n).filter(move |&o| o != base[i]).map(move |o| (i, o))).collect();
    let mut effects = vec![0f32; t_n * l_n * o_n];
    for chunk in changes.chunks(ROWS) {
        let choices = Choices::from_fn(chunk.len(), t_n, l_n, |r, t, l| {
            let (i, o) = chunk[r];
            if i == t * l_n + l { o } else { base[t * l_n + l] }
        });
        for (&(i, o), loss) in chunk.iter().zip(row_losses(model, window, &choices, chunk.len(), dev)?) {
            effects[i * o_n + o] = (loss - base_loss) as f32;
        }
    }
    Ok((base_loss, effects))
}

fn write_effects(
    out: &std::path::Path,
    windows: &[Batch],
    base: &[Vec<usize>],
    effects: &[(f64, Vec<f32>)],
    bytes: &[f64],
    names: &[String],
    layers: usize,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let raw: Vec<u8> = effects.iter().flat_map(|e| e.1.iter().flat_map(|x| x.to_le_bytes())).collect();
    std::fs::write(out.join("effects.bin"), raw)?;
    let meta = serde_json::json!({
        "menu": names,
        "layers": layers,
        "seq_len": windows[0].seq_len,
        "inputs": windows.iter().map(|w| w.inputs.clone()).collect::<Vec<_>>(),
        "labels": windows.iter().map(|w| w.labels.clone()).collect::<Vec<_>>(),
        "table": base,
        "base_bits": effects.iter().map(|e| e.0).collect::<Vec<_>>(),
        "bytes": bytes,
    });
    std::fs::write(out.join("effects.json"), serde_json::to_string(&meta)?)?;
    Ok(())
}

/// What `effects.json` holds.
#[derive(serde::Deserialize)]
struct Effects {
    menu: Vec<String>,
    layers: usize,
    seq_len: usize,
    inputs: Vec<Vec<u32>>,
    labels: Vec<Vec<i64>>,
    table: Vec<Vec<usize>>,
    base_bits: Vec<f64>,
    bytes: Vec<f64>,
    #[serde(skip)]
    effects: Vec<Vec<f32>>,
}

fn read_effects(dir: &std::path::Path) -> Result<Effects> {
    let text = std::fs::read_to_string(dir.join("effects.json")).with_context(|| format!("{}", dir.display()))?;
    let mut e: Effects = serde_json::from_str(&text)?;
    let raw = std::fs::read(dir.join("effects.bin"))?;
    let per = e.seq_len * e.layers * e.menu.len();
    let all: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if all.len() != per * e.inputs.len() {
        bail!("{}: effects.bin holds {} values, not {}", dir.display(), all.len(), per * e.inputs.len());
    }
    e.effects = all.chunks(per).map(|c| c.to_vec()).collect();
    Ok(e)
}

/// Byte classes the context slopes are kept per.
fn class(b: u32) -> usize {
    match b as u8 {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        b' ' | b'\t' => 3,
        b'\n' | b'\r' => 4,
        _ => 5,
    }
}

const CONTEXT: usize = 15;
const CLASSES: usize = 6;

/// Which features a prediction reads.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Level {
    /// The byte alone (what a table reads).
    Byte,
    /// The byte and causal context at its write.
    Context,
    /// That and the attention it draws from the next `a` queries (what a review at age `a` sees).
    Hindsight(usize),
    /// That and the attention it draws from every later query (no decision can see it).
    Future,
}

/// What the exact forward gives of a window.
struct Reads {
    entropy: Vec<f32>,
    surprisal: Vec<f32>,
    /// Attention weights `[T_query · T_key]` per layer, mean over heads.
    maps: Vec<Vec<f32>>,
}

/// Causal features of every position of a window: what a policy could see when token t is
/// written (its byte, the exact model's entropy and surprisal up to t, its position, how much of
/// the text before it repeats), or less or more as `level` says: `Level::Byte` is the byte alone
/// (one-hot), what a table reads.
fn features(inputs: &[u32], reads: &Reads, level: Level) -> Vec<Vec<f64>> {
    let (entropy, surprisal) = (&reads.entropy, &reads.surprisal);
    let context = level != Level::Byte;
    let extra = match level {
        Level::Byte | Level::Context => 0,
        Level::Hindsight(_) | Level::Future => 2 * reads.maps.len(),
    };
    let t_n = inputs.len();
    let ln_t = (t_n as f64).ln();
    let ws = |b: u32| matches!(b as u8, b' ' | b'\n' | b'\t' | b'\r');
    let mut last_ws = None;
    let mut last_nl = None;
    (0..t_n)
        .map(|t| {
            let mut f = vec![0.0; 256 + if context { CONTEXT * (1 + CLASSES) } else { 0 } + extra];
            f[inputs[t] as usize] = 1.0;
            if ws(inputs[t]) {
                last_ws = Some(t);
            }
            let line_start = last_nl.map_or(0, |n: usize| n + 1);
            if inputs[t] == b'\n' as u32 {
                last_nl = Some(t);
            }
            if !context {
                return f;
            }
            // Longest suffix ending at t that also ends at an earlier position (≤ 16).
            let repeat = (0..t)
                .map(|j| (0..=j.min(15)).take_while(|&k| inputs[j - k] == inputs[t - k]).count())
                .max()
                .unwrap_or(0);
            let seen = inputs[..t].iter().filter(|&&b| b == inputs[t]).count();
            let dist = inputs[..t].iter().rposition(|&b| b == inputs[t]).map_or(t_n, |j| t - j);
            let since_ws = last_ws.map_or(t + 1, |w| t - w).min(32);
            let prev = if t > 0 { inputs[t - 1] } else { b'\n' as u32 };
            let c = [
                entropy[t] as f64,
                if t > 0 { entropy[t - 1] as f64 } else { 0.0 },
                surprisal[t] as f64,
                t as f64 / t_n as f64,
                (1.0 + t as f64).ln() / ln_t,
                (1.0 + repeat as f64).ln() / 17f64.ln(),
                (1.0 + seen as f64).ln() / ln_t,
                (1.0 + since_ws as f64).ln() / 33f64.ln(),
                ws(prev) as u8 as f64,
                (prev as u8).is_ascii_alphabetic() as u8 as f64,
                (1.0 + dist as f64).ln() / (1.0 + t_n as f64).ln(),
                (entropy[t] as f64).powi(2),
                // Text structure: a run of one byte (an underline), the place in the line, and
                // whether the line opens with punctuation (markup).
                (1.0 + (0..=t).take_while(|&k| inputs[t - k] == inputs[t]).count().min(16) as f64).ln() / 17f64.ln(),
                (1.0 + (t - line_start.min(t)).min(80) as f64).ln() / 81f64.ln(),
                (line_start <= t && (inputs[line_start] as u8).is_ascii_punctuation()) as u8 as f64,
            ];
            let k = class(inputs[t]);
            for (i, v) in c.iter().enumerate() {
                f[256 + i] = *v;
                f[256 + CONTEXT * (1 + k) + i] = *v;
            }
            // What a later look at the token would see: the attention it drew (exact cache, mean
            // over heads) from the next `a` queries, or from every later one.
            let until = match level {
                Level::Hindsight(a) => (t + a).min(t_n - 1),
                Level::Future => t_n - 1,
                _ => return f,
            };
            for (l, m) in reads.maps.iter().enumerate() {
                let drawn: Vec<f32> = (t + 1..=until).map(|q| m[q * t_n + t]).collect();
                let at = 256 + CONTEXT * (1 + CLASSES) + 2 * l;
                f[at] = (1.0 + 100.0 * drawn.iter().sum::<f32>() as f64).ln() / 101f64.ln();
                f[at + 1] = drawn.iter().fold(0f32, |a, &b| a.max(b)) as f64;
            }
            f
        })
        .collect()
}

/// Entropy (/ ln V) of the exact model's next-token distribution at every position, and the
/// surprisal (/ ln V) of each token under the position before (1 at t = 0).
fn exact_reads(model: &Model, inputs: &[u32], dev: &burn::tensor::Device) -> Result<Reads> {
    use burn::tensor::activation::log_softmax;
    let cfg = model.config();
    let t_n = inputs.len();
    let tokens = model.tokens(inputs, 1, t_n, dev)?;
    let (logits, layer_maps) = model.forward_with_attention_maps(tokens, &Choices::exact(cfg, 1, t_n))?;
    let maps = layer_maps
        .into_iter()
        .map(|m| m.probs.mean_dim(1).reshape([t_n * t_n]).into_data().try_to_vec::<f32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{e:?}"))?;
    let logp = log_softmax(logits, 2);
    let logp = logp.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
    let (v, ln_v) = (cfg.vocab_size, (cfg.vocab_size as f32).ln());
    let entropy = logp.chunks(v).map(|r| -r.iter().map(|&x| x.exp() * x).sum::<f32>() / ln_v).collect();
    let surprisal =
        (0..t_n).map(|t| if t == 0 { 1.0 } else { -logp[(t - 1) * v + inputs[t] as usize] / ln_v }).collect();
    Ok(Reads { entropy, surprisal, maps })
}

/// Ridge regression with one Gram matrix for every target column: `w = (XᵀX + αI)⁻¹ XᵀY`.
fn ridge(x: &[Vec<f64>], y: &[Vec<f64>], alpha: f64) -> Vec<Vec<f64>> {
    let (d, k) = (x[0].len(), y[0].len());
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d * k];
    for (xr, yr) in x.iter().zip(y) {
        let nz: Vec<usize> = (0..d).filter(|&i| xr[i] != 0.0).collect();
        for &i in &nz {
            for &j in &nz {
                a[i * d + j] += xr[i] * xr[j];
            }
            for c in 0..k {
                b[i * k + c] += xr[i] * yr[c];
            }
        }
    }
    for i in 0..d {
        a[i * d + i] += alpha;
    }
    // Cholesky: a = L Lᵀ, in place (lower triangle).
    for j in 0..d {
        let s: f64 = (0..j).map(|p| a[j * d + p] * a[j * d + p]).sum();
        a[j * d + j] = (a[j * d + j] - s).sqrt();
        for i in j + 1..d {
            let s: f64 = (0..j).map(|p| a[i * d + p] * a[j * d + p]).sum();
            a[i * d + j] = (a[i * d + j] - s) / a[j * d + j];
        }
    }
    (0..k)
        .map(|c| {
            let mut z = vec![0.0; d];
            for i in 0..d {
                z[i] = (b[i * k + c] - (0..i).map(|p| a[i * d + p] * z[p]).sum::<f64>()) / a[i * d + i];
            }
            let mut w = vec![0.0; d];
            for i in (0..d).rev() {
                w[i] = (z[i] - (i + 1..d).map(|p| a[p * d + i] * w[p]).sum::<f64>()) / a[i * d + i];
            }
            w
        })
        .collect()
}

/// `token_oracle fit MODEL ENV TRAIN_DIR HELD_DIR`: predict the effects from causal features
/// (ridge regression fitted on the training windows' effects), pick per entry by the prediction
/// at one price, and run the picks on the held-out windows — against the table and against the
/// oracle that knows the held-out effects, at the table's memory.
fn fit(args: &[String]) -> Result<()> {
    let [model, env, train, held] = args else {
        bail!("usage: token_oracle fit MODEL ENV TRAIN_DIR[,TRAIN_DIR…] HELD_DIR");
    };
    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { model, .. } = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let held = read_effects(&PathBuf::from(held))?;
    let mut train = train.split(',').map(|d| read_effects(&PathBuf::from(d))).collect::<Result<Vec<_>>>()?.into_iter();
    let mut first = train.next().context("no training effects")?;
    for more in train {
        first.inputs.extend(more.inputs);
        first.effects.extend(more.effects);
    }
    let train = first;
    let t_n = held.seq_len;
    if model.config().vocab_size > 256 {
        bail!(
            "fit reads byte-level text (its features one-hot a byte); this model's vocabulary has {} tokens",
            model.config().vocab_size
        );
    }
    let rules = model.clone().with_timed(&demotion_stores(model.config(), t_n))?;
    let names: Vec<String> = rules.config().menu.iter().map(|o| o.to_string()).collect();
    if names != held.menu || names != train.menu {
        bail!("the effects were measured on another menu");
    }
    let (l_n, o_n) = (held.layers, held.menu.len());
    let reads = |e: &Effects| -> Result<Vec<Reads>> { e.inputs.iter().map(|w| exact_reads(&rules, w, &dev)).collect() };
    let (train_reads, held_reads) = (reads(&train)?, reads(&held)?);
    let labels: usize = held.labels.iter().flatten().filter(|&&l| l != IGNORE).count();
    let base_loss: f64 = held.base_bits.iter().sum();
    let base_mem = memory(&held.table, &held.bytes, o_n);
    let windows: Vec<Batch> = held
        .inputs
        .iter()
        .zip(&held.labels)
        .map(|(i, l)| Batch {
            inputs: i.clone(),
            labels: l.clone(),
            batch_size: 1,
            seq_len: t_n,
            difficulty: vec![None],
            roles: Vec::new(),
        })
        .collect();
    let indices: Vec<usize> = (0..windows.len()).collect();
    let counts: Vec<usize> = windows.iter().map(|w| w.labels.iter().filter(|&&l| l != IGNORE).count()).collect();
    // Pick per entry at a price from predicted effects `pred[w][(t·L + l)·O + o]`, the price at
    // the table's memory; run the picks.
    let run = |name: &str, pred: &[Vec<f64>], kappa: f64| -> Result<()> {
        let picks_at = |lambda: f64| pick(&held.table, &held.bytes, o_n, |w, c| pred[w][c], lambda, kappa);
        let picks = picks_at(price_for(base_mem, |lambda| memory(&picks_at(lambda), &held.bytes, o_n)));
        let losses = par_map(&indices, 2, |&w| window_loss(&rules, &windows[w], &picks[w], &dev))?;
        let diffs: Vec<f64> = losses.iter().zip(&held.base_bits).map(|(a, b)| b - a).collect();
        let changed: usize =
            picks.iter().zip(&held.table).map(|(p, b)| p.iter().zip(b).filter(|(x, y)| x != y).count()).sum();
        let (lo95, hi95) = bootstrap(&diffs, &counts);
        println!(
            "| {name} | {kappa} | {:.4} | {:.2} % | {:+.4} [{lo95:+.4}, {hi95:+.4}] | {:.1} % |",
            losses.iter().sum::<f64>() / labels as f64,
            100.0 * memory(&picks, &held.bytes, o_n),
            diffs.iter().sum::<f64>() / labels as f64,
            100.0 * changed as f64 / (windows.len() * t_n * l_n) as f64
        );
        Ok(())
    };
    println!("| picks by | κ (bits) | bits/byte | memory | vs the table (+ = better) | entries changed |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| the table | | {:.4} | {:.2} % | | |", base_loss / labels as f64, 100.0 * base_mem);
    let kappas = [0.0, 0.25, 0.5, 1.0, 2.0];
    let exact_picks = vec![rules.config().exact_index(); t_n * l_n];
    let exact_bits = par_map(&indices, 2, |&w| window_loss(&rules, &windows[w], &exact_picks, &dev))?;
    println!("| the exact cache | | {:.4} | 100 % | | |", exact_bits.iter().sum::<f64>() / labels as f64);
    let truth: Vec<Vec<f64>> = held.effects.iter().map(|e| e.iter().map(|&x| x as f64).collect()).collect();
    for kappa in kappas {
        run("held-out effects (oracle)", &truth, kappa)?;
    }
    for level in [Level::Byte, Level::Context, Level::Hindsight(16), Level::Hindsight(64), Level::Future] {
        let rows = |e: &Effects, r: &[Reads]| -> Vec<Vec<Vec<f64>>> {
            e.inputs.iter().zip(r).map(|(i, r)| features(i, r, level)).collect()
        };
        let (xs, ys): (Vec<Vec<f64>>, Vec<Vec<f64>>) = rows(&train, &train_reads)
            .into_iter()
            .zip(&train.effects)
            .flat_map(|(fw, ew)| {
                fw.into_iter()
                    .enumerate()
                    .map(move |(t, f)| (f, (0..l_n * o_n).map(|c| ew[t * l_n * o_n + c] as f64).collect::<Vec<_>>()))
            })
            .unzip();
        let w = ridge(&xs, &ys, RIDGE);
        let pred: Vec<Vec<f64>> = rows(&held, &held_reads)
            .iter()
            .map(|fw| {
                fw.iter()
                    .flat_map(|f| w.iter().map(move |wc| wc.iter().zip(f).map(|(a, b)| a * b).sum::<f64>()))
                    .collect()
            })
            .collect();
        let name = match level {
            Level::Byte => "byte alone (the table refitted)".to_string(),
            Level::Context => "byte + context".to_string(),
            Level::Hindsight(a) => format!("+ attention drawn by age {a} (not causal at the write)"),
            Level::Future => "+ all attention drawn (not causal)".to_string(),
        };
        // How much of the held-out effects' variance the prediction explains (entries off the
        // table's option).
        let (mut sse, mut sum, mut sum2, mut n) = (0.0, 0.0, 0.0, 0.0);
        for (pw, (ew, tw)) in pred.iter().zip(held.effects.iter().zip(&held.table)) {
            for i in 0..t_n * l_n {
                for o in (0..o_n).filter(|&o| o != tw[i]) {
                    let (p, y) = (pw[i * o_n + o], ew[i * o_n + o] as f64);
                    (sse, sum, sum2, n) = (sse + (p - y) * (p - y), sum + y, sum2 + y * y, n + 1.0);
                }
            }
        }
        eprintln!("{name}, ridge {RIDGE}: held-out R² of the effects {:.4}", 1.0 - sse / (sum2 - sum * sum / n));
        for kappa in kappas {
            run(&format!("{name}, ridge {RIDGE}"), &pred, kappa)?;
        }
    }
    Ok(())
}

/// 95 % bootstrap interval of a pooled difference (bits per label) over windows.
fn bootstrap(diffs: &[f64], counts: &[usize]) -> (f64, f64) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let n = diffs.len();
    let mut stats: Vec<f64> = (0..2000)
        .map(|_| {
            let (mut d, mut c) = (0.0, 0usize);
            for _ in 0..n {
                let i = rng.random_range(0..n);
                d += diffs[i];
                c += counts[i];
            }
            d / c as f64
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    (stats[50], stats[1949])
}
