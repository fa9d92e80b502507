//! The cache rules a learned policy is judged against, as pure functions of one sequence (one
//! layer): each returns, per key, the first query position that no longer sees it
//! ([`NEVER`] = kept to the end), which `ahr_tpa::Choices::with_evictions` applies to any stored
//! option. References and deviations: `docs/DESIGN-NOTES.md` ("The judge's rule families").

/// Never evicted.
pub const NEVER: u32 = u32::MAX;

/// StreamingLLM (Xiao et al. 2023): the first `sinks` tokens stay; any other key k is visible to the `window`
/// queries after it (k+1 … k+window) and evicted from query k + window + 1 on.
pub fn window_evictions(seq_len: usize, sinks: usize, window: usize) -> Vec<u32> {
    (0..seq_len).map(|k| if k < sinks { NEVER } else { (k + window + 1) as u32 }).collect()
}

/// Per token of one sequence: the first query that no longer sees it when a value leaves once
/// the context shows it superseded. Token t (read as the value of the token before it, its key)
/// is superseded when that key comes back at q and the token after the return, at q + 1, is not
/// token t (a re-assignment, not a query answered with t): it is seen up to query q + 1 and gone
/// from q + 2. Causal: the decision uses tokens ≤ q + 1 only, and token equality, no role.
pub fn superseded_evictions(inputs: &[u32]) -> Vec<u32> {
    let t_n = inputs.len();
    // Per token id, the positions it occurs at (ascending).
    let mut at: std::collections::HashMap<u32, Vec<usize>> = std::collections::HashMap::new();
    for (q, &x) in inputs.iter().enumerate() {
        at.entry(x).or_default().push(q);
    }
    (0..t_n)
        .map(|t| {
            let Some(key) = t.checked_sub(1).map(|k| inputs[k]) else { return NEVER };
            let later = &at[&key];
            let from = later.partition_point(|&q| q <= t);
            later[from..]
                .iter()
                .find(|&&q| inputs.get(q + 1).is_some_and(|&n| n != inputs[t]))
                .map_or(NEVER, |&q| (q + 2).min(t_n) as u32)
        })
        .collect()
}

/// A budgeted eviction rule run one query at a time (H2O, TOVA, K-norm): which keys are held and
/// what they scored. The whole-sequence functions below drive it from an attention map; the judge's
/// cache-scored H2O and TOVA drive it from the attention their own cache had at each decode step.
#[derive(Clone, Debug)]
pub struct Held {
    budget: usize,
    recent: usize,
    accrue: Accrue,
    /// A log-weight floor (TOVA and `tova-ema` only): after each query every held key whose score
    /// (as a log weight) is below it leaves too, so memory follows the attention, up to `budget`.
    floor: Option<f64>,
    /// Per position, nats added to a key's log score when keys are compared ([`Held::with_bonus`];
    /// empty: none).
    bonus: Vec<f64>,
    held: Vec<usize>,
    score: Vec<f64>,
}

/// How a held key's score takes in each query's weight `a`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Accrue {
    /// The current query's alone (TOVA, K-norm).
    Current,
    /// Summed over the queries (H2O).
    Sum,
    /// An exponential mean of `ln a` with decay d: the key's first query sets `ln a`, each later
    /// one `d · s + (1 − d) · ln a` — a geometric mean of its recent weights
    /// ([`ahr_policy::evict::smooth_step`], shared with the learned evicter's prior).
    LogMean(f32),
}

impl Held {
    /// H2O: at most `heavy + recent` keys; scores accumulate, the `recent` newest are protected.
    pub fn heavy_hitters(heavy: usize, recent: usize) -> Self {
        Self {
            budget: heavy + recent,
            recent,
            accrue: Accrue::Sum,
            floor: None,
            bonus: Vec::new(),
            held: Vec::new(),
            score: Vec::new(),
        }
    }

    /// TOVA (and K-norm): at most `budget` keys (at least 1), scored by the current query alone.
    pub fn current(budget: usize) -> Self {
        Self {
            budget: budget.max(1),
            recent: 0,
            accrue: Accrue::Current,
            floor: None,
            bonus: Vec::new(),
            held: Vec::new(),
            score: Vec::new(),
        }
    }

    /// TOVA with smoothed scores (`tova-ema`): at most `budget` keys, each scored by the
    /// exponential mean (decay `decay` per query) of the log of the weights it drew; `decay = 0`
    /// is TOVA.
    pub fn smoothed(budget: usize, decay: f32) -> Self {
        let accrue = if decay == 0.0 { Accrue::Current } else { Accrue::LogMean(decay) };
        Self { accrue, ..Self::current(budget) }
    }

    /// This rule with a log-weight floor: after each query, once the budget is kept, every held
    /// key whose score is below `floor` (TOVA: `ln` of the current weight; `tova-ema`: the
    /// smoothed log weight) leaves as well, the older first — the budget becomes a cap and the
    /// memory held varies with the attention. Not for H2O (its score is a sum).
    pub fn with_floor(mut self, floor: f64) -> Self {
        assert!(self.accrue != Accrue::Sum, "a floor is a log weight: TOVA and tova-ema only");
        self.floor = Some(floor);
        self
    }

    /// This rule with `bonus[k]` nats added to key k's log score (TOVA: `ln` of the current weight;
    /// `tova-ema`: the smoothed log weight) wherever keys are compared — the eviction and the floor:
    /// a key with a bonus of b is kept over one whose weights are up to e^b times its own
    /// (`tova-class`: a byte class kept longer). Positions past its end get none. Not for H2O.
    pub fn with_bonus(mut self, bonus: Vec<f64>) -> Self {
        assert!(self.accrue != Accrue::Sum, "a bonus is in log weight: TOVA and tova-ema only");
        self.bonus = bonus;
        self
    }

    /// TOVA (`decay = 0`) or `tova-ema`, with a floor where given ([`Held::with_floor`]).
    pub fn tova(budget: usize, decay: f32, floor: Option<f32>) -> Self {
        let rule = Self::smoothed(budget, decay);
        match floor {
            Some(f) => rule.with_floor(f as f64),
            None => rule,
        }
    }

    /// The keys held, oldest first (the order a cache slot appends them in).
    pub fn keys(&self) -> &[usize] {
        &self.held
    }

    /// Key k's log score as keys are compared (TOVA: `ln` of its current weight; `tova-ema`: its
    /// smoothed log weight), its bonus included — as [`Held::step_forcing`] compares them. TOVA
    /// and `tova-ema` only.
    pub fn log_score(&self, k: usize) -> f64 {
        assert!(self.accrue != Accrue::Sum, "a log score: TOVA and tova-ema only");
        log_score_of(self.accrue, &self.score, &self.bonus, k)
    }

    /// Query q's token enters; `attn(k)` is the score query q gives held key k (its own included).
    /// While over budget, the lowest-scored key outside the protected newest is evicted from query
    /// q + 1 on (the older on ties). Returns the evicted keys, in eviction order.
    pub fn step(&mut self, q: usize, attn: impl Fn(usize) -> f32) -> Vec<usize> {
        self.step_forcing(q, attn, None)
    }

    /// [`Held::step`], except that when the step evicts, `forced` (a held key, when given) is the
    /// first to go instead of the lowest-scored one: a counterfactual of one decision, the rule
    /// deciding as before from then on.
    pub fn step_forcing(&mut self, q: usize, attn: impl Fn(usize) -> f32, forced: Option<usize>) -> Vec<usize> {
        self.held.push(q);
        if self.score.len() <= q {
            self.score.resize(q + 1, 0.0);
        }
        for &k in &self.held {
            let a = attn(k);
            self.score[k] = match self.accrue {
                Accrue::Current => a as f64,
                Accrue::Sum => self.score[k] + a as f64,
                Accrue::LogMean(_) if k == q => ahr_policy::evict::log_weight(a),
                Accrue::LogMean(d) => ahr_policy::evict::smooth_step(self.score[k], a, d),
            };
        }
        // A key's log score plus its bonus (what the floor compares); keys are ranked by it when
        // there are bonuses, by the score itself otherwise (H2O's sums, TOVA's weights).
        let log_score = |k: usize| log_score_of(self.accrue, &self.score, &self.bonus, k);
        let rank = |k: usize| if self.bonus.is_empty() { self.score[k] } else { log_score(k) };
        let mut evicted = Vec::new();
        if let Some(i) =
            forced.filter(|_| self.held.len() > self.budget).and_then(|k| self.held.iter().position(|&h| h == k))
        {
            evicted.push(self.held.remove(i));
        }
        while self.held.len() > self.budget {
            let oldest_protected = (q + 1).saturating_sub(self.recent);
            let victim = self
                .held
                .iter()
                .enumerate()
                .filter(|&(_, &k)| k < oldest_protected)
                .min_by(|a, b| rank(*a.1).total_cmp(&rank(*b.1)).then(a.1.cmp(b.1)))
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            evicted.push(self.held.remove(i));
        }
        if let Some(floor) = self.floor {
            let (keep, below): (Vec<usize>, Vec<usize>) = self.held.iter().partition(|&&k| log_score(k) >= floor);
            self.held = keep;
            evicted.extend(below);
        }
        evicted
    }
}

/// Key k's log score plus its bonus, from a rule's scores ([`Held::log_score`]).
fn log_score_of(accrue: Accrue, score: &[f64], bonus: &[f64], k: usize) -> f64 {
    let log = if accrue == Accrue::Current { (score[k] + 1e-30).ln() } else { score[k] };
    log + bonus.get(k).unwrap_or(&0.0)
}

/// One query of a pooled TOVA rule over one stream's layers (`layers[l]`, each already stepped
/// with no budget of its own): while they hold more than `pool` keys together, the key with the
/// lowest log score across them leaves ([`Held::log_score`], layer l's raised by
/// `lean · (L − 1 − 2l) / (L − 1)` nats: a positive lean keeps the first layers' keys longer), the
/// older on ties, the layer's order after that; no layer gives up its last key. Returns each
/// layer's victims, in eviction order.
pub fn pooled_victims(layers: &mut [Held], pool: usize, lean: f32) -> Vec<Vec<usize>> {
    let l_n = layers.len();
    let offset = |l: usize| f64::from(lean) * ahr_policy::evict::layer_slope(l, l_n);
    let mut victims = vec![Vec::new(); l_n];
    while layers.iter().map(|h| h.held.len()).sum::<usize>() > pool {
        let lowest = layers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.held.len() > 1)
            .flat_map(|(l, h)| h.held.iter().enumerate().map(move |(i, &k)| (l, i, k, h.log_score(k) + offset(l))))
            .min_by(|a, b| a.3.total_cmp(&b.3).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        let Some((l, i, k, _)) = lowest else { break };
        layers[l].held.remove(i);
        victims[l].push(k);
    }
    victims
}

/// Drive `rule` over a whole sequence whose query q scores key k by `score(q, k)`.
fn run(mut rule: Held, t_n: usize, score: impl Fn(usize, usize) -> f32) -> Vec<u32> {
    let mut evicted = vec![NEVER; t_n];
    for q in 0..t_n {
        for k in rule.step(q, |k| score(q, k)) {
            evicted[k] = (q + 1) as u32;
        }
    }
    evicted
}

/// H2O (Zhang et al. 2023) on one layer of one sequence: `attn` is `[T, T]` (query × key, rows sum to 1 over keys
/// ≤ query). Keys accumulate the attention they receive from each query while cached; after
/// query q's token enters the cache, while more than `heavy + recent` keys are held, the held
/// key with the least accumulated attention outside the `recent` newest is evicted (from
/// query q + 1 on).
pub fn heavy_hitter_evictions(attn: &[f32], seq_len: usize, heavy: usize, recent: usize) -> Vec<u32> {
    let t_n = seq_len;
    assert_eq!(attn.len(), t_n * t_n, "attention must be [T, T]");
    run(Held::heavy_hitters(heavy, recent), t_n, |q, k| attn[q * t_n + k])
}

/// TOVA (Oren et al. 2024) on one layer of one sequence: `attn` is `[T, T]` as for
/// [`heavy_hitter_evictions`]. After query q's token enters the cache, while more than `budget`
/// keys are held, the held key with the least attention from query q itself is evicted (from
/// query q + 1 on); no scores accumulate.
pub fn tova_evictions(attn: &[f32], seq_len: usize, budget: usize) -> Vec<u32> {
    tova_ema_evictions(attn, seq_len, budget, 0.0)
}

/// TOVA with each held key scored by the exponential mean (decay `decay`) of the log of the
/// weights it drew ([`Held::smoothed`]); `decay = 0` is [`tova_evictions`].
pub fn tova_ema_evictions(attn: &[f32], seq_len: usize, budget: usize, decay: f32) -> Vec<u32> {
    map_evictions(Held::smoothed(budget, decay), attn, seq_len)
}

/// Any budgeted rule ([`Held`]) on one layer of one sequence whose attention map is `attn`
/// (`[T, T]`, query × key).
pub fn map_evictions(rule: Held, attn: &[f32], seq_len: usize) -> Vec<u32> {
    let t_n = seq_len;
    assert_eq!(attn.len(), t_n * t_n, "attention must be [T, T]");
    run(rule, t_n, |q, k| attn[q * t_n + k])
}

/// The second tier of a two-tier cache, for one layer's keys: `first[k]` is the query from which
/// key k leaves the first tier (`NEVER`: never); the keys `joins` admits move to the second tier
/// there, and each leaves it once `size` keys that joined after it have arrived (first in, first
/// out). Returns each key's last query plus one (`first[k]` for keys that never join).
pub fn second_tier(first: &[u32], size: usize, joins: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut out = first.to_vec();
    let mut order: Vec<usize> = (0..first.len()).filter(|&k| first[k] != NEVER && joins(k)).collect();
    order.sort_by_key(|&k| (first[k], k));
    for (i, &k) in order.iter().enumerate() {
        out[k] = order.get(i + size).map_or(NEVER, |&later| first[later]);
    }
    out
}

/// K-norm (Devoto et al. 2024) on one layer of one sequence: `norms[k]` is key k's L2 norm.
/// After query q's token enters the cache, while more than `budget` keys are held, the held key
/// with the largest norm is evicted (from query q + 1 on; the newest may go at once) — low-norm
/// keys are the ones that draw attention.
pub fn key_norm_evictions(norms: &[f32], budget: usize) -> Vec<u32> {
    run(Held::current(budget), norms.len(), |_, k| -norms[k])
}

/// Keep a key while its score is at least `tau` (write-time rules: entropy thresholds and random
/// draws), evict it at once otherwise: the key is seen only at its own step.
pub fn threshold_evictions(scores: &[f32], tau: f32) -> Vec<u32> {
    scores.iter().enumerate().map(|(k, &s)| if s >= tau { NEVER } else { (k + 1) as u32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest number of keys held at once (the cache's peak), current token included.
    fn peak_held(evicted_at: &[u32]) -> usize {
        let t_n = evicted_at.len();
        (0..t_n).map(|q| (0..=q).filter(|&k| evicted_at[k] as usize > q).count()).max().unwrap_or(0)
    }

    #[test]
    fn a_value_leaves_once_its_key_is_reassigned() {
        // k=1 v=2 | filler 9 | query 1 → 2 | re-assignment 1 → 3 | query 1 → 3
        let inputs = [1, 2, 9, 1, 2, 1, 3, 1, 3];
        let ev = superseded_evictions(&inputs);
        // The value 2 at t = 1 survives the query at 3 (answered with 2) and leaves after the
        // re-assignment at 5 (followed by 3): from query 7 on.
        assert_eq!(ev[1], 7);
        // The value 3 at t = 6 is queried at 7 and never superseded; t = 0 has no key.
        assert_eq!((ev[0], ev[6]), (NEVER, NEVER));
        // Filler is read the same way: 9 (after 2) leaves once 2 returns at 4 followed by 1.
        assert_eq!(ev[2], 6);
        // A return on the last position has no next token yet: nothing is superseded.
        assert_eq!(superseded_evictions(&[5, 6, 5]), vec![NEVER; 3]);
    }

    /// By hand: norms [3, 1, 2, 5, 0.5], budget 2. Query 2 holds three keys and evicts key 0
    /// (norm 3); query 3 evicts itself (norm 5); query 4 evicts key 2 (norm 2).
    #[test]
    fn key_norm_keeps_the_lowest_norms_within_its_budget() {
        let e = key_norm_evictions(&[3.0, 1.0, 2.0, 5.0, 0.5], 2);
        assert_eq!(e, vec![3, NEVER, 5, 4, NEVER]);
        assert_eq!(peak_held(&e), 3, "the budget plus the newest token");
    }

    #[test]
    fn window_keeps_sinks_and_the_recent_tokens() {
        let e = window_evictions(10, 2, 3);
        assert_eq!(&e[..3], &[NEVER, NEVER, 6]);
        assert_eq!(e[9], 13);
        // Query 7 sees sinks 0, 1 and keys 4, 5, 6 (and itself): 6 held at once at most.
        let visible: Vec<usize> = (0..7).filter(|&k| e[k] as usize > 7).collect();
        assert_eq!(visible, vec![0, 1, 4, 5, 6]);
        assert_eq!(peak_held(&e), 6);
    }

    #[test]
    fn heavy_hitters_keep_the_key_that_draws_attention() {
        // Six tokens; every query puts most of its attention on token 1.
        let t = 6;
        let mut attn = vec![0f32; t * t];
        for q in 0..t {
            for k in 0..=q {
                attn[q * t + k] = if k == 1 { 0.7 } else { 0.3 / q.max(1) as f32 };
            }
            if q == 0 {
                attn[0] = 1.0;
            }
        }
        let e = heavy_hitter_evictions(&attn, t, 1, 2);
        assert_eq!(e[1], NEVER, "the heavy hitter stays");
        // Query 3 brings four keys: of the old ones (0, 1) token 0 has less attention.
        assert_eq!(e[0], 4, "token 0 goes first");
        assert_eq!(e[2], 5);
        assert_eq!(e[3], 6);
        assert_eq!(&e[4..], &[NEVER, NEVER], "the recent window stays");
        assert_eq!(peak_held(&e), 4, "budget 3 plus the current token");
    }

    /// Four tokens' attention `[T, T]` (query × key): the fixture of the TOVA tests below.
    const FOUR_TOKENS: [f32; 16] = [
        1.0, 0.0, 0.0, 0.0, //
        0.5, 0.5, 0.0, 0.0, //
        0.1, 0.6, 0.3, 0.0, //
        0.0, 0.1, 0.5, 0.4,
    ];

    #[test]
    fn tova_evicts_the_key_the_current_query_ignores() {
        // Four tokens, budget 2. Query 2 attends 0.1 / 0.6 / 0.3 to tokens 0 / 1 / 2: token 0
        // goes from query 3 on. Query 3 attends 0.1 / 0.5 / 0.4 to the held tokens 1 / 2 / 3:
        // token 1 goes from query 4 on (past the end) — TOVA looks at the current query only,
        // although token 1 drew the most attention in total.
        let t = 4;
        let attn = FOUR_TOKENS;
        let e = tova_evictions(&attn, t, 2);
        assert_eq!(e, vec![3, 4, NEVER, NEVER]);
        assert_eq!(peak_held(&e), 3, "budget 2 plus the current token");
    }

    /// The same four tokens with smoothed scores (decay 0.5, logs): at query 2 token 0 scores
    /// 0.5 (0.5 ln 1 + 0.5 ln 0.5) + 0.5 ln 0.1 = −1.33, the least, and goes; at query 3 token 1
    /// scores 0.25 ln 0.5 + 0.25 ln 0.6 + 0.5 ln 0.1 = −1.45, token 2 0.5 ln 0.3 + 0.5 ln 0.5 =
    /// −0.95, token 3 ln 0.4 = −0.92: token 1 goes, as with TOVA. With query 3 giving 0.3 / 0.3 /
    /// 0.4 instead, token 1 scores −0.90 and token 2 −1.20: token 2 goes, where TOVA, on the one
    /// query's tie, takes the older token 1. Decay 0 is TOVA.
    #[test]
    fn tova_ema_averages_the_log_weights_a_key_drew() {
        let t = 4;
        let mut attn = FOUR_TOKENS;
        assert_eq!(tova_ema_evictions(&attn, t, 2, 0.5), vec![3, 4, NEVER, NEVER]);
        assert_eq!(tova_ema_evictions(&attn, t, 2, 0.0), tova_evictions(&attn, t, 2));
        attn[13..].copy_from_slice(&[0.3, 0.3, 0.4]);
        assert_eq!(tova_evictions(&attn, t, 2), vec![3, 4, NEVER, NEVER]);
        assert_eq!(tova_ema_evictions(&attn, t, 2, 0.5), vec![3, NEVER, 4, NEVER]);
    }

    /// A bonus on token 0 (the four tokens, budget 2). `tova-ema` at decay 0.5: at query 2 token 0
    /// scores −1.325 and token 2 ln 0.3 = −1.204, so token 0 goes unless its bonus is above 0.121:
    /// with 0.1 it still goes; with 0.2 (−1.125) token 2 goes instead, and at query 3 token 0, which
    /// draws nothing, scores far below everything and goes. TOVA compares the log of the current
    /// weight: ln 0.1 = −2.303 plus 1.0 is still below −1.204, plus 1.2 above it.
    #[test]
    fn a_bonus_keeps_a_key_by_that_many_nats() {
        let t = 4;
        let on_first = |b: f64| vec![b, 0.0, 0.0, 0.0];
        let run =
            |decay: f32, b: f64| map_evictions(Held::tova(2, decay, None).with_bonus(on_first(b)), &FOUR_TOKENS, t);
        assert_eq!(run(0.5, 0.1), vec![3, 4, NEVER, NEVER]);
        assert_eq!(run(0.5, 0.2), vec![4, NEVER, 3, NEVER]);
        assert_eq!(run(0.0, 1.0), vec![3, 4, NEVER, NEVER]);
        assert_eq!(run(0.0, 1.2), vec![4, NEVER, 3, NEVER]);
        // No bonus anywhere is the rule without one, and a bonus vector shorter than the sequence
        // gives the rest none.
        assert_eq!(run(0.5, 0.0), tova_ema_evictions(&FOUR_TOKENS, t, 2, 0.5));
        let short = map_evictions(Held::tova(2, 0.5, None).with_bonus(vec![0.2]), &FOUR_TOKENS, t);
        assert_eq!(short, run(0.5, 0.2));
    }

    /// A pooled TOVA (hand-computed, two layers, pool 4). Query 2: layer 0 weighs its keys 0.1,
    /// 0.65, 0.25 and layer 1 0.3, 0.35, 0.35 — six keys, two go: layer 0's 0.1 and 0.25 (below
    /// every key of layer 1), where a budget of 2 per layer takes one from each. Query 3: layer 0
    /// holds 1 and 3 (0.5 each), layer 1 weighs its four 0.1 … 0.4: layer 1's two lowest go.
    /// Leaning 1 nat towards layer 0, query 2 takes layer 1's 0.3 (−2.20) and the older of its
    /// 0.35s instead. With pool 3 and a lean of −10, layer 0 gives up key 0 at query 1 (the older
    /// of a tie) and key 2 at query 2, then keeps its last key: layer 1's lowest goes.
    #[test]
    fn a_pool_takes_the_lowest_keys_across_layers() {
        let rows: [[&[f32]; 4]; 2] = [
            [&[1.0], &[0.5, 0.5], &[0.1, 0.65, 0.25], &[0.0, 0.5, 0.0, 0.5]],
            [&[1.0], &[0.2, 0.8], &[0.3, 0.35, 0.35], &[0.1, 0.2, 0.3, 0.4]],
        ];
        let run = |pool: usize, lean: f32| {
            let mut layers = vec![Held::tova(usize::MAX, 0.0, None); 2];
            let mut out = Vec::new();
            for q in 0..4 {
                for (l, h) in layers.iter_mut().enumerate() {
                    assert!(h.step(q, |k| rows[l][q][k]).is_empty(), "no budget of its own");
                }
                out.push(pooled_victims(&mut layers, pool, lean));
            }
            out
        };
        let none = vec![Vec::<usize>::new(); 2];
        assert_eq!(run(4, 0.0), vec![none.clone(), none.clone(), vec![vec![0, 2], vec![]], vec![vec![], vec![0, 1]]]);
        assert_eq!(run(4, 1.0)[2], vec![vec![], vec![0, 1]]);
        let floor = run(3, -10.0);
        assert_eq!(floor[1], vec![vec![0], vec![]]);
        assert_eq!(floor[2], vec![vec![2], vec![0]], "layer 0 keeps its last key");
    }

    /// A floor of ln 0.35 on TOVA with a cap of 3 (hand-computed on the four tokens): query 0
    /// gives token 0 weight 1 (kept); query 1 gives 0.5 / 0.5 (both kept); query 2 gives 0.1 / 0.6 /
    /// 0.3, under the cap, but tokens 0 and 2 are below the floor and leave from query 3 on; query 3
    /// gives token 1 0.1 and token 3 0.4: token 1 leaves. The cap still binds first: with cap 1,
    /// query 1 evicts token 0 (the older on the tie), query 2 token 2 (0.3 against 0.6), query 3
    /// token 1 (0.1 against 0.4), and the floor finds nothing left below it. On
    /// `tova-ema` (decay 0.5) the floor compares the smoothed log weight: at query 2 token 0 scores
    /// −1.33 and token 2 ln 0.3 = −1.20, both below ln 0.35 = −1.05; token 1 −0.60 stays; at query
    /// 3 token 1 scores 0.5 · (−0.60) + 0.5 ln 0.1 = −1.45: it goes.
    #[test]
    fn a_floor_evicts_every_key_below_it_up_to_the_cap() {
        let t = 4;
        let floor = 0.35f32.ln();
        let e = map_evictions(Held::tova(3, 0.0, Some(floor)), &FOUR_TOKENS, t);
        assert_eq!(e, vec![3, 4, 3, NEVER]);
        let e = map_evictions(Held::tova(1, 0.0, Some(floor)), &FOUR_TOKENS, t);
        assert_eq!(e, vec![2, 4, 3, NEVER], "the cap first");
        assert_eq!(map_evictions(Held::tova(3, 0.5, Some(floor)), &FOUR_TOKENS, t), vec![3, 4, 3, NEVER]);
        assert_eq!(
            map_evictions(Held::tova(2, 0.5, None), &FOUR_TOKENS, t),
            tova_ema_evictions(&FOUR_TOKENS, t, 2, 0.5)
        );
    }

    /// TOVA on the four tokens of `tova_ema_averages_the_log_weights_a_key_drew` evicts 0 after
    /// query 2 and 1 after query 3. Forcing token 2 out after query 2 keeps 0, which query 3 then
    /// scores 0 (the least) and evicts; forcing a key not held, or at a step that evicts nothing,
    /// changes nothing.
    #[test]
    fn a_forced_eviction_overrules_one_decision_and_the_rule_goes_on() {
        let t = 4;
        let attn = FOUR_TOKENS;
        let run_forcing = |forced: &[Option<usize>]| {
            let mut rule = Held::current(2);
            let mut evicted = vec![NEVER; t];
            for q in 0..t {
                for k in rule.step_forcing(q, |k| attn[q * t + k], forced[q]) {
                    evicted[k] = (q + 1) as u32;
                }
            }
            evicted
        };
        assert_eq!(run_forcing(&[None; 4]), tova_evictions(&attn, t, 2));
        assert_eq!(run_forcing(&[None, None, Some(2), None]), vec![4, NEVER, 3, NEVER]);
        assert_eq!(run_forcing(&[None, None, Some(0), None]), tova_evictions(&attn, t, 2), "the rule's own victim");
        assert_eq!(run_forcing(&[Some(0), None, Some(3), None]), tova_evictions(&attn, t, 2), "nothing to overrule");
    }

    #[test]
    fn thresholds_keep_the_keys_at_or_above_tau() {
        assert_eq!(threshold_evictions(&[0.9, 0.1, 0.5], 0.5), vec![NEVER, 2, NEVER]);
    }
}
