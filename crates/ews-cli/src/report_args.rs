//! `ews report`: one table of any set of runs (clean error, corruption error, mCE, PGD-20
//! and AutoAttack error, training time), with the paper's numbers beside ours where an
//! experiment file gives them, and a sweep figure where the runs vary one setting.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ews_plot::{Curve, LinePanel, LinePanels};
use ews_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::analyze_args::run_labels;
use crate::experiment::Experiment;
use crate::figures::{write_figure, write_outputs};
use crate::plot_args::read_metrics;

/// `ews report` flags.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run folders, one row each (`--run A B` or `--run A --run B`).
    #[arg(long = "run", required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Names of the runs in the table, in `--run` order (default: folder names).
    #[arg(long = "label", num_args = 1..)]
    pub labels: Vec<String>,
    /// An experiment file (`experiments/paper/*.toml`): its title heads the table, its
    /// runs' `paper` numbers stand beside ours (matched by name) and its `row`/`column`
    /// labels lay out the paper's table, its `sweep` setting draws error against that
    /// setting.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Output folder: report.json, report.md (and sweep.png/svg).
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

/// Published numbers of a row (percent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperNumbers {
    /// Clean test error.
    pub clean_error: Option<f64>,
    /// CIFAR-C corruption error (mean over corruptions and severities).
    pub corruption_error: Option<f64>,
    /// ImageNet-C mCE.
    pub mce: Option<f64>,
    /// Error under PGD-20.
    pub pgd20_error: Option<f64>,
    /// Error under AutoAttack.
    pub autoattack_error: Option<f64>,
}

/// One run's figures, read from the files training and evaluation wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// Name in the table.
    pub run: String,
    /// The run folder.
    pub run_dir: String,
    /// Architecture.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Method (`vanilla`, `dropout`, `ews`, `random subnets`, `l1-norm`).
    pub method: String,
    /// Augmentation.
    pub aug: String,
    /// The run's settings as config.toml holds them (for sweeps).
    pub config: serde_json::Value,
    /// Epochs trained.
    pub epochs: usize,
    /// Training wall time over all sessions of the run (hours, from metrics.jsonl).
    pub training_hours: f64,
    /// Clean test error: `ews eval` (eval.json) where run, else the best epoch's.
    pub clean_error: Option<f64>,
    /// Where the clean error comes from.
    pub clean_error_from: String,
    /// CIFAR-C corruption error (cifar_c.json).
    pub corruption_error: Option<f64>,
    /// ImageNet-C mCE (imagenet_c.json).
    pub mce: Option<f64>,
    /// Error under PGD-20 (attack_pgd20.json).
    pub pgd20_error: Option<f64>,
    /// Error under AutoAttack (attack_autoattack.json).
    pub autoattack_error: Option<f64>,
    /// The paper's numbers for this row.
    pub paper: Option<PaperNumbers>,
    /// Line and column group of the run in the paper's table layout, where the experiment
    /// file gives them.
    pub layout: Option<(String, String)>,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not valid JSON (rerun the command that wrote it)",
            path.display()
        )
    })?;
    Ok(Some(value))
}

fn field(value: &Option<serde_json::Value>, key: &str) -> Option<f64> {
    value.as_ref().and_then(|v| v[key].as_f64())
}

/// Reads the row of the run folder `dir`.
pub fn read_row(dir: &Path, label: String, paper: Option<PaperNumbers>) -> Result<RunRow> {
    let config_path = dir.join("config.toml");
    if !config_path.is_file() {
        bail!("{} is not a run folder (no config.toml)", dir.display());
    }
    let config = TrainConfig::from_toml_file(&config_path)?;
    let summary = read_json(&dir.join("summary.json"))?;
    let eval = read_json(&dir.join("eval.json"))?;
    let metrics = read_metrics(dir)?;
    let seconds: f64 = metrics
        .iter()
        .filter(|l| l["type"] == "epoch")
        .filter_map(|l| l["seconds"].as_f64())
        .sum();
    let epochs = metrics.iter().filter(|l| l["type"] == "epoch").count();
    let (clean_error, clean_error_from) = match (
        field(&eval, "clean_accuracy"),
        field(&summary, "best_test_acc"),
    ) {
        (Some(acc), _) => (Some(100.0 - acc), "eval.json".to_string()),
        (None, Some(acc)) => (Some(100.0 - acc), "best epoch (summary.json)".to_string()),
        (None, None) => (None, "not trained to the end".to_string()),
    };
    let robust_error = |stem: &str| -> Result<Option<f64>> {
        Ok(field(
            &read_json(&dir.join(format!("attack_{stem}.json")))?,
            "robust_accuracy",
        )
        .map(|a| 100.0 - a))
    };
    Ok(RunRow {
        run: label,
        run_dir: dir.display().to_string(),
        model: config.model.clone(),
        dataset: config.dataset.clone(),
        method: ews_train::analysis::method_label(&config),
        aug: serde_json::to_value(config.aug)?
            .as_str()
            .unwrap_or("?")
            .to_string(),
        config: serde_json::to_value(&config)?,
        epochs,
        training_hours: seconds / 3600.0,
        clean_error,
        clean_error_from,
        corruption_error: field(&read_json(&dir.join("cifar_c.json"))?, "corruption_error"),
        mce: field(&read_json(&dir.join("imagenet_c.json"))?, "mce"),
        pgd20_error: robust_error("pgd20")?,
        autoattack_error: robust_error("autoattack")?,
        paper,
        layout: None,
    })
}

/// The measured columns: header, our value, the paper's value.
type Column = (&'static str, Measured, fn(&PaperNumbers) -> Option<f64>);

/// A value read off a row.
type Measured = fn(&RunRow) -> Option<f64>;

const COLUMNS: [Column; 5] = [
    ("clean error", |r| r.clean_error, |p| p.clean_error),
    (
        "corruption error",
        |r| r.corruption_error,
        |p| p.corruption_error,
    ),
    ("mCE", |r| r.mce, |p| p.mce),
    ("PGD-20 error", |r| r.pgd20_error, |p| p.pgd20_error),
    (
        "AutoAttack error",
        |r| r.autoattack_error,
        |p| p.autoattack_error,
    ),
];

/// The table in markdown: the measured columns any row has, each followed by the paper's
/// value where an experiment file gives one.
pub fn markdown(title: &str, rows: &[RunRow]) -> String {
    let paper_of =
        |r: &RunRow, get: fn(&PaperNumbers) -> Option<f64>| r.paper.as_ref().and_then(get);
    let shown: Vec<(&Column, bool)> = shown_columns(rows)
        .into_iter()
        .map(|c| (c, rows.iter().any(|r| paper_of(r, c.2).is_some())))
        .collect();
    let mut out = format!(
        "# {title}\n\nErrors in percent; `-` where a run has not been evaluated on it.\n\n"
    );
    out += "| run | model | dataset | method | aug | epochs | training minutes |";
    let mut rule = String::from("|---|---|---|---|---|---:|---:|");
    for ((name, _, _), with_paper) in &shown {
        out += &format!(" {name} |");
        rule += "---:|";
        if *with_paper {
            out += &format!(" {name} (paper) |");
            rule += "---:|";
        }
    }
    out += &format!("\n{rule}\n");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            r.run,
            r.model,
            r.dataset,
            r.method,
            r.aug,
            r.epochs,
            r.training_hours * 60.0
        );
        for ((_, ours, paper), with_paper) in &shown {
            out += &format!(" {} |", cell(ours(r)));
            if *with_paper {
                out += &format!(" {} |", cell(paper_of(r, *paper)));
            }
        }
        out += "\n";
    }
    out
}

/// The columns any row has a value for (ours or the paper's).
fn shown_columns(rows: &[RunRow]) -> Vec<&'static Column> {
    COLUMNS
        .iter()
        .filter(|(_, ours, paper)| {
            rows.iter()
                .any(|r| ours(r).is_some() || r.paper.as_ref().and_then(paper).is_some())
        })
        .collect()
}

/// The table in the paper's layout: a line per `row` label, per `column` label a group of
/// the measured columns; each cell is `ours (paper)`.
pub fn paper_layout(rows: &[RunRow]) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for (line, group) in rows.iter().filter_map(|r| r.layout.as_ref()) {
        if !lines.contains(&line.as_str()) {
            lines.push(line);
        }
        if !groups.contains(&group.as_str()) {
            groups.push(group);
        }
    }
    let shown = shown_columns(rows);
    let mut out = String::from("\nIn the paper's layout, each cell ours (paper):\n\n| |");
    let mut rule = String::from("|---|");
    for group in &groups {
        for (name, _, _) in &shown {
            out += &format!(" {group}: {name} |");
            rule += "---:|";
        }
    }
    out += &format!("\n{rule}\n");
    let number = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for line in &lines {
        out += &format!("| {line} |");
        for group in &groups {
            let run = rows.iter().find(|r| {
                r.layout
                    .as_ref()
                    .is_some_and(|(l, g)| l == line && g == group)
            });
            for (_, ours, paper) in &shown {
                out += &match run {
                    Some(r) => {
                        let theirs = r.paper.as_ref().and_then(paper);
                        format!(" {} ({}) |", number(ours(r)), number(theirs))
                    }
                    None => " |".to_string(),
                };
            }
        }
        out += "\n";
    }
    out
}

/// The sweep figure: clean error (and corruption error, training minutes) against the
/// config field `setting`, one curve per series.
pub fn sweep_figure(title: &str, setting: &str, rows: &[(String, RunRow)]) -> Result<LinePanels> {
    let mut series: Vec<String> = Vec::new();
    for (s, _) in rows {
        if !series.contains(s) {
            series.push(s.clone());
        }
    }
    let x_of = |r: &RunRow| -> Result<f64> {
        r.config[setting]
            .as_f64()
            .with_context(|| format!("run {}: config field `{setting}` is not a number", r.run))
    };
    let metrics: [(&str, Measured); 3] = [
        ("clean error (%)", |r| r.clean_error),
        ("corruption error (%)", |r| r.corruption_error),
        ("training time (minutes)", |r| Some(r.training_hours * 60.0)),
    ];
    let mut panels = Vec::new();
    for (name, get) in metrics {
        let mut curves = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let mut points = Vec::new();
            for (_, r) in rows.iter().filter(|(rs, _)| rs == s) {
                if let Some(y) = get(r) {
                    points.push((x_of(r)?, y));
                }
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                curves.push(Curve {
                    name: s.clone(),
                    color: i,
                    points,
                });
            }
        }
        if !curves.is_empty() {
            panels.push(LinePanel {
                title: format!("{name} against {setting}"),
                x_label: setting.to_string(),
                y_label: name.to_string(),
                series: curves,
            });
        }
    }
    Ok(LinePanels {
        title: title.to_string(),
        panels,
        columns: 3,
    })
}

/// Writes the report of the runs.
pub fn run_report(args: &ReportArgs) -> Result<()> {
    let labels = run_labels(&args.runs, &args.labels)?;
    let experiment = args
        .experiment
        .as_deref()
        .map(Experiment::read)
        .transpose()?;
    let mut rows = Vec::new();
    for (dir, label) in args.runs.iter().zip(labels) {
        let entry = experiment
            .as_ref()
            .and_then(|e| e.runs.iter().find(|r| r.name == label));
        let series = entry
            .and_then(|e| e.series.clone())
            .unwrap_or_else(|| "runs".into());
        let mut row = read_row(dir, label, entry.and_then(|e| e.paper.clone()))?;
        row.layout = entry.and_then(|e| e.row.clone().zip(e.column.clone()));
        rows.push((series, row));
    }
    let title = experiment
        .as_ref()
        .map_or("Runs".to_string(), |e| e.title.clone());
    let plain: Vec<RunRow> = rows.iter().map(|(_, r)| r.clone()).collect();
    let mut text = markdown(&title, &plain);
    if plain.iter().any(|r| r.layout.is_some()) {
        text += &paper_layout(&plain);
    }
    write_outputs(&args.out, "report", &plain, &text)?;
    if let Some(setting) = experiment.as_ref().and_then(|e| e.sweep.as_deref()) {
        write_figure(&args.out, "sweep", &sweep_figure(&title, setting, &rows)?)?;
    }
    Ok(())
}
