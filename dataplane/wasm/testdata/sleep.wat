;; Sleeps 60 s in the host (`poll_oneoff` on a relative monotonic-clock subscription): only a
;; host-side timer can stop it, epoch interruption cannot.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1 (monotonic) at 16,
    ;; timeout (ns) at 24, precision at 32, flags 0 (relative) at 40; event at 64; nevents at 128
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
