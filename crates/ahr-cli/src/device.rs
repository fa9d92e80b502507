//! `--device`: the names are resolved in `ahr_tpa::device`, shared with the test suites.

use anyhow::{Result, anyhow};
use burn::tensor::Device;

/// Resolve `--device` and check that the device runs here (`ahr_tpa::device::open`).
pub fn device(name: &str) -> Result<Device> {
    ahr_tpa::device::open(name).map_err(|e| anyhow!(e))
}
