//! The rank environment, per-token mode (DESIGN.md §5).
//!
//! An episode is one batch of `streams` sequences fed token by token through the frozen model
//! with a physical factor cache. After token t's forward step the agent observes features and
//! picks one menu option per layer for storing t. The reward of that action is
//! `−w_task·loss_{t+1} − λ_mem·mem_t − λ_flops·flops_{t+1}`: the loss of the next labelled
//! position (the first one the choice can affect), the memory token t costs (its bytes times the
//! steps the cache holds them — to the end, or W + 1 steps for `recent:W`:
//! [`cost::charged_bytes`], the time-averaged measure evaluation reports), and the attention
//! FLOPs of the next step, with `mem` and `flops` normalised so that the exact choice sums to 1
//! per episode. Position 0's loss (which no choice affects) is added to the first reward so that
//! the return is exactly `−w_task·Σ loss − …`.

use ahr_policy::evict::{EvictBook, Eviction};
use ahr_policy::obs::{LAYER_FEATURES, SequenceHistory, observe, with_review};
use ahr_policy::ops::log_softmax;
use ahr_policy::{ObsBatch, ObsSpec};
use ahr_tasks::{Batch, IGNORE, Task};
use ahr_tpa::{Choices, HostModel, KvCache, Model, PendingToken, ReviewAt, ReviewBook, cost};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::spec::{RewardConfig, TaskBaseline};
use crate::vec_env::{EnvError, EpisodeStats, VecEnv, VecStep};

/// Per-stream sums over the running episode.
#[derive(Clone, Debug, Default)]
struct Running {
    ret: f64,
    loss: f64,
    labelled: u64,
    correct: u64,
    mem: f64,
    flops: f64,
    counts: Vec<Vec<u64>>,
    by_position: Vec<Vec<u64>>,
    reviews: u64,
    review_changes: u64,
    evictions: Vec<(usize, usize, usize)>,
    demotions: Vec<(usize, usize, usize)>,
}

/// What one forward step left for the agent to see and for the reward to use.
struct Forward {
    pending: PendingToken,
    /// `[B]` loss at the position just processed (0 where unlabelled).
    loss: Vec<f32>,
    /// `[B]` whether that position was labelled and predicted correctly.
    labelled: Vec<bool>,
    correct: Vec<bool>,
    obs: ObsBatch,
}

/// The per-token rank environment over `streams` sequences.
pub struct RankEnv {
    model: Model,
    /// The model's weights in host memory for the plain-loop decode step (CPU devices).
    host: Option<HostModel>,
    task: Task,
    reward: RewardConfig,
    device: Device,
    streams: usize,
    seed: u64,
    episode: u64,
    lambda_mem: f64,
    batch: Batch,
    cache: KvCache,
    t: usize,
    pending: Option<PendingToken>,
    running: Vec<Running>,
    /// Reward owed to the next step (position 0's loss).
    carry: Vec<f32>,
    /// `[B·T]` the exact choice's loss per position (0 where unlabelled) when the task term is
    /// measured against it ([`TaskBaseline::Exact`]); empty otherwise.
    exact_loss: Vec<f32>,
    /// Episodes come from the held-out set (evaluation) instead of training data.
    held_out: bool,
    /// Normalisers: exact bytes per token and exact attention FLOPs of a whole episode.
    exact_bytes: f64,
    exact_flops_episode: f64,
    /// The model's attention FLOPs per cached entry of each option.
    step_flops: cost::StepFlops,
    /// Observation layout version (the current one unless a policy of an older one is run).
    obs_version: u32,
    /// The run policy's training length, where its position features stop ([`Self::with_positions_seen`]).
    positions_seen: Option<usize>,
    /// Per stream, the running statistics of the causal features.
    history: Vec<SequenceHistory>,
    /// Review mode: when tokens come up for their second decision.
    review: Option<ReviewAt>,
    /// Review mode: the episode's hindsight bookkeeping.
    book: Option<ReviewBook>,
    /// Learned eviction: the budget and store, and the episode's book of held tokens.
    eviction: Option<Eviction>,
    evict_book: Option<EvictBook>,
    paired: bool,
}

impl RankEnv {
    /// An environment over `model` (inference device, no autodiff) and `task`.
    pub fn new(model: Model, task: Task, reward: RewardConfig, streams: usize, device: Device) -> Self {
        let cfg = model.config().clone();
        let lambda_mem = crate::budget::initial_lambda(&reward);
        // Weights are f32, so the host copy cannot fail; were it to, the tensor step serves.
        let host = model.host_model(&device).ok().flatten();
        Self {
            cache: KvCache::new(&cfg, streams, &device),
            model,
            host,
            task,
            reward,
            device,
            streams,
            seed: 0,
            episode: 0,
            lambda_mem,
            batch: Batch {
                inputs: vec![],
                labels: vec![],
                batch_size: 0,
                seq_len: 0,
                difficulty: vec![],
                roles: vec![],
            },
            t: 0,
            pending: None,
            running: Vec::new(),
            carry: Vec::new(),
            exact_loss: Vec::new(),
            held_out: false,
            exact_bytes: cost::exact_bytes_per_token(&cfg) as f64,
            exact_flops_episode: 1.0,
            step_flops: cost::StepFlops::new(&cfg),
            obs_version: ahr_policy::obs::OBS_VERSION,
            positions_seen: None,
            history: Vec::new(),
            review: None,
            book: None,
            eviction: None,
            evict_book: None,
            paired: false,
        }
    }

    /// Give each training sequence to two neighbouring streams (2k, 2k + 1; `streams` must be
    /// even), for a partner baseline ([`VecEnv::group`]); held-out episodes stay unpaired.
    pub fn with_pairs(mut self, paired: bool) -> Self {
        assert!(!paired || self.streams.is_multiple_of(2), "paired streams need an even count, not {}", self.streams);
        self.paired = paired;
        self
    }

    /// Review mode (DESIGN.md §10): each token kept at a plain option is decided again `age`
    /// queries after it was written, or (spike reviews) one step after it tops a query's
    /// attention row; the model's menu must hold [`ReviewAt::menu_extras`] (what an env's
    /// `[env] review` adds; only reviews produce them). Actions become L write heads then L
    /// review heads per review stage (one, or one per age of a chain).
    pub fn with_review(mut self, at: ReviewAt) -> Self {
        self.review = Some(at);
        self
    }

    /// Learned eviction ([`ahr_policy::evict`]): every token is written at the eviction's store
    /// option, and once a layer holds more than its budget the action (one head per layer, one
    /// option per candidate slot) picks the token that leaves. The menu must hold the store
    /// option; no reviews.
    pub fn with_eviction(mut self, eviction: Eviction) -> Self {
        self.eviction = Some(eviction);
        self
    }

    /// Build observations of layout `version` (to run a policy trained on an older one).
    pub fn with_obs_version(mut self, version: u32) -> Self {
        self.obs_version = version;
        self
    }

    /// Stop the position features at the last of `positions` (to run a policy trained on
    /// shorter sequences than this environment's; `None`: they grow with the position).
    pub fn with_positions_seen(mut self, positions: Option<usize>) -> Self {
        self.positions_seen = positions;
        self
    }

    /// Draw episodes from the task's fixed held-out set (episode i = held-out batch i).
    pub fn held_out(mut self) -> Self {
        self.held_out = true;
        self
    }

    /// The current episode's batch (for analysis).
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    fn seq_len(&self) -> usize {
        self.batch.seq_len
    }

    /// Move on to the next episode's batch and return its first observation.
    pub(crate) fn next_episode(&mut self) -> Result<ObsBatch, EnvError> {
        self.episode += 1;
        self.start_episode()
    }

    fn start_episode(&mut self) -> Result<ObsBatch, EnvError> {
        let cfg = self.model.config().clone();
        self.batch = if self.held_out {
            self.task.valid_batch(self.episode, self.streams)
        } else if self.paired {
            self.task.train_batch(self.seed, self.episode, self.streams / 2).repeat_each(2)
        } else {
            self.task.train_batch(self.seed, self.episode, self.streams)
        };
        self.cache = KvCache::new(&cfg, self.streams, &self.device);
        self.book = None;
        if let Some(at) = self.review {
            if let Some(age) = at.age() {
                self.cache = self.cache.clone().with_review(age);
            }
            self.book = Some(ReviewBook::new(&cfg, self.streams, at)?);
        }
        self.evict_book = self.eviction.map(|e| EvictBook::new(&cfg, self.streams, e)).transpose()?;
        self.history = vec![SequenceHistory::default(); self.streams];
        self.t = 0;
        self.exact_flops_episode = cost::exact_sequence_flops(&cfg, self.seq_len()).max(1.0);
        self.running =
            vec![Running { counts: vec![vec![0; cfg.menu.len()]; cfg.n_layers], ..Default::default() }; self.streams];
        self.exact_loss = match self.reward.task_baseline {
            TaskBaseline::None => Vec::new(),
            TaskBaseline::Exact => self.exact_losses()?,
        };
        let fwd = self.forward()?;
        // Position 0's loss cannot be changed by any choice; it joins the first reward.
        self.carry = (0..self.streams).map(|b| -(self.reward.w_task * self.task_term(&fwd, b)) as f32).collect();
        self.account(&fwd);
        self.pending = Some(fwd.pending);
        Ok(fwd.obs)
    }

    /// The task term of stream `b` at the position just forwarded: its loss, less the exact
    /// choice's loss there under [`TaskBaseline::Exact`].
    fn task_term(&self, fwd: &Forward, b: usize) -> f64 {
        let base = if self.exact_loss.is_empty() { 0.0 } else { self.exact_loss[b * self.seq_len() + self.t] };
        fwd.loss[b] as f64 - base as f64
    }

    /// The exact choice's per-position loss over the episode's batch (one parallel forward,
    /// which equals the exact decode), 0 where unlabelled.
    fn exact_losses(&self) -> Result<Vec<f32>, EnvError> {
        let cfg = self.model.config();
        let exact = Choices::exact(cfg, self.batch.batch_size, self.batch.seq_len);
        let (nll, _) = parallel_nll(&self.model, &self.batch, &exact, &self.device)?;
        Ok(nll.iter().zip(&self.batch.labels).map(|(&n, &l)| if l == IGNORE { 0.0 } else { n }).collect())
    }

    fn account(&mut self, fwd: &Forward) {
        for (b, r) in self.running.iter_mut().enumerate() {
            if fwd.labelled[b] {
                r.loss += fwd.loss[b] as f64;
                r.labelled += 1;
                r.correct += fwd.correct[b] as u64;
            }
        }
    }

    /// Forward the token at position `self.t` for every stream.
    fn forward(&mut self) -> Result<Forward, EnvError> {
        let cfg = self.model.config();
        let (b_n, l_n, t) = (self.streams, cfg.n_layers, self.t);
        let len = self.seq_len();
        let ids: Vec<u32> = (0..b_n).map(|b| self.batch.inputs[b * len + t]).collect();
        let out = self.model.step_ids(self.host.as_ref(), &ids, &self.cache, true, &self.device)?;
        if let Some(book) = &mut self.book {
            book.observe(&out, &ids)?;
        }
        if let Some(book) = &mut self.evict_book {
            book.observe(&out, &ids, t)?;
        }
        let v = cfg.vocab_size;
        let logits = out.logits.into_data().try_to_vec::<f32>().expect("f32"); // [B, V]
        let pred = ahr_tpa::host::predictive(&logits, v);
        let obs = if let Some(book) = &self.evict_book {
            book.obs(t)
        } else {
            observe(
                cfg,
                self.obs_version,
                self.positions_seen,
                &pred,
                &logits,
                out.layer_stats,
                &self.cache,
                &ids,
                t,
                len,
                self.reward.budget,
                &mut self.history,
            )
        };
        let labels: Vec<i64> = (0..b_n).map(|b| self.batch.labels[b * len + t]).collect();
        let safe: Vec<i64> = labels.iter().map(|&l| if l == IGNORE { 0 } else { l }).collect();
        let nll: Vec<f32> = (0..b_n).map(|b| pred[b].lse - logits[b * v + safe[b] as usize]).collect();
        let argmax: Vec<i64> = pred.iter().map(|p| p.argmax as i64).collect();
        let labelled: Vec<bool> = labels.iter().map(|&l| l != IGNORE).collect();
        let loss: Vec<f32> = nll.iter().zip(&labelled).map(|(&n, &l)| if l { n } else { 0.0 }).collect();
        let correct: Vec<bool> = (0..b_n).map(|b| labelled[b] && argmax[b] == safe[b]).collect();
        debug_assert!(
            self.evict_book.is_some()
                || obs.features.len()
                    == b_n
                        * (ahr_policy::obs::global_features(self.obs_version).map_or(0, <[_]>::len)
                            + LAYER_FEATURES.len() * l_n)
        );
        let obs = match &self.book {
            Some(book) => with_review(obs, book, t),
            None => obs,
        };
        Ok(Forward { pending: out.pending, loss, labelled, correct, obs })
    }
}

/// `[B·T]` negative log-likelihood of each position's label (0's label where unlabelled) and the
/// argmax prediction, from one parallel forward of `batch` under `choices`.
pub fn parallel_nll(
    model: &Model,
    batch: &Batch,
    choices: &Choices,
    device: &Device,
) -> Result<(Vec<f32>, Vec<i64>), EnvError> {
    let (b_n, t_n) = (batch.batch_size, batch.seq_len);
    let tokens = model.tokens(&batch.inputs, b_n, t_n, device)?;
    let hidden = model.forward_hidden(tokens, choices)?;
    let [_, _, d] = hidden.dims();
    let logp = log_softmax(model.head(hidden.reshape([b_n * t_n, d])), 1);
    let safe: Vec<i64> = batch.labels.iter().map(|&l| if l == IGNORE { 0 } else { l }).collect();
    let lab = Tensor::<2, Int>::from_data(TensorData::new(safe, [b_n * t_n, 1]), device);
    let nll = logp.clone().gather(1, lab).neg().into_data().try_to_vec::<f32>().expect("f32");
    let argmax = logp.argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("i64");
    Ok((nll, argmax))
}

impl VecEnv for RankEnv {
    fn num_envs(&self) -> usize {
        self.streams
    }

    fn obs_spec(&self) -> ObsSpec {
        let cfg = self.model.config();
        if let Some(eviction) = self.eviction {
            return ObsSpec::evict(cfg.n_layers, eviction);
        }
        let spec = ObsSpec {
            positions_seen: Some(self.task.longest()),
            ..ObsSpec::rank_version(self.obs_version, cfg.n_layers, cfg.vocab_size)
                .expect("a known observation version")
        };
        match self.review {
            Some(at) => spec.with_review(cfg.n_layers, at),
            None => spec,
        }
    }

    fn heads(&self) -> usize {
        let l_n = self.model.config().n_layers;
        self.review.map_or(l_n, |at| at.heads(l_n))
    }

    fn options(&self) -> usize {
        match self.eviction {
            Some(e) => e.slots(),
            None => self.model.config().menu.len(),
        }
    }

    fn reset(&mut self, seed: u64) -> Result<ObsBatch, EnvError> {
        self.seed = seed;
        self.episode = 0;
        self.start_episode()
    }

    fn set_lambda_mem(&mut self, lambda: f64) {
        self.lambda_mem = lambda;
    }

    fn group(&self) -> usize {
        if self.paired && !self.held_out { 2 } else { 1 }
    }

    fn step(&mut self, actions: &[usize]) -> Result<VecStep, EnvError> {
        let cfg = self.model.config().clone();
        let (b_n, l_n) = (self.streams, cfg.n_layers);
        let pending = self.pending.take().ok_or_else(|| EnvError::Other("step() before reset()".into()))?;
        let mut evicted = Vec::new();
        let (writes, reviewed) = match (&mut self.book, &mut self.evict_book) {
            (Some(book), _) => book.store(&mut self.cache, pending, actions, self.t)?,
            (None, Some(book)) => {
                let writes = vec![book.option(); b_n * l_n];
                self.cache.push(pending, &writes)?;
                evicted = book.evict(&mut self.cache, actions)?;
                (writes, Vec::new())
            }
            (None, None) => {
                self.cache.push(pending, actions)?;
                (actions.to_vec(), Vec::new())
            }
        };
        let actions = &writes[..];
        let len = self.seq_len();
        let mut reward: Vec<f32> = std::mem::take(&mut self.carry);
        reward.resize(b_n, 0.0);
        // The write's charge is this action's alone; a review's refund or surcharge re-prices an
        // earlier write, so it stays in the shared part.
        let mut immediate = vec![0f32; b_n];
        for b in 0..b_n {
            let bytes: f64 =
                (0..l_n).map(|l| cost::charged_bytes(&cfg, cfg.menu[actions[b * l_n + l]], self.t, len)).sum();
            let mem = bytes / (len as f64 * self.exact_bytes);
            let r = &mut self.running[b];
            if r.by_position.len() <= self.t {
                r.by_position.resize(self.t + 1, vec![0; cfg.menu.len()]);
            }
            for l in 0..l_n {
                r.counts[l][actions[b * l_n + l]] += 1;
                r.by_position[self.t][actions[b * l_n + l]] += 1;
            }
            // A review re-prices its token: the charge of what it became, less what its write paid.
            let mut delta = 0.0;
            for rv in reviewed.iter().filter(|rv| rv.stream == b && rv.reviewable) {
                let l = rv.layer;
                r.reviews += 1;
                if rv.effective != rv.written {
                    r.review_changes += 1;
                    // Option counts report what tokens ended as.
                    r.counts[l][rv.written] -= 1;
                    r.counts[l][rv.effective] += 1;
                    r.by_position[rv.position][rv.written] -= 1;
                    r.by_position[rv.position][rv.effective] += 1;
                    let became = match rv.evicted_at {
                        Some(at) => {
                            r.evictions.push((l, rv.position, at));
                            cost::charged_bytes_evicted(&cfg, cfg.menu[rv.written], rv.position, len, Some(at))
                        }
                        None => cost::charged_bytes(&cfg, cfg.menu[rv.effective], rv.position, len),
                    };
                    delta += became - cost::charged_bytes(&cfg, cfg.menu[rv.written], rv.position, len);
                }
            }
            // An eviction re-prices its token from the next query on (as a review's drop does), a
            // demotion into the second tier at its lower rank.
            for ev in evicted.iter().filter(|ev| ev.stream == b) {
                let at = self.t + 1;
                let now = ev.to.map_or(ahr_tpa::StoreOption::Drop, |o| cfg.menu[o]);
                match ev.to {
                    Some(_) => r.demotions.push((ev.layer, ev.position, at)),
                    None => r.evictions.push((ev.layer, ev.position, at)),
                }
                delta += cost::recharged_bytes(&cfg, cfg.menu[ev.from], now, at, len);
            }
            immediate[b] = -(self.lambda_mem * mem) as f32;
            let mem = mem + delta / (len as f64 * self.exact_bytes);
            r.mem += mem;
            reward[b] -= (self.lambda_mem * mem) as f32;
        }
        self.t += 1;
        if self.t < len {
            let fwd = self.forward()?;
            for b in 0..b_n {
                let flops: usize =
                    (0..l_n).map(|l| self.step_flops.step(self.cache.counts(b, l), self.cache.late_counts(b, l))).sum();
                let flops = flops as f64 / self.exact_flops_episode;
                self.running[b].flops += flops;
                reward[b] -= (self.reward.w_task * self.task_term(&fwd, b) + self.reward.lambda_flops * flops) as f32;
                self.running[b].ret += reward[b] as f64;
            }
            self.account(&fwd);
            self.pending = Some(fwd.pending);
            return Ok(VecStep::running(fwd.obs, reward).with_immediate(immediate));
        }
        let episodes = (0..b_n)
            .map(|b| {
                let r = &mut self.running[b];
                r.ret += reward[b] as f64;
                EpisodeStats {
                    ret: r.ret,
                    len: len as u64,
                    task_loss: r.loss / r.labelled.max(1) as f64,
                    accuracy: r.correct as f64 / r.labelled.max(1) as f64,
                    loss_sum: r.loss,
                    labelled: r.labelled,
                    correct: r.correct,
                    mem_frac: r.mem,
                    peak_frac: self.cache.peak_stream_bytes(b) as f64 / (len as f64 * self.exact_bytes),
                    flops_frac: r.flops,
                    option_counts: r.counts.clone(),
                    position_counts: r.by_position.clone(),
                    reviews: r.reviews,
                    review_changes: r.review_changes,
                    evictions: std::mem::take(&mut r.evictions),
                    demotions: std::mem::take(&mut r.demotions),
                }
            })
            .collect();
        Ok(VecStep::all_done(self.next_episode()?, reward, episodes).with_immediate(immediate))
    }
}
