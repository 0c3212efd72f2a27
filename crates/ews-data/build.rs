//! With the `libjpeg-turbo` feature: compiles `csrc/jpeg_window.c` against the system's
//! libjpeg-turbo (or the one under `EWS_LIBJPEG_DIR`, with `include/` and `lib/`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/jpeg_window.c");
    println!("cargo:rerun-if-env-changed=EWS_LIBJPEG_DIR");
    #[cfg(feature = "libjpeg-turbo")]
    libjpeg_turbo();
}

#[cfg(feature = "libjpeg-turbo")]
fn libjpeg_turbo() {
    let mut build = cc::Build::new();
    build.file("csrc/jpeg_window.c").opt_level(2).warnings(true);
    if let Ok(dir) = std::env::var("EWS_LIBJPEG_DIR") {
        let dir = std::path::Path::new(&dir);
        build.include(dir.join("include"));
        println!(
            "cargo:rustc-link-search=native={}",
            dir.join("lib").display()
        );
    }
    if let Err(e) = build.try_compile("ews_jpeg_window") {
        panic!(
            "the libjpeg-turbo feature needs libjpeg-turbo's headers and library \
             (Debian/Ubuntu: apt-get install libjpeg-turbo8-dev or libjpeg62-turbo-dev; \
             macOS: brew install jpeg-turbo, then EWS_LIBJPEG_DIR=$(brew --prefix jpeg-turbo)), \
             or set EWS_LIBJPEG_DIR to a folder with include/jpeglib.h and lib/: {e}"
        );
    }
    println!("cargo:rustc-link-lib=jpeg");
}
