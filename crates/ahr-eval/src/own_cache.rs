//! H2O and TOVA as their papers run them: token by token through the model with their own cache,
//! each key scored by the attention the queries actually gave it there — evicted keys gone, kept
//! keys at the rule's storage option, every later hidden state computed from that cache. The
//! weights are read off each decode step ([`KeyScorer`]); evictions leave the cache at once
//! ([`KvCache::evict`]). The result is the same eviction pattern the rule run query by query
//! over parallel forwards gives (`harness::tests`), at the cost of one decode per sequence.
//! The surprisal rule runs the same way: each token's surprisal is what the model predicted for
//! it with the rule's own cache ([`surprisal_evictions`]).

use ahr_policy::obs::SequenceHistory;
use ahr_tasks::Batch;
use ahr_tpa::review::KeyScorer;
use ahr_tpa::{KvCache, Model, StoreOption};
use anyhow::{Result, bail};
use burn::tensor::Device;

use crate::baseline::Baseline;
use crate::rules::{Held, NEVER};

/// Per (sequence, token, layer) of `batch` (row-major `[B, T, L]`), the first query that no longer
/// sees the key when `rule` (H2O or TOVA, any scoring) runs with its own cache at a plain option.
pub fn evictions(model: &Model, batch: &Batch, rule: &Baseline, dev: &Device) -> Result<Vec<u32>> {
    if let Baseline::Surprisal { .. } | Baseline::LayerSurprisal { .. } = rule {
        return surprisal_evictions(model, batch, rule, dev);
    }
    let cfg = model.config();
    let (b_n, t_n, l_n) = (batch.batch_size, batch.seq_len, cfg.n_layers);
    let store = rule.store();
    if store.is_timed() || store == StoreOption::Drop {
        bail!("{}: a rule scored by its own cache stores kept tokens at a plain option", rule.name());
    }
    let option = cfg.option_index(store).map_err(anyhow::Error::msg)?;
    let fresh = || match *rule {
        Baseline::H2o { heavy, recent, .. } => Ok(Held::heavy_hitters(heavy, recent)),
        Baseline::Tova { budget, .. } => Ok(Held::current(budget)),
        _ => Err(anyhow::anyhow!("{}: only H2O and TOVA are scored by their own cache", rule.name())),
    };
    let mut held = (0..b_n * l_n).map(|_| fresh()).collect::<Result<Vec<Held>>>()?;
    // Per (stream, layer): the stored key of every token, by position (empty once evicted).
    let mut keys = vec![vec![Vec::new(); t_n]; b_n * l_n];
    let scorer = KeyScorer::new(cfg);
    let mut cache = KvCache::new(cfg, b_n, dev);
    let mut evicted_at = vec![NEVER; b_n * t_n * l_n];
    let options = vec![option; b_n];
    let host = model.host_model(dev)?;
    for q in 0..t_n {
        let column: Vec<u32> = (0..b_n).map(|b| batch.inputs[b * t_n + q]).collect();
        let out = model.step_ids(host.as_ref(), &column, &cache, true, dev)?;
        let weights = scorer.step(&out, |_| true)?;
        for l in 0..l_n {
            for (b, key) in scorer.stored_keys(&out.pending, l, &options)?.into_iter().enumerate() {
                keys[b * l_n + l][q] = key;
            }
        }
        cache.push(out.pending, &vec![option; b_n * l_n])?;
        for (b, l) in (0..b_n).flat_map(|b| (0..l_n).map(move |l| (b, l))) {
            let i = b * l_n + l;
            let stream_keys = &keys[i];
            let mut victims = held[i].step(q, |k| weights.weight(b, l, &stream_keys[k]));
            // The cache holds the kept and the evicted keys in position order: evicting the newest
            // first leaves the older ones' indices as they are.
            victims.sort_unstable_by(|a, b| b.cmp(a));
            for &k in &victims {
                let index = held[i].keys().iter().chain(&victims).filter(|&&p| p < k).count();
                cache.evict(b, l, option, index)?;
                evicted_at[(b * t_n + k) * l_n + l] = (q + 1) as u32;
                keys[i][k] = Vec::new();
            }
        }
    }
    Ok(evicted_at)
}

/// Per (sequence, token, layer) of `batch` (`[B, T, L]`), the first query that no longer sees
/// the key when a surprisal rule (`surprisal`, `layer-surprisal`) runs with its own cache: token
/// t's surprisal is `−ln p(token t) / ln V` under the logits of step t − 1 computed from that
/// cache (1 at t = 0); in a layer that keeps content, a token on the kept side of τ stays to the
/// end; any other token leaves after the layer's window.
pub fn surprisal_evictions(model: &Model, batch: &Batch, rule: &Baseline, dev: &Device) -> Result<Vec<u32>> {
    let cfg = model.config();
    let (b_n, t_n, l_n, v) = (batch.batch_size, batch.seq_len, cfg.n_layers, cfg.vocab_size);
    // Per layer: (window, whether the layer keeps content, plain option); the kept side of τ.
    let (plan, tau, predictable): (Vec<(usize, bool, StoreOption)>, f32, bool) = match *rule {
        Baseline::Surprisal { tau, predictable, window, store, .. } => {
            (vec![(window, true, store); l_n], tau, predictable)
        }
        Baseline::LayerSurprisal { per_layer, tau } => {
            ((0..l_n).map(|l| (per_layer.window(l), l + 1 == l_n, per_layer.store(l))).collect(), tau, true)
        }
        _ => bail!("{}: not a surprisal rule", rule.name()),
    };
    let mut options = Vec::with_capacity(l_n);
    for &(_, _, store) in &plan {
        if store.is_timed() || store == StoreOption::Drop {
            bail!("{}: a rule scored by its own cache stores kept tokens at a plain option", rule.name());
        }
        options.push(cfg.option_index(store).map_err(anyhow::Error::msg)?);
    }
    let mut cache = KvCache::new(cfg, b_n, dev);
    let mut evicted_at = vec![NEVER; b_n * t_n * l_n];
    // Per (stream, layer): the positions the cache holds, in order.
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); b_n * l_n];
    let mut predicted = vec![false; b_n * t_n];
    // Per stream: the previous prediction, as the `surprisal` observation keeps it.
    let mut history = vec![SequenceHistory::default(); b_n];
    let host = model.host_model(dev)?;
    let push_options: Vec<usize> = (0..b_n).flat_map(|_| options.iter().copied()).collect();
    for q in 0..t_n {
        let column: Vec<u32> = (0..b_n).map(|b| batch.inputs[b * t_n + q]).collect();
        let out = model.step_ids(host.as_ref(), &column, &cache, false, dev)?;
        let logits = out.logits.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
        let summary = ahr_tpa::host::predictive(&logits, v);
        for (b, h) in history.iter_mut().enumerate() {
            let s = h.surprisal(column[b]);
            predicted[b * t_n + q] = if predictable { s <= tau } else { s >= tau };
            h.push_prediction(&logits[b * v..(b + 1) * v], summary[b].lse);
        }
        cache.push(out.pending, &push_options)?;
        for b in 0..b_n {
            for (l, &(window, content, _)) in plan.iter().enumerate() {
                let positions = &mut held[b * l_n + l];
                positions.push(q);
                // The token whose window closes now: seen by queries k + 1 … k + window, not q + 1.
                let Some(k) = q.checked_sub(window) else { continue };
                if content && predicted[b * t_n + k] {
                    continue;
                }
                let index =
                    positions.iter().position(|&p| p == k).expect("a token not kept is held until its window ends");
                cache.evict(b, l, options[l], index)?;
                evicted_at[(b * t_n + k) * l_n + l] = (q + 1) as u32;
                positions.remove(index);
            }
        }
    }
    Ok(evicted_at)
}
