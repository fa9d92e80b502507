//! `--device`: the names are resolved in `ahr_tpa::device`, shared with the test suites.

use anyhow::{Result, anyhow};
use burn::tensor::Device;

/// Resolve `--device`.
pub fn device(name: &str) -> Result<Device> {
    ahr_tpa::device::parse(name).map_err(|e| anyhow!(e))
}
