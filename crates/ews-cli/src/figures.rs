//! The figures of the analyses and reports, and writing them with their data.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ews_models::persist::write_atomically;
use ews_plot::{
    BarSeries, Figure, GroupedBars, HistogramPanel, HistogramSeries, Histograms, ImageGrid,
    RgbTile, render,
};
use ews_train::analysis::{BlockReport, SubnetReport};

/// A progress bar for `total` (set later) evaluations named `what`.
pub fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// Writes OUT/STEM.json (the data) and OUT/STEM.md (the summary) atomically and prints the
/// summary.
pub fn write_outputs(
    out: &Path,
    stem: &str,
    data: &impl serde::Serialize,
    markdown: &str,
) -> Result<()> {
    let json = write_json(out, stem, data)?;
    let md = out.join(format!("{stem}.md"));
    write_atomically(&md, markdown.as_bytes())?;
    print!("{markdown}");
    println!("({} and {})", json.display(), md.display());
    Ok(())
}

/// Writes OUT/STEM.json atomically (creating OUT); returns its path.
pub fn write_json(out: &Path, stem: &str, data: &impl serde::Serialize) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(format!("{stem}.json"));
    write_atomically(&json, serde_json::to_string_pretty(data)?.as_bytes())?;
    Ok(json)
}

/// A `progress(done, total)` callback that moves `bar`.
pub fn advance(bar: &indicatif::ProgressBar) -> impl Fn(usize, usize) + Sync + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// Renders `figure` to OUT/STEM.png (and OUT/STEM.svg where it has a vector form).
pub fn write_figure(out: &Path, stem: &str, figure: &impl Figure) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let rendered = render(figure).with_context(|| format!("drawing {stem}"))?;
    let png = out.join(format!("{stem}.png"));
    write_atomically(&png, &rendered.png)?;
    match &rendered.svg {
        Some(svg) => {
            let path = out.join(format!("{stem}.svg"));
            write_atomically(&path, svg.as_bytes())?;
            println!("drew {} and {}", png.display(), path.display());
        }
        None => println!("drew {}", png.display()),
    }
    Ok(())
}

/// A dataset name short enough for a title: image folders by their last component.
fn dataset_name(dataset: &str) -> String {
    match dataset.strip_prefix("folder:") {
        Some(path) => Path::new(path)
            .file_name()
            .map_or(dataset.to_string(), |n| n.to_string_lossy().into_owned()),
        None => dataset.to_string(),
    }
}

/// Fig. 1: one histogram per input, one series per run, the full network as a dashed line
/// and the weakest subnet the controller found as a triangle.
pub fn subnet_histograms(reports: &[SubnetReport], bins: usize) -> Histograms {
    let first = &reports[0];
    let panels = first
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| HistogramPanel {
            title: input.label.clone(),
            x_label: "accuracy (%)".into(),
            series: reports
                .iter()
                .enumerate()
                .filter_map(|(r, report)| Some((r, report, report.inputs.get(i)?)))
                .map(|(r, report, d)| HistogramSeries {
                    name: format!("{} subnets", report.run),
                    color: r,
                    values: d.accuracies.clone(),
                    reference: Some((format!("{} full network", report.run), d.full_accuracy)),
                    marked: d
                        .weakest_found
                        .map(|v| (format!("{} weakest found", report.run), v)),
                })
                .collect(),
        })
        .collect();
    Histograms {
        title: format!(
            "{} random subnets at rho {} ({}, {}, {} test images, {})",
            first.inputs.first().map_or(0, |d| d.accuracies.len()),
            first.rho,
            first.model,
            dataset_name(&first.dataset),
            first.images,
            first.bn
        ),
        panels,
        bins,
        columns: 3,
    }
}

/// Fig. 7: mean error and its standard deviation per block, one series per run, dotted
/// lines before the blocks that downsample.
pub fn block_bars(reports: &[BlockReport]) -> GroupedBars {
    let first = &reports[0];
    GroupedBars {
        title: format!(
            "Block vulnerability ({}, {})",
            first.model,
            dataset_name(&first.dataset)
        ),
        caption: format!(
            "keep {} of one block, {} subnets per block, {} test images, {}",
            first.keep,
            first.blocks.first().map_or(0, |b| b.errors.len()),
            first.images,
            first.bn
        ),
        categories: first.blocks.iter().map(|b| b.block.clone()).collect(),
        x_label: "block".into(),
        y_label: "test error (%)".into(),
        series: reports
            .iter()
            .enumerate()
            .map(|(r, report)| BarSeries {
                name: format!("{} (full network {:.1}%)", report.run, report.full_error),
                color: r,
                values: report
                    .blocks
                    .iter()
                    .map(|b| (b.stats.mean, b.stats.std))
                    .collect(),
            })
            .collect(),
        separators: first
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.downsamples)
            .map(|(i, _)| i)
            .collect(),
    }
}

/// The corruption preview: corruption names on the rows, clean and severities 1-5 on the
/// columns, small images magnified to about 128 px.
pub fn corruption_sheet(
    image: &ews_augment::Image,
    corruptions: &[ews_augment::corrupt::Corruption],
    table: ews_augment::corrupt::Table,
    seed: u64,
    frost: Option<&ews_augment::corrupt::FrostTextures>,
) -> ImageGrid {
    let rows = ews_augment::corrupt::preview_tiles(image, corruptions, table, seed, frost);
    let tile = |i: ews_augment::Image| RgbTile {
        height: i.height,
        width: i.width,
        pixels: i.pixels,
    };
    ImageGrid {
        title: format!(
            "Corruptions ({} table, seed {seed})",
            match table {
                ews_augment::corrupt::Table::Cifar => "CIFAR-10-C",
                ews_augment::corrupt::Table::Imagenet => "ImageNet-C",
            }
        ),
        row_labels: corruptions.iter().map(|c| c.name().to_string()).collect(),
        column_labels: [
            "clean",
            "severity 1",
            "severity 2",
            "severity 3",
            "severity 4",
            "severity 5",
        ]
        .map(String::from)
        .to_vec(),
        tiles: rows
            .into_iter()
            .map(|r| r.into_iter().map(tile).collect())
            .collect(),
        zoom: (128 / image.height.max(1)).max(1),
    }
}
