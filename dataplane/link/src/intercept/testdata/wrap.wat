;; Writes {"payload":<stdin>}: the message it was given becomes the body, so a test can see
;; exactly what a module sees (headers included).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0..8: iovec {ptr, len}; 8: nread / nwritten; 16: the prefix; 32: the suffix;
  ;; 1024..: the buffer (up to the end of page 2)
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"payload\":")
  (data (i32.const 32) "}")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then unreachable)))
  (func (export "_start")
    (local $len i32)
    (local $n i32)
    (loop $read
      (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $len)))
      (i32.store (i32.const 4) (i32.sub (i32.const 130048) (local.get $len)))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then unreachable))
      (local.set $n (i32.load (i32.const 8)))
      (local.set $len (i32.add (local.get $len) (local.get $n)))
      (br_if $read (i32.ne (local.get $n) (i32.const 0))))
    (call $write (i32.const 16) (i32.const 11))
    (call $write (i32.const 1024) (local.get $len))
    (call $write (i32.const 32) (i32.const 1))))
