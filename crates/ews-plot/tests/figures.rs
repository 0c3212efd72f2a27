//! Every figure kind renders to a PNG that decodes to its size, shows its series' colours
//! and text, and (where it has one) an SVG naming its series.

use ews_plot::{
    BarSeries, Curve, GroupedBars, HistogramPanel, HistogramSeries, Histograms, ImageGrid,
    LinePanel, LinePanels, RgbTile, render, series_color,
};

fn decode(png: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("a valid PNG")
        .to_rgb8()
}

/// Pixels of exactly this colour.
fn count_color(img: &image::RgbImage, color: plotters::style::RGBColor) -> usize {
    img.pixels()
        .filter(|p| p.0 == [color.0, color.1, color.2])
        .count()
}

/// Non-white pixels in the rows `rows`.
fn ink_in_rows(img: &image::RgbImage, rows: std::ops::Range<u32>) -> usize {
    rows.flat_map(|y| (0..img.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 != [255, 255, 255])
        .count()
}

#[test]
fn line_panels_draw_every_series_in_its_colour_with_a_title() {
    let curve = |name: &str, color, slope: f64| Curve {
        name: name.into(),
        color,
        points: (0..20).map(|i| (i as f64, slope * i as f64)).collect(),
    };
    let figure = LinePanels {
        title: "training curves".into(),
        panels: vec![
            LinePanel {
                title: "test accuracy".into(),
                x_label: "epoch".into(),
                y_label: "%".into(),
                series: vec![curve("vanilla", 0, 1.0), curve("ews", 3, 2.0)],
            },
            LinePanel {
                title: "KL".into(),
                x_label: "step".into(),
                y_label: "KL".into(),
                series: vec![curve("ews", 3, -1.0)],
            },
        ],
        columns: 2,
    };
    let out = render(&figure).unwrap();
    let img = decode(&out.png);
    assert_eq!((img.width(), img.height()), (out.width, out.height));
    assert_eq!((out.width, out.height), (1040, 430));
    assert!(
        count_color(&img, series_color(0)) > 50,
        "vanilla's curve is drawn"
    );
    assert!(
        count_color(&img, series_color(3)) > 100,
        "ews' curves are drawn"
    );
    assert_eq!(
        count_color(&img, series_color(1)),
        0,
        "no other series colour"
    );
    assert!(
        ink_in_rows(&img, 0..40) > 100,
        "the title is rendered with the built-in font"
    );
    let svg = out.svg.expect("line charts have an SVG copy");
    for text in [
        "training curves",
        "vanilla",
        "ews",
        "test accuracy",
        "epoch",
    ] {
        assert!(svg.contains(text), "the SVG holds `{text}`");
    }
}

#[test]
fn histograms_draw_bars_reference_lines_and_marks() {
    let series = |name: &str, color, centre: f64| HistogramSeries {
        name: name.into(),
        color,
        values: (0..200).map(|i| centre + (i % 17) as f64 * 0.5).collect(),
        reference: Some((format!("{name} full model"), centre + 12.0)),
        marked: Some((format!("{name} weakest found"), centre - 3.0)),
    };
    let figure = Histograms {
        title: "subnet accuracy".into(),
        panels: vec![HistogramPanel {
            title: "clean".into(),
            x_label: "accuracy (%)".into(),
            series: vec![series("vanilla", 0, 40.0), series("ews", 3, 55.0)],
        }],
        bins: 30,
        columns: 3,
    };
    let out = render(&figure).unwrap();
    let img = decode(&out.png);
    assert_eq!((img.width(), img.height()), (520, 450));
    for color in [series_color(0), series_color(3)] {
        assert!(
            count_color(&img, color) > 100,
            "outlines, lines and marks in {color:?}"
        );
    }
    let svg = out.svg.unwrap();
    assert!(svg.contains("vanilla full model") && svg.contains("ews weakest found"));
}

#[test]
fn grouped_bars_need_one_value_per_category_and_draw_error_bars() {
    let mut figure = GroupedBars {
        title: "block vulnerability".into(),
        caption: "50% of one block".into(),
        categories: (0..6)
            .map(|i| format!("layer{}.{}", i / 2 + 1, i % 2))
            .collect(),
        x_label: "block".into(),
        y_label: "error (%)".into(),
        series: vec![
            BarSeries {
                name: "vanilla".into(),
                color: 0,
                values: (0..6).map(|i| (20.0 + i as f64, 2.0)).collect(),
            },
            BarSeries {
                name: "ews".into(),
                color: 3,
                values: (0..6).map(|i| (10.0 + i as f64, 1.0)).collect(),
            },
        ],
        separators: vec![2, 4],
    };
    let out = render(&figure).unwrap();
    let img = decode(&out.png);
    assert_eq!(img.width(), 700);
    let svg = out.svg.unwrap();
    assert!(
        svg.contains("layer1.0") && svg.contains("layer3.1"),
        "every block is named"
    );
    figure.series[1].values.pop();
    let err = render(&figure).unwrap_err().to_string();
    assert!(err.contains("`ews` has 5 values for 6 categories"), "{err}");
}

#[test]
fn image_grids_paste_every_tile_magnified_with_labels() {
    let tile = |v: u8| RgbTile {
        height: 2,
        width: 3,
        pixels: (0..18).map(|i| v.wrapping_add(i as u8)).collect(),
    };
    let figure = ImageGrid {
        title: "corruptions".into(),
        row_labels: vec!["gaussian_noise".into(), "fog".into()],
        column_labels: vec!["clean".into(), "1".into()],
        tiles: vec![vec![tile(10), tile(50)], vec![tile(90), tile(130)]],
        zoom: 4,
    };
    let out = render(&figure).unwrap();
    assert!(out.svg.is_none(), "raster grids have no SVG copy");
    let img = decode(&out.png);
    assert_eq!(
        (img.width(), img.height()),
        (180 + 2 * 18 + 6, 80 + 2 * 14 + 6)
    );
    // Tile (1, 1) starts at (180 + 18, 80 + 14); its pixel (row 1, col 2) is magnified 4x.
    let (x0, y0) = (180 + 18, 80 + 14);
    let expected = [130 + 15, 130 + 16, 130 + 17];
    for (dx, dy) in [(8, 4), (11, 7)] {
        assert_eq!(img.get_pixel(x0 + dx, y0 + dy).0, expected);
    }
    assert!(ink_in_rows(&img, 0..40) > 50, "the title is drawn");
    assert!(
        (0..170).any(|x| img.get_pixel(x, 80 + 7).0 != [255, 255, 255]),
        "row labels are drawn left of the tiles"
    );
    let mut bad = figure.clone();
    bad.tiles[1].pop();
    assert!(render(&bad).is_err(), "a missing tile is an error");
}
