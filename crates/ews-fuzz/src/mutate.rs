//! Mutations of valid files: the byte-level changes that corrupted disks, truncated
//! downloads and hostile headers produce (flipped bits, boundary integers in binary length
//! fields, cut or extended files, moved chunks) plus boundary numbers in text formats.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Integers that break length and count arithmetic when they land in a binary header.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 40,
    1_000_000_000_000,
    u64::MAX,
];

/// Numbers that break parsers and shape arithmetic when they replace one in a text format.
const TEXT_NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1e308",
    "-0.0",
    "nan",
    "inf",
    "4294967296",
    "1000000000000",
    "18446744073709551615",
    "18446744073709551616",
    "999999999999999999999999",
    "3.4e39",
];

/// A seeded source of mutated copies of valid inputs.
pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    /// A mutator whose sequence of mutations is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks one of `count` items (a seed file, say).
    pub fn pick(&mut self, count: usize) -> usize {
        self.rng.random_range(0..count)
    }

    /// A copy of `valid` with one to four mutations.
    pub fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut data = valid.to_vec();
        for _ in 0..self.rng.random_range(1..=4) {
            self.mutate_once(&mut data);
        }
        data
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>) {
        if data.is_empty() {
            data.push(self.rng.random());
            return;
        }
        let at = self.rng.random_range(0..data.len());
        match self.rng.random_range(0..9) {
            0 => data[at] ^= 1 << self.rng.random_range(0..8),
            1 => data[at] = self.interesting() as u8,
            2 => {
                let value = self.interesting() as u32;
                overwrite(data, at, &value.to_le_bytes());
            }
            3 => {
                let value = self.interesting();
                overwrite(data, at, &value.to_le_bytes());
            }
            4 => data.truncate(at),
            5 => {
                let mut tail = vec![0u8; self.rng.random_range(1..=64)];
                self.rng.fill_bytes(&mut tail);
                data.extend_from_slice(&tail);
            }
            6 => {
                let end = (at + self.chunk_len()).min(data.len());
                data.drain(at..end);
            }
            7 => {
                let end = (at + self.chunk_len()).min(data.len());
                let chunk = data[at..end].to_vec();
                let to = self.rng.random_range(0..=data.len());
                data.splice(to..to, chunk);
            }
            _ => self.replace_text_number(data),
        }
    }

    fn interesting(&mut self) -> u64 {
        INTERESTING[self.rng.random_range(0..INTERESTING.len())]
    }

    fn chunk_len(&mut self) -> usize {
        1 << self.rng.random_range(0..10)
    }

    /// Replaces one run of ASCII digits with a boundary number (or flips a bit where the
    /// input holds no digits).
    fn replace_text_number(&mut self, data: &mut Vec<u8>) {
        let runs = digit_runs(data);
        if runs.is_empty() {
            let at = self.rng.random_range(0..data.len());
            data[at] ^= 1;
            return;
        }
        let (start, end) = runs[self.rng.random_range(0..runs.len())];
        let number = TEXT_NUMBERS[self.rng.random_range(0..TEXT_NUMBERS.len())];
        data.splice(start..end, number.bytes());
    }
}

/// Writes `bytes` over `data` from `at`, as far as `data` reaches.
fn overwrite(data: &mut [u8], at: usize, bytes: &[u8]) {
    let end = (at + bytes.len()).min(data.len());
    data[at..end].copy_from_slice(&bytes[..end - at]);
}

/// The byte ranges of the runs of ASCII digits in `data`.
fn digit_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in data.iter().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, data.len()));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_change_the_input() {
        let valid: Vec<u8> = (0..200u8).collect();
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7);
            (0..50).map(|_| m.mutate(&valid)).collect()
        };
        let mut m = Mutator::new(7);
        let b: Vec<Vec<u8>> = (0..50).map(|_| m.mutate(&valid)).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|x| **x != valid).count() >= 45);
        assert!(a.iter().any(|x| x.len() < valid.len()));
        assert!(a.iter().any(|x| x.len() > valid.len()));
    }

    #[test]
    fn text_numbers_replace_digit_runs() {
        assert_eq!(digit_runs(b"(3, 32, 32)"), vec![(1, 2), (4, 6), (8, 10)]);
        let mut m = Mutator::new(1);
        let mut data = b"shape = (12,)".to_vec();
        m.replace_text_number(&mut data);
        let text = String::from_utf8(data).unwrap();
        assert_ne!(text, "shape = (12,)");
        assert!(text.starts_with("shape = ("), "{text}");
    }
}
