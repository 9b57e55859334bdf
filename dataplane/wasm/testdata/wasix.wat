;; Imports a function WASI preview 1 does not have: refused at load.
(module
  (import "wasix_32v1" "sock_open" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
