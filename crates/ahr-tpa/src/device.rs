//! Device names shared by the CLI and the tests: `cpu` (burn's pure-Rust flex backend) and, with
//! the `tch` feature, `tch-cpu` and `tch-cuda[:N]` (libtorch through burn-tch).

use burn::tensor::Device;

/// Whether tensors on `device` live in host memory (flex, libtorch's CPU): the decode kernel can
/// then read the cache in place.
pub fn is_cpu(device: &Device) -> bool {
    let plain = device.clone().inner();
    plain == Device::flex() || (cfg!(feature = "tch") && is_libtorch_cpu(&plain))
}

#[cfg(feature = "tch")]
#[allow(deprecated)]
fn is_libtorch_cpu(device: &Device) -> bool {
    *device == Device::libtorch()
}

#[cfg(not(feature = "tch"))]
fn is_libtorch_cpu(_: &Device) -> bool {
    false
}

/// Environment variable that picks the device of `--device`'s default and of the test suites.
pub const DEVICE_ENV: &str = "AHR_DEVICE";

/// Device names this build accepts.
pub fn device_names() -> &'static str {
    if cfg!(feature = "tch") { "`cpu`, `tch-cpu`, `tch-cuda[:N]`" } else { "`cpu`" }
}

/// Resolve a device name.
pub fn parse(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::flex()),
        _ if name == "tch-cpu" || name.starts_with("tch-cuda") => libtorch(name),
        other => Err(format!("unknown device `{other}`: this build supports {}", device_names())),
    }
}

/// The device named by `AHR_DEVICE` (default `cpu`); what the test suites run on, so that
/// `AHR_DEVICE=tch-cpu cargo test --features ahr-cli/tch` runs them on libtorch.
///
/// # Panics
/// When the variable names a device this build does not have.
pub fn from_env() -> Device {
    let name = std::env::var(DEVICE_ENV).unwrap_or_else(|_| "cpu".into());
    parse(&name).unwrap_or_else(|e| panic!("{DEVICE_ENV}: {e}"))
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is still burn 0.22's libtorch path
fn libtorch(name: &str) -> Result<Device, String> {
    if name == "tch-cpu" {
        return Ok(Device::libtorch());
    }
    let index = match name.strip_prefix("tch-cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => i,
            None => return Err(format!("`{name}`: write tch-cuda or tch-cuda:N")),
        },
        None => unreachable!("called for tch-* names only"),
    };
    Ok(Device::libtorch_cuda(index))
}

#[cfg(not(feature = "tch"))]
fn libtorch(name: &str) -> Result<Device, String> {
    Err(format!(
        "device `{name}` needs libtorch, which this build does not include: rebuild with \
         `cargo build --release -p ahr-cli --features tch` after setting up torch 2.9.0 \
         (README, \"Backends\")"
    ))
}
