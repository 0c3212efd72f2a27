//! Histograms: per panel the distribution of several series over shared bins, with
//! optional reference lines (a full model's value) and marked points (a searched subnet).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{
    Figure, PlotError, caption_style, draw_axes, draw_legend, grid_shape, padded_range, title_style,
};

/// One distribution.
#[derive(Clone, Debug)]
pub struct HistogramSeries {
    /// Legend entry.
    pub name: String,
    /// Colour index ([`crate::series_color`]).
    pub color: usize,
    /// The values.
    pub values: Vec<f64>,
    /// A value drawn as a dashed vertical line with this legend text (e.g. the full model).
    pub reference: Option<(String, f64)>,
    /// A value marked by a triangle on the axis with this legend text (e.g. the weakest
    /// subnet a controller found).
    pub marked: Option<(String, f64)>,
}

/// One panel of overlaid histograms.
#[derive(Clone, Debug)]
pub struct HistogramPanel {
    /// Caption above the panel.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// The distributions.
    pub series: Vec<HistogramSeries>,
}

/// Panels of histograms under one title.
#[derive(Clone, Debug)]
pub struct Histograms {
    /// Figure title.
    pub title: String,
    /// The panels, row by row.
    pub panels: Vec<HistogramPanel>,
    /// Bins per panel.
    pub bins: usize,
    /// Panels per row.
    pub columns: usize,
}

impl Figure for Histograms {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = grid_shape(self.panels.len(), self.columns);
        (cols as u32 * 520, rows as u32 * 400 + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        if self.panels.is_empty() || self.bins == 0 {
            return Err(PlotError::Empty("no panels or no bins to draw".into()));
        }
        let body = root.titled(&self.title, title_style())?;
        let areas = body.split_evenly(grid_shape(self.panels.len(), self.columns));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, self.bins, area)?;
        }
        Ok(())
    }
}

/// Counts of `values` in `bins` equal bins over `[lo, hi]` (the last bin holds `hi`).
pub(crate) fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0; bins];
    let width = (hi - lo) / bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let i = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f64) as usize;
        counts[i] += 1;
    }
    counts
}

fn draw_panel<DB: DrawingBackend>(
    panel: &HistogramPanel,
    bins: usize,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let all = panel.series.iter().flat_map(|s| {
        let extra = [s.reference.as_ref(), s.marked.as_ref()];
        s.values
            .iter()
            .copied()
            .chain(extra.into_iter().flatten().map(|(_, v)| *v))
    });
    let (lo, hi) = padded_range(all, 0.05);
    let counts: Vec<Vec<usize>> = panel
        .series
        .iter()
        .map(|s| bin_counts(&s.values, lo, hi, bins))
        .collect();
    // Headroom above the tallest bar for the legend (two lines per series at most).
    let entries = panel.series.len() * 2 + 1;
    let tallest = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let top = tallest * (1.15 + 0.09 * entries as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, caption_style())
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(lo..hi, 0f64..top)?;
    draw_axes(&mut chart, &panel.x_label, "count")?;
    let width = (hi - lo) / bins as f64;
    for (series, counts) in panel.series.iter().zip(&counts) {
        let color = crate::series_color(series.color);
        let bars = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| {
                let x = lo + i as f64 * width;
                Rectangle::new([(x, 0.0), (x + width, c as f64)], color.mix(0.35).filled())
            });
        chart
            .draw_series(bars)?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.mix(0.5).filled())
            });
        let outlines = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| {
                let x = lo + i as f64 * width;
                Rectangle::new([(x, 0.0), (x + width, c as f64)], color.stroke_width(1))
            });
        chart.draw_series(outlines)?;
        if let Some((label, v)) = &series.reference {
            chart
                .draw_series(DashedLineSeries::new(
                    [(*v, 0.0), (*v, top)],
                    8,
                    5,
                    color.stroke_width(2),
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        if let Some((label, v)) = &series.marked {
            chart
                .draw_series([TriangleMarker::new((*v, top * 0.04), 9, color.filled())])?
                .label(label.as_str())
                .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 6, color.filled()));
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bin_counts;

    #[test]
    fn values_fall_into_equal_bins_and_the_top_edge_into_the_last() {
        let counts = bin_counts(&[0.0, 0.49, 0.5, 0.99, 1.0, f64::NAN], 0.0, 1.0, 2);
        assert_eq!(counts, vec![2, 3]);
    }
}
