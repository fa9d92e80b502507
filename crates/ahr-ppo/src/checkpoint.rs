//! Checkpoints of a PPO run: the policy, the optimiser state and the training state, each written
//! atomically, so a killed run resumes bit-identically.

use std::path::Path;

use ahr_tpa::checkpoint::{load_record, save_record, write_atomic};
use burn::optim::AdamConfig;

use crate::trainer::{TrainError, Trainer};

impl Trainer {
    /// Save `policy.bpk`, `optim.bpk` and `state.json` into `dir` (each atomically).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| ahr_tpa::Error::io(dir, e))?;
        save_record(self.net.clone(), &dir.join("policy.bpk"))?;
        let optim_path = dir.join("optim.bpk");
        ahr_tpa::checkpoint::write_atomic_with(&optim_path, |tmp| {
            self.optim.save(tmp).map_err(|e| ahr_tpa::Error::Input(format!("{}: {e}", tmp.display())))
        })?;
        let json = serde_json::to_string_pretty(&self.state).expect("state should serialise");
        write_atomic(&dir.join("state.json"), json.as_bytes())?;
        Ok(())
    }

    /// Restore from a checkpoint written by [`Trainer::save_checkpoint`].
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        self.net = load_record(self.net.clone(), &dir.join("policy.bpk"))?;
        let optim_path = dir.join("optim.bpk");
        self.optim = AdamConfig::new()
            .with_epsilon(1e-5)
            .init()
            .load(&optim_path)
            .map_err(|e| TrainError::Other(format!("{}: {e}", optim_path.display())))?;
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| ahr_tpa::Error::io(&state_path, e))?;
        self.state =
            serde_json::from_str(&text).map_err(|e| TrainError::Other(format!("{}: {e}", state_path.display())))?;
        Ok(())
    }
}
