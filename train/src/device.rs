//! Where the model computes: the `--device` flag of every command.
//!
//! - `cpu`: burn's pure-Rust `flex` backend (the default; what runs everywhere).
//! - `gpu`, `gpu:N`: burn's `wgpu` backend (feature `gpu`): Vulkan on Linux and
//!   Jetson, Metal on macOS, DX12 on Windows. No toolkit at build time; the driver is loaded
//!   when a GPU is first asked for. `N` indexes [`adapters`], best first (discrete GPUs, then
//!   integrated, virtual, and software ones such as Mesa's lavapipe), so `gpu` is `gpu:0`.
//! - `cuda`, `cuda:N`: burn's CUDA backend (feature `cuda`; cannot build on the development
//!   machines, whose network does not serve the LLVM its build downloads).
//! - A comma-separated list (`gpu:0,gpu:1`) trains data-parallel: each device computes the
//!   gradients of its share of the batch and burn's multi-device optimizer step sums them
//!   ([`crate::training::train_step`]).
//!
//! [`open`] turns a [`DeviceList`] into burn devices plus a [`DeviceInfo`] each (name, driver,
//! graphics API), which runs log and write into their `config.json`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// One entry of `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    Cpu,
    /// The `N`th of [`adapters`].
    Gpu(usize),
    /// The CUDA device of that index (feature `cuda`).
    Cuda(usize),
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Cpu => write!(f, "cpu"),
            DeviceName::Gpu(n) => write!(f, "gpu:{n}"),
            DeviceName::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--device`: one device, or several (distinct) for data-parallel training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(pub Vec<DeviceName>);

impl DeviceList {
    pub fn cpu() -> DeviceList {
        DeviceList(vec![DeviceName::Cpu])
    }

    /// The one device of a command that cannot split its work.
    pub fn single(&self) -> Result<DeviceName, DeviceError> {
        match self.0.as_slice() {
            [one] => Ok(*one),
            _ => Err(DeviceError::NotSingle(self.to_string())),
        }
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", names.join(","))
    }
}

impl FromStr for DeviceList {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<DeviceList, DeviceError> {
        let mut names = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (kind, index) = match item.split_once(':') {
                Some((kind, index)) => {
                    (kind, Some(index.parse::<usize>().map_err(|_| DeviceError::Unknown(item.into()))?))
                }
                None => (item, None),
            };
            let name = match (kind, index) {
                ("cpu", None) => DeviceName::Cpu,
                ("gpu", index) => DeviceName::Gpu(index.unwrap_or(0)),
                ("cuda", index) => DeviceName::Cuda(index.unwrap_or(0)),
                _ => return Err(DeviceError::Unknown(item.into())),
            };
            if names.contains(&name) {
                return Err(DeviceError::Repeated(name.to_string()));
            }
            names.push(name);
        }
        Ok(DeviceList(names))
    }
}

/// What a device is, as runs log it and write it into `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// As given to `--device` (`cpu`, `gpu:0`).
    pub device: String,
    /// The adapter's own name (`NVIDIA GeForce RTX 4090`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// discrete, integrated, virtual, software (a CPU implementation), or cpu.
    pub kind: String,
    /// The driver and its version, as the driver reports them.
    pub driver: String,
    /// The graphics API (Vulkan, Metal, Dx12) or burn's backend (flex, cuda).
    pub backend: String,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({}, {}, driver {})", self.device, self.name, self.kind, self.backend, self.driver)
    }
}

/// An opened device.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub name: DeviceName,
    pub device: Device,
    pub info: DeviceInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "unknown device {0:?}: use cpu, gpu, gpu:N (see `semask-train devices`), cuda:N, or a list (gpu:0,gpu:1)"
    )]
    Unknown(String),
    #[error("--device lists {0} twice: each device takes one share of the batch")]
    Repeated(String),
    #[error("--device {0}: this command runs on one device; name one (cpu, gpu or gpu:N)")]
    NotSingle(String),
    #[error(
        "--device {requested}: this semask-train was built without the gpu feature; rebuild with \
         `cargo build --release -p semask-train --features gpu`, or use --device cpu"
    )]
    NoGpuBuild { requested: String },
    #[error(
        "--device {requested}: no such GPU adapter; found: {found}. Install the GPU's Vulkan driver \
         (Debian: mesa-vulkan-drivers, also for the software lavapipe device; NVIDIA: the driver's \
         Vulkan ICD), check it with `vulkaninfo --summary`, or use --device cpu"
    )]
    NoAdapter { requested: String, found: String },
    #[error(
        "--device {device} ({name}): the GPU did not start: {message}; use another device or --device cpu"
    )]
    Start { device: String, name: String, message: String },
    #[error(
        "--device cuda:{0}: this semask-train was built without CUDA; rebuild with \
         `cargo build --release -p semask-train --features cuda` (CUDA toolkit needed), or use --device cpu or gpu"
    )]
    NoCudaBuild(usize),
}

/// The flex CPU device and what it is.
pub fn cpu() -> ComputeDevice {
    ComputeDevice {
        name: DeviceName::Cpu,
        device: crate::cpu(),
        info: DeviceInfo {
            device: "cpu".into(),
            name: format!("{} threads", std::thread::available_parallelism().map_or(1, |n| n.get())),
            kind: "cpu".into(),
            driver: "-".into(),
            backend: "flex".into(),
        },
    }
}

/// Opens every device of `list`, in order (the first holds the model and the optimizer).
pub fn open(list: &DeviceList) -> Result<Vec<ComputeDevice>, DeviceError> {
    list.0.iter().map(|name| open_one(*name)).collect()
}

/// Opens one device. Opening the same GPU again returns the same device.
pub fn open_one(name: DeviceName) -> Result<ComputeDevice, DeviceError> {
    match name {
        DeviceName::Cpu => Ok(cpu()),
        DeviceName::Gpu(index) => gpu::open(index),
        DeviceName::Cuda(index) => cuda(index),
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<ComputeDevice, DeviceError> {
    Ok(ComputeDevice {
        name: DeviceName::Cuda(index),
        device: Device::cuda(index),
        info: DeviceInfo {
            device: format!("cuda:{index}"),
            name: format!("CUDA device {index}"),
            kind: "discrete".into(),
            driver: "-".into(),
            backend: "cuda".into(),
        },
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(index: usize) -> Result<ComputeDevice, DeviceError> {
    Err(DeviceError::NoCudaBuild(index))
}

/// A GPU adapter `gpu:N` can name.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub info: DeviceInfo,
    #[cfg(feature = "gpu")]
    api: burn::tensor::wgpu::WgpuBackend,
    #[cfg(feature = "gpu")]
    kind: burn::tensor::DeviceKind,
}

/// The machine's GPU adapters, best first: `gpu:N` is the `N`th. Empty without the `gpu`
/// feature or without a Vulkan/Metal/DX12 driver.
pub fn adapters() -> Vec<Adapter> {
    gpu::adapters()
}

/// The adapters in one line, for errors.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
fn found(adapters: &[Adapter]) -> String {
    if adapters.is_empty() {
        return "no Vulkan, Metal or DX12 adapter".into();
    }
    adapters.iter().map(|a| a.info.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(feature = "gpu")]
mod gpu {
    use std::sync::Mutex;

    use burn::tensor::wgpu::{WgpuBackend, wgpu};
    use burn::tensor::{Device, DeviceKind};

    use super::{Adapter, ComputeDevice, DeviceError, DeviceInfo, DeviceName, found};

    /// GPUs opened so far: burn initialises a runtime once per adapter, and a second request
    /// for the same one must get the same device.
    static OPENED: Mutex<Vec<(usize, ComputeDevice)>> = Mutex::new(Vec::new());

    pub fn adapters() -> Vec<Adapter> {
        let mut list = Vec::new();
        for backend in [wgpu::Backend::Vulkan, wgpu::Backend::Metal, wgpu::Backend::Dx12] {
            if !wgpu::Instance::enabled_backend_features().contains(backend.into()) {
                continue;
            }
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: backend.into(),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let infos: Vec<wgpu::AdapterInfo> =
                futures_lite::future::block_on(instance.enumerate_adapters(backend.into()))
                    .iter()
                    .map(|adapter| adapter.get_info())
                    .collect();
            // burn selects an adapter by its type and its rank among the adapters of that type
            // on one API (cubecl-wgpu's `select_from_adapter_list`); a CPU adapter is always
            // the first of its type.
            let mut rank = [0usize; 4];
            for info in infos {
                // The slot is also the order of preference.
                let slot = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Cpu => 3,
                    wgpu::DeviceType::Other => continue,
                };
                let index = rank[slot];
                rank[slot] += 1;
                let (kind, kind_name) = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => (DeviceKind::DiscreteGpu(index), "discrete"),
                    wgpu::DeviceType::IntegratedGpu => (DeviceKind::IntegratedGpu(index), "integrated"),
                    wgpu::DeviceType::VirtualGpu => (DeviceKind::VirtualGpu(index), "virtual"),
                    wgpu::DeviceType::Cpu if index == 0 => (DeviceKind::Cpu, "software"),
                    _ => continue,
                };
                let api = match backend {
                    wgpu::Backend::Metal => WgpuBackend::Metal,
                    wgpu::Backend::Dx12 => WgpuBackend::Dx12,
                    _ => WgpuBackend::Vulkan,
                };
                let driver = [info.driver.as_str(), info.driver_info.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                list.push((
                    slot,
                    Adapter {
                        info: DeviceInfo {
                            device: String::new(),
                            name: info.name.clone(),
                            kind: kind_name.into(),
                            driver: if driver.is_empty() { "-".into() } else { driver },
                            backend: format!("{backend:?}"),
                        },
                        api,
                        kind,
                    },
                ));
            }
        }
        // Best first; the sort is stable, so each API's own order stays.
        list.sort_by_key(|(slot, _)| *slot);
        list.into_iter()
            .enumerate()
            .map(|(n, (_, mut adapter))| {
                adapter.info.device = format!("gpu:{n}");
                adapter
            })
            .collect()
    }

    pub fn open(index: usize) -> Result<ComputeDevice, DeviceError> {
        let mut opened = OPENED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, device)) = opened.iter().find(|(n, _)| *n == index) {
            return Ok(device.clone());
        }
        let adapters = adapters();
        let requested = format!("gpu:{index}");
        let adapter = adapters.get(index).ok_or_else(|| DeviceError::NoAdapter {
            requested: requested.clone(),
            found: found(&adapters),
        })?;
        let device = Device::wgpu_options()
            .device_kind(adapter.kind.clone())
            .graphics_api(adapter.api)
            .init()
            .map_err(|e| DeviceError::Start {
                device: requested,
                name: adapter.info.name.clone(),
                message: e.to_string(),
            })?;
        let device = ComputeDevice { name: DeviceName::Gpu(index), device, info: adapter.info.clone() };
        opened.push((index, device.clone()));
        Ok(device)
    }
}

#[cfg(not(feature = "gpu"))]
mod gpu {
    use super::{Adapter, ComputeDevice, DeviceError};

    pub fn adapters() -> Vec<Adapter> {
        Vec::new()
    }

    pub fn open(index: usize) -> Result<ComputeDevice, DeviceError> {
        Err(DeviceError::NoGpuBuild { requested: format!("gpu:{index}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse_and_print() {
        let parse = |s: &str| s.parse::<DeviceList>();
        assert_eq!(parse("cpu").unwrap(), DeviceList::cpu());
        assert_eq!(parse("gpu").unwrap().0, [DeviceName::Gpu(0)]);
        assert_eq!(parse("gpu:2").unwrap().0, [DeviceName::Gpu(2)]);
        assert_eq!(parse("cuda").unwrap().0, [DeviceName::Cuda(0)]);
        let list = parse("gpu:0, gpu:1,cpu").unwrap();
        assert_eq!(list.0, [DeviceName::Gpu(0), DeviceName::Gpu(1), DeviceName::Cpu]);
        assert_eq!(list.to_string(), "gpu:0,gpu:1,cpu");
        assert_eq!(parse(&list.to_string()).unwrap(), list);
        assert!(list.single().is_err());
        assert_eq!(parse("gpu:3").unwrap().single().unwrap(), DeviceName::Gpu(3));
        for bad in ["", "gpu:", "gpu:-1", "gpu:x", "cpu:0", "tpu", "gpu:0,", "vulkan"] {
            assert!(matches!(parse(bad), Err(DeviceError::Unknown(_))), "{bad:?}");
        }
        assert!(matches!(parse("gpu,gpu:0"), Err(DeviceError::Repeated(d)) if d == "gpu:0"));
    }
}
