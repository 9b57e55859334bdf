//! The steps of a CI run with their wall times, printed as a table at the end.

use std::time::{Duration, Instant};

use anyhow::Result;

#[derive(Default)]
pub struct Steps {
    rows: Vec<Row>,
    /// Lines printed under the table.
    notes: Vec<String>,
}

struct Row {
    name: String,
    elapsed: Duration,
    ok: bool,
}

impl Steps {
    /// Runs `step` under `name` (announced first), recording its time whatever the outcome.
    pub fn time<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        println!("==> {name}");
        let start = Instant::now();
        let result = step();
        self.record(name, start.elapsed(), result.is_ok());
        result
    }

    pub fn record(&mut self, name: &str, elapsed: Duration, ok: bool) {
        self.rows.push(Row {
            name: name.to_owned(),
            elapsed,
            ok,
        });
    }

    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .max("total".len());
        let mut out = format!("{:<width$}  {:>8}  result\n", "step", "time");
        for row in &self.rows {
            let result = if row.ok { "ok" } else { "FAILED" };
            out += &format!(
                "{:<width$}  {:>8}  {result}\n",
                row.name,
                clock(row.elapsed)
            );
        }
        let total: Duration = self.rows.iter().map(|r| r.elapsed).sum();
        out += &format!("{:<width$}  {:>8}\n", "total", clock(total));
        for note in &self.notes {
            out += &format!("{note}\n");
        }
        out
    }

    pub fn print(&self) {
        println!("\n==> CI steps (wall time)\n{}", self.table());
    }
}

/// `m:ss`, or `h:mm:ss` from an hour.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_step_and_the_total() {
        let mut steps = Steps::default();
        steps.record("build", Duration::from_secs(754), true);
        steps.record("tests: fiso-flow", Duration::from_secs(61), false);
        steps.note("disk free: 9.0 GiB".into());
        let table = steps.table();
        assert_eq!(
            table,
            "step                  time  result\n\
             build                12:34  ok\n\
             tests: fiso-flow      1:01  FAILED\n\
             total                13:35\n\
             disk free: 9.0 GiB\n"
        );
    }

    #[test]
    fn a_failed_step_is_recorded_and_its_error_returned() {
        let mut steps = Steps::default();
        let result: Result<()> = steps.time("lint", || anyhow::bail!("no"));
        assert!(result.is_err());
        assert!(steps.table().contains("lint"));
        assert!(steps.table().contains("FAILED"));
    }

    #[test]
    fn clock_reads_minutes_and_hours() {
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
