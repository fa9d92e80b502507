//! Known cache rules the learned policy is compared with, as pure functions of one sequence.
//!
//! Write-time rules decide a token's option once, after its forward step (as the policy does):
//! an entropy threshold and a random rule matched to a memory level. Eviction rules keep every
//! token exact at first and evict it later: StreamingLLM's attention sinks + recent window and
//! H2O's heavy hitters by accumulated attention. Evictions are positions from which a key is
//! no longer visible (`ahr_tpa::Choices::with_evictions`).

use rand::{Rng, RngExt};

/// Never evicted.
pub const NEVER: u32 = u32::MAX;

/// StreamingLLM: the first `sinks` tokens stay; any other key k is visible to the `window`
/// queries after it (k+1 … k+window) and evicted from query k + window + 1 on.
pub fn window_evictions(seq_len: usize, sinks: usize, window: usize) -> Vec<u32> {
    (0..seq_len).map(|k| if k < sinks { NEVER } else { (k + window + 1) as u32 }).collect()
}

/// H2O on one layer of one sequence: `attn` is `[T, T]` (query × key, rows sum to 1 over keys
/// ≤ query). Keys accumulate the attention they receive from each query while cached; after
/// query q's token enters the cache, while more than `heavy + recent` keys are held, the held
/// key with the least accumulated attention outside the `recent` newest is evicted (from
/// query q + 1 on).
pub fn heavy_hitter_evictions(attn: &[f32], seq_len: usize, heavy: usize, recent: usize) -> Vec<u32> {
    let t_n = seq_len;
    assert_eq!(attn.len(), t_n * t_n, "attention must be [T, T]");
    let mut score = vec![0f64; t_n];
    let mut evicted = vec![NEVER; t_n];
    let mut held: Vec<usize> = Vec::new();
    for q in 0..t_n {
        held.push(q);
        for &k in &held {
            score[k] += attn[q * t_n + k] as f64;
        }
        while held.len() > heavy + recent {
            let oldest_recent = (q + 1).saturating_sub(recent);
            let victim = held
                .iter()
                .enumerate()
                .filter(|&(_, &k)| k < oldest_recent)
                .min_by(|a, b| score[*a.1].total_cmp(&score[*b.1]).then(a.1.cmp(b.1)))
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            evicted[held.remove(i)] = (q + 1) as u32;
        }
    }
    evicted
}

/// Largest number of keys held at once (the cache's peak), current token included.
pub fn peak_held(evicted_at: &[u32]) -> usize {
    let t_n = evicted_at.len();
    (0..t_n).map(|q| (0..=q).filter(|&k| evicted_at[k] as usize > q).count()).max().unwrap_or(0)
}

/// Entropy threshold: keep the token at the exact option when the model's normalised next-token
/// entropy is at least `tau` (uncertain positions carry information), otherwise drop it.
pub fn entropy_choice(norm_entropy: f32, tau: f32, exact: usize) -> usize {
    if norm_entropy >= tau { exact } else { 0 }
}

/// One option drawn from `freqs` (relative frequencies, not all zero).
pub fn random_choice(freqs: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = freqs.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, f) in freqs.iter().enumerate() {
        if u < *f {
            return i;
        }
        u -= f;
    }
    freqs.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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

    #[test]
    fn entropy_threshold_keeps_uncertain_tokens_exact() {
        assert_eq!(entropy_choice(0.9, 0.5, 4), 4);
        assert_eq!(entropy_choice(0.1, 0.5, 4), 0);
    }

    #[test]
    fn random_choice_follows_the_frequencies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[random_choice(&[0.2, 0.0, 0.8], &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((1800..2200).contains(&counts[0]), "{counts:?}");
    }
}
