//! Building blocks with PyTorch's parameter names and layouts (`weight` / `bias`,
//! Linear weights `[out, in]`), so that an official `state_dict` loads by name and shape with no
//! renaming or transposing, and our checkpoints load back into PyTorch the same way.
//!
//! Training-only behaviour (dropout, drop-path, batch statistics) switches on when the input
//! lives on an autodiff device and the module's `training` flag is set (`Module::train`), as in
//! burn's own layers.

use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::module::{batch_norm, batch_norm_train, conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

/// Whether training behaviour applies to `input` for a module with `flag`.
pub fn training<const D: usize>(input: &Tensor<D>, flag: &Param<Flag>) -> bool {
    input.device().is_autodiff() && flag.is_enabled()
}

/// `N(0, std)` truncated at +/- 2 (absolute), as timm's `trunc_normal_` (std 0.02: untruncated
/// in practice).
pub fn trunc_normal<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device).clamp(-2.0, 2.0)
}

/// `y = x W^T + b` with `W` shaped `[out, in]` (PyTorch's `nn.Linear`).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Swin's initialisation: weights trunc-normal(0.02), biases zero.
    pub fn new(d_in: usize, d_out: usize, with_bias: bool, device: &Device) -> Self {
        Linear {
            weight: Param::from_tensor(trunc_normal([d_out, d_in], 0.02, device)),
            bias: with_bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val().transpose(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// LayerNorm over the last axis, eps 1e-5, affine `weight` / `bias`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
}

impl LayerNorm {
    pub fn new(dim: usize, device: &Device) -> Self {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), 1e-5)
    }
}

/// 2-D convolution, weights `[out, in, k, k]`.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub(crate) stride: usize,
    #[module(skip)]
    pub(crate) padding: usize,
}

/// How a convolution's weights start.
#[derive(Debug, Clone, Copy)]
pub enum ConvInit {
    /// PyTorch's default (kaiming-uniform with a = sqrt(5); bias uniform in +/- 1/sqrt(fan_in)).
    TorchDefault,
    /// Kaiming-normal, fan_out, ReLU gain (mmcv's ConvModule).
    KaimingFanOut,
    /// `N(0, std)` weights, zero bias (mmseg's `conv_seg`).
    Normal(f64),
}

impl Conv2d {
    // Mirrors `nn.Conv2d(d_in, d_out, kernel, stride, padding, bias)` plus the init and device.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d_in: usize,
        d_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        with_bias: bool,
        init: ConvInit,
        device: &Device,
    ) -> Self {
        let shape = [d_out, d_in, kernel, kernel];
        let fan_in = (d_in * kernel * kernel) as f64;
        let fan_out = (d_out * kernel * kernel) as f64;
        let (weight, bias_bound) = match init {
            ConvInit::TorchDefault => {
                let bound = 1.0 / fan_in.sqrt();
                (Tensor::random(shape, Distribution::Uniform(-bound, bound), device), Some(bound))
            }
            ConvInit::KaimingFanOut => {
                (Tensor::random(shape, Distribution::Normal(0.0, (2.0 / fan_out).sqrt()), device), None)
            }
            ConvInit::Normal(std) => (Tensor::random(shape, Distribution::Normal(0.0, std), device), None),
        };
        let bias = with_bias.then(|| {
            Param::from_tensor(match bias_bound {
                Some(b) => Tensor::random([d_out], Distribution::Uniform(-b, b), device),
                None => Tensor::zeros([d_out], device),
            })
        });
        Conv2d { weight: Param::from_tensor(weight), bias, stride, padding }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// BatchNorm over the channel axis of NCHW, eps 1e-5, momentum 0.1; `running_var` is updated
/// with the unbiased batch variance, as PyTorch does.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub training: Param<Flag>,
}

impl BatchNorm2d {
    pub fn new(channels: usize, device: &Device) -> Self {
        BatchNorm2d {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            training: Param::from_bool(true),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        if !training(&x, &self.training) {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return batch_norm(x, self.weight.val(), self.bias.val(), mean, var, 1e-5);
        }
        let [b, _, h, w] = x.dims();
        let n = (b * h * w) as f64;
        let out = batch_norm_train(x, self.weight.val(), self.bias.val(), 1e-5);
        let momentum = 0.1;
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let unbiased = out.variance.detach().mul_scalar(n / (n - 1.0).max(1.0));
        self.running_mean
            .update(mean.mul_scalar(1.0 - momentum).add(out.mean.detach().mul_scalar(momentum)).detach());
        self.running_var.update(var.mul_scalar(1.0 - momentum).add(unbiased.mul_scalar(momentum)).detach());
        out.output
    }
}

/// Element dropout (`nn.Dropout`) in training; identity otherwise.
#[derive(Module, Debug)]
pub struct Dropout {
    pub training: Param<Flag>,
    #[module(skip)]
    prob: f64,
}

impl Dropout {
    pub fn new(prob: f64) -> Self {
        Dropout { training: Param::from_bool(true), prob }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !training(&x, &self.training) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mask = x.random_like(Distribution::Bernoulli(keep));
        x.mul(mask).div_scalar(keep)
    }

    /// Channel dropout of NCHW (`nn.Dropout2d`): whole channels dropped per sample.
    pub fn forward_channels(&self, x: Tensor<4>) -> Tensor<4> {
        if self.prob == 0.0 || !training(&x, &self.training) {
            return x;
        }
        let [b, c, _, _] = x.dims();
        let keep = 1.0 - self.prob;
        let mask = Tensor::<4>::random([b, c, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x.mul(mask).div_scalar(keep)
    }

    /// Stochastic depth (`DropPath`): whole samples of a residual branch dropped.
    pub fn forward_path<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !training(&x, &self.training) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let mask = Tensor::<D>::random(shape, Distribution::Bernoulli(keep), &x.device());
        x.mul(mask).div_scalar(keep)
    }
}
