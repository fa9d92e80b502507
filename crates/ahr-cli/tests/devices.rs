//! Device parity (`--features tch`): the same weights give the same logits on `cpu` (flex) and
//! `tch-cpu` (libtorch), and one PPO update from the same checkpoint gives the same parameters.
//! Tolerances: logits 1e-4 relative (f32 kernels sum in different orders), parameters after one
//! Adam update 1e-4 absolute.
#![cfg(feature = "tch")]

use std::path::Path;

use ahr_ppo::metrics::NullSink;
use ahr_ppo::trainer::Trainer;
use ahr_tpa::checkpoint::{load_model, save_model};
use ahr_tpa::model::randomize;
use ahr_tpa::{Choices, Model, ModelConfig};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn cpu() -> Device {
    ahr_tpa::device::parse("cpu").unwrap()
}

fn tch() -> Device {
    ahr_tpa::device::parse("tch-cpu").unwrap()
}

struct Collect(Vec<f32>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(param.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
    }
}

fn params<M: Module>(m: &M) -> Vec<f32> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

#[test]
fn same_weights_give_the_same_logits_on_flex_and_libtorch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ModelConfig::tiny();
    cfg.q_rank = 2;
    let model = randomize(Model::new(&cfg, &cpu()), 5, 0.4);
    save_model(&model, tmp.path()).unwrap();
    let (a, b) = (load_model(tmp.path(), &cpu()).unwrap(), load_model(tmp.path(), &tch()).unwrap());
    let (batch, t) = (2, 11);
    let mut rng = StdRng::seed_from_u64(9);
    let ids: Vec<u32> = (0..batch * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let choices = Choices::from_fn(batch, t, cfg.n_layers, |_, _, _| rng.random_range(0..cfg.menu.len()));
    let logits = |m: &Model, d: &Device| {
        let out = m.forward(m.tokens(&ids, batch, t, d).unwrap(), &choices).unwrap();
        out.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    };
    let (x, y) = (logits(&a, &cpu()), logits(&b, &tch()));
    let err = x.iter().zip(&y).map(|(p, q)| (p - q).abs() / q.abs().max(1.0)).fold(0f32, f32::max);
    assert!(err < 1e-4, "flex vs libtorch logits: max rel err {err}");
}

fn cartpole_trainer(device: Device) -> Trainer {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cfg = ahr_train::policy::load_ppo_config(&root.join("configs/ppo/cartpole.toml")).unwrap();
    cfg.total_timesteps = (cfg.num_envs * cfg.num_steps) as u64;
    let envs: Vec<Box<dyn ahr_env::VecEnv>> = vec![Box::new(ahr_cli::cartpole::CartPoleVec::new(cfg.num_envs))];
    Trainer::new(cfg, envs, 1, 3, 0.0, None, device).unwrap()
}

#[test]
fn one_ppo_update_from_one_checkpoint_matches_on_flex_and_libtorch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = cartpole_trainer(cpu());
    a.save_checkpoint(tmp.path()).unwrap();
    let mut b = cartpole_trainer(tch());
    b.load_checkpoint(tmp.path()).unwrap();
    let before = params(&a.policy());
    assert_eq!(before, params(&b.policy()), "both start from the checkpoint");
    a.train(&mut NullSink, |_, _| Ok(())).unwrap();
    b.train(&mut NullSink, |_, _| Ok(())).unwrap();
    let (pa, pb) = (params(&a.policy()), params(&b.policy()));
    let moved = pa.iter().zip(&before).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let diff = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-3, "the update changed the parameters ({moved})");
    assert!(diff < 1e-4, "flex vs libtorch parameters after one update: max abs diff {diff} (moved {moved})");
}

/// `--device` runs one computation before a command starts: `tch-cpu` passes it, and `tch-cuda`
/// either passes (a GPU with its driver) or is an error that says why, never a panic.
#[test]
fn opening_a_device_checks_that_it_runs() {
    assert!(ahr_tpa::device::open("tch-cpu").is_ok());
    if let Err(e) = ahr_tpa::device::open("tch-cuda") {
        assert!(e.contains("device `tch-cuda` is built in but does not work here"), "{e}");
        assert!(!e.contains("frame #"), "the C++ backtrace is cut: {e}");
    }
}
