//! Interceptor modules for the e2e tests, compiled from WAT: the engine's test modules, the
//! link's, and modules that print a fixed answer.

use std::path::Path;

/// The engine's test module `name` (`dataplane/wasm/testdata/<name>.wat`).
pub fn engine_module(name: &str) -> Vec<u8> {
    wat_file(&format!("../dataplane/wasm/testdata/{name}.wat"))
}

/// The WAT file at `rel` (relative to the e2e crate), compiled.
pub fn wat_file(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A module that ignores its input and prints `out`.
pub fn fixed(out: &str) -> Vec<u8> {
    let escaped: String = out.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        out.len()
    ))
    .unwrap()
}
