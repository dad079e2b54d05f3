//! Training (SPEC section 3): loss = CE(logits) + 0.4 CE(semantic logits), both upsampled
//! bilinearly to the label size, 255 ignored, averaged over all pixels (mmseg v0.11); AdamW with
//! no weight decay on norms and relative position biases; poly schedule with linear warm-up;
//! checkpoints (weights as official-name safetensors, optimizer state, progress) and resume;
//! evaluation on held-out data; a CSV log of the curves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use semask_edge::guard::catch_panic;
use semask_edge::model::ClassTable;

use crate::data::Dataset;
use crate::data::augment::{AugmentConfig, IGNORE};
use crate::data::loader::{Batch, BatchLoader};
use crate::eval::Labeller;
use crate::model::decoder::resize;
use crate::model::{ArchConfig, SeMaskFpn};
use crate::weights::Checkpoint;

/// Hyper-parameters of a run (defaults: the Cityscapes config of SPEC section 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub arch: ArchConfig,
    pub iterations: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_iterations: usize,
    pub warmup_ratio: f64,
    pub poly_power: f64,
    pub min_lr: f64,
    /// Gradient clipping by global norm (off in the official config).
    pub grad_clip: Option<f64>,
    /// Weight of the semantic-branch loss.
    pub semantic_weight: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub eval_every: usize,
    pub workers: usize,
    /// The devices the run computes on (set by the command line; empty in runs written before
    /// it was recorded). A resumed run records the devices it resumed on.
    #[serde(default)]
    pub devices: Vec<crate::device::DeviceInfo>,
    /// The data the run trains on (set by the command line; `None` in runs written before it
    /// was recorded, and for library callers that hand datasets to [`train`] themselves).
    #[serde(default)]
    pub data: Option<crate::data::DataRecipe>,
}

impl TrainConfig {
    /// The official Cityscapes recipe (SPEC section 0) for `arch`: 80k iterations of batch 8,
    /// AdamW lr 1e-3 and weight decay 0.05, 1500 warm-up iterations from 1e-5, poly power 1.
    pub fn official(arch: ArchConfig) -> TrainConfig {
        TrainConfig {
            arch,
            iterations: 80_000,
            batch: 8,
            lr: 1e-3,
            weight_decay: 0.05,
            warmup_iterations: 1500,
            warmup_ratio: 1e-5,
            poly_power: 1.0,
            min_lr: 0.0,
            grad_clip: None,
            semantic_weight: 0.4,
            seed: 0,
            checkpoint_every: 8000,
            eval_every: 8000,
            workers: 2,
            devices: Vec::new(),
            data: None,
        }
    }

    /// The learning rate at iteration `t` (mmcv's poly policy with linear warm-up).
    pub fn lr_at(&self, t: usize) -> f64 {
        let progress = (t as f64 / self.iterations.max(1) as f64).min(1.0);
        let regular = (self.lr - self.min_lr) * (1.0 - progress).powf(self.poly_power) + self.min_lr;
        if t < self.warmup_iterations {
            let k = (1.0 - t as f64 / self.warmup_iterations as f64) * (1.0 - self.warmup_ratio);
            regular * (1.0 - k)
        } else {
            regular
        }
    }
}

/// Parameters without weight decay (SPEC: names containing these, substring match).
pub const NO_DECAY: &str = "absolute_pos_embed|relative_position_bias_table|norm";

/// The optimizer: AdamW (betas 0.9/0.999, eps 1e-8), weight decay off for [`NO_DECAY`].
pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let adamw = |wd: f64| {
        AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(wd as f32)
    };
    let clipping =
        config.grad_clip.map(|norm| burn::grad_clipping::GradientClippingConfig::Norm(norm as f32).init());
    let mut optim = adamw(config.weight_decay).init();
    if let Some(c) = clipping.clone() {
        optim = optim.with_grad_clipping(c);
    }
    optim.with_group(ParamGroup::from_regex(NO_DECAY).expect("valid regex"), adamw(0.0).build(), clipping)
}

/// Cross entropy of `logits` `[B, K, h, w]` upsampled to the labels' size, averaged over all
/// `B*H*W` pixels with ignored pixels contributing 0 (mmseg v0.11).
pub fn cross_entropy(logits: Tensor<4>, labels: &Tensor<3, Int>, valid: &Tensor<3>) -> Tensor<1> {
    let [b, h, w] = labels.dims();
    let log_p = log_softmax(resize(logits, [h, w]), 1);
    let picked = log_p.gather(1, labels.clone().unsqueeze_dim::<4>(1)).reshape([b, h, w]);
    picked.mul(valid.clone()).sum().neg().div_scalar((b * h * w) as f64)
}

/// Labels as class indices (255 → 0, masked out by `valid`) and the valid mask.
fn label_tensors(batch: &Batch, device: &Device) -> (Tensor<3, Int>, Tensor<3>) {
    let shape = [batch.size, batch.height, batch.width];
    let indices: Vec<i64> = batch.labels.iter().map(|&l| if l == IGNORE { 0 } else { l as i64 }).collect();
    let valid: Vec<f32> = batch.labels.iter().map(|&l| if l == IGNORE { 0.0 } else { 1.0 }).collect();
    (
        Tensor::from_data(TensorData::new(indices, shape), device),
        Tensor::from_data(TensorData::new(valid, shape), device),
    )
}

/// Progress saved with each checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    pub iteration: usize,
    pub config: TrainConfig,
    /// burn's id of each parameter (by official name) when the checkpoint was written. The
    /// optimizer state file keys its moments by these ids, and a model rebuilt from the
    /// weights gets fresh ids: without restoring them a resumed run would neither find its
    /// AdamW moments nor drop the stale ones.
    #[serde(default)]
    pub param_ids: std::collections::BTreeMap<String, u64>,
}

/// The ids of `model`'s parameters by path (official name).
pub fn param_ids(model: &SeMaskFpn) -> std::collections::BTreeMap<String, u64> {
    struct Ids(Vec<String>, std::collections::BTreeMap<String, u64>);
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1.insert(self.0.join("."), param.id.val());
        }
    }
    let mut ids = Ids(Vec::new(), Default::default());
    model.visit(&mut ids);
    ids.1
}

/// Gives `model`'s parameters the ids in `ids` (see [`TrainState::param_ids`]); returns the
/// model and how many parameters had no saved id.
pub fn restore_param_ids(
    model: SeMaskFpn,
    ids: &std::collections::BTreeMap<String, u64>,
) -> (SeMaskFpn, usize) {
    struct Restore<'a>(Vec<String>, &'a std::collections::BTreeMap<String, u64>, usize);
    impl ModuleMapper for Restore<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.1.get(&self.0.join(".")) {
                Some(&id) => param.id = ParamId::from(id),
                None => self.2 += 1,
            }
            param
        }
    }
    let mut restore = Restore(Vec::new(), ids, 0);
    let model = model.map(&mut restore);
    (model, restore.2)
}

/// One logged row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRow {
    pub iteration: usize,
    pub lr: f64,
    pub loss: f64,
    pub loss_decode: f64,
    pub loss_semantic: f64,
    /// Pixel accuracy of the batch (labelled pixels).
    pub accuracy: f64,
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for the batch (data loading not hidden by the
    /// loader's prefetching).
    pub data_seconds: f64,
    pub val_miou: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// Where a run writes: `checkpoints/iter_N.{safetensors,optim,json}`, `latest.json`,
/// `log.csv`, `config.json`.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    fn checkpoint(&self, iteration: usize) -> PathBuf {
        self.0.join("checkpoints").join(format!("iter_{iteration}"))
    }
}

/// The burn model as a [`Labeller`]: full resolution, no augmentation ([`predict`]).
pub struct ModelLabeller {
    model: SeMaskFpn,
    spec: semask_edge::preprocess::PreprocSpec,
    device: Device,
    classes: ClassTable,
}

impl ModelLabeller {
    pub fn new(model: SeMaskFpn, spec: &semask_edge::preprocess::PreprocSpec, device: &Device) -> Self {
        let classes = ClassTable::for_count(model.num_classes());
        ModelLabeller { model, spec: *spec, device: device.clone(), classes }
    }
}

impl Labeller for ModelLabeller {
    fn classes(&self) -> &ClassTable {
        &self.classes
    }

    fn label(&mut self, frame: &mut semask_edge::frame::Frame) -> anyhow::Result<()> {
        let (w, h) = (frame.image.width, frame.image.height);
        frame.labels.reset(w, h);
        frame.labels.data = predict(&self.model, &frame.image, &self.spec, &self.device);
        Ok(())
    }
}

/// Train ids predicted for an image at its own size (bilinear logits upsampling, argmax).
pub fn predict(
    model: &SeMaskFpn,
    image: &semask_edge::frame::Rgb8Image,
    spec: &semask_edge::preprocess::PreprocSpec,
    device: &Device,
) -> Vec<u8> {
    let (h, w) = (image.height, image.width);
    let spec = semask_edge::preprocess::PreprocSpec { input_width: w, input_height: h, ..*spec };
    let mut input = vec![0.0; spec.input_len()];
    semask_edge::preprocess::Preprocessor::new(spec).run(image, &mut input);
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, h, w]), device);
    let logits = model.forward(x).logits;
    let labels = resize(logits, [h, w]).argmax(1);
    labels
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v as u8)
        .collect()
}

/// What one training step measured on its batch.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    pub loss_decode: f64,
    pub loss_semantic: f64,
    /// Pixel accuracy of the batch before the update (labelled pixels).
    pub accuracy: f64,
}

/// One optimisation step on `batch` at learning rate `lr`: forward, loss, backward, AdamW update.
///
/// `devices` (autodiff devices; the first holds `model` and the optimizer state) share the
/// batch: each computes the gradients of its share ([`Batch::split`]) with the share's loss
/// weighted by its fraction of the batch, and burn's multi-device optimizer step
/// ([`ModuleOptimizer::step_multi`]) sums them, so N devices take the step one device would
/// take on the whole batch. One device takes the same path, without a thread.
pub fn train_step(
    model: SeMaskFpn,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    lr: f64,
    semantic_weight: f64,
    devices: &[Device],
) -> anyhow::Result<(SeMaskFpn, StepStats)> {
    anyhow::ensure!(!devices.is_empty(), "a training step needs a device");
    let weight = |share: &Batch| share.size as f64 / batch.size as f64;
    // A GPU runtime reports a lost device or exhausted memory by panicking: a step error.
    let results: Vec<Result<ShareResult, String>> = if let [device] = devices {
        // The whole batch is the one share: no copy, no thread.
        vec![catch_panic(|| share_gradients(&model, batch, 1.0, semantic_weight, device))]
    } else {
        let shares = batch.split(devices.len());
        std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .iter()
                .zip(devices)
                .map(|(share, device)| {
                    let replica = model.clone();
                    scope.spawn(move || {
                        catch_panic(|| {
                            let replica = replica.fork(device);
                            share_gradients(&replica, share, weight(share), semantic_weight, device)
                        })
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap_or_else(|_| Err("the worker thread died".into())))
                .collect()
        })
    };
    let mut grads = MultiGradientsParams::default();
    let mut stats = StepStats { loss: 0.0, loss_decode: 0.0, loss_semantic: 0.0, accuracy: 0.0 };
    let (mut correct, mut labelled) = (0.0, 0.0);
    for (i, (result, device)) in results.into_iter().zip(devices).enumerate() {
        let share = result
            .map_err(|e| anyhow::anyhow!("the training step failed on device {} of --device: {e}", i + 1))?;
        grads.grads.push((share.grads, device.clone()));
        stats.loss += share.loss;
        stats.loss_decode += share.loss_decode;
        stats.loss_semantic += share.loss_semantic;
        correct += share.correct;
        labelled += share.labelled;
    }
    stats.accuracy = correct / labelled.max(1.0);
    Ok((optim.step_multi(lr, model, grads), stats))
}

/// What one device computed for its share of a batch.
struct ShareResult {
    grads: GradientsParams,
    /// Losses weighted by the share's fraction of the batch.
    loss: f64,
    loss_decode: f64,
    loss_semantic: f64,
    correct: f64,
    labelled: f64,
}

/// Forward and backward of `model` (on `device`) on `share`, its loss scaled by `weight`.
fn share_gradients(
    model: &SeMaskFpn,
    share: &Batch,
    weight: f64,
    semantic_weight: f64,
    device: &Device,
) -> ShareResult {
    let x = Tensor::<4>::from_data(
        TensorData::new(share.images.clone(), [share.size, 3, share.height, share.width]),
        device,
    );
    let (labels, valid) = label_tensors(share, device);
    let out = model.forward(x);
    let predicted = resize(out.logits.clone().detach(), [share.height, share.width]).argmax(1).reshape([
        share.size,
        share.height,
        share.width,
    ]);
    let loss_decode = cross_entropy(out.logits, &labels, &valid).mul_scalar(weight);
    let loss_semantic = cross_entropy(out.sem_logits, &labels, &valid).mul_scalar(weight);
    let loss = loss_decode.clone().add(loss_semantic.clone().mul_scalar(semantic_weight));
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let scalar = |t: Tensor<1>| {
        t.into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(f64::NAN)
    };
    let correct = predicted.equal(labels).float().mul(valid.clone()).sum();
    ShareResult {
        grads,
        loss: scalar(loss),
        loss_decode: scalar(loss_decode),
        loss_semantic: scalar(loss_semantic),
        correct: scalar(correct),
        labelled: scalar(valid.sum()),
    }
}

/// Runs training from `start` (0, or a resumed iteration) to `config.iterations` on `devices`
/// (autodiff devices, see [`train_step`]; the first holds the model and evaluates).
#[allow(clippy::too_many_arguments)]
pub fn train(
    mut model: SeMaskFpn,
    mut optim: ModuleOptimizer,
    config: &TrainConfig,
    augment: &AugmentConfig,
    train_data: Arc<dyn Dataset>,
    val_data: Option<&dyn Dataset>,
    run: &RunDir,
    start: usize,
    devices: &[Device],
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<SeMaskFpn> {
    let main_device = devices.first().ok_or_else(|| anyhow::anyhow!("training needs a device"))?;
    fs_err::create_dir_all(run.0.join("checkpoints"))?;
    write_json(&run.0.join("config.json"), &serde_json::to_value(config)?)?;
    let log_path = run.0.join("log.csv");
    let new_log = start == 0 || !log_path.exists();
    if !new_log {
        truncate_log(&log_path, start)?;
    }
    let mut log = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(!new_log)
            .write(true)
            .truncate(new_log)
            .open(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?,
    );
    if new_log {
        writeln!(
            log,
            "iteration,lr,loss,loss_decode,loss_semantic,accuracy,seconds,val_miou,val_accuracy,data_seconds"
        )?;
    }
    let prefetch = 2 * config.workers.max(1);
    let mut loader = BatchLoader::new(
        train_data.clone(),
        augment.clone(),
        config.batch,
        config.seed,
        start,
        config.workers,
        prefetch,
    );
    let progress = semask_edge::progress::bar(Some((config.iterations - start) as u64), "it", true);
    let started = Instant::now();
    let (mut waited, mut stepped) = (0.0, 0.0);
    for t in start..config.iterations {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            log::warn!("interrupted at iteration {t}: saving a checkpoint to resume from");
            save_checkpoint(&model, &optim, config, run, t)?;
            break;
        }
        let step_start = Instant::now();
        let batch = loader.next_batch(prefetch)?;
        let data_seconds = step_start.elapsed().as_secs_f64();
        let lr = config.lr_at(t);
        let (next, stats) = train_step(model, &mut optim, &batch, lr, config.semantic_weight, devices)
            .with_context(|| format!("iteration {}", t + 1))?;
        model = next;
        let mut row = LogRow {
            iteration: t + 1,
            lr,
            loss: stats.loss,
            loss_decode: stats.loss_decode,
            loss_semantic: stats.loss_semantic,
            accuracy: stats.accuracy,
            seconds: step_start.elapsed().as_secs_f64(),
            data_seconds,
            val_miou: None,
            val_accuracy: None,
        };
        if !row.loss.is_finite() {
            anyhow::bail!(
                "the loss became {} at iteration {}: lower --lr or enable --grad-clip",
                row.loss,
                t + 1
            );
        }
        let done = t + 1;
        if let Some(val) = val_data
            .filter(|_| config.eval_every > 0 && (done % config.eval_every == 0 || done == config.iterations))
        {
            let mut labeller = ModelLabeller::new(model.valid(), &augment.spec, main_device);
            let metrics = crate::eval::evaluate(&mut labeller, val, |_, _| Ok(()))?;
            row.val_miou = Some(metrics.miou);
            row.val_accuracy = Some(metrics.pixel_accuracy);
            progress.suspend(|| {
                log::info!(
                    "iteration {done}: val mIoU {:.4}, pixel accuracy {:.4}",
                    metrics.miou,
                    metrics.pixel_accuracy
                )
            });
        }
        writeln!(
            log,
            "{},{:.6e},{:.5},{:.5},{:.5},{:.4},{:.3},{},{},{:.4}",
            row.iteration,
            row.lr,
            row.loss,
            row.loss_decode,
            row.loss_semantic,
            row.accuracy,
            row.seconds,
            row.val_miou.map_or(String::new(), |v| format!("{v:.5}")),
            row.val_accuracy.map_or(String::new(), |v| format!("{v:.5}")),
            row.data_seconds
        )?;
        waited += row.data_seconds;
        stepped += row.seconds;
        log.flush()?;
        progress.set_message(format!("loss {:.3} acc {:.3} lr {:.2e}", row.loss, row.accuracy, lr));
        progress.inc(1);
        if config.checkpoint_every > 0 && (done % config.checkpoint_every == 0 || done == config.iterations) {
            save_checkpoint(&model, &optim, config, run, done)?;
        }
    }
    progress.finish_and_clear();
    log::info!(
        "trained {} iterations in {:.1} s; {:.1} % of the step time waiting for data (log.csv: data_seconds)",
        config.iterations.saturating_sub(start),
        started.elapsed().as_secs_f64(),
        100.0 * waited / stepped.max(f64::MIN_POSITIVE)
    );
    Ok(model)
}

/// Writes `iter_N.safetensors` (official names), `iter_N.optim` and `iter_N.json`, then points
/// `latest.json` at them. Each file is written whole before the next, `latest.json` last.
pub fn save_checkpoint(
    model: &SeMaskFpn,
    optim: &ModuleOptimizer,
    config: &TrainConfig,
    run: &RunDir,
    iteration: usize,
) -> anyhow::Result<()> {
    let base = run.checkpoint(iteration);
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(semask_edge::model::metadata::KEY_ARCH.into(), serde_json::to_string(&config.arch)?);
    metadata.insert("semask.iteration".into(), iteration.to_string());
    Checkpoint::from_model(model).write_safetensors(&base.with_extension("safetensors"), metadata)?;
    let optim_path = base.with_extension("optim");
    optim.save(&optim_path).map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", optim_path.display()))?;
    let state = TrainState { iteration, config: config.clone(), param_ids: param_ids(model) };
    write_json(&base.with_extension("json"), &serde_json::to_value(&state)?)?;
    let name = base.file_name().map(|f| f.to_string_lossy().into_owned());
    write_json(&run.0.join("latest.json"), &serde_json::json!({"checkpoint": name, "iteration": iteration}))
}

/// Drops the rows of `log.csv` after iteration `keep` (written after the checkpoint a run
/// resumes from), so that the resumed run's rows follow without duplicates.
fn truncate_log(path: &Path, keep: usize) -> anyhow::Result<()> {
    let text = fs_err::read_to_string(path)?;
    let kept: String = text
        .lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line.split(',').next().and_then(|v| v.parse::<usize>().ok()).is_some_and(|it| it <= keep)
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    semask_edge::files::write_atomically(path, kept.as_bytes())
        .with_context(|| format!("cannot rewrite {}", path.display()))
}

/// Writes pretty JSON, complete or not at all.
fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    semask_edge::files::write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The checkpoint `latest.json` of run directory `dir` points at: (weights, optimizer, state).
pub fn latest_checkpoint(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, TrainState)> {
    let latest = dir.join("latest.json");
    let text = fs_err::read_to_string(&latest)
        .with_context(|| format!("--resume {}: no checkpoint to resume from", dir.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", latest.display()))?;
    let name = v["checkpoint"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{} names no checkpoint", latest.display()))?;
    let base = dir.join("checkpoints").join(name);
    let state: TrainState = serde_json::from_str(&fs_err::read_to_string(base.with_extension("json"))?)
        .with_context(|| format!("{} is corrupt", base.with_extension("json").display()))?;
    Ok((base.with_extension("safetensors"), base.with_extension("optim"), state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig::official(ArchConfig::tiny())
    }

    #[test]
    fn schedule_is_mmcv_poly_with_linear_warmup() {
        let c = config();
        assert!((c.lr_at(0) - 1e-3 * 1e-5).abs() < 1e-12);
        // Halfway through warm-up: lr_reg(750) * (1 - 0.5 * (1 - 1e-5)).
        let reg = 1e-3 * (1.0 - 750.0 / 80_000.0);
        assert!((c.lr_at(750) - reg * (1.0 - 0.5 * (1.0 - 1e-5))).abs() < 1e-12);
        assert!((c.lr_at(1500) - 1e-3 * (1.0 - 1500.0 / 80_000.0)).abs() < 1e-12);
        assert!((c.lr_at(40_000) - 0.5e-3).abs() < 1e-12);
        assert_eq!(c.lr_at(80_000), 0.0);
    }

    #[test]
    fn cross_entropy_averages_over_all_pixels_with_ignored_ones_as_zero() {
        let device = crate::cpu();
        // One pixel of class 1 with logits (0, ln 3): p = 3/4; one ignored pixel.
        let logits =
            Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 0.0, 3f32.ln(), 0.0], [1, 2, 1, 2]), &device);
        let batch =
            Batch { iteration: 0, size: 1, height: 1, width: 2, images: vec![], labels: vec![1, IGNORE] };
        let (labels, valid) = label_tensors(&batch, &device);
        let loss =
            cross_entropy(logits, &labels, &valid).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
                [0];
        assert!((loss - (-(0.75f32).ln() / 2.0)).abs() < 1e-6, "{loss}");
    }

    /// A resumed run must continue with its AdamW moments: the optimizer state file keys them
    /// by parameter id, so the rebuilt model needs the saved ids (a mismatch once made resumed
    /// runs restart their moments and carry the stale ones, 16x slower per step).
    #[test]
    fn resume_finds_the_saved_optimizer_moments() {
        let device = crate::cpu().autodiff();
        let config = TrainConfig { iterations: 4, ..config() };
        let batch = Batch {
            iteration: 0,
            size: 1,
            height: 32,
            width: 32,
            images: (0..3 * 32 * 32).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect(),
            labels: (0..32 * 32).map(|i| (i % 19) as u8).collect(),
        };
        let mut optim = optimizer(&config);
        let devices = [device.clone()];
        let (model, _) =
            train_step(SeMaskFpn::new(&config.arch, &device), &mut optim, &batch, 1e-4, 0.4, &devices)
                .unwrap();
        let states = optim.to_record().len();
        assert!(states > 0);
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir(dir.path().to_path_buf());
        fs_err::create_dir_all(dir.path().join("checkpoints")).unwrap();
        save_checkpoint(&model, &optim, &config, &run, 1).unwrap();

        let (weights, optim_path, state) = latest_checkpoint(dir.path()).unwrap();
        let loaded = Checkpoint::read(&weights)
            .unwrap()
            .load_into(SeMaskFpn::new(&config.arch, &device), &device)
            .unwrap();
        let (loaded, without_id) = restore_param_ids(loaded, &state.param_ids);
        assert_eq!(without_id, 0);
        // (BatchNorm running statistics are not optimised: their ids do not matter.)
        let (saved, restored) = (param_ids(&model), param_ids(&loaded));
        let differing =
            saved.iter().filter(|(name, id)| !name.contains(".running_") && restored.get(*name) != Some(id));
        assert_eq!(differing.count(), 0);
        let mut resumed = optimizer(&config).load(&optim_path).unwrap();
        let _ = train_step(loaded, &mut resumed, &batch, 1e-4, 0.4, &devices).unwrap();
        // Every moment was found and updated in place: no second set keyed by fresh ids.
        assert_eq!(resumed.to_record().len(), states);
    }
}
