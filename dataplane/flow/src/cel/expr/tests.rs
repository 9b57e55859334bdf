//! Compiling expressions: Fiso's rewrites of CEL, load-time checks, constants, paths, cost marks.

use super::*;

fn error(source: &str) -> String {
    CompiledExpr::compile(source).expect_err(source)
}

#[test]
fn valid_expressions_compile() {
    for source in [
        "data.price * data.quantity",
        "has(data.x) ? data.x : null",
        "data.items.map(i, i.price)",
        "data.items.exists(i, i.tags.all(t, t != ''))",
        "math.ceil(1.5) + math.greatest(1, 2, 3)",
        "greatest(1, 2, 3) + least(data.a, 2)",
        "strings.quote('x')",
        "base64.encode(b'x')",
        "optional.of(1).hasValue()",
        "type(data) == map && type(1) == int",
        "'x'.upperAscii()",
        "{'id': data.id, 'at': time, 'type': type}",
        " data.x ",
    ] {
        if let Err(e) = CompiledExpr::compile(source) {
            panic!("{source}: {e}");
        }
    }
}

/// Fuzzing regressions: nested comprehensions multiply the work (a constant expression is
/// evaluated while compiling, so this one took 5 s to load; the second ran out of memory on
/// a 30-element `data.l`).
#[test]
fn deeply_nested_comprehensions_are_refused() {
    let l = "[0,1,2,3,4,5,6,7,8,9]";
    let constant =
        format!("{l}.map(x0, {l}.map(x1, {l}.map(x2, {l}.map(x3, {l}.map(x4, {l}.map(x5, 1))))))");
    assert!(error(&constant).starts_with("comprehensions"), "{constant}");
    let payload = "data.l.map(a, data.l.map(b, data.l.map(c, data.l.map(d, data.l))))";
    let message = error(payload);
    assert!(message.contains("more than 3 deep"), "{message}");
    // Three levels, and comprehensions in sequence or in a range, are fine.
    for source in [
        "data.l.map(a, data.l.map(b, data.l.exists(c, c == a + b)))",
        "data.l.map(a, a).filter(b, b > 1).map(c, c).all(d, d > 0)",
        "data.l.filter(a, a > 1).map(b, data.l.map(c, data.l.filter(d, d > b).size()))",
    ] {
        if let Err(e) = CompiledExpr::compile(source) {
            panic!("{source}: {e}");
        }
    }
}

#[test]
fn undeclared_identifiers_are_compile_errors() {
    assert!(error("pending").starts_with("undeclared reference `pending`"));
    assert!(error("price * data.quantity").contains("`data.price`"));
    assert!(error("data.items.map(i, j)").starts_with("undeclared reference `j`"));
}

#[test]
fn syntax_errors_say_where() {
    let message = error("data.price *");
    assert!(message.starts_with("invalid CEL at column"), "{message}");
    assert_eq!(error("  "), "empty expression");
}

#[test]
fn jsonpath_is_explained() {
    assert_eq!(
        error("$.legacy_id"),
        "JSONPath `$.legacy_id` is not supported: JSONPath `$.x` was replaced by CEL \
         `data.x` in v0.8 (write `data.legacy_id`)"
    );
    assert!(error("$").contains("(write `data`)"));
}

#[test]
fn constant_expressions_are_evaluated_once_and_checked() {
    let status = CompiledExpr::compile(r#""pending""#).expect("compiles");
    assert_eq!(status.constant(), Some(&Json::String("pending".into())));
    let list = CompiledExpr::compile("[1, 2].map(x, x * 2)").expect("compiles");
    assert_eq!(list.constant(), Some(&serde_json::json!([2, 4])));
    assert_eq!(
        CompiledExpr::compile("data.x")
            .expect("compiles")
            .constant(),
        None
    );
    // A comprehension variable named like a scope variable shadows it.
    let shadow = CompiledExpr::compile("[1].map(data, data + 1)").expect("compiles");
    assert_eq!(shadow.constant(), Some(&serde_json::json!([2])));
    assert_eq!(
        error("'a' + 1"),
        "always fails: found no matching overload for '_+_' applied to '(string, int)'"
    );
    assert_eq!(error("1 / 0"), "always fails: division by zero");
}

#[test]
fn field_access_on_values_becomes_indexing() {
    let expr = CompiledExpr::compile("data.a.b").expect("compiles");
    let Expr::Call(outer) = &expr.ast().expr else {
        panic!("{:?}", expr.ast())
    };
    assert_eq!(outer.func_name, operators::INDEX);
    assert!(
        matches!(&outer.args[0].expr, Expr::Call(inner) if inner.func_name == operators::INDEX)
    );
    // `has()` keeps its test; qualified names that may be types stay selects.
    let has = CompiledExpr::compile("has(data.a)").expect("compiles");
    assert!(matches!(&has.ast().expr, Expr::Select(s) if s.test));
    let typed = CompiledExpr::compile("type(data) == google.protobuf.Timestamp").expect("compiles");
    assert!(format!("{:?}", typed.ast()).contains("Select"));
}

#[test]
fn operators_keep_cel_where_it_gives_the_same() {
    let root_call = |source: &str| match &CompiledExpr::compile(source).expect(source).ast.expr {
        Expr::Call(call) => call.func_name.clone(),
        other => panic!("{other:?}"),
    };
    for (source, function) in [
        ("data.a + data.b", functions::ADD),
        ("data.a + 1", functions::ADD),
        // `+` is always Fiso's: it charges the budget for what it concatenates.
        ("data.a + ' '", functions::ADD),
        ("data.a + ' ' + data.b", functions::ADD),
        ("data.l + [1]", functions::ADD),
        ("data.a * 2", functions::MUL),
        ("data.a == data.b", functions::EQ),
        ("data.a == 'x'", operators::EQUALS),
        ("data.a != null", operators::NOT_EQUALS),
        ("data.l == [1]", functions::EQ),
        ("data.a in data.l", functions::IN),
        ("data.a in ['x', 1]", operators::IN),
        ("data.a in [data.b]", functions::IN),
        ("data.a in {'x': 1}", operators::IN),
    ] {
        assert_eq!(root_call(source), function, "{source}");
    }
}

/// Fuzzing and review findings: each of these crashed or stalled `fiso flow` before the
/// bounds existed, and each must be refused here, cleanly, as in `fiso validate`.
#[test]
fn expressions_beyond_the_bounds_are_refused_with_the_limit() {
    let chain = format!("data{}", ".a".repeat(5_000));
    assert_eq!(
        error(&chain),
        "the expression nests 5001 levels deep; the limit is 128"
    );
    let sum = vec!["data.s"; 2_000].join(" + ");
    assert!(error(&sum).contains("the limit is 128"), "{sum}");
    // A syntax error past column 65,535 panicked inside the parser.
    let long = format!("data.x + {})", "1 + ".repeat(16_500));
    assert_eq!(
        error(&long),
        "the expression is 66010 bytes long; the limit is 32768 bytes"
    );
}

#[test]
fn the_deepest_accepted_expressions_evaluate_on_the_eval_stack() {
    use fiso_config::cel_check::{on_eval_stack, MAX_EXPRESSION_DEPTH};
    // `data` and 127 selections: exactly the bound.
    let chain = format!("data{}", ".a".repeat(MAX_EXPRESSION_DEPTH - 1));
    // 126 `+` over `data.n` (a selection on a variable: two levels).
    let sum = vec!["data.n"; MAX_EXPRESSION_DEPTH - 1].join(" + ");
    let mut nested = serde_json::json!(1);
    for _ in 1..MAX_EXPRESSION_DEPTH {
        nested = serde_json::json!({ "a": nested });
    }
    let data = serde_json::json!({"a": nested["a"], "n": 1});
    for (source, expected) in [
        (chain.as_str(), serde_json::json!(1)),
        (&sum, serde_json::json!(127)),
    ] {
        let expr = CompiledExpr::compile(source).expect(source);
        assert_eq!(
            fiso_config::cel_check::depth(expr.ast()),
            MAX_EXPRESSION_DEPTH
        );
        let data = data.clone();
        let value = on_eval_stack(move || {
            let flow = crate::FlowDefaults::new("t");
            let input = crate::InputEvent::from_json(data, flow.event()).expect("input");
            // Bypass the direct read of plain field paths: the interpreter must recurse.
            let scope = crate::Scope::new(&input);
            scope.eval_with(&expr, |v| {
                crate::cel::value::val_to_json(v).map_err(|e| e.to_string())
            })
        })
        .expect("thread");
        assert_eq!(value, Ok(expected), "{source}");
    }
    assert!(error(&format!("{chain}.a")).contains("nests 129 levels"));
}

#[test]
fn a_parser_panic_is_an_error() {
    let failure = fiso_config::cel_check::parse_bounded(
        "x",
        |_| -> Result<IdedExpr, String> { panic!("inside the parser") },
        |ast| ast,
    );
    assert_eq!(
        failure.expect_err("panicked").to_string(),
        "the CEL parser could not handle it"
    );
}

#[test]
fn greatest_needs_arguments() {
    assert_eq!(
        error("greatest()"),
        "greatest() needs at least one argument"
    );
}

#[test]
fn what_of_data_an_expression_reads_is_known() {
    let read = |source: &str| {
        let mut fields = Fields::default();
        let named = CompiledExpr::compile(source)
            .expect(source)
            .data_fields(&mut fields);
        named.then_some(fields)
    };
    let expect = |reads: &[(&str, Read)]| {
        let mut fields = Fields::default();
        for (path, read) in reads {
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            fields.add(&path, read.clone());
        }
        fields
    };
    use Read::{Count, Whole};
    for (source, expected) in [
        ("data.customer.name", &[("customer.name", Whole)][..]),
        (
            "data.customer.name + data['customer']['tier']",
            &[("customer.name", Whole), ("customer.tier", Whole)],
        ),
        (
            "data.customer.name == '' ? data.customer : {}",
            &[("customer", Whole)],
        ),
        ("data['a'] + data.b * 2", &[("a", Whole), ("b", Whole)]),
        (
            "has(data.x) ? data.x : data.y.z",
            &[("x", Whole), ("y.z", Whole)],
        ),
        (
            "data.items.map(i, i.qty * data.factor)",
            &[("factor", Whole), ("items", Whole)],
        ),
        ("size(data.items) + data.items.size()", &[("items", Count)]),
        (
            "size(data.items) > 1 ? data.items[1] : 0",
            &[("items", Whole)],
        ),
        ("size(data.c) + size(data.c.name)", &[("c", Whole)]),
        ("{'id': id, 'k': [data.k]}", &[("k", Whole)]),
        ("'constant'", &[]),
        ("time", &[]),
    ] {
        assert_eq!(read(source), Some(expect(expected)), "{source}");
    }
    for source in [
        "data",
        "size(data)",
        "'a' in data",
        "data[id]",
        "data.items.exists(x, x == data)",
        "[data.a].map(data, data)",
        "type(data) == map",
        "data.all(k, k != '')",
    ] {
        assert_eq!(read(source), None, "{source} reads data whole");
    }
}
