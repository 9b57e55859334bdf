//! The CEL transform (`transform.fields`, compiled once, evaluated per event) against
//! hand-written serde_json code producing the identical output, for ten shapes of transform.
//! `cargo bench -p fiso-flow --bench transform`; `cargo xtask bench` reports the ratios.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fiso_flow::{FlowDefaults, InputEvent, Scope, Transformer};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};

type Hand = fn(&Value) -> Value;

/// One transform shape: its name, `transform.fields`, the input data, the hand-written equal.
type Case = (&'static str, Vec<(&'static str, &'static str)>, Value, Hand);

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<_, _>>(),
    )
}

fn cases() -> Vec<Case> {
    let order = json!({
        "id": "ORD-1", "customer": {"name": "ada", "address": {"city": "London"}},
        "price": 12.5, "qty": 3, "flag": true, "amount": 150,
        "a": 1, "b": "two", "c": 3.5,
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": "bottom"}}}}}}
    });
    let mut large = order.clone();
    for i in 0..500 {
        large[format!("field_{i}")] = json!({"n": i, "text": "lorem ipsum dolor sit amet"});
    }
    vec![
        (
            "simple mapping",
            vec![("order_id", "data.id"), ("customer", "data.customer.name")],
            order.clone(),
            |d| {
                obj(vec![
                    ("order_id", d["id"].clone()),
                    ("customer", d["customer"]["name"].clone()),
                ])
            },
        ),
        (
            "computation",
            vec![("total", "data.price * data.qty * 1.2")],
            order.clone(),
            |d| {
                obj(vec![(
                    "total",
                    json!(d["price"].as_f64().unwrap() * d["qty"].as_f64().unwrap() * 1.2),
                )])
            },
        ),
        (
            "nested structure",
            vec![
                ("name", "data.customer.name"),
                ("city", "data.customer.address.city"),
            ],
            order.clone(),
            |d| {
                obj(vec![
                    ("name", d["customer"]["name"].clone()),
                    ("city", get(d, &["customer", "address", "city"]).clone()),
                ])
            },
        ),
        (
            "string ops",
            vec![
                ("upper", "data.customer.name.upperAscii()"),
                ("greeting", "'Hello ' + data.customer.name"),
            ],
            order.clone(),
            |d| {
                let n = d["customer"]["name"].as_str().unwrap();
                obj(vec![
                    ("upper", json!(n.to_ascii_uppercase())),
                    ("greeting", json!(format!("Hello {n}"))),
                ])
            },
        ),
        (
            "complex expression",
            vec![
                ("size", "data.amount > 100 ? 'big' : 'small'"),
                ("ok", "has(data.flag) && data.flag && data.qty >= 3"),
            ],
            order.clone(),
            |d| {
                obj(vec![
                    (
                        "size",
                        json!(if d["amount"].as_i64().unwrap() > 100 {
                            "big"
                        } else {
                            "small"
                        }),
                    ),
                    (
                        "ok",
                        json!(
                            d.get("flag").is_some()
                                && d["flag"].as_bool().unwrap()
                                && d["qty"].as_i64().unwrap() >= 3
                        ),
                    ),
                ])
            },
        ),
        (
            "large payload",
            vec![
                ("order_id", "data.id"),
                ("n", "data.field_499.n"),
                ("city", "data.customer.address.city"),
            ],
            large,
            |d| {
                obj(vec![
                    ("order_id", d["id"].clone()),
                    ("n", d["field_499"]["n"].clone()),
                    ("city", get(d, &["customer", "address", "city"]).clone()),
                ])
            },
        ),
        ("passthrough", vec![], order.clone(), |d| d.clone()),
        (
            "list construction",
            vec![("items", "[data.a, data.b, data.c]")],
            order.clone(),
            |d| obj(vec![("items", json!([d["a"], d["b"], d["c"]]))]),
        ),
        (
            "multiple fields",
            vec![
                ("f1", "data.id"),
                ("f2", "data.price"),
                ("f3", "data.qty"),
                ("f4", "data.flag"),
                ("f5", "data.amount"),
                ("f6", "data.a"),
                ("f7", "data.b"),
                ("f8", "data.c"),
                ("f9", "data.customer.name"),
                ("f10", "data.customer.address.city"),
            ],
            order.clone(),
            |d| {
                obj(vec![
                    ("f1", d["id"].clone()),
                    ("f2", d["price"].clone()),
                    ("f3", d["qty"].clone()),
                    ("f4", d["flag"].clone()),
                    ("f5", d["amount"].clone()),
                    ("f6", d["a"].clone()),
                    ("f7", d["b"].clone()),
                    ("f8", d["c"].clone()),
                    ("f9", d["customer"]["name"].clone()),
                    ("f10", get(d, &["customer", "address", "city"]).clone()),
                ])
            },
        ),
        (
            "deep nesting",
            vec![("bottom", "data.deep.a.b.c.d.e.f")],
            order,
            |d| {
                obj(vec![(
                    "bottom",
                    get(d, &["deep", "a", "b", "c", "d", "e", "f"]).clone(),
                )])
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let defaults = FlowDefaults::new("bench");
    for (name, fields, data, hand) in cases() {
        let transformer = if fields.is_empty() {
            Transformer::passthrough()
        } else {
            let map: IndexMap<String, String> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Transformer::compile(&map).expect("the bench transforms compile")
        };
        let input = InputEvent::from_json(data.clone(), defaults.event()).expect("valid input");
        let cel = transformer
            .transform(&Scope::new(&input))
            .expect("evaluates");
        assert_eq!(
            cel,
            hand(&data),
            "{name}: CEL and hand-written outputs differ"
        );
        let mut group = c.benchmark_group(name);
        group.bench_function("cel", |b| {
            b.iter(|| {
                transformer
                    .transform(&Scope::new(black_box(&input)))
                    .unwrap()
            })
        });
        group.bench_function("serde_json", |b| b.iter(|| hand(black_box(&data))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
