;; A library (no `_start`): not a WASI command, refused at load.
(module (memory (export "memory") 1) (func (export "transform")))
