//! H2O and TOVA as their papers run them: token by token through the model with their own cache,
//! each key scored by the attention the queries actually gave it there — evicted keys gone, kept
//! keys at the rule's storage option, every later hidden state computed from that cache. The
//! weights are read off each decode step ([`KeyScorer`]); evictions leave the cache at once
//! ([`KvCache::evict`]). The result is the same eviction pattern the rule run query by query
//! over parallel forwards gives (`harness::tests`), at the cost of one decode per sequence.
//! The surprisal rule runs the same way: each token's surprisal is what the model predicted for
//! it with the rule's own cache ([`surprisal_evictions`]).

use ahr_policy::ObsBatch;
use ahr_policy::evict::output_moved;
use ahr_policy::obs::SequenceHistory;
use ahr_tasks::Batch;
use ahr_tpa::review::KeyScorer;
use ahr_tpa::{KvCache, Model, StoreOption};
use anyhow::{Result, bail};
use burn::tensor::Device;

use crate::baseline::Baseline;
use crate::rules::{self, Held, NEVER};

/// The menu index of `store`, which a rule run with its own cache keeps tokens at: a plain option
/// (it evicts from plain slots).
fn plain_option(cfg: &ahr_tpa::ModelConfig, rule: &Baseline, store: StoreOption) -> Result<usize> {
    if store.is_timed() || store == StoreOption::Drop {
        bail!("{}: a rule scored by its own cache stores kept tokens at a plain option", rule.name());
    }
    cfg.option_index(store).map_err(anyhow::Error::msg)
}

/// Evict the token at position `k` of stream `b`, layer `l` (kept at `option`) from the next query
/// on, if `held` (the positions the cache holds there, in order) still has it; returns whether it
/// did.
fn let_go(cache: &mut KvCache, held: &mut Vec<usize>, (b, l, option): (usize, usize, usize), k: usize) -> Result<bool> {
    let Some(index) = held.iter().position(|&p| p == k) else { return Ok(false) };
    cache.evict(b, l, option, index)?;
    held.remove(index);
    Ok(true)
}

/// Per (sequence, token, layer) of `batch` (row-major `[B, T, L]`), the first query that no longer
/// sees the key when `rule` (H2O or TOVA, any scoring) runs with its own cache at a plain option.
pub fn evictions(model: &Model, batch: &Batch, rule: &Baseline, dev: &Device) -> Result<Vec<u32>> {
    forced_evictions(model, batch, rule, &[], dev)
}

/// What H2O or TOVA sees at one step of one stream and layer, before it decides: the keys held
/// once query q's token has joined (oldest first, q last), the weight query q gives each and the
/// keys themselves as the cache stores them.
pub struct RuleStep<'a> {
    /// Stream (row of the batch).
    pub stream: usize,
    /// Layer.
    pub layer: usize,
    /// Query position.
    pub query: usize,
    /// Held keys' positions, q last.
    pub held: &'a [usize],
    /// The weight query q gives the key at a position (0 once evicted).
    pub weight: &'a dyn Fn(usize) -> f32,
    /// The stored key `[h · d_h]` of every position (empty once evicted or not yet written).
    pub keys: &'a [Vec<f32>],
    /// The stored value `[h · d_h]` of every position, as `keys`.
    pub values: &'a [Vec<f32>],
    /// The weight each query head gives the key at a position (`[h]`; zeros once evicted).
    pub head_weights: &'a dyn Fn(usize) -> Vec<f32>,
}

/// An evicter watching a rule's cache ([`watched_evictions`]): a key it returns leaves instead of
/// the rule's choice.
pub type Watch<'a> = dyn FnMut(RuleStep) -> Option<usize> + 'a;

/// [`forced_evictions`] that shows `watch` every step before the rule decides ([`RuleStep`]);
/// where the step evicts, a key `watch` returns (one of those held) leaves instead of the rule's
/// choice — any evicter that scores the held keys from what the rule's cache shows runs this way
/// at the rule's memory.
pub fn watched_evictions(
    model: &Model,
    batch: &Batch,
    rule: &Baseline,
    forced: &[Option<(usize, usize, usize)>],
    watch: &mut Watch,
    dev: &Device,
) -> Result<Vec<u32>> {
    Ok(run_cache_scored(model, batch, rule, forced, Some(watch), None, dev)?.0)
}

/// What a two-tier run decided, per (sequence, token, layer) of the batch (`[B, T, L]`, `NEVER`
/// = never): the first query that sees the key in the second tier's form, and the first that
/// no longer sees it.
pub struct Tiers {
    /// Demotion queries.
    pub demoted_at: Vec<u32>,
    /// Eviction queries.
    pub evicted_at: Vec<u32>,
}

/// H2O or TOVA (any scoring) as the first tier of a two-tier cache, run with that cache
/// ([`KvCache::demote`]): each key the rule lets go drops to `to`, a lower rank of the rule's
/// factor store (its leading components, nothing kept beside it), and leaves for good once
/// `tier2` keys it let go after it have joined that tier (first in, first out). The rule scores
/// the keys of its own tier, with the attention the whole two-tier cache gives them.
pub fn tiered_evictions(
    model: &Model,
    batch: &Batch,
    rule: &Baseline,
    tier2: usize,
    to: StoreOption,
    dev: &Device,
) -> Result<Tiers> {
    let to = plain_option(model.config(), rule, to)?;
    let (evicted_at, demoted_at) = run_cache_scored(model, batch, rule, &[], None, Some((tier2, to)), dev)?;
    Ok(Tiers { demoted_at: demoted_at.expect("a two-tier run records its demotions"), evicted_at })
}

/// One decision overruled: [`evictions`] of H2O or TOVA where, per row of `batch` with an entry
/// `Some((q, l, k))` in `forced`, the rule's eviction after query q in layer l takes key k
/// instead ([`Held::step_forcing`]; k held there), the rule deciding as before everywhere else.
/// Rows past `forced`'s end are not overruled.
pub fn forced_evictions(
    model: &Model,
    batch: &Batch,
    rule: &Baseline,
    forced: &[Option<(usize, usize, usize)>],
    dev: &Device,
) -> Result<Vec<u32>> {
    Ok(run_cache_scored(model, batch, rule, forced, None, None, dev)?.0)
}

/// The rule's run with its own cache: evictions, and with a second tier `(size, option)` the
/// demotions into it.
fn run_cache_scored(
    model: &Model,
    batch: &Batch,
    rule: &Baseline,
    forced: &[Option<(usize, usize, usize)>],
    mut watch: Option<&mut Watch>,
    tier2: Option<(usize, usize)>,
    dev: &Device,
) -> Result<(Vec<u32>, Option<Vec<u32>>)> {
    let scored = matches!(rule, Baseline::H2o { .. } | Baseline::Tova { .. });
    if (!forced.is_empty() || watch.is_some() || tier2.is_some()) && !scored {
        bail!("{}: only H2O's and TOVA's decisions can be overruled, watched or tiered", rule.name());
    }
    if let Baseline::Surprisal { .. } | Baseline::LayerSurprisal { .. } = rule {
        return Ok((surprisal_evictions(model, batch, rule, dev)?, None));
    }
    if let Baseline::Spike { .. } = rule {
        return Ok((spike_evictions(model, batch, rule, dev)?, None));
    }
    let cfg = model.config();
    let (b_n, t_n, l_n) = (batch.batch_size, batch.seq_len, cfg.n_layers);
    let option = plain_option(cfg, rule, rule.store())?;
    // Per stream (a `tova-class` rule's bonus reads its bytes) and layer (a `tova-layers` rule's
    // budget is the layer's).
    let fresh = |b: usize, l: usize| match *rule {
        Baseline::H2o { heavy, recent, .. } => Ok(Held::heavy_hitters(heavy, recent)),
        Baseline::Tova { decay, floor, keep, pooled, .. } => {
            // Pooled, a layer holds what the stream's pool lets it ([`rules::pooled_victims`]).
            let budget = if pooled.is_some() { usize::MAX } else { rule.budget_at(l, l_n).expect("a TOVA rule") };
            let held = Held::tova(budget, decay, floor);
            Ok(match keep {
                Some(k) => held.with_bonus(k.per_position(&batch.inputs[b * t_n..(b + 1) * t_n])),
                None => held,
            })
        }
        _ => Err(anyhow::anyhow!("{}: only H2O and TOVA are scored by their own cache", rule.name())),
    };
    let mut held = (0..b_n * l_n).map(|i| fresh(i / l_n, i % l_n)).collect::<Result<Vec<Held>>>()?;
    // Per (stream, layer): the stored key of every token, by position (empty once evicted).
    let mut keys = vec![vec![Vec::new(); t_n]; b_n * l_n];
    // The values as well, for a watch or a rule scored by the output it moves (empty otherwise).
    let output = matches!(rule, Baseline::Tova { output: true, .. });
    let with_values = watch.is_some() || output;
    let mut values = vec![vec![Vec::new(); if with_values { t_n } else { 0 }]; b_n * l_n];
    let mut moved = vec![0f32; t_n];
    let scorer = KeyScorer::new(cfg);
    let mut cache = KvCache::new(cfg, b_n, dev);
    let mut evicted_at = vec![NEVER; b_n * t_n * l_n];
    let mut second = tier2.map(|(size, to)| SecondTier {
        size,
        to,
        demoted_at: vec![NEVER; b_n * t_n * l_n],
        held: vec![std::collections::VecDeque::new(); b_n * l_n],
    });
    let options = vec![option; b_n];
    let host = model.host_model(dev)?;
    // Per (stream, layer): the keys the step lets go, decided for every layer before any leaves.
    let mut pending: Vec<Vec<usize>> = vec![Vec::new(); b_n * l_n];
    for q in 0..t_n {
        let column: Vec<u32> = (0..b_n).map(|b| batch.inputs[b * t_n + q]).collect();
        let out = model.step_ids(host.as_ref(), &column, &cache, true, dev)?;
        let weights = scorer.step(&out, |_| true)?;
        for l in 0..l_n {
            for (b, key) in scorer.stored_keys(&out.pending, l, &options)?.into_iter().enumerate() {
                keys[b * l_n + l][q] = key;
            }
            if with_values {
                for (b, value) in scorer.stored_values(&out.pending, l, &options)?.into_iter().enumerate() {
                    values[b * l_n + l][q] = value;
                }
            }
        }
        cache.push(out.pending, &vec![option; b_n * l_n])?;
        for (b, l) in (0..b_n).flat_map(|b| (0..l_n).map(move |l| (b, l))) {
            let i = b * l_n + l;
            let stream_keys = &keys[i];
            let head_weights = |k: usize| weights.head_weights(b, l, &stream_keys[k]);
            if output {
                let positions: Vec<usize> = held[i].keys().iter().copied().chain([q]).collect();
                let per_head: Vec<Vec<f32>> = positions.iter().map(|&k| head_weights(k)).collect();
                let vals: Vec<&[f32]> = positions.iter().map(|&k| values[i][k].as_slice()).collect();
                for (&k, m) in positions.iter().zip(output_moved(&per_head, &vals, cfg.head_dim)) {
                    moved[k] = m;
                }
            }
            let weight = |k: usize| if output { moved[k] } else { weights.weight(b, l, &stream_keys[k]) };
            let mut force = forced.get(b).copied().flatten().filter(|&(fq, fl, _)| (fq, fl) == (q, l)).map(|f| f.2);
            if let Some(watch) = watch.as_mut() {
                let positions: Vec<usize> = held[i].keys().iter().copied().chain([q]).collect();
                let step = RuleStep {
                    stream: b,
                    layer: l,
                    query: q,
                    held: &positions,
                    weight: &weight,
                    keys: stream_keys,
                    values: &values[i],
                    head_weights: &head_weights,
                };
                if let Some(k) = watch(step) {
                    if !positions.contains(&k) {
                        bail!("stream {b} layer {l} query {q}: an evicter chose key {k}, which is not held");
                    }
                    force = Some(k);
                }
            }
            pending[i] = held[i].step_forcing(q, weight, force);
        }
        // A pooled rule: each stream's layers share `L · budget` keys, the lowest-scored across
        // them leaving (no layer left empty).
        if let Baseline::Tova { budget, pooled: Some(lean), .. } = *rule {
            for b in 0..b_n {
                let layers = &mut held[b * l_n..(b + 1) * l_n];
                for (l, victims) in rules::pooled_victims(layers, l_n * budget, lean).into_iter().enumerate() {
                    pending[b * l_n + l] = victims;
                }
            }
        }
        for (b, l) in (0..b_n).flat_map(|b| (0..l_n).map(move |l| (b, l))) {
            let i = b * l_n + l;
            let mut victims = std::mem::take(&mut pending[i]);
            // The cache holds the kept and the evicted keys in position order: evicting the newest
            // first leaves the older ones' indices as they are.
            victims.sort_unstable_by(|a, b| b.cmp(a));
            for &k in &victims {
                let index = held[i].keys().iter().chain(&victims).filter(|&&p| p < k).count();
                let cell = (b * t_n + k) * l_n + l;
                match second.as_mut() {
                    Some(tier) => {
                        cache.demote(b, l, option, index, tier.to)?;
                        tier.demoted_at[cell] = (q + 1) as u32;
                        tier.held[i].push_back(k);
                    }
                    None => {
                        cache.evict(b, l, option, index)?;
                        evicted_at[cell] = (q + 1) as u32;
                    }
                }
                keys[i][k] = Vec::new();
                if let Some(v) = values[i].get_mut(k) {
                    *v = Vec::new();
                }
            }
            if let Some(tier) = second.as_mut() {
                while tier.held[i].len() > tier.size {
                    let k = tier.held[i].pop_front().expect("a key in the second tier");
                    cache.evict(b, l, tier.to, 0)?;
                    evicted_at[(b * t_n + k) * l_n + l] = (q + 1) as u32;
                }
            }
        }
    }
    Ok((evicted_at, second.map(|tier| tier.demoted_at)))
}

/// The second tier of a two-tier run ([`tiered_evictions`]).
struct SecondTier {
    /// Keys it holds at most.
    size: usize,
    /// The menu index its keys are kept at.
    to: usize,
    /// Per (sequence, token, layer): the query the key joined it (`NEVER`: never).
    demoted_at: Vec<u32>,
    /// Per (stream, layer): the keys it holds, in the order they joined.
    held: Vec<std::collections::VecDeque<usize>>,
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
    let options = plan.iter().map(|&(_, _, store)| plain_option(cfg, rule, store)).collect::<Result<Vec<_>>>()?;
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
                assert!(
                    let_go(&mut cache, positions, (b, l, options[l]), k)?,
                    "a token not kept is held until its window ends"
                );
                evicted_at[(b * t_n + k) * l_n + l] = (q + 1) as u32;
            }
        }
    }
    Ok(evicted_at)
}

/// Per (sequence, token, layer) of `batch` (`[B, T, L]`), the first query that no longer sees the
/// key when the spike rule runs with its own cache. Layers before the last keep their window. In
/// the last layer, after each decode step the kept token that topped the query's attention row
/// (mean over heads, [`KeyScorer`]) is noted; one step later — the token that query predicted
/// has arrived — it is dropped from the next query on if the spike weighed at least `weight` and
/// that token's surprisal (`−ln p / ln V`, from the previous step's logits as the `surprisal`
/// observation has it) is above `tau`. The same moments and the same order as a spike-review
/// policy's ([`ahr_tpa::ReviewBook`] with [`ahr_tpa::ReviewAt::SPIKE`]).
pub fn spike_evictions(model: &Model, batch: &Batch, rule: &Baseline, dev: &Device) -> Result<Vec<u32>> {
    let cfg = model.config();
    let (b_n, t_n, l_n, v) = (batch.batch_size, batch.seq_len, cfg.n_layers, cfg.vocab_size);
    let Baseline::Spike { per_layer, weight, tau, superseded } = *rule else {
        bail!("{}: not the spike rule", rule.name())
    };
    // `superseded-spike`: per stream and step q, the tokens the context shows superseded there
    // (gone from query q + 1 on; known from tokens up to q). Empty for the plain spike rule.
    let mut superseded_at = vec![vec![Vec::new(); t_n]; b_n];
    if superseded {
        for (b, due) in superseded_at.iter_mut().enumerate() {
            for (k, &at) in rules::superseded_evictions(&batch.inputs[b * t_n..(b + 1) * t_n]).iter().enumerate() {
                if at != NEVER {
                    due[at as usize - 1].push(k);
                }
            }
        }
    }
    let last = l_n - 1;
    let options = (0..l_n).map(|l| plain_option(cfg, rule, per_layer.store(l))).collect::<Result<Vec<_>>>()?;
    let scorer = KeyScorer::new(cfg);
    let mut cache = KvCache::new(cfg, b_n, dev);
    let mut evicted_at = vec![NEVER; b_n * t_n * l_n];
    // Per (stream, layer): the positions the cache holds, in order; the last layer's stored keys.
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); b_n * l_n];
    let mut keys = vec![vec![Vec::new(); t_n]; b_n];
    // Per stream: the last layer's top of the previous row (position, weight).
    let mut under: Vec<Option<(usize, f32)>> = vec![None; b_n];
    let mut history = vec![SequenceHistory::default(); b_n];
    let host = model.host_model(dev)?;
    let push_options: Vec<usize> = (0..b_n).flat_map(|_| options.iter().copied()).collect();
    for q in 0..t_n {
        let column: Vec<u32> = (0..b_n).map(|b| batch.inputs[b * t_n + q]).collect();
        let out = model.step_ids(host.as_ref(), &column, &cache, true, dev)?;
        let weights = scorer.step(&out, |l| l == last)?;
        let logits =
            out.logits.clone().into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
        let summary = ahr_tpa::host::predictive(&logits, v);
        let mut surprisal = vec![0f32; b_n];
        for (b, h) in history.iter_mut().enumerate() {
            surprisal[b] = h.surprisal(column[b]);
            h.push_prediction(&logits[b * v..(b + 1) * v], summary[b].lse);
        }
        // This row's top among the last layer's kept tokens (before this step's review).
        let tops: Vec<Option<(usize, f32)>> = (0..b_n)
            .map(|b| {
                held[b * l_n + last].iter().map(|&k| (k, weights.weight(b, last, &keys[b][k]))).fold(
                    None,
                    |best, (k, w)| {
                        if best.is_none_or(|(_, bw)| w > bw) { Some((k, w)) } else { best }
                    },
                )
            })
            .collect();
        for (b, key) in scorer.stored_keys(&out.pending, last, &vec![options[last]; b_n])?.into_iter().enumerate() {
            keys[b][q] = key;
        }
        cache.push(out.pending, &push_options)?;
        for b in 0..b_n {
            for (l, positions) in held[b * l_n..(b + 1) * l_n].iter_mut().enumerate() {
                positions.push(q);
                if l == last {
                    continue;
                }
                // The token whose window closes now: seen by queries k + 1 … k + window, not q + 1.
                let Some(k) = q.checked_sub(per_layer.window(l)) else { continue };
                assert!(let_go(&mut cache, positions, (b, l, options[l]), k)?, "a token is held until its window ends");
                evicted_at[(b * t_n + k) * l_n + l] = (q + 1) as u32;
            }
            // Tokens the return of their key (and the token after it) shows superseded now.
            let positions = &mut held[b * l_n + last];
            for &k in &superseded_at[b][q] {
                // (unless a spike review let it go already)
                if let_go(&mut cache, positions, (b, last, options[last]), k)? {
                    evicted_at[(b * t_n + k) * l_n + last] = (q + 1) as u32;
                    keys[b][k] = Vec::new();
                }
            }
            // The review of the previous row's top, if it is still held.
            if let Some((k, w)) = std::mem::replace(&mut under[b], tops[b])
                && w >= weight
                && surprisal[b] > tau
                && let_go(&mut cache, positions, (b, last, options[last]), k)?
            {
                evicted_at[(b * t_n + k) * l_n + last] = (q + 1) as u32;
                keys[b][k] = Vec::new();
            }
        }
    }
    Ok(evicted_at)
}

/// The spike rule as a spike-review policy plays it in the rank environment (`review =
/// "spike"`): every layer writes `writes[l]` (a menu index; `recent:W` before the last layer
/// for the rule's window at the exact store), and the last layer's review drops its token when
/// the spike weighed at least `weight` and the current token's `surprisal` is above `tau`,
/// keeping it otherwise. `features` names the observation's columns (the env's
/// [`ahr_policy::ObsSpec`]); `obs` holds one row per stream and L write then L review masks.
pub fn spike_actions(
    obs: &ObsBatch,
    features: &[String],
    writes: &[usize],
    drop: usize,
    weight: f32,
    tau: f32,
) -> Result<Vec<usize>> {
    let l_n = writes.len();
    let column = |name: String| {
        features.iter().position(|f| *f == name).ok_or_else(|| anyhow::anyhow!("no `{name}` in the observations"))
    };
    let last = l_n - 1;
    let (surprisal, present, spike) = (
        column("surprisal".into())?,
        column(format!("layer{last}.review_present"))?,
        column(format!("layer{last}.spike_weight"))?,
    );
    let dim = features.len();
    let m = obs.masks.len() / (obs.len * 2 * l_n).max(1);
    let mut out = Vec::with_capacity(obs.len * 2 * l_n);
    for r in 0..obs.len {
        let row = &obs.features[r * dim..(r + 1) * dim];
        out.extend_from_slice(writes);
        for l in 0..l_n {
            let mask = &obs.masks[((r * 2 * l_n) + l_n + l) * m..((r * 2 * l_n) + l_n + l + 1) * m];
            let keep = (0..m).find(|&o| mask[o] && o != drop).unwrap_or(drop);
            let spiked = row[present] == 1.0 && row[spike] >= weight && row[surprisal] > tau;
            out.push(if l == last && spiked && mask[drop] { drop } else { keep });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ahr_env::EnvSpec;
    use ahr_tpa::{ModelConfig, ReviewAt};

    use super::*;
    use crate::baseline::PerLayer;

    /// The tiny model (V = 64, weights drawn with `seed`) in `envs/<file>` as `edit` leaves it,
    /// and the env's task.
    fn tiny_setup(file: &str, seed: u64, edit: impl FnOnce(&mut EnvSpec)) -> (Device, EnvSpec, Model, ahr_tasks::Task) {
        let dev = ahr_tpa::device::from_env();
        let env_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envs").join(file);
        let mut spec = EnvSpec::load(&env_path).unwrap();
        edit(&mut spec);
        let cfg = ModelConfig { vocab_size: 64, ..ModelConfig::tiny() };
        dev.seed(seed);
        let model = spec.model(Model::new(&cfg, &dev)).unwrap();
        let task = ahr_env::load_task(&spec, &env_path, model.config()).unwrap();
        (dev, spec, model, task)
    }

    /// The judge's spike rule (its own cache, token by token) evicts exactly the last-layer
    /// tokens, at exactly the queries, that a spike-review policy playing the same rule in the
    /// rank environment drops; both drop some and keep some.
    #[test]
    fn the_judged_spike_rule_is_what_spike_reviews_do_in_the_environment() {
        let (dev, spec, model, task) = tiny_setup("mqar-tiny.toml", 13, |spec| {
            spec.env.review = Some(ReviewAt::SPIKE);
            spec.env.recent = vec![2];
            spec.env.streams = 4;
        });
        let cfg = model.config().clone();
        let (l_n, t_n) = (cfg.n_layers, task.valid_batch(0, 1).seq_len);
        let (weight, tau) = (0.2, 0.5);
        let index = |o: StoreOption| cfg.option_index(o).unwrap();
        let writes = [index(StoreOption::Recent(2)), index(StoreOption::Rank(2))];
        let drop = index(StoreOption::Drop);
        let mut env = ahr_env::make_env(&model, &task, &spec, true, 1, &dev);
        let names = env.obs_spec().features;
        let stats = ahr_env::run_episodes(env.as_mut(), 4, 0, |obs| {
            spike_actions(obs, &names, &writes, drop, weight, tau).unwrap()
        })
        .unwrap();
        let per_layer = PerLayer::split(l_n, (2, cfg.exact_option()), (usize::MAX, StoreOption::Rank(2)));
        let rule = Baseline::Spike { per_layer, weight, tau, superseded: false };
        let judged = spike_evictions(&model, &task.valid_batch(0, 4), &rule, &dev).unwrap();
        let mut dropped = 0;
        for (b, e) in stats.iter().enumerate() {
            let mut from_env = vec![NEVER; t_n];
            for &(l, k, at) in &e.evictions {
                assert_eq!(l, l_n - 1, "only the last layer's reviews drop");
                from_env[k] = at as u32;
            }
            let from_judge: Vec<u32> = (0..t_n).map(|k| judged[(b * t_n + k) * l_n + l_n - 1]).collect();
            assert_eq!(from_env, from_judge, "sequence {b}");
            // Layer 0 keeps its window of 2 queries.
            assert!((0..t_n - 3).all(|k| judged[(b * t_n + k) * l_n] == (k + 3) as u32));
            dropped += e.evictions.len();
        }
        assert!(dropped > 10 && dropped < 4 * t_n / 2, "{dropped} drops");
    }

    /// An untrained learned evicter for `env` (output layer at zero, κ = 2): its actor, the identity
    /// normalisation and its dimensions.
    fn untrained_evicter(
        env: &dyn ahr_env::VecEnv,
        dev: &Device,
    ) -> (ahr_policy::ActorCritic, ahr_policy::RunningNorm, ahr_policy::net::PolicyDims) {
        let obs = env.obs_spec();
        let dims = ahr_policy::net::PolicyDims {
            obs_dim: obs.dim(),
            vocab_size: 0,
            heads: env.heads(),
            options: env.options(),
            candidate_features: obs.candidate_features,
        };
        let config = ahr_policy::PolicyConfig { hidden: 8, prior_logit: 2.0, ..Default::default() };
        (ahr_policy::ActorCritic::new(&config, dims, dev), ahr_policy::RunningNorm::new(dims.obs_dim), dims)
    }

    /// Per (sequence, token, layer) of episodes of `t_n` tokens and `l_n` layers, the query of each
    /// move `moves(episode)` lists as `(layer, position, at)` (`NEVER` where none).
    fn moves_at(
        stats: &[ahr_env::EpisodeStats],
        moves: impl Fn(&ahr_env::EpisodeStats) -> &[(usize, usize, usize)],
        t_n: usize,
        l_n: usize,
    ) -> Vec<u32> {
        let mut at_query = vec![NEVER; stats.len() * t_n * l_n];
        for (b, e) in stats.iter().enumerate() {
            for &(l, k, at) in moves(e) {
                at_query[(b * t_n + k) * l_n + l] = at as u32;
            }
        }
        at_query
    }

    /// Every episode of `stats` held `bytes` per token (time-averaged, of `cfg`'s exact cache) and
    /// summed the loss the parallel forward gives `batch` under `choices`.
    fn assert_decode_is_parallel(
        model: &Model,
        batch: &Batch,
        choices: &ahr_tpa::Choices,
        stats: &[ahr_env::EpisodeStats],
        bytes: f64,
        dev: &Device,
    ) {
        let exact_bytes = ahr_tpa::cost::exact_bytes_per_token(model.config()) as f64;
        for e in stats {
            assert!((e.mem_frac * exact_bytes - bytes).abs() < 1e-9 * bytes, "{} vs {bytes}", e.mem_frac);
        }
        let t_n = batch.seq_len;
        let (nll, _) = ahr_env::rank::parallel_nll(model, batch, choices, dev).unwrap();
        for (b, e) in stats.iter().enumerate() {
            let labelled = (0..t_n).filter(|&t| batch.labels[b * t_n + t] != ahr_tasks::IGNORE);
            let loss: f64 = labelled.map(|t| nll[b * t_n + t] as f64).sum();
            assert!((loss - e.loss_sum).abs() < 1e-3 * loss.max(1.0), "sequence {b}: {loss} vs {}", e.loss_sum);
        }
    }

    /// Learned eviction ([`ahr_policy::evict`]) starts at `tova-ema`: the untrained actor (its
    /// scoring network at zero, the smoothed score weighted by κ) run deterministically in the
    /// rank environment evicts exactly the tokens, at exactly the queries, that `tova-ema` at
    /// [`ahr_policy::evict::SMOOTH_DECAY`] with its own cache does at the same budget and store
    /// (and TOVA does not), its memory is the judge's for that rule and its loss the parallel
    /// forward's under those evictions; a stochastic run evicts others.
    #[test]
    fn an_untrained_learned_evicter_is_tova_ema() {
        use ahr_policy::evict::{ByteClass, ClassBonus, EvictScore, Eviction, SMOOTH_DECAY};
        use ahr_tpa::Choices;

        let budget = 6;
        let (dev, spec, model, task) = tiny_setup("mqar-tiny.toml", 15, |spec| {
            spec.env.evict = Some(Eviction {
                budget,
                store: StoreOption::Full,
                decay: SMOOTH_DECAY,
                score: EvictScore::Weight,
                tier2: None,
                keep: None,
                tilt: 0,
            });
            spec.env.streams = 4;
        });
        spec.validate().unwrap();
        let cfg = model.config().clone();
        let batch = task.valid_batch(0, 4);
        let (l_n, t_n) = (cfg.n_layers, batch.seq_len);
        let mut env = ahr_env::make_env(&model, &task, &spec, true, 1, &dev);
        let (net, norm, dims) = untrained_evicter(env.as_ref(), &dev);
        assert_eq!((dims.heads, dims.options), (l_n, budget + 1));
        let stats = ahr_env::run_episodes(env.as_mut(), 4, 0, |o| net.act_deterministic(o, &norm, &dev)).unwrap();
        let decay = SMOOTH_DECAY;
        let tova = Baseline::tova_ema(budget, StoreOption::Full, 0.0);
        let plain = evictions(&model, &batch, &tova, &dev).unwrap();
        let tova = Baseline::tova_ema(budget, StoreOption::Full, decay);
        let judged = evictions(&model, &batch, &tova, &dev).unwrap();
        assert_ne!(plain, judged, "smoothing should change some eviction on this model");
        for e in &stats {
            assert_eq!(e.evictions.len(), l_n * (t_n - budget), "one eviction per layer and query past the budget");
        }
        assert_eq!(moves_at(&stats, |e| &e.evictions, t_n, l_n), judged);
        // Its memory is the judge's for TOVA at the budget (the cost model of those evictions), its
        // loss the parallel forward's under those evictions (decode = parallel forward).
        let exact = cfg.option_index(cfg.exact_option()).unwrap();
        let choices = Choices::from_fn(4, t_n, l_n, |_, _, _| exact).with_evictions(judged.clone());
        assert_decode_is_parallel(&model, &batch, &choices, &stats, tova.memory(&cfg, t_n).unwrap(), &dev);
        // With another decay in the env the same actor is `tova-ema` at that decay.
        let mut half = spec.clone();
        half.env.evict = Some(Eviction {
            budget,
            store: StoreOption::Full,
            decay: 0.5,
            score: EvictScore::Weight,
            tier2: None,
            keep: None,
            tilt: 0,
        });
        let mut env = ahr_env::make_env(&model, &task, &half, true, 1, &dev);
        let stats = ahr_env::run_episodes(env.as_mut(), 4, 0, |o| net.act_deterministic(o, &norm, &dev)).unwrap();
        let rule = Baseline::tova_ema(budget, StoreOption::Full, 0.5);
        let judged_half = evictions(&model, &batch, &rule, &dev).unwrap();
        assert_ne!(judged_half, judged, "decay 0.5 should change some eviction on this model");
        assert_eq!(moves_at(&stats, |e| &e.evictions, t_n, l_n), judged_half);
        // With a byte class kept longer (`keep`) the same actor is `tova-class`: punctuation and
        // whitespace (token ids 9–13 and 32–47, 58–63 of this vocabulary) kept as if they drew e²
        // times their weight.
        let keep = ClassBonus { class: ByteClass::NotAlnum, nats: 2.0 };
        let mut kept = half.clone();
        kept.env.evict = half.env.evict.map(|e| Eviction { keep: Some(keep), ..e });
        let mut env = ahr_env::make_env(&model, &task, &kept, true, 1, &dev);
        let stats_kept = ahr_env::run_episodes(env.as_mut(), 4, 0, |o| net.act_deterministic(o, &norm, &dev)).unwrap();
        let judged_kept = evictions(&model, &batch, &rule.keeping(keep), &dev).unwrap();
        assert_ne!(judged_kept, judged_half, "the bonus should change some eviction on this model");
        assert_eq!(moves_at(&stats_kept, |e| &e.evictions, t_n, l_n), judged_kept);
        // With the budget tilted across layers (`tilt`) the same actor is `tova-layers`: layer 0
        // keeps 8 tokens and layer 1 keeps 4, each layer evicting once per query past its budget,
        // at the rule's memory.
        let mut tilted = half.clone();
        tilted.env.evict = half.env.evict.map(|e| Eviction { tilt: 2, ..e });
        tilted.validate().unwrap();
        let mut env = ahr_env::make_env(&model, &task, &tilted, true, 1, &dev);
        let (tilted_net, tilted_norm, tilted_dims) = untrained_evicter(env.as_ref(), &dev);
        assert_eq!(tilted_dims.options, budget + 3, "slots for the fullest layer");
        let stats_tilted =
            ahr_env::run_episodes(env.as_mut(), 4, 0, |o| tilted_net.act_deterministic(o, &tilted_norm, &dev)).unwrap();
        let tilted_rule = rule.tilted(2);
        let judged_tilted = evictions(&model, &batch, &tilted_rule, &dev).unwrap();
        assert_ne!(judged_tilted, judged_half, "the tilt should change some eviction on this model");
        for e in &stats_tilted {
            assert_eq!(e.evictions.len(), (t_n - (budget + 2)) + (t_n - (budget - 2)), "each layer past its budget");
        }
        assert_eq!(moves_at(&stats_tilted, |e| &e.evictions, t_n, l_n), judged_tilted);
        let choices = Choices::from_fn(4, t_n, l_n, |_, _, _| exact).with_evictions(judged_tilted);
        let memory = tilted_rule.memory(&cfg, t_n).unwrap();
        assert!(memory < rule.memory(&cfg, t_n).unwrap(), "a fuller layer fills later: fewer bytes on average");
        assert_decode_is_parallel(&model, &batch, &choices, &stats_tilted, memory, &dev);
        // With `score = "output"` the same actor is `tova-out` (the environment's book scores the
        // candidates by the output they move, as the judge's rule does in its own cache).
        let mut out = half.clone();
        out.env.evict = Some(Eviction {
            budget,
            store: StoreOption::Full,
            decay: 0.5,
            score: EvictScore::Output,
            tier2: None,
            keep: None,
            tilt: 0,
        });
        let mut env = ahr_env::make_env(&model, &task, &out, true, 1, &dev);
        let stats_out = ahr_env::run_episodes(env.as_mut(), 4, 0, |o| net.act_deterministic(o, &norm, &dev)).unwrap();
        let tova_out = Baseline::tova_out(budget, StoreOption::Full, 0.5);
        let judged_out = evictions(&model, &batch, &tova_out, &dev).unwrap();
        assert_ne!(judged_out, judged_half, "the output should change some eviction on this model");
        assert_eq!(moves_at(&stats_out, |e| &e.evictions, t_n, l_n), judged_out);
        // Sampling from the same actor evicts other tokens somewhere.
        let mut env = ahr_env::make_env(&model, &task, &spec, true, 1, &dev);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        let sampled = ahr_env::run_episodes(env.as_mut(), 4, 0, |o| {
            let t = net.obs_tensors(o, &norm, &dev);
            let dist = ahr_policy::MaskedMultiCategorical::new(net.logits(&t), t.masks.clone());
            ahr_policy::dist::sample_host(&dist.probs_host(), dims.options, &mut rng)
        })
        .unwrap();
        assert_ne!(
            sampled.iter().map(|e| e.evictions.clone()).collect::<Vec<_>>(),
            stats.iter().map(|e| e.evictions.clone()).collect::<Vec<_>>()
        );
    }

    /// With a second tier (`tier2 = { size, store }`) the untrained learned evicter deterministically
    /// demotes and evicts exactly what the judge's `tova-tiers` does with its own cache, at the same
    /// queries; its memory is the rule's and its loss the parallel forward's under those demotions
    /// and evictions. A dense store cannot have a second tier.
    #[test]
    fn an_untrained_learned_evicter_with_a_second_tier_is_tova_tiers() {
        use ahr_policy::evict::{EvictScore, Eviction, SecondTier};
        use ahr_tpa::Choices;

        let (budget, size, decay) = (5, 3, 0.5);
        let eviction = Eviction {
            budget,
            store: StoreOption::Rank(2),
            decay,
            score: EvictScore::Output,
            tier2: Some(SecondTier { size, store: StoreOption::Rank(1) }),
            keep: None,
            tilt: 0,
        };
        let (dev, spec, model, task) = tiny_setup("mqar-tiny.toml", 16, |spec| {
            spec.env.evict = Some(eviction);
            spec.env.streams = 2;
        });
        spec.validate().unwrap();
        let cfg = model.config().clone();
        let batch = task.valid_batch(0, 2);
        let (l_n, t_n) = (cfg.n_layers, batch.seq_len);
        let mut env = ahr_env::make_env(&model, &task, &spec, true, 1, &dev);
        let (net, norm, _) = untrained_evicter(env.as_ref(), &dev);
        let stats = ahr_env::run_episodes(env.as_mut(), 2, 0, |o| net.act_deterministic(o, &norm, &dev)).unwrap();
        let rule = Baseline::tova_tiers(budget, StoreOption::Rank(2), decay, size, StoreOption::Rank(1));
        let judged = tiered_evictions(&model, &batch, &rule, size, StoreOption::Rank(1), &dev).unwrap();
        let single = evictions(&model, &batch, &Baseline::tova_out(budget, StoreOption::Rank(2), decay), &dev).unwrap();
        assert_ne!(judged.demoted_at, single, "the second tier should change some decision on this model");
        for e in &stats {
            assert_eq!(e.demotions.len(), l_n * (t_n - budget), "one demotion per layer and query past the budget");
            assert_eq!(e.evictions.len(), l_n * (t_n - budget).saturating_sub(size), "the second tier's overflow");
        }
        assert_eq!(moves_at(&stats, |e| &e.demotions, t_n, l_n), judged.demoted_at);
        assert_eq!(moves_at(&stats, |e| &e.evictions, t_n, l_n), judged.evicted_at);
        let store = cfg.option_index(StoreOption::Rank(2)).unwrap();
        let choices = Choices::from_fn(2, t_n, l_n, |_, _, _| store)
            .with_evictions(judged.evicted_at.clone())
            .with_demotions(judged.demoted_at.clone(), StoreOption::Rank(1));
        assert_decode_is_parallel(&model, &batch, &choices, &stats, rule.memory(&cfg, t_n).unwrap(), &dev);
        let mut dense = spec.clone();
        dense.env.evict = Some(Eviction { store: StoreOption::Full, ..eviction });
        assert!(dense.model(model.clone()).is_err(), "a dense store has no nested lower rank");
    }

    /// One decision overruled in the rule's own cache: forcing the rule's own victim is the rule;
    /// forcing another held key evicts that key at that query and the layer holds as many keys as the
    /// rule's at every query; the layers before it are untouched. A watch sees what the rule holds, and
    /// a key it returns is evicted as a forced one is.
    #[test]
    fn a_forced_eviction_takes_the_forced_key_and_holds_the_rules_memory() {
        let budget = 6;
        let (dev, _, model, task) = tiny_setup("mqar-tiny.toml", 16, |_| {});
        let l_n = model.config().n_layers;
        let seq = task.valid_batch(0, 1);
        let t_n = seq.seq_len;
        let rule = Baseline::tova_ema(budget, StoreOption::Full, 0.9);
        let base = evictions(&model, &seq, &rule, &dev).unwrap();
        let (q, l) = (budget + 3, l_n - 1);
        let victim = (0..=q).find(|&k| base[k * l_n + l] == (q + 1) as u32).unwrap();
        let other = (0..=q).find(|&k| k != victim && base[k * l_n + l] > (q + 1) as u32).unwrap();
        let two = seq.repeat_each(2);
        let ev = forced_evictions(&model, &two, &rule, &[Some((q, l, victim)), Some((q, l, other))], &dev).unwrap();
        let (own, forced) = ev.split_at(t_n * l_n);
        assert_eq!(own, &base[..], "forcing the rule's own victim is the rule");
        assert_eq!(forced[other * l_n + l], (q + 1) as u32);
        assert!(forced[victim * l_n + l] > (q + 1) as u32, "the rule's victim stays past q");
        let held = |ev: &[u32], p: usize| (0..=p).filter(|&k| ev[k * l_n + l] as usize > p).count();
        for p in 0..t_n {
            assert_eq!(held(forced, p), held(&base, p), "query {p}");
        }
        // The layers before it never read its cache: their evictions are the rule's.
        for k in 0..t_n {
            for m in 0..l {
                assert_eq!(base[k * l_n + m], forced[k * l_n + m]);
            }
        }
        assert!(
            forced_evictions(&model, &two, &Baseline::Uniform { option: StoreOption::Full }, &[None], &dev).is_err()
        );
        // A watch sees, before each decision, the keys the rule holds then (q last) and the
        // weights the query gives them (a distribution over those keys, head by head).
        let mut steps = 0;
        let mut watch = |s: RuleStep| {
            let want: Vec<usize> = (0..=s.query).filter(|&k| base[k * l_n + s.layer] as usize > s.query).collect();
            assert_eq!(s.held, &want[..], "layer {} query {}", s.layer, s.query);
            let total: f32 = s.held.iter().map(|&k| (s.weight)(k)).sum();
            assert!((total - 1.0).abs() < 1e-4, "weights sum to {total}");
            steps += 1;
            None
        };
        assert_eq!(watched_evictions(&model, &seq, &rule, &[], &mut watch, &dev).unwrap(), base);
        assert_eq!(steps, t_n * l_n);
        // A key the watch returns leaves instead of the rule's choice: the forced run's evictions.
        let mut overrule = |s: RuleStep| ((s.query, s.layer) == (q, l)).then_some(other);
        assert_eq!(watched_evictions(&model, &seq, &rule, &[], &mut overrule, &dev).unwrap(), forced);
        let mut wrong = |s: RuleStep| (s.query == q).then_some(q + 1);
        assert!(watched_evictions(&model, &seq, &rule, &[], &mut wrong, &dev).is_err());
    }

    /// Two tiers with their own cache: with no room in the second tier every key leaves when the
    /// rule lets it go (the single-tier run, demoted and evicted at the same query); with room, the
    /// first tier holds the rule's budget (and the newest key), the second at most its size, keys
    /// leave it first in, first out, and the second tier's attention makes the rule let other keys
    /// go than the single-tier rule. A dense store cannot be demoted.
    #[test]
    fn a_second_tier_keeps_what_the_rule_lets_go_first_in_first_out() {
        let (budget, size) = (5, 3);
        let (dev, _, model, task) = tiny_setup("mqar-tiny.toml", 16, |_| {});
        let l_n = model.config().n_layers;
        let seq = task.valid_batch(0, 2);
        let t_n = seq.seq_len;
        let rule = Baseline::tova_ema(budget, StoreOption::Rank(2), 0.5);
        let base = evictions(&model, &seq, &rule, &dev).unwrap();
        let none = tiered_evictions(&model, &seq, &rule, 0, StoreOption::Rank(1), &dev).unwrap();
        assert_eq!(none.evicted_at, base, "an empty second tier is the rule");
        assert_eq!(none.demoted_at, base);
        let two = tiered_evictions(&model, &seq, &rule, size, StoreOption::Rank(1), &dev).unwrap();
        for (b, l) in (0..2).flat_map(|b| (0..l_n).map(move |l| (b, l))) {
            let at = |v: &[u32], k: usize| v[(b * t_n + k) * l_n + l] as usize;
            let mut order: Vec<usize> = (0..t_n).filter(|&k| at(&two.demoted_at, k) < t_n).collect();
            order.sort_by_key(|&k| at(&two.demoted_at, k));
            for p in 0..t_n {
                let first = (0..=p).filter(|&k| at(&two.demoted_at, k) > p).count();
                let second = (0..=p).filter(|&k| at(&two.demoted_at, k) <= p && at(&two.evicted_at, k) > p).count();
                assert_eq!(first, (p + 1).min(budget + 1), "stream {b} layer {l} query {p}: the first tier");
                assert_eq!(second, (p + 1 - first).min(size), "stream {b} layer {l} query {p}: the second tier");
            }
            let leave: Vec<usize> = order.iter().map(|&k| at(&two.evicted_at, k)).collect();
            assert!(leave.windows(2).all(|w| w[0] <= w[1]), "first in, first out: {leave:?}");
        }
        assert_ne!(two.demoted_at, base, "the second tier's attention changes what the rule lets go");
        assert!(
            tiered_evictions(
                &model,
                &seq,
                &Baseline::tova_ema(budget, StoreOption::Full, 0.5),
                2,
                StoreOption::Rank(1),
                &dev
            )
            .is_err()
        );
    }

    /// `superseded-spike`: with no spike heavy enough its last layer is exactly `superseded`'s;
    /// with spikes it drops every token no later than `superseded` does, and some earlier.
    #[test]
    fn superseded_spike_drops_at_the_earlier_of_the_two_rules() {
        let (dev, _, model, task) = tiny_setup("mqar-tiny-updates.toml", 14, |_| {});
        let cfg = model.config().clone();
        let batch = task.valid_batch(0, 2);
        let (l_n, t_n) = (cfg.n_layers, batch.seq_len);
        let per_layer = PerLayer::split(l_n, (2, cfg.exact_option()), (usize::MAX, cfg.exact_option()));
        let last = |weight: f32, superseded: bool| {
            let rule = Baseline::Spike { per_layer, weight, tau: 0.0, superseded };
            let all = spike_evictions(&model, &batch, &rule, &dev).unwrap();
            (0..2 * t_n).map(|i| all[i * l_n + l_n - 1]).collect::<Vec<u32>>()
        };
        let rule: Vec<u32> =
            (0..2).flat_map(|b| rules::superseded_evictions(&batch.inputs[b * t_n..(b + 1) * t_n])).collect();
        assert!(rule.iter().filter(|&&e| e != NEVER).count() > 20, "the task re-assigns keys");
        assert_eq!(last(f32::INFINITY, true), rule);
        let both = last(0.0, true);
        assert!(both.iter().zip(&rule).all(|(b, r)| b <= r));
        assert!(both.iter().zip(&rule).filter(|(b, r)| b < r).count() > 10);
    }

    /// Two rows, two layers, menu [drop, rank:1, recent:4]: row 0 has a token under review in
    /// layer 1 with spike weight 0.6 after a surprising token (dropped at τ = 0.5; kept at
    /// τ = 0.9 or when the spike must weigh 0.8); row 1 has none (its review head's only allowed
    /// option is the placeholder, 1).
    #[test]
    fn spike_actions_drop_in_the_last_layer_only_after_a_heavy_spike_and_a_surprise() {
        let names: Vec<String> = ["surprisal", "layer0.review_present", "layer0.spike_weight"]
            .iter()
            .chain(&["layer1.review_present", "layer1.spike_weight"])
            .map(|s| s.to_string())
            .collect();
        let features = vec![0.7, 0.0, 0.0, 1.0, 0.6, 0.9, 0.0, 0.0, 0.0, 0.0];
        let all = [true; 3];
        let one = [false, true, false];
        let masks = [all, all, one, [true, true, false], all, all, one, one].concat();
        let obs = ObsBatch { len: 2, features, masks, ..Default::default() };
        let act = |w, t| spike_actions(&obs, &names, &[2, 1], 0, w, t).unwrap();
        assert_eq!(act(0.0, 0.5), vec![2, 1, 1, 0, 2, 1, 1, 1]);
        assert_eq!(act(0.0, 0.9), vec![2, 1, 1, 1, 2, 1, 1, 1]);
        assert_eq!(act(0.8, 0.5), vec![2, 1, 1, 1, 2, 1, 1, 1]);
        assert!(spike_actions(&obs, &names[..3], &[2, 1], 0, 0.0, 0.5).unwrap_err().to_string().contains("layer1"));
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    /// `tova-out` with its own cache is `tova-ema`'s cache watched by an evicter that scores every
    /// held key by `output_moved` (smoothed as `tova-ema` smooths weights): the same evictions, and
    /// other evictions than `tova-ema`'s somewhere; the same number of keys held at every query.
    #[test]
    fn tova_out_evicts_the_key_that_moves_the_output_least() {
        let dev = ahr_tpa::device::from_env();
        let cfg = ahr_tpa::ModelConfig { vocab_size: 64, ..ahr_tpa::ModelConfig::tiny() };
        let model = Model::new(&cfg, &dev);
        let env_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envs/mqar-tiny.toml");
        let spec = ahr_env::EnvSpec::load(&env_path).unwrap();
        let task = ahr_tasks::Task::load(&spec.task).unwrap();
        let batch = task.valid_batch(0, 2);
        let (t_n, l_n, budget, decay) = (batch.seq_len, cfg.n_layers, 5, 0.5);
        let judged = evictions(&model, &batch, &Baseline::tova_out(budget, StoreOption::Full, decay), &dev).unwrap();
        let mut smoothed = vec![0f64; 2 * l_n * t_n];
        let mut watch = |s: RuleStep| {
            let weights: Vec<Vec<f32>> = s.held.iter().map(|&k| (s.head_weights)(k)).collect();
            let values: Vec<&[f32]> = s.held.iter().map(|&k| s.values[k].as_slice()).collect();
            let base = (s.stream * l_n + s.layer) * t_n;
            for (&k, m) in s.held.iter().zip(output_moved(&weights, &values, cfg.head_dim)) {
                let x = &mut smoothed[base + k];
                *x = if k == s.query {
                    ahr_policy::evict::log_weight(m)
                } else {
                    ahr_policy::evict::smooth_step(*x, m, decay)
                };
            }
            (s.held.len() > budget).then(|| {
                *s.held
                    .iter()
                    .min_by(|&&a, &&b| smoothed[base + a].total_cmp(&smoothed[base + b]).then(a.cmp(&b)))
                    .unwrap()
            })
        };
        let tova_ema = Baseline::tova_ema(budget, StoreOption::Full, decay);
        let watched = watched_evictions(&model, &batch, &tova_ema, &[], &mut watch, &dev).unwrap();
        assert_eq!(judged, watched);
        assert_ne!(
            judged,
            evictions(&model, &batch, &tova_ema, &dev).unwrap(),
            "the output should change some eviction"
        );
        let evicted = judged.iter().filter(|&&e| e != NEVER).count();
        assert_eq!(evicted, 2 * l_n * (t_n - budget), "one eviction per layer and query past the budget");
    }
}
