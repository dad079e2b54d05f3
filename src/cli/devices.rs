//! `semask-edge devices`: the V4L2 cameras of this machine and their modes.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "camera")]
pub fn devices(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    use semask_edge::source::v4l2::list_cameras;
    let cameras = list_cameras();
    if args.json {
        let json: Vec<serde_json::Value> = cameras
            .iter()
            .map(|c| match c {
                Ok(info) => serde_json::to_value(info).unwrap_or_default(),
                Err((path, error)) => serde_json::json!({"path": path, "error": error}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cameras.is_empty() {
        eprintln!(
            "no camera found: no /dev/video* device (is the camera plugged in, and its driver loaded?)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    for camera in cameras {
        match camera {
            Ok(info) => {
                println!("{}  {} ({})", info.path.display(), info.card, info.driver);
                for format in info.formats {
                    println!("  {}  {}", format.fourcc, format.description);
                    for size in format.sizes {
                        let rates: Vec<String> = size.fps.iter().map(|r| format!("{r:.0}")).collect();
                        let rates = if rates.is_empty() { "?".to_string() } else { rates.join(", ") };
                        println!("    {}x{}  {rates} fps", size.width, size.height);
                    }
                }
            }
            Err((path, error)) => println!("{}  cannot be opened: {error}", path.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "camera"))]
pub fn devices(_args: DevicesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no camera support: rebuild with the `camera` feature (needs libclang-dev)")
}
