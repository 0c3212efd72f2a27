//! CIFAR parsing, image folders, the generated dataset, the loader and downloads.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ews_augment::StandardTransform;
use ews_augment::policy::AugMix;
use ews_data::cifar::{self, Cifar};
use ews_data::download::{download, md5_file};
use ews_data::synthetic::{self, SyntheticConfig};
use ews_data::{
    Augmentation, BatchLoader, DataError, ImageSource, LoaderConfig, Policy, Views, folder,
};

mod fixtures;

fn cifar10_record(label: u8, seed: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    r
}

#[test]
fn cifar_records_become_hwc_images_with_labels() {
    let mut bytes = cifar10_record(3, 0);
    bytes.extend(cifar10_record(9, 1));
    let (pixels, labels) = cifar::parse_records(Cifar::Ten, &bytes, Path::new("x.bin")).unwrap();
    assert_eq!(labels, vec![3, 9]);
    // Pixel (y=0, x=5): R from plane 0, G from plane 1, B from plane 2.
    let rec = &bytes[1..3073];
    assert_eq!(&pixels[15..18], &[rec[5], rec[1024 + 5], rec[2048 + 5]]);
    assert_eq!(pixels[3072], bytes[3073 + 1]);

    // CIFAR-100: coarse label, then the fine label that is used.
    let mut r100 = vec![4u8, 77];
    r100.extend(vec![0u8; 3072]);
    let (_, labels) = cifar::parse_records(Cifar::Hundred, &r100, Path::new("t.bin")).unwrap();
    assert_eq!(labels, vec![77]);
}

#[test]
fn damaged_cifar_files_are_named_in_errors() {
    let mut bytes = cifar10_record(3, 0);
    bytes.extend(cifar10_record(12, 0));
    let err = cifar::parse_records(Cifar::Ten, &bytes, Path::new("data_batch_2.bin"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_2.bin") && err.contains("record 1") && err.contains("label 12"),
        "{err}"
    );
    let err = cifar::parse_records(Cifar::Ten, &bytes[..5000], Path::new("test_batch.bin"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("truncated"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let err = cifar::load(Cifar::Ten, dir.path()).unwrap_err().to_string();
    assert!(err.contains("ews download cifar10"), "{err}");
}

#[test]
fn cifar_folder_loads_train_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&sub).unwrap();
    for b in 1..=5 {
        let bytes: Vec<u8> = (0..4)
            .flat_map(|i| cifar10_record(i as u8, b as u8))
            .collect();
        std::fs::write(sub.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    std::fs::write(sub.join("test_batch.bin"), cifar10_record(1, 0)).unwrap();
    let ds = cifar::load(Cifar::Ten, dir.path()).unwrap();
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.num_classes()),
        (20, 1, 10)
    );
    assert_eq!(ds.classes[0], "airplane");
    let img = ds.train.image(5).unwrap();
    assert_eq!((img.height, img.width), (32, 32));
}

fn write_png(path: &Path, color: [u8; 3], size: u32) {
    let img = image::RgbImage::from_pixel(size, size, image::Rgb(color));
    img.save(path).unwrap();
}

#[test]
fn image_folders_sort_classes_and_check_layout() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for (class, color) in [("zebra", [200, 0, 0]), ("ant", [0, 200, 0])] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..3 {
                write_png(&d.join(format!("{i}.png")), color, 12 + i);
            }
        }
    }
    std::fs::write(dir.path().join("train/ant/notes.txt"), "not an image").unwrap();
    let ds = folder::load(dir.path()).unwrap();
    assert_eq!(ds.classes, vec!["ant", "zebra"]);
    assert_eq!((ds.train.len(), ds.test.len()), (6, 6));
    assert_eq!(ds.train.labels[0], 0);
    let img = ds.train.image(0).unwrap();
    assert_eq!(img.get(0, 0), [0, 200, 0]);
    assert_eq!((img.height, img.width), (12, 12));

    // Resized to a fixed size by the loader, whatever the file size.
    let config = LoaderConfig {
        batch_size: 4,
        image_size: 8,
        shuffle: false,
        drop_last: false,
        workers: 2,
        prefetch: 1,
        seed: 0,
        augmentation: Augmentation::CenterCrop,
        policy: Policy::None,
        views: Views::Single,
    };
    let batches: Vec<_> = BatchLoader::new(&ds.test, &config, 0)
        .map(Result::unwrap)
        .collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].shape, [2, 3, 8, 8]);

    std::fs::remove_dir_all(dir.path().join("val")).unwrap();
    let err = folder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("val"), "{err}");
    std::fs::write(dir.path().join("train/ant/0.png"), b"broken").unwrap();
    std::fs::create_dir_all(dir.path().join("test/ant")).unwrap();
    write_png(&dir.path().join("test/ant/a.png"), [1, 2, 3], 4);
    let ds = folder::load(dir.path()).unwrap();
    match ds.train.image(0) {
        Err(DataError::BadFile { path, .. }) => assert!(path.ends_with("0.png")),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// `root/<class>/<i>.png` for each (class, colour), `count` images each.
fn class_folders(root: &Path, classes: &[(&str, [u8; 3])], count: u32) {
    for (class, color) in classes {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..count {
            write_png(&d.join(format!("{i}.png")), *color, 6);
        }
    }
}

#[test]
fn extra_training_folders_join_with_the_dataset_class_indices() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imagenet");
    let classes = [("n01", [200, 0, 0]), ("n02", [0, 200, 0])];
    class_folders(&root.join("train"), &classes, 2);
    class_folders(&root.join("val"), &classes, 1);
    // DeepAugment copies: same classes, other pixels; EDSR's folders listed in another order
    // by the file system must not matter.
    let edsr = dir.path().join("EDSR");
    class_folders(&edsr, &[("n02", [0, 0, 200]), ("n01", [9, 9, 9])], 3);
    let cae = dir.path().join("CAE");
    class_folders(&cae, &classes, 1);

    let mut ds = folder::load(&root).unwrap();
    let added = folder::add_train_folders(&mut ds, &[edsr.clone(), cae.clone()]).unwrap();
    assert_eq!(added, vec![6, 2]);
    assert_eq!(ds.train.len(), 4 + 6 + 2);
    assert_eq!(ds.test.len(), 2);
    // Every image keeps the label of its class folder's name, whichever folder it came from.
    for i in 0..ds.train.len() {
        let ImageSource::Files(paths) = &ds.train.images else {
            unreachable!()
        };
        let class = paths[i].parent().unwrap().file_name().unwrap();
        assert_eq!(
            ds.classes[ds.train.labels[i] as usize],
            class.to_str().unwrap()
        );
    }
    assert_eq!(ds.train.image(4).unwrap().get(0, 0), [9, 9, 9]);
    assert_eq!(ds.train.image(7).unwrap().get(0, 0), [0, 0, 200]);

    // A folder with other classes, a class too few or too many, or one level too high.
    let other = dir.path().join("other");
    class_folders(&other, &[("n01", [1, 1, 1]), ("n03", [1, 1, 1])], 1);
    let fewer = dir.path().join("fewer");
    class_folders(&fewer, &[("n01", [1, 1, 1])], 1);
    let mut fresh = folder::load(&root).unwrap();
    for (folder, needles) in [
        (
            &other,
            vec!["other", "missing: n02", "not in ROOT/train: n03"],
        ),
        (
            &fewer,
            vec!["fewer", "has 1 class folders where the dataset has 2"],
        ),
        (&root, vec!["imagenet", "point at its train/ folder"]),
        (
            &dir.path().join("absent"),
            vec!["absent", "DIR/<class>/<image>"],
        ),
    ] {
        let err = folder::add_train_folders(&mut fresh, std::slice::from_ref(folder))
            .unwrap_err()
            .to_string();
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
    assert_eq!(fresh.train.len(), 4, "a refused folder adds nothing");
    let mut memory = synthetic::generate(SyntheticConfig {
        train: 4,
        test: 2,
        seed: 0,
    });
    let err = folder::add_train_folders(&mut memory, &[edsr]).unwrap_err();
    assert!(err.to_string().contains("folder:ROOT"), "{err}");
}

#[test]
fn loaders_shrink_images_with_pillows_antialiased_filter() {
    use ews_augment::Image;
    use ews_augment::corrupt::{PilFilter, resize_pil};
    use ews_augment::standard::resize_bilinear;
    use rand::SeedableRng;
    // Stripes one pixel wide: a filter without antialiasing aliases them.
    let pixels = (0..30 * 30)
        .flat_map(|i| {
            if (i % 30) % 2 == 0 {
                [250u8; 3]
            } else {
                [5u8; 3]
            }
        })
        .collect();
    let image = Image::new(30, 30, pixels);
    let pillow = resize_pil(&image, 8, 8, PilFilter::Bilinear);
    assert_ne!(pillow, resize_bilinear(&image, 8, 8));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let fitted = ews_data::loader::transform(&image, Augmentation::None, 8, &mut rng);
    assert_eq!(fitted, pillow);
    let unchanged = ews_data::loader::transform(&pillow, Augmentation::None, 8, &mut rng);
    assert_eq!(unchanged, pillow);
}

/// The frames of the H.264 fixtures (`fixtures/video/make_videos.py`).
fn fixture_frame(t: usize) -> Vec<u8> {
    (0..32 * 32 * 3)
        .map(|i| {
            let (y, x, c) = (i / 96, i / 3 % 32, i % 3);
            ((5 * y + 3 * x + 70 * c + 40 * t) % 256) as u8
        })
        .collect()
}

/// The FFmpeg of this machine (`EWS_FFMPEG` or `ffmpeg` on the PATH), if it runs.
fn working_ffmpeg() -> Option<std::path::PathBuf> {
    let program = ews_data::video::ffmpeg_program();
    let runs = std::process::Command::new(&program)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    runs.then_some(program)
}

#[test]
fn the_sequence_reader_keeps_the_files_order_and_stops_at_a_bad_file() {
    use ews_data::sequence_reader::read_ahead;
    let dir = tempfile::tempdir().unwrap();
    // Sequence i: i + 1 frames of 8 x 8 pixels, all of value i.
    let files: Vec<std::path::PathBuf> = (0..7)
        .map(|i| {
            let path = dir.path().join(format!("v{i}.npy"));
            let data = vec![i as u8; (i + 1) * 8 * 8 * 3];
            std::fs::write(&path, ews_data::npy::encode_u8(&[i + 1, 8, 8, 3], &data)).unwrap();
            path
        })
        .collect();
    for workers in [1, 3, 16] {
        let read: Vec<Vec<ews_augment::Image>> =
            read_ahead(&files, workers).map(Result::unwrap).collect();
        assert_eq!(read.len(), 7, "{workers} workers");
        for (i, frames) in read.iter().enumerate() {
            assert_eq!(frames.len(), i + 1, "{workers} workers, sequence {i}");
            assert!(frames[0].pixels.iter().all(|&p| p == i as u8));
        }
    }
    // A cut file in the middle: the files before it read, then its error, naming it.
    let bytes = std::fs::read(&files[4]).unwrap();
    std::fs::write(&files[4], &bytes[..bytes.len() - 10]).unwrap();
    let mut reader = read_ahead(&files, 3);
    for i in 0..4 {
        assert!(reader.next().unwrap().is_ok(), "sequence {i}");
    }
    let err = reader.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("v4.npy"), "{err}");
    // Dropped half-way, the reader stops its threads (the test would hang otherwise).
    drop(read_ahead(&files, 2));
    assert_eq!(read_ahead(&[], 4).count(), 0);
}

#[test]
fn sequences_read_from_npy_frames_and_ppm_streams() {
    use ews_data::video;
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<u8> = (0..3).flat_map(fixture_frame).collect();
    let npy = dir.path().join("v.npy");
    std::fs::write(&npy, ews_data::npy::encode_u8(&[3, 32, 32, 3], &frames)).unwrap();
    let read = video::read_frames(&npy).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].pixels, fixture_frame(2));
    let flat = dir.path().join("flat.npy");
    std::fs::write(&flat, ews_data::npy::encode_u8(&[3, 32 * 32 * 3], &frames)).unwrap();
    let err = video::read_frames(&flat).unwrap_err().to_string();
    assert!(
        err.contains("flat.npy") && err.contains("frames x height x width x 3"),
        "{err}"
    );

    // Two PPM images back to back, as FFmpeg's image2pipe writes them.
    let mut stream = b"P6\n2 1\n255\n".to_vec();
    stream.extend([1, 2, 3, 4, 5, 6]);
    stream.extend(b"P6 1 1 255\n");
    stream.extend([7, 8, 9]);
    let parsed = video::parse_ppm_stream(&stream).unwrap();
    assert_eq!(
        (parsed.len(), parsed[0].width, parsed[1].pixels.clone()),
        (2, 2, vec![7, 8, 9])
    );
    assert!(video::parse_ppm_stream(&stream[..stream.len() - 1]).is_err());
    assert!(video::parse_ppm_stream(b"P5 1 1 255\n\x00").is_err());

    // No decoder: the error says what to install.
    let missing = dir.path().join("no-ffmpeg-here");
    let mp4 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video/crf20.mp4");
    let err = video::decode_video_with(&missing, &mp4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crf20.mp4") && err.contains("install FFmpeg"),
        "{err}"
    );
}

#[test]
fn libx264_fixtures_decode_to_their_frames() {
    let Some(ffmpeg) = working_ffmpeg() else {
        assert!(
            std::env::var_os("EWS_REQUIRE_FFMPEG").is_none(),
            "EWS_REQUIRE_FFMPEG is set but no FFmpeg runs"
        );
        eprintln!("skipped: no FFmpeg (set EWS_FFMPEG or put ffmpeg on the PATH)");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video");
    for name in ["crf20.mp4", "grain.mp4", "yuv420.mp4"] {
        let frames = ews_data::video::decode_video_with(&ffmpeg, &dir.join(name)).unwrap();
        assert_eq!(frames.len(), 4, "{name}");
        for (t, f) in frames.iter().enumerate() {
            assert_eq!((f.height, f.width), (32, 32), "{name}");
            let want = fixture_frame(t);
            let err: f64 = f
                .pixels
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
                / want.len() as f64;
            // Lossy H.264 of a sharp pattern; 4:2:0 halves the chroma resolution.
            let limit = if name == "yuv420.mp4" { 10.0 } else { 3.0 };
            assert!(err < limit, "{name} frame {t}: mean error {err}");
        }
    }
    let broken = tempfile::tempdir().unwrap();
    let bad = broken.path().join("bad.mp4");
    std::fs::write(&bad, b"not a video").unwrap();
    let err = ews_data::video::decode_video_with(&ffmpeg, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.mp4") && err.contains("could not decode"),
        "{err}"
    );
}

#[test]
fn generated_dataset_is_deterministic_balanced_and_noisy_as_stated() {
    let config = SyntheticConfig {
        train: 2000,
        test: 500,
        seed: 3,
    };
    let a = synthetic::generate(config);
    let b = synthetic::generate(config);
    assert_eq!(a.train.image(17).unwrap(), b.train.image(17).unwrap());
    assert_eq!(a.train.labels, b.train.labels);
    assert_ne!(a.train.image(0).unwrap(), a.test.image(0).unwrap());
    let flipped = (0..a.train.len())
        .filter(|&i| a.train.labels[i] != synthetic::true_class(i))
        .count();
    let rate = flipped as f64 / a.train.len() as f64;
    assert!(
        (rate - synthetic::LABEL_NOISE).abs() < 0.02,
        "label noise {rate}"
    );
    let mut counts = [0usize; 10];
    for &l in a.test.labels.iter() {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| (30..=70).contains(&c)), "{counts:?}");
    // Images of one class differ (random colour, size, position and noise).
    assert_ne!(a.train.image(0).unwrap(), a.train.image(10).unwrap());
}

fn loader_config(workers: usize, shuffle: bool, drop_last: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size: 64,
        image_size: 32,
        shuffle,
        drop_last,
        workers,
        prefetch: 2,
        seed: 11,
        augmentation: Augmentation::Standard(StandardTransform::default()),
        policy: Policy::None,
        views: Views::Single,
    }
}

#[test]
fn augmix_jsd_batches_hold_the_clean_view_and_two_augmented_views() {
    let ds = synthetic::generate(SyntheticConfig {
        train: 40,
        test: 10,
        seed: 1,
    });
    let plain = loader_config(1, true, false);
    let jsd = LoaderConfig {
        policy: Policy::AugMix(AugMix::default()),
        views: Views::CleanAndTwoAugmented,
        ..plain
    };
    let clean: Vec<_> = BatchLoader::new(&ds.train, &plain, 2)
        .map(Result::unwrap)
        .collect();
    let three: Vec<_> = BatchLoader::new(&ds.train, &jsd, 2)
        .map(Result::unwrap)
        .collect();
    let three_again: Vec<_> = BatchLoader::new(&ds.train, &LoaderConfig { workers: 3, ..jsd }, 2)
        .map(Result::unwrap)
        .collect();
    assert_eq!(three, three_again, "independent of the worker count");
    // Each data-parallel peer builds its own part of every batch, equal to that part of the
    // whole batch.
    for rank in 0..2 {
        let part: Vec<_> = BatchLoader::shard(&ds.train, &jsd, 2, rank, 2)
            .map(Result::unwrap)
            .collect();
        let expected: Vec<_> = three.iter().map(|b| b.shard(rank, 2)).collect();
        assert_eq!(part, expected);
    }
    let (c, t) = (&clean[0], &three[0]);
    let n = c.labels.len();
    assert_eq!(t.shape, [3 * n, 3, 32, 32]);
    assert_eq!((t.views, t.labels.clone()), (3, c.labels.clone()));
    let view = |v: usize| &t.images[v * c.images.len()..(v + 1) * c.images.len()];
    assert_eq!(view(0), &c.images[..], "view 0 is the crop/flip image");
    assert_ne!(view(1), view(0));
    assert_ne!(
        view(2),
        view(1),
        "the two AugMix views are drawn independently"
    );
    assert!(t.images.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn loader_shuffles_per_epoch_and_is_deterministic_across_worker_counts() {
    let ds = synthetic::generate(SyntheticConfig {
        train: 300,
        test: 10,
        seed: 0,
    });
    let collect = |workers, epoch| -> Vec<ews_data::HostBatch> {
        BatchLoader::new(&ds.train, &loader_config(workers, true, false), epoch)
            .map(Result::unwrap)
            .collect()
    };
    let one = collect(1, 0);
    let three = collect(3, 0);
    assert_eq!(
        one, three,
        "batches must not depend on the number of workers"
    );
    let mut seen: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    assert_eq!(one.len(), 5);
    assert_eq!(one[4].shape, [300 - 256, 3, 32, 32]);
    let next_epoch = collect(2, 1);
    assert_ne!(
        one[0].indices, next_epoch[0].indices,
        "a new epoch reshuffles"
    );
    assert!(one[0].images.iter().all(|v| (0.0..=1.0).contains(v)));
    let labels_ok = one[0]
        .indices
        .iter()
        .zip(&one[0].labels)
        .all(|(&i, &l)| ds.train.labels[i] as i64 == l);
    assert!(labels_ok);
    let dropped: Vec<_> = BatchLoader::new(&ds.train, &loader_config(2, true, true), 0).collect();
    assert_eq!(dropped.len(), 4);
    // Dropping a loader early stops its workers.
    let mut early = BatchLoader::new(&ds.train, &loader_config(2, false, false), 0);
    assert!(early.next().is_some());
    drop(early);
}

/// How the loopback server answers.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// Honours Range requests (416 past the end); the first N responses stop after half of
    /// what they promise.
    CutFirst(usize),
    /// Answers every request with the whole file (200), Range or not.
    IgnoresRange,
    /// Sends the headers and half the body, then nothing, holding the connection open.
    Stalls,
}

/// A loopback HTTP server for `body`: honours Range requests; the first `cut_first`
/// responses stop after half of what they promise.
fn serve(body: Vec<u8>, cut_first: usize) -> (String, Arc<AtomicUsize>) {
    serve_as(body, Server::CutFirst(cut_first))
}

fn serve_as(body: Vec<u8>, server: Server) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/file.tar.gz", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&request).to_lowercase();
            let start: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .and_then(|r| {
                    r.trim_end_matches('-')
                        .trim()
                        .trim_end_matches('-')
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let start = if server == Server::IgnoresRange {
                0
            } else {
                start
            };
            if start > 0 && start >= body.len() {
                let _ = stream.write_all(
                    b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let part = &body[start..];
            let status = if start > 0 {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let header = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let send = match server {
                Server::CutFirst(cut_first) if n < cut_first => &part[..part.len() / 2],
                Server::Stalls => &part[..part.len() / 2],
                _ => part,
            };
            let _ = stream.write_all(send);
            if server == Server::Stalls {
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
        }
    });
    (url, served)
}

#[test]
fn downloads_verify_md5_and_resume() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let md5 = format!("{:x}", md5::compute(&body));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.tar.gz");

    let (url, served) = serve(body.clone(), 1);
    let err = download(&url, &md5, &dest, false).unwrap_err().to_string();
    assert!(err.contains("resume"), "{err}");
    let part = dir.path().join("file.tar.gz.part");
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        100_000,
        "half the file arrived"
    );
    download(&url, &md5, &dest, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part.exists());
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // Already there with the right checksum: no request at all.
    download(&url, &md5, &dest, false).unwrap();
    assert_eq!(served.load(Ordering::SeqCst), 2);
    assert_eq!(md5_file(&dest).unwrap(), md5);

    let (url, _) = serve(body, 0);
    let other = dir.path().join("other.tar.gz");
    let err = download(&url, "00000000000000000000000000000000", &other, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains(&md5),
        "{err}"
    );
    assert!(!other.exists() && !dir.path().join("other.tar.gz.part").exists());
}

#[test]
fn downloads_survive_servers_that_ignore_ranges_refuse_them_or_stall() {
    use ews_data::download::download_with_timeout;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let md5 = format!("{:x}", md5::compute(&body));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.tar.gz");
    let part = dir.path().join("file.tar.gz.part");

    // A server that ignores Range sends the whole file again: the download restarts.
    std::fs::write(&part, &body[..1000]).unwrap();
    let (url, _) = serve_as(body.clone(), Server::IgnoresRange);
    download(&url, &md5.to_uppercase(), &dest, false).unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        body,
        "upper-case md5 accepted too"
    );

    // A part file that already holds everything: the server answers 416, the md5 decides.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&part, &body).unwrap();
    let (url, served) = serve_as(body.clone(), Server::CutFirst(0));
    download(&url, &md5, &dest, false).unwrap();
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    // A server that stops sending: the read times out, and what arrived is kept to resume.
    std::fs::remove_file(&dest).unwrap();
    let (url, _) = serve_as(body.clone(), Server::Stalls);
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_secs(1);
    let err = download_with_timeout(&url, &md5, &dest, false, timeout)
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        err.contains("sent nothing for 1 s") && err.contains("resume"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    let (url, _) = serve(body.clone(), 0);
    download(&url, &md5, &dest, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

/// A .tar.gz holding `name` as an entry of `kind` (a raw header: tar's builder refuses `..`).
fn archive_with(dir: &Path, name: &str, kind: tar::EntryType) -> std::path::PathBuf {
    let path = dir.join(format!("{}.tar.gz", kind.as_byte()));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let data = b"hello";
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(if kind == tar::EntryType::Regular {
        5
    } else {
        0
    });
    if kind != tar::EntryType::Regular {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_mode(0o644);
    header.set_cksum();
    let body: &[u8] = if kind == tar::EntryType::Regular {
        data
    } else {
        &[]
    };
    builder.append(&header, body).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    path
}

#[test]
fn archive_entries_that_escape_the_folder_or_link_are_refused() {
    use ews_data::download::extract_tar_gz;
    let dir = tempfile::tempdir().unwrap();
    let into = dir.path().join("into");
    for (name, kind, says) in [
        (
            "../escaped.txt",
            tar::EntryType::Regular,
            "would land outside",
        ),
        (
            "/tmp/absolute.txt",
            tar::EntryType::Regular,
            "would land outside",
        ),
        ("link", tar::EntryType::Symlink, "is a link"),
        ("hard", tar::EntryType::Link, "is a link"),
    ] {
        let archive = archive_with(dir.path(), name, kind);
        let err = extract_tar_gz(&archive, &into).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains(name), "{name}: {err}");
    }
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!Path::new("/tmp/absolute.txt").exists());
    let fine = archive_with(dir.path(), "data/ok.txt", tar::EntryType::Regular);
    extract_tar_gz(&fine, &into).unwrap();
    assert_eq!(std::fs::read(into.join("data/ok.txt")).unwrap(), b"hello");
}

#[test]
fn real_cifar10_jpegs_load_as_an_image_folder() {
    let Some(archive) = fixtures::shared(
        "datasets/cifar10-jpeg.tar.gz",
        "real_cifar10_jpegs_load_as_an_image_folder",
    ) else {
        return;
    };
    // Unpack the first images of every class of both splits into a small folder.
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(&archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut per_folder = std::collections::HashMap::<std::path::PathBuf, usize>::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let Some(parent) = path.parent().map(Path::to_path_buf) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "jpg") {
            let count = per_folder.entry(parent.clone()).or_default();
            if *count < 5 {
                *count += 1;
                std::fs::create_dir_all(dir.path().join(&parent)).unwrap();
                entry.unpack(dir.path().join(&path)).unwrap();
            }
        }
        if per_folder.len() == 20 && per_folder.values().all(|&c| c == 5) {
            break;
        }
    }
    let root = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let root = if root.join("train").is_dir() {
        root
    } else {
        dir.path().to_path_buf()
    };
    let ds = folder::load(&root).unwrap();
    // Sorted folder names are alphabetical; CIFAR-10's official order happens to agree.
    let official: Vec<String> = cifar::CIFAR10_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(ds.classes, official);
    assert_eq!((ds.train.len(), ds.test.len()), (50, 50));
    for i in 0..ds.train.len() {
        let img = ds.train.image(i).unwrap();
        assert_eq!((img.height, img.width), (32, 32));
    }
}

#[test]
fn npy_files_from_numpy_read_and_our_writer_matches_numpy_bytes() {
    use ews_data::npy::{self, Dtype};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let images = npy::read(&dir.join("images_u8.npy")).unwrap();
    assert_eq!(
        (images.dtype, images.shape.clone()),
        (Dtype::U8, vec![2, 2, 3, 3])
    );
    let expected: Vec<u8> = (0..36).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(images.data, expected);
    // NumPy's own bytes for the same array equal ours.
    let numpy_bytes = std::fs::read(dir.join("images_u8.npy")).unwrap();
    assert_eq!(npy::encode_u8(&[2, 2, 3, 3], &expected), numpy_bytes);
    let labels_u8 = std::fs::read(dir.join("labels_u8.npy")).unwrap();
    assert_eq!(npy::encode_u8(&[2], &[3, 9]), labels_u8);
    for name in ["labels_i64.npy", "labels_u8.npy"] {
        let labels = npy::read(&dir.join(name)).unwrap();
        assert_eq!(
            (labels.shape.clone(), labels.to_i64()),
            (vec![2], vec![3, 9]),
            "{name}"
        );
    }
    let err = npy::read(&dir.join("floats.npy")).unwrap_err().to_string();
    assert!(err.contains("floats.npy") && err.contains("dtype"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.npy");
    std::fs::write(&cut, &numpy_bytes[..numpy_bytes.len() - 5]).unwrap();
    let err = npy::read(&cut).unwrap_err().to_string();
    assert!(
        err.contains("cut.npy") && err.contains("truncated"),
        "{err}"
    );
    let junk = tmp.path().join("junk.npy");
    std::fs::write(&junk, b"hello world, not numpy").unwrap();
    assert!(npy::read(&junk).unwrap_err().to_string().contains("magic"));
}

#[test]
fn cifar_c_generation_is_severity_major_and_independent_of_workers() {
    use ews_augment::corrupt::{Corruption, Table, corrupt};
    use ews_data::{cifar_c, npy};
    let ds = synthetic::generate(SyntheticConfig {
        train: 2,
        test: 7,
        seed: 4,
    });
    let dir = tempfile::tempdir().unwrap();
    let run = |workers: usize, out: &std::path::Path| {
        cifar_c::generate(
            &ds.test,
            out,
            &cifar_c::Job {
                corruptions: &[Corruption::Contrast, Corruption::ShotNoise],
                severities: &[2, 5],
                seed: 9,
                workers,
                frost: None,
            },
            &|_| {},
        )
        .unwrap()
    };
    let meta = run(3, &dir.path().join("a"));
    run(1, &dir.path().join("b"));
    assert_eq!((meta.images, meta.severities.clone()), (7, vec![2, 5]));
    for file in ["contrast.npy", "shot_noise.npy", "labels.npy"] {
        let a = std::fs::read(dir.path().join("a").join(file)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(file)).unwrap();
        assert_eq!(a, b, "{file} must not depend on the worker count");
    }
    let contrast = npy::read(&dir.path().join("a/contrast.npy")).unwrap();
    assert_eq!(contrast.shape, vec![14, 32, 32, 3]);
    // Block 1 holds severity 5 of every image, in order.
    let img = ds.test.image(3).unwrap();
    let expected = corrupt(
        &img,
        Corruption::Contrast,
        5,
        Table::Cifar,
        &mut rand::rng(),
    );
    let at = (7 + 3) * 3072;
    assert_eq!(&contrast.data[at..at + 3072], &expected.pixels[..]);
    let labels = npy::read(&dir.path().join("a/labels.npy"))
        .unwrap()
        .to_i64();
    let test_labels: Vec<i64> = ds.test.labels.iter().map(|&l| l as i64).collect();
    assert_eq!(labels, [test_labels.clone(), test_labels].concat());
    let err = cifar_c::generate(
        &ds.test,
        dir.path(),
        &cifar_c::Job {
            corruptions: &[Corruption::Fog],
            severities: &[6],
            seed: 0,
            workers: 1,
            frost: None,
        },
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("severity 6"), "{err}");
}

#[test]
fn pseudo_labeled_pickles_of_every_protocol_read_without_python() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    // NumPy 2 (protocols 2, 4, 5) and NumPy 1.x (protocols 2 and 3, numpy.core, as the real
    // file was written).
    let files = ["p2", "p4", "p5", "numpy1_p2", "numpy1_p3"];
    for protocol in files {
        let path = dir.join(format!("pseudo_labeled_{protocol}.pickle"));
        let split = ews_data::pickle::load_pseudo_labeled(&path, 10).unwrap();
        assert_eq!(
            split.labels.as_slice(),
            &[3, 1, 4, 1],
            "protocol {protocol}"
        );
        let image = split.image(2).unwrap();
        assert_eq!((image.height, image.width), (8, 8));
        let offset = 2 * 8 * 8 * 3;
        for (j, &v) in image.pixels.iter().enumerate() {
            assert_eq!(
                v as usize,
                ((offset + j) * 37 + 11) % 256,
                "protocol {protocol}"
            );
        }
        // Labels outside the class range are refused, naming the file.
        let err = ews_data::pickle::load_pseudo_labeled(&path, 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label 4") && err.contains("pseudo_labeled"),
            "{err}"
        );
    }
    // A truncated file is a clear error.
    let bytes = std::fs::read(dir.join("pseudo_labeled_p4.pickle")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pickle");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = ews_data::pickle::load_pseudo_labeled(&cut, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.pickle") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn hold_out_splits_are_disjoint_and_cover_the_split() {
    let ds = ews_data::synthetic::generate(ews_data::synthetic::SyntheticConfig {
        train: 50,
        test: 5,
        seed: 1,
    });
    let (rest, held) = ds.train.hold_out(12, 7);
    assert_eq!((rest.len(), held.len()), (38, 12));
    let mut all: Vec<Vec<u8>> = (0..rest.len())
        .map(|i| rest.image(i).unwrap().pixels)
        .chain((0..held.len()).map(|i| held.image(i).unwrap().pixels))
        .collect();
    let mut original: Vec<Vec<u8>> = (0..50).map(|i| ds.train.image(i).unwrap().pixels).collect();
    all.sort();
    original.sort();
    assert_eq!(all, original);
    assert_eq!(ds.train.hold_out(12, 7).1.labels, held.labels, "seeded");
}

#[test]
fn shards_of_a_batch_take_the_same_rows_of_every_view() {
    use ews_data::HostBatch;
    // 4 images of 1 x 1 x 2 values, 3 views: value = 100 * view + 10 * image + pixel.
    let (n, views) = (4, 3);
    let images = (0..views)
        .flat_map(|v| (0..n).flat_map(move |i| (0..2).map(move |p| (100 * v + 10 * i + p) as f32)))
        .collect();
    let batch = HostBatch {
        images,
        labels: vec![7, 8, 9, 6],
        shape: [views * n, 1, 1, 2],
        views,
        indices: vec![40, 41, 42, 43],
    };
    let second = batch.shard(1, 2);
    assert_eq!(second.labels, vec![9, 6]);
    assert_eq!(second.indices, vec![42, 43]);
    assert_eq!(second.shape, [6, 1, 1, 2]);
    assert_eq!(
        second.images,
        vec![
            20., 21., 30., 31., 120., 121., 130., 131., 220., 221., 230., 231.
        ]
    );
    let whole: Vec<f32> = (0..2)
        .flat_map(|r| batch.shard(r, 2).images)
        .collect::<Vec<_>>();
    assert_eq!(whole.len(), batch.images.len());
    assert_eq!(batch.shard(0, 1), batch);
}

/// Inputs that the fuzzer (crates/ews-fuzz) found to panic, kept as errors.
#[test]
fn inputs_the_fuzzer_found_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // A .npy header whose shape's byte count overflows.
    let huge = tmp.path().join("huge.npy");
    let header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[3, 9]);
    std::fs::write(&huge, &bytes).unwrap();
    let err = ews_data::npy::read(&huge).unwrap_err().to_string();
    assert!(err.contains("huge.npy") && err.contains("larger"), "{err}");

    // A pickle cut inside a GLOBAL opcode's line.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let pickle = std::fs::read(golden.join("pseudo_labeled_numpy1_p2.pickle")).unwrap();
    let global = pickle.windows(6).position(|w| w == b"cnumpy").unwrap();
    let cut = tmp.path().join("cut.pickle");
    std::fs::write(&cut, &pickle[..global + 8]).unwrap();
    let err = ews_data::pickle::load_pseudo_labeled(&cut, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.pickle") && err.contains("GLOBAL"),
        "{err}"
    );
}

/// A generation marks its folder until it finishes: a rerun of the same settings keeps the
/// finished corruption files, other settings are refused while a generation is unfinished,
/// and replace a finished folder.
#[test]
fn cifar_c_generation_resumes_only_with_its_own_settings() {
    use ews_augment::corrupt::Corruption;
    use ews_data::{cifar_c, unfinished};
    let ds = synthetic::generate(SyntheticConfig {
        train: 2,
        test: 5,
        seed: 4,
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let run = |seed: u64| {
        let job = cifar_c::Job {
            corruptions: &[Corruption::Contrast, Corruption::ShotNoise],
            severities: &[1, 4],
            seed,
            workers: 1,
            frost: None,
        };
        cifar_c::generate(&ds.test, out, &job, &|_| {})
    };
    let meta = run(1).unwrap();
    let first = std::fs::read(out.join("shot_noise.npy")).unwrap();
    assert!(!out.join(unfinished::MARKER).exists());
    // Killed after contrast.npy: the marker stays, evaluation would refuse the folder.
    std::fs::remove_file(out.join("shot_noise.npy")).unwrap();
    std::fs::remove_file(out.join("meta.json")).unwrap();
    std::fs::write(
        out.join(unfinished::MARKER),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let err = unfinished::check_finished(out).unwrap_err().to_string();
    assert!(err.contains("has not finished"), "{err}");
    let err = run(2).unwrap_err().to_string();
    assert!(
        err.contains("unfinished generation of other settings"),
        "{err}"
    );
    // The same settings finish it; contrast.npy is kept (its bytes marked to show it).
    let mut contrast = std::fs::read(out.join("contrast.npy")).unwrap();
    let last = contrast.len() - 1;
    contrast[last] ^= 1;
    std::fs::write(out.join("contrast.npy"), &contrast).unwrap();
    run(1).unwrap();
    assert_eq!(std::fs::read(out.join("contrast.npy")).unwrap(), contrast);
    assert_eq!(std::fs::read(out.join("shot_noise.npy")).unwrap(), first);
    unfinished::check_finished(out).unwrap();
    // Other settings on a finished folder regenerate every file.
    run(2).unwrap();
    let second = std::fs::read(out.join("shot_noise.npy")).unwrap();
    assert_ne!(second, first);
    assert_ne!(std::fs::read(out.join("contrast.npy")).unwrap(), contrast);
    // Settings 1 killed right after their fresh start on that folder: the files of
    // settings 2 are gone, so the rerun of settings 1 cannot keep them.
    unfinished::begin(
        out,
        &meta,
        &["contrast.npy", "shot_noise.npy", "labels.npy"],
    )
    .unwrap();
    assert!(!out.join("shot_noise.npy").exists() && !out.join("meta.json").exists());
    run(1).unwrap();
    assert_eq!(std::fs::read(out.join("shot_noise.npy")).unwrap(), first);
    // The same settings on other images of the same count start afresh too.
    let others = synthetic::generate(SyntheticConfig {
        train: 2,
        test: 5,
        seed: 5,
    });
    let job = cifar_c::Job {
        corruptions: &[Corruption::Contrast, Corruption::ShotNoise],
        severities: &[1, 4],
        seed: 1,
        workers: 1,
        frost: None,
    };
    let other_meta = cifar_c::generate(&others.test, out, &job, &|_| {}).unwrap();
    assert_ne!(other_meta.source, meta.source);
    assert_ne!(std::fs::read(out.join("shot_noise.npy")).unwrap(), first);
}

/// SHA-256 checksums (64 hex digits, any case) verify downloads as md5 ones do; the frost
/// textures are SHA-256-checked, a wrong file refused naming it.
#[test]
fn sha256_checksums_and_the_frost_textures() {
    use ews_data::download::{FROST_TEXTURES, fetch_frost, sha256_file};
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = b"not a frost texture ".repeat(500);
    let reference = dir.path().join("reference.bin");
    std::fs::write(&reference, &body).unwrap();
    let sha = sha256_file(&reference).unwrap();
    assert_eq!(sha.len(), 64);
    let (url, _) = serve(body.clone(), 0);
    let dest = dir.path().join("got.bin");
    download(&url, &sha.to_uppercase(), &dest, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    let base = url.trim_end_matches("file.tar.gz").to_string();
    let frost = dir.path().join("frost");
    let err = fetch_frost(&base, &frost, false).unwrap_err().to_string();
    assert!(
        err.contains("frost1.png")
            && err.contains("expected sha256")
            && err.contains(FROST_TEXTURES[0].1),
        "{err}"
    );
    assert!(!frost.join("frost1.png").exists());
    let err = download(&url, "abc", &dest, false).unwrap_err().to_string();
    assert!(err.contains("neither an md5"), "{err}");
}

/// The default decoder (the image crate's, zune-jpeg) is not libjpeg-turbo: its pixels stay
/// near Pillow's on every layout but are not equal (the `libjpeg-turbo` feature gives
/// Pillow's exactly: tests/libjpeg.rs).
#[test]
fn the_default_jpeg_decoder_stays_near_pillows_pixels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
    for name in ["yuv420", "yuv422", "yuv444", "progressive", "gray", "cmyk"] {
        let ours = folder::decode_with_image_crate(&dir.join(format!("{name}.jpg"))).unwrap();
        let pillow = image::open(dir.join(format!("{name}.pillow.png")))
            .unwrap()
            .into_rgb8()
            .into_raw();
        let diffs: Vec<u8> = ours
            .pixels
            .iter()
            .zip(&pillow)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        assert_eq!(diffs.len(), pillow.len(), "{name}: size");
        let max = diffs.iter().max().copied().unwrap_or(0);
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        let differ = diffs.iter().filter(|&&d| d > 0).count() as f64 / diffs.len() as f64;
        println!(
            "{name}: max {max}, mean {mean:.3}, {:.1}% of values differ",
            differ * 100.0
        );
        assert!(max <= 8 && mean < 0.5, "{name}: max {max}, mean {mean}");
    }
}
