//! Env files (`envs/*.toml`): `[task]` (see `ahr-tasks`), `[env]` and `[reward]`.

use std::path::Path;

use ahr_policy::Granularity;
use ahr_tasks::TaskConfig;
use ahr_tpa::Invalid;
use serde::{Deserialize, Serialize};

/// How episodes are stepped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvSettings {
    /// `per-token` (default) or `per-layer`.
    pub granularity: Granularity,
    /// Sequences one environment steps together through one batched decode.
    pub streams: usize,
    /// Windows W: each adds the option `recent:W` to the model's menu (kept exact for the next
    /// W queries, then evicted), so a policy can keep a token while it is recent. Empty = the
    /// model's menu as it is.
    pub recent: Vec<usize>,
    /// Options taken off the model's menu before `recent` and `schedules` are added (e.g.
    /// `["rank:1", "rank:2"]` on a model whose factor options were never trained): neither a
    /// policy nor a rule judged in this env can pick them. Not the exact option.
    pub exclude: Vec<ahr_tpa::StoreOption>,
    /// Demotion schedules `first/W/then` added to the model's menu (e.g. `"full/16/rank:1"`:
    /// dense for the next 16 queries, then its rank-1 factors; DESIGN.md §10).
    pub schedules: Vec<ahr_tpa::StoreOption>,
    /// Observation layout version (default: the current one; a policy of an older version is run
    /// with its own, which `ahr eval` and `ahr analyze` set from its manifest).
    pub obs_version: u32,
    /// The policy's [`ahr_policy::ObsSpec::positions_seen`] (not an env-file key: `ahr eval` and
    /// `ahr analyze` set it from a policy's manifest).
    #[serde(skip)]
    pub positions_seen: Option<usize>,
    /// Second decisions (DESIGN.md §10, per-token mode). `review = 16`: every token kept at a
    /// plain option comes up again this many queries after it was written — keep, a nested lower
    /// rank, or drop — with the attention it has received as features; `review = { age = 16, keep
    /// = [32, 64] }` may also keep it as it is to a later age and drop it there. `review = "spike"`: a kept
    /// token comes up one step after it topped a query's attention row in its layer, as often as
    /// that happens — keep, or drop from the next query on (the menu needs `drop`). Absent:
    /// write-time decisions only.
    pub review: Option<ahr_tpa::ReviewAt>,
    /// Training episodes give each sequence to two neighbouring streams (2k and 2k + 1), so a
    /// trainer may judge one stream's actions against its partner's on the same sequence; held-out
    /// episodes are not paired. Not an env-file key: `train-policy` sets it when the PPO config
    /// asks for `baseline = "partner"`.
    #[serde(skip)]
    pub paired: bool,
    /// Learned eviction ([`ahr_policy::evict`]): `evict = { budget = 51 }` writes every token at
    /// `store` (default `full`) and, once a layer of a stream holds more than `budget` tokens, the
    /// policy picks which of them leaves after each query — TOVA's decision at TOVA's memory,
    /// made by a network that starts at TOVA's score. Absent: write-time decisions.
    pub evict: Option<ahr_policy::evict::Eviction>,
}

impl Default for EnvSettings {
    fn default() -> Self {
        Self {
            granularity: Granularity::PerToken,
            streams: 8,
            recent: Vec::new(),
            exclude: Vec::new(),
            schedules: Vec::new(),
            obs_version: ahr_policy::obs::OBS_VERSION,
            positions_seen: None,
            review: None,
            paired: false,
            evict: None,
        }
    }
}

/// Reward weights: `r_t = −w_task·loss_t − lambda_mem·mem_t − lambda_flops·flops_t`, with `mem` and
/// `flops` normalised so that the exact choice sums to 1 per episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Weight of the task loss (nats per labelled position).
    pub w_task: f64,
    /// Weight of KV memory (ignored in budget mode, where λ is learned).
    pub lambda_mem: f64,
    /// Weight of attention FLOPs.
    pub lambda_flops: f64,
    /// Budget mode: the target memory fraction (of the exact choice's bytes).
    pub budget: Option<f64>,
    /// Budget mode: a looser target to start from, tightened linearly to `budget` over the first
    /// `budget_anneal` of the run (a curriculum; absent = `budget` throughout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_start: Option<f64>,
    /// Budget mode: the fraction of the run over which `budget_start` tightens to `budget`.
    pub budget_anneal: f64,
    /// Budget mode: dual-ascent step of λ per iteration (the controller's integral gain).
    pub lambda_lr: f64,
    /// Budget mode: proportional gain on the memory error (0 = dual ascent alone).
    pub lambda_kp: f64,
    /// Budget mode: starting λ.
    pub lambda_init: f64,
    /// Budget mode: cap memory at the target (`at-most`, λ ≥ 0) or hold it there (`target`).
    pub budget_kind: BudgetKind,
    /// Subtract the exact choice's loss at each position from the task term (`exact`), or not
    /// (`none`). The exact loss depends on the data only, never on the actions, so the optimal
    /// policy is unchanged while the variance of the return drops — much for text, where every
    /// position is labelled and the loss itself varies far more than the choices move it.
    pub task_baseline: TaskBaseline,
}

/// What the task term of the reward is measured against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskBaseline {
    /// `loss_t` itself.
    #[default]
    None,
    /// `loss_t − loss_t(exact choice)`, the exact loss from one parallel forward per episode.
    Exact,
}

/// How budget mode treats its target memory fraction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetKind {
    /// An inequality constraint, mem ≤ target: λ ≥ 0, so a policy that needs less keeps less.
    #[default]
    AtMost,
    /// An equality constraint, mem = target: λ may turn negative and reward memory.
    Target,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            w_task: 1.0,
            lambda_mem: 1.0,
            lambda_flops: 0.0,
            budget: None,
            budget_start: None,
            budget_anneal: 0.5,
            lambda_lr: 0.5,
            lambda_kp: 0.0,
            lambda_init: 1.0,
            budget_kind: BudgetKind::AtMost,
            task_baseline: TaskBaseline::None,
        }
    }
}

/// A whole env file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// The task.
    pub task: TaskConfig,
    /// Stepping.
    #[serde(default)]
    pub env: EnvSettings,
    /// Reward.
    #[serde(default)]
    pub reward: RewardConfig,
}

/// Errors reading an env file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Unreadable file.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// OS error.
        cause: std::io::Error,
    },
    /// Bad TOML or unknown keys.
    #[error("{path}: invalid env file: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// Parser message.
        msg: String,
    },
}

impl EnvSpec {
    /// This env as an exported policy runs in it: the policy's budget (its observations include
    /// the budget's features), granularity, observation version and training length.
    pub fn for_policy(&self, manifest: &ahr_policy::export::Manifest) -> Self {
        let mut spec = self.clone();
        spec.reward.budget = manifest.budget;
        spec.env.granularity = manifest.granularity;
        spec.env.obs_version = manifest.obs.version;
        spec.env.positions_seen = manifest.obs.positions_seen;
        spec
    }

    /// Whether a policy can run in this env at all: a learned-eviction policy decides over
    /// candidate slots (`[env] evict` must be its own), any other over menu options (no `evict`).
    pub fn check_policy(&self, manifest: &ahr_policy::export::Manifest) -> Result<(), String> {
        let show = |e: Option<ahr_policy::evict::Eviction>| match e {
            Some(e) => format!(
                "evict = {{ budget = {}, store = \"{}\", decay = {}, score = \"{}\"{} }}",
                e.budget,
                e.store,
                e.decay,
                match e.score {
                    ahr_policy::evict::EvictScore::Weight => "weight",
                    ahr_policy::evict::EvictScore::Output => "output",
                },
                e.tier2
                    .map_or(String::new(), |t| format!(", tier2 = {{ size = {}, store = \"{}\" }}", t.size, t.store))
                    + &e.keep.map_or(String::new(), |k| format!(
                        ", keep = {{ class = \"{}\", nats = {} }}",
                        k.class.name(),
                        k.nats
                    ))
                    + &if e.tilt == 0 { String::new() } else { format!(", tilt = {}", e.tilt) }
            ),
            None => "no [env] evict".into(),
        };
        if manifest.evict != self.env.evict {
            return Err(format!(
                "the policy was trained with {}, this env has {}: run it with the env it was trained in",
                show(manifest.evict),
                show(self.env.evict)
            ));
        }
        Ok(())
    }

    /// Read and check an env file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| SpecError::Io { path: p.clone(), cause })?;
        let spec: Self = toml::from_str(&text).map_err(|e| SpecError::Parse { path: p.clone(), msg: e.to_string() })?;
        spec.validate().map_err(|e| SpecError::Parse { path: p, msg: e.to_string() })?;
        Ok(spec)
    }

    /// The model this env runs: `model` without the env's excluded options, with its `recent:W`
    /// options and schedules added to its menu.
    pub fn model(&self, model: ahr_tpa::Model) -> Result<ahr_tpa::Model, String> {
        let model = model.without(&self.env.exclude).map_err(|e| format!("[env] exclude: {e}"))?;
        let model = model.with_recent(&self.env.recent).map_err(|e| format!("[env] recent: {e}"))?;
        let model = model.with_timed(&self.env.schedules).map_err(|e| format!("[env] schedules: {e}"))?;
        // Learned eviction writes every token at its store: the menu must hold it (checked here,
        // before a run writes anything, not at the first episode).
        if let Some(e) = self.env.evict {
            let cfg = model.config();
            cfg.option_index(e.store).map_err(|err| format!("[env] evict: {err}"))?;
            if let Some(tier) = e.tier2 {
                cfg.option_index(tier.store).map_err(|err| format!("[env] evict: tier2: {err}"))?;
            }
            e.check_tier2(cfg.exact_option()).map_err(|err| format!("[env] evict: {err}"))?;
        }
        match self.env.review {
            Some(at @ ahr_tpa::ReviewAt::Age { age, .. }) => {
                let extra = at.menu_extras(model.config());
                if let Some(o) = extra.iter().find(|o| self.env.schedules.contains(o)) {
                    return Err(format!(
                        "[env] schedules: {o} is what a review at age {age} produces (only reviews may choose it)"
                    ));
                }
                model.with_timed(&extra).map_err(|e| format!("[env] review: {e}"))
            }
            Some(ahr_tpa::ReviewAt::Spike { .. }) => {
                if !model.config().menu.contains(&ahr_tpa::StoreOption::Drop) {
                    return Err(
                        "[env] review = \"spike\": a review keeps or drops its token, so the model's menu needs `drop`"
                            .into(),
                    );
                }
                Ok(model)
            }
            None => Ok(model),
        }
    }

    /// Range checks.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.env.streams == 0 {
            return Err(Invalid::new("[env] streams", "must be at least 1"));
        }
        if self.env.recent.contains(&0) {
            return Err(Invalid::new("[env] recent", "windows must be at least 1 query"));
        }
        if self.env.paired && !self.env.streams.is_multiple_of(2) {
            return Err(Invalid::new(
                "[env] streams",
                format!("must be even for a partner baseline (it pairs the streams), found {}", self.env.streams),
            ));
        }
        if self.env.paired && self.env.granularity != Granularity::PerToken {
            return Err(Invalid::new(
                "[env] granularity",
                "a partner baseline pairs the streams: it needs \"per-token\"",
            ));
        }
        if matches!(self.env.review, Some(ahr_tpa::ReviewAt::Age { age: 0, .. })) {
            return Err(Invalid::new("[env] review", "must be at least 1 query"));
        }
        if self.env.review.is_some() && self.env.granularity != Granularity::PerToken {
            return Err(Invalid::new("[env] review", "needs granularity = \"per-token\""));
        }
        if let Some(e) = self.env.evict {
            if e.budget == 0 {
                return Err(Invalid::new("[env] evict", "budget must be at least 1 token"));
            }
            if e.tilt.unsigned_abs() as usize >= e.budget {
                return Err(Invalid::new(
                    "[env] evict",
                    format!(
                        "tilt {} leaves a layer without budget: keep |tilt| below the budget ({})",
                        e.tilt, e.budget
                    ),
                ));
            }
            if !(0.0..1.0).contains(&e.decay) {
                return Err(Invalid::new("[env] evict", format!("decay must be in [0, 1), found {}", e.decay)));
            }
            if e.store.is_timed() || e.store == ahr_tpa::StoreOption::Drop {
                return Err(Invalid::new(
                    "[env] evict",
                    format!("store must be a plain kept option, found `{}`", e.store),
                ));
            }
            if let Some(tier) = e.tier2
                && (tier.size == 0 || !matches!(tier.store, ahr_tpa::StoreOption::Rank(_)))
            {
                return Err(Invalid::new(
                    "[env] evict",
                    format!("tier2 needs size ≥ 1 and a plain `rank:ρ` store, found {} at `{}`", tier.size, tier.store),
                ));
            }
            if self.env.review.is_some() {
                return Err(Invalid::new("[env] evict", "and [env] review are two kinds of second decision: pick one"));
            }
            if self.env.granularity != Granularity::PerToken {
                return Err(Invalid::new("[env] evict", "needs granularity = \"per-token\""));
            }
        }
        if ahr_policy::obs::global_features(self.env.obs_version).is_none() {
            return Err(Invalid::new(
                "[env] obs_version",
                format!("{} is unknown (1 to {})", self.env.obs_version, ahr_policy::obs::MAX_OBS_VERSION),
            ));
        }
        if let Some(o) = self.env.schedules.iter().find(|o| !matches!(o, ahr_tpa::StoreOption::Schedule { .. })) {
            return Err(Invalid::new("[env] schedules", format!("take `first/W/then` options, found `{o}`")));
        }
        if let Some(b) = self.reward.budget
            && !(0.0..=1.0).contains(&b)
        {
            return Err(Invalid::new("[reward] budget", format!("must lie in [0, 1], found {b}")));
        }
        if let Some(s) = self.reward.budget_start {
            let Some(b) = self.reward.budget else {
                return Err(Invalid::new("[reward] budget_start", "needs a budget to tighten to"));
            };
            if !(b..=1.0).contains(&s) {
                return Err(Invalid::new("[reward] budget_start", format!("must lie in [budget = {b}, 1], found {s}")));
            }
        }
        if !(self.reward.budget_anneal > 0.0 && self.reward.budget_anneal <= 1.0) {
            return Err(Invalid::new(
                "[reward] budget_anneal",
                format!("must lie in (0, 1], found {}", self.reward.budget_anneal),
            ));
        }
        Ok(())
    }
}
