//! Arbitrary files fed to the flow directory's reload, as the watcher feeds it after a change:
//! whatever the files hold (not YAML, not UTF-8, hostile CEL, colliding flows), a reload
//! reports problems and never fails as a whole. A reload catches its own panics and reports
//! them as "the reload failed"; here that report is the finding.
//!
//! Input: up to four files separated by NUL bytes, written as `f0.yaml` ... `f3.yaml` into a
//! directory that one flow runtime (started once per process) reloads for every input.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use fiso_flow::topology::runtime::{FlowRuntime, Observability};

struct Harness {
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    flows: FlowRuntime,
}

fn harness() -> &'static Mutex<Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fiso-fuzz-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the flows");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_stack_size(fiso_config::cel_check::EVAL_STACK_SIZE)
            .enable_all()
            .build()
            .expect("a runtime");
        let flows = {
            let _entered = runtime.enter();
            FlowRuntime::start(&dir, &Observability::default()).expect("the flow runtime")
        };
        Mutex::new(Harness {
            dir,
            runtime,
            flows,
        })
    })
}

pub fn run(data: &[u8]) {
    // One directory and runtime per process: inputs replayed from several threads take turns.
    let harness = harness()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for entry in std::fs::read_dir(&harness.dir).expect("the flow directory") {
        let _ = std::fs::remove_file(entry.expect("an entry").path());
    }
    for (i, content) in data.split(|&b| b == 0).take(4).enumerate() {
        std::fs::write(harness.dir.join(format!("f{i}.yaml")), content).expect("a flow file");
    }
    let _entered = harness.runtime.enter();
    let report = harness.flows.reload();
    if let Some(failure) = report
        .problems
        .values()
        .find(|p| p.starts_with("the reload failed"))
    {
        panic!("{failure}");
    }
}
