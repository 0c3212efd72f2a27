//! Line charts: a grid of panels, each with several series and a legend.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{
    Figure, PlotError, caption_style, draw_axes, draw_legend, grid_shape, padded_range, title_style,
};

/// One curve.
#[derive(Clone, Debug)]
pub struct LineSeries {
    /// Legend entry.
    pub name: String,
    /// Colour index ([`crate::series_color`]); the same run keeps its colour in every panel.
    pub color: usize,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One panel of curves.
#[derive(Clone, Debug)]
pub struct LinePanel {
    /// Caption above the panel.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// The curves.
    pub series: Vec<LineSeries>,
}

/// Panels of line charts under one title.
#[derive(Clone, Debug)]
pub struct LinePanels {
    /// Figure title.
    pub title: String,
    /// The panels, row by row.
    pub panels: Vec<LinePanel>,
    /// Panels per row.
    pub columns: usize,
}

impl Figure for LinePanels {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = grid_shape(self.panels.len(), self.columns);
        (cols as u32 * 520, rows as u32 * 380 + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        if self.panels.is_empty() {
            return Err(PlotError::Empty("no panels to draw".into()));
        }
        let body = root.titled(&self.title, title_style())?;
        let areas = body.split_evenly(grid_shape(self.panels.len(), self.columns));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, area)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    panel: &LinePanel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = padded_range(points().map(|p| p.0), 0.02);
    let (y0, y1) = padded_range(points().map(|p| p.1), 0.08);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, caption_style())
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    draw_axes(&mut chart, &panel.x_label, &panel.y_label)?;
    for series in &panel.series {
        let color = crate::series_color(series.color);
        chart
            .draw_series(plotters::series::LineSeries::new(
                series.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        // Few points (a sweep) get a marker each, so the measured values stand out.
        if series.points.len() <= 12 {
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )?;
        }
    }
    if panel.series.iter().any(|s| !s.name.is_empty()) {
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    Ok(())
}
