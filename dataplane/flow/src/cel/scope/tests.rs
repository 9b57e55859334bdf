//! The scope's evaluations: variables, Fiso's operators and functions, budgets, errors.

use super::*;
use crate::FlowDefaults;
use serde_json::json;

fn input(data: Json) -> InputEvent {
    let flow = FlowDefaults::new("test");
    let at = chrono::DateTime::parse_from_rfc3339("2026-02-06T22:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    InputEvent::from_json(data, flow.event().with_id("evt-1").received_at(at)).expect("input")
}

fn eval(expr: &str, data: Json) -> Result<Json, String> {
    let event = input(data);
    let compiled = CompiledExpr::compile(expr)?;
    let result = Scope::new(&event).eval(&compiled);
    result.map_err(|e| e.to_string())
}

#[test]
fn the_six_variables() {
    let data = json!({"k": 1});
    assert_eq!(eval("data", data.clone()), Ok(data.clone()));
    assert_eq!(eval("id", data.clone()), Ok(json!("evt-1")));
    assert_eq!(eval("source", data.clone()), Ok(json!("fiso-flow/test")));
    assert_eq!(eval("type", data.clone()), Ok(json!("fiso.event")));
    assert_eq!(eval("subject", data.clone()), Ok(json!(null)));
    assert_eq!(
        eval("time", data.clone()),
        Ok(json!("2026-02-06T22:00:00Z"))
    );
    assert_eq!(
        eval("timestamp(time) > timestamp('2026-01-01T00:00:00Z')", data),
        Ok(json!(true))
    );
}

#[test]
fn carried_data_is_still_read_as_json_if_an_expression_reads_it() {
    let flow = FlowDefaults::new("test");
    let carried = crate::event::carried_json::CarriedJson::read(&bytes::Bytes::from_static(
        br#"{"a":{"b":[1,2.5]}}"#,
    ))
    .expect("in its written form");
    let event = InputEvent::from_payload(Data::CarriedJson(carried), flow.event());
    let scope = Scope::new(&event);
    for (expr, want) in [
        ("data.a.b[1]", json!(2.5)),
        ("size(data.a.b)", json!(2)),
        ("data", json!({"a": {"b": [1, 2.5]}})),
    ] {
        let compiled = CompiledExpr::compile(expr).expect("compiles");
        assert_eq!(scope.eval(&compiled).map_err(|e| e.to_string()), Ok(want));
    }
}

#[test]
fn mixed_int_and_double_arithmetic() {
    let data =
        json!({"price": 10.5, "quantity": 3, "a": 2.5, "amount": 99.99, "n": 7, "big": u64::MAX});
    assert_eq!(
        eval("data.price * data.quantity", data.clone()),
        Ok(json!(31.5))
    );
    assert_eq!(
        eval("data.quantity * data.price", data.clone()),
        Ok(json!(31.5))
    );
    assert_eq!(
        eval("data.price * data.quantity * 0.9", data.clone()),
        Ok(json!(28.35))
    );
    assert_eq!(eval("data.a + 1", data.clone()), Ok(json!(3.5)));
    assert_eq!(eval("1 + data.a", data.clone()), Ok(json!(3.5)));
    assert_eq!(eval("data.a - 1", data.clone()), Ok(json!(1.5)));
    assert_eq!(eval("data.n / 2.0", data.clone()), Ok(json!(3.5)));
    assert_eq!(eval("data.amount > 1000", data.clone()), Ok(json!(false)));
    assert_eq!(eval("data.amount < 100", data.clone()), Ok(json!(true)));
    assert_eq!(eval("data.quantity == 3.0", data.clone()), Ok(json!(true)));
    // Same-type arithmetic keeps CEL's semantics.
    assert_eq!(eval("data.n / 2", data.clone()), Ok(json!(3)));
    assert_eq!(eval("data.n + 1", data.clone()), Ok(json!(8)));
    assert_eq!(eval("data.big - 1", data.clone()), Ok(json!(u64::MAX - 1)));
    assert_eq!(eval("data.big - data.big", data.clone()), Ok(json!(0)));
    assert_eq!(
        eval("data.big + 1", data.clone()).map_err(|e| e.contains("overflow")),
        Err(true)
    );
    assert_eq!(
        eval("data.n / 0", data.clone()),
        Err("division by zero".to_owned())
    );
    assert_eq!(eval("'a' + 'b'", data.clone()), Ok(json!("ab")));
    assert_eq!(eval("[1] + [2.5]", data.clone()), Ok(json!([1, 2.5])));
    assert_eq!(
        eval("'a' + data.n", data),
        Err("found no matching overload for '_+_' applied to '(string, int)'".to_owned())
    );
}

#[test]
fn functions_users_expect() {
    let data = json!({"s": "MiXed", "xs": [3, 1.5, 2],
                      "items": [{"price": 10.5, "qty": 2}, {"price": 2, "qty": 1}]});
    let cases = [
        ("data.s.upperAscii()", json!("MIXED")),
        ("data.s.lowerAscii()", json!("mixed")),
        ("size(data.s)", json!(5)),
        (
            "data.s.contains('Xe') && data.s.startsWith('Mi') && data.s.endsWith('ed')",
            json!(true),
        ),
        ("data.s.matches('^M.*d$')", json!(true)),
        ("string(42) + string(1.5)", json!("421.5")),
        ("int('7') + int(2.9)", json!(9)),
        ("double(3)", json!(3.0)),
        ("has(data.s) && !has(data.nope)", json!(true)),
        ("least(3, 1.5, 2)", json!(1.5)),
        ("greatest(3, 1.5)", json!(3)),
        ("greatest(data.xs)", json!(3)),
        ("math.least(data.xs[0], data.xs[1])", json!(1.5)),
        ("math.greatest(1, 2, 3)", json!(3)),
        ("data.s.replace('X', 'x')", json!("Mixed")),
        ("'a,b'.split(',')", json!(["a", "b"])),
        ("data.xs.map(x, x * 2)", json!([6, 3.0, 4])),
        ("data.items.map(i, i.price * i.qty)", json!([21.0, 2])),
        ("data.items.filter(i, i.qty > 1).size()", json!(1)),
        ("base64.encode(b'hi')", json!("aGk=")),
    ];
    for (expr, expected) in cases {
        assert_eq!(eval(expr, data.clone()), Ok(expected), "{expr}");
    }
}

#[test]
fn equality_of_lists_and_maps_is_symmetric() {
    let data = json!({"tags": ["a", "b"], "o": {"k": 1}});
    for expr in [
        "data.tags == ['a', 'b']",
        "['a', 'b'] == data.tags",
        "{'k': 1} == data.o",
        "data.o == {'k': 1.0}",
        "['a'] != data.tags",
        "data.o in [{'k': 1}]",
        "{'k': 1} in [data.o]",
        "'a' in data.tags",
        "'k' in data.o",
        "!('z' in data.o)",
    ] {
        assert_eq!(eval(expr, data.clone()), Ok(json!(true)), "{expr}");
    }
}

#[test]
fn missing_fields_are_errors_unless_guarded() {
    let data = json!({"a": {"b": 1}});
    assert_eq!(
        eval("data.nope", data.clone()),
        Err("no such key: nope".to_owned())
    );
    assert_eq!(
        eval("data.a.c", data.clone()),
        Err("no such key: c".to_owned())
    );
    assert_eq!(
        eval("has(data.x) ? data.x : 'none'", data),
        Ok(json!("none"))
    );
}

#[test]
fn field_mappings_read_directly_give_what_cel_gives() {
    let data = json!({"a": {"b": [1, 2.5, "x"], "n": null, "u": u64::MAX, "f": 1.0}, "s": "t"});
    let event = input(data);
    let scope = Scope::new(&event);
    for expr in [
        "data",
        "data.a",
        "data.a.b",
        "data.a.n",
        "data.a.u",
        "data.a.f",
        "data['a']['b']",
        "data.s",
        "id",
        "source",
        "type",
        "subject",
        "time",
        // Paths that don't resolve: CEL reports the error.
        "data.nope",
        "data.a.nope.x",
        "data.s.x",
        "data.a.b.x",
    ] {
        let compiled = CompiledExpr::compile(expr).expect("compiles");
        assert!(compiled.path().is_some(), "{expr}");
        let via_cel = scope.eval_with(&compiled, |val| val_to_json(val).map_err(|e| e.to_string()));
        assert_eq!(scope.eval(&compiled), via_cel, "{expr}");
        if let Ok(value) = &via_cel {
            assert_eq!(
                crate::event::json::to_string_plain(value).ok(),
                scope
                    .read(compiled.path().expect("path"))
                    .and_then(|v| crate::event::json::to_string_plain(&v).ok()),
                "{expr}"
            );
        }
    }
    assert_eq!(
        scope.eval(&CompiledExpr::compile("data.nope").expect("compiles")),
        Err(EvalError::new("no such key: nope"))
    );
    for not_a_path in [
        "data.a.b[0]",
        "data.s + ''",
        "[1].map(data, data)",
        "time.x",
    ] {
        let compiled = CompiledExpr::compile(not_a_path).expect("compiles");
        assert!(compiled.path().is_none(), "{not_a_path}");
    }
}

fn eval_within(expr: &str, data: Json, budget: Budget) -> Result<Json, String> {
    let event = input(data);
    let compiled = CompiledExpr::compile(expr)?;
    let result = Scope::with_budget(&event, budget).eval(&compiled);
    result.map_err(|e| e.to_string())
}

fn budget(iterations: u64, elements: u64, bytes: u64) -> Budget {
    Budget {
        iterations,
        elements,
        bytes,
    }
}

/// The issue's finding: 2,500 × 2,500 iterations per event took 5–10 s on a worker.
#[test]
fn loops_stop_at_the_iteration_budget() {
    let data = json!({"l": (0..2_500).collect::<Vec<_>>()});
    let message =
        eval("size(data.l.map(x, data.l.map(y, x + y)))", data.clone()).expect_err("over budget");
    assert_eq!(
        message,
        "CEL budget exceeded: more than 100000 comprehension iterations for one event \
         (celBudget.iterations)"
    );
    // Every kind of loop is counted, filters' and quantifiers' too.
    for expr in [
        "data.l.filter(x, data.l.exists(y, y == x + 2500))",
        "data.l.all(x, data.l.all(y, y >= 0))",
        "data.l.exists_one(x, data.l.exists_one(y, y == -1))",
        "data.l.exists(x, data.l.exists(y, y < 0)) || true",
    ] {
        assert!(
            eval(expr, data.clone()).is_err_and(|e| e.contains("celBudget.iterations")),
            "{expr}"
        );
    }
    // Within the budget the same loops give CEL's answers.
    let small = json!({"l": [1, 2, 3]});
    assert_eq!(
        eval(
            "data.l.map(x, data.l.filter(y, y > x).size())",
            small.clone()
        ),
        Ok(json!([2, 1, 0]))
    );
    assert_eq!(eval("data.l.all(x, x > 0)", small), Ok(json!(true)));
    // A raised budget lets a loop over the default finish (400 × 400 > 100000).
    let data = json!({"l": (0..400).collect::<Vec<_>>()});
    let expr = "size(data.l.map(x, data.l.map(y, x + y)))";
    assert!(eval(expr, data.clone()).is_err());
    assert_eq!(
        eval_within(expr, data, budget(200_000, 200_000, 1 << 20)),
        Ok(json!(400))
    );
}

#[test]
fn what_strings_and_lists_grow_to_is_charged_before_it_is_made() {
    let data = json!({"s": "x".repeat(1000), "l": ["a", "b", "c"], "n": [1, 1, 2]});
    let tight = budget(1_000, 1_000, 10_000);
    let over = |expr: &str, data: Json| eval_within(expr, data, tight).expect_err(expr);
    // A replacement of every position by a long string multiplies the input.
    assert!(over("data.s.replace('', data.s)", data.clone()).contains("celBudget.bytes"));
    assert!(over(
        "data.l.join(data.s + data.s + data.s + data.s)",
        data.clone()
    )
    .contains("celBudget.bytes"));
    let chain = ["data.s"; 11].join(" + ");
    assert!(over(&chain, data.clone()).contains("celBudget.bytes"));
    // The result is charged as it becomes JSON: a cheap expression, a large output.
    let big_list = json!({"l": (0..2_000).collect::<Vec<_>>()});
    assert!(over("data.l + data.l", big_list.clone()).contains("celBudget.elements"));
    // `distinct` compares every pair it keeps.
    assert!(over("data.l.distinct()", big_list).contains("celBudget.iterations"));
    // Within the budget they behave as CEL's own.
    assert_eq!(
        eval_within("'a-b'.replace('-', '+')", data.clone(), tight),
        Ok(json!("a+b"))
    );
    assert_eq!(
        eval_within("'aaa'.replace('a', 'b', 2)", data.clone(), tight),
        Ok(json!("bba"))
    );
    assert_eq!(
        eval_within("'ab'.replace('', '.')", data.clone(), tight),
        Ok(json!(".a.b."))
    );
    assert_eq!(
        eval_within("data.l.join()", data.clone(), tight),
        Ok(json!("abc"))
    );
    assert_eq!(
        eval_within("data.l.join(', ')", data.clone(), tight),
        Ok(json!("a, b, c"))
    );
    assert_eq!(
        eval_within("data.n.distinct()", data.clone(), tight),
        Ok(json!([1, 2]))
    );
    assert!(eval_within("[1].join()", data, tight).is_err_and(|e| e.contains("not a string")));
}

#[test]
fn constants_are_folded_within_the_budget() {
    let l = format!(
        "[{}]",
        (0..250)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let expr = format!("{l}.map(x, {l}.map(y, {l}.map(z, x + y + z)))");
    let message = CompiledExpr::compile(&expr).expect_err("over budget");
    assert!(
        message.starts_with("always fails: CEL budget exceeded"),
        "{message}"
    );
    let within = CompiledExpr::compile_with("[1, 2].map(x, [3, 4].map(y, x * y))", Budget::DEFAULT)
        .expect("compiles");
    assert_eq!(within.constant(), Some(&json!([[3, 4], [6, 8]])));
    assert!(
        CompiledExpr::compile_with("[1, 2, 3].map(x, x)", budget(2, 100, 100))
            .is_err_and(|e| e.contains("celBudget.iterations"))
    );
}

#[test]
fn scopes_are_independent_and_borrow_the_event() {
    let first = input(json!({"n": 1}));
    let second = input(json!({"n": 2}));
    let expr = CompiledExpr::compile("data.n * 10").expect("compiles");
    assert_eq!(Scope::new(&first).eval(&expr), Ok(json!(10)));
    assert_eq!(Scope::new(&second).eval(&expr), Ok(json!(20)));
}
