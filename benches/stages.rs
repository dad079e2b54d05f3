//! The synthetic source, and pre- and post-processing stages at Cityscapes resolution (criterion). The network itself is
//! measured by `benches/network.rs` against onnxruntime.
//!
//! ```text
//! cargo bench --bench stages
//! ```

use criterion::{Criterion, criterion_group, criterion_main};

use semask_edge::frame::{Frame, Rgb8Image};
use semask_edge::model::ClassTable;
use semask_edge::named::Named;
use semask_edge::postprocess::{Needs, Postprocessor, Upsample};
use semask_edge::preprocess::{PreprocSpec, Preprocessor};
use semask_edge::source::synth::{SynthConfig, SynthScene};

const FRAME_W: usize = 2048;
const FRAME_H: usize = 1024;
/// Network input 512x1024, logits at stride 4.
const NET_W: usize = 1024;
const NET_H: usize = 512;
const CLASSES: usize = 19;

fn frame() -> Rgb8Image {
    let mut img = Rgb8Image::new(FRAME_W, FRAME_H);
    for (i, v) in img.data.iter_mut().enumerate() {
        *v = ((i * 31) ^ (i >> 7)) as u8;
    }
    img
}

/// Noise logits: every pixel is near a class boundary (worst case for `exact`).
fn noise_logits() -> Vec<f32> {
    let (h, w) = (NET_H / 4, NET_W / 4);
    (0..CLASSES * h * w).map(|i| ((i * 2654435761usize) % 1000) as f32 / 100.0).collect()
}

/// Scene-like logits: large regions (sky, buildings, road, a car, poles) with noise on top, as a
/// trained model produces.
fn scene_logits() -> Vec<f32> {
    let (h, w) = (NET_H / 4, NET_W / 4);
    let mut logits = noise_logits();
    for y in 0..h {
        for x in 0..w {
            let class = match (y * 8 / h, x) {
                (0..=1, _) => 10,                            // sky
                (2..=3, x) if x % 40 < 3 => 5,               // poles
                (2..=3, _) => 2,                             // buildings
                (4..=5, x) if (100..160).contains(&x) => 13, // a car
                (4, _) => 1,                                 // sidewalk
                _ => 0,                                      // road
            };
            logits[(class * h + y) * w + x] += 20.0;
        }
    }
    logits
}

fn bench_stages(c: &mut Criterion) {
    let mut scene = SynthScene::new(SynthConfig::default());
    let (mut synth_image, mut synth_labels) = (Rgb8Image::default(), semask_edge::frame::LabelMap::default());
    let mut index = 0;
    c.bench_function("synth render 1024x512", |b| {
        b.iter(|| {
            index += 1;
            scene.render(index % 300, &mut synth_image, &mut synth_labels)
        })
    });

    let image = frame();
    let spec = PreprocSpec::imagenet(NET_W, NET_H);
    let mut pre = Preprocessor::new(spec);
    let mut input = vec![0.0; spec.input_len()];
    c.bench_function("preprocess 2048x1024 -> 1024x512", |b| b.iter(|| pre.run(&image, &mut input)));

    let shape = [1, CLASSES, NET_H / 4, NET_W / 4];
    let mut frame = Frame { image, ..Default::default() };
    for (kind, logits) in [("scene", scene_logits()), ("noise", noise_logits())] {
        for upsample in [Upsample::Fast, Upsample::Exact] {
            let mut post = Postprocessor::new(upsample, shape, ClassTable::cityscapes(), 0.5);
            c.bench_function(&format!("labels {} 19x128x256 -> 2048x1024 ({kind})", upsample.name()), |b| {
                b.iter(|| post.run(&logits, &mut frame, Needs::default()))
            });
        }
    }
    let logits = scene_logits();
    let mut post = Postprocessor::new(Upsample::Fast, shape, ClassTable::cityscapes(), 0.5);
    post.run(&logits, &mut frame, Needs::default());
    c.bench_function("colour + overlay 2048x1024", |b| {
        b.iter(|| {
            semask_edge::postprocess::colorize::colorize(
                &frame.labels,
                post.classes().palette(),
                &mut frame.color,
            );
            semask_edge::postprocess::overlay::blend(&frame.image, &frame.color, 128, &mut frame.overlay);
        })
    });
}

criterion_group! {
    name = stages;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench_stages
}
criterion_main!(stages);
