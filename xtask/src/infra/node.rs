//! A Kubernetes node on this machine, joined to the [`super::kubernetes`] control plane:
//! containerd 1.6 (CRI v1alpha2) + runc, a CNI bridge with host-local IPAM, kubelet,
//! kube-proxy (iptables mode) and kube-scheduler v1.20.2, so pods run from images built here.
//!
//! * Packages: Debian `containerd`, `runc`, `containernetworking-plugins`, `iptables`,
//!   `conntrack`, `busybox-static` (installed when missing); kubelet, kube-proxy and
//!   kube-scheduler are built by `local-k8s.sh build` from the same source package as the API
//!   server, cached in `/var/cache/local-k8s`.
//! * Images: no registry is reachable, so the sandbox image `fiso.local/pause:3.2` (a static C
//!   program, `xtask/infra/pause.c`) and `fiso.local/busybox:1.35` (Debian's static busybox,
//!   `ENTRYPOINT ["/bin/busybox"]`, for tests) are written here as OCI archives and imported at
//!   every start; [`import_image`] imports others (`cargo xtask image`).
//! * Network: the bridge `fiso0` is the gateway of the pod subnet 10.244.0.0/24 and its address
//!   [`GATEWAY`] is the node's InternalIP (where the API server reaches the kubelet) and the API
//!   server's advertised address (where the `kubernetes` Service sends pods). Pods reach the host
//!   and the host reaches pod IPs; ClusterIP Services work from both through kube-proxy.
//! * State: everything the node writes is under [`RUN_DIR`] (short, so unix socket paths stay
//!   under 108 bytes from any checkout), removed by `down`; configs and PID files under
//!   `target/infra/node`, logs in `target/infra/logs/node-*.log` (pod logs: `/var/log/pods`, where
//!   kubelet 1.20 always writes them).
//! * `down` stops everything by PID and removes what it left: containers (runc), shims and their
//!   sockets, the containers' cgroups, the pods' network namespaces, the bridge, the `KUBE-*`
//!   iptables chains of kube-proxy and the kubelet, mounts and state; it puts back the kernel
//!   settings the node changed (forwarding, and the kubelet's `kernel.panic` & co). `up` does
//!   the same first, so it recovers from a crash.
//!
//! Measured on this machine (2 cores). Cold (packages missing, binaries not built): apt ~9 s;
//! building kubelet, kube-proxy and kube-scheduler ~75 s on the Go cache the API server's build
//! left (source download and openapi-gen ~20 s of it; ~40 s when their own objects are cached);
//! then the node is Ready ~17 s after start (its first registration with a fresh control
//! plane). Warm (`down` then `up node`, the API server still knowing the node): 6–11 s (until
//! the new kubelet's first heartbeat).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::kubernetes::Kubernetes;
use super::process::{
    alive_pid, ensure_port_free, output, pid_alive, run_logged, spawn_server, stop_server,
};
use super::{Component, Ctx};
use crate::image::oci;

/// The node's name (the kubelet's certificate is issued for it).
pub const NODE_NAME: &str = "fiso-node";
/// The bridge's address: gateway of the pod subnet, the node's InternalIP and the API server's
/// advertised address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Pods' addresses: clear of the service CIDR (10.0.0.0/24) and of usual host networks.
const POD_SUBNET: &str = "10.244.0.0/24";
const BRIDGE: &str = "fiso0";
/// All runtime state of the node (containerd root and state, kubelet root, CNI state, runc).
const RUN_DIR: &str = "/run/fiso-node";
const CONTAINERD_SOCKET: &str = "/run/fiso-node/containerd.sock";
/// Where containerd's CRI creates pod network namespaces (fixed in containerd 1.6).
const NETNS_DIR: &str = "/run/netns";
/// Where containerd 1.6 puts its shims' sockets, whatever its own state dir (fixed).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// The cgroup containerd puts containers in when the kubelet names no parent (no QoS cgroups).
const CONTAINERS_CGROUP: &str = "k8s.io";
/// Where kubelet 1.20 writes container logs, and its device-plugin socket (fixed).
const KUBELET_FIXED_DIRS: [&str; 3] = [
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
];
/// Where the CNI library caches each attachment's result (fixed in containerd 1.6).
const CNI_CACHE_DIR: &str = "/var/lib/cni/results";
const PAUSE_IMAGE: &str = "fiso.local/pause:3.2";
/// A busybox image for tests: `command: [/bin/busybox, httpd, ...]`, `exec -- /bin/busybox sh`.
pub const BUSYBOX_IMAGE: &str = "fiso.local/busybox:1.35";
const APT_PACKAGES: [&str; 6] = [
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "busybox-static",
];
const BINARIES: [&str; 3] = ["kubelet", "kube-proxy", "kube-scheduler"];
/// In start order (`down` stops them in reverse).
const PROCESSES: [&str; 4] = ["containerd", "kubelet", "kube-proxy", "kube-scheduler"];
/// Fixed ports on 127.0.0.1: the kubelet's healthz, kube-proxy's metrics and healthz (the
/// kubelet's API, 10250, listens on the bridge address only).
const LOCAL_PORTS: [u16; 3] = [10248, 10249, 10256];
/// Kernel settings the node changes: forwarding and bridge netfilter for pod traffic (set at
/// start), and what the kubelet sets on its own start (`protectKernelDefaults: false`). Their
/// values before the first start are saved and put back by `down`.
const SYSCTLS: [&str; 5] = [
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];
/// How long the node may take to register and turn Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Node;

/// The server files (PID file, log) of one node process: `node-<process>`.
fn files(ctx: &Ctx, process: &str) -> super::ServerFiles {
    let name: &'static str = match process {
        "containerd" => "node-containerd",
        "kubelet" => "node-kubelet",
        "kube-proxy" => "node-kube-proxy",
        "kube-scheduler" => "node-kube-scheduler",
        _ => unreachable!("not a node process: {process}"),
    };
    ctx.server(name)
}

impl Node {
    fn state_dir(ctx: &Ctx) -> PathBuf {
        ctx.dir.join("node")
    }

    fn install_log(ctx: &Ctx) -> PathBuf {
        ctx.logs_dir().join("node-install.log")
    }

    /// Commands run around the servers (imports, cleanup), appended to one log.
    fn ops_log(ctx: &Ctx) -> PathBuf {
        ctx.logs_dir().join("node.log")
    }

    fn binary(name: &str) -> PathBuf {
        Kubernetes::cache_bin().join(name)
    }

    fn pause_binary(ctx: &Ctx) -> PathBuf {
        Self::state_dir(ctx).join("pause")
    }

    fn image_archive(ctx: &Ctx, name: &str) -> PathBuf {
        Self::state_dir(ctx).join(format!("{name}.tar"))
    }

    /// The snapshotter chosen at start (recorded for [`import_image`]).
    fn snapshotter_file() -> PathBuf {
        Path::new(RUN_DIR).join("snapshotter")
    }

    fn install_packages(ctx: &Ctx) -> Result<()> {
        let missing: Vec<&str> = APT_PACKAGES
            .iter()
            .copied()
            .filter(|p| !deb_installed(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        println!("infra: apt-get install {}", missing.join(" "));
        let log = Self::install_log(ctx);
        run_logged(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
            &log,
        )?;
        run_logged(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &log,
        )
    }

    fn build_pause(ctx: &Ctx) -> Result<()> {
        let out = Self::pause_binary(ctx);
        if out.is_file() {
            return Ok(());
        }
        let tmp = out.with_extension("tmp");
        run_logged(
            "gcc -static pause.c",
            Command::new("gcc")
                .args(["-static", "-O2", "-s", "-Wall", "-o"])
                .arg(&tmp)
                .arg(crate::root().join("xtask/infra/pause.c")),
            &Self::install_log(ctx),
        )?;
        std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))
    }

    /// The OCI archives of the pause and busybox images (cheap: rewritten at every install).
    fn write_images(ctx: &Ctx) -> Result<()> {
        let pause = oci::Image {
            reference: PAUSE_IMAGE.to_owned(),
            config: oci::Config {
                entrypoint: vec!["/pause".to_owned()],
                user: Some("65535:65535".to_owned()),
                ..oci::Config::default()
            },
            files: vec![oci::File::copy("/pause", Self::pause_binary(ctx), 0o755)],
        };
        pause.write_archive(&Self::image_archive(ctx, "pause"))?;
        let busybox = oci::Image {
            reference: BUSYBOX_IMAGE.to_owned(),
            config: oci::Config {
                entrypoint: vec!["/bin/busybox".to_owned()],
                cmd: vec!["sh".to_owned()],
                ..oci::Config::default()
            },
            files: vec![
                oci::File::copy("/bin/busybox", "/bin/busybox", 0o755),
                oci::File::dir("/tmp", 0o1777),
            ],
        };
        busybox.write_archive(&Self::image_archive(ctx, "busybox"))
    }

    /// overlayfs when the filesystem under [`RUN_DIR`] can carry it, else `native` (copies).
    fn pick_snapshotter() -> Result<&'static str> {
        let probe = Path::new(RUN_DIR).join("overlay-probe");
        let dirs = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
        for dir in &dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let [lower, upper, work, merged] = &dirs;
        let mounted = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(merged)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let _ = Command::new("umount").arg(merged).status();
        }
        std::fs::remove_dir_all(&probe).with_context(|| format!("removing {}", probe.display()))?;
        Ok(if mounted { "overlayfs" } else { "native" })
    }

    fn containerd_config(snapshotter: &str) -> String {
        format!(
            r#"version = 2
root = "{RUN_DIR}/containerd/root"
state = "{RUN_DIR}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{RUN_DIR}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This sandbox cannot lower oom_score_adj; without this every sandbox fails to start.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # Ours, so `down` can find and remove every container.
        Root = "{RUN_DIR}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{RUN_DIR}/cni/net.d"
    max_conf_num = 1
"#
        )
    }

    /// The pod network: pods on the bridge, addresses from host-local IPAM; no masquerading
    /// (pods only talk to the host and each other; no registry or internet is reachable).
    fn cni_config() -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "fiso",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_SUBNET, "gateway": GATEWAY.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": format!("{RUN_DIR}/cni/ipam"),
                },
            }],
        })
        .to_string()
    }

    fn kubelet_config(ctx: &Ctx) -> String {
        let pki = Kubernetes::pki_dir(ctx);
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{GATEWAY}"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: "{cert}"
tlsPrivateKeyFile: "{key}"
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization:
  mode: Webhook
# This sandbox: cgroup v1 without systemd, no QoS hierarchy, no reservations; swap tolerated.
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
# Mounted ConfigMap and Secret updates reach pods within a few seconds (tests measure it).
syncFrequency: 5s
# A restarted kubelet's first heartbeat, which `infra up` waits for, comes sooner.
nodeStatusUpdateFrequency: 4s
# A shared, half-full disk must neither evict pods nor garbage-collect the imported images
# (no registry to pull them again).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
volumePluginDir: "{RUN_DIR}/kubelet-plugins"
"#,
            cert = pki.join("kubelet.crt").display(),
            key = pki.join("kubelet.key").display(),
            ca = pki.join("ca.crt").display(),
        )
    }

    fn kube_proxy_config(ctx: &Ctx) -> String {
        format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "{kubeconfig}"
hostnameOverride: {NODE_NAME}
bindAddress: "{GATEWAY}"
clusterCIDR: {POD_SUBNET}
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
            kubeconfig = Kubernetes::component_kubeconfig(ctx, "kube-proxy").display(),
        )
    }

    /// The bridge with the gateway address, before the kubelet (its node IP) and the first pod.
    fn create_bridge() -> Result<()> {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])
    }

    fn start_containerd(ctx: &Ctx) -> Result<()> {
        let snapshotter = Self::pick_snapshotter()?;
        std::fs::write(Self::snapshotter_file(), snapshotter)?;
        let config = Self::state_dir(ctx).join("containerd.toml");
        std::fs::write(&config, Self::containerd_config(snapshotter))?;
        let cni = Path::new(RUN_DIR).join("cni/net.d");
        std::fs::create_dir_all(&cni)?;
        std::fs::write(cni.join("10-fiso.conflist"), Self::cni_config())?;
        let f = files(ctx, "containerd");
        let pid = spawn_server(
            "containerd",
            Command::new("containerd").arg("--config").arg(&config),
            &f.log(),
            &f.pid_file(),
        )?;
        wait_until("containerd", Duration::from_secs(30), &[pid], || {
            ctr(&["version"]).is_ok()
        })
        .with_context(|| format!("log: {}", f.log().display()))?;
        for image in ["pause", "busybox"] {
            import_image(ctx, &Self::image_archive(ctx, image))?;
        }
        Ok(())
    }

    fn start_kubelet(ctx: &Ctx) -> Result<u32> {
        let config = Self::state_dir(ctx).join("kubelet.yaml");
        std::fs::write(&config, Self::kubelet_config(ctx))?;
        let endpoint = format!("unix://{CONTAINERD_SOCKET}");
        let f = files(ctx, "kubelet");
        spawn_server(
            "kubelet",
            Command::new(Self::binary("kubelet"))
                .arg(format!("--config={}", config.display()))
                .arg(format!(
                    "--kubeconfig={}",
                    Kubernetes::component_kubeconfig(ctx, "kubelet-client").display()
                ))
                .args(["--container-runtime=remote"])
                .arg(format!("--container-runtime-endpoint={endpoint}"))
                .arg(format!("--image-service-endpoint={endpoint}"))
                .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
                .arg(format!("--hostname-override={NODE_NAME}"))
                .arg(format!("--node-ip={GATEWAY}"))
                .arg(format!("--root-dir={RUN_DIR}/kubelet"))
                .arg(format!("--cert-dir={RUN_DIR}/kubelet/pki"))
                .arg("--v=1"),
            &f.log(),
            &f.pid_file(),
        )
    }

    fn start_kube_proxy(ctx: &Ctx) -> Result<u32> {
        let config = Self::state_dir(ctx).join("kube-proxy.yaml");
        std::fs::write(&config, Self::kube_proxy_config(ctx))?;
        let f = files(ctx, "kube-proxy");
        spawn_server(
            "kube-proxy",
            Command::new(Self::binary("kube-proxy"))
                .arg(format!("--config={}", config.display()))
                .arg("--v=1"),
            &f.log(),
            &f.pid_file(),
        )
    }

    fn start_scheduler(ctx: &Ctx) -> Result<u32> {
        let f = files(ctx, "kube-scheduler");
        spawn_server(
            "kube-scheduler",
            Command::new(Self::binary("kube-scheduler"))
                .arg(format!(
                    "--kubeconfig={}",
                    Kubernetes::component_kubeconfig(ctx, "kube-scheduler").display()
                ))
                // One scheduler; no insecure or secure serving (nothing scrapes it).
                .args([
                    "--leader-elect=false",
                    "--port=0",
                    "--secure-port=0",
                    "--v=1",
                ]),
            &f.log(),
            &f.pid_file(),
        )
    }

    /// The node object's Ready condition, if the node is registered.
    fn ready_condition(ctx: &Ctx) -> Option<Value> {
        let node = Kubernetes::api_get(ctx, &format!("/api/v1/nodes/{NODE_NAME}"))?;
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
    }

    /// The node is Ready, reported by a kubelet after `stale_heartbeat` (the one before this
    /// start: a node object outlives its kubelet), and the not-ready taint is gone (pods can be
    /// scheduled).
    fn node_ready(ctx: &Ctx, stale_heartbeat: Option<&Value>) -> bool {
        let Some(node) = Kubernetes::api_get(ctx, &format!("/api/v1/nodes/{NODE_NAME}")) else {
            return false;
        };
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && stale_heartbeat.is_none_or(|old| c["lastHeartbeatTime"] != *old)
            });
        let tainted = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready");
        ready && !tainted
    }

    /// Removes everything a node (running, crashed or half-started) leaves on the machine.
    /// The servers are stopped before this.
    fn clean_up(ctx: &Ctx) -> Result<()> {
        let log = Self::ops_log(ctx);
        // Containers (their processes, cgroups and rootfs mounts), then the shims that ran them.
        let runc_root = Path::new(RUN_DIR).join("runc/k8s.io");
        if runc_root.is_dir() {
            let list = output(
                "runc list",
                Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["list", "-q"]),
            )?;
            for id in list.lines().filter(|l| !l.is_empty()) {
                run_logged(
                    "runc delete",
                    Command::new("runc")
                        .arg("--root")
                        .arg(&runc_root)
                        .args(["delete", "--force", id]),
                    &log,
                )?;
            }
        }
        let shims = shim_pids();
        for pid in &shims {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // A dying shim still holds its socket open (also for a while as a zombie: its threads
        // exit after its main thread).
        let deadline = Instant::now() + Duration::from_secs(5);
        while shims.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        remove_stale_sockets(Path::new(SHIM_SOCKET_DIR), deadline)?;
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_cgroup(&hierarchy.path().join(CONTAINERS_CGROUP))?;
        }
        // The pods' network namespaces (each holds the other end of a veth on the bridge).
        if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("cni-") && netns_is_ours(&name) {
                    ip(&["netns", "delete", &name])?;
                }
            }
        }
        // Only if empty: `ip netns` users other than containerd may keep theirs there.
        remove_if_empty(Some(Path::new(NETNS_DIR)));
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            ip(&["link", "delete", BRIDGE])?;
        }
        Self::remove_kube_chains(ctx)?;
        // Mounts under the state dir (volumes, rootfs, shm), deepest first, then the dir.
        let mut mounts = mounts_under(RUN_DIR);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            run_logged(
                "umount",
                Command::new("umount").args(["--lazy", &mount]),
                &log,
            )?;
        }
        remove_dir_all(Path::new(RUN_DIR))?;
        for dir in KUBELET_FIXED_DIRS {
            remove_dir_all(Path::new(dir))?;
        }
        remove_if_empty(Some(Path::new("/var/lib/kubelet")));
        // Our network's attachments (`fiso-<id>-eth0`) and their loopbacks.
        for entry in std::fs::read_dir(CNI_CACHE_DIR)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("fiso-") || name.starts_with("cni-loopback-") {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        remove_if_empty(Some(Path::new(CNI_CACHE_DIR)));
        remove_if_empty(Path::new(CNI_CACHE_DIR).parent());
        Self::restore_sysctls(ctx)
    }
}

impl Node {
    /// `key=value` lines of [`SYSCTLS`] as they were before the node changed them.
    fn saved_sysctls(ctx: &Ctx) -> PathBuf {
        Self::state_dir(ctx).join("sysctl.saved")
    }

    /// Saves [`SYSCTLS`] unless already saved (a start after a crash finds them changed).
    fn save_sysctls(ctx: &Ctx) -> Result<()> {
        let file = Self::saved_sysctls(ctx);
        if file.exists() {
            return Ok(());
        }
        let mut saved = String::new();
        for key in SYSCTLS {
            let path = Path::new("/proc/sys").join(key);
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            saved.push_str(&format!("{key}={}\n", value.trim()));
        }
        std::fs::write(&file, saved).with_context(|| format!("writing {}", file.display()))
    }

    fn restore_sysctls(ctx: &Ctx) -> Result<()> {
        let file = Self::saved_sysctls(ctx);
        let Ok(saved) = std::fs::read_to_string(&file) else {
            return Ok(());
        };
        for (key, value) in saved.lines().filter_map(|l| l.split_once('=')) {
            let path = Path::new("/proc/sys").join(key);
            std::fs::write(&path, value)
                .with_context(|| format!("restoring {}", path.display()))?;
        }
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))
    }

    /// Removes the `KUBE-*` chains and every rule using them (kube-proxy's Services, the
    /// kubelet's marks and firewall; what `kube-proxy --cleanup` does for its own, without
    /// needing `ipset`), table by table with `iptables-restore`, keeping every other rule.
    fn remove_kube_chains(ctx: &Ctx) -> Result<()> {
        for (family, required) in [("iptables", true), ("ip6tables", false)] {
            for table in ["filter", "nat", "mangle"] {
                let save = format!("{family}-save");
                let rules = match output(&save, Command::new(&save).args(["-t", table])) {
                    Ok(rules) => rules,
                    // Without iptables the node never ran here (installing it installs
                    // iptables): there is no chain of its to remove.
                    Err(e) if is_not_installed(&e) => continue,
                    Err(e) if required => return Err(e),
                    Err(_) => continue,
                };
                let kept: Vec<&str> = rules.lines().filter(|l| !l.contains("KUBE-")).collect();
                if kept.len() == rules.lines().count() {
                    continue;
                }
                let file = Self::state_dir(ctx).join(format!("{family}-{table}.rules"));
                std::fs::write(&file, kept.join("\n") + "\n")?;
                run_logged(
                    &format!("{family}-restore ({table} without KUBE-*)"),
                    Command::new(format!("{family}-restore")).arg(&file),
                    &Self::ops_log(ctx),
                )?;
                std::fs::remove_file(&file)?;
            }
        }
        Ok(())
    }
}

/// Whether `e` says a program could not be started because it is not there.
fn is_not_installed(e: &anyhow::Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

impl Component for Node {
    fn name(&self) -> &'static str {
        "node"
    }

    fn requires(&self) -> &'static [&'static str] {
        &["kubernetes"]
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        std::fs::create_dir_all(Self::state_dir(ctx))?;
        Self::install_packages(ctx).context("installing the node's Debian packages")?;
        if !BINARIES.iter().all(|b| Self::binary(b).is_file()) {
            println!(
                "infra: building {} from Debian sources (once per machine; ~1.5 min after the \
                 API server's build; log: {})",
                BINARIES.join(", "),
                Self::install_log(ctx).display()
            );
            Kubernetes::build(ctx, true, &Self::install_log(ctx))?;
        }
        Self::build_pause(ctx)?;
        Self::write_images(ctx)
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        PROCESSES
            .iter()
            .all(|p| alive_pid(&files(ctx, p).pid_file()).is_some())
            && kubelet_healthy()
            && Self::node_ready(ctx, None)
            && base_images_present()
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if !Kubernetes.is_up(ctx) {
            bail!("the node joins the test control plane, which is not up: `cargo xtask infra up kubernetes node`");
        }
        // Leftovers of a crashed run would hold the bridge, ports and mounts.
        self.stop(ctx)?;
        for port in LOCAL_PORTS {
            ensure_port_free(port, "the test node")?;
        }
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
        Self::save_sysctls(ctx)?;
        // Pods' traffic to Services and to each other crosses the host and the bridge.
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
        ] {
            let path = Path::new("/proc/sys").join(key);
            std::fs::write(&path, value).with_context(|| format!("setting {}", path.display()))?;
        }
        let stale_heartbeat = Self::ready_condition(ctx).map(|c| c["lastHeartbeatTime"].clone());
        Self::create_bridge()?;
        Self::start_containerd(ctx)?;
        let pids = vec![
            alive_pid(&files(ctx, "containerd").pid_file()).context("containerd exited")?,
            Self::start_kubelet(ctx)?,
            Self::start_kube_proxy(ctx)?,
            Self::start_scheduler(ctx)?,
        ];
        wait_until("the node", READY_TIMEOUT, &pids, || {
            Self::node_ready(ctx, stale_heartbeat.as_ref())
        })
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        for p in PROCESSES.iter().rev() {
            let f = files(ctx, p);
            stop_server(p, &f.pid_file(), &[])?;
        }
        Self::clean_up(ctx)
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("FISO_E2E_NODE", NODE_NAME.to_owned()),
            ("FISO_E2E_CONTAINERD_ADDRESS", CONTAINERD_SOCKET.to_owned()),
            ("FISO_E2E_BUSYBOX_IMAGE", BUSYBOX_IMAGE.to_owned()),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        let mut logs = vec![Self::install_log(ctx), Self::ops_log(ctx)];
        logs.extend(PROCESSES.iter().map(|p| files(ctx, p).log()));
        logs
    }
}

/// Imports the OCI image-layout archive `archive` into the node's containerd (namespace `k8s.io`,
/// where the kubelet looks), unpacked for the snapshotter pods use.
pub fn import_image(ctx: &Ctx, archive: &Path) -> Result<()> {
    if alive_pid(&files(ctx, "containerd").pid_file()).is_none() {
        bail!(
            "importing {} needs the test node's containerd: `cargo xtask infra up node`",
            archive.display()
        );
    }
    let snapshotter = std::fs::read_to_string(Node::snapshotter_file())
        .context("reading the node's snapshotter")?;
    run_logged(
        &format!("ctr images import {}", archive.display()),
        Command::new("ctr")
            .args(["--address", CONTAINERD_SOCKET, "-n", "k8s.io"])
            .args(["images", "import", "--snapshotter", snapshotter.trim()])
            .arg(archive),
        &Node::ops_log(ctx),
    )
}

/// Whether containerd still has the images every pod needs: kubelet's image garbage collection
/// or a cleanup may have removed them, and no registry gives them back, so a node without them
/// is restarted (which imports them again).
fn base_images_present() -> bool {
    ctr(&["-n", "k8s.io", "images", "ls", "-q"]).is_ok_and(|list| {
        [PAUSE_IMAGE, BUSYBOX_IMAGE]
            .iter()
            .all(|image| list.lines().any(|l| l == *image))
    })
}

/// The kubelet's own health endpoint (its container runtime, its sync loop).
fn kubelet_healthy() -> bool {
    Command::new("curl")
        .args(["-sf", "--max-time", "5", "http://127.0.0.1:10248/healthz"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(super) fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn ip(args: &[&str]) -> Result<()> {
    output(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
    .map(drop)
}

fn ctr(args: &[&str]) -> Result<String> {
    output(
        "ctr",
        Command::new("ctr")
            .args(["--address", CONTAINERD_SOCKET])
            .args(args),
    )
}

/// Polls `ready` every 200 ms until `timeout`, failing early when one of `pids` exits.
fn wait_until(what: &str, timeout: Duration, pids: &[u32], ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(pid) = pids.iter().find(|p| !pid_alive(**p)) {
            bail!("{what}: process {pid} exited during startup");
        }
        if Instant::now() > deadline {
            bail!("{what} not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The containerd shims serving our containerd (by their `-address` argument).
fn shim_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == CONTAINERD_SOCKET.as_bytes())
        })
        .collect()
}

/// Whether the network namespace `name` holds an address of our pod subnet.
fn netns_is_ours(name: &str) -> bool {
    let prefix = POD_SUBNET.trim_end_matches("0/24");
    Command::new("ip")
        .args(["-n", name, "-4", "-o", "addr", "show"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {prefix}")))
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`, octal escapes decoded).
fn mounts_under(dir: &str) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

fn unescape_mount_path(raw: &str) -> String {
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the unix sockets in `dir` nobody listens on (a killed shim leaves its own), waiting
/// until `deadline` for listeners to go away, then `dir` and its parent if that leaves them
/// empty.
fn remove_stale_sockets(dir: &Path, deadline: Instant) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        let mut listened = std::os::unix::net::UnixStream::connect(&path).is_ok();
        while listened && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            listened = std::os::unix::net::UnixStream::connect(&path).is_ok();
        }
        if !listened {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    remove_if_empty(Some(dir));
    remove_if_empty(dir.parent());
    Ok(())
}

/// Removes `dir` if it exists and is empty (a directory the node's parts create on first use).
fn remove_if_empty(dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes a cgroup directory and its children (cgroupfs removes a group with `rmdir` alone,
/// once no process is in it).
fn remove_cgroup(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))
}

fn remove_dir_all(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_told_from_a_failing_one() {
        let missing = output("x", &mut Command::new("/nonexistent/fiso-no-such-program"));
        assert!(is_not_installed(&missing.unwrap_err()));
        let failing = output("false", &mut Command::new("false"));
        assert!(!is_not_installed(&failing.unwrap_err()));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/run/fiso-node/a\040b\134c"),
            r"/run/fiso-node/a b\c"
        );
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn socket_paths_fit_a_sockaddr() {
        // sun_path is 108 bytes with its NUL; containerd adds `.ttrpc` to the gRPC socket.
        assert!(CONTAINERD_SOCKET.len() + ".ttrpc".len() < 108);
    }
}
