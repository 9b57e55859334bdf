//! Links `fiso` with packed relative relocations (`DT_RELR`) on glibc targets. A
//! position-independent binary of this size carries ~100k relative relocations; as `RELA`
//! entries (24 bytes each) they are 2.3 MiB of the shipped binary, packed they are a few KiB.
//! ASLR is unchanged. The loader needs glibc 2.36 or later (`GLIBC_ABI_DT_RELR`): an older one
//! refuses the binary at start with that name rather than misloading it. Set here rather than
//! in `.cargo/config.toml` so a caller's `RUSTFLAGS` (the bench's frame pointers) keep it.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
