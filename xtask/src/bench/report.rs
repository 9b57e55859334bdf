//! The benchmark report: `target/bench/report.json` rendered as the markdown of
//! `target/bench/report.md`, one table or paragraph per scenario.

use serde_json::Value;

use super::wrk::CONNECTIONS;
use super::{operator, profile, PROFILE_SECONDS};

/// `v` with `digits` decimals, `—` when absent or not a number.
fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map_or("—".to_owned(), |x| format!("{x:.digits$}"))
}

/// A byte count in MiB with one decimal (0 when absent).
fn mib(v: &Value) -> String {
    format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0))
}

/// The report for a reader: settings, then each scenario's figures.
pub fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let m = &r["machine"];
    let settings = &r["settings"];
    let (workers, per) = (
        super::rate::WORKERS,
        super::rate::RATE / super::rate::WORKERS,
    );
    md.push_str(&format!(
        "Machine: {} ({} cores), Linux {}. wrk -t2 -c{CONNECTIONS}, {} s × {} rounds per variant, \
         alternating, medians; latency at a constant {} req/s with hey (-c {workers} -q {per}, \
         {} s); 1 KiB JSON POST; all processes on the same cores.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        settings["seconds"],
        settings["rounds"],
        settings["rate_rps"],
        settings["rate_seconds"],
    ));
    for (title, key) in [
        (
            "Link (bearer auth, allowed paths, breaker, retry, rate limit)",
            "link",
        ),
        (
            "Flow HTTP → HTTP (5-field CEL transform + CloudEvent; + wasm: then the uppercase \
             WASM interceptor)",
            "flow",
        ),
    ] {
        let s = &r[key];
        md.push_str(&format!(
            "**{title}**\n\n| variant | req/s | p50 ms | p99 ms | errors | CPU µs / req \
             | p50 ms @ 1000/s | p99 ms @ 1000/s |\n|---|---|---|---|---|---|---|---|\n"
        ));
        for v in s["variants"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v["name"].as_str().unwrap_or("?"),
                num(&v["rps"], 0),
                num(&v["p50_ms"], 2),
                num(&v["p99_ms"], 2),
                v["errors"],
                num(&cpu_us_per_request(v), 1),
                num(&v["rate_p50_ms"], 2),
                num(&v["rate_p99_ms"], 2),
            ));
        }
        let cpu_of = |name: &str| {
            s["variants"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"].as_str().is_some_and(|n| n.starts_with(name)))
                .map_or(Value::Null, cpu_us_per_request)
        };
        md.push_str(&format!(
            "\nFiso / nginx throughput: {}; Fiso / direct: {}; CPU per request: Fiso {} µs, \
             nginx {} µs; Fiso peak RSS {}. Added latency at 1000 req/s (Fiso − direct): p50 {} \
             ms, p99 {} ms. The bare hyper proxy (Fiso's libraries, nothing else) / nginx: {}, \
             with one runtime per core: {}; Fiso / the bare hyper proxy: {}; CPU per request: \
             hyper proxy {} µs, per core {} µs.\n\n",
            num(&s["fiso_vs_nginx_rps"], 2),
            num(&s["fiso_vs_direct_rps"], 2),
            num(&cpu_of("fiso"), 1),
            num(&cpu_of("nginx"), 1),
            mib(&s["fiso_peak_rss_bytes"]),
            num(&s["added_latency_ms"]["p50"], 2),
            num(&s["added_latency_ms"]["p99"], 2),
            num(&s["hyper_proxy_vs_nginx_rps"], 2),
            num(&s["hyper_per_core_vs_nginx_rps"], 2),
            num(&s["fiso_vs_hyper_proxy_rps"], 2),
            num(&cpu_of(super::stats::HYPER_PROXY), 1),
            num(&cpu_of(super::stats::HYPER_PER_CORE), 1),
        ));
    }
    let w = &r["wasm"];
    md.push_str(&format!(
        "**WASM interceptor** (uppercase module, wasmtime, one instance per event; fiso flow + \
         wasm vs fiso flow above): {} µs more wall time per event at saturation \
         (1/throughput), {} µs more CPU per event; at 1000 req/s p50 {} ms, p99 {} ms more. \
         Peak RSS {}.\n\n",
        num(&w["per_event_us"], 1),
        num(&w["cpu_per_event_us"], 1),
        num(&w["added_p50_ms"], 2),
        num(&w["added_p99_ms"], 2),
        mib(&w["peak_rss_bytes"]),
    ));
    let k = &r["kafka"];
    md.push_str(&format!(
        "**Flow Kafka → HTTP: draining {} records of 1 KiB** ({} partitions, {} keys, tansu in \
         memory, a fresh consumer group per run; from start to the last record, so including \
         the group join)\n\n| variant | records | records/s | records/s after the first | CPU s / 1000 \
         records |\n|---|---|---|---|---|\n",
        k["records"], k["partitions"], k["keys"],
    ));
    for v in k["variants"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            v["name"].as_str().unwrap_or("?"),
            v["records"],
            num(&v["records_per_s"], 0),
            num(&v["steady_records_per_s"], 0),
            num(&v["cpu_s_per_1000"], 3),
        ));
    }
    md.push_str(&format!(
        "\nThe bare consumer is rdkafka with Fiso's client settings, no processing, committing \
         asynchronously every 1 s / 500 records like Fiso: the client library's ceiling. The Go \
         Fiso design point is the same consumer committing synchronously after each record \
         (capped at {} s). Fiso / bare consumer: {} (`ordering: key`: {}, `unordered`: {}); \
         Fiso / Go design point: {} (`ordering: key`: {}); Fiso peak RSS {}. A hot reload of \
         the transform half-way through a drain: longest wait for a record {} ms.\n\nThe upstream \
         driven directly with wrk at the concurrency of Fiso's deliveries, in every round right \
         after Fiso's drains (medians): {} req/s over {} connections (`ordering: partition`: \
         one delivery per partition), {} req/s over {} (`key` / `unordered`: every partition's \
         window). Fiso's drain after the first record / that rate, each round against its own, \
         then the median: `partition` {}, `key` {}, `unordered` {}.\n\nThe bare consumer delivering each \
         record's value as it is through Fiso's own client pool of plain HTTP/1.1 connections (the \
         floor of a Kafka → HTTP bridge on Fiso's libraries: no CloudEvent, no ordering), after \
         the first record / the direct rate: {} with one delivery per partition, {} with every \
         window; Fiso / that floor: `partition` {}, `key` {}, `unordered` {}. The same drain through hyper-util's general client instead (what \
         Fiso's own pool saves) / the direct rate: {} and {}.\n\nA backlog on one partition while \
         the other three are caught up ({} records, all on partition 0; every fetch then names \
         idle partitions, which the broker may hold, and librdkafka sends no other fetch to it \
         meanwhile), records/s after the first: Fiso `ordering: key` {} ({} CPU s / 1000 \
         records); the same with librdkafka's `fetch.wait.max.ms` of 500 ms instead of \
         Fiso's own: {}; the bare consumer: {}.\n\n",
        k["sync_each_max_seconds"],
        num(&k["fiso_vs_bare_rps"], 2),
        num(&k["fiso_key_vs_bare_rps"], 2),
        num(&k["fiso_unordered_vs_bare_rps"], 2),
        num(&k["fiso_vs_sync_each_rps"], 2),
        num(&k["fiso_key_vs_sync_each_rps"], 2),
        mib(&k["fiso_peak_rss_bytes"]),
        num(&k["reload_gap_ms"], 0),
        num(&k["direct"]["partition_rps"], 0),
        k["direct"]["partition_connections"],
        num(&k["direct"]["windowed_rps"], 0),
        k["direct"]["windowed_connections"],
        num(&k["steady_vs_direct"]["partition"], 2),
        num(&k["steady_vs_direct"]["key"], 2),
        num(&k["steady_vs_direct"]["unordered"], 2),
        num(&k["bare_client"]["partition_vs_direct"], 2),
        num(&k["bare_client"]["windowed_vs_direct"], 2),
        num(&k["bare_client"]["fiso_partition"], 2),
        num(&k["bare_client"]["fiso_key"], 2),
        num(&k["bare_client"]["fiso_unordered"], 2),
        num(&k["hyper_util_client"]["partition_vs_direct"], 2),
        num(&k["hyper_util_client"]["windowed_vs_direct"], 2),
        k["one_partition"]["records"],
        num(&k["one_partition"]["fiso_key"]["steady_records_per_s"], 0),
        num(&k["one_partition"]["fiso_key"]["cpu_s_per_1000"], 3),
        num(
            &k["one_partition"]["fiso_key_fetch_wait_500ms"]["steady_records_per_s"],
            0
        ),
        num(&k["one_partition"]["bare"]["steady_records_per_s"], 0),
    ));
    md.push_str("**CEL transform vs hand-written serde_json** (per event, criterion medians)\n\n| shape | CEL | serde_json | ratio |\n|---|---|---|---|\n");
    for t in r["transforms"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.0} ns | {:.0} ns | {:.1}× |\n",
            t["shape"].as_str().unwrap_or("?"),
            t["cel_ns"].as_f64().unwrap_or(f64::NAN),
            t["serde_json_ns"].as_f64().unwrap_or(f64::NAN),
            t["ratio"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    md.push('\n');
    md.push_str(&format!(
        "Start-up to `/readyz` 200: `fiso link` {:.0} ms, `fiso flow` with 10 flows {:.0} ms. \
         Release binary as shipped (stripped, as the Dockerfile does): {:.1} MiB.\n\n",
        r["startup"]["link_ms"].as_f64().unwrap_or(f64::NAN),
        r["startup"]["flow_10_flows_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["binary_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    ));
    md.push_str(&goals(r));
    md.push_str(&operator::markdown(&r["operator"]));
    md.push('\n');
    let profiles = &r["profiles"];
    if let Some(reason) = profiles["unavailable"].as_str() {
        md.push_str(&format!("**Profiles**: not taken ({reason}).\n"));
        return md;
    }
    md.push_str(&format!(
        "**Profiles**: top three functions by self time in the Fiso process, then the top three \
         Fiso functions the samples are charged to (`perf record -g -e cpu-clock`, frame \
         pointers, {PROFILE_SECONDS} s of wrk load; Kafka: one drain with `ordering: key`)\n\n"
    ));
    for (title, key) in [
        ("Link", "link"),
        ("Flow HTTP → HTTP", "flow"),
        ("Flow + WASM", "wasm"),
        ("Flow Kafka → HTTP", "kafka"),
    ] {
        let costs = |view: &str| -> String {
            let costs: Vec<String> = profiles[key][view]
                .as_array()
                .into_iter()
                .flatten()
                .map(profile::describe)
                .collect();
            costs.join("; ")
        };
        if profiles[key].is_null() {
            continue;
        }
        md.push_str(&format!(
            "- {title}: {}\n  - by the nearest Fiso function on the stack: {}\n",
            costs("self"),
            costs("by_fiso_function")
        ));
    }
    md
}

/// One goal of the hot path: what is measured, the bound, and whether it is met.
struct Goal {
    what: &'static str,
    measured: Value,
    /// `true`: the figure must be at least `bound`; `false`: at most.
    at_least: bool,
    bound: f64,
    unit: &'static str,
    /// The same figure for the bare libraries Fiso is built on (hyper's proxy in Fiso's
    /// serving shape; rdkafka + a pool on hyper's connections): the floor beneath any build on
    /// them.
    floor: Value,
}

/// The hot path's goals, each with this run's figure and whether it meets it.
fn goals(r: &Value) -> String {
    let k = &r["kafka"];
    let mib = r["binary_bytes"]
        .as_f64()
        .map_or(Value::Null, |b| serde_json::json!(b / (1024.0 * 1024.0)));
    let goals = [
        Goal {
            what: "Kafka drain / direct upstream, `ordering: partition`",
            measured: k["steady_vs_direct"]["partition"].clone(),
            at_least: true,
            bound: 0.5,
            unit: "×",
            floor: k["bare_client"]["partition_vs_direct"].clone(),
        },
        Goal {
            what: "Kafka drain / direct upstream, `ordering: key`",
            measured: k["steady_vs_direct"]["key"].clone(),
            at_least: true,
            bound: 0.5,
            unit: "×",
            floor: k["bare_client"]["windowed_vs_direct"].clone(),
        },
        Goal {
            what: "Kafka drain / direct upstream, `ordering: unordered`",
            measured: k["steady_vs_direct"]["unordered"].clone(),
            at_least: true,
            bound: 0.5,
            unit: "×",
            floor: k["bare_client"]["windowed_vs_direct"].clone(),
        },
        Goal {
            what: "Link (every layer) / nginx, req/s",
            measured: r["link"]["fiso_vs_nginx_rps"].clone(),
            at_least: true,
            bound: 1.0,
            unit: "×",
            floor: r["link"]["hyper_per_core_vs_nginx_rps"].clone(),
        },
        Goal {
            what: "Flow HTTP → HTTP / nginx, req/s",
            measured: r["flow"]["fiso_vs_nginx_rps"].clone(),
            at_least: true,
            bound: 0.7,
            unit: "×",
            floor: r["flow"]["hyper_per_core_vs_nginx_rps"].clone(),
        },
        Goal {
            what: "Link added latency at 1000 req/s, p50",
            measured: r["link"]["added_latency_ms"]["p50"].clone(),
            at_least: false,
            bound: 0.5,
            unit: " ms",
            floor: Value::Null,
        },
        Goal {
            what: "Link added latency at 1000 req/s, p99",
            measured: r["link"]["added_latency_ms"]["p99"].clone(),
            at_least: false,
            bound: 2.0,
            unit: " ms",
            floor: Value::Null,
        },
        Goal {
            what: "Flow added latency at 1000 req/s, p50",
            measured: r["flow"]["added_latency_ms"]["p50"].clone(),
            at_least: false,
            bound: 0.5,
            unit: " ms",
            floor: Value::Null,
        },
        Goal {
            what: "Flow added latency at 1000 req/s, p99",
            measured: r["flow"]["added_latency_ms"]["p99"].clone(),
            at_least: false,
            bound: 2.0,
            unit: " ms",
            floor: Value::Null,
        },
        Goal {
            // A consumer restart leaves the group and rejoins: seconds. A swap keeps consuming.
            what: "Kafka hot reload: longest wait for a record",
            measured: k["reload_gap_ms"].clone(),
            at_least: false,
            bound: 100.0,
            unit: " ms",
            floor: Value::Null,
        },
        Goal {
            what: "Release binary as shipped",
            measured: mib,
            at_least: false,
            bound: 40.0,
            unit: " MiB",
            floor: Value::Null,
        },
    ];
    let mut md = String::from(
        "**Goals of the hot path** (this run; the floor is the same figure for the bare \
         libraries beneath Fiso: the bare hyper proxy with one runtime per core, the bare \
         consumer posting through Fiso's own client pool)\n\n| goal | bound | measured | met | \
         floor |\n|---|---|---|---|---|\n",
    );
    for g in goals {
        let met = match g.measured.as_f64() {
            Some(x) if g.at_least => {
                if x >= g.bound {
                    "yes"
                } else {
                    "no"
                }
            }
            Some(x) => {
                if x <= g.bound {
                    "yes"
                } else {
                    "no"
                }
            }
            None => "not measured",
        };
        md.push_str(&format!(
            "| {} | {} {}{} | {}{} | {met} | {} |\n",
            g.what,
            if g.at_least { "≥" } else { "≤" },
            g.bound,
            g.unit,
            num(&g.measured, 2),
            g.unit,
            match g.floor.as_f64() {
                Some(_) => format!("{}{}", num(&g.floor, 2), g.unit),
                None => "—".to_owned(),
            },
        ));
    }
    md.push('\n');
    md
}

/// A variant's CPU time per request in µs (the figure is kept as seconds per 1000 requests).
fn cpu_us_per_request(variant: &Value) -> Value {
    variant["cpu_s_per_1000"]
        .as_f64()
        .map_or(Value::Null, |s| serde_json::json!(s * 1000.0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A report with each section's figures, shaped like the one `bench` writes.
    fn report() -> Value {
        let variant = |name: &str, rps: f64| {
            json!({
                "name": name, "rps": rps, "p50_ms": 1.234, "p99_ms": 5.678, "errors": 0,
                "cpu_s_per_1000": if name == "direct" { Value::Null } else { json!(0.0456) },
                "rate_rps": 1000.0, "rate_p50_ms": 0.5, "rate_p99_ms": null,
            })
        };
        let scenario = |fiso: &str| {
            json!({
                "variants": [variant("direct", 40000.0), variant("nginx", 20000.0),
                             variant("hyper proxy", 16000.0), variant(fiso, 10000.0)],
                "fiso_vs_nginx_rps": 0.5, "fiso_vs_direct_rps": 0.25,
                "fiso_vs_hyper_proxy_rps": 0.625, "hyper_proxy_vs_nginx_rps": 0.8,
                "hyper_per_core_vs_nginx_rps": null,
                "fiso_peak_rss_bytes": 12 * 1024 * 1024,
                "added_latency_ms": {"p50": 0.1, "p99": null},
            })
        };
        json!({
            "machine": {"cpu": "Test CPU", "cores": 2, "kernel": "6.1.0"},
            "settings": {"seconds": 8, "rounds": 3, "connections": CONNECTIONS,
                         "rate_rps": 1000, "rate_seconds": 10},
            "link": scenario("fiso link"),
            "flow": scenario("fiso flow"),
            "wasm": {"per_event_us": 12.34, "cpu_per_event_us": 5.0, "added_p50_ms": 0.01,
                     "added_p99_ms": 0.02, "peak_rss_bytes": 30 * 1024 * 1024},
            "kafka": {"records": 20000, "partitions": 4, "keys": 1000,
                      "sync_each_max_seconds": 15,
                      "variants": [{"name": "bare consumer", "records": 20000,
                                    "records_per_s": 50000.0, "steady_records_per_s": 60000.0,
                                    "cpu_s_per_1000": null}],
                      "fiso_vs_bare_rps": 0.8, "fiso_key_vs_bare_rps": 0.7,
                      "fiso_vs_sync_each_rps": 4.0, "fiso_key_vs_sync_each_rps": 3.5,
                      "fiso_peak_rss_bytes": 0, "reload_gap_ms": 12.0,
                      "one_partition": {"records": 5000,
                                        "bare": {"steady_records_per_s": 90000.0},
                                        "fiso_key": {"steady_records_per_s": 30000.0,
                                                     "cpu_s_per_1000": 0.02},
                                        "fiso_key_fetch_wait_500ms":
                                            {"steady_records_per_s": 4000.0}},
                      "direct": {"partition_connections": 4, "partition_rps": 8000.0,
                                 "windowed_connections": 256, "windowed_rps": 20000.0},
                      "steady_vs_direct": {"partition": 0.6, "key": 0.4, "unordered": null},
                      "bare_client": {"partition_vs_direct": 0.7, "windowed_vs_direct": 0.55,
                                      "fiso_partition": 0.86, "fiso_key": 0.73,
                                      "fiso_unordered": null},
                      "hyper_util_client": {"partition_vs_direct": 0.6,
                                            "windowed_vs_direct": 0.5}},
            "profiles": {"unavailable": "perf is not installed"},
            "startup": {"link_ms": 4.4, "flow_10_flows_ms": 21.6},
            "binary_bytes": 25 * 1024 * 1024,
            "transforms": [{"shape": "flat", "cel_ns": 1400.0, "serde_json_ns": 350.0,
                            "ratio": 4.0}],
            "operator": {"resources": 5,
                         "apply_to_ready_ms": {"p50": 10.0, "p99": 20.0}},
        })
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(num(&json!(1.23456), 2), "1.23");
        assert_eq!(num(&json!(7), 0), "7");
        assert_eq!(num(&Value::Null, 2), "—");
        assert_eq!(num(&json!("x"), 2), "—");
        assert_eq!(mib(&json!(3 * 1024 * 1024 / 2)), "1.5 MiB");
        assert_eq!(mib(&Value::Null), "0.0 MiB");
    }

    #[test]
    fn every_section_is_rendered() {
        let md = markdown(&report());
        for line in [
            "Machine: Test CPU (2 cores), Linux 6.1.0. wrk -t2 -c64, 8 s × 3 rounds per variant",
            "| fiso link | 10000 | 1.23 | 5.68 | 0 | 45.6 | 0.50 | — |",
            "| direct | 40000 | 1.23 | 5.68 | 0 | — | 0.50 | — |",
            "Fiso / nginx throughput: 0.50; Fiso / direct: 0.25; CPU per request: Fiso 45.6 µs, \
             nginx 45.6 µs; Fiso peak RSS 12.0 MiB. Added latency at 1000 req/s (Fiso − direct): \
             p50 0.10 ms, p99 — ms. The bare hyper proxy (Fiso's libraries, nothing else) / \
             nginx: 0.80, with one runtime per core: —; Fiso / the bare hyper proxy: 0.62; CPU per \
             request: hyper proxy 45.6 µs, per core — µs.",
            "12.3 µs more wall time per event",
            "| bare consumer | 20000 | 50000 | 60000 | — |",
            "| flat | 1400 ns | 350 ns | 4.0× |",
            "`fiso link` 4 ms, `fiso flow` with 10 flows 22 ms. Release binary as shipped (stripped, \
             as the Dockerfile does): 25.0 MiB.",
            "**Operator** (5 FlowDefinitions",
            "8000 req/s over 4 connections",
            "after the first record / the direct rate: 0.70 with one delivery per partition, 0.55 \
             with every window; Fiso / that floor: `partition` 0.86, `key` 0.73, `unordered` —. \
             The same drain through hyper-util's general client instead (what Fiso's own pool \
             saves) / the direct rate: 0.60 and 0.50.",
            "| Kafka drain / direct upstream, `ordering: partition` | ≥ 0.5× | 0.60× | yes | 0.70× |",
            "| Kafka drain / direct upstream, `ordering: key` | ≥ 0.5× | 0.40× | no | 0.55× |",
            "| Kafka drain / direct upstream, `ordering: unordered` | ≥ 0.5× | —× | not measured | 0.55× |",
            "| Link (every layer) / nginx, req/s | ≥ 1× | 0.50× | no | — |",
            "| Link added latency at 1000 req/s, p50 | ≤ 0.5 ms | 0.10 ms | yes | — |",
            "| Kafka hot reload: longest wait for a record | ≤ 100 ms | 12.00 ms | yes | — |",
            "| Release binary as shipped | ≤ 40 MiB | 25.00 MiB | yes | — |",
            "**Profiles**: not taken (perf is not installed).",
        ] {
            assert!(md.contains(line), "missing {line:?} in:\n{md}");
        }
    }

    #[test]
    fn profiles_per_scenario_when_taken() {
        let mut r = report();
        let cost = json!({"percent": 12.5, "dso": "fiso", "symbol": "fiso_flow::pipeline::handle"});
        r["profiles"] = json!({
            "flow": {"self": [cost.clone()], "by_fiso_function": [cost]},
        });
        let md = markdown(&r);
        assert!(
            md.contains(&format!("{PROFILE_SECONDS} s of wrk load")),
            "{md}"
        );
        assert!(
            md.contains(
                "- Flow HTTP → HTTP: 12.5% `fiso_flow::pipeline::handle` in fiso\n  \
                 - by the nearest Fiso function on the stack: 12.5% `fiso_flow::pipeline::handle` in fiso\n"
            ),
            "{md}"
        );
        assert!(
            !md.contains("- Link:"),
            "no line for a scenario without a profile"
        );
    }
}
