//! `ews experiment FILE`: one figure or table of the paper from its experiment file
//! (`experiments/paper/*.toml`): trains every run (finished runs are kept, killed ones
//! resume), evaluates each, then draws the figure or writes the table.
//! Every step is a child `ews` process, so a failure names the command to rerun.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::report_args::PaperNumbers;

/// What an experiment produces after training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Produces {
    /// `ews analyze subnets` (Fig. 1).
    Subnets,
    /// `ews analyze blocks` (Fig. 7).
    Blocks,
    /// `ews report` (tables, and with `sweep` the sweep figures 5 and 6).
    Report,
}

/// An experiment file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The figure or table it reproduces, as titles show it.
    pub title: String,
    /// What is made after training.
    pub produces: Produces,
    /// For sweeps: the config field on the x axis (`lambda`, `rho`, `interval_k`).
    #[serde(default)]
    pub sweep: Option<String>,
    /// What every run is evaluated on: `clean`, `cifar-c` (with `--cifar-c DIR`), `pgd20`,
    /// `autoattack`.
    #[serde(default = "clean_only")]
    pub evaluate: Vec<String>,
    /// Flags of the analysis (`ews analyze subnets|blocks`) at every scale.
    #[serde(default)]
    pub analysis: Vec<String>,
    /// The runs.
    pub runs: Vec<ExperimentRun>,
    /// Per scale (`quick`, `paper`): flags added to every run and analysis.
    pub scales: BTreeMap<String, Scale>,
}

fn clean_only() -> Vec<String> {
    vec!["clean".into()]
}

/// One run of an experiment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRun {
    /// The run's name: its folder under ROOT/SCALE and its label. Experiments that name the
    /// same run with the same settings share it (trained once).
    pub name: String,
    /// Its config file, relative to the experiment file.
    pub config: String,
    /// `ews train` flags on top of the config.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The curve a sweep draws it on (e.g. the augmentation of Fig. 6 left).
    #[serde(default)]
    pub series: Option<String>,
    /// Only at these scales (default: all).
    #[serde(default)]
    pub scales: Option<Vec<String>>,
    /// The paper's numbers for this row.
    #[serde(default)]
    pub paper: Option<PaperNumbers>,
    /// Its line in the paper's table layout (e.g. `Standard / EWS`).
    #[serde(default)]
    pub row: Option<String>,
    /// Its column group in the paper's table layout (e.g. `CIFAR-10`).
    #[serde(default)]
    pub column: Option<String>,
}

/// The settings of one scale.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// What this scale is, for the user.
    #[serde(default)]
    pub note: String,
    /// `ews train` flags added to every run (`{data}` is replaced by `--data`).
    #[serde(default)]
    pub train: Vec<String>,
    /// Flags added to the analysis.
    #[serde(default)]
    pub analysis: Vec<String>,
    /// What runs are evaluated on at this scale, instead of the experiment's `evaluate`
    /// (e.g. no AutoAttack on a CPU).
    #[serde(default)]
    pub evaluate: Option<Vec<String>>,
}

impl Experiment {
    /// Reads and checks an experiment file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let experiment: Experiment = toml::from_str(&text)
            .with_context(|| format!("{}: not a valid experiment file", path.display()))?;
        if experiment.runs.is_empty() {
            bail!("{}: no [[runs]]", path.display());
        }
        let per_scale = experiment
            .scales
            .values()
            .filter_map(|s| s.evaluate.as_ref());
        for e in experiment.evaluate.iter().chain(per_scale.flatten()) {
            if !["clean", "cifar-c", "pgd20", "autoattack"].contains(&e.as_str()) {
                bail!(
                    "{}: evaluate `{e}`: expected clean, cifar-c, pgd20 or autoattack",
                    path.display()
                );
            }
        }
        let mut names: Vec<&str> = experiment.runs.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("{}: run `{}` is named twice", path.display(), w[0]);
        }
        if experiment.sweep.is_some() && experiment.produces != Produces::Report {
            bail!("{}: `sweep` needs produces = \"report\"", path.display());
        }
        Ok(experiment)
    }
}

/// `ews experiment` flags.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// The experiment file (`experiments/paper/fig1.toml`, ...).
    pub file: PathBuf,
    /// `quick` (a CPU-sized version) or `paper` (the paper's settings), as the file defines.
    #[arg(long, default_value = "quick")]
    pub scale: String,
    /// Where runs and results go: ROOT/SCALE/RUN and ROOT/SCALE/EXPERIMENT.
    #[arg(long, default_value = "runs/experiments")]
    pub root: PathBuf,
    /// The data folder `{data}` stands for in the scale's flags (e.g. the CIFAR-10 JPEG
    /// folder of the quick scale).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A CIFAR-10-C folder: the runs (other than CIFAR-100 ones) of an experiment that
    /// evaluates `cifar-c` are evaluated on it.
    #[arg(long)]
    pub cifar_c: Option<PathBuf>,
    /// A CIFAR-100-C folder, for the CIFAR-100 runs.
    #[arg(long)]
    pub cifar100_c: Option<PathBuf>,
}

/// Runs an `ews` child process; fails naming the command.
fn ews(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the ews binary")?;
    eprintln!("experiment: ews {}", args.join(" "));
    let status = Command::new(&exe)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !status.success() {
        bail!(
            "`ews {}` failed ({status}); fix the cause and rerun the experiment (finished runs are kept)",
            args.join(" ")
        );
    }
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Trains, evaluates and reports an experiment.
pub fn run_experiment(args: &ExperimentArgs) -> Result<()> {
    let experiment = Experiment::read(&args.file)?;
    let stem = args
        .file
        .file_stem()
        .context("experiment file name")?
        .to_string_lossy()
        .into_owned();
    let Some(scale) = experiment.scales.get(&args.scale) else {
        let known: Vec<&String> = experiment.scales.keys().collect();
        bail!(
            "{}: no scale `{}` (it defines {known:?})",
            args.file.display(),
            args.scale
        );
    };
    if !scale.note.is_empty() {
        eprintln!("experiment {stem} at {} scale: {}", args.scale, scale.note);
    }
    let base = args.file.parent().unwrap_or(Path::new("."));
    // One spelling of the data folder, so that a run resumes whichever way it is named
    // (the path is part of the run's saved config).
    let data = match &args.data {
        Some(dir) => Some(
            std::fs::canonicalize(dir)
                .with_context(|| format!("--data {}: no such folder", dir.display()))?,
        ),
        None => None,
    };
    let folder = args.root.join(&args.scale);
    let runs: Vec<&ExperimentRun> = experiment
        .runs
        .iter()
        .filter(|r| r.scales.as_ref().is_none_or(|s| s.contains(&args.scale)))
        .collect();
    if runs.is_empty() {
        bail!(
            "{}: no run takes part at the {} scale",
            args.file.display(),
            args.scale
        );
    }
    let mut dirs = Vec::new();
    for run in &runs {
        let dir = folder.join(&run.name);
        // A finished run resumes as a no-op, a killed one continues, and one trained with
        // other settings is refused by `ews train` itself.
        ews(&train_command(run, scale, base, &dir, data.as_deref())?)?;
        evaluate_run(
            scale.evaluate.as_ref().unwrap_or(&experiment.evaluate),
            &dir,
            args,
        )?;
        dirs.push(dir.display().to_string());
    }
    let out = folder.join(&stem).display().to_string();
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for command in finishing_commands(&experiment, scale, &args.file, &dirs, &names, &out) {
        ews(&command)?;
    }
    println!(
        "experiment {stem} ({} scale) done: results in {out}",
        args.scale
    );
    Ok(())
}

/// The commands that finish an experiment on its trained runs (folders `dirs`, labels
/// `names`): the analysis or report into `out`, then the training curves.
fn finishing_commands(
    experiment: &Experiment,
    scale: &Scale,
    file: &Path,
    dirs: &[String],
    names: &[String],
    out: &str,
) -> [Vec<String>; 2] {
    let mut runs = vec!["--run".to_string()];
    runs.extend(dirs.iter().cloned());
    runs.push("--label".into());
    runs.extend(names.iter().cloned());
    let mut last = match experiment.produces {
        Produces::Subnets => strings(&["analyze", "subnets"]),
        Produces::Blocks => strings(&["analyze", "blocks"]),
        Produces::Report => {
            let mut a = strings(&["report", "--experiment"]);
            a.push(file.display().to_string());
            a
        }
    };
    last.extend(runs.iter().cloned());
    last.extend(["--out".to_string(), out.to_string()]);
    if experiment.produces != Produces::Report {
        last.extend(experiment.analysis.iter().cloned());
        last.extend(scale.analysis.iter().cloned());
    }
    let mut plot = strings(&["plot"]);
    plot.extend(runs);
    plot.extend(["--out".to_string(), format!("{out}/curves")]);
    [last, plot]
}

/// The `ews train` arguments of `run` at `scale` into `dir`: its config (relative to the
/// experiment file's folder `base`), its flags, the scale's flags with `{data}` replaced,
/// and `--resume`.
pub fn train_command(
    run: &ExperimentRun,
    scale: &Scale,
    base: &Path,
    dir: &Path,
    data: Option<&Path>,
) -> Result<Vec<String>> {
    let mut train = strings(&["train", "--config"]);
    train.push(base.join(&run.config).display().to_string());
    train.extend(run.flags.iter().cloned());
    for flag in &scale.train {
        if flag.contains("{data}") {
            let data = data.context("this scale reads a data folder: pass --data DIR")?;
            train.push(flag.replace("{data}", &data.display().to_string()));
        } else {
            train.push(flag.clone());
        }
    }
    train.extend([
        "--out".to_string(),
        dir.display().to_string(),
        "--resume".to_string(),
    ]);
    Ok(train)
}

/// The CIFAR-C folder for the run in `dir`: `--cifar100-c` for CIFAR-100 runs, else
/// `--cifar-c`.
fn cifar_c_folder<'a>(dir: &Path, args: &'a ExperimentArgs) -> Result<Option<&'a PathBuf>> {
    let config = ews_train::TrainConfig::from_toml_file(&dir.join("config.toml"))?;
    Ok(match config.dataset.as_str() {
        "cifar100" => args.cifar100_c.as_ref(),
        _ => args.cifar_c.as_ref(),
    })
}

/// Whether `dir/cifar_c.json` exists and was measured on `folder`.
fn evaluated_on(dir: &Path, folder: &Path) -> bool {
    let report = std::fs::read_to_string(dir.join("cifar_c.json")).ok();
    let report: Option<serde_json::Value> = report.and_then(|t| serde_json::from_str(&t).ok());
    report.is_some_and(|r| r["dir"].as_str() == Some(&folder.display().to_string()))
}

/// Evaluates the run in `dir` on each of `evaluate`, skipping finished evaluations.
fn evaluate_run(evaluate: &[String], dir: &Path, args: &ExperimentArgs) -> Result<()> {
    let run = dir.display().to_string();
    for what in evaluate {
        let (file, mut command) = match what.as_str() {
            "clean" => ("eval.json", strings(&["eval"])),
            "cifar-c" => {
                let Some(c) = cifar_c_folder(dir, args)? else {
                    eprintln!(
                        "experiment: no --cifar-c DIR (--cifar100-c for CIFAR-100), so no corruption error for {run}"
                    );
                    continue;
                };
                if !evaluated_on(dir, c) {
                    let _ = std::fs::remove_file(dir.join("cifar_c.json"));
                }
                (
                    "cifar_c.json",
                    vec!["eval".into(), "--cifar-c".into(), c.display().to_string()],
                )
            }
            "pgd20" => (
                "attack_pgd20.json",
                strings(&["attack", "--attack", "pgd20"]),
            ),
            _ => (
                "attack_autoattack.json",
                strings(&["attack", "--attack", "autoattack"]),
            ),
        };
        if dir.join(file).is_file() {
            continue;
        }
        command.extend(["--run".to_string(), run.clone()]);
        ews(&command)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use clap::Parser;

    use super::Experiment;
    use crate::{Cli, Command};

    fn paper_files() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
    }

    /// Every run of every experiment file, at every scale, is a valid `ews train` command,
    /// and runs of one name have one set of settings wherever they appear (they share a
    /// folder).
    #[test]
    fn every_experiment_run_is_a_valid_training_command() {
        let files = paper_files();
        assert_eq!(files.len(), 8, "{files:?}");
        let mut settings: HashMap<(String, String), (PathBuf, Vec<String>)> = HashMap::new();
        for file in &files {
            let experiment = Experiment::read(file).unwrap();
            for scale in ["quick", "paper"] {
                for run in &experiment.runs {
                    if run
                        .scales
                        .as_ref()
                        .is_some_and(|s| !s.iter().any(|x| x == scale))
                    {
                        continue;
                    }
                    let config = file.parent().unwrap().join(&run.config);
                    let base = file.parent().unwrap();
                    let command = super::train_command(
                        run,
                        &experiment.scales[scale],
                        base,
                        Path::new("/runs/x"),
                        Some(Path::new("/data")),
                    )
                    .unwrap();
                    let mut args = vec!["ews".to_string()];
                    args.extend(command);
                    let cli = Cli::try_parse_from(&args)
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", file.display(), run.name));
                    let Command::Train(train) = cli.command else {
                        unreachable!()
                    };
                    let base = ews_train::TrainConfig::from_toml_file(&config).unwrap();
                    let applied = train.apply(base);
                    applied
                        .validate()
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", file.display(), run.name));
                    let key = (scale.to_string(), run.name.clone());
                    let mine = (config.canonicalize().unwrap(), args[4..].to_vec());
                    let first = settings.entry(key).or_insert_with(|| mine.clone());
                    assert_eq!(
                        *first,
                        mine,
                        "{}: run {} differs elsewhere",
                        file.display(),
                        run.name
                    );
                }
            }
        }
    }
}
