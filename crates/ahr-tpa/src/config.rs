//! Model shape: the resolved config saved beside every checkpoint.
//!
//! `ModelConfig` is a plain serde struct rather than burn's `#[derive(Config)]`, because burn's
//! derive cannot reject unknown keys and a typo in a preset must fail loudly.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
}

impl StoreOption {
    /// `W` for `recent:W`, the number of later queries that see the token before it expires.
    pub fn window(self) -> Option<usize> {
        match self {
            StoreOption::Recent(w) => Some(w),
            _ => None,
        }
    }

    /// The expiry rule of `recent:W`, in one place: a token written at position `t` is seen by
    /// the queries `t + 1 … t + W` and no longer from `t + W + 1` on (`None`: never expires).
    pub fn expires_at(self, t: usize) -> Option<usize> {
        self.window().map(|w| t + w + 1)
    }

    /// The option whose representation is stored: the exact one (`exact`) for `recent:W`.
    pub fn stored_as(self, exact: StoreOption) -> StoreOption {
        if self.window().is_some() { exact } else { self }
    }
}

impl fmt::Display for StoreOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreOption::Drop => write!(f, "drop"),
            StoreOption::Rank(r) => write!(f, "rank:{r}"),
            StoreOption::Full => write!(f, "full"),
            StoreOption::Recent(w) => write!(f, "recent:{w}"),
        }
    }
}

impl FromStr for StoreOption {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim() {
            "drop" => Ok(StoreOption::Drop),
            "full" => Ok(StoreOption::Full),
            other => {
                let count = |prefix: &str| other.strip_prefix(prefix)?.parse::<usize>().ok().filter(|&n| n > 0);
                match (count("rank:"), count("recent:")) {
                    (Some(r), _) => Ok(StoreOption::Rank(r)),
                    (_, Some(w)) => Ok(StoreOption::Recent(w)),
                    _ => Err(format!(
                        "unknown storage option `{other}`: expected `drop`, `rank:<n>` with n ≥ 1, `full` or \
                         `recent:<w>` with w ≥ 1"
                    )),
                }
            }
        }
    }
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
        cfg.validate().map_err(|msg| Error::config(origin, msg))?;
        Ok(cfg)
    }

    /// Read `config.json` (the resolved config of a model directory).
    pub fn load_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::parse(path, e.to_string()))?;
        cfg.validate().map_err(|msg| Error::config(path, msg))?;
        Ok(cfg)
    }

    /// Check internal consistency; the message names the offending field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("`{name}` must be at least 1, found 0"));
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("`head_dim` must be even for RoPE, found {}", self.head_dim));
        }
        if self.menu.is_empty() {
            return Err("`menu` must name at least one storage option".into());
        }
        if self.menu.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "`menu` must list distinct options from cheapest to richest (drop, rank:1, …, full, recent:16, …), \
                 found [{}]",
                self.menu.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        if self.menu.iter().all(|o| matches!(o, StoreOption::Recent(_))) || self.exact_option() == StoreOption::Drop {
            return Err("`menu` needs an option richer than `drop` (it is the exact option)".into());
        }
        match self.attention {
            AttentionKind::Tpa => {
                if self.kv_rank_max == 0 {
                    return Err("`kv_rank_max` must be at least 1 for tpa".into());
                }
                for o in &self.menu {
                    if let StoreOption::Rank(r) = o
                        && *r > self.kv_rank_max
                    {
                        return Err(format!("`menu` option rank:{r} exceeds `kv_rank_max` = {}", self.kv_rank_max));
                    }
                }
            }
            AttentionKind::Mha | AttentionKind::Gqa => {
                if let Some(o) = self.menu.iter().find(|o| matches!(o, StoreOption::Rank(_))) {
                    return Err(format!(
                        "`menu` option {o} needs `attention = \"tpa\"`; mha and gqa take `drop` and `full`"
                    ));
                }
                let kv = self.kv_heads();
                if kv == 0 || !self.n_heads.is_multiple_of(kv) {
                    return Err(format!("`kv_heads` = {kv} must divide `n_heads` = {}", self.n_heads));
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

    /// Index of the exact option in the menu.
    pub fn exact_index(&self) -> usize {
        self.menu
            .iter()
            .rposition(|o| !matches!(o, StoreOption::Recent(_)))
            .expect("validated menu has an exact option")
    }

    /// This config with `recent:W` appended to the menu for each window not already there
    /// (what an environment's `recent` setting does to the model it runs).
    pub fn with_recent(&self, windows: &[usize]) -> std::result::Result<Self, String> {
        let mut cfg = self.clone();
        for &w in windows {
            if w == 0 {
                return Err("a `recent` window must be at least 1 query".into());
            }
            if !cfg.menu.contains(&StoreOption::Recent(w)) {
                cfg.menu.push(StoreOption::Recent(w));
            }
        }
        cfg.menu.sort();
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
        assert!(mha.validate().unwrap_err().contains("rank:1"));
    }
}
