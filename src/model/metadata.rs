//! The `semask.*` keys of an ONNX file's `metadata_props`: what the runtime needs to know about a
//! segmentation model beyond its graph.
//!
//! | key | value | default when absent |
//! |---|---|---|
//! | `semask.classes` | JSON list of class names, one per logits channel | the 19 Cityscapes classes |
//! | `semask.palette` | JSON list of `[r, g, b]` (0-255), one per class (alone: the colours of the default names) | Cityscapes colours for Cityscapes names, else generated |
//! | `semask.mean` | JSON list of 3 numbers, RGB order, 0-255 scale | `[123.675, 116.28, 103.53]` |
//! | `semask.std` | JSON list of 3 numbers, RGB order, 0-255 scale | `[58.395, 57.12, 57.375]` |
//! | `semask.logits` | name of the graph output holding the logits `[1, K, h, w]` | the output named `logits`, else the first output |
//! | `semask.channel_order` | `"rgb"` or `"bgr"`: the plane order of the input | `"rgb"` |
//! | `semask.fp32_sha256` | in an int8 artifact: SHA-256 of the fp32 model it was made from | |
//!
//! Other `semask.*` keys (architecture, input size, training data, git revision: written by
//! `semask-train export`) are informational; `semask-edge info` prints them.
//! Command-line flags (`--mean`, `--std`, `--classes`, `--channel-order`) override all of these.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;

use super::classes::ClassTable;
use crate::named::{self, Named};
use crate::preprocess::{ChannelOrder, IMAGENET_MEAN, IMAGENET_STD};

pub const KEY_CLASSES: &str = "semask.classes";
pub const KEY_PALETTE: &str = "semask.palette";
pub const KEY_MEAN: &str = "semask.mean";
pub const KEY_STD: &str = "semask.std";
pub const KEY_LOGITS: &str = "semask.logits";
pub const KEY_CHANNEL_ORDER: &str = "semask.channel_order";
/// In an int8 artifact: SHA-256 of the fp32 model it was made from (`semask-train quantize`).
pub const KEY_FP32_SHA256: &str = "semask.fp32_sha256";
/// Informational keys written by `semask-train export` ([`ExportProvenance`]).
pub const KEY_ARCH: &str = "semask.arch";
pub const KEY_INPUT_SIZE: &str = "semask.input_size";
pub const KEY_WEIGHTS: &str = "semask.weights";
pub const KEY_TRAINING_DATA: &str = "semask.training_data";
pub const KEY_GIT_REVISION: &str = "semask.git_revision";
pub const KEY_EXPORTED_BY: &str = "semask.exported_by";
/// In an int8 artifact: how it was quantized (informational).
pub const KEY_QUANTIZATION: &str = "semask.quantization";

/// Where an exported model came from: `semask-train export` writes it, `semask-edge info`
/// prints it, and an int8 artifact without a hash is matched to its fp32 model by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportProvenance {
    /// The architecture, as JSON.
    pub arch: String,
    /// The network input size.
    pub input_size: crate::frame::Size,
    /// The checkpoint the weights came from.
    pub weights: String,
    /// What the weights were trained on.
    pub training_data: String,
    /// The source revision of the exporter.
    pub git_revision: String,
    /// The exporting program and version.
    pub exported_by: String,
}

impl ExportProvenance {
    /// The keys that identify the weights and recipe (all but the exporter's name).
    pub const IDENTITY_KEYS: [&'static str; 5] =
        [KEY_ARCH, KEY_INPUT_SIZE, KEY_WEIGHTS, KEY_TRAINING_DATA, KEY_GIT_REVISION];

    /// The `metadata_props` entries.
    pub fn to_props(&self) -> Vec<(String, String)> {
        [
            (KEY_ARCH, self.arch.clone()),
            (KEY_INPUT_SIZE, self.input_size.to_string()),
            (KEY_WEIGHTS, self.weights.clone()),
            (KEY_TRAINING_DATA, self.training_data.clone()),
            (KEY_GIT_REVISION, self.git_revision.clone()),
            (KEY_EXPORTED_BY, self.exported_by.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Accepted per-channel std values (0-255 scale): below this a normalised pixel overflows
/// toward infinity.
pub const STD_RANGE: std::ops::RangeInclusive<f32> = 1e-3..=1e6;
/// Accepted per-channel mean values (0-255 scale).
pub const MEAN_RANGE: std::ops::RangeInclusive<f32> = -1e6..=1e6;

/// Where a setting's value came from (shown by `semask-edge info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// The model's `metadata_props`.
    Metadata,
    /// A command-line flag.
    Flag,
    /// The built-in default for models without metadata.
    Default,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provenance::Metadata => "from model metadata",
            Provenance::Flag => "from command line",
            Provenance::Default => "default",
        })
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub from: Provenance,
}

impl<T> Setting<T> {
    fn new(value: T, from: Provenance) -> Self {
        Setting { value, from }
    }
}

/// Values given on the command line, which win over the model's metadata.
#[derive(Debug, Clone, Default)]
pub struct MetadataOverrides {
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub classes: Option<ClassTable>,
    pub channel_order: Option<ChannelOrder>,
}

/// Everything the runtime takes from a model's metadata, resolved against flags and defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SegmentationMetadata {
    /// `None` until the number of logits channels is known: see [`Self::resolve_classes`].
    pub classes: Option<Setting<ClassTable>>,
    pub mean: Setting<[f32; 3]>,
    pub std: Setting<[f32; 3]>,
    pub channel_order: Setting<ChannelOrder>,
    pub logits_output: Setting<String>,
    /// `semask.palette` of a model without `semask.classes`: the colours of the default class
    /// names, applied when [`Self::resolve_classes`] settles them.
    #[serde(skip)]
    pub palette_only: Option<Vec<[u8; 3]>>,
    /// Every `metadata_props` entry, for display.
    pub all_props: BTreeMap<String, String>,
}

/// A `semask.*` key (or the flag that overrides it) whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {key} {reason}", if *.from == Provenance::Flag { "flag" } else { "metadata key" })]
pub struct MetadataError {
    /// `semask.std`, or the flag (`--std`) when the value came from the command line.
    pub key: String,
    pub from: Provenance,
    pub reason: String,
}

impl SegmentationMetadata {
    /// Reads the `semask.*` keys from `props` and applies `overrides`. `output_names` are the
    /// graph's outputs, in order, to pick and check the logits output.
    pub fn from_props(
        props: &BTreeMap<String, String>,
        output_names: &[String],
        overrides: &MetadataOverrides,
    ) -> Result<SegmentationMetadata, MetadataError> {
        let mean = pick_vec3(props, KEY_MEAN, overrides.mean, IMAGENET_MEAN)?;
        let std = pick_vec3(props, KEY_STD, overrides.std, IMAGENET_STD)?;
        for (setting, key, flag, range) in
            [(&mean, KEY_MEAN, "--mean", MEAN_RANGE), (&std, KEY_STD, "--std", STD_RANGE)]
        {
            if let Some(bad) = setting.value.iter().find(|v| !range.contains(*v)) {
                let reason =
                    format!("has {bad}; each value must be between {} and {}", range.start(), range.end());
                return Err(match setting.from {
                    Provenance::Flag => MetadataError { key: flag.into(), from: Provenance::Flag, reason },
                    _ => err(key, reason),
                });
            }
        }

        let channel_order = match (overrides.channel_order, props.get(KEY_CHANNEL_ORDER)) {
            (Some(order), _) => Setting::new(order, Provenance::Flag),
            (None, Some(text)) => {
                let name = text.trim().trim_matches('"').to_ascii_lowercase();
                let order = named::parse::<ChannelOrder>(&name).map_err(|e| {
                    err(KEY_CHANNEL_ORDER, format!("is {:?}; use {}", e.given, e.allowed.join(" or ")))
                })?;
                Setting::new(order, Provenance::Metadata)
            }
            (None, None) => Setting::new(ChannelOrder::Rgb, Provenance::Default),
        };

        let logits_output = match props.get(KEY_LOGITS) {
            Some(name) => {
                let name = name.trim().trim_matches('"').to_string();
                if !output_names.contains(&name) {
                    return Err(err(
                        KEY_LOGITS,
                        format!("names output {name:?}, but the graph's outputs are {output_names:?}"),
                    ));
                }
                Setting::new(name, Provenance::Metadata)
            }
            None => {
                let name = output_names
                    .iter()
                    .find(|n| *n == "logits")
                    .or(output_names.first())
                    .cloned()
                    .ok_or_else(|| err(KEY_LOGITS, "cannot be defaulted: the graph has no outputs".into()))?;
                Setting::new(name, Provenance::Default)
            }
        };

        // A palette is always checked, even where a --classes file replaces it.
        let palette: Option<Vec<[u8; 3]>> = props
            .get(KEY_PALETTE)
            .map(|p| parse_json(KEY_PALETTE, p, "a JSON list of [r, g, b] with values 0-255"))
            .transpose()?;
        let mut palette_only = None;
        let classes = match (&overrides.classes, props.get(KEY_CLASSES)) {
            (Some(table), _) => Some(Setting::new(table.clone(), Provenance::Flag)),
            (None, Some(text)) => {
                let names: Vec<String> = parse_json(KEY_CLASSES, text, "a JSON list of names")?;
                let table = match palette {
                    Some(palette) => {
                        ClassTable::new(names, palette).map_err(|e| err(KEY_PALETTE, e.to_string()))
                    }
                    None => ClassTable::from_names(names).map_err(|e| err(KEY_CLASSES, e.to_string())),
                }?;
                Some(Setting::new(table, Provenance::Metadata))
            }
            (None, None) => {
                palette_only = palette;
                None
            }
        };

        Ok(SegmentationMetadata {
            classes,
            mean,
            std,
            channel_order,
            logits_output,
            palette_only,
            all_props: props.clone(),
        })
    }

    /// What a model trained with the SeMask recipe declares: `classes`, its logits output, and
    /// ImageNet normalisation of RGB input (the defaults, written out so that no reader guesses).
    pub fn of_export(classes: ClassTable, logits_output: &str) -> SegmentationMetadata {
        SegmentationMetadata {
            classes: Some(Setting::new(classes, Provenance::Default)),
            mean: Setting::new(IMAGENET_MEAN, Provenance::Default),
            std: Setting::new(IMAGENET_STD, Provenance::Default),
            channel_order: Setting::new(ChannelOrder::Rgb, Provenance::Default),
            logits_output: Setting::new(logits_output.to_string(), Provenance::Default),
            palette_only: None,
            all_props: BTreeMap::new(),
        }
    }

    /// The `metadata_props` entries that [`Self::from_props`] reads back to these values (the
    /// class table only once settled): how an exporter writes them.
    pub fn to_props(&self) -> Vec<(String, String)> {
        // Lists of strings and numbers: serialising them cannot fail.
        fn json(value: &impl serde::Serialize) -> String {
            serde_json::to_string(value).expect("lists of strings and numbers serialise")
        }
        let mut props = Vec::new();
        if let Some(classes) = &self.classes {
            props.push((KEY_CLASSES.to_string(), json(&classes.value.names())));
            props.push((KEY_PALETTE.to_string(), json(&classes.value.palette())));
        }
        props.push((KEY_MEAN.to_string(), json(&self.mean.value)));
        props.push((KEY_STD.to_string(), json(&self.std.value)));
        props.push((KEY_LOGITS.to_string(), self.logits_output.value.clone()));
        props.push((KEY_CHANNEL_ORDER.to_string(), self.channel_order.value.name().to_string()));
        props
    }

    /// Settles the class table once the logits channel count `num_classes` is known: a model
    /// without class metadata gets the Cityscapes table when it has 19 channels, generic names
    /// otherwise (with a warning). A table that does not match the channel count is an error.
    pub fn resolve_classes(&mut self, num_classes: usize) -> Result<&ClassTable, MetadataError> {
        match &self.classes {
            Some(setting) if setting.value.len() != num_classes => {
                let key = match setting.from {
                    Provenance::Flag => "--classes",
                    _ => KEY_CLASSES,
                };
                return Err(MetadataError {
                    key: key.into(),
                    from: setting.from,
                    reason: format!(
                        "lists {} classes but the logits have {num_classes} channels; \
                         give one name per channel",
                        setting.value.len()
                    ),
                });
            }
            Some(_) => {}
            None => {
                if num_classes == 0 {
                    return Err(err(
                        KEY_CLASSES,
                        "cannot describe logits with 0 channels: the model outputs no class".into(),
                    ));
                }
                if num_classes > super::classes::MAX_CLASSES {
                    return Err(err(
                        KEY_CLASSES,
                        format!(
                            "cannot describe {num_classes} channels: label maps hold at most 256 classes"
                        ),
                    ));
                }
                let default = ClassTable::for_count(num_classes);
                let names = default.names().to_vec();
                if !default.is_cityscapes() {
                    log::warn!(
                        "the model has {num_classes} classes and no {KEY_CLASSES} metadata: \
                         naming them class_0..class_{}; pass --classes FILE for real names",
                        num_classes - 1
                    );
                }
                let table = match self.palette_only.take() {
                    Some(palette) => ClassTable::new(names, palette).map_err(|reason| {
                        err(KEY_PALETTE, format!("does not fit the model's {num_classes} classes: {reason}"))
                    })?,
                    None => ClassTable::from_names(names).map_err(|e| err(KEY_CLASSES, e.to_string()))?,
                };
                self.classes = Some(Setting::new(table, Provenance::Default));
            }
        }
        Ok(&self.classes.as_ref().expect("set above").value)
    }
}

impl SegmentationMetadata {
    /// The pre-processing these settings ask for at a network input of `height` x `width`.
    pub fn preproc_spec(&self, height: usize, width: usize) -> crate::preprocess::PreprocSpec {
        crate::preprocess::PreprocSpec {
            input_width: width,
            input_height: height,
            mean: self.mean.value,
            std: self.std.value,
            channel_order: self.channel_order.value,
        }
    }
}

fn err(key: &str, reason: String) -> MetadataError {
    MetadataError { key: key.to_string(), from: Provenance::Metadata, reason }
}

fn parse_json<T: DeserializeOwned>(key: &str, text: &str, expected: &str) -> Result<T, MetadataError> {
    serde_json::from_str(text).map_err(|e| err(key, format!("is not {expected}: {e}")))
}

fn pick_vec3(
    props: &BTreeMap<String, String>,
    key: &str,
    flag: Option<[f32; 3]>,
    default: [f32; 3],
) -> Result<Setting<[f32; 3]>, MetadataError> {
    Ok(match (flag, props.get(key)) {
        (Some(v), _) => Setting::new(v, Provenance::Flag),
        (None, Some(text)) => {
            Setting::new(parse_json(key, text, "a JSON list of 3 numbers (RGB)")?, Provenance::Metadata)
        }
        (None, None) => Setting::new(default, Provenance::Default),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn outputs() -> Vec<String> {
        vec!["logits".into(), "logits_up".into(), "sem_logits".into()]
    }

    #[test]
    fn to_props_reads_back_to_the_same_values() {
        let classes = ClassTable::new(
            vec!["sky".into(), "road".into(), "other".into()],
            vec![[1, 2, 3], [4, 5, 6], [7, 8, 9]],
        )
        .unwrap();
        let written = SegmentationMetadata {
            classes: Some(Setting::new(classes, Provenance::Flag)),
            mean: Setting::new([1.5, 2.25, 100.0], Provenance::Flag),
            std: Setting::new([0.5, 60.125, 3.0], Provenance::Default),
            channel_order: Setting::new(ChannelOrder::Bgr, Provenance::Flag),
            logits_output: Setting::new("logits_up".into(), Provenance::Flag),
            palette_only: None,
            all_props: BTreeMap::new(),
        };
        let props: BTreeMap<String, String> = written.to_props().into_iter().collect();
        let read = SegmentationMetadata::from_props(&props, &outputs(), &Default::default()).unwrap();
        assert_eq!(read.classes.as_ref().map(|c| &c.value), written.classes.as_ref().map(|c| &c.value));
        assert_eq!(read.mean.value, written.mean.value);
        assert_eq!(read.std.value, written.std.value);
        assert_eq!(read.channel_order.value, written.channel_order.value);
        assert_eq!(read.logits_output.value, written.logits_output.value);
        for setting in [read.mean.from, read.std.from, read.channel_order.from, read.logits_output.from] {
            assert_eq!(setting, Provenance::Metadata);
        }
        assert_eq!(read.all_props, props);
    }

    #[test]
    fn export_provenance_writes_every_identity_key() {
        let provenance = ExportProvenance {
            arch: "{}".into(),
            input_size: "512x256".parse().unwrap(),
            weights: "w".into(),
            training_data: "d".into(),
            git_revision: "r".into(),
            exported_by: "e".into(),
        };
        let props: BTreeMap<String, String> = provenance.to_props().into_iter().collect();
        for key in ExportProvenance::IDENTITY_KEYS {
            assert!(props.contains_key(key), "{key}");
        }
        assert_eq!(props[KEY_INPUT_SIZE], "512x256");
    }

    #[test]
    fn foreign_model_gets_cityscapes_defaults() {
        let mut md = SegmentationMetadata::from_props(&props(&[]), &outputs(), &Default::default()).unwrap();
        assert_eq!(md.mean.value, IMAGENET_MEAN);
        assert_eq!(md.std.from, Provenance::Default);
        assert_eq!(md.logits_output.value, "logits");
        assert!(md.classes.is_none());
        assert!(md.resolve_classes(19).unwrap().is_cityscapes());
    }

    #[test]
    fn first_output_when_none_is_named_logits() {
        let md =
            SegmentationMetadata::from_props(&props(&[]), &["out".into(), "aux".into()], &Default::default())
                .unwrap();
        assert_eq!(md.logits_output.value, "out");
    }

    #[test]
    fn metadata_values_are_read() {
        let p = props(&[
            (KEY_CLASSES, r#"["a","b","c"]"#),
            (KEY_PALETTE, "[[1,2,3],[4,5,6],[7,8,9]]"),
            (KEY_MEAN, "[1, 2, 3]"),
            (KEY_STD, "[4.5, 5, 6]"),
            (KEY_LOGITS, "sem_logits"),
            (KEY_CHANNEL_ORDER, "bgr"),
        ]);
        let mut md = SegmentationMetadata::from_props(&p, &outputs(), &Default::default()).unwrap();
        assert_eq!(md.mean.value, [1.0, 2.0, 3.0]);
        assert_eq!(md.std.value, [4.5, 5.0, 6.0]);
        assert_eq!(md.logits_output.value, "sem_logits");
        assert_eq!(md.channel_order.value, ChannelOrder::Bgr);
        assert_eq!(md.resolve_classes(3).unwrap().palette()[2], [7, 8, 9]);
        assert!(md.resolve_classes(4).is_err());
    }

    #[test]
    fn flags_override_metadata() {
        let p = props(&[(KEY_MEAN, "[1, 2, 3]")]);
        let o = MetadataOverrides {
            mean: Some([9.0, 9.0, 9.0]),
            classes: Some(ClassTable::generic(2)),
            ..Default::default()
        };
        let md = SegmentationMetadata::from_props(&p, &outputs(), &o).unwrap();
        assert_eq!(md.mean, Setting::new([9.0, 9.0, 9.0], Provenance::Flag));
        assert_eq!(md.classes.unwrap().from, Provenance::Flag);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (k, v) in [
            (KEY_MEAN, "[1, 2]"),
            (KEY_STD, "[1, 0, 1]"),
            (KEY_CLASSES, "road"),
            (KEY_LOGITS, "nope"),
            (KEY_CHANNEL_ORDER, "yuv"),
        ] {
            let e = SegmentationMetadata::from_props(&props(&[(k, v)]), &outputs(), &Default::default())
                .unwrap_err();
            assert_eq!(e.key, k, "{e}");
        }
        let p = props(&[(KEY_CLASSES, r#"["a","b"]"#), (KEY_PALETTE, "[[1,2,3]]")]);
        let e = SegmentationMetadata::from_props(&p, &outputs(), &Default::default()).unwrap_err();
        assert!(e.to_string().contains("palette colours"), "{e}");
    }

    #[test]
    fn unnamed_classes_get_generic_names() {
        let mut md = SegmentationMetadata::from_props(&props(&[]), &outputs(), &Default::default()).unwrap();
        assert_eq!(md.resolve_classes(5).unwrap().names()[4], "class_4");
    }
}
