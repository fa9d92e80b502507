//! Model directories: `config.json` (the resolved [`ModelConfig`]) + `model.bpk` (burn record).
//!
//! Every file is written atomically (temp file in the same directory, then rename), so a crash
//! leaves either the old or the new file, never half of one. Loading checks every tensor's name
//! and shape against the config and names the file and the tensor when they differ.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;

/// Name of the resolved config inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.bpk";

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Write a file atomically through `write`, which receives a temporary path beside `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// Write a value as pretty JSON atomically (every report and run file of the workspace).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("reports should serialise to JSON");
    write_atomic(path, text.as_bytes())
}

/// Save a module's parameters atomically as a burn record.
pub fn save_record<M: Module>(module: M, path: &Path) -> Result<()> {
    write_atomic_with(path, |tmp| module.into_record().save(tmp).map_err(|e| Error::weights(tmp, e.to_string())))
}

/// Load a burn record into `module`, validating names and shapes.
pub fn load_record<M: Module>(module: M, path: &Path) -> Result<M> {
    if !path.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")));
    }
    let record = ModuleRecord::load(path).map_err(|e| Error::weights(path, format!("cannot read weights: {e}")))?;
    module.try_load_record(record).map_err(|e| Error::weights(path, format!("weights do not match the config: {e}")))
}

/// Save a model directory (config + weights), each file atomically.
pub fn save_model(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(model.config()).expect("a config should serialise");
    write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())?;
    save_record(model.clone(), &dir.join(WEIGHTS_FILE))
}

/// Load a model directory onto `device`.
pub fn load_model(dir: &Path, device: &Device) -> Result<Model> {
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let config = ModelConfig::load_json(&dir.join(CONFIG_FILE))?;
    load_record(Model::new(&config, device), &dir.join(WEIGHTS_FILE))
}

/// The model's fingerprint: SHA-256 over its config file and weights file, hex-encoded.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        let path = dir.join(name);
        hasher.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
