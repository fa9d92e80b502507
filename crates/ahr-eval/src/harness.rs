//! The evaluation harness: one model, the task's fixed held-out sequences, and the two ways a
//! point is run — a rule as storage choices with evictions through parallel forwards (which equal
//! the decode, tested in `ahr-tpa`), a policy token by token in the rank environment. Both report
//! the same measures: the metric pooled over labelled positions (per-sequence mean beside it),
//! time-averaged KV bytes per token (peak beside it) and attention FLOPs per token, all from
//! `ahr_tpa::cost`.

use std::collections::HashMap;
use std::sync::Mutex;

use ahr_env::{EnvSpec, PolicyEval};
use ahr_policy::ObsBatch;
use ahr_policy::ops::{exp, log_softmax};
use ahr_tasks::{Batch, IGNORE, Metric, Metrics, Task};
use ahr_tpa::attention::LayerMaps;
use ahr_tpa::{Choices, Model, StoreOption, cost};
use ahr_train::evaluate::{HeadAt, label_logprobs_resumed};
use anyhow::{Result, anyhow, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::baseline::{Baseline, Family, SequenceView};
use crate::own_cache;
use crate::rules::NEVER;

/// The most memory the full-cache attention maps kept for the full-cache-scored H2O and TOVA may take.
const MAX_ATTENTION_BYTES: f64 = 4.0 * (1u64 << 30) as f64;

/// What a point of the comparison is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// A learned policy.
    Policy,
    /// Another model's exact choice (an extra `--model`).
    Model,
    /// A setting of a rule family.
    Rule(Family),
}

/// One evaluated point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// `policy:<dir>`, `model:<dir>`, or the rule's name (`streaming-llm@rank:1`).
    pub name: String,
    /// What it is.
    pub kind: PointKind,
    /// Its setting (`sinks=16,window=0`, `budget=0.3`, …).
    pub setting: String,
    /// The task metric pooled over every labelled position.
    pub metric: f64,
    /// The mean of per-sequence metrics (secondary).
    pub metric_per_sequence: f64,
    /// Mean task loss over labelled positions (nats).
    pub loss: f64,
    /// Time-averaged KV bytes held per token, all layers (the one memory measure).
    pub kv_bytes_per_token: f64,
    /// The most bytes held at once over the sequence length (reported beside).
    pub peak_kv_bytes_per_token: f64,
    /// Attention FLOPs per token, all layers.
    pub flops_per_token: f64,
    /// No other point is at least as good on metric and memory and better on one.
    pub on_front: bool,
    /// Loss and accuracy sums per held-out sequence, in held-out order (for paired comparisons;
    /// not written out).
    #[serde(skip)]
    pub per_sequence: Vec<Metrics>,
}

impl Point {
    /// The rule family, for rule points.
    pub fn family(&self) -> Option<Family> {
        match self.kind {
            PointKind::Rule(f) => Some(f),
            _ => None,
        }
    }
}

/// A rule's storage choices for a batch from its tokens and the model's next-token entropy there
/// (`[seq][T]`, / ln V).
pub type ReadRule<'a> = dyn Fn(&Batch, &[Vec<f32>]) -> Result<Choices> + 'a;

/// Per held-out sequence, what rules may read: the exact full-cache forward's attention (mean
/// over heads), exact-key norms and normalised next-token entropy, and fixed random draws.
struct Prepared {
    batch: Batch,
    /// `[seq][layer][T·T]` (empty without attention rules).
    attention: Vec<Vec<Vec<f32>>>,
    /// `[seq][layer][T]` exact-key L2 norms (empty without attention rules).
    key_norms: Vec<Vec<Vec<f32>>>,
    /// `[seq][T]`.
    entropy: Vec<Vec<f32>>,
    /// `[seq][T]`.
    surprisal: Vec<Vec<f32>>,
    /// `[seq][T·L]`.
    draws: Vec<Vec<f32>>,
}

/// Per sequence and layer, the attention maps' mean over heads (`[T·T]`) and the key norms (`[T]`).
#[allow(clippy::type_complexity)]
fn host_maps(maps: Vec<LayerMaps>, b_n: usize, t_n: usize) -> Result<(Vec<Vec<Vec<f32>>>, Vec<Vec<Vec<f32>>>)> {
    let host = |x: burn::tensor::Tensor<1>| {
        x.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("reading a tensor back: {e:?}"))
    };
    let mut means = vec![Vec::new(); b_n];
    let mut key_norms = vec![Vec::new(); b_n];
    for map in maps {
        let mean = host(map.probs.mean_dim(1).reshape([b_n * t_n * t_n]))?;
        for (s, m) in mean.chunks(t_n * t_n).enumerate() {
            means[s].push(m.to_vec());
        }
        let norms = host(map.key_norms.reshape([b_n * t_n]))?;
        for (s, n) in norms.chunks(t_n).enumerate() {
            key_norms[s].push(n.to_vec());
        }
    }
    Ok((means, key_norms))
}

/// The model, its held-out data and what rules read from it.
pub struct Harness<'a> {
    /// The model as the env runs it (policies' menu).
    pub model: &'a Model,
    /// The same model as rules run it: its menu with the judge's demotion schedules added
    /// ([`demotion_stores`]), so a rule may keep recent tokens exact and older ones cheaper.
    pub rules: Model,
    /// The task.
    pub task: &'a Task,
    /// The env spec (streams, granularity, reward).
    pub spec: &'a EnvSpec,
    /// Held-out sequences per point.
    pub sequences: usize,
    /// Device.
    pub dev: &'a Device,
    prepared: Vec<Prepared>,
    /// Memory already measured, by the rule's full description: the searches at several targets
    /// probe the same settings (their bisections share the first steps).
    measured: Mutex<HashMap<String, f64>>,
    /// Rule points already run, by the rule's full description: the staged families run the
    /// grids of others first, which the same judge may run as families of their own.
    points: Mutex<HashMap<String, Point>>,
    /// The last layer's inputs under the earlier layers' choices met more than once.
    prefixes: Mutex<Prefixes>,
}

/// The input of the model's last layer, kept per batch for choices of the earlier layers that
/// points meet more than once: a search that moves only the last layer's options from a setting
/// (the token-class fit's moves there, a per-layer rule's last axis) then forwards the earlier
/// layers once per setting of theirs, not once per point. The last layer sees the same input
/// either way, so every point is the same bits.
#[derive(Default)]
struct Prefixes {
    /// (batch, hash of [`Choices::layers_key`]) of every key met: a key's second meeting keeps
    /// its input, so the keys met once (a move in an earlier layer) cost no memory.
    seen: std::collections::HashSet<(usize, u64)>,
    /// Kept inputs by (batch, key), oldest first, at most [`PREFIX_BYTES`] of them.
    kept: std::collections::VecDeque<((usize, Vec<u8>), Tensor<3>)>,
    /// Forwards that started at the last layer (for tests).
    resumed: usize,
}

/// Bytes of last-layer inputs [`Prefixes`] keeps at most (the oldest are dropped first).
const PREFIX_BYTES: usize = 256 << 20;

/// Rows [`schedule_losses`] scores per parallel forward.
const SCHEDULE_ROWS: usize = 8;

/// One sequence (`seq`, a batch of one) under several eviction schedules (each `[T, L]`, as
/// [`Choices::with_evictions`] takes them), every key stored at menu index `store`: per schedule,
/// the loss in bits of every labelled position, in order (parallel forwards of a few rows at a
/// time). What a counterfactual of one decision compares.
pub fn schedule_losses(
    model: &Model,
    seq: &Batch,
    store: usize,
    schedules: &[Vec<u32>],
    dev: &Device,
) -> Result<Vec<Vec<f64>>> {
    let (t_n, l_n) = (seq.seq_len, model.config().n_layers);
    let per_row = seq.labels.iter().filter(|&&l| l != IGNORE).count();
    let mut out = Vec::with_capacity(schedules.len());
    for chunk in schedules.chunks(SCHEDULE_ROWS) {
        let n = chunk.len();
        let batch = seq.repeat_each(n);
        let choices = Choices::from_fn(n, t_n, l_n, |_, _, _| store).with_evictions(chunk.concat());
        let (logp, _, _) = ahr_train::evaluate::label_logprobs(model, &batch, &choices, dev)?
            .ok_or_else(|| anyhow!("the sequence has no labelled positions"))?;
        let logp = logp.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
        out.extend(logp.chunks(per_row).map(|c| c.iter().map(|&x| -x as f64 / std::f64::consts::LN_2).collect()));
    }
    Ok(out)
}

/// Pooled and per-sequence sums of one point.
#[derive(Default)]
struct Tally {
    pooled: Metrics,
    per_sequence: Vec<Metrics>,
}

impl<'a> Harness<'a> {
    /// Prepare the first `sequences` held-out sequences; `attention`: keep the full-cache
    /// attention maps (for `h2o-full-cache`, `tova-full-cache` and K-norm's key norms; `[T, T]`
    /// per sequence and layer).
    pub fn new(
        model: &'a Model,
        task: &'a Task,
        spec: &'a EnvSpec,
        sequences: usize,
        dev: &'a Device,
        attention: bool,
    ) -> Result<Self> {
        let sequences = sequences.min(task.valid_examples()).max(1);
        let batch_size = spec.env.streams.max(8);
        Self::from_batches(model, task, spec, task.valid_batches(batch_size), sequences, dev, attention)
    }

    /// The first `sequences` training sequences of the task's stream for `seed` (what a rule fitted
    /// to data is fitted on; never the held-out ones), without attention maps.
    pub fn training(
        model: &'a Model,
        task: &'a Task,
        spec: &'a EnvSpec,
        sequences: usize,
        seed: u64,
        dev: &'a Device,
    ) -> Result<Self> {
        let batch_size = spec.env.streams.max(8);
        let batches = (0u64..).map(move |i| task.train_batch(seed, i, batch_size));
        Self::from_batches(model, task, spec, batches, sequences.max(1), dev, false)
    }

    /// The first `sequences` sequences of `batches`, prepared as [`Harness::new`] prepares the
    /// held-out ones.
    fn from_batches(
        model: &'a Model,
        task: &'a Task,
        spec: &'a EnvSpec,
        batches: impl Iterator<Item = Batch>,
        sequences: usize,
        dev: &'a Device,
        attention: bool,
    ) -> Result<Self> {
        let cfg = model.config();
        let t_n = task.valid_batch(0, 1).seq_len;
        let attention_bytes = (sequences * cfg.n_layers * t_n * t_n * 4) as f64;
        if attention && attention_bytes > MAX_ATTENTION_BYTES {
            bail!(
                "h2o-full-cache, tova-full-cache and k-norm read each sequence's [T, T] attention per layer: {:.1} \
                 GiB for {sequences} sequences of {t_n} tokens; evaluate fewer sequences (--sequences) or leave \
                 them out (--baselines)",
                attention_bytes / (1u64 << 30) as f64
            );
        }
        let ln_v = (cfg.vocab_size as f32).ln();
        let mut prepared = Vec::new();
        let mut seen = 0;
        for (i, mut batch) in batches.enumerate() {
            // An exhausted stream (or an empty batch, which would never fill the count) ends it.
            if seen >= sequences || batch.batch_size == 0 {
                break;
            }
            batch.truncate(sequences - seen);
            seen += batch.batch_size;
            let (b_n, t_n, l_n) = (batch.batch_size, batch.seq_len, cfg.n_layers);
            let exact = Choices::exact(cfg, b_n, t_n);
            let host = |x: burn::tensor::Tensor<1>| {
                x.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("reading a tensor back: {e:?}"))
            };
            // One exact forward gives the entropies and, when attention rules run, their maps.
            let tokens = model.tokens(&batch.inputs, b_n, t_n, dev)?;
            let (logits, attention_maps) = if attention {
                model.forward_with_attention_maps(tokens, &exact)?
            } else {
                (model.forward(tokens, &exact)?, Vec::new())
            };
            let logp = log_softmax(logits, 2);
            let ent = host((exp(logp.clone()) * logp.clone()).sum_dim(2).neg().reshape([b_n * t_n]))?;
            let entropy = ent.chunks(t_n).map(|c| c.iter().map(|e| e / ln_v).collect()).collect();
            // Surprisal of token t: −log p(x_t) under position t − 1's prediction (1 at t = 0).
            let next: Vec<i64> =
                (0..b_n * t_n).map(|i| if i % t_n + 1 < t_n { batch.inputs[i + 1] as i64 } else { 0 }).collect();
            let next = Tensor::<3, Int>::from_data(TensorData::new(next, [b_n, t_n, 1]), dev);
            let nll = host(logp.clone().gather(2, next).neg().reshape([b_n * t_n]))?;
            let surprisal = nll
                .chunks(t_n)
                .map(|c| std::iter::once(1.0).chain(c[..t_n - 1].iter().map(|x| x / ln_v)).collect())
                .collect();
            let (maps, key_norms) = host_maps(attention_maps, b_n, t_n)?;
            let mut rng = StdRng::seed_from_u64(0x72616e64 ^ i as u64);
            let draws = (0..b_n).map(|_| (0..t_n * l_n).map(|_| rng.random::<f32>()).collect()).collect();
            prepared.push(Prepared { batch, attention: maps, key_norms, entropy, surprisal, draws });
        }
        if prepared.is_empty() {
            bail!("the task gave no sequences to evaluate on");
        }
        let rules = model.clone().with_timed(&demotion_stores(cfg, t_n))?;
        Ok(Self {
            model,
            rules,
            task,
            spec,
            sequences: seen,
            dev,
            prepared,
            measured: Mutex::default(),
            points: Mutex::default(),
            prefixes: Mutex::default(),
        })
    }

    /// The task's metric.
    pub fn metric(&self) -> Metric {
        self.task.metric()
    }

    /// Sequence length of the held-out data.
    pub fn seq_len(&self) -> usize {
        self.prepared[0].batch.seq_len
    }

    /// The prepared batches, in order (the last one cut to the harness's sequences).
    pub fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.prepared.iter().map(|p| &p.batch)
    }

    /// The storage choices a rule makes for one prepared batch. H2O and TOVA scored by their own
    /// cache ([`Baseline::reads_its_cache`]) take their evictions from a run token by token through
    /// the model with that cache ([`crate::own_cache`]); every other rule decides from the prepared
    /// data.
    fn rule_choices(&self, p: &Prepared, rule: &Baseline) -> Result<Choices> {
        let cfg = self.rules.config();
        let (b_n, t_n, l_n) = (p.batch.batch_size, p.batch.seq_len, cfg.n_layers);
        let index = |o: StoreOption| cfg.option_index(o).map_err(|e| anyhow!("{}: {e}", rule.name()));
        let own_cache = rule.reads_its_cache();
        let mut ev = vec![NEVER; b_n * t_n * l_n];
        let mut stores = vec![0usize; b_n * t_n * l_n];
        for s in 0..b_n {
            let view = SequenceView {
                seq_len: t_n,
                attention: &p.attention[s],
                key_norms: &p.key_norms[s],
                entropy: &p.entropy[s],
                surprisal: &p.surprisal[s],
                draws: &p.draws[s],
                inputs: &p.batch.inputs[s * t_n..(s + 1) * t_n],
            };
            for l in 0..l_n {
                if !own_cache {
                    for (t, e) in rule.evictions(&view, l).into_iter().enumerate() {
                        ev[(s * t_n + t) * l_n + l] = e;
                    }
                }
                for t in 0..t_n {
                    stores[(s * t_n + t) * l_n + l] = index(rule.store_of(&view, t, l))?;
                }
            }
        }
        let choices = Choices::from_fn(b_n, t_n, l_n, |s, t, l| stores[(s * t_n + t) * l_n + l]);
        if let Some((size, to)) = rule.tier2() {
            let tiers = own_cache::tiered_evictions(&self.rules, &p.batch, rule, size, to, self.dev)?;
            return Ok(choices.with_evictions(tiers.evicted_at).with_demotions(tiers.demoted_at, to));
        }
        if own_cache {
            ev = own_cache::evictions(&self.rules, &p.batch, rule, self.dev)?;
        }
        Ok(choices.with_evictions(ev))
    }

    /// Time-averaged KV bytes per token of a rule over the prepared sequences, without running
    /// the model (rules decide from the prepared data alone).
    pub fn measured_memory(&self, rule: &Baseline) -> Result<f64> {
        let key = format!("{rule:?}");
        if let Some(&m) = self.measured.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(m);
        }
        let cfg = self.rules.config();
        let mut total = 0.0;
        for p in &self.prepared {
            let c = self.rule_choices(p, rule)?;
            for b in 0..p.batch.batch_size {
                total += cost::sequence_cost_demoted(cfg, p.batch.seq_len, |t, l| entry(cfg, &c, b, t, l))
                    .kv_bytes_per_token;
            }
        }
        let m = total / self.sequences as f64;
        self.measured.lock().unwrap_or_else(|e| e.into_inner()).insert(key, m);
        Ok(m)
    }

    /// A rule through parallel forwards.
    pub fn rule_point(&self, rule: &Baseline) -> Result<Point> {
        let key = format!("{rule:?}");
        if let Some(p) = self.points.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let kind = PointKind::Rule(rule.family());
        let p = self.choices_point(&rule.name(), kind, &rule.setting(), &|p| self.rule_choices(p, rule))?;
        self.points.lock().unwrap_or_else(|e| e.into_inner()).insert(key, p.clone());
        Ok(p)
    }

    /// Any storage choices per batch (uniform options, another model's exact choice) through
    /// parallel forwards.
    pub fn batch_rule_point(
        &self,
        name: &str,
        kind: PointKind,
        setting: &str,
        rule: &dyn Fn(&Batch) -> Result<Choices>,
    ) -> Result<Point> {
        self.choices_point(name, kind, setting, &|p| rule(&p.batch))
    }

    /// A per-token table — token `t` at option `table[t · layers + l]` of the rules' menu in layer
    /// `l`, wherever it is written — through parallel forwards.
    pub fn table_point(&self, name: &str, kind: PointKind, setting: &str, table: &[usize]) -> Result<Point> {
        let layers = self.rules.config().n_layers;
        self.batch_rule_point(name, kind, setting, &|b| {
            Ok(Choices::from_fn(b.batch_size, b.seq_len, layers, |s, t, l| {
                table[b.inputs[s * b.seq_len + t] as usize * layers + l]
            }))
        })
    }

    /// Storage choices per batch that also read the model's next-token entropy there
    /// ([`ReadRule`]: the exact forward's, what `entropy` and `token-entropy` read), through
    /// parallel forwards.
    pub fn read_rule_point(&self, name: &str, kind: PointKind, setting: &str, rule: &ReadRule) -> Result<Point> {
        self.choices_point(name, kind, setting, &|p| rule(&p.batch, &p.entropy))
    }

    /// The model's next-token entropy (/ ln V, exact forward) at every position of every sequence.
    pub fn entropies(&self) -> impl Iterator<Item = f32> + '_ {
        self.prepared.iter().flat_map(|p| p.entropy.iter().flatten().copied())
    }

    fn choices_point(
        &self,
        name: &str,
        kind: PointKind,
        setting: &str,
        rule: &dyn Fn(&Prepared) -> Result<Choices>,
    ) -> Result<Point> {
        let cfg = self.rules.config();
        let mut tally = Tally::default();
        let mut sum = cost::SequenceCost::default();
        for (i, p) in self.prepared.iter().enumerate() {
            let choices = rule(p)?;
            let batch = &p.batch;
            self.score(i, batch, &choices, &mut tally)?;
            for b in 0..batch.batch_size {
                let c = cost::sequence_cost_demoted(cfg, batch.seq_len, |t, l| entry(cfg, &choices, b, t, l));
                sum.kv_bytes_per_token += c.kv_bytes_per_token;
                sum.peak_bytes_per_token += c.peak_bytes_per_token;
                sum.flops_per_token += c.flops_per_token;
            }
        }
        let n = self.sequences as f64;
        let metric = self.metric();
        if tally.pooled.count == 0 {
            bail!("the held-out data has no labelled positions");
        }
        let scored: Vec<&Metrics> = tally.per_sequence.iter().filter(|m| m.count > 0).collect();
        Ok(Point {
            name: name.into(),
            kind,
            setting: setting.into(),
            metric: metric.of(&tally.pooled),
            metric_per_sequence: scored.iter().map(|m| metric.of(m)).sum::<f64>() / scored.len().max(1) as f64,
            loss: tally.pooled.loss(),
            kv_bytes_per_token: sum.kv_bytes_per_token / n,
            peak_kv_bytes_per_token: sum.peak_bytes_per_token / n,
            flops_per_token: sum.flops_per_token / n,
            on_front: false,
            per_sequence: tally.per_sequence,
        })
    }

    /// Add one batch's (prepared batch `index`) pooled and per-sequence loss and accuracy under
    /// `choices`, the forward started at the last layer where its input is kept ([`Prefixes`]).
    fn score(&self, index: usize, batch: &Batch, choices: &Choices, tally: &mut Tally) -> Result<()> {
        let last = self.rules.config().n_layers - 1;
        let key = (last > 0).then(|| choices.layers_key(0..last));
        let lock = || self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let (from, capture) = match &key {
            None => (None, None),
            Some(key) => {
                let mut prefixes = lock();
                match prefixes.kept.iter().find(|((i, k), _)| *i == index && k == key) {
                    Some((_, x)) => {
                        let x = x.clone();
                        prefixes.resumed += 1;
                        (Some((last, x)), None)
                    }
                    None => {
                        let hash = std::hash::BuildHasher::hash_one(
                            &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
                            key,
                        );
                        (None, (!prefixes.seen.insert((index, hash))).then_some(last))
                    }
                }
            }
        };
        let (out, captured) =
            label_logprobs_resumed(&self.rules, batch, choices, self.dev, HeadAt::Labelled, from, capture)?;
        if let (Some(x), Some(key)) = (captured, key) {
            let mut prefixes = lock();
            if !prefixes.kept.iter().any(|((i, k), _)| *i == index && *k == key) {
                let bytes = |x: &Tensor<3>| x.dims().iter().product::<usize>() * size_of::<f32>();
                prefixes.kept.push_back(((index, key), x));
                while prefixes.kept.iter().map(|(_, x)| bytes(x)).sum::<usize>() > PREFIX_BYTES {
                    prefixes.kept.pop_front();
                }
            }
        }
        let Some((logp, logits, labels)) = out else {
            tally.per_sequence.extend((0..batch.batch_size).map(|_| Metrics::default()));
            return Ok(());
        };
        let n = labels.dims()[0];
        let nll: Vec<f32> = logp.neg().into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
        let hits: Vec<bool> = logits
            .argmax(1)
            .reshape([n])
            .equal(labels)
            .into_data()
            .try_to_vec::<bool>()
            .map_err(|e| anyhow!("{e:?}"))?;
        let mut rows = vec![Metrics::default(); batch.batch_size];
        // Labelled positions in row-major order, as `label_logprobs` gathers them.
        let positions = batch.labels.iter().enumerate().filter(|(_, l)| **l != IGNORE).map(|(i, _)| i);
        for (k, i) in positions.enumerate() {
            rows[i / batch.seq_len].add(nll[k] as f64, hits[k] as u64, 1);
            tally.pooled.add(nll[k] as f64, hits[k] as u64, 1);
        }
        tally.per_sequence.extend(rows);
        Ok(())
    }

    /// A write-time rule (a policy) token by token in the rank environment of `spec`.
    pub fn env_point(
        &self,
        name: &str,
        setting: &str,
        spec: &EnvSpec,
        window: usize,
        act: impl FnMut(&ObsBatch) -> Vec<usize>,
    ) -> Result<(Point, PolicyEval)> {
        let cfg = self.model.config();
        let e = ahr_env::evaluate_rule(self.model, self.task, spec, window, Some(self.sequences), self.dev, act)?;
        let t_n = self.seq_len();
        let metric = self.metric();
        let point = Point {
            name: name.into(),
            kind: PointKind::Policy,
            setting: setting.into(),
            metric: metric.value(e.task_loss, e.accuracy),
            metric_per_sequence: metric.value(e.task_loss_per_sequence, e.accuracy_per_sequence),
            loss: e.task_loss,
            kv_bytes_per_token: e.kv_bytes_per_token,
            peak_kv_bytes_per_token: e.peak_kv_bytes_per_token,
            flops_per_token: e.flops_frac * cost::exact_sequence_flops(cfg, t_n) / t_n as f64,
            on_front: false,
            per_sequence: e.per_sequence.clone(),
        };
        Ok((point, e))
    }
}

/// Demotion schedules the judge's rules may keep tokens with, beside the menu's plain options
/// (DESIGN.md §9–10): the exact form for the W queries after a token, then each cheaper kept
/// form of the menu, W ∈ {2, 8, 32, …} up to T/4 — "recent tokens exact, older ones at rank 1",
/// the rule a practitioner writes once demotion exists.
pub fn demotion_stores(cfg: &ahr_tpa::ModelConfig, seq_len: usize) -> Vec<StoreOption> {
    let Some(first) = ahr_tpa::Form::of(cfg.exact_option()) else { return Vec::new() };
    let windows: Vec<usize> =
        std::iter::successors(Some(2usize), |w| w.checked_mul(4)).take_while(|w| *w <= seq_len / 4).collect();
    let cheaper: Vec<ahr_tpa::Form> = cfg
        .menu
        .iter()
        .filter_map(|o| ahr_tpa::Form::of(*o))
        .filter(|f| *f != ahr_tpa::Form::Drop && *f != first)
        .collect();
    windows
        .iter()
        .flat_map(|&window| {
            cheaper.iter().map(move |&then| StoreOption::Schedule { first, window, then, then_for: None })
        })
        .collect()
}

/// Token t of sequence b in layer l as the cost model sees it.
fn entry(
    cfg: &ahr_tpa::ModelConfig,
    c: &Choices,
    b: usize,
    t: usize,
    l: usize,
) -> (StoreOption, Option<usize>, Option<(usize, StoreOption)>) {
    (cfg.menu[c.get(b, t, l)], c.evicted_at(b, t, l), c.demoted_at(b, t, l))
}

/// Mark the Pareto front: a better metric and fewer bytes are better.
pub fn mark_front(points: &mut [Point], metric: Metric) {
    let snapshot: Vec<(f64, f64)> = points.iter().map(|p| (p.kv_bytes_per_token, p.metric)).collect();
    for (i, p) in points.iter_mut().enumerate() {
        p.on_front = !snapshot.iter().enumerate().any(|(j, &(bytes, m))| {
            j != i
                && bytes <= p.kv_bytes_per_token
                && metric.at_least(m, p.metric)
                && (bytes < p.kv_bytes_per_token || metric.better(m, p.metric))
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use ahr_tpa::ModelConfig;

    use super::*;
    use crate::baseline::{ByteClass, ClassBonus, Scores};

    /// `[seq][layer][T·T]` attention (mean over heads) of the rules' model on `batch` under `choices`.
    fn attention_under(h: &Harness, batch: &Batch, choices: &Choices) -> Vec<Vec<Vec<f32>>> {
        let (b_n, t_n) = (batch.batch_size, batch.seq_len);
        let tokens = h.rules.tokens(&batch.inputs, b_n, t_n, h.dev).unwrap();
        let (_, maps) = h.rules.forward_with_attention_maps(tokens, choices).unwrap();
        host_maps(maps, b_n, t_n).unwrap().0
    }

    /// The reference: run the rule one query at a time, each step reading attention row q of a
    /// parallel forward under the evictions decided so far (rows ≤ q of a causal forward are the
    /// prefix's) — no cache, no decode.
    fn step_by_step(h: &Harness, p: &Prepared, rule: &Baseline) -> Choices {
        let cfg = h.rules.config();
        let (b_n, t_n, l_n) = (p.batch.batch_size, p.batch.seq_len, cfg.n_layers);
        let store = cfg.option_index(rule.store()).unwrap();
        let mut ev = vec![NEVER; b_n * t_n * l_n];
        let mut held = vec![Vec::<usize>::new(); b_n * l_n];
        let mut score = vec![0f64; b_n * l_n * t_n];
        let choices = |ev: &[u32]| Choices::from_fn(b_n, t_n, l_n, |_, _, _| store).with_evictions(ev.to_vec());
        for q in 0..t_n {
            let maps = attention_under(h, &p.batch, &choices(&ev));
            for s in 0..b_n {
                for l in 0..l_n {
                    let row = &maps[s][l][q * t_n..(q + 1) * t_n];
                    let held = &mut held[s * l_n + l];
                    let score = &mut score[(s * l_n + l) * t_n..(s * l_n + l + 1) * t_n];
                    held.push(q);
                    held.iter().for_each(|&k| score[k] += row[k] as f64);
                    let bonus = rule.keep().map(|k| k.per_position(&p.batch.inputs[s * t_n..(s + 1) * t_n]));
                    let (budget, protected) = match *rule {
                        Baseline::Tova { .. } => (rule.budget_at(l, l_n).expect("a TOVA rule"), 0),
                        Baseline::H2o { heavy, recent, .. } => (heavy + recent, recent),
                        _ => unreachable!(),
                    };
                    while held.len() > budget {
                        let by = |k: usize| match (rule, &bonus) {
                            (Baseline::Tova { .. }, Some(bonus)) => (row[k] as f64 + 1e-30).ln() + bonus[k],
                            (Baseline::Tova { .. }, None) => row[k] as f64,
                            _ => score[k],
                        };
                        let oldest_protected = (q + 1).saturating_sub(protected);
                        let Some(i) = (0..held.len())
                            .filter(|&i| held[i] < oldest_protected)
                            .min_by(|&a, &b| by(held[a]).total_cmp(&by(held[b])).then(held[a].cmp(&held[b])))
                        else {
                            break;
                        };
                        ev[(s * t_n + held.remove(i)) * l_n + l] = (q + 1) as u32;
                    }
                }
            }
        }
        choices(&ev)
    }

    /// `envs/mqar-tiny.toml` with an untrained tiny model (vocabulary 64) seeded with `seed`.
    pub(crate) fn untrained_tiny(seed: u64) -> (Device, EnvSpec, Model, Task) {
        let dev = ahr_tpa::device::from_env();
        let env_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envs/mqar-tiny.toml");
        let spec = EnvSpec::load(&env_path).unwrap();
        let cfg = ModelConfig { vocab_size: 64, ..ModelConfig::tiny() };
        dev.seed(seed);
        let model = Model::new(&cfg, &dev);
        let task = ahr_env::load_task(&spec, &env_path, &cfg).unwrap();
        (dev, spec, model, task)
    }

    /// H2O and TOVA scored by their own cache (a decode with evictions) make exactly the decisions
    /// of the rule run query by query over parallel forwards, and differ from the full-cache-scored
    /// variants.
    #[test]
    fn rules_scored_by_their_own_cache_equal_the_step_by_step_rule() {
        let (dev, spec, model, task) = untrained_tiny(11);
        let h = Harness::new(&model, &task, &spec, 4, &dev, true).unwrap();
        let p = &h.prepared[0];
        let rank1 = StoreOption::Rank(1);
        let mut differs = false;
        for scores in [Scores::Cache, Scores::FullCache] {
            for rule in [
                Baseline::Tova {
                    budget: 5,
                    store: StoreOption::Full,
                    scores,
                    decay: 0.0,
                    floor: None,
                    output: false,
                    tier2: None,
                    keep: None,
                    tilt: 0,
                    pooled: None,
                },
                Baseline::H2o { heavy: 3, recent: 2, store: rank1, scores },
            ] {
                let choices = h.rule_choices(p, &rule).unwrap();
                let reference = step_by_step(&h, p, &rule);
                if scores == Scores::Cache {
                    assert_eq!(choices, reference, "{} {}", rule.name(), rule.setting());
                } else {
                    differs |= choices != reference;
                }
            }
        }
        assert!(differs, "scores from the full cache should change some decision on this model");
        // `tova-class`: TOVA with punctuation and whitespace keys kept as if they drew e³ times
        // their weight, the same decisions as the reference comparing log weight plus bonus, and
        // other decisions than TOVA's.
        let tova = Baseline::tova_ema(5, StoreOption::Full, 0.0);
        let class = tova.keeping(ClassBonus { class: ByteClass::NotAlnum, nats: 3.0 });
        let choices = h.rule_choices(p, &class).unwrap();
        assert_eq!(choices, step_by_step(&h, p, &class));
        assert_ne!(choices, h.rule_choices(p, &tova).unwrap(), "the bonus should change some decision");
        assert_eq!(class.family(), Family::TovaClass);
        assert_eq!(class.setting(), "budget=5,not-alnum+3");
        // `tova-layers`: layer 0 keeps 7 keys and layer 1 keeps 3, the same decisions as the
        // reference at each layer's budget; its points are charged what its memory says.
        assert_eq!(h.rules.config().n_layers, 2);
        let layers = tova.tilted(2);
        assert_eq!((layers.budget_at(0, 2), layers.budget_at(1, 2)), (Some(7), Some(3)));
        let choices = h.rule_choices(p, &layers).unwrap();
        assert_eq!(choices, step_by_step(&h, p, &layers));
        let held = |l: usize| (0..h.seq_len()).filter(|&t| choices.evicted_at(0, t, l).is_none()).count();
        assert_eq!((held(0), held(1)), (7, 3), "each layer ends holding its budget");
        assert_eq!(layers.family(), Family::TovaLayers);
        assert_eq!(layers.setting(), "budget=5,tilt=+2");
        assert_eq!(layers.keeping(ClassBonus { class: ByteClass::Space, nats: 0.3 }).family(), Family::TovaClass);
        let point = h.rule_point(&layers).unwrap();
        let memory = layers.memory(h.rules.config(), h.seq_len()).unwrap();
        assert!((point.kv_bytes_per_token - memory).abs() < 1e-9 * memory, "{} vs {memory}", point.kv_bytes_per_token);
        // `tova-pooled`: each stream's two layers share 10 keys — every query sees the pool and
        // the two tokens just written, however the layers split it — at the memory of a budget of
        // 5 per layer, with other decisions than that budget's.
        let pooled = tova.pooling(0.0);
        let choices = h.rule_choices(p, &pooled).unwrap();
        let t_n = h.seq_len();
        for b in 0..p.batch.batch_size {
            for q in 0..t_n {
                let seen = |l: usize| (0..=q).filter(|&t| choices.evicted_at(b, t, l).is_none_or(|e| e > q)).count();
                assert_eq!(seen(0) + seen(1), (2 * (q + 1)).min(12), "stream {b} query {q}");
                assert!(seen(0) >= 1 && seen(1) >= 1);
            }
        }
        assert_ne!(choices, h.rule_choices(p, &tova).unwrap(), "pooling should move some key on this model");
        assert_eq!((pooled.family(), pooled.setting()), (Family::TovaPooled, "budget=5,pooled".to_string()));
        assert_eq!(tova.pooling(-0.5).setting(), "budget=5,pooled-0.5");
        let point = h.rule_point(&pooled).unwrap();
        let memory = pooled.memory(h.rules.config(), t_n).unwrap();
        assert_eq!(memory, tova.memory(h.rules.config(), t_n).unwrap());
        assert!((point.kv_bytes_per_token - memory).abs() < 1e-9 * memory, "{} vs {memory}", point.kv_bytes_per_token);
    }

    /// A two-tier rule (`tova-tiers`) through the harness: its points are charged what its
    /// data-independent memory says (the second tier's keys at their lower rank from the query the
    /// first tier let them go), and its choices carry the demotions of its own-cache run.
    #[test]
    fn a_two_tier_point_is_charged_its_memory() {
        let (dev, spec, model, task) = untrained_tiny(12);
        let h = Harness::new(&model, &task, &spec, 4, &dev, false).unwrap();
        let rule = Baseline::tova_tiers(5, StoreOption::Rank(3), 0.5, 4, StoreOption::Rank(1));
        let choices = h.rule_choices(&h.prepared[0], &rule).unwrap();
        let demoted = (0..h.seq_len()).filter(|&t| choices.demoted_at(0, t, 0).is_some()).count();
        assert!(demoted > h.seq_len() / 2, "the first tier lets most keys go to the second: {demoted}");
        let point = h.rule_point(&rule).unwrap();
        let memory = rule.memory(h.rules.config(), h.seq_len()).unwrap();
        assert!((point.kv_bytes_per_token - memory).abs() < 1e-9 * memory, "{} vs {memory}", point.kv_bytes_per_token);
        let one_tier = Baseline::tova_out(5, StoreOption::Rank(3), 0.5).memory(h.rules.config(), h.seq_len()).unwrap();
        assert!(memory > one_tier, "the second tier holds bytes of its own");
        assert_eq!(rule.family(), Family::TovaTiers);
    }

    /// Points whose earlier layers' choices repeat start their forwards at the last layer (its
    /// input kept from an earlier point) and come out the same bits as points computed afresh:
    /// settings moving only the last layer's options, with an earlier layer's eviction, then one
    /// moving the first layer's.
    #[test]
    fn points_resumed_at_the_last_layer_equal_fresh_ones() {
        let dev = ahr_tpa::device::from_env();
        // The committed tiny MQAR model: trained, so every layer's choices move its loss (a
        // freshly initialised one's attention outputs start at zero).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let run =
            ahr_train::EnvRun::load(&root.join("policies/models/mqar-tiny"), &root.join("envs/mqar-tiny.toml"), &dev);
        let ahr_train::EnvRun { spec, model, task } = run.unwrap();
        let cfg = model.config().clone();
        assert!(cfg.n_layers >= 2);
        let h = Harness::new(&model, &task, &spec, 12, &dev, false).unwrap();
        let (l_n, exact, last) = (cfg.n_layers, cfg.exact_index(), cfg.n_layers - 1);
        let rank1 = cfg.option_index(StoreOption::Rank(1)).unwrap();
        // (first layers' option every third token, their eviction after 5 queries, last layer's option)
        let settings = [
            (exact, false, exact),
            (rank1, true, exact),
            (rank1, true, rank1),
            (rank1, true, 0),
            (rank1, true, exact),
            (exact, false, rank1),
            (rank1, false, rank1),
        ];
        let point = |h: &Harness, &(early, evict, late): &(usize, bool, usize)| {
            h.batch_rule_point("moves", PointKind::Rule(crate::Family::Uniform), "", &|b| {
                let option = |t: usize, l: usize| {
                    if l == last {
                        late
                    } else if t.is_multiple_of(3) {
                        early
                    } else {
                        exact
                    }
                };
                let choices = Choices::from_fn(b.batch_size, b.seq_len, l_n, |_, t, l| option(t, l));
                let ev = (0..b.batch_size * b.seq_len * l_n)
                    .map(|i| {
                        let (t, l) = (i / l_n % b.seq_len, i % l_n);
                        if evict && l < last && t % 2 == 1 { (t + 6) as u32 } else { NEVER }
                    })
                    .collect();
                Ok(choices.with_evictions(ev))
            })
            .unwrap()
        };
        let bits = |p: &Point| {
            let rows = p.per_sequence.iter().map(|m| (m.loss_sum.to_bits(), m.correct, m.count));
            (p.loss.to_bits(), p.metric.to_bits(), p.kv_bytes_per_token.to_bits(), rows.collect::<Vec<_>>())
        };
        for (i, s) in settings.iter().enumerate() {
            let fresh = Harness::new(&model, &task, &spec, 12, &dev, false).unwrap();
            assert_eq!(bits(&point(&h, s)), bits(&point(&fresh, s)), "setting {i}: {s:?}");
        }
        // The check can fail: the earlier layers' options and evictions both move the loss.
        let fresh = Harness::new(&model, &task, &spec, 12, &dev, false).unwrap();
        let loss = |s| bits(&point(&fresh, &s)).0;
        assert_ne!(loss((exact, false, exact)), loss((rank1, false, exact)), "the first layers' options");
        assert_ne!(loss((rank1, true, exact)), loss((rank1, false, exact)), "the first layers' evictions");
        // Two batches (12 sequences in eights): the earlier layers' setting of points 1–4 is met
        // a second time at point 2 (kept there) and read back at 3 and 4; that of points 0 and 5
        // is kept at 5; point 6's is met once.
        let resumed = h.prefixes.lock().unwrap().resumed;
        assert_eq!(resumed, 2 * 2, "forwards started at the last layer");
    }

    /// A policy's per-sequence sums (token-by-token decode in the environment, episodes of
    /// `streams` sequences) and a rule's (parallel forwards, batches of 8) are over the same
    /// held-out sequences in the same order: the exact choice both ways agrees sequence by
    /// sequence, which a paired comparison relies on.
    #[test]
    fn policy_and_rule_points_pair_the_same_sequences() {
        let (dev, spec, model, task) = untrained_tiny(11);
        assert_ne!(spec.env.streams, 8, "the environment should batch differently from the harness");
        let cfg = model.config().clone();
        // 10 sequences: the environment runs 3 rounds of 4 and must count only the first 10.
        let h = Harness::new(&model, &task, &spec, 10, &dev, false).unwrap();
        let exact = cfg.option_index(cfg.exact_option()).unwrap();
        let l_n = cfg.n_layers;
        let (policy, _) = h.env_point("exact", "", &spec, 1, |obs| vec![exact; obs.len * l_n]).unwrap();
        let rule = h.rule_point(&Baseline::Uniform { option: cfg.exact_option() }).unwrap();
        assert_eq!((policy.per_sequence.len(), rule.per_sequence.len()), (10, 10));
        let mut pooled = Metrics::default();
        policy.per_sequence.iter().for_each(|m| pooled.add(m.loss_sum, m.correct, m.count));
        assert!((h.metric().of(&pooled) - policy.metric).abs() < 1e-12, "the point pools the same sequences");
        let close =
            |a: &Metrics, b: &Metrics| a.count == b.count && (a.loss_sum - b.loss_sum).abs() < 1e-3 * b.loss_sum;
        for (i, (a, b)) in policy.per_sequence.iter().zip(&rule.per_sequence).enumerate() {
            assert!(close(a, b), "sequence {i}: {a:?} vs {b:?}");
        }
        // The check can fail: neighbouring sequences differ.
        assert!(!close(&policy.per_sequence[0], &rule.per_sequence[1]));
    }
}
