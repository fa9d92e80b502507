//! ahr as a library, end to end on the tiny presets: pretrain a model with nested ranks, train
//! and export a rank policy with PPO, load both with `ahr-infer` and generate with the policy
//! choosing how every token's K/V is kept.
//!
//! `cargo run --release -p ahr-train --example train_and_deploy` (seconds); the test suite runs
//! it too (`cargo test --release -p ahr-train --examples`).

use std::path::{Path, PathBuf};

use ahr_infer::{Chooser, Generator, RankPolicy};
use ahr_tpa::checkpoint::{fingerprint, load_model};
use ahr_train::policy::{PolicyRunArgs, train_policy};
use ahr_train::pretrain::{PretrainArgs, run};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn main() -> anyhow::Result<()> {
    let dev = ahr_tpa::device::from_env();
    let work = tempfile::tempdir()?;
    let env = repo("envs/mqar-tiny.toml");
    let trained_len = 32; // the env's seq_len

    // 1. Pretrain: a model directory with its rank curve.
    let model_dir = work.path().join("model");
    let args = PretrainArgs {
        model_config: repo("configs/model/tiny.toml"),
        env: env.clone(),
        out: model_dir.clone(),
        steps: Some(20),
        seed: 0,
        resume: false,
        init: None,
        stop_after: None,
    };
    let outcome = run(&args, &dev, |r| {
        if r.step % 10 == 0 {
            println!("pretrain step {}/{}: loss {:.3}", r.step, r.total_steps, r.loss);
        }
    })?;
    println!("exact-choice accuracy {:.3}", outcome.final_eval.map_or(f64::NAN, |e| e.accuracy));

    // 2. Train and export a rank policy.
    let policy_dir = work.path().join("policy");
    let run_args = PolicyRunArgs {
        model: model_dir.clone(),
        env,
        config: repo("configs/ppo/tiny.toml"),
        out: policy_dir.clone(),
        run_dir: Some(work.path().join("run")),
        workers: 2,
        seed: 1,
        resume: false,
        total_timesteps: None,
        eval_examples: Some(8),
    };
    let trained = train_policy(&run_args, &dev, |r, total| println!("PPO iteration {}/{total}", r.iteration))?;
    println!("policy keeps {:.1} % of the exact choice's bytes (time-averaged)", 100.0 * trained.eval.mem_frac);

    // 3. Deploy: load model and policy (the manifest is checked against the model) and generate.
    let model = load_model(&model_dir, &dev)?;
    let (manifest, net) =
        ahr_policy::export::load_policy(&policy_dir, model.config(), &fingerprint(&model_dir)?, &dev)?;
    // The manifest records the sequence length the policy was trained on; deployed on longer
    // sequences, its position features stop there.
    assert_eq!(manifest.obs.positions_seen, Some(trained_len), "the manifest records the training length");
    let policy = RankPolicy::new(manifest, net);
    let out = Generator::new(&model, Chooser::Policy(&policy), &dev).run(&[vec![3, 40, 5, 41, 3]], 4)?;
    println!(
        "generated {:?}; the cache holds {} of the exact choice's {} bytes",
        out.new_tokens(0),
        out.memory.bytes_held,
        out.memory.exact_bytes
    );
    assert_eq!(out.memory.bytes_held, out.memory.cost_model_bytes, "the cache holds what the cost model says");
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the library path should run end to end");
}
