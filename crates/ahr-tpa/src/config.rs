//! Model shape: the resolved config saved beside every checkpoint.
//!
//! `ModelConfig` is a plain serde struct rather than burn's `#[derive(Config)]`, because burn's
//! derive cannot reject unknown keys and a typo in a preset must fail loudly.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Invalid, Result};

/// How one token's keys and values are kept in the cache for one layer.
///
/// The menu order runs from the cheapest to the richest option; the richest is the *exact*
/// option every token uses at its own step (DESIGN.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreOption {
    /// Not cached: later queries do not see the token.
    Drop,
    /// Nested rank-ρ factors: components `1..=ρ` of the TPA factors.
    Rank(usize),
    /// A dense K/V from separate projections, as in MHA.
    Full,
    /// Kept at the exact option for the next `W` queries (`t+1 … t+W`), then evicted: a
    /// write-time choice that expires, so a token can matter while it is recent (StreamingLLM's
    /// window, chosen per token). Cheaper than it looks: it is held for `W + 1` steps at most.
    Recent(usize),
    /// A demotion schedule `first/W/then` (or `first/W/then/W2`): kept as `first` for the next
    /// `W` queries, then as `then` (for the `W2` queries after those, then evicted), where `then`
    /// must be reachable from what `first` stores without recomputation (nested `rank:ρ →
    /// rank:ρ'` with ρ' < ρ keeps components `1..=ρ'`; anything → `drop`). A `full` token demoted
    /// to `rank:ρ'` keeps its rank-ρ' factors beside the dense K/V while it is dense, and is
    /// charged for both (DESIGN.md §10).
    Schedule {
        /// How the token is kept while recent.
        first: Form,
        /// `W`: the later queries that see it as `first`.
        window: usize,
        /// How it is kept afterwards.
        then: Form,
        /// `W2`: the queries after those that see it as `then` before it is evicted (`None`: to
        /// the end).
        then_for: Option<usize>,
    },
}

/// A plain storage form, one phase of a [`StoreOption::Schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Form {
    /// Not cached.
    Drop,
    /// Nested rank-ρ factors.
    Rank(usize),
    /// Dense K/V.
    Full,
}

impl Form {
    /// The plain option of this form.
    pub fn option(self) -> StoreOption {
        match self {
            Form::Drop => StoreOption::Drop,
            Form::Rank(r) => StoreOption::Rank(r),
            Form::Full => StoreOption::Full,
        }
    }

    /// The form of a plain option (`None` for `recent:W` and schedules).
    pub fn of(option: StoreOption) -> Option<Form> {
        match option {
            StoreOption::Drop => Some(Form::Drop),
            StoreOption::Rank(r) => Some(Form::Rank(r)),
            StoreOption::Full => Some(Form::Full),
            _ => None,
        }
    }
}

impl StoreOption {
    /// `W` for `recent:W` and schedules, the number of later queries that see the token in its
    /// first form.
    pub fn window(self) -> Option<usize> {
        match self {
            StoreOption::Recent(w) | StoreOption::Schedule { window: w, .. } => Some(w),
            _ => None,
        }
    }

    /// What happens to a token written at `t` later on, the one rule of timed options: from query
    /// position `at = t + W + 1` on it is kept as `then` (`drop` = evicted). `None`: never changes.
    pub fn later(self, t: usize) -> Option<(usize, StoreOption)> {
        match self {
            StoreOption::Recent(w) => Some((t + w + 1, StoreOption::Drop)),
            StoreOption::Schedule { window, then, .. } => Some((t + window + 1, then.option())),
            _ => None,
        }
    }

    /// The first query position that no longer sees a token written at `t` because its option
    /// expires (`recent:W` and schedules to `drop`: t + W + 1; `first/W/then/W2`: t + W + W2 + 1);
    /// `None`: never expires.
    pub fn expires_at(self, t: usize) -> Option<usize> {
        match self {
            StoreOption::Schedule { window, then_for: Some(w2), .. } => Some(t + window + w2 + 1),
            _ => self.later(t).filter(|(_, then)| *then == StoreOption::Drop).map(|(at, _)| at),
        }
    }

    /// The plain option a token is kept as while query `q` (≥ t) runs: its first form before
    /// [`StoreOption::later`], the later one from then on, `drop` once expired (`exact` for
    /// `recent:W`'s first form).
    pub fn form_at(self, exact: StoreOption, t: usize, q: usize) -> StoreOption {
        match (self.later(t), self.expires_at(t)) {
            (_, Some(end)) if q >= end => StoreOption::Drop,
            (Some((at, then)), _) if q >= at => then,
            _ => self.stored_as(exact),
        }
    }

    /// The plain option whose representation is stored first: the exact one (`exact`) for
    /// `recent:W`, `first` for a schedule.
    pub fn stored_as(self, exact: StoreOption) -> StoreOption {
        match self {
            StoreOption::Recent(_) => exact,
            StoreOption::Schedule { first, .. } => first.option(),
            plain => plain,
        }
    }

    /// The plain option kept beside the first form so that the later one needs no recomputation
    /// (`full/W/rank:ρ` keeps rank-ρ factors beside the dense K/V); charged while held.
    pub fn shadow(self) -> Option<StoreOption> {
        match self {
            StoreOption::Schedule { first: Form::Full, then: then @ Form::Rank(_), .. } => Some(then.option()),
            _ => None,
        }
    }

    /// Whether the option changes with time (`recent:W`, schedules).
    pub fn is_timed(self) -> bool {
        self.window().is_some()
    }
}

impl fmt::Display for StoreOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreOption::Drop => write!(f, "drop"),
            StoreOption::Rank(r) => write!(f, "rank:{r}"),
            StoreOption::Full => write!(f, "full"),
            StoreOption::Recent(w) => write!(f, "recent:{w}"),
            StoreOption::Schedule { first, window, then, then_for } => {
                write!(f, "{}/{window}/{}", first.option(), then.option())?;
                match then_for {
                    Some(w2) => write!(f, "/{w2}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl FromStr for StoreOption {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        match s.split('/').collect::<Vec<_>>()[..] {
            [first, window, then] => {
                return parse_schedule(first, window, then, None).map_err(|e| format!("schedule `{s}`: {e}"));
            }
            [first, window, then, then_for] => {
                return parse_schedule(first, window, then, Some(then_for)).map_err(|e| format!("schedule `{s}`: {e}"));
            }
            _ => {}
        }
        match s {
            "drop" => Ok(StoreOption::Drop),
            "full" => Ok(StoreOption::Full),
            other => {
                let count = |prefix: &str| other.strip_prefix(prefix)?.parse::<usize>().ok().filter(|&n| n > 0);
                match (count("rank:"), count("recent:")) {
                    (Some(r), _) => Ok(StoreOption::Rank(r)),
                    (_, Some(w)) => Ok(StoreOption::Recent(w)),
                    _ => Err(format!(
                        "unknown storage option `{other}`: expected `drop`, `rank:<n>` with n ≥ 1, `full`, \
                         `recent:<w>` with w ≥ 1 or a schedule `<first>/<w>/<then>` (e.g. full/16/rank:1)"
                    )),
                }
            }
        }
    }
}

/// `first/W/then[/W2]`, checking that `then` is reachable from what `first` stores.
fn parse_schedule(
    first: &str,
    window: &str,
    then: &str,
    then_for: Option<&str>,
) -> std::result::Result<StoreOption, String> {
    let form = |s: &str| {
        s.parse::<StoreOption>().ok().and_then(Form::of).ok_or_else(|| format!("`{s}` is not drop, rank:<n> or full"))
    };
    let (first, then) = (form(first)?, form(then)?);
    let count = |w: &str| {
        w.trim()
            .parse::<usize>()
            .ok()
            .filter(|&w| w > 0)
            .ok_or_else(|| format!("the window `{w}` must be a whole number ≥ 1"))
    };
    let window = count(window)?;
    let then_for = then_for.map(count).transpose()?;
    if then == Form::Drop && then_for.is_some() {
        return Err("a token demoted to drop has no second window".into());
    }
    let reachable = match (first, then) {
        (Form::Drop, _) => false,
        (_, Form::Drop) => true,
        (Form::Rank(a), Form::Rank(b)) => b < a,
        (Form::Full, Form::Rank(_)) => true,
        (_, Form::Full) => false,
    };
    if !reachable {
        return Err(format!(
            "{} cannot be demoted to {} (later forms must be cheaper: rank:ρ → rank:ρ' < ρ, full → rank:ρ, \
             anything → drop)",
            first.option(),
            then.option()
        ));
    }
    Ok(StoreOption::Schedule { first, window, then, then_for })
}

impl TryFrom<String> for StoreOption {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StoreOption> for String {
    fn from(o: StoreOption) -> Self {
        o.to_string()
    }
}

/// Attention family on the shared skeleton.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// Tensor Product Attention with contextual factors (nested ranks, optional dense path).
    Tpa,
    /// Multi-head attention (one K/V head per query head).
    Mha,
    /// Grouped-query attention with `kv_heads` K/V heads (1 = MQA).
    Gqa,
}

/// The shape of a model. Every field is required in files except those with documented defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads h.
    pub n_heads: usize,
    /// Head dimension d_h (even: RoPE rotates halves).
    pub head_dim: usize,
    /// Attention family.
    #[serde(default = "default_attention")]
    pub attention: AttentionKind,
    /// K/V heads for `gqa` (ignored otherwise).
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Query rank R_Q (TPA only). `0` gives TPA-KVonly: a standard query projection, with only
    /// K and V factorised (the paper's variant; the cache is the same).
    #[serde(default = "default_q_rank")]
    pub q_rank: usize,
    /// Number of K/V factor components R_max (TPA only).
    #[serde(default = "default_kv_rank")]
    pub kv_rank_max: usize,
    /// Storage options, cheapest first: `drop`, `rank:ρ`…, `full`, then any `recent:W` (kept
    /// exact for W queries). The last option that is not `recent:W` is the exact option.
    pub menu: Vec<StoreOption>,
    /// Biases on the six TPA factor projections (T6 has none; off by default).
    #[serde(default)]
    pub factor_bias: bool,
    /// SwiGLU MLP in each block (MQAR presets use none, as Zoology does).
    #[serde(default = "default_true")]
    pub mlp: bool,
    /// Learned absolute position embeddings for positions `0..max_positions` added to the token
    /// embedding (0 = none, as T6). Zoology's MQAR attention baseline uses them; RoPE stays.
    #[serde(default)]
    pub max_positions: usize,
    /// LM head tied to the token embedding.
    #[serde(default = "default_true")]
    pub tied_embeddings: bool,
    /// RoPE base.
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
}

fn default_attention() -> AttentionKind {
    AttentionKind::Tpa
}
fn default_q_rank() -> usize {
    4
}
fn default_kv_rank() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_rope_base() -> f64 {
    10_000.0
}
fn default_norm_eps() -> f64 {
    f32::EPSILON as f64
}

impl ModelConfig {
    /// Test preset: odd sizes that catch layout bugs (d_h = 12, 3 heads, ranks up to 3).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 37,
            d_model: 24,
            n_layers: 2,
            n_heads: 3,
            head_dim: 12,
            attention: AttentionKind::Tpa,
            kv_heads: None,
            q_rank: 3,
            kv_rank_max: 3,
            factor_bias: true,
            menu: vec![
                StoreOption::Drop,
                StoreOption::Rank(1),
                StoreOption::Rank(2),
                StoreOption::Rank(3),
                StoreOption::Full,
            ],
            mlp: true,
            max_positions: 0,
            tied_embeddings: false,
            rope_base: 10_000.0,
            norm_eps: 1e-6,
        }
    }

    /// The MQAR preset (Zoology point V = 8192): TPA-KVonly, 2 layers of 3 heads × 16, no MLP,
    /// menu `{drop, rank:1, rank:2, full}` (`configs/model/mqar.toml`).
    pub fn mqar() -> Self {
        Self {
            vocab_size: 8192,
            d_model: 48,
            n_layers: 2,
            n_heads: 3,
            head_dim: 16,
            attention: AttentionKind::Tpa,
            kv_heads: None,
            q_rank: 0,
            kv_rank_max: 2,
            factor_bias: true,
            menu: vec![StoreOption::Drop, StoreOption::Rank(1), StoreOption::Rank(2), StoreOption::Full],
            mlp: false,
            max_positions: 0,
            tied_embeddings: true,
            rope_base: 10_000.0,
            norm_eps: default_norm_eps(),
        }
    }

    /// Parse a model config from TOML text (`[model]` table or top-level keys).
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::parse(origin, e.to_string()))?;
        cfg.validate().map_err(|e| Error::config(origin, e.to_string()))?;
        Ok(cfg)
    }

    /// Read `config.json` (the resolved config of a model directory).
    pub fn load_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::parse(path, e.to_string()))?;
        cfg.validate().map_err(|e| Error::config(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Check internal consistency; the message names the offending field.
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Invalid::new(format!("`{name}`"), "must be at least 1, found 0"));
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Invalid::new("`head_dim`", format!("must be even for RoPE, found {}", self.head_dim)));
        }
        if self.menu.is_empty() {
            return Err(Invalid::new("`menu`", "must name at least one storage option"));
        }
        if self.menu.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Invalid::new(
                "`menu`",
                format!(
                    "must list distinct options from cheapest to richest (drop, rank:1, …, full, recent:16, …), \
                     found [{}]",
                    self.menu.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if self.menu.iter().all(|o| o.is_timed()) || self.exact_option() == StoreOption::Drop {
            return Err(Invalid::new("`menu`", "needs an option richer than `drop` (it is the exact option)"));
        }
        match self.attention {
            AttentionKind::Tpa => {
                if self.kv_rank_max == 0 {
                    return Err(Invalid::new("`kv_rank_max`", "must be at least 1 for tpa"));
                }
                for o in &self.menu {
                    let ranks = [Some(*o), Some(o.stored_as(StoreOption::Drop)), o.later(0).map(|(_, then)| then)];
                    if let Some(r) = ranks.into_iter().flatten().find_map(|f| match f {
                        StoreOption::Rank(r) if r > self.kv_rank_max => Some(r),
                        _ => None,
                    }) {
                        return Err(Invalid::new(
                            "`menu`",
                            format!("option {o} needs rank:{r}, above `kv_rank_max` = {}", self.kv_rank_max),
                        ));
                    }
                    if o.stored_as(StoreOption::Drop) == StoreOption::Full && !self.menu.contains(&StoreOption::Full) {
                        return Err(Invalid::new(
                            "`menu`",
                            format!("option {o} keeps tokens `full`; the menu needs `full` too"),
                        ));
                    }
                }
            }
            AttentionKind::Mha | AttentionKind::Gqa => {
                if let Some(o) = self.menu.iter().find(|o| {
                    matches!(o.stored_as(StoreOption::Full), StoreOption::Rank(_))
                        || matches!(o.later(0), Some((_, StoreOption::Rank(_))))
                }) {
                    return Err(Invalid::new(
                        "`menu`",
                        format!("option {o} needs `attention = \"tpa\"`; mha and gqa take `drop` and `full`"),
                    ));
                }
                let kv = self.kv_heads();
                if kv == 0 || !self.n_heads.is_multiple_of(kv) {
                    return Err(Invalid::new("`kv_heads`", format!("{kv} must divide `n_heads` = {}", self.n_heads)));
                }
            }
        }
        Ok(())
    }

    /// K/V heads: `n_heads` for TPA and MHA, `kv_heads` (default 1) for GQA.
    pub fn kv_heads(&self) -> usize {
        match self.attention {
            AttentionKind::Gqa => self.kv_heads.unwrap_or(1),
            _ => self.n_heads,
        }
    }

    /// The richest menu option, used by every token at its own step (the last one that does
    /// not expire).
    pub fn exact_option(&self) -> StoreOption {
        self.menu[self.exact_index()]
    }

    /// The `rank:ρ` options of the menu below the exact option: what factor fitting
    /// ([`crate::Model::factor_fit_loss`]) trains, in menu order.
    pub fn fit_ranks(&self) -> Vec<usize> {
        let exact = self.exact_option();
        self.menu
            .iter()
            .filter(|o| **o != exact)
            .filter_map(|o| match o {
                StoreOption::Rank(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// Index of the exact option in the menu.
    pub fn exact_index(&self) -> usize {
        self.menu.iter().rposition(|o| !o.is_timed()).expect("validated menu has an exact option")
    }

    /// This config with `recent:W` appended to the menu for each window not already there
    /// (what an environment's `recent` setting does to the model it runs).
    pub fn with_recent(&self, windows: &[usize]) -> std::result::Result<Self, Invalid> {
        if windows.contains(&0) {
            return Err(Invalid::new("`recent`", "a window must be at least 1 query"));
        }
        self.with_timed(&windows.iter().map(|&w| StoreOption::Recent(w)).collect::<Vec<_>>())
    }

    /// This config with timed options (`recent:W`, schedules) added to the menu where missing:
    /// they store forms the weights already serve, so the model needs nothing else.
    pub fn with_timed(&self, options: &[StoreOption]) -> std::result::Result<Self, Invalid> {
        let mut cfg = self.clone();
        for &o in options {
            if !o.is_timed() {
                return Err(Invalid::new(o.to_string(), "is not a timed option (recent:W or first/W/then)"));
            }
            if !cfg.menu.contains(&o) {
                cfg.menu.push(o);
            }
        }
        cfg.menu.sort();
        cfg.validate()?;
        Ok(cfg)
    }

    /// This config with `options` taken off the menu (what an environment's `exclude` setting
    /// does to the model it runs: a policy and every rule judged with it never pick them). The
    /// weights serve the rest unchanged; the exact option stays, so memory is still measured
    /// against it.
    pub fn without(&self, options: &[StoreOption]) -> std::result::Result<Self, Invalid> {
        let mut cfg = self.clone();
        for &o in options {
            if o == self.exact_option() {
                return Err(Invalid::new(o.to_string(), "is the exact option (memory is measured against it)"));
            }
            let i = cfg.option_index(o).map_err(|e| Invalid::new("`menu`", e))?;
            cfg.menu.remove(i);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether the query is a standard projection (MHA/GQA, or TPA-KVonly with `q_rank = 0`).
    pub fn has_dense_query(&self) -> bool {
        self.attention != AttentionKind::Tpa || self.q_rank == 0
    }

    /// Whether the model has dense K/V projections (a `full` option, or MHA/GQA).
    pub fn has_dense_kv(&self) -> bool {
        self.menu.contains(&StoreOption::Full) || self.attention != AttentionKind::Tpa
    }

    /// Index of `option` in the menu, or an error naming the menu.
    pub fn option_index(&self, option: StoreOption) -> std::result::Result<usize, String> {
        self.menu.iter().position(|o| *o == option).ok_or_else(|| {
            format!(
                "option {option} is not in the model's menu [{}]",
                self.menu.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// SwiGLU hidden width ⌊8d/3⌋, as T6.
    pub fn mlp_hidden(&self) -> usize {
        8 * self.d_model / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_typos() {
        for s in ["drop", "rank:1", "rank:12", "full", "recent:16"] {
            assert_eq!(s.parse::<StoreOption>().unwrap().to_string(), s);
        }
        assert!("rank:0".parse::<StoreOption>().is_err());
        assert!("recent:0".parse::<StoreOption>().is_err());
        assert!(StoreOption::Full < StoreOption::Recent(1));
        // Expiring options follow the exact one, which stays the last that does not expire.
        let cfg = ModelConfig::mqar().with_recent(&[64, 16]).unwrap();
        assert_eq!(cfg.menu.last(), Some(&StoreOption::Recent(64)));
        assert_eq!(cfg.exact_option(), StoreOption::Full);
        assert_eq!(cfg.exact_index(), 3);
        assert!(ModelConfig::mqar().with_recent(&[0]).is_err());
        assert!("dense".parse::<StoreOption>().is_err());
        assert!(StoreOption::Drop < StoreOption::Rank(1));
        assert!(StoreOption::Rank(4) < StoreOption::Full);
    }

    #[test]
    fn without_takes_options_off_the_menu_but_never_the_exact_one() {
        let cfg = ModelConfig::mqar().without(&[StoreOption::Rank(1), StoreOption::Rank(2)]).unwrap();
        assert_eq!(cfg.menu, vec![StoreOption::Drop, StoreOption::Full]);
        assert_eq!(cfg.exact_option(), StoreOption::Full);
        // Windows added afterwards keep the plain options first.
        let windows = cfg.with_recent(&[4]).unwrap();
        assert_eq!(windows.menu, vec![StoreOption::Drop, StoreOption::Full, StoreOption::Recent(4)]);
        let exact = ModelConfig::mqar().without(&[StoreOption::Full]).unwrap_err();
        assert!(exact.reason.contains("exact option"), "{}", exact.reason);
        let absent = ModelConfig::mqar().without(&[StoreOption::Rank(3)]).unwrap_err();
        assert!(absent.reason.contains("not in the model's menu [drop, rank:1, rank:2, full]"), "{}", absent.reason);
    }

    #[test]
    fn schedules_parse_check_reachability_and_follow_one_rule() {
        for s in ["full/16/rank:1", "rank:2/8/rank:1", "rank:2/3/drop", "full/1/drop", "full/8/rank:1/56"] {
            assert_eq!(s.parse::<StoreOption>().unwrap().to_string(), s);
        }
        for bad in [
            "rank:1/8/rank:2",
            "rank:1/8/full",
            "drop/4/drop",
            "full/0/rank:1",
            "full/x/rank:1",
            "full/8/recent:2",
            "full/8/drop/4",
            "full/8/rank:1/0",
        ] {
            assert!(bad.parse::<StoreOption>().is_err(), "{bad}");
        }
        let s: StoreOption = "full/2/rank:1".parse().unwrap();
        let exact = StoreOption::Full;
        // Written at 5: queries 5, 6, 7 see it dense, 8 on at rank 1; it never expires.
        assert_eq!(s.later(5), Some((8, StoreOption::Rank(1))));
        assert_eq!(s.expires_at(5), None);
        assert_eq!(s.form_at(exact, 5, 7), StoreOption::Full);
        assert_eq!(s.form_at(exact, 5, 8), StoreOption::Rank(1));
        assert_eq!(s.shadow(), Some(StoreOption::Rank(1)));
        let gone: StoreOption = "rank:2/2/drop".parse().unwrap();
        assert_eq!(gone.expires_at(5), Some(8));
        assert_eq!(gone.form_at(exact, 5, 8), StoreOption::Drop);
        assert_eq!(StoreOption::Recent(2).form_at(exact, 5, 6), StoreOption::Full);
        // Dense for queries 6–7, rank 1 for 8–10, evicted from 11 on.
        let three: StoreOption = "full/2/rank:1/3".parse().unwrap();
        assert_eq!(three.expires_at(5), Some(11));
        assert_eq!(three.form_at(exact, 5, 10), StoreOption::Rank(1));
        assert_eq!(three.form_at(exact, 5, 11), StoreOption::Drop);
        assert_eq!(StoreOption::Recent(2).expires_at(5), StoreOption::Recent(2).later(5).map(|l| l.0));
        // Menus take schedules after the plain options; ranks are checked against the model.
        let cfg = ModelConfig::mqar().with_timed(&[s, StoreOption::Recent(4)]).unwrap();
        assert_eq!(cfg.exact_option(), StoreOption::Full);
        assert_eq!(cfg.menu.last(), Some(&s));
        assert!(
            ModelConfig::mqar()
                .with_timed(&["rank:8/2/rank:1".parse().unwrap()])
                .unwrap_err()
                .reason
                .contains("rank:8")
        );
        assert!(ModelConfig::mqar().with_timed(&[StoreOption::Full]).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_menus_fail_with_the_field_name() {
        let path = Path::new("m.toml");
        let good = toml::to_string(&ModelConfig::tiny()).unwrap();
        assert_eq!(ModelConfig::from_toml_str(&good, path).unwrap(), ModelConfig::tiny());
        let typo = format!("{good}\nn_layer = 3\n");
        let err = ModelConfig::from_toml_str(&typo, path).unwrap_err().to_string();
        assert!(err.contains("n_layer") && err.contains("m.toml"), "{err}");
        let unordered = good.replace("\"rank:1\",", "").replace("\"drop\",", "\"rank:1\", \"drop\",");
        let err = ModelConfig::from_toml_str(&unordered, path).unwrap_err().to_string();
        assert!(err.contains("menu"), "{err}");
        let mut mha = ModelConfig::tiny();
        mha.attention = AttentionKind::Mha;
        assert!(mha.validate().unwrap_err().reason.contains("rank:1"));
    }
}
