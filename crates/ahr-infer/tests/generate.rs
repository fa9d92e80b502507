//! The generator against references: exact-choice generation = greedy decoding by parallel
//! forwards over the growing sequence; the cache holds what the cost model charges.

use ahr_infer::{Chooser, Generator};
use ahr_tpa::model::randomize;
use ahr_tpa::{Choices, Model, ModelConfig, cost};

fn model(seed: u64) -> Model {
    randomize(Model::new(&ModelConfig::tiny(), &ahr_tpa::device::from_env()), seed, 0.4)
}

/// Greedy continuation by one parallel forward per new token (no cache at all).
fn greedy_by_parallel_forward(model: &Model, prompt: &[u32], new: usize) -> Vec<u32> {
    let dev = ahr_tpa::device::from_env();
    let mut seq = prompt.to_vec();
    for _ in 0..new {
        let t = seq.len();
        let logits = model.forward(model.tokens(&seq, 1, t, &dev).unwrap(), &Choices::exact(model.config(), 1, t));
        let last = logits.unwrap().narrow(1, t - 1, 1).argmax(2);
        seq.push(last.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()[0] as u32);
    }
    seq
}

#[test]
fn exact_generation_equals_greedy_parallel_decoding() {
    let model = model(3);
    let prompts = vec![vec![5, 9, 1, 30, 2], vec![7, 7, 30, 11, 3]];
    let out = Generator::new(&model, Chooser::Exact, &ahr_tpa::device::from_env()).run(&prompts, 6).unwrap();
    for (s, prompt) in prompts.iter().enumerate() {
        assert_eq!(out.tokens[s], greedy_by_parallel_forward(&model, prompt, 6), "stream {s}");
        assert_eq!(out.new_tokens(s).len(), 6);
    }
    let cfg = model.config();
    assert_eq!(out.memory.tokens_cached, 10);
    assert_eq!(out.memory.bytes_held, out.memory.exact_bytes);
    assert_eq!(out.memory.exact_bytes, 2 * 10 * cost::exact_bytes_per_token(cfg));
}

#[test]
fn every_uniform_option_holds_exactly_its_cost() {
    let model = model(4);
    let cfg = model.config().clone();
    for (i, option) in cfg.menu.iter().enumerate() {
        let out =
            Generator::new(&model, Chooser::Uniform(i), &ahr_tpa::device::from_env()).run(&[vec![1, 2, 3]], 4).unwrap();
        let expected = 6 * cfg.n_layers * cost::bytes_per_token(&cfg, *option);
        assert_eq!(out.memory.bytes_held, expected, "{option}");
        assert_eq!(out.memory.cost_model_bytes, expected, "{option}");
        assert!(out.choices[0].iter().all(|&c| c == i));
    }
    // recent:2 keeps the two tokens the next query sees; it held three (the newest too) at most.
    let model = model.with_recent(&[2]).unwrap();
    let cfg = model.config().clone();
    let i = cfg.menu.len() - 1;
    let out =
        Generator::new(&model, Chooser::Uniform(i), &ahr_tpa::device::from_env()).run(&[vec![1, 2, 3]], 4).unwrap();
    let exact = cost::bytes_per_token(&cfg, cfg.exact_option()) * cfg.n_layers;
    assert_eq!(out.memory.bytes_held, 2 * exact);
    assert_eq!(out.memory.cost_model_bytes, 2 * exact);
    assert_eq!(out.memory.peak_bytes, 3 * exact);
    // full/2/rank:1 (dense with rank-1 factors beside it, then rank 1): of 6 tokens the two
    // newest are dense, four are demoted; at most three were dense at once.
    let schedule: ahr_tpa::StoreOption = "full/2/rank:1".parse().unwrap();
    let model = model.with_timed(&[schedule]).unwrap();
    let cfg = model.config().clone();
    let i = cfg.option_index(schedule).unwrap();
    let out =
        Generator::new(&model, Chooser::Uniform(i), &ahr_tpa::device::from_env()).run(&[vec![1, 2, 3]], 4).unwrap();
    let per = |o: ahr_tpa::StoreOption| cost::bytes_per_token(&cfg, o) * cfg.n_layers;
    let (dense, rank1) =
        (per(ahr_tpa::StoreOption::Full) + per(ahr_tpa::StoreOption::Rank(1)), per(ahr_tpa::StoreOption::Rank(1)));
    assert_eq!(out.memory.bytes_held, 2 * dense + 4 * rank1);
    assert_eq!(out.memory.cost_model_bytes, 2 * dense + 4 * rank1);
    assert_eq!(out.memory.peak_bytes, 3 * dense + 3 * rank1);
}

#[test]
fn bad_requests_are_errors() {
    let model = model(5);
    let g = Generator::new(&model, Chooser::Exact, &ahr_tpa::device::from_env());
    assert!(g.run(&[], 3).is_err());
    assert!(g.run(&[vec![1, 2], vec![3]], 3).is_err());
    assert!(g.run(&[vec![1_000_000]], 3).is_err());
    let bad = Generator::new(&model, Chooser::Uniform(99), &ahr_tpa::device::from_env());
    assert!(bad.run(&[vec![1]], 1).is_err());
}
