//! Device profiles and `doctor`: the profile is detected from the device tree (fake roots
//! here), chosen with --target, overridden by flags, and a bad profile file is one clear error.

mod util;

use std::path::Path;

use util::{assert_one_line_error, run_cli, s, stderr};

/// A fake machine root with `files` (path, contents).
fn sysroot(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn doctor(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let out = run_cli(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn doctor_picks_cpu_here_and_each_jetson_from_its_device_tree() {
    let here = doctor(&[]);
    assert_eq!(here["profile"]["name"], "cpu");
    assert_eq!(here["auto"]["backend"], "cpu");
    assert!(here["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(!here["cpu"]["tract_isa"].as_str().unwrap().is_empty());

    for (model, release, profile, jetpack) in [
        (
            "NVIDIA Jetson Orin Nano Developer Kit",
            "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic",
            "jetson-orin-nano",
            "6.1/6.2",
        ),
        (
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
            "# R36 (release), REVISION: 3.0, GCID: 1",
            "jetson-orin-nx",
            "6.0",
        ),
        (
            "Jetson AGX Orin Developer Kit",
            "# R35 (release), REVISION: 4.1, GCID: 1",
            "jetson-agx-orin",
            "5.1",
        ),
        (
            "NVIDIA Jetson Xavier NX Developer Kit",
            "# R35 (release), REVISION: 5.0, GCID: 1",
            "jetson-xavier-nx",
            "5.1",
        ),
        (
            "NVIDIA Jetson AGX Thor Developer Kit",
            "# R38 (release), REVISION: 2.0, GCID: 1",
            "jetson-thor",
            "7",
        ),
    ] {
        let root = sysroot(&[
            ("/proc/device-tree/model", &format!("{model}\0")),
            ("/etc/nv_tegra_release", release),
        ]);
        let report = doctor(&["--sysroot", s(root.path())]);
        assert_eq!(report["profile"]["name"], profile, "{model}");
        assert_eq!(report["device"]["model"], model);
        assert_eq!(report["device"]["jetpack"], jetpack, "{model}");
        assert!(report["profile"]["why"].as_str().unwrap().contains("device-tree"), "{report}");
        // TensorRT is not here: reported with the reason, and auto falls to the CPU.
        let trt =
            report["backends"].as_array().unwrap().iter().find(|b| b["kind"] == "tensorrt").unwrap().clone();
        assert_eq!(trt["available"], false);
        assert!(!trt["detail"].as_str().unwrap().is_empty());
        assert_eq!(report["auto"]["backend"], "cpu");
        assert!(report["auto"]["why"].as_str().unwrap().contains("tensorrt skipped"), "{report}");
    }
    // An L4T the profile does not expect is flagged.
    let root = sysroot(&[
        ("/proc/device-tree/model", "NVIDIA Jetson Xavier NX Developer Kit\0"),
        ("/etc/nv_tegra_release", "# R36 (release), REVISION: 4.0, GCID: 1"),
    ]);
    assert_eq!(doctor(&["--sysroot", s(root.path())])["profile"]["l4t_expected"], false);
    // A desktop with the NVIDIA driver.
    let root = sysroot(&[(
        "/proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu\n",
    )]);
    let report = doctor(&["--sysroot", s(root.path())]);
    assert_eq!(report["profile"]["name"], "x86-cuda");
    assert_eq!(report["device"]["nvidia_driver"], "570.86.15");
}

#[test]
fn the_profile_sets_defaults_and_flags_win() {
    // jetson-orin-nano asks for int8 and fast upsampling: on this machine the CPU runs the
    // model's int8 form, and says so.
    let out = run_cli(&["--target", "jetson-orin-nano", "-v", "run", "--frames", "1", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("note: --precision int8 runs"), "{err}");
    assert!(err.contains("upsample fast") && err.contains("6 threads"), "{err}");
    // Flags override it.
    let out = run_cli(&[
        "run",
        "--target",
        "jetson-orin-nano",
        "-v",
        "--precision",
        "fp32",
        "--upsample",
        "exact",
        "--threads",
        "1",
        "--frames",
        "1",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("note: --precision"), "{err}");
    assert!(err.contains("upsample exact") && err.contains("1 threads"), "{err}");
    // doctor under --target reports that profile.
    assert_eq!(doctor(&["--target", "jetson-agx-orin"])["profile"]["name"], "jetson-agx-orin");
}

#[test]
fn profile_files_are_read_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = std::fs::read_to_string(util::workspace_root().join("targets/cpu.toml")).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // A valid custom profile works.
    let custom = write(
        "mine.toml",
        &cpu.replace("name = \"cpu\"", "name = \"mine\"").replace("threads = 0", "threads = 1"),
    );
    let out = run_cli(&["--target", s(&custom), "-v", "run", "--frames", "1", "-q"]);
    assert!(out.status.success() && stderr(&out).contains("1 threads"), "{}", stderr(&out));
    for (name, text, needles) in [
        ("typo.toml", cpu.replace("upsample", "upsampel"), vec!["typo.toml", "upsampel"]),
        (
            "value.toml",
            cpu.replace("\"fp32\"", "\"fp64\""),
            vec!["value.toml", "inference.precision", "fp32, fp16, int8"],
        ),
        (
            "ladder.toml",
            cpu.replace("[\"cpu\"]", "[\"tpu\"]"),
            vec!["ladder.toml", "inference.backends", "tensorrt, cuda, cpu"],
        ),
        ("broken.toml", "name = \n".to_string(), vec!["broken.toml", "TOML"]),
    ] {
        let path = write(name, &text);
        let out = run_cli(&["--target", s(&path), "run", "--frames", "1"]);
        assert_one_line_error(&out, 2, &needles);
    }
    let out = run_cli(&["--target", "jetson-nano", "run"]);
    assert_one_line_error(&out, 2, &["jetson-nano", "jetson-orin-nano", "cpu"]);
    let out = run_cli(&["--target", s(Path::new("/nonexistent/x.toml")), "run"]);
    assert_one_line_error(&out, 2, &["/nonexistent/x.toml"]);
}
