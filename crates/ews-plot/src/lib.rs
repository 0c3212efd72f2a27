//! Figures of the ews analyses, drawn with plotters: line charts (training curves),
//! histograms (subnet accuracy distributions, Fig. 1), grouped bars with error bars (block
//! vulnerability, Fig. 7) and labelled image grids (corruption previews).
//!
//! Every figure renders to PNG bytes and, where cheap, SVG text; callers write the files.
//! The font (DejaVu Sans, `fonts/`) is compiled in and rasterised by ab_glyph, so figures
//! look the same on a bare machine without fontconfig or system fonts.

mod bars;
mod grid;
mod histogram;
mod lines;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

pub use bars::{BarSeries, GroupedBars};
pub use grid::{ImageGrid, RgbTile};
pub use histogram::{HistogramPanel, HistogramSeries, Histograms};
pub use lines::{LinePanel, LinePanels, LineSeries as Curve};

/// The font family name every figure uses (registered from the built-in font).
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// A figure could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed; the message says how.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// The figure has nothing to draw or impossible dimensions.
    #[error("{0}")]
    Empty(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(e.to_string())
    }
}

/// A rendered figure.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// PNG file contents.
    pub png: Vec<u8>,
    /// SVG file contents, where the figure has a vector form.
    pub svg: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static;
    /// Whether an SVG copy is worth writing (false for figures made of raster images).
    fn has_svg(&self) -> bool {
        true
    }
    /// Changes the RGB pixels after drawing (image grids paste their images here).
    fn finish_raster(&self, _rgb: &mut [u8], _width: u32) {}
}

/// Renders `figure` to PNG (and SVG where it has one).
pub fn render(figure: &impl Figure) -> Result<Rendered, PlotError> {
    register_font();
    let (width, height) = figure.size();
    if width == 0 || height == 0 {
        return Err(PlotError::Empty(format!(
            "figure size {width}x{height} is empty"
        )));
    }
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        figure.draw(&root)?;
        root.present()?;
    }
    figure.finish_raster(&mut rgb, width);
    let svg = if figure.has_svg() {
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
            root.fill(&WHITE)?;
            figure.draw(&root)?;
            root.present()?;
        }
        Some(text)
    } else {
        None
    };
    Ok(Rendered {
        png: encode_png(&rgb, width, height)?,
        svg,
        width,
        height,
    })
}

/// PNG bytes of an RGB buffer.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, PlotError> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| PlotError::Draw(format!("PNG encoding: {e}")))?;
    Ok(png)
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let parsed = plotters::style::register_font(FONT, style, FONT_BYTES);
            assert!(parsed.is_ok(), "the built-in DejaVu Sans parses");
        }
    });
}

/// The colour of series `i`: matplotlib's tab10 cycle (blue, orange, green, red, ...).
pub fn series_color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// A range that holds every value with a margin, never empty.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    let pad = if hi > lo { span * margin } else { 0.5 };
    (lo - pad, hi + pad)
}

/// Rows and columns of a grid of `n` panels at most `columns` wide.
pub(crate) fn grid_shape(n: usize, columns: usize) -> (usize, usize) {
    let cols = n.clamp(1, columns.max(1));
    (n.div_ceil(cols).max(1), cols)
}

/// An axis tick label: up to six decimals without trailing zeros (`5`, `0.1`, `10.39245`),
/// scientific notation for very large or small magnitudes.
pub(crate) fn tick(v: &f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// A chart on f64 axes, as every figure here draws.
pub(crate) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the axes of `chart` with tick labels and descriptions, without minor grid lines.
pub(crate) fn draw_axes<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    x_desc: &str,
    y_desc: &str,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(label_style())
        .axis_desc_style(label_style())
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(())
}

/// Draws the legend of `chart` at `position` on a translucent white box.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .label_font(label_style())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(position)
        .draw()?;
    Ok(())
}

/// The chart title style.
pub(crate) fn title_style() -> TextStyle<'static> {
    (FONT, 22).into_font().style(FontStyle::Bold).into()
}

/// A panel caption style.
pub(crate) fn caption_style() -> TextStyle<'static> {
    (FONT, 17).into()
}

/// Axis label and legend text style.
pub(crate) fn label_style() -> TextStyle<'static> {
    (FONT, 14).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_drop_trailing_zeros() {
        let t = |v: f64| super::tick(&v);
        assert_eq!(
            [t(5.0), t(0.1), t(10.392450), t(-0.0), t(2e-7), t(0.0)],
            ["5", "0.1", "10.39245", "0", "2.00e-7", "0"]
        );
    }
}
