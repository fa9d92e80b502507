//! What a rank policy does and why (`ahr analyze`).
//!
//! The policy runs deterministically over held-out sequences in the rank environment, and every
//! decision is recorded with what the analysis needs: position, the model's predictive entropy,
//! token id, the task's token role (MQAR: key / value / query / filler) and the sequence's
//! difficulty (MQAR: number of pairs). From those records come the histograms of options per
//! layer and the bytes kept against position, entropy, role or token frequency, and difficulty.
//! Then each meta-feature is replaced by its training mean (the policy's normalisation mean) and
//! the policy is evaluated again (the ablation table; all of them at once leaves the per-token table
//! the policy is at its mean context); a write-time policy is scored against its own per-token table
//! (each token at the option it chose most often, [`AsTable`]); other policies (per-layer mode, say) are
//! evaluated on the same data; the policy is evaluated at longer sequences against the exact
//! choice; and the uniform menu choices give the reference of "no allocation at all".
//!
//! This module computes the statistics ([`Analysis`]); the CLI writes the report and plots.

use std::path::PathBuf;

use ahr_env::{EnvSpec, EpisodeStats, make_env};
use ahr_policy::export::Manifest;
use ahr_policy::obs::LAYER_FEATURES;
use ahr_policy::{ActorCritic, Granularity, ObsBatch};
use ahr_tasks::{Task, TokenRole};
use ahr_tpa::checkpoint::fingerprint;
use ahr_tpa::{Choices, Model, ModelConfig, cost};
use ahr_train::EnvRun;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use crate::harness::Harness;

/// What to analyse.
#[derive(Clone, Debug)]
pub struct AnalyzeArgs {
    /// Model directory.
    pub model: PathBuf,
    /// The per-token policy to explain.
    pub policy: PathBuf,
    /// Further policies (e.g. per-layer mode) evaluated on the same data for comparison.
    pub compare: Vec<PathBuf>,
    /// Env spec (task, streams, reward).
    pub env: PathBuf,
    /// Held-out sequences per evaluation.
    pub sequences: usize,
    /// Sequence-length multipliers for the length-generalisation table (empty: none).
    pub lengths: Vec<usize>,
    /// Skip the feature ablations (one evaluation per feature group).
    pub no_ablation: bool,
}

/// One recorded decision: a token of a held-out sequence.
#[derive(Clone, Debug)]
struct Decision {
    seq: usize,
    t: usize,
    token: u32,
    /// The model's next-token entropy at t / ln V.
    entropy: f32,
    /// Bytes over all layers relative to the exact choice (0…1).
    kept: f64,
    /// Per layer, its bytes relative to the exact choice in that layer (their mean is `kept`).
    kept_by_layer: Vec<f64>,
    /// Per layer, the first query that no longer sees the token because a review dropped it.
    evicted_at: Vec<Option<usize>>,
    options: Vec<usize>,
    role: Option<TokenRole>,
}

/// A bucket of decisions and the mean fraction of exact bytes they keep.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    /// What the bucket holds (`t 0–7`, `key`, `D=16`, …).
    pub label: String,
    /// Decisions (tokens) or sequences in it.
    pub count: usize,
    /// Mean bytes kept relative to the exact choice.
    pub kept: f64,
    /// The same per layer (relative to the exact choice in that layer); empty for buckets of
    /// sequences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_by_layer: Vec<f64>,
    /// Task metric of the bucket's sequences, where it is defined per sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
}

/// One evaluation summarised.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// What was evaluated.
    pub name: String,
    /// Task metric (accuracy, or bits per byte for text).
    pub metric: f64,
    /// Time-averaged KV bytes relative to the exact choice's.
    pub mem_frac: f64,
    /// The peak over the sequence length, relative to the exact choice's bytes per token (the
    /// mean of what each token stores unless options expire).
    pub peak_frac: f64,
    /// Time-averaged KV bytes per token, all layers.
    pub kv_bytes_per_token: f64,
    /// Review decisions (policies with `review`): the share that changed the write-time option
    /// (demoted the token, dropped it, or kept it to a later age and dropped it there); `None`
    /// without reviews.
    pub review_change_rate: Option<f64>,
}

impl Outcome {
    /// A parallel-forward point (a rule's, or decisions replayed) as an outcome named `name`.
    pub(crate) fn of_point(name: &str, p: &crate::harness::Point, exact_bytes: f64) -> Self {
        Self {
            name: name.into(),
            metric: p.metric,
            mem_frac: p.kv_bytes_per_token / exact_bytes,
            peak_frac: p.peak_kv_bytes_per_token / exact_bytes,
            kv_bytes_per_token: p.kv_bytes_per_token,
            review_change_rate: None,
        }
    }
}

/// A feature replaced by its mean.
#[derive(Clone, Debug, Serialize)]
pub struct Ablation {
    /// Feature (group) replaced.
    pub feature: String,
    /// The outcome without it.
    pub outcome: Outcome,
    /// Change of the task metric against the intact policy.
    pub d_metric: f64,
    /// Change of the memory fraction against the intact policy.
    pub d_mem: f64,
    /// Tokens whose decision (in any layer) changed.
    pub changed_decisions: f64,
}

/// What the policy's decisions are worth beyond a per-token table: the decisions replayed through
/// the parallel forward (the judge's scoring of rules), and each token at the option the policy
/// chose most often for it in each layer, read off as many other held-out sequences (the scored
/// ones where the task has no more), scored the same way and paired: what the context adds to
/// the table the policy is, at the memory each holds.
#[derive(Clone, Debug, Serialize)]
pub struct AsTable {
    /// The recorded decisions replayed (a check: the policy's own outcome).
    pub replay: Outcome,
    /// Each (layer, token) at its most common option (ties: the first; tokens the sequences never
    /// hold: the layer's most common option).
    pub table: Outcome,
    /// Decisions (all layers) the table changes.
    pub changed_decisions: f64,
    /// Sequences the table was read off …
    pub read_off: usize,
    /// … other than the scored ones (else the scored ones).
    pub apart: bool,
    /// The replayed policy against the table, sequence by sequence (positive: the policy better).
    pub margin: Option<crate::judge::Paired>,
    /// The per-token table the policy started from (`[policy] prior_table`, when its file is
    /// here), scored on the same sequences: what PPO added to the rule …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<Outcome>,
    /// … the replayed policy against it, sequence by sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_margin: Option<crate::judge::Paired>,
}

/// The policy and the exact choice at a longer sequence length.
#[derive(Clone, Debug, Serialize)]
pub struct LengthRow {
    /// Sequence length.
    pub seq_len: usize,
    /// Multiple of the env's length.
    pub multiple: usize,
    /// The policy.
    pub policy: Outcome,
    /// The exact choice.
    pub exact: Outcome,
}

/// `analysis.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// Metric name.
    pub metric: String,
    /// Whether a larger metric is better.
    pub higher_is_better: bool,
    /// Held-out sequences per evaluation.
    pub sequences: usize,
    /// Sequence length of the env.
    pub seq_len: usize,
    /// The menu.
    pub menu: Vec<String>,
    /// The policy explained.
    pub policy: Outcome,
    /// Uniform menu choices (parallel forward) on the same data.
    pub uniform: Vec<Outcome>,
    /// `[layer][option]` fraction of tokens.
    pub options_by_layer: Vec<Vec<f64>>,
    /// Per layer, the share of decisions that differ from their token id's most common option in
    /// that layer: what no per-token table (a vocabulary rule) reproduces — 0 when the token alone
    /// decides.
    pub beyond_token: Vec<f64>,
    /// Bytes kept by position bucket.
    pub by_position: Vec<Bucket>,
    /// Bytes kept by quintile of the model's predictive entropy.
    pub by_entropy: Vec<Bucket>,
    /// Bytes kept by token role (MQAR) or token-frequency quintile (otherwise).
    pub by_token: Vec<Bucket>,
    /// Bytes kept and metric by sequence difficulty (MQAR: pairs), when the task has one.
    pub by_difficulty: Vec<Bucket>,
    /// Spearman correlation of bytes kept with position, entropy and (per sequence) difficulty.
    pub correlations: Vec<(String, f64)>,
    /// Feature ablations.
    pub ablations: Vec<Ablation>,
    /// The policy against its own per-token table (write-time policies on a vocabulary; `None`
    /// for policies with reviews, whose recorded options are not what a table could write).
    pub as_table: Option<AsTable>,
    /// Other policies on the same data.
    pub compared: Vec<(String, String, Outcome)>,
    /// Length generalisation.
    pub lengths: Vec<LengthRow>,
    /// MQAR: per layer, the share of labelled queries whose value (the latest assignment of the
    /// queried key) the layer still holds when the query comes. Empty without token roles.
    pub values_at_query: Vec<f64>,
    /// Per layer, the share of labelled queries whose value a review dropped before the query
    /// (the rest of the misses were written to expire or dropped at write time).
    pub values_dropped_by_review: Vec<f64>,
    /// Those review drops by the row whose spike brought the value up for review (spike reviews
    /// only): its role and whether it names the value's own key (MQAR key classes, so either
    /// form under aliases), with per layer the share of labelled queries.
    pub review_drop_triggers: Vec<(String, Vec<f64>)>,
    /// A policy started from a per-token table (`[policy] prior_table`, when its file is still
    /// there): per layer, what its decisions do with the table's option for their token.
    pub prior_changes: Vec<PriorChange>,
}

/// How a layer's decisions relate to the per-token table the policy started from.
#[derive(Clone, Debug, Serialize)]
pub struct PriorChange {
    /// The layer.
    pub layer: usize,
    /// Share of the layer's decisions that take another option than the table's for the token
    /// (what the context overrules; 0 for the untrained policy).
    pub changed: f64,
    /// Share of the decisions that take an option holding more bytes than the table's (by
    /// uniform memory over the sequence), …
    pub richer: f64,
    /// … and one holding fewer (`changed` less these two: options of equal memory).
    pub cheaper: f64,
}
/// Analyse a per-token policy on held-out sequences of its env (module docs).
pub fn analyze(a: &AnalyzeArgs, device: &Device) -> Result<Analysis> {
    let dev = device.clone();
    let EnvRun { spec, model, task } = EnvRun::load(&a.model, &a.env, &dev)?;
    let cfg = model.config().clone();
    let fp = fingerprint(&a.model)?;
    let (manifest, net) = ahr_policy::export::load_policy(&a.policy, &cfg, &fp, &dev)?;
    if manifest.evict.is_some() {
        bail!(
            "{}: a learned-eviction policy is analysed by `ahr_eval::eviction::analyze_eviction` (what `ahr analyze` runs for it)",
            a.policy.display()
        );
    }
    spec.check_policy(&manifest).map_err(|e| anyhow::anyhow!("policy {}: {e}", a.policy.display()))?;
    if manifest.granularity != Granularity::PerToken {
        bail!(
            "{}: the token-level report needs a per-token policy; pass per-layer policies with --compare",
            a.policy.display()
        );
    }
    let compared_policies = a
        .compare
        .iter()
        .map(|d| Ok((d.clone(), ahr_policy::export::load_policy(d, &cfg, &fp, &dev)?)))
        .collect::<Result<Vec<_>>>()?;

    let metric_of = |loss: f64, acc: f64| task.metric().value(loss, acc);
    let mut pspec = spec.for_policy(&manifest);
    pspec.env.granularity = Granularity::PerToken;
    let global = ahr_policy::obs::global_features(manifest.obs.version)
        .ok_or_else(|| anyhow::anyhow!("observation version {} is unknown", manifest.obs.version))?;
    let streams = pspec.env.streams;
    let sequences = a.sequences.min(task.valid_examples()).max(1).div_ceil(streams) * streams;
    let seq_len = task.valid_batch(0, 1).seq_len;
    let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
    let l_n = cfg.n_layers;
    let review_dim = manifest.review.map_or(0, |at| at.features().len() * at.stages() * l_n);
    let dim = global.len() + LAYER_FEATURES.len() * l_n + review_dim;
    let window = manifest.policy.window.max(1);
    let run = Runner { model: &model, net: &net, manifest: &manifest, dev: &dev, dim, window };

    // 1. The policy, every decision recorded; for a write-time policy's own table (`as_table`)
    // over as many held-out sequences again where the task has them.
    eprintln!("analyze: policy over {sequences} held-out sequences");
    let tabled = manifest.review.is_none() && cfg.vocab_size > 0;
    let apart = tabled && task.valid_examples() >= 2 * sequences;
    let (mut stats, mut decisions) = run.record(&task, &pspec, if apart { 2 * sequences } else { sequences }, None)?;
    stats.truncate(sequences);
    let more = decisions.split_off(sequences * seq_len);
    let policy = summarise("policy", &stats, exact_bytes, metric_of);
    let difficulty = annotate(&mut decisions, &task, streams, seq_len);
    let key_class = |x: u32| match &spec.task {
        ahr_tasks::TaskConfig::Mqar(m) => m.key_class(x),
        _ => x,
    };
    let spike = manifest.review.is_some_and(|at| at.age().is_none());
    let held = values_at_query(&decisions, &task, streams, seq_len, &cfg, spike.then_some(&key_class));
    let (values_at_query, values_dropped_by_review, review_drop_triggers) = held;
    let baseline_options: Vec<Vec<usize>> = decisions.iter().map(|d| d.options.clone()).collect();

    // The per-token table the policy started from (`[token][layer]` menu indices).
    let prior = match &manifest.policy.prior_table {
        Some(path) if std::path::Path::new(path).is_file() => {
            let table = ahr_policy::PriorTable::load(std::path::Path::new(path)).map_err(anyhow::Error::msg)?;
            let names: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
            Some(table.resolve(&names, l_n, cfg.vocab_size).map_err(anyhow::Error::msg)?)
        }
        Some(path) => {
            eprintln!("analyze: the policy's prior table {path} is not here; no comparison with it");
            None
        }
        None => None,
    };
    let prior_changes = prior.as_ref().map_or_else(Vec::new, |p| prior_changes(&decisions, p, &cfg, seq_len));

    // 2. Uniform choices on the same sequences (parallel forward).
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let uniform = uniform_outcomes(&h, &cfg.menu, exact_bytes)?;
    let as_table = match tabled {
        true => {
            // The table is read off the next `sequences` held-out sequences where the task has
            // them (else off the scored ones).
            let read_off = if apart { &more[..] } else { &decisions[..] };
            let t = as_table(&h, &decisions, read_off, apart, &cfg, exact_bytes, prior.as_deref())?;
            eprintln!(
                "  as a table: replayed {:.4} at mem {:.3}; its own table {:.4} at mem {:.3}, {:.1}% of decisions changed",
                t.replay.metric,
                t.replay.mem_frac,
                t.table.metric,
                t.table.mem_frac,
                100.0 * t.changed_decisions
            );
            if let Some(p) = &t.prior {
                eprintln!("  the table it started from: {:.4} at mem {:.3}", p.metric, p.mem_frac);
            }
            Some(t)
        }
        false => None,
    };

    // 3. Histograms and correlations.
    let menu: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
    let mut options_by_layer = vec![vec![0f64; menu.len()]; l_n];
    for d in &decisions {
        for (l, &o) in d.options.iter().enumerate() {
            options_by_layer[l][o] += 1.0 / decisions.len() as f64;
        }
    }
    let beyond_token = beyond_token(&decisions, l_n, cfg.vocab_size, menu.len());
    let by_position = position_buckets(&decisions, seq_len);
    let by_entropy = quantile_buckets(&decisions, |d| d.entropy as f64, "entropy");
    let by_token = if decisions.iter().any(|d| d.role.is_some()) {
        TokenRole::ALL
            .iter()
            .filter_map(|&r| bucket(r.name().into(), decisions.iter().filter(|d| d.role == Some(r))))
            .collect()
    } else {
        let mut freq = vec![0usize; cfg.vocab_size];
        for d in &decisions {
            freq[d.token as usize] += 1;
        }
        quantile_buckets(&decisions, |d| freq[d.token as usize] as f64, "frequency")
    };
    let by_difficulty = difficulty_buckets(&stats, &difficulty, metric_of);
    let mut correlations = vec![
        ("position".to_string(), spearman(&decisions.iter().map(|d| (d.t as f64, d.kept)).collect::<Vec<_>>())),
        ("entropy".to_string(), spearman(&decisions.iter().map(|d| (d.entropy as f64, d.kept)).collect::<Vec<_>>())),
    ];
    let pairs: Vec<(f64, f64)> =
        stats.iter().zip(&difficulty).filter_map(|(e, d)| d.map(|d| (d as f64, e.mem_frac))).collect();
    if by_difficulty.len() > 1 {
        correlations.push(("difficulty (per sequence)".into(), spearman(&pairs)));
    }

    // 4. Ablations: each feature group replaced by its mean; the token id by token 0.
    let mut ablations = Vec::new();
    if !a.no_ablation {
        let mut groups: Vec<(String, Vec<usize>, bool)> =
            global.iter().enumerate().map(|(i, f)| (f.to_string(), vec![i], false)).collect();
        for (k, f) in LAYER_FEATURES.iter().enumerate() {
            let idx = (0..l_n).map(|l| global.len() + l * LAYER_FEATURES.len() + k).collect();
            groups.push((format!("{f} (all layers)"), idx, false));
        }
        if let Some(at) = manifest.review {
            // The hindsight features: each across layers, then all of them at once.
            // (A chain's, each across its ages too.)
            let base = global.len() + LAYER_FEATURES.len() * l_n;
            let (per, heads) = (at.features().len(), at.stages() * l_n);
            for (k, f) in at.features().iter().enumerate().skip(2) {
                groups.push((format!("{f} (all layers)"), (0..heads).map(|h| base + h * per + k).collect(), false));
            }
            let all = (0..heads).flat_map(|h| (2..per).map(move |k| base + h * per + k)).collect();
            groups.push(("hindsight: attention received (all)".into(), all, false));
        }
        if manifest.dims.vocab_size > 0 {
            groups.push(("token id".into(), vec![], true));
            // Every meta-feature at once: the policy as the per-token table it is at its mean
            // context (review features left as they are).
            let context = (0..global.len() + LAYER_FEATURES.len() * l_n).collect();
            groups.push(("context: every feature but the token id".into(), context, false));
        }
        for (name, idx, token) in groups {
            let (st, dec) = run.record(&task, &pspec, sequences, Some((&idx, token)))?;
            let outcome = summarise(&name, &st, exact_bytes, metric_of);
            let changed = dec.iter().zip(&baseline_options).filter(|(d, o)| d.options != **o).count() as f64
                / dec.len().max(1) as f64;
            eprintln!(
                "  ablate {name:<28} {} {:.4}  mem {:.3}  changed {:.1}%",
                task.metric().name(),
                outcome.metric,
                outcome.mem_frac,
                100.0 * changed
            );
            ablations.push(Ablation {
                feature: name,
                d_metric: outcome.metric - policy.metric,
                d_mem: outcome.mem_frac - policy.mem_frac,
                outcome,
                changed_decisions: changed,
            });
        }
    }

    // 5. Other policies on the same data.
    let mut compared = Vec::new();
    for (dir, (m, n)) in &compared_policies {
        let s = spec.for_policy(m);
        let other = Runner { net: n, manifest: m, window: m.policy.window.max(1), ..run };
        let st = other.evaluate(&task, &s, sequences)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mode = match m.granularity {
            Granularity::PerToken => "per-token",
            Granularity::PerLayer => "per-layer",
        };
        compared.push((name.clone(), mode.to_string(), summarise(&name, &st, exact_bytes, metric_of)));
    }

    // 6. Length generalisation.
    let mut lengths = Vec::new();
    for &m in &a.lengths {
        let long = seq_len * m;
        let long_task = Task::load(&spec.task.with_seq_len(long)?)
            .with_context(|| format!("the task at {long} tokens ({m}× the env's length)"))?;
        let n = sequences.min(long_task.valid_examples()).max(1);
        let st = run.evaluate(&long_task, &pspec, n)?;
        let mut espec = spec.clone();
        espec.env.granularity = Granularity::PerToken;
        espec.reward.budget = None;
        let exact = cfg.exact_index();
        let est =
            ahr_env::evaluate_rule(&model, &long_task, &espec, 1, Some(n), &dev, |obs| vec![exact; obs.len * l_n])?;
        let row = LengthRow {
            seq_len: long,
            multiple: m,
            policy: summarise("policy", &st, exact_bytes, metric_of),
            exact: Outcome {
                name: "exact".into(),
                metric: metric_of(est.task_loss, est.accuracy),
                mem_frac: est.mem_frac,
                peak_frac: est.peak_frac,
                kv_bytes_per_token: est.kv_bytes_per_token,
                review_change_rate: None,
            },
        };
        eprintln!(
            "  length {long}: policy {:.4} at mem {:.3}; exact {:.4}",
            row.policy.metric, row.policy.mem_frac, row.exact.metric
        );
        lengths.push(row);
    }

    let analysis = Analysis {
        metric: task.metric().name().into(),
        higher_is_better: task.metric().higher_is_better(),
        sequences,
        seq_len,
        menu,
        policy,
        uniform,
        options_by_layer,
        beyond_token,
        by_position,
        by_entropy,
        by_token,
        by_difficulty,
        correlations,
        ablations,
        as_table,
        compared,
        lengths,
        values_at_query,
        values_dropped_by_review,
        review_drop_triggers,
        prior_changes,
    };
    Ok(analysis)
}

/// Per layer, the share of decisions off their token's most common option ([`modal_table`]).
fn beyond_token(decisions: &[Decision], layers: usize, vocab: usize, options: usize) -> Vec<f64> {
    let table = modal_table(decisions, layers, vocab, options);
    (0..layers)
        .map(|l| {
            let off = decisions.iter().filter(|d| d.options[l] != table[l * vocab + d.token as usize]).count();
            off as f64 / decisions.len().max(1) as f64
        })
        .collect()
}

/// Per layer, the decisions' departures from the table `prefer` (`[token][layer]` menu indices),
/// options ordered by their uniform memory over a `seq_len`-token sequence.
fn prior_changes(
    decisions: &[Decision],
    prefer: &[usize],
    cfg: &ahr_tpa::ModelConfig,
    seq_len: usize,
) -> Vec<PriorChange> {
    let l_n = cfg.n_layers;
    let bytes = cost::uniform_bytes_per_token(cfg, seq_len);
    let n = decisions.len().max(1) as f64;
    (0..l_n)
        .map(|l| {
            let (mut changed, mut richer, mut cheaper) = (0usize, 0usize, 0usize);
            for d in decisions {
                let (o, want) = (d.options[l], prefer[d.token as usize * l_n + l]);
                if o != want {
                    changed += 1;
                    richer += (bytes[o] > bytes[want]) as usize;
                    cheaper += (bytes[o] < bytes[want]) as usize;
                }
            }
            PriorChange {
                layer: l,
                changed: changed as f64 / n,
                richer: richer as f64 / n,
                cheaper: cheaper as f64 / n,
            }
        })
        .collect()
}

/// A policy with what it needs to act, and optionally with features masked.
#[derive(Clone, Copy)]
struct Runner<'a> {
    model: &'a Model,
    net: &'a ActorCritic,
    manifest: &'a Manifest,
    dev: &'a burn::tensor::Device,
    dim: usize,
    window: usize,
}

impl Runner<'_> {
    fn act(&self, obs: &ObsBatch, ablate: Option<(&[usize], bool)>) -> Vec<usize> {
        let Some((idx, token)) = ablate else {
            return self.net.act_deterministic(obs, &self.manifest.norm, self.dev);
        };
        let mut o = obs.clone();
        let per = o.features.len() / o.len.max(1);
        for r in 0..o.len {
            for slot in 0..per / self.dim {
                for &i in idx {
                    let j = slot * self.dim + i;
                    o.features[r * per + j] = self.manifest.norm.mean[j] as f32;
                }
            }
        }
        if token {
            o.tokens.iter_mut().for_each(|x| *x = 0);
        }
        self.net.act_deterministic(&o, &self.manifest.norm, self.dev)
    }

    fn evaluate(&self, task: &Task, spec: &EnvSpec, sequences: usize) -> Result<Vec<EpisodeStats>> {
        let episodes = sequences.div_ceil(spec.env.streams) * spec.env.streams;
        let mut env = make_env(self.model, task, spec, true, self.window, self.dev);
        Ok(ahr_env::run_episodes(env.as_mut(), episodes, 0, |obs| self.act(obs, None))?)
    }

    /// Run a per-token policy and record every decision (the newest feature slot of each row).
    fn record(
        &self,
        task: &Task,
        spec: &EnvSpec,
        sequences: usize,
        ablate: Option<(&[usize], bool)>,
    ) -> Result<(Vec<EpisodeStats>, Vec<Decision>)> {
        let cfg = self.model.config();
        let streams = spec.env.streams;
        let episodes = sequences.div_ceil(streams) * streams;
        let len = task.valid_batch(0, 1).seq_len;
        let exact_bytes = cost::exact_bytes_per_token(cfg) as f64;
        let entropy_idx = ahr_policy::obs::global_features(self.manifest.obs.version)
            .and_then(|g| g.iter().position(|f| *f == "pred_entropy"))
            .expect("a loaded policy's observation version is known");
        let l_n = cfg.n_layers;
        let mut env = make_env(self.model, task, spec, true, self.window, self.dev);
        let mut decisions = Vec::with_capacity(episodes * len);
        // Review actions: (sequence, position of the token reviewed, layer, its option after
        // review), in the order taken (a chain's later review overrides an earlier one).
        let mut reviews: Vec<(usize, usize, usize, usize)> = Vec::new();
        let ages = self.manifest.review.map(|at| at.stage_ages()).unwrap_or_default();
        let review_base = ahr_policy::obs::global_features(self.manifest.obs.version).map_or(0, <[_]>::len)
            + LAYER_FEATURES.len() * l_n;
        let review_per = self.manifest.review.map_or(0, |at| at.features().len());
        let mut calls = 0usize;
        let stats = ahr_env::run_episodes(env.as_mut(), episodes, 0, |obs| {
            let actions = self.act(obs, ablate);
            let (episode, t) = (calls / len, calls % len);
            calls += 1;
            let per = obs.features.len() / obs.len.max(1);
            let heads = actions.len() / obs.len.max(1);
            for r in 0..obs.len {
                let newest = &obs.features[r * per + per - self.dim..(r + 1) * per];
                let row = &actions[r * heads..(r + 1) * heads];
                // A token under review at an age shows `review_present`; the others (none, or not
                // reviewable) keep their option.
                for (stage, &a) in ages.iter().enumerate().filter(|&(_, &a)| t >= a) {
                    for l in 0..l_n {
                        let head = stage * l_n + l;
                        if newest[review_base + head * review_per] == 1.0 {
                            reviews.push((episode * streams + r, t - a, l, row[l_n + head]));
                        }
                    }
                }
                decisions.push(Decision {
                    seq: episode * streams + r,
                    t,
                    token: obs.tokens.get(r).copied().unwrap_or(0),
                    entropy: newest[entropy_idx],
                    kept: 0.0,
                    kept_by_layer: Vec::new(),
                    evicted_at: Vec::new(),
                    options: row[..l_n].to_vec(),
                    role: None,
                });
            }
            actions
        })?;
        if decisions.len() != episodes * len {
            bail!("recorded {} decisions for {episodes} sequences of {len} tokens", decisions.len());
        }
        decisions.sort_by_key(|d| (d.seq, d.t));
        // A review's action is the option its token ends with (the policy acts within the masks,
        // which allow only the token's own option where it cannot change).
        for (seq, t, l, option) in reviews {
            decisions[seq * len + t].options[l] = option;
        }
        // What each token stores over the rest of the sequence, as a share of keeping it exact
        // (timed options and reviews let go or demote).
        // Spike reviews drop a token at a moment of its own: its write option (the decision's)
        // held until then.
        let mut evicted: std::collections::HashMap<(usize, usize, usize), usize> = Default::default();
        for (seq, e) in stats.iter().enumerate() {
            for &(l, t, at) in &e.evictions {
                evicted.insert((seq, t, l), at);
            }
        }
        let exact_layer = exact_bytes / l_n as f64;
        for d in &mut decisions {
            d.evicted_at = (0..l_n).map(|l| evicted.get(&(d.seq, d.t, l)).copied()).collect();
            d.kept_by_layer = d
                .options
                .iter()
                .enumerate()
                .map(|(l, &o)| {
                    let steps = cost::byte_steps(cfg, cfg.menu[o], d.t, len, d.evicted_at[l]);
                    steps as f64 / (len - d.t) as f64 / exact_layer
                })
                .collect();
            d.kept = d.kept_by_layer.iter().sum::<f64>() / l_n as f64;
        }
        Ok((stats, decisions))
    }
}

/// Per layer: the share of labelled queries whose value the layer still holds at the query, the
/// share whose value a review dropped before it, and (with `key_class`: spike reviews) those drops
/// by the row whose spike triggered them — a spike on row r is reviewed at step r + 1 and the token
/// is gone from query r + 2 on, so the trigger is `evicted_at − 2`. The decisions are sorted by
/// sequence, then position; held-out episode e is held-out batch e of `streams`. Empty when the
/// task has no token roles.
type HeldAtQuery = (Vec<f64>, Vec<f64>, Vec<(String, Vec<f64>)>);
fn values_at_query(
    decisions: &[Decision],
    task: &Task,
    streams: usize,
    len: usize,
    cfg: &ModelConfig,
    key_class: Option<&dyn Fn(u32) -> u32>,
) -> HeldAtQuery {
    let l_n = cfg.n_layers;
    // Per layer: held at the query; held as written (no review counted); queries.
    let mut counts = vec![(0usize, 0usize, 0usize); l_n];
    let mut triggers: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (e, episode) in decisions.chunks(streams * len).enumerate() {
        let b = task.valid_batch(e as u64, streams);
        if b.roles.is_empty() {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        for (r, seq) in episode.chunks(len).enumerate() {
            let cells = r * len..(r + 1) * len;
            let (inputs, roles) = (&b.inputs[cells.clone()], &b.roles[cells.clone()]);
            let pairs = query_values(inputs, &b.labels[cells.clone()], roles);
            for (l, count) in counts.iter_mut().enumerate() {
                for &(p, q) in &pairs {
                    let written = cost::bytes_at(cfg, cfg.menu[seq[p].options[l]], p, q) > 0;
                    let evicted = seq[p].evicted_at[l].filter(|&at| at <= q);
                    *count = (
                        count.0 + usize::from(written && evicted.is_none()),
                        count.1 + usize::from(written),
                        count.2 + 1,
                    );
                    if let (Some(class), Some(at)) = (key_class, evicted.filter(|_| written)) {
                        let label = trigger_label(inputs, roles, class, p, at.saturating_sub(2));
                        triggers.entry(label).or_insert_with(|| vec![0; l_n])[l] += 1;
                    }
                }
            }
        }
    }
    let share = |x: usize, n: usize| x as f64 / n.max(1) as f64;
    let triggers = triggers
        .into_iter()
        .map(|(label, per)| (label, per.iter().zip(&counts).map(|(&x, c)| share(x, c.2)).collect()))
        .collect();
    let (held, dropped) = counts.into_iter().map(|(h, w, n)| (share(h, n), share(w - h, n))).unzip();
    (held, dropped, triggers)
}

/// What the row at `row` is to the value at `p` (its key at `p − 1`): its role, and for keys,
/// queries and stale assignments whether it names the value's own key (by `class`).
fn trigger_label(inputs: &[u32], roles: &[TokenRole], class: &dyn Fn(u32) -> u32, p: usize, row: usize) -> String {
    match roles[row] {
        role @ (TokenRole::Key | TokenRole::Query | TokenRole::Stale) => {
            let own = p > 0 && class(inputs[row]) == class(inputs[p - 1]);
            format!("{} ({})", role.name(), if own { "its key" } else { "another" })
        }
        role => role.name().to_string(),
    }
}

/// One MQAR sequence's labelled queries with their values: `(p, q)` for the query at q whose
/// value token sits at p — the latest assignment's value token before q that equals its label
/// (values are distinct within a sequence; filler that happens to equal one is not a value).
pub fn query_values(inputs: &[u32], labels: &[i64], roles: &[TokenRole]) -> Vec<(usize, usize)> {
    labels
        .iter()
        .enumerate()
        .filter(|&(_, &y)| y != ahr_tasks::IGNORE)
        .filter_map(|(q, &y)| {
            (0..q)
                .rev()
                .find(|&p| matches!(roles[p], TokenRole::Value | TokenRole::Stale) && i64::from(inputs[p]) == y)
                .map(|p| (p, q))
        })
        .collect()
}

/// Add the task's token roles to the decisions (sorted by sequence, then position) and return
/// each sequence's difficulty; held-out episode e is held-out batch e of `streams`.
fn annotate(decisions: &mut [Decision], task: &Task, streams: usize, len: usize) -> Vec<Option<usize>> {
    let mut difficulty = Vec::new();
    for (e, episode) in decisions.chunks_mut(streams * len).enumerate() {
        let b = task.valid_batch(e as u64, streams);
        if !b.roles.is_empty() {
            for d in episode {
                d.role = Some(b.roles[(d.seq % streams) * len + d.t]);
            }
        }
        difficulty.extend(b.difficulty);
    }
    difficulty
}

fn summarise(name: &str, stats: &[EpisodeStats], exact_bytes: f64, metric_of: impl Fn(f64, f64) -> f64) -> Outcome {
    let n = stats.len().max(1) as f64;
    let mean = |f: &dyn Fn(&EpisodeStats) -> f64| stats.iter().map(f).sum::<f64>() / n;
    // Time-averaged bytes (the one memory measure) and the metric pooled over labelled positions.
    let mem_frac = mean(&|e| e.mem_frac);
    let pooled = EpisodeStats::pooled(stats);
    let (loss, accuracy) = (pooled.loss(), pooled.accuracy());
    Outcome {
        name: name.into(),
        metric: metric_of(loss, accuracy),
        mem_frac,
        peak_frac: mean(&|e| e.peak_frac),
        kv_bytes_per_token: mem_frac * exact_bytes,
        review_change_rate: {
            let reviews: u64 = stats.iter().map(|e| e.reviews).sum();
            (reviews > 0).then(|| stats.iter().map(|e| e.review_changes).sum::<u64>() as f64 / reviews as f64)
        },
    }
}

fn bucket<'a>(label: String, items: impl Iterator<Item = &'a Decision>) -> Option<Bucket> {
    let (mut count, mut sum, mut by_layer) = (0usize, 0f64, Vec::<f64>::new());
    for d in items {
        count += 1;
        sum += d.kept;
        by_layer.resize(d.kept_by_layer.len(), 0.0);
        by_layer.iter_mut().zip(&d.kept_by_layer).for_each(|(a, k)| *a += k);
    }
    let kept_by_layer = by_layer.into_iter().map(|x| x / count.max(1) as f64).collect();
    (count > 0).then(|| Bucket { label, count, kept: sum / count as f64, kept_by_layer, metric: None })
}

/// At most 16 equal position ranges.
fn position_buckets(decisions: &[Decision], len: usize) -> Vec<Bucket> {
    let width = len.div_ceil(16).max(1);
    (0..len.div_ceil(width))
        .filter_map(|i| {
            let (lo, hi) = (i * width, ((i + 1) * width).min(len));
            bucket(format!("{lo}–{}", hi - 1), decisions.iter().filter(|d| (lo..hi).contains(&d.t)))
        })
        .collect()
}

/// Five quantile buckets of `key` (ties stay together, so there may be fewer).
fn quantile_buckets(decisions: &[Decision], key: impl Fn(&Decision) -> f64, what: &str) -> Vec<Bucket> {
    let mut keys: Vec<f64> = decisions.iter().map(&key).collect();
    keys.sort_by(f64::total_cmp);
    if keys.is_empty() {
        return Vec::new();
    }
    let mut edges: Vec<f64> = (1..5).map(|q| keys[q * keys.len() / 5]).collect();
    edges.dedup();
    let mut out = Vec::new();
    let mut lo = f64::NEG_INFINITY;
    for hi in edges.into_iter().chain([f64::INFINITY]) {
        let inside: Vec<&Decision> = decisions.iter().filter(|d| (lo..hi).contains(&key(d))).collect();
        let (a, b) = inside.iter().map(|d| key(d)).fold((f64::MAX, f64::MIN), |(a, b), k| (a.min(k), b.max(k)));
        let label = if a.fract() == 0.0 && b.fract() == 0.0 {
            format!("{what} {a:.0}–{b:.0}")
        } else {
            format!("{what} {a:.3}–{b:.3}")
        };
        if let Some(bk) = bucket(label, inside.into_iter()) {
            out.push(bk);
        }
        lo = hi;
    }
    out
}

fn difficulty_buckets(
    stats: &[EpisodeStats],
    difficulty: &[Option<usize>],
    metric_of: impl Fn(f64, f64) -> f64,
) -> Vec<Bucket> {
    let mut ds: Vec<usize> = difficulty.iter().flatten().copied().collect();
    ds.sort_unstable();
    ds.dedup();
    ds.into_iter()
        .map(|d| {
            let seqs: Vec<&EpisodeStats> =
                stats.iter().zip(difficulty).filter(|(_, x)| **x == Some(d)).map(|(e, _)| e).collect();
            let n = seqs.len() as f64;
            let loss = seqs.iter().map(|e| e.task_loss).sum::<f64>() / n;
            let acc = seqs.iter().map(|e| e.accuracy).sum::<f64>() / n;
            Bucket {
                label: format!("D={d}"),
                count: seqs.len(),
                kept: seqs.iter().map(|e| e.mem_frac).sum::<f64>() / n,
                kept_by_layer: Vec::new(),
                metric: Some(metric_of(loss, acc)),
            }
        })
        .collect()
}

/// Ranks with ties averaged (1-based).
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson on tie-averaged ranks); 0 when either side is constant.
pub fn spearman(pairs: &[(f64, f64)]) -> f64 {
    let x = ranks(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let y = ranks(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let n = x.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 { 0.0 } else { cov / (vx * vy).sqrt() }
}

/// Every option of the env's `menu` for every token and layer, as the judge runs it: rules index
/// the menu with its demotion schedules added (sorted), where the env's options sit at other
/// indices than in `menu`.
fn uniform_outcomes(h: &Harness, menu: &[ahr_tpa::StoreOption], exact_bytes: f64) -> Result<Vec<Outcome>> {
    menu.iter()
        .map(|&option| {
            Ok(Outcome::of_point(
                &format!("uniform:{option}"),
                &h.rule_point(&crate::Baseline::Uniform { option })?,
                exact_bytes,
            ))
        })
        .collect()
}

/// Per layer and token id, the option `decisions` take most often (`[layer * vocab + token]`,
/// indices into a menu of `options`; ties: the first; a token without decisions: the layer's most
/// common option).
fn modal_table(decisions: &[Decision], layers: usize, vocab: usize, options: usize) -> Vec<usize> {
    let first_max = |c: &[usize]| (0..c.len()).fold(0, |best, o| if c[o] > c[best] { o } else { best });
    (0..layers)
        .flat_map(|l| {
            let mut counts = vec![0usize; vocab * options];
            let mut all = vec![0usize; options];
            for d in decisions {
                counts[d.token as usize * options + d.options[l]] += 1;
                all[d.options[l]] += 1;
            }
            let fallback = first_max(&all);
            counts
                .chunks(options)
                .map(|c| if c.iter().any(|&n| n > 0) { first_max(c) } else { fallback })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The policy's recorded `decisions` (sorted by sequence, then position, over `h`'s sequences),
/// its own per-token table read off `read_off` (`apart`: other sequences than `h`'s) and the table
/// `prior` it started from (`[token][layer]` menu indices), all through the parallel forward
/// ([`AsTable`]).
fn as_table(
    h: &Harness,
    decisions: &[Decision],
    read_off: &[Decision],
    apart: bool,
    cfg: &ModelConfig,
    exact_bytes: f64,
    prior: Option<&[usize]>,
) -> Result<AsTable> {
    let (l_n, vocab, t_n) = (cfg.n_layers, cfg.vocab_size, h.seq_len());
    if decisions.len() < h.batches().map(|b| b.batch_size).sum::<usize>() * t_n {
        bail!("recorded {} decisions, fewer than the held-out sequences hold", decisions.len());
    }
    // The environment's held-out episodes are the harness's sequences, in order.
    let inputs = h.batches().flat_map(|b| b.inputs.iter().copied());
    if let Some(i) = inputs.zip(decisions).position(|(x, d)| x != d.token) {
        bail!("the recorded decisions' token {i} is not the held-out sequences' (the replay would be misaligned)");
    }
    // The harness scores on the rules' menu (timed stores sorted in among the policy's options).
    let rcfg = h.rules.config();
    let to_rules =
        cfg.menu.iter().map(|&o| rcfg.option_index(o).map_err(anyhow::Error::msg)).collect::<Result<Vec<_>>>()?;
    let table = modal_table(read_off, l_n, vocab, cfg.menu.len());
    let offset = std::cell::Cell::new(0usize);
    let replay = h.batch_rule_point("replay", crate::harness::PointKind::Policy, "", &|b| {
        let first = offset.replace(offset.get() + b.batch_size);
        Ok(Choices::from_fn(b.batch_size, b.seq_len, l_n, |s, t, l| {
            to_rules[decisions[(first + s) * t_n + t].options[l]]
        }))
    })?;
    let tabled = h.batch_rule_point("table", crate::harness::PointKind::Policy, "", &|b| {
        Ok(Choices::from_fn(b.batch_size, b.seq_len, l_n, |s, t, l| {
            to_rules[table[l * vocab + b.inputs[s * b.seq_len + t] as usize]]
        }))
    })?;
    let started = match prior {
        Some(p) => {
            let in_rules: Vec<usize> = p.iter().map(|&o| to_rules[o]).collect();
            Some(h.table_point("prior", crate::harness::PointKind::Policy, "", &in_rules)?)
        }
        None => None,
    };
    let scored = &decisions[..offset.get() * t_n];
    let changed =
        scored.iter().filter(|d| (0..l_n).any(|l| d.options[l] != table[l * vocab + d.token as usize])).count();
    Ok(AsTable {
        replay: Outcome::of_point("replay", &replay, exact_bytes),
        table: Outcome::of_point("table", &tabled, exact_bytes),
        changed_decisions: changed as f64 / scored.len().max(1) as f64,
        read_off: read_off.len() / t_n,
        apart,
        margin: crate::judge::paired(&replay.per_sequence, &tabled.per_sequence, h.metric()),
        prior: started.as_ref().map(|p| Outcome::of_point("prior", p, exact_bytes)),
        prior_margin: started.and_then(|p| crate::judge::paired(&replay.per_sequence, &p.per_sequence, h.metric())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modal_table_takes_each_tokens_most_common_option_per_layer() {
        let d = |token: u32, options: [usize; 2]| Decision {
            seq: 0,
            t: 0,
            token,
            entropy: 0.0,
            kept: 0.0,
            kept_by_layer: Vec::new(),
            evicted_at: Vec::new(),
            options: options.to_vec(),
            role: None,
        };
        // Token 0: layer 0 takes 2, 2, 1 → 2; layer 1 takes 0, 1, 1 → 1. Token 1: a tie 1 / 0
        // in layer 0 → the first option of equals (0); layer 1 → 0. Token 2 is never seen.
        let decisions = [d(0, [2, 0]), d(0, [2, 1]), d(0, [1, 1]), d(1, [1, 0]), d(1, [0, 0])];
        // Layer 0 over all: option 0 once, 1 twice, 2 twice → 1 (the first of equals);
        // layer 1: 0 three times → 0.
        assert_eq!(modal_table(&decisions, 2, 3, 3), [2, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn spearman_matches_hand_computed_values() {
        let up: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, (i * i) as f64)).collect();
        assert!((spearman(&up) - 1.0).abs() < 1e-12);
        let down: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, -(i as f64).exp())).collect();
        assert!((spearman(&down) + 1.0).abs() < 1e-12);
        // x = 1 2 3 4, y = 1 3 2 4: ranks differ by d = 0, 1, 1, 0 → ρ = 1 − 6·2 / (4·15) = 0.8.
        let p = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, 4.0)];
        assert!((spearman(&p) - 0.8).abs() < 1e-12);
        // Ties get averaged ranks: y = 0 0 1 1 against x = 1 2 3 4 → ρ = 0.894427…
        let t = [(1.0, 0.0), (2.0, 0.0), (3.0, 1.0), (4.0, 1.0)];
        assert!((spearman(&t) - 2.0 / 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&[(1.0, 2.0), (2.0, 2.0)]), 0.0);
    }

    fn decision(t: usize, kept: f64, entropy: f32) -> Decision {
        // Two layers: the first keeps twice what the second does, `kept` their mean.
        let kept_by_layer = vec![kept * 4.0 / 3.0, kept * 2.0 / 3.0];
        let evicted_at = vec![None, None];
        Decision { seq: 0, t, token: t as u32, entropy, kept, kept_by_layer, evicted_at, options: vec![0], role: None }
    }

    #[test]
    fn a_query_finds_its_latest_value_not_filler_that_equals_it() {
        use TokenRole::{Filler, Key, Query, Stale, Value};
        let i = ahr_tasks::IGNORE;
        // k=1 v=5 | filler 7 | k=1 v=7 (re-assignment) | filler 5 | query 1 → 7
        let inputs = [1, 5, 7, 1, 7, 5, 1];
        let roles = [Stale, Stale, Filler, Key, Value, Filler, Query];
        let labels = [i, i, i, i, i, i, 7];
        // The value of the query at 6 is the 7 at position 4, not the filler 7 at 2.
        assert_eq!(query_values(&inputs, &labels, &roles), vec![(4, 6)]);
        // No labelled position: nothing counted.
        assert!(query_values(&inputs, &[i; 7], &roles).is_empty());
    }

    #[test]
    fn a_review_drop_is_labelled_by_the_row_that_triggered_it() {
        use TokenRole::{Filler, Key, Query, Stale, Value};
        // Key 5 (its other form 9) holds 20 at 1; 7 → 21 at 3; filler; 9 asked at 6.
        let inputs = [1, 5, 20, 7, 21, 30, 9, 20];
        let roles = [Filler, Key, Value, Key, Value, Filler, Query, Filler];
        let class = |x: u32| if x == 9 { 5 } else { x };
        let label = |row| trigger_label(&inputs, &roles, &class, 2, row);
        assert_eq!(label(6), "query (its key)", "the other form names the same key");
        assert_eq!(label(3), "key (another)");
        assert_eq!(label(5), "filler");
        assert_eq!(label(4), "value");
        let stale = [Filler, Stale, Stale, Key, Value, Filler, Query, Filler];
        assert_eq!(trigger_label(&inputs, &stale, &class, 4, 1), "stale (another)");
    }

    #[test]
    fn buckets_cover_every_decision_once() {
        let ds: Vec<Decision> = (0..40).map(|t| decision(t, (t % 4) as f64 / 4.0, t as f32 / 40.0)).collect();
        let pos = position_buckets(&ds, 40);
        assert_eq!(pos.len(), 14); // width ⌈40/16⌉ = 3 → 14 ranges
        assert_eq!(pos.iter().map(|b| b.count).sum::<usize>(), 40);
        assert_eq!(pos[0].label, "0–2");
        assert!((pos[0].kept - (0.0 + 0.25 + 0.5) / 3.0).abs() < 1e-12);
        // Per layer, each layer's mean over the bucket's decisions.
        assert_eq!(pos[0].kept_by_layer.len(), 2);
        assert!((pos[0].kept_by_layer[0] - 0.75 * 4.0 / 9.0).abs() < 1e-12, "{:?}", pos[0].kept_by_layer);
        assert!((pos[0].kept_by_layer[1] - 0.75 * 2.0 / 9.0).abs() < 1e-12, "{:?}", pos[0].kept_by_layer);
        let q = quantile_buckets(&ds, |d| d.entropy as f64, "entropy");
        assert_eq!(q.len(), 5);
        assert!(q.iter().all(|b| b.count == 8));
        // Constant keys collapse into one bucket instead of empty ones.
        let flat = quantile_buckets(&ds, |_| 1.0, "x");
        assert_eq!(flat.len(), 1);
        assert_eq!(flat[0].count, 40);
    }

    /// Departures from a prior table, counted by hand: the tiny menu is drop, rank:1 … rank:3,
    /// full (cheapest first); four decisions of two layers against the table "token 0: rank:1
    /// in both layers; token 1: full, drop".
    #[test]
    fn prior_changes_count_departures_by_direction() {
        let cfg = ModelConfig::tiny();
        let menu: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
        let (r1, full) = (menu.iter().position(|m| m == "rank:1").unwrap(), cfg.exact_index());
        let prefer = [r1, r1, full, 0];
        let at = |token: u32, options: Vec<usize>| Decision { token, options, ..decision(0, 0.0, 0.0) };
        let decisions = [
            at(0, vec![r1, r1]),   // as the table
            at(0, vec![full, 0]),  // layer 0 richer, layer 1 cheaper
            at(1, vec![full, r1]), // layer 1 richer
            at(1, vec![r1, 0]),    // layer 0 cheaper
        ];
        let c = prior_changes(&decisions, &prefer, &cfg, 16);
        // Token 0's layer 0 goes r1 / full (one of two off its mode), token 1's full / r1 (one of
        // two); layer 1: token 0 r1 / drop, token 1 r1 / drop — one of four each way.
        assert_eq!(beyond_token(&decisions, 2, cfg.vocab_size, cfg.menu.len()), vec![0.5, 0.5]);
        assert_eq!(beyond_token(&decisions[..2], 2, cfg.vocab_size, cfg.menu.len()), vec![0.5, 0.5]);
        assert_eq!(beyond_token(&decisions[..1], 2, cfg.vocab_size, cfg.menu.len()), vec![0.0, 0.0]);
        assert_eq!((c[0].changed, c[0].richer, c[0].cheaper), (0.5, 0.25, 0.25));
        assert_eq!((c[1].changed, c[1].richer, c[1].cheaper), (0.5, 0.25, 0.25));
        assert_eq!(prior_changes(&decisions[..1], &prefer, &cfg, 16)[1].changed, 0.0);
    }

    /// The uniform rows name the option they ran: on a menu with schedules (which the judge's
    /// own schedules sort in among) each row's memory is its option's under the cost model.
    #[test]
    fn uniform_rows_run_the_option_they_name() {
        let dev = ahr_tpa::device::from_env();
        let env_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envs/mqar-tiny.toml");
        let mut spec = EnvSpec::load(&env_path).unwrap();
        spec.env.schedules = vec!["full/4/rank:1".parse().unwrap(), "full/2/rank:1/6".parse().unwrap()];
        let cfg = ModelConfig { vocab_size: 64, ..ModelConfig::tiny() };
        dev.seed(11);
        let model = spec.model(Model::new(&cfg, &dev)).unwrap();
        let task = ahr_env::load_task(&spec, &env_path, &cfg).unwrap();
        let h = Harness::new(&model, &task, &spec, 2, &dev, false).unwrap();
        assert_ne!(h.rules.config().menu, model.config().menu, "the judge adds schedules of its own");
        let exact = cost::exact_bytes_per_token(model.config()) as f64;
        let rows = uniform_outcomes(&h, &model.config().menu, exact).unwrap();
        let t_n = h.seq_len();
        for (row, &option) in rows.iter().zip(&model.config().menu) {
            let want = crate::Baseline::Uniform { option }.memory(model.config(), t_n).unwrap();
            assert_eq!(row.name, format!("uniform:{option}"));
            assert!((row.kv_bytes_per_token - want).abs() < 1e-9, "{option}: {} vs {want}", row.kv_bytes_per_token);
        }
    }
}
