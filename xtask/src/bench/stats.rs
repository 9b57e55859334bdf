//! The figures of a scenario: each variant's measurements over the rounds, reduced to medians,
//! and the comparisons the report makes between variants (Fiso against nginx and direct, the
//! WASM interceptor against the same flow without it).

use std::time::Duration;

use serde_json::{json, Value};

use super::rate::Rate;
use super::wrk::Load;

/// The flow variant with the uppercase WASM interceptor after the transform and CloudEvent.
pub const WASM_VARIANT: &str = "fiso flow + wasm";
/// The bare hyper proxy ([`super::proxy`]) in Fiso's shape, and with one runtime per core.
pub const HYPER_PROXY: &str = "hyper proxy";
pub const HYPER_PER_CORE: &str = "hyper per-core";

/// The measurements of one variant: at saturation (wrk) and at a constant rate (hey).
struct Variant {
    name: String,
    loads: Vec<Load>,
    rates: Vec<Rate>,
}

/// The measurements of each variant of a scenario, in the order they were first seen.
#[derive(Default)]
pub struct Variants(Vec<Variant>);

impl Variants {
    fn entry(&mut self, name: &str) -> &mut Variant {
        let i = match self.0.iter().position(|v| v.name == name) {
            Some(i) => i,
            None => {
                self.0.push(Variant {
                    name: name.to_owned(),
                    loads: Vec::new(),
                    rates: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    pub fn push(&mut self, name: &str, load: Load) {
        println!(
            "bench:   {name:<16} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            load.rps, load.p50_ms, load.p99_ms
        );
        self.entry(name).loads.push(load);
    }

    pub fn push_rate(&mut self, name: &str, rate: Rate) {
        println!(
            "bench:   {name:<16} @{:>6.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            rate.rps, rate.p50_ms, rate.p99_ms
        );
        self.entry(name).rates.push(rate);
    }

    fn get(&self, name: &str) -> Option<&Variant> {
        self.0.iter().find(|v| v.name == name)
    }

    /// Median of `f` over the saturation runs of `name` (NaN if there are none).
    fn load(&self, name: &str, f: impl Fn(&Load) -> f64) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |v| median(v.loads.iter().map(f).collect()))
    }

    /// Median of `f` over the constant-rate runs of `name`.
    fn rate(&self, name: &str, f: impl Fn(&Rate) -> f64) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |v| median(v.rates.iter().map(f).collect()))
    }

    fn cpu(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, |v| {
            median(v.loads.iter().filter_map(|l| l.cpu_per_1000).collect())
        })
    }

    /// Per variant its medians and summed errors, then `fiso` (the name of the Fiso variant)
    /// against nginx and direct.
    pub fn summary(&self, fiso: &str, fiso_rss: u64) -> Value {
        let variants: Vec<Value> = self
            .0
            .iter()
            .map(|v| {
                let name = v.name.as_str();
                let cpu = self.cpu(name);
                json!({
                    "name": name,
                    "rps": self.load(name, |l| l.rps),
                    "p50_ms": self.load(name, |l| l.p50_ms),
                    "p99_ms": self.load(name, |l| l.p99_ms),
                    "errors": v.loads.iter().map(|l| l.errors).sum::<u64>()
                        + v.rates.iter().map(|r| r.errors).sum::<u64>(),
                    "cpu_s_per_1000": (!cpu.is_nan()).then_some(cpu),
                    "rate_rps": self.rate(name, |r| r.rps),
                    "rate_p50_ms": self.rate(name, |r| r.p50_ms),
                    "rate_p99_ms": self.rate(name, |r| r.p99_ms),
                })
            })
            .collect();
        json!({
            "variants": variants,
            "fiso_vs_nginx_rps": self.load(fiso, |l| l.rps) / self.load("nginx", |l| l.rps),
            "fiso_vs_direct_rps": self.load(fiso, |l| l.rps) / self.load("direct", |l| l.rps),
            "fiso_vs_hyper_proxy_rps": self.load(fiso, |l| l.rps) / self.load(HYPER_PROXY, |l| l.rps),
            "hyper_proxy_vs_nginx_rps": self.load(HYPER_PROXY, |l| l.rps) / self.load("nginx", |l| l.rps),
            "hyper_per_core_vs_nginx_rps": self.load(HYPER_PER_CORE, |l| l.rps) / self.load("nginx", |l| l.rps),
            "fiso_peak_rss_bytes": fiso_rss,
            "added_latency_ms": {
                "p50": self.rate(fiso, |r| r.p50_ms) - self.rate("direct", |r| r.p50_ms),
                "p99": self.rate(fiso, |r| r.p99_ms) - self.rate("direct", |r| r.p99_ms),
            },
        })
    }

    /// What the interceptor adds per event: from the saturation throughputs (1/rps is the wall
    /// time per event with both cores busy), from the CPU time, and at the constant rate.
    pub fn wasm_overhead(&self, wasm_rss: u64) -> Value {
        let (with, without) = (WASM_VARIANT, "fiso flow");
        let us_per_event = |rps: f64| 1e6 / rps;
        json!({
            "per_event_us": us_per_event(self.load(with, |l| l.rps))
                - us_per_event(self.load(without, |l| l.rps)),
            // CPU seconds per 1000 events = ms per event.
            "cpu_per_event_us": (self.cpu(with) - self.cpu(without)) * 1e3,
            "added_p50_ms": self.rate(with, |r| r.p50_ms) - self.rate(without, |r| r.p50_ms),
            "added_p99_ms": self.rate(with, |r| r.p99_ms) - self.rate(without, |r| r.p99_ms),
            "peak_rss_bytes": wasm_rss,
        })
    }
}

/// The middle value (the upper one of an even count), NaNs left out; NaN when nothing is left.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The middle duration (the upper one of an even count); panics on none.
pub fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rps: f64, p50_ms: f64, cpu_per_1000: Option<f64>) -> Load {
        Load {
            rps,
            p50_ms,
            p99_ms: p50_ms * 4.0,
            errors: 1,
            cpu_per_1000,
        }
    }

    fn rate(p50_ms: f64) -> Rate {
        Rate {
            rps: 1000.0,
            p50_ms,
            p99_ms: p50_ms * 2.0,
            errors: 2,
        }
    }

    #[test]
    fn median_is_the_upper_middle_without_nans() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(vec![f64::NAN, 5.0, f64::NAN]), 5.0);
        assert!(median(vec![]).is_nan());
        assert!(median(vec![f64::NAN]).is_nan());
    }

    #[test]
    fn median_duration_is_the_upper_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median_duration(vec![ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median_duration(vec![ms(40), ms(10)]), ms(40));
    }

    #[test]
    fn summary_compares_fiso_with_nginx_and_direct() {
        let mut v = Variants::default();
        for (direct, nginx, fiso) in [
            (1000.0, 500.0, 250.0),
            (3000.0, 700.0, 350.0),
            (2000.0, 600.0, 300.0),
        ] {
            v.push("direct", load(direct, 1.0, None));
            v.push("nginx", load(nginx, 2.0, Some(0.5)));
            v.push("fiso", load(fiso, 3.0, Some(0.25)));
        }
        v.push_rate("direct", rate(0.5));
        v.push_rate("fiso", rate(0.75));
        let s = v.summary("fiso", 1 << 20);
        let names: Vec<&str> = s["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["direct", "nginx", "fiso"],
            "in the order first seen"
        );
        let fiso = &s["variants"][2];
        assert_eq!(fiso["rps"], 300.0);
        assert_eq!(fiso["p99_ms"], 12.0);
        assert_eq!(
            fiso["errors"],
            3 + 2,
            "saturation and constant-rate errors together"
        );
        assert_eq!(fiso["cpu_s_per_1000"], 0.25);
        assert_eq!(s["variants"][0]["cpu_s_per_1000"], Value::Null);
        assert!(
            s["variants"][1]["rate_p50_ms"].is_null(),
            "NaN without a rate run"
        );
        assert_eq!(s["fiso_vs_nginx_rps"], 0.5);
        assert!(
            s["fiso_vs_hyper_proxy_rps"].is_null(),
            "NaN (null) without the hyper proxy"
        );
        assert_eq!(s["fiso_vs_direct_rps"], 0.15);
        assert_eq!(s["fiso_peak_rss_bytes"], 1 << 20);
        assert_eq!(s["added_latency_ms"]["p50"], 0.25);
        assert_eq!(s["added_latency_ms"]["p99"], 0.5);
    }

    #[test]
    fn wasm_overhead_is_against_the_flow_without_it() {
        let mut v = Variants::default();
        v.push("fiso flow", load(10_000.0, 1.0, Some(0.5)));
        v.push(WASM_VARIANT, load(5_000.0, 1.0, Some(0.75)));
        v.push_rate("fiso flow", rate(1.0));
        v.push_rate(WASM_VARIANT, rate(1.5));
        let w = v.wasm_overhead(7);
        assert_eq!(w["per_event_us"], 100.0);
        assert_eq!(w["cpu_per_event_us"], 250.0);
        assert_eq!(w["added_p50_ms"], 0.5);
        assert_eq!(w["added_p99_ms"], 1.0);
        assert_eq!(w["peak_rss_bytes"], 7);
    }
}
