//! A real Kubernetes control plane: etcd + kube-apiserver v1.20.2 + kube-controller-manager
//! (garbage collection, default ServiceAccounts, node lifecycle). Built from Debian's source
//! package by `xtask/infra/local-k8s.sh` (cold ~9 min on 2 cores, cached in
//! `/var/cache/local-k8s`); per-run state (PKI, etcd data, logs, kubeconfigs, PID files) in
//! `target/infra/kubernetes`.
//!
//! Clients use `https://127.0.0.1:26443`. The API server also listens on the node's bridge
//! address, which it advertises as the `kubernetes` Service's endpoint, so pods of the
//! [`super::node`] reach it in-cluster (10.0.0.1:443); the PKI holds the node's certificates.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use serde_json::Value;

use super::node;
use super::process::{alive_pid, ensure_port_free, pid_alive, run_logged};
use super::{Component, Ctx};

const VERSION: &str = "1.20.2";
/// The script's build cache (its default); shared by every checkout on the machine.
const CACHE_ROOT: &str = "/var/cache/local-k8s";
/// Not the script's defaults (16443, 23790/23800), so a cluster started by hand with the shared
/// script does not collide with the one the tests use.
const ETCD_PORT: u16 = 22379;
const ETCD_PEER_PORT: u16 = 22380;
const APISERVER_PORT: u16 = 26443;
const PROCESSES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

pub struct Kubernetes;

impl Kubernetes {
    fn state_dir(ctx: &Ctx) -> PathBuf {
        ctx.dir.join("kubernetes")
    }

    fn kubeconfig(ctx: &Ctx) -> PathBuf {
        Self::state_dir(ctx).join("kubeconfig")
    }

    /// The CA, serving and client certificates.
    pub(super) fn pki_dir(ctx: &Ctx) -> PathBuf {
        Self::state_dir(ctx).join("pki")
    }

    /// The kubeconfig of a node part (`kubelet-client`, `kube-proxy`, `kube-scheduler`).
    pub(super) fn component_kubeconfig(ctx: &Ctx, component: &str) -> PathBuf {
        Self::state_dir(ctx).join(format!("{component}.kubeconfig"))
    }

    /// Where the script caches the binaries it builds.
    pub(super) fn cache_bin() -> PathBuf {
        PathBuf::from(format!("{CACHE_ROOT}/v{VERSION}/bin"))
    }

    /// `local-k8s.sh build` (with the node's binaries when `node`), one build at a time on the
    /// machine, whichever checkout asks.
    pub(super) fn build(ctx: &Ctx, node: bool, log: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(CACHE_ROOT).with_context(|| format!("creating {CACHE_ROOT}"))?;
        let lock = format!("{CACHE_ROOT}/.build.lock");
        let mut cmd = Self::script_cmd(ctx, &["flock", &lock], "build");
        if node {
            cmd.env("BUILD_NODE", "1");
        }
        run_logged("local-k8s.sh build", &mut cmd, log)
    }

    /// `GET path` as the admin, parsed; `None` when the API server does not answer 2xx.
    pub(super) fn api_get(ctx: &Ctx, path: &str) -> Option<Value> {
        let out = Self::curl(ctx, path).ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn curl(ctx: &Ctx, path: &str) -> std::io::Result<std::process::Output> {
        let pki = Self::pki_dir(ctx);
        Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("https://127.0.0.1:{APISERVER_PORT}{path}"))
            .output()
    }

    fn script() -> PathBuf {
        crate::root().join("xtask/infra/local-k8s.sh")
    }

    fn script_log(ctx: &Ctx) -> PathBuf {
        ctx.logs_dir().join("kubernetes.log")
    }

    fn binaries_cached() -> bool {
        ["kube-apiserver", "kube-controller-manager"]
            .iter()
            .all(|b| Self::cache_bin().join(b).is_file())
    }

    /// `bash local-k8s.sh <verb>`, optionally behind a wrapper command (`flock <lock>`).
    fn script_cmd(ctx: &Ctx, wrapper: &[&str], verb: &str) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("bash");
                cmd
            }
            None => Command::new("bash"),
        };
        cmd.arg(Self::script())
            .arg(verb)
            .env("K8S_DIR", Self::state_dir(ctx))
            .env("START_KCM", "1")
            .env("BUILD_KCM", "1")
            .env("ETCD_PORT", ETCD_PORT.to_string())
            .env("ETCD_PEER_PORT", ETCD_PEER_PORT.to_string())
            .env("APISERVER_PORT", APISERVER_PORT.to_string())
            .env("ADVERTISE_ADDRESS", node::GATEWAY.to_string())
            .env("NODE_NAME", node::NODE_NAME);
        cmd
    }

    /// `/readyz` answers 200 to the admin client certificate.
    fn ready(ctx: &Ctx) -> bool {
        Self::curl(ctx, "/readyz").is_ok_and(|o| o.status.success())
    }
}

impl Component for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if !Self::binaries_cached() {
            println!(
                "infra: building Kubernetes {VERSION} from Debian sources into {CACHE_ROOT} \
                 (once per machine; ~9 min on 2 cores; log: {})",
                Self::script_log(ctx).display()
            );
        }
        Self::build(ctx, false, &Self::script_log(ctx))
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        let dir = Self::state_dir(ctx);
        PROCESSES
            .iter()
            .all(|p| alive_pid(&dir.join(format!("{p}.pid"))).is_some())
            && Self::ready(ctx)
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        // Leftovers of a crashed run (some processes dead) would hold ports.
        self.stop(ctx)?;
        // Logs of an earlier run would be mistaken for this one's when start fails.
        for log in self.logs(ctx) {
            match std::fs::remove_file(&log) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", log.display()))
                }
                _ => {}
            }
        }
        for port in [ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT] {
            ensure_port_free(port, "the Kubernetes control plane")?;
        }
        run_logged(
            "local-k8s.sh start",
            &mut Self::script_cmd(ctx, &[], "start"),
            &Self::script_log(ctx),
        )?;
        if !self.is_up(ctx) {
            bail!("the control plane started but is not ready");
        }
        Ok(())
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        let dir = Self::state_dir(ctx);
        if !PROCESSES
            .iter()
            .any(|p| dir.join(format!("{p}.pid")).exists())
        {
            return Ok(());
        }
        let running: Vec<(&str, u32)> = PROCESSES
            .iter()
            .filter_map(|p| Some((*p, alive_pid(&dir.join(format!("{p}.pid")))?)))
            .collect();
        run_logged(
            "local-k8s.sh stop",
            &mut Self::script_cmd(ctx, &[], "stop"),
            &Self::script_log(ctx),
        )?;
        // The script gives up after 10 s and forgets the PID; check the processes themselves.
        if let Some((p, pid)) = running.iter().find(|(_, pid)| pid_alive(*pid)) {
            bail!("{p} (pid {pid}) still runs after local-k8s.sh stop");
        }
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let kubeconfig = Self::kubeconfig(ctx).display().to_string();
        vec![
            ("KUBECONFIG", kubeconfig.clone()),
            ("FISO_E2E_KUBECONFIG", kubeconfig),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        let logs = Self::state_dir(ctx).join("logs");
        let mut files = vec![Self::script_log(ctx)];
        files.extend(PROCESSES.iter().map(|p| logs.join(format!("{p}.log"))));
        files
    }
}
