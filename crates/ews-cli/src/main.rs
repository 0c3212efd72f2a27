//! `ews`: train and evaluate robust image classifiers with EWS.

mod backend;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ews_models::persist::num_params;
use ews_models::{Architecture, NetworkConfig};

/// Robust image classifiers with EWS (Enhancing Weak Subnets, ECCV 2022).
#[derive(Parser, Debug)]
#[command(name = "ews", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print one line per architecture: `<name> <parameters>`.
    Models {
        /// Number of output classes.
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Print only these architectures (any valid name, e.g. wrn-22-3).
        #[arg(long = "model", value_name = "NAME")]
        models: Vec<String>,
    },
    /// Print which backend this binary was built with.
    Backend,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Models { classes, models } => list_models(classes, &models),
        Command::Backend => {
            println!("{}", backend::NAME);
            Ok(())
        }
    }
}

fn list_models(classes: usize, names: &[String]) -> Result<()> {
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    let archs: Vec<Architecture> = if names.is_empty() {
        Architecture::standard()
    } else {
        names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?
    };
    let device = backend::device();
    for arch in archs {
        let model = NetworkConfig::new(arch)
            .with_num_classes(classes)
            .init::<backend::Backend>(&device)?;
        println!("{arch} {}", num_params(&model));
    }
    Ok(())
}
