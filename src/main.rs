//! `semask-edge`: the command-line front end of the library. Parsing, logging set-up, error
//! printing and exit codes live here; the work is in `cli/<subcommand>.rs` and the library.
//!
//! Exit status: 0 success, 1 the run finished but some frames failed (each was reported),
//! 2 error (bad flags, unreadable model or input, failed output).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    semask_edge::heap::keep_freed_memory();
    let args = cli::Cli::parse();
    let default_level = match args.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let limits = semask_edge::limits::Limits { max_pixels: args.max_pixels };
    let result = match args.command {
        // doctor reports on the profile itself (and may look at a fake root).
        cli::Command::Doctor(doctor) => cli::doctor::doctor(doctor, args.target.as_deref()),
        cli::Command::Devices(devices) => cli::devices::devices(devices),
        command => cli::Context::new(limits, args.target.as_deref()).and_then(|ctx| match command {
            cli::Command::Run(run) => cli::run::run(run, &ctx),
            cli::Command::Info(info) => cli::info::info(info, &ctx),
            cli::Command::Bench(bench) => cli::bench::bench(bench, &ctx),
            cli::Command::Record(record) => cli::record::record(record, &ctx),
            cli::Command::BuildEngine(args) => cli::build_engine::build_engine(args, &ctx),
            cli::Command::Doctor(_) | cli::Command::Devices(_) => unreachable!("handled above"),
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
