//! What a learned evicter does (`ahr analyze` on a policy trained with `[env] evict`).
//!
//! The policy runs deterministically over held-out sequences in its environment; the rule it
//! starts from — `tova-ema` at the eviction's decay, or `tova-out` with `score = "output"`, with
//! the eviction's second tier where it has one (`tova-tiers`; a token then "leaves" when it leaves
//! the first tier) — and
//! TOVA run with their own caches at the same budget (so all three hold the same number of tokens
//! at every step: the same memory). Reported: the metric of each with the policy's paired margins
//! over the two rules; per layer, the share of tokens that leave at another query than under the
//! start rule and the shares only one of the two keeps to the end; per token class (the task's roles for MQAR, the byte's ASCII
//! class for byte-level text), how long each keeps a token.

use std::collections::BTreeMap;

use ahr_tasks::TokenRole;
use ahr_tpa::cost;
use ahr_train::EnvRun;
use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use crate::analysis::{AnalyzeArgs, Outcome};
use crate::baseline::Baseline;
use crate::harness::Harness;
use crate::judge::{Paired, paired};
use crate::rules::NEVER;

/// The report of [`analyze_eviction`].
#[derive(Clone, Debug, Serialize)]
pub struct EvictionAnalysis {
    /// The task metric's name.
    pub metric: String,
    /// Whether a higher metric is better.
    pub higher_is_better: bool,
    /// Held-out sequences.
    pub sequences: usize,
    /// Their length.
    pub seq_len: usize,
    /// Tokens each layer holds at most (in the first tier where there are two), before the tilt.
    pub budget: usize,
    /// The budget moved from the last layer to the first ([`ahr_policy::evict::Eviction::tilt`]).
    pub tilt: i32,
    /// The second tier, as `"10 at rank:2"` (the last 10 let go, kept at rank 2), if any.
    pub tier2: Option<String>,
    /// The option every token is written at.
    pub store: String,
    /// The decay of the rule the policy starts from.
    pub decay: f32,
    /// The rule the policy starts from (`tova-ema` or `tova-out`, at `decay`), as `outcomes` names it.
    pub start: String,
    /// The policy, the rule it starts from and TOVA, in that order, at the same budget.
    pub outcomes: Vec<Outcome>,
    /// The policy's paired margin over each rule (positive: the policy is better), by rule name.
    pub margins: Vec<(String, Paired)>,
    /// Per layer, the policy's evictions against the start rule's.
    pub layers: Vec<LayerAgreement>,
    /// Per token class, how long the policy and the start rule keep a token.
    pub classes: Vec<ClassKeep>,
}

/// One layer's evictions, the policy's against the rule's, over every token of the held-out
/// sequences.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAgreement {
    /// The layer.
    pub layer: usize,
    /// Tokens compared.
    pub tokens: usize,
    /// Share whose eviction query differs (0 for the untrained policy).
    pub differs: f64,
    /// Share the policy keeps to the end and the rule evicts …
    pub kept_by_policy_only: f64,
    /// … and the other way round.
    pub kept_by_rule_only: f64,
}

/// How long the policy and the rule keep the tokens of one class (all layers together).
#[derive(Clone, Debug, Serialize)]
pub struct ClassKeep {
    /// The class.
    pub class: String,
    /// Tokens × layers in it.
    pub count: usize,
    /// Share the policy keeps to the end of the sequence …
    pub policy_kept: f64,
    /// … and the rule.
    pub rule_kept: f64,
    /// Mean queries a token is held for before it leaves (to the end for kept ones), policy …
    pub policy_held: f64,
    /// … and rule.
    pub rule_held: f64,
    /// Share the policy holds longer than the rule …
    pub longer: f64,
    /// … and shorter.
    pub shorter: f64,
}

/// The class of a token for [`ClassKeep`]: its role where the task has roles, else for
/// byte-level vocabularies the byte's ASCII class (the evicter's own features), else one class.
fn class_of(role: Option<TokenRole>, token: u32, byte_level: bool) -> String {
    if let Some(role) = role {
        return role.name().into();
    }
    if !byte_level {
        return "all tokens".into();
    }
    match u8::try_from(token) {
        Ok(b) if b.is_ascii_whitespace() => "whitespace".into(),
        Ok(b) if b.is_ascii_alphanumeric() => "letter or digit".into(),
        Ok(b) if b.is_ascii_punctuation() => "punctuation".into(),
        _ => "other".into(),
    }
}

/// A rule as the report names it: `tova-ema@full (budget=25,decay=0.5)`.
fn label(rule: &Baseline) -> String {
    format!("{} ({})", rule.name(), rule.setting())
}

/// Analyse a learned-eviction policy on held-out sequences of its env (module docs).
pub fn analyze_eviction(a: &AnalyzeArgs, dev: &Device) -> Result<EvictionAnalysis> {
    let run = EnvRun::load(&a.model, &a.env, dev)?;
    let (eviction, _) = run.eviction().map_err(|e| anyhow::anyhow!("{}: {e}", a.env.display()))?;
    let EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let fp = ahr_tpa::checkpoint::fingerprint(&a.model)?;
    let (manifest, net) = ahr_policy::export::load_policy(&a.policy, &cfg, &fp, dev)?;
    spec.check_policy(&manifest).map_err(|e| anyhow::anyhow!("policy {}: {e}", a.policy.display()))?;
    if !a.compare.is_empty() {
        bail!(
            "--compare: a learned-eviction policy is compared with the rules it starts from, not with other policies"
        );
    }
    let streams = spec.env.streams;
    let h = Harness::new(&model, &task, &spec, a.sequences, dev, false)?;
    let sequences = h.sequences;
    if sequences % streams != 0 {
        bail!("--sequences {sequences}: a whole number of rounds of the env's {streams} streams, please");
    }
    let metric = h.metric();
    let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
    eprintln!("policy: {} held-out sequences in its environment", sequences);
    let (policy, eval) = h.env_point("policy", "", &spec, manifest.policy.window, |obs| {
        net.act_deterministic(obs, &manifest.norm, dev)
    })?;
    let (budget, store) = (eviction.budget, eviction.store);
    // The rule the evicter starts from (with a second tier, "leaves" below means leaves the
    // first tier), and plain TOVA holding each layer's budget.
    let start = Baseline::of_eviction(&eviction);
    let tova = Baseline::tova_ema(budget, store, 0.0).tilted(eviction.tilt);
    eprintln!("rules: {} and {}", start.name(), tova.name());
    let (start_point, tova_point) = (h.rule_point(&start)?, h.rule_point(&tova)?);
    let margins = [(&start, &start_point), (&tova, &tova_point)]
        .into_iter()
        .filter_map(|(r, p)| Some((label(r), paired(&policy.per_sequence, &p.per_sequence, metric)?)))
        .collect();

    // Token by token: when each token leaves under the policy (from its environment) and under
    // the start rule (its own cache, the same sequences in the same order).
    let l_n = cfg.n_layers;
    let t_n = h.seq_len();
    let byte_level = (256..=264).contains(&cfg.vocab_size);
    // When each token leaves the cache, or with a second tier, the first tier.
    let left = if start.tier2().is_some() { &eval.demotions } else { &eval.evictions };
    let mut layers = vec![(0usize, 0usize, 0usize, 0usize); l_n];
    let mut classes: BTreeMap<String, [f64; 7]> = BTreeMap::new();
    for e in 0..sequences / streams {
        let batch = task.valid_batch(e as u64, streams);
        let judged = match start.tier2() {
            Some((size, to)) => crate::own_cache::tiered_evictions(&model, &batch, &start, size, to, dev)?.demoted_at,
            None => crate::own_cache::evictions(&model, &batch, &start, dev)?,
        };
        for b in 0..streams {
            let mut learned = vec![NEVER; t_n * l_n];
            for &(l, k, at) in &left[e * streams + b] {
                learned[k * l_n + l] = at as u32;
            }
            for k in 0..t_n {
                let role = batch.roles.get(b * t_n + k).copied();
                let class = classes.entry(class_of(role, batch.inputs[b * t_n + k], byte_level)).or_default();
                for (l, c) in layers.iter_mut().enumerate() {
                    let (p, r) = (learned[k * l_n + l], judged[(b * t_n + k) * l_n + l]);
                    c.0 += 1;
                    c.1 += usize::from(p != r);
                    c.2 += usize::from(p == NEVER && r != NEVER);
                    c.3 += usize::from(r == NEVER && p != NEVER);
                    let held = |at: u32| if at == NEVER { t_n - k } else { at as usize - k } as f64;
                    let (hp, hr) = (held(p), held(r));
                    let add = [
                        1.0,
                        f64::from(p == NEVER),
                        f64::from(r == NEVER),
                        hp,
                        hr,
                        f64::from(hp > hr),
                        f64::from(hp < hr),
                    ];
                    class.iter_mut().zip(add).for_each(|(x, a)| *x += a);
                }
            }
        }
    }
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(layer, (n, differs, policy_only, rule_only))| {
            let share = |x: usize| x as f64 / n.max(1) as f64;
            LayerAgreement {
                layer,
                tokens: n,
                differs: share(differs),
                kept_by_policy_only: share(policy_only),
                kept_by_rule_only: share(rule_only),
            }
        })
        .collect();
    let classes = classes
        .into_iter()
        .map(|(class, [n, pk, rk, ph, rh, longer, shorter])| ClassKeep {
            class,
            count: n as usize,
            policy_kept: pk / n,
            rule_kept: rk / n,
            policy_held: ph / n,
            rule_held: rh / n,
            longer: longer / n,
            shorter: shorter / n,
        })
        .collect();
    Ok(EvictionAnalysis {
        metric: metric.name().into(),
        higher_is_better: metric.higher_is_better(),
        sequences,
        seq_len: t_n,
        budget: eviction.budget,
        tilt: eviction.tilt,
        tier2: eviction.tier2.map(|t| format!("{} at {}", t.size, t.store)),
        store: eviction.store.to_string(),
        decay: eviction.decay,
        start: label(&start),
        outcomes: vec![
            Outcome::of_point("policy", &policy, exact_bytes),
            Outcome::of_point(&label(&start), &start_point, exact_bytes),
            Outcome::of_point(&label(&tova), &tova_point, exact_bytes),
        ],
        margins,
        layers,
        classes,
    })
}
