;; Reads `hello.txt` from the first preopened directory that has it and writes it to stdout, then
;; tries to change the filesystem and reports each attempt as " denied" or " allowed":
;; create `new.txt` there, open `hello.txt` for writing with truncation, unlink `hello.txt`, and
;; create `new.txt` through any preopen at all (a runtime may preopen more than the configured
;; directories, e.g. `/`).
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0..8: iovec; 8: nread / nwritten; 12: opened fd; 16: prestat; 100, 120: paths;
  ;; 200, 210: reports; 1024..: file contents
  (memory (export "memory") 1)
  (data (i32.const 100) "hello.txt")
  (data (i32.const 120) "new.txt")
  (data (i32.const 200) " denied")
  (data (i32.const 210) " allowed")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $report (param $errno i32)
    (if (local.get $errno)
      (then (call $write (i32.const 200) (i32.const 7)))
      (else (call $write (i32.const 210) (i32.const 8)))))

  ;; path_open(dir, "new.txt", O_CREAT, FD_WRITE)
  (func $create (param $dir i32) (result i32)
    (call $path_open (local.get $dir) (i32.const 0) (i32.const 120) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)))

  ;; The first preopen where `hello.txt` opens for reading (its fd at 12), or -1.
  (func $find (result i32)
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $next
      (if (i32.eqz (call $prestat (local.get $fd) (i32.const 16)))
        (then
          (if (i32.eqz (call $path_open (local.get $fd) (i32.const 0) (i32.const 100) (i32.const 9)
                (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
            (then (return (local.get $fd))))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 16))))
    (i32.const -1))

  ;; 0 (success) if creating `new.txt` works through any preopen, else 1.
  (func $create_anywhere (result i32)
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $next
      (if (i32.eqz (call $prestat (local.get $fd) (i32.const 16)))
        (then
          (if (i32.eqz (call $create (local.get $fd)))
            (then (return (i32.const 0))))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 16))))
    (i32.const 1))

  (func (export "_start")
    (local $dir i32)
    (local.set $dir (call $find))
    (if (i32.lt_s (local.get $dir) (i32.const 0)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 1000))
    (if (call $fd_read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then unreachable))
    (call $write (i32.const 1024) (i32.load (i32.const 8)))
    (call $report (call $create (local.get $dir)))
    ;; path_open(dir, "hello.txt", O_TRUNC, FD_WRITE)
    (call $report (call $path_open (local.get $dir) (i32.const 0) (i32.const 100) (i32.const 9)
      (i32.const 8) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)))
    (call $report (call $unlink (local.get $dir) (i32.const 100) (i32.const 9)))
    (call $report (call $create_anywhere))))
