//! The cost budget of CEL evaluation: how many comprehension iterations, produced elements
//! and produced bytes the expressions of one event (or one constant, folded at load) may use.
//!
//! `cel` has no cost tracking and its functions see only their arguments, so the budget of the
//! evaluation in progress lives in a thread-local that [`Scope`](crate::Scope) installs around
//! each evaluation ([`Account::run`]). What charges it:
//! * every comprehension iteration (the compiler inserts a tick, see [`expr`](crate::cel::expr));
//! * every string, bytes or list a growing function makes (`+`, `replace`, `join`,
//!   `lists.range`), charged *before* it is allocated where one call can multiply its input;
//! * every element and string byte of the result converted to JSON.
//!
//! Once exceeded, the evaluation fails even where CEL would absorb the error (`err || true`).

use std::cell::Cell;

use fiso_config::flow::CelBudget;

/// What one event's evaluations may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub iterations: u64,
    pub elements: u64,
    pub bytes: u64,
}

impl Budget {
    /// `celBudget` defaults: room for a 300 × 300 nested loop or a 100k-element list, and for
    /// output several times the default 1 MiB body; an exhausted budget takes tens of
    /// milliseconds of CPU, not seconds.
    pub const DEFAULT: Budget = Budget {
        iterations: CelBudget::DEFAULT_ITERATIONS,
        elements: CelBudget::DEFAULT_ELEMENTS,
        bytes: CelBudget::DEFAULT_BYTES,
    };

    /// A flow's `celBudget`, each field defaulted.
    pub fn of(config: Option<&CelBudget>) -> Budget {
        let Some(config) = config else {
            return Budget::DEFAULT;
        };
        Budget {
            iterations: config.iterations.unwrap_or(Budget::DEFAULT.iterations),
            elements: config.elements.unwrap_or(Budget::DEFAULT.elements),
            bytes: config.bytes.map_or(Budget::DEFAULT.bytes, |b| b.0),
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

/// A unit the budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Iterations,
    Elements,
    Bytes,
}

impl Resource {
    fn describe(self, limit: u64) -> String {
        let (what, field) = match self {
            Resource::Iterations => ("comprehension iterations", "iterations"),
            Resource::Elements => ("list and map elements", "elements"),
            Resource::Bytes => ("bytes of strings", "bytes"),
        };
        format!("{EXCEEDED}: more than {limit} {what} for one event (celBudget.{field})")
    }
}

/// How every over-budget message starts (see [`EvalError::exceeded_budget`](crate::EvalError)).
pub(crate) const EXCEEDED: &str = "CEL budget exceeded";

/// What is left of a [`Budget`] while expressions run.
#[derive(Debug, Clone, Copy)]
struct Left {
    budget: Budget,
    iterations: u64,
    elements: u64,
    bytes: u64,
    exceeded: Option<Resource>,
}

thread_local! {
    static CURRENT: Cell<Option<Left>> = const { Cell::new(None) };
}

/// The spending of one scope: the same account across the expressions of one event.
#[derive(Debug)]
pub(crate) struct Account(Cell<Left>);

impl Account {
    pub(crate) fn new(budget: Budget) -> Self {
        Account(Cell::new(Left {
            budget,
            iterations: budget.iterations,
            elements: budget.elements,
            bytes: budget.bytes,
            exceeded: None,
        }))
    }

    /// Runs `f` with this account charged by everything it evaluates; an exceeded budget
    /// replaces whatever `f` made of it by the budget's message.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let installed = Installed {
            account: self,
            previous: CURRENT.replace(Some(self.0.get())),
        };
        let result = f();
        drop(installed);
        let left = self.0.get();
        match left.exceeded {
            Some(resource) => Err(resource.describe(limit(&left.budget, resource))),
            None => result,
        }
    }
}

/// The account in force on this thread, put back as it was (and what was spent kept) however
/// the evaluation ends, a panic included.
struct Installed<'a> {
    account: &'a Account,
    previous: Option<Left>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Some(left) = CURRENT.replace(self.previous) {
            self.account.0.set(left);
        }
    }
}

fn limit(budget: &Budget, resource: Resource) -> u64 {
    match resource {
        Resource::Iterations => budget.iterations,
        Resource::Elements => budget.elements,
        Resource::Bytes => budget.bytes,
    }
}

/// Takes `amount` of `resource` from the budget in force; the error names the budget. With no
/// budget in force (only tests evaluate outside a scope) nothing is counted.
pub(crate) fn charge(resource: Resource, amount: u64) -> Result<(), String> {
    CURRENT.with(|current| {
        let Some(mut left) = current.get() else {
            return Ok(());
        };
        if left.exceeded.is_none() {
            let counter = match resource {
                Resource::Iterations => &mut left.iterations,
                Resource::Elements => &mut left.elements,
                Resource::Bytes => &mut left.bytes,
            };
            match counter.checked_sub(amount) {
                Some(rest) => *counter = rest,
                None => {
                    *counter = 0;
                    left.exceeded = Some(resource);
                }
            }
            current.set(Some(left));
        }
        match left.exceeded {
            Some(resource) => Err(resource.describe(limit(&left.budget, resource))),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Budget {
        Budget {
            iterations: 3,
            elements: 10,
            bytes: 100,
        }
    }

    #[test]
    fn charges_add_up_across_runs_of_one_account() {
        let account = Account::new(small());
        let tick = || charge(Resource::Iterations, 1);
        assert_eq!(account.run(|| tick().and_then(|()| tick())), Ok(()));
        assert_eq!(account.run(tick), Ok(()));
        let message = account.run(tick).expect_err("fourth iteration");
        assert_eq!(
            message,
            "CEL budget exceeded: more than 3 comprehension iterations for one event \
             (celBudget.iterations)"
        );
        // Other accounts and the thread outside a run are unaffected.
        assert_eq!(Account::new(small()).run(tick), Ok(()));
        assert_eq!(charge(Resource::Bytes, u64::MAX), Ok(()));
    }

    #[test]
    fn an_exceeded_budget_fails_the_run_even_if_the_error_was_swallowed() {
        let account = Account::new(small());
        let result = account.run(|| {
            let _ignored = charge(Resource::Bytes, 101);
            Ok("absorbed")
        });
        assert!(result.expect_err("exceeded").contains("celBudget.bytes"));
        // Nested runs (a constant folded inside an evaluation) restore the outer account.
        let outer = Account::new(small());
        let result = outer.run(|| {
            Account::new(small()).run(|| charge(Resource::Elements, 5))?;
            charge(Resource::Elements, 10)
        });
        assert_eq!(result, Ok(()));
    }
}
