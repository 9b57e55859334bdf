;; Spins forever: stopped by the timeout (epoch interruption) or the fuel budget.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $spin (br $spin))))
