//! What `cargo xtask infra up` provides: server addresses and tool paths, from the environment
//! (`cargo xtask ci` passes them to `cargo test`) or else from `target/infra/env` (so a plain
//! `cargo test -p fiso-e2e` works once `cargo xtask infra up` has run). A missing variable fails
//! the test with instructions; tests never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kubeconfig of the test cluster (etcd + kube-apiserver + kube-controller-manager).
pub const KUBECONFIG_VAR: &str = "FISO_E2E_KUBECONFIG";
/// The `helm` binary (v4).
pub const HELM_VAR: &str = "FISO_E2E_HELM";
/// The `kubectl` binary.
pub const KUBECTL_VAR: &str = "FISO_E2E_KUBECTL";
/// The name of the test cluster's node (kubelet + containerd on this machine).
pub const NODE_VAR: &str = "FISO_E2E_NODE";
/// A busybox image on the node (`ENTRYPOINT ["/bin/busybox"]`: `/bin/busybox <applet> ...`).
pub const BUSYBOX_IMAGE_VAR: &str = "FISO_E2E_BUSYBOX_IMAGE";
/// The node's containerd socket (`ctr --address ... -n k8s.io`).
pub const CONTAINERD_ADDRESS_VAR: &str = "FISO_E2E_CONTAINERD_ADDRESS";

/// The `prometheus` server binary (2.42, Debian's).
pub const PROMETHEUS_VAR: &str = "FISO_E2E_PROMETHEUS";
/// The `promtool` binary that comes with it.
pub const PROMTOOL_VAR: &str = "FISO_E2E_PROMTOOL";

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
}

/// The env file `cargo xtask infra up` writes.
pub fn env_file() -> PathBuf {
    workspace_root().join("target/infra/env")
}

/// The value of an infra variable; panics with how to provide it.
pub fn var(name: &str) -> String {
    if let Some(v) = std::env::var_os(name).filter(|v| !v.is_empty()) {
        return v.to_string_lossy().into_owned();
    }
    let file = env_file();
    let from_file = std::fs::read_to_string(&file).ok().and_then(|text| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    });
    from_file.unwrap_or_else(|| {
        panic!(
            "{name} is not set and {} does not define it: the test servers are not running.\n\
             Start them with `cargo xtask infra up` and re-run the tests, or run the whole \
             suite with `cargo xtask ci` (which starts and stops them).",
            file.display()
        )
    })
}

/// A path from an infra variable that must exist.
fn existing_path(name: &str) -> PathBuf {
    let path = PathBuf::from(var(name));
    assert!(
        path.exists(),
        "{name}={} does not exist; run `cargo xtask infra up`",
        path.display()
    );
    path
}

/// `helm` with the test cluster's kubeconfig (when one is up) and no user config.
pub fn helm() -> Command {
    let mut cmd = Command::new(existing_path(HELM_VAR));
    // Keep helm's caches and config away from the user's home.
    let home = workspace_root().join("target/infra/helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// `kubectl` talking to the test cluster.
pub fn kubectl() -> Command {
    let mut cmd = Command::new(existing_path(KUBECTL_VAR));
    cmd.env("KUBECONFIG", kubeconfig_path());
    cmd
}

/// The `prometheus` binary.
pub fn prometheus_bin() -> PathBuf {
    existing_path(PROMETHEUS_VAR)
}

/// `promtool`.
pub fn promtool() -> Command {
    Command::new(existing_path(PROMTOOL_VAR))
}

/// The kubeconfig of the test cluster.
pub fn kubeconfig_path() -> PathBuf {
    existing_path(KUBECONFIG_VAR)
}

/// The kube-apiserver log of the test cluster: `FISO_E2E_APISERVER_LOG`, else where
/// `local-k8s.sh` (and so `cargo xtask infra up`) writes it, `logs/kube-apiserver.log` beside the
/// kubeconfig. Panics when it does not exist.
pub fn apiserver_log_path() -> PathBuf {
    let path = std::env::var_os("FISO_E2E_APISERVER_LOG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            kubeconfig_path()
                .parent()
                .expect("the kubeconfig is in a directory")
                .join("logs/kube-apiserver.log")
        });
    assert!(
        path.exists(),
        "the API server log {} does not exist; set FISO_E2E_APISERVER_LOG",
        path.display()
    );
    path
}

/// The Helm chart under test.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/fiso")
}

/// Runs `cmd` with `stdin` as its standard input; returns stdout, panics with the whole output
/// when it fails.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // Written from a thread: a large input must not deadlock against a full stdout pipe.
        std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
