//! Training batches made on worker threads, handed out in order.
//!
//! Batch `t` holds samples of a per-epoch shuffle of the dataset (seeded by the run seed and
//! the epoch), each augmented with its own [`Rng`], so the stream of batches depends only on
//! the seed: a resumed run sees the same batches as an uninterrupted one. Workers stay at most
//! `prefetch` batches ahead.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::augment::{AugmentConfig, Rng, augment};
use super::{DataError, Dataset, Sample};

/// A batch of training crops.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Iteration this batch is for.
    pub iteration: usize,
    pub size: usize,
    pub height: usize,
    pub width: usize,
    /// `[B, 3, H, W]` normalised.
    pub images: Vec<f32>,
    /// `[B, H, W]` train ids, 255 ignored.
    pub labels: Vec<u8>,
}

impl Batch {
    /// The batch cut into `parts` consecutive shares whose sizes differ by at most one (the
    /// first ones take the remainder), for data-parallel steps. Fewer shares than `parts` when
    /// the batch is smaller; never an empty one.
    pub fn split(&self, parts: usize) -> Vec<Batch> {
        let parts = parts.clamp(1, self.size.max(1));
        let (pixels, mut start) = (self.height * self.width, 0);
        (0..parts)
            .map(|i| {
                let size = self.size / parts + usize::from(i < self.size % parts);
                let range = start..start + size;
                start += size;
                Batch {
                    iteration: self.iteration,
                    size,
                    height: self.height,
                    width: self.width,
                    images: self.images[range.start * 3 * pixels..range.end * 3 * pixels].to_vec(),
                    labels: self.labels[range.start * pixels..range.end * pixels].to_vec(),
                }
            })
            .collect()
    }
}

/// The dataset index of item `j` of the batch for `iteration`.
pub fn sample_index(len: usize, batch: usize, seed: u64, iteration: usize, j: usize) -> (u64, usize) {
    let per_epoch = (len / batch).max(1);
    let epoch = (iteration / per_epoch) as u64;
    let position = (iteration % per_epoch) * batch + j;
    // Fisher-Yates shuffle of 0..len for this epoch, computed lazily: cheap for the sizes here.
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    for i in (1..len).rev() {
        order.swap(i, rng.below(i + 1));
    }
    (epoch, order[position % len])
}

fn build(
    dataset: &dyn Dataset,
    augment_config: &AugmentConfig,
    batch: usize,
    seed: u64,
    iteration: usize,
) -> Result<Batch, DataError> {
    let (ch, cw) = augment_config.crop;
    let mut images = Vec::with_capacity(batch * 3 * ch * cw);
    let mut labels = Vec::with_capacity(batch * ch * cw);
    let mut sample = Sample::default();
    for j in 0..batch {
        let (epoch, index) = sample_index(dataset.len(), batch, seed, iteration, j);
        dataset.get(index, &mut sample)?;
        let crop = augment(&sample, augment_config, &mut Rng::for_sample(seed, epoch, index as u64));
        images.extend_from_slice(&crop.image);
        labels.extend_from_slice(&crop.labels);
    }
    Ok(Batch { iteration, size: batch, height: ch, width: cw, images, labels })
}

/// Batches for iterations `start..`, made by `workers` threads.
pub struct BatchLoader {
    results: Receiver<(usize, Result<Batch, DataError>)>,
    jobs: Sender<usize>,
    pending: BTreeMap<usize, Result<Batch, DataError>>,
    next: usize,
    workers: Vec<JoinHandle<()>>,
}

impl BatchLoader {
    pub fn new(
        dataset: Arc<dyn Dataset>,
        augment_config: AugmentConfig,
        batch: usize,
        seed: u64,
        start: usize,
        workers: usize,
        prefetch: usize,
    ) -> BatchLoader {
        let (job_tx, job_rx) = channel::<usize>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, result_rx) = channel();
        let mut handles = Vec::new();
        for w in 0..workers.max(1) {
            let (jobs, results, dataset, config) =
                (job_rx.clone(), result_tx.clone(), dataset.clone(), augment_config.clone());
            let handle = std::thread::Builder::new()
                .name(format!("semask-data-{w}"))
                .spawn(move || {
                    loop {
                        let job = jobs.lock().map(|rx| rx.recv());
                        let Ok(Ok(iteration)) = job else { return };
                        // A panic must reach the trainer as an error: a worker that died would
                        // leave its batch missing and the loader waiting for it forever.
                        let batch = semask_edge::guard::catch_panic(|| {
                            build(dataset.as_ref(), &config, batch, seed, iteration)
                        })
                        .unwrap_or_else(|panic| Err(DataError::Worker { iteration, reason: panic }));
                        if results.send((iteration, batch)).is_err() {
                            return;
                        }
                    }
                })
                .expect("cannot spawn a data worker");
            handles.push(handle);
        }
        for t in start..start + prefetch.max(1) {
            let _ = job_tx.send(t);
        }
        BatchLoader {
            results: result_rx,
            jobs: job_tx,
            pending: BTreeMap::new(),
            next: start,
            workers: handles,
        }
    }

    /// The batch of the next iteration.
    pub fn next_batch(&mut self, prefetch: usize) -> Result<Batch, DataError> {
        let wanted = self.next;
        let batch = loop {
            if let Some(batch) = self.pending.remove(&wanted) {
                break batch;
            }
            match self.results.recv() {
                Ok((iteration, batch)) => {
                    self.pending.insert(iteration, batch);
                }
                // Every worker is gone (they only stop when the loader drops its job channel,
                // so this is not expected): an error, not a wait without end.
                Err(_) => {
                    return Err(DataError::Worker {
                        iteration: wanted,
                        reason: "every data worker has stopped".into(),
                    });
                }
            }
        };
        self.next += 1;
        let _ = self.jobs.send(wanted + prefetch.max(1));
        batch
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they finish their current batch.
        let (dummy, _) = channel();
        drop(std::mem::replace(&mut self.jobs, dummy));
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset whose sample 3 panics (as a decoder might on a hostile file).
    struct Panicky;

    impl Dataset for Panicky {
        fn len(&self) -> usize {
            8
        }
        fn describe(&self) -> String {
            "panicky".into()
        }
        fn get(&self, index: usize, out: &mut Sample) -> Result<(), DataError> {
            assert_ne!(index, 3, "sample 3 is poison");
            out.image = semask_edge::frame::Rgb8Image::new(16, 16);
            out.labels = semask_edge::frame::LabelMap::new(16, 16);
            Ok(())
        }
    }

    #[test]
    fn a_worker_panic_is_an_error_not_a_hang() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let config = AugmentConfig {
                scale: (16, 16),
                ratio_range: (1.0, 1.0),
                crop: (8, 8),
                cat_max_ratio: 1.0,
                flip_prob: 0.0,
                photometric: false,
                spec: semask_edge::preprocess::PreprocSpec::imagenet(0, 0),
            };
            let mut loader = BatchLoader::new(Arc::new(Panicky), config, 1, 0, 0, 2, 2);
            let results: Vec<Result<usize, String>> = (0..8)
                .map(|_| loader.next_batch(2).map(|b| b.iteration).map_err(|e| e.to_string()))
                .collect();
            let _ = tx.send(results);
        });
        let results = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the loader hung");
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(!failed.is_empty(), "no batch held sample 3: {results:?}");
        assert!(failed.iter().all(|e| e.contains("poison")), "{failed:?}");
        assert!(results.iter().filter(|r| r.is_ok()).count() >= 4, "{results:?}");
    }

    #[test]
    fn split_shares_cover_the_batch_in_order() {
        let (h, w) = (2, 3);
        for (size, parts, expected) in
            [(8, 2, vec![4, 4]), (7, 3, vec![3, 2, 2]), (2, 3, vec![1, 1]), (1, 1, vec![1]), (5, 1, vec![5])]
        {
            let batch = Batch {
                iteration: 9,
                size,
                height: h,
                width: w,
                images: (0..size * 3 * h * w).map(|v| v as f32).collect(),
                labels: (0..size * h * w).map(|v| v as u8).collect(),
            };
            let shares = batch.split(parts);
            assert_eq!(shares.iter().map(|b| b.size).collect::<Vec<_>>(), expected);
            assert!(shares.iter().all(|b| b.iteration == 9 && b.height == h && b.width == w));
            assert_eq!(shares.iter().flat_map(|b| b.images.clone()).collect::<Vec<_>>(), batch.images);
            assert_eq!(shares.iter().flat_map(|b| b.labels.clone()).collect::<Vec<_>>(), batch.labels);
        }
    }
}
