//! Generalised advantage estimation, exactly CleanRL's loop.

/// GAE over `[num_steps, n]` row-major arrays.
///
/// `dones[t]` marks that the observation at step t starts a new episode (CleanRL's `dones`,
/// i.e. the previous step ended one); `next_value`/`next_done` describe the observation after
/// the last step. Returns `(advantages, returns)` with `returns = advantages + values`.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    dones: &[bool],
    next_value: &[f32],
    next_done: &[bool],
    n: usize,
    gamma: f64,
    lambda: f64,
) -> (Vec<f32>, Vec<f32>) {
    let steps = rewards.len() / n;
    let mut adv = vec![0f32; rewards.len()];
    for e in 0..n {
        let mut last = 0f64;
        for t in (0..steps).rev() {
            let (next_nonterminal, next_val) = if t == steps - 1 {
                (1.0 - next_done[e] as u8 as f64, next_value[e] as f64)
            } else {
                (1.0 - dones[(t + 1) * n + e] as u8 as f64, values[(t + 1) * n + e] as f64)
            };
            let i = t * n + e;
            let delta = rewards[i] as f64 + gamma * next_val * next_nonterminal - values[i] as f64;
            last = delta + gamma * lambda * next_nonterminal * last;
            adv[i] = last as f32;
        }
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_step_episode_by_hand() {
        // One env; rewards 1, 2, 3; values 0.5, 1.0, 1.5; the episode ends after step 2
        // (next_done = true), γ = 0.9, λ = 0.8.
        // δ2 = 3 − 1.5 = 1.5;                A2 = 1.5
        // δ1 = 2 + 0.9·1.5 − 1.0 = 2.35;     A1 = 2.35 + 0.72·1.5 = 3.43
        // δ0 = 1 + 0.9·1.0 − 0.5 = 1.4;      A0 = 1.4 + 0.72·3.43 = 3.8696
        let (a, r) = gae(&[1.0, 2.0, 3.0], &[0.5, 1.0, 1.5], &[false; 3], &[9.0], &[true], 1, 0.9, 0.8);
        for (x, y) in a.iter().zip([3.8696f32, 3.43, 1.5]) {
            assert!((x - y).abs() < 1e-5, "{a:?}");
        }
        assert!((r[0] - 4.3696).abs() < 1e-5);
    }

    #[test]
    fn a_reset_cuts_the_bootstrap_and_envs_are_independent() {
        // Two envs interleaved; env 1 starts a new episode at step 1, so step 0 does not see step 1.
        let rewards = [1.0, 1.0, 0.0, 0.0];
        let values = [0.0, 0.0, 2.0, 2.0];
        let dones = [false, false, false, true];
        let (a, _) = gae(&rewards, &values, &dones, &[0.0, 0.0], &[false, false], 2, 1.0, 1.0);
        assert_eq!(a[1], 1.0, "env 1, step 0: the episode ended, no bootstrap");
        assert_eq!(a[0], 1.0 + 2.0 - 0.0 + (0.0 - 2.0), "env 0: δ0 + δ1");
    }
}
