//! The one place that turns a device name into a burn device.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// `cpu` = burn's pure-Rust flex backend (AVX-512 kernels detected at run time).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::flex()),
        other => bail!("unknown device `{other}`: this build supports `cpu`"),
    }
}
