//! Labelled image grids: rows and columns of RGB tiles with names on both axes.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Figure, PlotError, label_style, title_style};

/// One RGB image, HWC bytes.
#[derive(Clone, Debug)]
pub struct RgbTile {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

/// A grid of images with row and column names (PNG only).
#[derive(Clone, Debug)]
pub struct ImageGrid {
    /// Figure title.
    pub title: String,
    /// One name per row, drawn to the left.
    pub row_labels: Vec<String>,
    /// One name per column, drawn above.
    pub column_labels: Vec<String>,
    /// `tiles[row][column]`, all of one size.
    pub tiles: Vec<Vec<RgbTile>>,
    /// Nearest-neighbour magnification of every tile.
    pub zoom: usize,
}

const LEFT: usize = 180;
const TOP: usize = 80;
const GAP: usize = 6;

impl ImageGrid {
    fn tile_size(&self) -> (usize, usize) {
        self.tiles
            .first()
            .and_then(|row| row.first())
            .map_or((0, 0), |t| (t.height * self.zoom, t.width * self.zoom))
    }

    fn origin(&self, row: usize, col: usize) -> (usize, usize) {
        let (h, w) = self.tile_size();
        (LEFT + col * (w + GAP), TOP + row * (h + GAP))
    }
}

impl Figure for ImageGrid {
    fn size(&self) -> (u32, u32) {
        let (h, w) = self.tile_size();
        let cols = self.column_labels.len();
        let rows = self.row_labels.len();
        (
            (LEFT + cols * (w + GAP) + GAP) as u32,
            (TOP + rows * (h + GAP) + GAP) as u32,
        )
    }

    fn has_svg(&self) -> bool {
        false
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        let (h, w) = self.tile_size();
        let shape_ok = self.tiles.len() == self.row_labels.len()
            && self.tiles.iter().all(|row| {
                row.len() == self.column_labels.len()
                    && row.iter().all(|t| {
                        t.height * self.zoom == h
                            && t.width * self.zoom == w
                            && t.pixels.len() == t.height * t.width * 3
                    })
            });
        if h == 0 || !shape_ok {
            return Err(PlotError::Empty(
                "an image grid needs one tile per row and column, all of one size".into(),
            ));
        }
        let centre = Pos::new(HPos::Center, VPos::Center);
        let (width, _) = self.size();
        root.draw(&Text::new(
            self.title.clone(),
            (width as i32 / 2, 24),
            title_style().pos(centre),
        ))?;
        for (c, label) in self.column_labels.iter().enumerate() {
            let (x, y) = self.origin(0, c);
            let at = ((x + w / 2) as i32, y as i32 - 16);
            root.draw(&Text::new(label.clone(), at, label_style().pos(centre)))?;
        }
        let right = Pos::new(HPos::Right, VPos::Center);
        for (r, label) in self.row_labels.iter().enumerate() {
            let (x, y) = self.origin(r, 0);
            let at = (x as i32 - 10, (y + h / 2) as i32);
            root.draw(&Text::new(label.clone(), at, label_style().pos(right)))?;
        }
        Ok(())
    }

    fn finish_raster(&self, rgb: &mut [u8], width: u32) {
        let stride = width as usize * 3;
        for (r, row) in self.tiles.iter().enumerate() {
            for (c, tile) in row.iter().enumerate() {
                let (x0, y0) = self.origin(r, c);
                for y in 0..tile.height * self.zoom {
                    for x in 0..tile.width * self.zoom {
                        let src = ((y / self.zoom) * tile.width + x / self.zoom) * 3;
                        let dst = (y0 + y) * stride + (x0 + x) * 3;
                        rgb[dst..dst + 3].copy_from_slice(&tile.pixels[src..src + 3]);
                    }
                }
            }
        }
    }
}
