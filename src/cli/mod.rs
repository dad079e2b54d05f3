//! Command-line interface: argument definitions (clap) and one module per subcommand.
//!
//! Arguments are parsed into typed values at the edge (`--mean 1,2,3` → `[f32; 3]`,
//! `--input-size 512x1024` → `(512, 1024)`), so the library never sees strings it must parse.

pub mod info;
pub mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use semask_edge::model::{ClassTable, MetadataOverrides};
use semask_edge::preprocess::ChannelOrder;

const ABOUT: &str = "Semantic segmentation of road scenes with SeMask-T FPN, from ONNX, on the edge.";

const LONG_ABOUT: &str = "\
Semantic segmentation of road scenes with SeMask-T FPN, from ONNX, on the edge.

Runs an ONNX export of SeMask-FPN (or any segmentation model with one [1,3,H,W] image input and
[1,K,h,w] logits) on images, and writes label maps, colour maps and overlays.

Without --model and --input it runs the built-in model on the built-in sample image, so

    semask-edge run --overlay out/overlay

works on a fresh checkout. The built-in model has random weights until a trained one ships.";

#[derive(Debug, Parser)]
#[command(name = "semask-edge", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segment an image or a directory of images; write label maps, colour maps, overlays.
    #[command(long_about = run::LONG_ABOUT)]
    Run(run::RunArgs),
    /// Describe a model: inputs, outputs, metadata, classes, and the backends of this build.
    Info(info::InfoArgs),
}

/// Which model to load and how to read it: shared by every subcommand that loads a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// ONNX model to run (default: the built-in model, random weights).
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,

    /// Network input size HxW, for models whose input size is dynamic (e.g. 512x1024).
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    pub input_size: Option<(usize, usize)>,

    /// Per-channel mean, R,G,B on the 0-255 scale (default: the model's semask.mean, else ImageNet).
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb)]
    pub mean: Option<[f32; 3]>,

    /// Per-channel std, R,G,B on the 0-255 scale (default: the model's semask.std, else ImageNet).
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb)]
    pub std: Option<[f32; 3]>,

    /// Class names (and colours): a JSON list of names, JSON {"classes": [...], "palette":
    /// [[r,g,b], ...]}, or a text file with one name per line (default: the model's
    /// semask.classes, else Cityscapes).
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,

    /// Plane order the network expects (default: the model's semask.channel_order, else rgb).
    #[arg(long, value_name = "ORDER")]
    pub channel_order: Option<ChannelOrder>,
}

impl ModelArgs {
    /// The flags that override model metadata. Reads the `--classes` file.
    pub fn overrides(&self) -> anyhow::Result<MetadataOverrides> {
        Ok(MetadataOverrides {
            mean: self.mean,
            std: self.std,
            classes: self.classes.as_deref().map(ClassTable::from_file).transpose()?,
            channel_order: self.channel_order,
        })
    }
}

/// `512x1024` → `(512, 1024)` (height, width).
pub fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{text:?} is not a size HxW such as 512x1024");
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 {
        return Err(format!("{text:?}: height and width must be positive"));
    }
    Ok((h, w))
}

/// `123.675,116.28,103.53` → `[123.675, 116.28, 103.53]`.
pub fn parse_rgb(text: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not three comma-separated numbers R,G,B"))?;
    let values: [f32; 3] =
        values.try_into().map_err(|_| format!("{text:?} is not three comma-separated numbers R,G,B"))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("{text:?}: values must be finite"));
    }
    Ok(values)
}

/// A number in 0..=1.
pub fn parse_unit(text: &str) -> Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_triplets_parse() {
        assert_eq!(parse_size("512x1024"), Ok((512, 1024)));
        assert!(parse_size("512").is_err());
        assert!(parse_size("0x4").is_err());
        assert_eq!(parse_rgb("1, 2.5,3"), Ok([1.0, 2.5, 3.0]));
        assert!(parse_rgb("1,2").is_err());
        assert!(parse_rgb("a,b,c").is_err());
        assert_eq!(parse_unit("0.3"), Ok(0.3));
        assert!(parse_unit("1.5").is_err());
    }
}
