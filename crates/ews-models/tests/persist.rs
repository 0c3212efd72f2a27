//! The checkpoint container (`pack_sections`) and burn's record decoder on damaged bytes.

use std::path::Path;

use burn::backend::Flex;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, LinearRecord};
use ews_models::persist::{decode_record, pack_sections, record_bytes, unpack_sections};

type B = Flex;

fn packed() -> Vec<u8> {
    pack_sections(&[("state", b"{\"epochs\":3}"), ("model", &[1, 2, 3, 4, 5])])
}

#[test]
fn sections_round_trip() {
    let _rng = ews_models::rng_lock();
    let sections = unpack_sections(&packed(), Path::new("c.ews")).unwrap();
    assert_eq!(
        sections,
        vec![
            ("state".to_string(), b"{\"epochs\":3}".to_vec()),
            ("model".to_string(), vec![1, 2, 3, 4, 5]),
        ]
    );
}

#[test]
fn every_flipped_bit_and_every_cut_is_refused_naming_the_file() {
    let _rng = ews_models::rng_lock();
    let good = packed();
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let err = unpack_sections(&bad, Path::new("c.ews"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.ews"), "bit {bit}: {err}");
    }
    for len in 0..good.len() {
        let err = unpack_sections(&good[..len], Path::new("c.ews")).unwrap_err();
        assert!(err.to_string().contains("c.ews"), "{len} bytes: {err}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(unpack_sections(&longer, Path::new("c.ews")).is_err());
}

/// Checkpoints written before the checksum (`EWSPACK1`, no trailing CRC) still load.
#[test]
fn the_first_format_without_checksum_still_reads() {
    let _rng = ews_models::rng_lock();
    let good = packed();
    let mut old = b"EWSPACK1".to_vec();
    old.extend_from_slice(&good[8..good.len() - 4]);
    let sections = unpack_sections(&old, Path::new("c.ews")).unwrap();
    assert_eq!(sections.len(), 2);
    assert_eq!(sections[1].1, vec![1, 2, 3, 4, 5]);
}

/// burn's decoder panics ("Invalid id.") on a parameter id that is neither base32 nor a
/// UUID; it must come back as an error naming the file.
#[test]
fn a_record_with_a_bad_parameter_id_is_an_error() {
    let _rng = ews_models::rng_lock();
    let device = Default::default();
    let linear: Linear<B> = LinearConfig::new(3, 2).init(&device);
    // Parameters initialise lazily, and each clone of an uninitialised one draws anew.
    let weight = linear.weight.val().into_data();
    let mut bytes = record_bytes(&linear).unwrap();
    let id = linear.weight.id.serialize();
    let at = bytes
        .windows(id.len())
        .position(|w| w == id.as_bytes())
        .expect("the id is in the record");
    bytes[at] = b'!';
    let record: Result<LinearRecord<B>, _> =
        decode_record(bytes.clone(), Path::new("best_model.mpk"), "model", &device);
    let Err(err) = record else {
        panic!("the bad id was accepted")
    };
    let err = err.to_string();
    assert!(
        err.contains("best_model.mpk") && err.contains("Invalid id"),
        "{err}"
    );
    // The same bytes with the id restored load.
    bytes[at] = id.as_bytes()[0];
    let record: LinearRecord<B> =
        decode_record(bytes, Path::new("best_model.mpk"), "model", &device).unwrap();
    let loaded = LinearConfig::new(3, 2)
        .init::<B>(&device)
        .load_record(record);
    assert_eq!(loaded.weight.val().into_data(), weight);
}

/// A killed writer's `.NAME.tmp-PID` is removed once that process is gone; a live
/// writer's temporary and other files are kept.
#[test]
fn temporaries_of_killed_writers_are_removed() {
    let _rng = ews_models::rng_lock();
    use ews_models::persist::{remove_stale_temporaries, write_atomically};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_atomically(&d.join("a.ews"), b"whole").unwrap();
    assert_eq!(std::fs::read(d.join("a.ews")).unwrap(), b"whole");
    // A finished child process stands for a killed writer.
    let gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let mut gone = gone;
    gone.wait().unwrap();
    let live = format!(".c.json.tmp-{}", std::process::id());
    let dead = format!(".b.mpk.tmp-{gone_pid}");
    for name in [dead.as_str(), live.as_str(), ".lock", "d.tmp-1x", ".e.tmp"] {
        std::fs::write(d.join(name), b"half").unwrap();
    }
    assert_eq!(remove_stale_temporaries(d).unwrap(), 1);
    assert!(!d.join(&dead).exists());
    let mut left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec![
        live.clone(),
        ".e.tmp".into(),
        ".lock".into(),
        "a.ews".into(),
        "d.tmp-1x".into(),
    ];
    want.sort();
    assert_eq!(left, want);
}
