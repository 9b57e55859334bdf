//! Reading `cargo test`'s output as it streams: which test binary runs when, which package it
//! belongs to (from the build's JSON messages) and how its tests ended, grouped into the rows of
//! CI's timing table.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A test executable the build produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TestBinary {
    package: String,
    /// `lib`, `bin`, `test`, `bench`, ...
    kind: String,
    name: String,
}

impl TestBinary {
    /// From one `--message-format json` message: a test executable, keyed by its file name
    /// (what `cargo test` prints when it runs it).
    pub fn from_artifact(message: &Value) -> Option<(String, TestBinary)> {
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            return None;
        }
        let executable = Path::new(message["executable"].as_str()?);
        let file = executable.file_name()?.to_string_lossy().into_owned();
        let binary = TestBinary {
            package: package_name(message["package_id"].as_str()?),
            kind: message["target"]["kind"][0].as_str()?.to_owned(),
            name: message["target"]["name"].as_str()?.to_owned(),
        };
        Some((file, binary))
    }

    /// The row of the timing table this binary's time goes to: one per package, the e2e suite
    /// by area (`flow_*`, `link*`, `operator*`, ...), the fuzz replay on its own.
    fn group(&self) -> String {
        match self.package.as_str() {
            "fiso-fuzz-targets" => "tests: fuzz corpora replay".to_owned(),
            "fiso-e2e" if self.kind == "test" => {
                let area = self.name.split('_').next().unwrap_or(&self.name);
                format!("tests: e2e {area}*")
            }
            package => format!("tests: {package}"),
        }
    }
}

/// `path+file:///w/dataplane/flow#fiso-flow@0.1.0`, `path+file:///w/flow#0.1.0` (the name is
/// the directory's) or the older `fiso-flow 0.1.0 (path+file:///w/dataplane/flow)`.
fn package_name(id: &str) -> String {
    if let Some((url, fragment)) = id.split_once('#') {
        return match fragment.split_once('@') {
            Some((name, _version)) => name.to_owned(),
            None => url.rsplit('/').next().unwrap_or(url).to_owned(),
        };
    }
    id.split_whitespace().next().unwrap_or(id).to_owned()
}

/// The time and results of one row.
#[derive(Debug, PartialEq)]
pub struct Group {
    name: String,
    binaries: usize,
    pub elapsed: Duration,
    passed: u64,
    pub failed: u64,
}

impl Group {
    pub fn label(&self) -> String {
        let binaries = if self.binaries == 1 {
            "1 binary".to_owned()
        } else {
            format!("{} binaries", self.binaries)
        };
        format!("{} ({binaries}, {} passed)", self.name, self.passed)
    }
}

pub struct TestRun<'a> {
    binaries: &'a HashMap<String, TestBinary>,
    groups: Vec<Group>,
    /// The group of the binary running now, and since when.
    current: Option<(usize, Instant)>,
}

impl<'a> TestRun<'a> {
    pub fn new(binaries: &'a HashMap<String, TestBinary>) -> Self {
        TestRun {
            binaries,
            groups: Vec::new(),
            current: None,
        }
    }

    pub fn line(&mut self, line: &str, now: Instant) {
        let line = line.trim();
        if let Some(running) = line.strip_prefix("Running ") {
            let file = running
                .rsplit_once('(')
                .and_then(|(_, path)| path.strip_suffix(')'))
                .and_then(|path| Path::new(path).file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| running.to_owned());
            let group = match self.binaries.get(&file) {
                Some(binary) => binary.group(),
                None => format!("tests: {file}"),
            };
            self.start(group, now);
        } else if line.starts_with("Doc-tests ") {
            self.start("tests: doc tests".to_owned(), now);
        } else if let Some(result) = line.strip_prefix("test result: ") {
            if let Some((index, _)) = self.current {
                let group = &mut self.groups[index];
                group.passed += count(result, "passed");
                group.failed += count(result, "failed");
            }
        } else if line.starts_with("error: test failed") {
            // A binary that crashed prints no result line.
            if let Some((index, _)) = self.current {
                self.groups[index].failed = self.groups[index].failed.max(1);
            }
        }
    }

    fn start(&mut self, name: String, now: Instant) {
        self.stop(now);
        let index = match self.groups.iter().position(|g| g.name == name) {
            Some(index) => index,
            None => {
                self.groups.push(Group {
                    name,
                    binaries: 0,
                    elapsed: Duration::ZERO,
                    passed: 0,
                    failed: 0,
                });
                self.groups.len() - 1
            }
        };
        self.groups[index].binaries += 1;
        self.current = Some((index, now));
    }

    fn stop(&mut self, now: Instant) {
        if let Some((index, since)) = self.current.take() {
            self.groups[index].elapsed += now - since;
        }
    }

    /// The groups in the order they first ran.
    pub fn finish(mut self, now: Instant) -> Vec<Group> {
        self.stop(now);
        self.groups
    }
}

/// `12` of `ok. 12 passed; 0 failed; ...`.
fn count(result: &str, what: &str) -> u64 {
    result
        .split(';')
        .filter_map(|part| part.trim().rsplit_once(' '))
        .find(|(_, word)| *word == what)
        .and_then(|(number, _)| number.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn artifact(id: &str, kind: &str, name: &str, exe: &str) -> Value {
        json!({
            "reason": "compiler-artifact",
            "package_id": id,
            "target": {"kind": [kind], "name": name},
            "profile": {"test": true},
            "executable": exe,
        })
    }

    #[test]
    fn package_names_from_every_id_format() {
        assert_eq!(
            package_name("path+file:///w/dataplane/flow#fiso-flow@0.1.0"),
            "fiso-flow"
        );
        assert_eq!(package_name("path+file:///w/xtask#0.1.0"), "xtask");
        assert_eq!(
            package_name("fiso-flow 0.1.0 (path+file:///w/dataplane/flow)"),
            "fiso-flow"
        );
    }

    #[test]
    fn only_test_executables_are_kept() {
        let mut message = artifact(
            "p#fiso-e2e@0.1.0",
            "test",
            "flow_http",
            "/t/deps/flow_http-ab",
        );
        assert_eq!(
            TestBinary::from_artifact(&message).map(|(file, _)| file),
            Some("flow_http-ab".to_owned())
        );
        message["profile"]["test"] = json!(false);
        assert_eq!(TestBinary::from_artifact(&message), None);
    }

    #[test]
    fn a_run_is_grouped_by_package_and_e2e_area() {
        let binaries: HashMap<String, TestBinary> = [
            artifact(
                "p#fiso-flow@0.1.0",
                "lib",
                "fiso_flow",
                "/t/deps/fiso_flow-1",
            ),
            artifact(
                "p#fiso-e2e@0.1.0",
                "test",
                "flow_http",
                "/t/deps/flow_http-2",
            ),
            artifact(
                "p#fiso-e2e@0.1.0",
                "test",
                "flow_kafka_sink",
                "/t/deps/flow_kafka_sink-3",
            ),
            artifact(
                "p#fiso-fuzz-targets@0.1.0",
                "test",
                "replay",
                "/t/deps/replay-4",
            ),
        ]
        .iter()
        .filter_map(TestBinary::from_artifact)
        .collect();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut run = TestRun::new(&binaries);
        let output = [
            (
                0,
                "     Running unittests src/lib.rs (target/debug/deps/fiso_flow-1)",
            ),
            (
                1,
                "test result: ok. 12 passed; 0 failed; 0 ignored; finished in 1.0s",
            ),
            (
                10,
                "     Running tests/flow_http.rs (/abs/target/debug/deps/flow_http-2)",
            ),
            (12, "test result: ok. 3 passed; 0 failed; 0 ignored"),
            (
                30,
                "     Running tests/flow_kafka_sink.rs (target/debug/deps/flow_kafka_sink-3)",
            ),
            (40, "test result: FAILED. 4 passed; 1 failed; 0 ignored"),
            (
                45,
                "error: test failed, to rerun pass `-p fiso-e2e --test flow_kafka_sink`",
            ),
            (
                50,
                "     Running tests/replay.rs (target/debug/deps/replay-4)",
            ),
            (55, "   Doc-tests fiso_flow"),
        ];
        for (s, line) in output {
            run.line(line, at(s));
        }
        let groups = run.finish(at(56));
        let rows: Vec<(String, u64, u64)> = groups
            .iter()
            .map(|g| (g.label(), g.elapsed.as_secs(), g.failed))
            .collect();
        assert_eq!(
            rows,
            [
                ("tests: fiso-flow (1 binary, 12 passed)".to_owned(), 10, 0),
                ("tests: e2e flow* (2 binaries, 7 passed)".to_owned(), 40, 1),
                (
                    "tests: fuzz corpora replay (1 binary, 0 passed)".to_owned(),
                    5,
                    0
                ),
                ("tests: doc tests (1 binary, 0 passed)".to_owned(), 1, 0),
            ]
        );
    }
}
