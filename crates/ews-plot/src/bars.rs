//! Grouped bar charts with error bars: one group per category, one bar per series.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Figure, PlotError, caption_style, label_style, title_style};

/// One series of bars: a mean and a spread per category.
#[derive(Clone, Debug)]
pub struct BarSeries {
    /// Legend entry.
    pub name: String,
    /// Colour index ([`crate::series_color`]).
    pub color: usize,
    /// `(mean, spread)` per category; the error bar spans mean - spread to mean + spread.
    pub values: Vec<(f64, f64)>,
}

/// A grouped bar chart.
#[derive(Clone, Debug)]
pub struct GroupedBars {
    /// Figure title.
    pub title: String,
    /// Caption of the chart (under the title).
    pub caption: String,
    /// One name per group, along the x axis.
    pub categories: Vec<String>,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// The series.
    pub series: Vec<BarSeries>,
    /// Dotted vertical lines before these category indices (e.g. downsampling blocks).
    pub separators: Vec<usize>,
}

impl Figure for GroupedBars {
    fn size(&self) -> (u32, u32) {
        ((self.categories.len() as u32 * 78 + 160).max(700), 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        let n = self.categories.len();
        if n == 0 || self.series.is_empty() {
            return Err(PlotError::Empty("no categories or series to draw".into()));
        }
        if let Some(s) = self.series.iter().find(|s| s.values.len() != n) {
            return Err(PlotError::Empty(format!(
                "series `{}` has {} values for {n} categories",
                s.name,
                s.values.len()
            )));
        }
        let body = root.titled(&self.title, title_style())?;
        let top = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().map(|(m, e)| m + e.abs()))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let categories = &self.categories;
        let mut chart = ChartBuilder::on(&body)
            .caption(&self.caption, caption_style())
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(62)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                let on_category = (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n;
                if on_category {
                    categories[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .disable_x_mesh()
            .y_label_formatter(&crate::tick)
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(label_style())
            .axis_desc_style(label_style())
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let group = 0.8;
        let bar = group / self.series.len() as f64;
        for (j, series) in self.series.iter().enumerate() {
            let color = crate::series_color(series.color);
            let left = |i: usize| i as f64 - group / 2.0 + j as f64 * bar;
            let rects = series.values.iter().enumerate().map(|(i, &(mean, _))| {
                Rectangle::new(
                    [(left(i), 0.0), (left(i) + bar * 0.92, mean)],
                    color.mix(0.75).filled(),
                )
            });
            chart
                .draw_series(rects)?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            let errors = series
                .values
                .iter()
                .enumerate()
                .map(|(i, &(mean, spread))| {
                    let x = left(i) + bar * 0.46;
                    ErrorBar::new_vertical(
                        x,
                        mean - spread,
                        mean,
                        mean + spread,
                        BLACK.stroke_width(1),
                        6,
                    )
                });
            chart.draw_series(errors)?;
        }
        for &s in &self.separators {
            let x = s as f64 - 0.5;
            chart.draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, top)],
                3,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))?;
        }
        crate::draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}
