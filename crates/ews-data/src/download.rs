//! Downloads with md5 or SHA-256 verification, resume and a progress bar.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cifar::Cifar;
use crate::{DataError, io_error};

/// A file to download: address, checksum and local name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Official address.
    pub url: &'static str,
    /// Expected md5 of the whole file, lowercase hex.
    pub md5: &'static str,
    /// File name in the data folder.
    pub file: &'static str,
}

/// The official CIFAR-10 binary archive.
pub const CIFAR10: Resource = Resource {
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
    file: "cifar-10-binary.tar.gz",
};

/// The official CIFAR-100 binary archive.
pub const CIFAR100: Resource = Resource {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
    file: "cifar-100-binary.tar.gz",
};

/// Reads `path` in 1 MiB blocks into `consume`.
fn read_blocks(path: &Path, mut consume: impl FnMut(&[u8])) -> Result<(), DataError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            return Ok(());
        }
        consume(&buf[..n]);
    }
}

/// The md5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String, DataError> {
    let mut ctx = md5::Context::new();
    read_blocks(path, |block| ctx.consume(block))?;
    Ok(format!("{:x}", ctx.finalize()))
}

/// The SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    read_blocks(path, |block| hasher.update(block))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// A checksum given as hex: 32 digits are an md5, 64 a SHA-256.
fn checksum_kind(hex: &str) -> Result<&'static str, DataError> {
    let kind = match hex.len() {
        32 => "md5",
        64 => "sha256",
        _ => "",
    };
    if kind.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DataError::Invalid(format!(
            "checksum `{hex}` is neither an md5 (32 hexadecimal digits) nor a SHA-256 (64)"
        )));
    }
    Ok(kind)
}

/// The checksum of `path` of the kind `kind` ("md5" or "sha256").
fn file_checksum(path: &Path, kind: &str) -> Result<String, DataError> {
    match kind {
        "md5" => md5_file(path),
        _ => sha256_file(path),
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// Seconds a download waits for the server's next bytes before giving up (resumable).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Downloads `url` to `dest` unless `dest` already has checksum `md5` (hex, any case: an
/// md5, or a SHA-256 when 64 digits long).
///
/// Bytes arrive in `dest.part`; an interrupted download resumes from there with an HTTP
/// range request (a server that ignores ranges restarts it). The finished file must match
/// `md5`, else it is removed and the error says so; only then is it renamed to `dest`. A
/// server that sends nothing for [`READ_TIMEOUT`] ends the download with an error.
pub fn download(url: &str, md5: &str, dest: &Path, show_progress: bool) -> Result<(), DataError> {
    download_with_timeout(url, md5, dest, show_progress, READ_TIMEOUT)
}

/// [`download`], giving up when the server sends nothing for `read_timeout`.
pub fn download_with_timeout(
    url: &str,
    md5: &str,
    dest: &Path,
    show_progress: bool,
    read_timeout: Duration,
) -> Result<(), DataError> {
    let md5 = md5.to_ascii_lowercase();
    let kind = checksum_kind(&md5)?;
    if dest.is_file() && file_checksum(dest, kind)? == md5 {
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let part = part_path(dest);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let fail = |message: String| DataError::Download {
        url: url.to_string(),
        message,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(read_timeout)
        .build();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => Some(r),
        // 416: the part file already holds the whole resource.
        Err(ureq::Error::Status(416, _)) if have > 0 => None,
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(response) = response {
        let resumed = response.status() == 206;
        let start = if resumed { have } else { 0 };
        let length: Option<u64> = response
            .header("Content-Length")
            .and_then(|v| v.parse().ok());
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .map_err(io_error(&part))?;
        let bar = if show_progress {
            let bar = ProgressBar::new(length.map_or(0, |l| l + start));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            bar.set_position(start);
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
                        "the server sent nothing for {} s",
                        read_timeout.as_secs_f64()
                    ),
                    _ => e.to_string(),
                };
                fail(format!(
                    "{why} after {received} bytes (run again to resume)"
                ))
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(io_error(&part))?;
            received += n as u64;
            bar.inc(n as u64);
        }
        file.sync_all().map_err(io_error(&part))?;
        bar.finish_and_clear();
        if let Some(length) = length
            && received < length
        {
            return Err(fail(format!(
                "connection closed after {received} of {length} bytes (run again to resume)"
            )));
        }
    }
    let got = file_checksum(&part, kind)?;
    if got != md5 {
        let _ = std::fs::remove_file(&part);
        return Err(fail(format!(
            "checksum mismatch: expected {kind} {md5}, got {got}; the damaged download was removed, run again"
        )));
    }
    std::fs::rename(&part, dest).map_err(io_error(dest))
}

/// Unpacks a `.tar.gz` archive of plain files and folders into `into`. An entry that
/// would land outside `into` (an absolute path or `..`) or that is a link (symbolic or
/// hard) is refused, naming the entry, before anything of it is written.
pub fn extract_tar_gz(archive: &Path, into: &Path) -> Result<(), DataError> {
    let bad = |message: String| DataError::BadFile {
        path: archive.display().to_string(),
        message,
    };
    let file = File::open(archive).map_err(io_error(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("cannot unpack: {e}")))?;
    std::fs::create_dir_all(into).map_err(io_error(into))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot unpack: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry's name is unreadable: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(bad(format!(
                "entry {} is a link; refused (a dataset archive holds plain files)",
                path.display()
            )));
        }
        let escapes = path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(bad(format!(
                "entry {} would land outside {}; refused",
                path.display(),
                into.display()
            )));
        }
        entry
            .unpack_in(into)
            .map_err(|e| bad(format!("cannot unpack {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The reference frost textures of hendrycks/robustness (`ImageNet-C/create_c/`,
/// Apache-2.0): file name and SHA-256.
pub const FROST_TEXTURES: [(&str, &str); 6] = [
    (
        "frost1.png",
        "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    ),
    (
        "frost2.png",
        "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    ),
    (
        "frost3.png",
        "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    ),
    (
        "frost4.jpg",
        "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    ),
    (
        "frost5.jpg",
        "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
    ),
    (
        "frost6.jpg",
        "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25",
    ),
];

/// Where [`FROST_TEXTURES`] are published.
pub const FROST_BASE_URL: &str =
    "https://raw.githubusercontent.com/hendrycks/robustness/master/ImageNet-C/create_c/";

/// Downloads the reference frost textures into `dir` (from `base_url`, normally
/// [`FROST_BASE_URL`]), each SHA-256-checked, skipping those already there.
pub fn fetch_frost(base_url: &str, dir: &Path, show_progress: bool) -> Result<(), DataError> {
    for (name, sha256) in FROST_TEXTURES {
        download(
            &format!("{base_url}{name}"),
            sha256,
            &dir.join(name),
            show_progress,
        )?;
    }
    Ok(())
}

/// Downloads and unpacks CIFAR-10 or CIFAR-100 into `data_dir`, skipping what is done.
pub fn fetch_cifar(
    kind: Cifar,
    data_dir: &Path,
    show_progress: bool,
) -> Result<PathBuf, DataError> {
    if let Ok(dir) = crate::cifar::locate(kind, data_dir) {
        return Ok(dir);
    }
    let resource = match kind {
        Cifar::Ten => CIFAR10,
        Cifar::Hundred => CIFAR100,
    };
    let archive = data_dir.join(resource.file);
    download(resource.url, resource.md5, &archive, show_progress)?;
    extract_tar_gz(&archive, data_dir)?;
    crate::cifar::locate(kind, data_dir)
}
