//! The generator: prompt, then greedy decoding, one storage decision per token and layer.

use std::path::Path;

use ahr_policy::evict::EvictBook;
use ahr_policy::export::{ExportError, Manifest, load_policy};
use ahr_policy::obs::{FeatureWindow, Granularity, SequenceHistory, observe, with_review};
use ahr_policy::{ActorCritic, ObsBatch};
use ahr_tpa::{KvCache, Model, ReviewBook, StepOutput, cost};
use burn::tensor::Device;
use serde::Serialize;

/// What can go wrong at inference.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Model files or a forward step.
    #[error(transparent)]
    Model(#[from] ahr_tpa::Error),
    /// Policy files or a policy that does not fit the model.
    #[error(transparent)]
    Policy(#[from] ExportError),
    /// Bad prompts or settings.
    #[error("{0}")]
    Input(String),
}

/// An exported policy loaded for a model (checked against it on load).
pub struct RankPolicy {
    manifest: Manifest,
    net: ActorCritic,
}

impl RankPolicy {
    /// Load `dir` and check it against `model` (whose directory has `fingerprint`).
    pub fn load(dir: &Path, model: &Model, fingerprint: &str, device: &Device) -> Result<Self, InferError> {
        let (manifest, net) = load_policy(dir, model.config(), fingerprint, device)?;
        Ok(Self { manifest, net })
    }

    /// Wrap an in-memory policy (already checked by the caller).
    pub fn new(manifest: Manifest, net: ActorCritic) -> Self {
        Self { manifest, net }
    }

    /// The policy's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// How every token's storage options are chosen.
#[derive(Clone, Copy)]
pub enum Chooser<'a> {
    /// The exact option (the menu's richest) everywhere.
    Exact,
    /// One menu index everywhere.
    Uniform(usize),
    /// A rank policy's deterministic decisions.
    Policy(&'a RankPolicy),
}

/// Bytes of the cache after a generation, for all streams together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// Tokens stored per stream (every token fed through the model).
    pub tokens_cached: usize,
    /// Bytes the cache holds, read off its tensors.
    pub bytes_held: usize,
    /// The most bytes it held at once, per stream, summed over streams (= `bytes_held` unless
    /// `recent:W` tokens expired).
    pub peak_bytes: usize,
    /// The same from the cost model applied to the choices made.
    pub cost_model_bytes: usize,
    /// Bytes had every token been kept at the exact option.
    pub exact_bytes: usize,
    /// Bytes of a dense MHA cache with the same query heads and head dim.
    pub dense_mha_bytes: usize,
}

/// The result of [`Generator::run`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// Per stream: the prompt followed by the generated tokens.
    pub tokens: Vec<Vec<u32>>,
    /// Prompt length (equal for every stream).
    pub prompt_len: usize,
    /// Per stream: menu index per stored token and layer, `[t * n_layers + l]` (what a review made
    /// of it; a learned-eviction policy's tokens keep their store option, see `evictions`).
    pub choices: Vec<Vec<usize>>,
    /// Per stream, the tokens that left the cache at a moment of their own — a learned-eviction
    /// policy's evictions and spike reviews' drops — in order: `(layer, position, at)`, `at` the
    /// first query that no longer sees it (the environment's `EpisodeStats::evictions`).
    pub evictions: Vec<Vec<(usize, usize, usize)>>,
    /// Per stream, the tokens a learned evicter let go into its second tier, in order:
    /// `(layer, position, at)`, `at` the first query that sees them at the tier's rank (the
    /// environment's `EpisodeStats::demotions`; those that left it later are in `evictions` too).
    pub demotions: Vec<Vec<(usize, usize, usize)>>,
    /// Cache bytes at the end.
    pub memory: MemoryReport,
}

impl Generation {
    /// The generated tokens of stream `s`.
    pub fn new_tokens(&self, s: usize) -> &[u32] {
        &self.tokens[s][self.prompt_len..]
    }
}

/// Prompt + greedy decode over the physical factor cache.
pub struct Generator<'a> {
    model: &'a Model,
    chooser: Chooser<'a>,
    device: Device,
}

impl<'a> Generator<'a> {
    /// A generator over `model` (no autodiff needed) choosing options with `chooser`.
    pub fn new(model: &'a Model, chooser: Chooser<'a>, device: &Device) -> Self {
        Self { model, chooser, device: device.clone() }
    }

    /// Feed every prompt token by token, then decode `max_new_tokens` greedily per stream.
    /// Prompts must share one length (≥ 1); the last generated token is not fed back, so the
    /// cache ends holding `prompt + max_new_tokens − 1` tokens (the whole prompt when
    /// `max_new_tokens` is 0). The policy's features see a horizon of `prompt + max_new_tokens`
    /// tokens (the rank environment's episode length). Every step runs on a worker of the decode
    /// pool ([`ahr_tpa::host::on_workers`]).
    pub fn run(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<Generation, InferError> {
        ahr_tpa::host::on_workers(|| self.run_here(prompts, max_new_tokens))
    }

    fn run_here(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<Generation, InferError> {
        let cfg = self.model.config();
        let (b_n, l_n) = (prompts.len(), cfg.n_layers);
        let prompt_len = prompts.first().map_or(0, Vec::len);
        if b_n == 0 || prompt_len == 0 {
            return Err(InferError::Input("generation needs at least one non-empty prompt".into()));
        }
        if prompts.iter().any(|p| p.len() != prompt_len) {
            return Err(InferError::Input("prompts of one batch must have the same length".into()));
        }
        if let Chooser::Uniform(i) = self.chooser
            && i >= cfg.menu.len()
        {
            return Err(InferError::Input(format!("menu index {i} is outside the menu of {}", cfg.menu.len())));
        }
        let total = prompt_len + max_new_tokens;
        let fed = if max_new_tokens == 0 { prompt_len } else { total - 1 };
        let mut tokens: Vec<Vec<u32>> = prompts.to_vec();
        let mut choices: Vec<Vec<usize>> = vec![Vec::with_capacity(fed * l_n); b_n];
        let mut cache = KvCache::new(cfg, b_n, &self.device);
        // A policy trained with reviews decides again for each token `age` queries later, or
        // after it tops a query's attention row.
        let review = match self.chooser {
            Chooser::Policy(p) => p.manifest.review,
            _ => None,
        };
        let mut book = match review {
            Some(at) => {
                if let Some(age) = at.age() {
                    cache = cache.with_review(age);
                }
                Some(ReviewBook::new(cfg, b_n, at)?)
            }
            None => None,
        };
        // A learned-eviction policy: every token is written at its store; once a layer holds more
        // than the budget, the policy picks after each query which token leaves (the
        // environment's book, so inference evicts what the environment evicted).
        let mut evict_book = match self.chooser {
            Chooser::Policy(p) => p.manifest.evict.map(|e| EvictBook::new(cfg, b_n, e)).transpose()?,
            _ => None,
        };
        let mut evictions: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); b_n];
        let mut demotions: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); b_n];
        // Per (stream, position, layer): the menu index a demoted token is held at now.
        let mut demoted_to = std::collections::HashMap::new();
        let mut state = PolicyState::default();
        let host = self.model.host_model(&self.device)?;
        for t in 0..fed {
            let ids: Vec<u32> = tokens.iter().map(|s| s[t]).collect();
            let out = self.model.step_ids(host.as_ref(), &ids, &cache, true, &self.device)?;
            if let Some(book) = &mut book {
                book.observe(&out, &ids)?;
            }
            if let Some(book) = &mut evict_book {
                book.observe(&out, &ids, t)?;
            }
            let decided = match (self.chooser, &evict_book) {
                (Chooser::Exact, _) => vec![cfg.exact_index(); b_n * l_n],
                (Chooser::Uniform(i), _) => vec![i; b_n * l_n],
                (Chooser::Policy(p), Some(evict)) => {
                    p.net.act_deterministic(&evict.obs(t), &p.manifest.norm, &self.device)
                }
                (Chooser::Policy(p), None) => {
                    state.decide(p, self.model, &out, &cache, book.as_ref(), &ids, t, total, &self.device)
                }
            };
            if t + 1 >= prompt_len && t + 1 < total {
                let next = out.logits.clone().argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("ids");
                for (s, id) in next.into_iter().enumerate() {
                    tokens[s].push(id as u32);
                }
            }
            // With reviews the policy answers L writes then L reviews per review stage, per stream.
            // Under learned eviction they are the slots that leave, the writes all at its store.
            let (actions, reviewed) = match (&mut book, &mut evict_book) {
                (Some(book), _) => book.store(&mut cache, out.pending, &decided, t)?,
                (None, Some(evict)) => {
                    let writes = vec![evict.option(); b_n * l_n];
                    cache.push(out.pending, &writes)?;
                    for ev in evict.evict(&mut cache, &decided)? {
                        match ev.to {
                            Some(to) => {
                                demotions[ev.stream].push((ev.layer, ev.position, t + 1));
                                demoted_to.insert((ev.stream, ev.position, ev.layer), to);
                            }
                            None => evictions[ev.stream].push((ev.layer, ev.position, t + 1)),
                        }
                    }
                    (writes, Vec::new())
                }
                (None, None) => {
                    cache.push(out.pending, &decided)?;
                    (decided, Vec::new())
                }
            };
            for (s, row) in actions.chunks(l_n).enumerate() {
                choices[s].extend_from_slice(row);
            }
            for r in reviewed.iter().filter(|r| r.reviewable) {
                choices[r.stream][r.position * l_n + r.layer] = r.effective;
                if let Some(at) = r.evicted_at.filter(|_| r.effective != r.written) {
                    evictions[r.stream].push((r.layer, r.position, at));
                }
            }
        }
        let stored = fed;
        // What the next query would see: every kept token in its current form (expired and
        // evicted ones gone).
        let evicted: std::collections::HashSet<(usize, usize, usize)> = evictions
            .iter()
            .enumerate()
            .flat_map(|(s, row)| row.iter().map(move |&(l, position, _)| (s, position, l)))
            .collect();
        let cost_model_bytes = choices
            .iter()
            .enumerate()
            .flat_map(|(s, row)| row.iter().enumerate().map(move |(i, &c)| (s, i / l_n, i % l_n, c)))
            .filter(|&(s, t, l, _)| !evicted.contains(&(s, t, l)))
            .map(|(s, t, l, c)| cost::bytes_at(cfg, cfg.menu[*demoted_to.get(&(s, t, l)).unwrap_or(&c)], t, stored))
            .sum();
        let memory = MemoryReport {
            tokens_cached: stored,
            bytes_held: cache.bytes(),
            peak_bytes: (0..b_n).map(|s| cache.peak_stream_bytes(s)).sum(),
            cost_model_bytes,
            exact_bytes: b_n * stored * cost::exact_bytes_per_token(cfg),
            dense_mha_bytes: b_n * stored * cost::dense_mha_bytes_per_token(cfg),
        };
        Ok(Generation { tokens, prompt_len, choices, evictions, demotions, memory })
    }
}

/// Per-generation state of a policy: feature windows and per-layer decisions.
#[derive(Default)]
struct PolicyState {
    windows: Vec<FeatureWindow>,
    per_layer: Option<Vec<usize>>,
    history: Vec<SequenceHistory>,
}

impl PolicyState {
    /// The policy's options for the token just stepped, built from the same features as the
    /// rank environment's.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        policy: &RankPolicy,
        model: &Model,
        out: &StepOutput,
        cache: &KvCache,
        book: Option<&ReviewBook>,
        ids: &[u32],
        t: usize,
        len: usize,
        device: &Device,
    ) -> Vec<usize> {
        if let Some(fixed) = &self.per_layer {
            return fixed.clone();
        }
        let cfg = model.config();
        let b_n = ids.len();
        let logits = out.logits.clone().into_data().try_to_vec::<f32>().expect("logits are f32");
        let pred = ahr_tpa::host::predictive(&logits, cfg.vocab_size);
        let budget = policy.manifest.budget;
        if t == 0 || self.history.len() != b_n {
            self.history = vec![SequenceHistory::default(); b_n];
        }
        let (version, seen) = (policy.manifest.obs.version, policy.manifest.obs.positions_seen);
        let fresh = observe(
            cfg,
            version,
            seen,
            &pred,
            &logits,
            out.layer_stats.clone(),
            cache,
            ids,
            t,
            len,
            budget,
            &mut self.history,
        );
        let fresh = match book {
            Some(book) => with_review(fresh, book, t),
            None => fresh,
        };
        let window = policy.manifest.policy.window.max(1);
        let mut obs = ObsBatch { len: b_n, tokens: ids.to_vec(), masks: fresh.masks.clone(), ..Default::default() };
        let dim = fresh.features.len() / b_n;
        for (b, row) in fresh.features.chunks(dim).enumerate() {
            if window > 1 {
                let w = if t == 0 || self.windows.len() <= b {
                    FeatureWindow::new(window, row)
                } else {
                    self.windows[b].pushed(row)
                };
                obs.features.extend(w.stacked());
                if self.windows.len() <= b {
                    self.windows.push(w);
                } else {
                    self.windows[b] = w;
                }
            } else {
                obs.features.extend_from_slice(row);
            }
        }
        let actions = policy.net.act_deterministic(&obs, &policy.manifest.norm, device);
        if policy.manifest.granularity == Granularity::PerLayer {
            self.per_layer = Some(actions.clone());
        }
        actions
    }
}
