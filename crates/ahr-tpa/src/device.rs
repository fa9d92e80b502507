//! Device names shared by the CLI and the tests: `cpu` (burn's pure-Rust flex backend) and, with
//! the `tch` feature, `tch-cpu` and `tch-cuda[:N]` (libtorch through burn-tch).

use std::panic::{self, AssertUnwindSafe};

use burn::tensor::{Device, Tensor};

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

/// Resolve a device name and run one small computation on it (a matmul, a reduction and a read
/// back), so that a device that is built in but cannot run here (no GPU, no CUDA driver) is an
/// error with the backend's own reason rather than a panic in the middle of a command.
pub fn open(name: &str) -> Result<Device, String> {
    let device = parse(name)?;
    if device.clone().inner() == Device::flex() {
        return Ok(device);
    }
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let a = Tensor::<2>::ones([4, 4], &device);
        f64::from(a.clone().matmul(a).sum().into_scalar::<f32>())
    }));
    panic::set_hook(previous);
    match outcome {
        Ok(64.0) => Ok(device),
        Ok(sum) => Err(format!("device `{name}` computed a wrong result (4×4 ones squared summed to {sum}, not 64)")),
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            Err(format!(
                "device `{name}` is built in but does not work here: {}{}",
                first_line(reason),
                setup_hint(name)
            ))
        }
    }
}

/// The message in a backend's panic without the wrapping (`called `Result::unwrap()` …`,
/// `Torch("…")`) and the C++ backtrace libtorch appends after its first line (escaped or not).
fn first_line(reason: &str) -> &str {
    let reason = reason.trim();
    let reason = reason.strip_prefix("called `Result::unwrap()` on an `Err` value: ").unwrap_or(reason);
    let reason = reason.strip_prefix("Torch(\"").unwrap_or(reason);
    let end = [reason.find('\n'), reason.find("\\n")].into_iter().flatten().min().unwrap_or(reason.len());
    reason[..end].trim_end_matches("\")").trim_end()
}

/// What to look at when a built-in device fails its first computation.
fn setup_hint(name: &str) -> &'static str {
    if name.starts_with("tch-cuda") {
        "\n(`tch-cuda` needs a GPU, its driver and the CUDA build of torch on LD_LIBRARY_PATH; \
         README, \"Backends\")"
    } else {
        ""
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_or_say_what_is_missing() {
        assert!(parse("cpu").is_ok());
        assert!(open("cpu").is_ok());
        let unknown = parse("gpu").unwrap_err();
        assert!(unknown.contains("unknown device `gpu`") && unknown.contains("`cpu`"), "{unknown}");
        let tch = parse("tch-cuda:1");
        if cfg!(feature = "tch") {
            assert!(tch.is_ok());
            assert!(parse("tch-cuda:x").unwrap_err().contains("write tch-cuda or tch-cuda:N"));
        } else {
            assert!(tch.unwrap_err().contains("--features tch"));
        }
    }

    #[test]
    fn a_backend_panic_is_cut_to_its_message() {
        let torch = "called `Result::unwrap()` on an `Err` value: Torch(\"Found no NVIDIA driver on your \
                     system.\\nException raised from device_count_impl\\nframe #0: c10::Error\")";
        assert_eq!(first_line(torch), "Found no NVIDIA driver on your system.");
        assert_eq!(first_line("no device\nstack:\n  0: x"), "no device");
        assert_eq!(first_line("  plain  "), "plain");
    }
}
