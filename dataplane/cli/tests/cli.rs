//! The `fiso` binary as a user runs it: real process, real files, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn fiso(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiso"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("fiso runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn init_defaults_then_validate_in_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let o = fiso(dir.path(), &["init", "--defaults"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Fiso initialized with http source → http sink."));
    assert!(!text(&o).contains("Kafka broker"), "{}", text(&o));
    assert!(dir.path().join("fiso/flows/example-flow.yaml").is_file());
    let o = fiso(dir.path(), &["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 flow and the link config valid"),
        "{}",
        text(&o)
    );

    let o = fiso(dir.path(), &["init", "--defaults"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let o = fiso(dir.path(), &["init", "--source", "kafka", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    // A Kafka flow needs a broker: the next steps say where, what checks it, and how to send
    // it an event.
    assert!(
        text(&o).contains("needs a Kafka broker at localhost:9092 (`fiso doctor` checks)"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("fiso produce --topic orders --file fiso/sample-event.json"),
        "{}",
        text(&o)
    );
}

/// A broker that cannot be reached: one line that says what failed once (not librdkafka's
/// code name next to its description, nor the cause twice) and how to fix it.
#[test]
fn kafka_errors_are_one_line_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        let dir = dir.path().to_owned();
        std::thread::spawn(move || fiso(&dir, args))
    };
    let produce = run(&[
        "produce",
        "--brokers",
        "127.0.0.1:1",
        "--topic",
        "t",
        "--json",
        "{}",
    ]);
    let consume = run(&["consume", "--brokers", "127.0.0.1:1", "--topic", "t"]);
    for o in [produce.join().unwrap(), consume.join().unwrap()] {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            stderr.trim_end().ends_with(
                "is the broker at 127.0.0.1:1 running? `fiso doctor` checks (or set --brokers)"
            ),
            "{stderr}"
        );
        for repeated in ["BrokerTransportFailure", "MessageTimedOut", "Local:"] {
            assert!(!stderr.contains(repeated), "{stderr}");
        }
        assert!(
            stderr.contains("Connection refused"),
            "librdkafka's word: {stderr}"
        );
    }
}

#[test]
fn interactive_init_reads_answers_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fiso"))
        .arg("init")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"2\n2\n2\ny\ny\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Fiso initialized with kafka source → temporal sink."));
    for f in [
        "fiso/flows/kafka-temporal-flow.yaml",
        "fiso/temporal-worker/worker.py",
        "fiso/k8s/fiso-resources.yaml",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    assert!(fiso(dir.path(), &["validate", "fiso"]).status.success());
}

#[test]
fn validate_reports_every_problem_with_location_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p/flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("p/link")).unwrap();
    std::fs::write(
        dir.path().join("p/flows/a.yaml"),
        "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\nsink:\n  type: http\n  config:\n    url: ftp://x\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p/flows/b.yaml"),
        "name: b\nsource:\n  type: http\n  config:\n    listenAdr: x\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p/link/config.yaml"),
        "targets:\n  - name: x\n    host: h\n    retry: {jitter: 3}\n",
    )
    .unwrap();
    let o = fiso(dir.path(), &["validate", "p"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("p/flows/a.yaml:9:10: error: sink.config.url:"),
        "{out}"
    );
    assert!(
        out.contains(
            "p/flows/b.yaml:5:5: error: source.config.listenAdr: unknown field `listenAdr`"
        ),
        "{out}"
    );
    assert!(out.contains("hint: did you mean `listenAddr`?"), "{out}");
    // The same file's other mistake, in the same run; the misspelt `listenAddr` is not
    // reported missing as well.
    assert!(
        out.contains("p/flows/b.yaml:1:1: error: missing field `sink`"),
        "{out}"
    );
    assert!(!out.contains("missing field `listenAddr`"), "{out}");
    assert!(
        out.contains("p/link/config.yaml:4:21: error: targets[0].retry.jitter"),
        "{out}"
    );
    assert!(out.contains("4 errors"), "{out}");

    let o = fiso(dir.path(), &["validate", "p", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 4);
    assert_eq!(v["diagnostics"][0]["path"], "sink.config.url");
    assert_eq!(v["diagnostics"][0]["line"], 9);
}

/// One project, one run: every mistake of a file (types, unknown fields and variants, a missing
/// field, a CEL value YAML misreads, a semantic error) and a check across files, each at its
/// value, sorted by file and line, in both output formats.
#[test]
fn validate_reports_all_mistakes_of_a_file_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p/flows")).unwrap();
    std::fs::write(
        dir.path().join("p/flows/orders.yaml"),
        "\
name: orders
source:
  type: http
  config:
    listenAddr: \":8081\"
    path: /orders
    maxBodySize: lots
transform:
  fields:
    priority: data.urgent ? 1 : 2
    total: data.price *
cloudevents:
  subjct: data.id
interceptors:
  - type: wasmtime
    config: {module: m.wasm}
sink:
  type: http
  config:
    method: POST
",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p/flows/copy.yaml"),
        "name: orders\nsource:\n  type: http\n  config:\n    listenAddr: \":9000\"\nsink:\n  type: http\n  config:\n    url: http://svc\n",
    )
    .unwrap();
    let o = fiso(dir.path(), &["validate", "p"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let located: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("p/flows/"))
        .map(|l| l.split(": error: ").next().unwrap_or(l).to_owned())
        .collect();
    assert_eq!(
        located,
        [
            "p/flows/orders.yaml:1:7",
            "p/flows/orders.yaml:7:18",
            "p/flows/orders.yaml:10:15",
            "p/flows/orders.yaml:11:12",
            "p/flows/orders.yaml:13:3",
            "p/flows/orders.yaml:15:11",
            "p/flows/orders.yaml:19:3",
        ],
        "{}",
        text(&o)
    );
    let out = text(&o);
    for expected in [
        "error: name: flow name `orders` is also used in p/flows/copy.yaml",
        "error: source.config.maxBodySize: invalid size `lots`",
        "hint: `maxBodySize` takes an int or string: Largest accepted request body (default 1MiB); larger requests get 413; the README's “Configuration reference” lists every field and its type",
        "error: transform.fields.priority: `data.urgent ? 1 : 2` is not one YAML value as written",
        "hint: quote it: priority: 'data.urgent ? 1 : 2'",
        "error: transform.fields.total: invalid CEL expression `data.price *`",
        "error: cloudevents.subjct: unknown field `subjct`",
        "error: interceptors[0].type: unknown variant `wasmtime`, expected `wasm` or `wasmer-app`",
        "error: sink.config: missing field `url`",
        "7 errors, 0 warnings",
    ] {
        assert!(out.contains(expected), "{expected}\n{out}");
    }

    let o = fiso(dir.path(), &["validate", "p", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 7);
    let places: Vec<(String, u64, u64, String)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["file"].as_str().unwrap().to_owned(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at =
        |file: &str, line, column, path: &str| (file.to_owned(), line, column, path.to_owned());
    assert_eq!(
        places,
        [
            at("p/flows/orders.yaml", 1, 7, "name"),
            at("p/flows/orders.yaml", 7, 18, "source.config.maxBodySize"),
            at("p/flows/orders.yaml", 10, 15, "transform.fields.priority"),
            at("p/flows/orders.yaml", 11, 12, "transform.fields.total"),
            at("p/flows/orders.yaml", 13, 3, "cloudevents.subjct"),
            at("p/flows/orders.yaml", 15, 11, "interceptors[0].type"),
            at("p/flows/orders.yaml", 19, 3, "sink.config"),
        ]
    );
    assert_eq!(
        v["diagnostics"][2]["hint"],
        "quote it: priority: 'data.urgent ? 1 : 2'"
    );
}

#[test]
fn validate_refuses_link_hosts_and_base_paths_that_can_never_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p/link")).unwrap();
    std::fs::write(
        dir.path().join("p/link/config.yaml"),
        "targets:\n  - name: crlf\n    protocol: http\n    host: \"api.example.com\\r\\nX-Evil: 1\"\n\
         \x20 - name: dots\n    host: api.example.com\n    basePath: /api/%2e%2e/admin\n\
         \x20 - name: up\n    host: api.example.com\n    basePath: /api/v2/../../admin\n",
    )
    .unwrap();
    let o = fiso(dir.path(), &["validate", "p"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("p/link/config.yaml:4:11: error: targets[0].host: `api.example.com\\r\\nX-Evil: 1` is not a valid host"),
        "{out}"
    );
    assert!(
        out.contains("p/link/config.yaml:7:15: error: targets[1].basePath: `/api/%2e%2e/admin` holds a percent-encoded dot"),
        "{out}"
    );
    assert!(
        out.contains("p/link/config.yaml:10:15: error: targets[2].basePath: `/api/v2/../../admin` has a `.` or `..` segment"),
        "{out}"
    );
    assert!(
        out.contains("hint: whitespace and control characters"),
        "{out}"
    );
    assert!(out.contains("3 errors"), "{out}");
}

#[test]
fn a_bad_tracing_section_is_refused_by_validate_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p/link")).unwrap();
    let link = dir.path().join("p/link/config.yaml");
    std::fs::write(
        &link,
        "listenAddr: 127.0.0.1:0\nmetricsAddr: 127.0.0.1:0\ntracing:\n  endpoint: collector:4318\n  \
         protocol: grpc\n  sampler: traceidratio\n  samplerArg: 1.5\n",
    )
    .unwrap();
    let o = fiso(dir.path(), &["validate", "p"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("p/link/config.yaml:4:13: error: tracing.endpoint: `collector:4318` is not an http:// or https:// URL"),
        "{out}"
    );
    assert!(
        out.contains("p/link/config.yaml:7:15: error: tracing.samplerArg: 1.5 is not a ratio between 0 and 1"),
        "{out}"
    );
    std::fs::write(&link, "tracing:\n  protocol: http/json\n").unwrap();
    let out = text(&fiso(dir.path(), &["validate", "p"]));
    assert!(
        out.contains(
            "p/link/config.yaml:2:13: error: tracing.protocol: unknown variant `http/json`"
        ),
        "{out}"
    );
    // The same findings stop `fiso link` before it listens.
    let o = Command::new(env!("CARGO_BIN_EXE_fiso"))
        .args(["link", "--config"])
        .arg(&link)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("tracing.protocol"), "{}", text(&o));
    // A good section, with a variable that overrides it badly: the variable is named.
    std::fs::write(
        &link,
        "listenAddr: 127.0.0.1:0\nmetricsAddr: 127.0.0.1:1\ntracing:\n  endpoint: http://127.0.0.1:1\n",
    )
    .unwrap();
    assert!(fiso(dir.path(), &["validate", "p"]).status.success());
    let o = Command::new(env!("CARGO_BIN_EXE_fiso"))
        .args(["link", "--config"])
        .arg(&link)
        .env("NO_COLOR", "1")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("OTEL_TRACES_SAMPLER=`sometimes` is not a sampler"),
        "{}",
        text(&o)
    );
}

/// The first JSON log line of `fiso <args>` whose message is `message`; the process is killed.
fn first_log_line(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    message: &str,
) -> serde_json::Value {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fiso"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let found = stderr.lines().map_while(Result::ok).find_map(|line| {
        seen.push(line.clone());
        serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .filter(|v| v["message"] == message)
    });
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| panic!("no `{message}` line:\n{}", seen.join("\n")))
}

#[test]
fn the_all_in_one_files_tracing_section_starts_export_under_the_otel_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aio.yaml"),
        "flow:\n  metricsAddr: 127.0.0.1:0\ntracing:\n  endpoint: http://127.0.0.1:1\n  serviceName: aio\n",
    )
    .unwrap();
    let args = ["run", "--config", "aio.yaml"];
    let line = first_log_line(dir.path(), &args, &[], "exporting traces over OTLP");
    assert_eq!(line["endpoint"], "http://127.0.0.1:1/v1/traces", "{line}");
    assert_eq!(line["protocol"], "http/protobuf", "{line}");
    // A variable that is set overrides its field.
    let line = first_log_line(
        dir.path(),
        &args,
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        "exporting traces over OTLP",
    );
    assert_eq!(line["endpoint"], "http://127.0.0.1:1", "{line}");
    assert_eq!(line["protocol"], "grpc", "{line}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        fiso(dir.path(), &["validate", "--format", "xml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(fiso(dir.path(), &["no-such-verb"]).status.code(), Some(2));
    assert_eq!(
        fiso(dir.path(), &["init", "--source", "amqp"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = fiso(dir.path(), &["completions", shell]);
        assert!(o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("validate"),
            "{shell}"
        );
    }
}

#[test]
fn export_writes_manifests_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(
        dir.path(),
        &["init", "--source", "kafka", "--transform", "fields"]
    )
    .status
    .success());
    let o = fiso(
        dir.path(),
        &["export", "--namespace", "shop", "--file", "out.yaml"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(dir.path().join("out.yaml")).unwrap();
    let m = fiso_config::manifests::from_yaml(&yaml).unwrap();
    assert_eq!(m.flows.len(), 1);
    assert_eq!(m.targets.len(), 1);
    assert_eq!(m.flows[0].metadata.namespace.as_deref(), Some("shop"));

    std::fs::write(
        dir.path().join("fiso/link/config.yaml"),
        "targets:\n  - name: a\n    host: h\n    auth: {type: bearer, secretRef: {envVar: TOKEN}}\n",
    )
    .unwrap();
    let o = fiso(dir.path(), &["export"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("targets[0].auth.secretRef.envVar"),
        "{}",
        text(&o)
    );
}

/// `[env: FISO_CONFIG_DIR=]` read as if the variable were set to nothing; values may also be
/// secrets: help names the variables only.
#[test]
fn help_names_environment_variables_without_values() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["run", "flow", "link", "wasmer", "consume", "produce"] {
        let o = Command::new(env!("CARGO_BIN_EXE_fiso"))
            .args([command, "--help"])
            .current_dir(dir.path())
            .env("FISO_KAFKA_BROKERS", "secret-broker:9092")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("[env: FISO_"), "{command}: {help}");
        assert!(
            !help.contains("=]") && !help.contains("secret-broker"),
            "{command}: {help}"
        );
    }
}

#[test]
fn readme_cli_reference_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let o = fiso(dir.path(), &["help-reference"]);
    assert!(o.status.success());
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let current = fiso_config::reference::section(&readme, "cli-reference")
        .expect("README has the cli-reference markers");
    assert!(
        current == String::from_utf8_lossy(&o.stdout),
        "README CLI reference is stale: run `cargo xtask docs`"
    );
}

#[test]
fn doctor_reports_busy_ports_and_unreachable_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::create_dir_all(dir.path().join("fiso/flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("fiso/link")).unwrap();
    std::fs::write(dir.path().join("fiso/link/config.yaml"), "targets: []\n").unwrap();
    std::fs::write(
        dir.path().join("fiso/flows/a.yaml"),
        format!("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \"127.0.0.1:{busy_port}\"\nsink:\n  type: http\n  config:\n    url: http://127.0.0.1:{sink_port}/x\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fiso/flows/b.yaml"),
        format!("name: b\nkafka:\n  clusters:\n    main:\n      brokers: [\"127.0.0.1:{closed_port}\"]\nsource:\n  type: kafka\n  config: {{cluster: main, topic: t}}\nsink:\n  type: http\n  config:\n    url: http://127.0.0.1:{sink_port}/y\n"),
    )
    .unwrap();
    let o = fiso(dir.path(), &["doctor"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("✓ config valid (2 flows + link)"), "{out}");
    assert!(
        out.contains(&format!("✗ port 127.0.0.1:{busy_port} is not available")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "✓ flow a: sink http://127.0.0.1:{sink_port}/x is reachable"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "✗ flow b: Kafka broker 127.0.0.1:{closed_port} (cluster main) is unreachable"
        )),
        "{out}"
    );
    assert!(out.contains("→ start the broker"), "{out}");
    assert!(
        out.contains(&format!("`lsof -i :{busy_port}`")),
        "the hint names the real port:\n{out}"
    );
    assert!(!out.contains("PORT"), "{out}");

    let o = fiso(dir.path(), &["doctor", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failures"], 2, "{v:#}");
    let busy_check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "port" && c["target"] == format!("127.0.0.1:{busy_port}"))
        .expect("a check of the busy port");
    assert_eq!(busy_check["status"], "fail");
    assert!(busy_check["hint"]
        .as_str()
        .unwrap()
        .contains("source.config.listenAddr in fiso/flows/a.yaml"));
    drop((busy, sink));
}

#[test]
fn commands_run_inside_the_project_find_it() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(dir.path(), &["init", "--defaults"]).status.success());
    let project = dir.path().join("fiso");
    for inside in [
        project.clone(),
        project.join("flows"),
        project.join("user-service"),
    ] {
        let o = fiso(&inside, &["validate"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("1 flow and the link config valid"),
            "validate in {}: {}",
            inside.display(),
            text(&o)
        );
        let o = fiso(&inside, &["export"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("kind: FlowDefinition") && text(&o).contains("kind: LinkTarget"));
        let o = fiso(&inside, &["doctor", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let check = |name: &str| {
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {v:#}"))
                .clone()
        };
        assert_eq!(check("project")["status"], "ok", "{v:#}");
        assert_eq!(check("config")["status"], "ok", "{v:#}");
        assert!(check("config")["message"]
            .as_str()
            .unwrap()
            .contains("1 flow + link"));
        // The paths the scaffold's comments give work from inside too.
        let o = fiso(
            &inside,
            &[
                "transform",
                "test",
                "--flow",
                "fiso/flows/example-flow.yaml",
                "--input",
                "fiso/sample-event.json",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("Ada Lovelace"), "{}", text(&o));
        let o = fiso(&inside, &["logs"]);
        assert!(
            text(&o).contains("start the services with `fiso dev` first")
                && text(&o).contains(".dev/dev.log"),
            "{}",
            text(&o)
        );
        // `init` would nest a second project.
        let o = fiso(&inside, &["init", "--defaults"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o).contains("inside the Fiso project"), "{}", text(&o));
    }
}

#[test]
fn logs_without_dev_run_explain_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = fiso(dir.path(), &["logs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("start the services with `fiso dev` first"),
        "{}",
        text(&o)
    );
}

#[test]
fn transform_test_prints_payload_and_cloudevent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("order-flow.yaml"),
        r#"name: order-flow
source:
  type: http
  config:
    listenAddr: ":8081"
transform:
  fields:
    order_id: "data.order_id"
    customer: "data.customer_id"
    total: "data.price * data.quantity"
cloudevents:
  id: 'data.order_id + "-x"'
  type: '"order.created"'
sink:
  type: http
  config:
    url: http://localhost:8082
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sample-order.json"),
        "{\n  \"order_id\": \"TEST-001\",\n  \"customer_id\": \"CUST-123\",\n  \"price\": 10.5,\n  \"quantity\": 3\n}\n",
    )
    .unwrap();
    for input in [
        r#"{"order_id":"TEST-001","customer_id":"CUST-123","price":10.5,"quantity":3}"#,
        "sample-order.json",
    ] {
        let o = fiso(
            dir.path(),
            &[
                "transform",
                "test",
                "--flow",
                "order-flow.yaml",
                "--input",
                input,
                "--format",
                "json",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["transformed"],
            serde_json::json!({"order_id": "TEST-001", "customer": "CUST-123", "total": 31.5})
        );
        assert_eq!(v["cloudevent"]["id"], "TEST-001-x");
        assert_eq!(v["cloudevent"]["type"], "order.created");
        assert_eq!(v["cloudevent"]["source"], "fiso-flow/order-flow");
        assert_eq!(v["cloudevent"]["data"], v["transformed"]);
    }
    let o = fiso(
        dir.path(),
        &[
            "transform",
            "test",
            "--flow",
            "order-flow.yaml",
            "--input",
            "sample-order.json",
        ],
    );
    assert!(text(&o).contains("Transformed payload:") && text(&o).contains("CloudEvent:"));

    let o = fiso(
        dir.path(),
        &[
            "transform",
            "test",
            "--flow",
            "order-flow.yaml",
            "--input",
            r#"{"order_id":"A"}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("TRANSFORM_FAILED"), "{}", text(&o));
    let o = fiso(
        dir.path(),
        &[
            "transform",
            "test",
            "--flow",
            "order-flow.yaml",
            "--input",
            "{not json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("neither valid JSON nor a readable file"),
        "{}",
        text(&o)
    );
}

/// `fiso <args> | head -0`: stdout is a pipe whose reader is already gone.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_fiso"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("fiso runs")
}

#[test]
fn commands_end_quietly_when_their_output_pipe_closes() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(dir.path(), &["init", "--defaults"]).status.success());
    let commands: [&[&str]; 6] = [
        &["completions", "bash"],
        &["doctor"],
        &["validate"],
        &["export"],
        &[
            "transform",
            "test",
            "--flow",
            "fiso/flows/example-flow.yaml",
            "--input",
            r#"{"order_id":"A-1"}"#,
        ],
        &["help-reference"],
    ];
    for args in commands {
        let o = into_closed_pipe(dir.path(), args);
        // Like `cat`: killed by SIGPIPE at the first write, nothing said.
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "fiso {args:?}: {:?}",
            o.status
        );
        assert!(
            o.stderr.is_empty(),
            "fiso {args:?} wrote to stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn an_error_says_its_cause_once_and_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = fiso(dir.path(), &["link", "--config", "missing.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("reading missing.yaml"), "{stderr}");
    assert!(
        stderr.contains("`--config <file>` or `FISO_LINK_CONFIG`"),
        "{stderr}"
    );
}

/// A port that `fiso dev` needs and another process holds says so, and how to get past it.
#[test]
fn a_taken_port_in_fiso_dev_says_how_to_get_past_it() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(dir.path(), &["init", "--defaults"]).status.success());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = fiso(
        dir.path(),
        &["dev", "--no-service", "--metrics-addr", &addr],
    );
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("the port is taken"), "{stderr}");
    assert!(
        stderr.contains("pass --metrics-addr to use another port"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
}

/// `fiso dev --docker` writes an image that carries its own libraries (it runs in an otherwise
/// empty root: no dependency on a base image's glibc) and a compose file whose ports don't
/// clash: the data plane (flows, link and apps in `fiso run`) keeps :9090, Prometheus moves.
#[test]
fn dev_docker_writes_a_self_contained_image_and_a_compose_file_without_port_clashes() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(dir.path(), &["init", "--defaults"]).status.success());
    let o = fiso(dir.path(), &["dev", "--docker"]);
    assert!(o.status.success(), "{}", text(&o));
    let image = dir.path().join("fiso/.docker");
    let dockerfile = std::fs::read_to_string(image.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("\nFROM scratch\n"), "{dockerfile}");
    // The image's root alone runs the binary: its loader and libraries are in it.
    let ran = Command::new("chroot")
        .arg(image.join("rootfs"))
        .args(["/usr/local/bin/fiso", "--version"])
        .output()
        .expect("chroot runs");
    assert!(ran.status.success(), "{}", text(&ran));
    let version = String::from_utf8_lossy(&ran.stdout).into_owned();
    assert!(version.starts_with("fiso "), "{version}");
    // Which build it is: this test is compiled with the binary's features.
    let build = if cfg!(feature = "wasmer") {
        "(with Wasmer)"
    } else {
        "(without Wasmer)"
    };
    assert!(version.trim_end().ends_with(build), "{version}");

    let compose: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir.path().join("fiso/docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let services = compose["services"].as_object().unwrap();
    let fiso_command = services["fiso"]["command"].as_array().unwrap();
    assert_eq!(fiso_command[0], "run", "{compose:#}");
    assert!(
        fiso_command.contains(&"/etc/fiso/project/link/config.yaml".into()),
        "the link runs too: {compose:#}"
    );
    assert!(
        services["prometheus"]["command"]
            .as_array()
            .unwrap()
            .contains(&"--web.listen-address=:9091".into()),
        "{compose:#}"
    );
}

/// Upstream flow files: extension functions, bare hyphenated cloudevents words and a number
/// where a string attribute belongs all validate and run.
#[test]
fn upstream_flow_files_validate_and_transform() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("upstream.yaml"),
        r#"name: upstream
source:
  type: http
  config:
    listenAddr: ":8081"
transform:
  fields:
    biggest: "math.greatest(data.a, data.b)"
    encoded: "base64.encode(bytes(data.name))"
    shout: "data.name.upperAscii()"
cloudevents:
  subject: custom-subject
  source: new-source
  id: data.count
sink:
  type: http
  config:
    url: http://localhost:8082
"#,
    )
    .unwrap();
    let o = fiso(dir.path(), &["validate", "upstream.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = fiso(
        dir.path(),
        &[
            "transform",
            "test",
            "--flow",
            "upstream.yaml",
            "--input",
            r#"{"a":3,"b":7,"name":"ann","count":42}"#,
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["transformed"],
        serde_json::json!({"biggest": 7, "encoded": "YW5u", "shout": "ANN"})
    );
    assert_eq!(v["cloudevent"]["subject"], "custom-subject");
    assert_eq!(v["cloudevent"]["source"], "new-source");
    assert_eq!(v["cloudevent"]["id"], "42");
}

/// `fiso export` follows kubectl: `-o yaml|json`, the namespace `init --k8s` writes (kubectl's
/// `default`), and namespace names Kubernetes accepts.
#[test]
fn export_follows_kubectl_conventions() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fiso(dir.path(), &["init", "--defaults", "--k8s"])
        .status
        .success());
    let o = fiso(dir.path(), &["export", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !dir.path().join("json").exists(),
        "-o is a format, not a file"
    );
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list:#}");
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["FlowDefinition", "LinkTarget"]);
    // The namespace `init --k8s` put its Deployment in.
    let k8s = std::fs::read_to_string(dir.path().join("fiso/k8s/deployment.yaml")).unwrap();
    assert!(k8s.contains("namespace: default"), "{k8s}");
    assert!(items
        .iter()
        .all(|i| i["metadata"]["namespace"] == "default"));

    let o = fiso(dir.path(), &["export"]);
    let yaml = fiso_config::manifests::from_yaml(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(yaml.flows.len(), 1);

    for bad in ["Shop", "shop_1", "shop-", "fiso-resources.yaml"] {
        let o = fiso(dir.path(), &["export", "-n", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("is not a namespace name"), "{}", text(&o));
    }
    let o = fiso(dir.path(), &["export", "-o", "out.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("possible values: yaml, json"),
        "{}",
        text(&o)
    );
}

/// `--input-file` takes JSON Lines (one result per line, a bad line fails alone), and
/// `--format json` reports failures as JSON too.
#[test]
fn transform_test_takes_json_lines_and_reports_failures_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.yaml"),
        "name: f\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ntransform:\n  fields:\n    total: \"data.price * 2.0\"\nsink:\n  type: http\n  config:\n    url: http://localhost:8082\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("events.jsonl"),
        "{\"price\": 1.5}\n\n{\"cost\": 1}\n{\"price\": 4.0}\n",
    )
    .unwrap();
    let args = |format: &str| {
        [
            "transform",
            "test",
            "--flow",
            "flow.yaml",
            "--input-file",
            "events.jsonl",
            "--format",
        ]
        .into_iter()
        .chain([format])
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let run = |format: &str| {
        let args = args(format);
        fiso(
            dir.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let o = run("json");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["transformed"]["total"], 3.0);
    assert_eq!(lines[1]["event"], 3, "numbered by line");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("price"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["transformed"]["total"], 8.0);

    let o = run("human");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o).matches("Transformed payload:").count(), 2);
    assert!(text(&o).contains("Event 3:"), "{}", text(&o));

    let o = fiso(
        dir.path(),
        &[
            "transform",
            "test",
            "--flow",
            "flow.yaml",
            "--input",
            r#"{"cost":1}"#,
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("price"), "{v}");
}

/// With `--format json`, a failure before any check (no project, no flow file) is JSON too.
#[test]
fn json_output_covers_failures_before_any_check() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["validate", "--format", "json"][..],
        &[
            "transform",
            "test",
            "--flow",
            "missing.yaml",
            "--input",
            "{}",
            "--format",
            "json",
        ][..],
    ] {
        let o = fiso(dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {o:?}"));
        assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
    }
}

/// The options `fiso` gives jemalloc through its `malloc_conf` symbol are the ones it runs with
/// (a build with prefixed jemalloc symbols would ignore that symbol without a word).
#[test]
fn jemalloc_runs_with_the_options_fiso_sets() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fiso"))
        .arg("--version")
        .current_dir(dir.path())
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("fiso runs");
    assert!(o.status.success(), "{}", text(&o));
    for option in [
        "opt.tcache_nslots_small_min: 200",
        "opt.tcache_nslots_small_max: 400",
    ] {
        assert!(text(&o).contains(option), "{option} not in {}", text(&o));
    }
}
