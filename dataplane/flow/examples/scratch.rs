use cel::common::value::Val;
use cel::{Context, Env, Value};
use std::sync::Arc;

fn assert_sync<T: Send + Sync>() {}

fn main() {
    assert_sync::<Context<'static, 'static>>();
    assert_sync::<Env>();
    let t = std::time::Instant::now();
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings).unwrap();
    env.add_extension(cel::extensions::math).unwrap();
    env.add_extension(cel::extensions::lists).unwrap();
    println!("env build {:?}", t.elapsed());
    let env = Arc::new(env);
    let root: Context<'static, 'static> = Context::with_env(env.clone());
    let s = String::from("hello");
    for src in [
        "data.price * data.quantity",
        "data.a + 1",
        "data.amount > 1000",
        "1 > 99.99",
        "'Abc'.upperAscii()",
        "math.greatest(1, 2.5, 3)",
        "size('abc')",
        "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c') && 'abc'.matches('^a')",
        "string(1) + string(1.5) + string(true)",
        "int('12') + int(2.9)",
        "double(3)",
        "has(data.x)",
        "data.nope",
        "{'b': 1, 'a': 2}",
        "[1, 2.5] == [1, 2.5]",
        "1 == 1.0",
        "timestamp('2024-01-01T00:00:00Z')",
        "duration('1.5s')",
        "b'abc'",
        "5 / 2",
        "data.s.lowerAscii()",
        "'a,b'.split(',')",
        "[3,1,2].sort()",
        "base64.encode(b'x')",
    ] {
        let mut ctx = root.new_inner_scope();
        let mut m = std::collections::HashMap::new();
        m.insert("price", Value::Float(10.5));
        m.insert("quantity", Value::Int(3));
        m.insert("a", Value::Float(2.5));
        m.insert("amount", Value::Float(99.99));
        let data: Value = m.into();
        let data: Box<dyn Val> = data.try_into().unwrap();
        ctx.add_variable_as_val("data", data);
        let inner = cel::common::types::CelString::from(s.as_str());
        ctx.add_variable_as_val("s", Box::new(inner));
        let r = env.compile(src).map_err(|e| e.to_string()).and_then(|p| Value::resolve(p.expression(), &ctx).map_err(|e| e.to_string()));
        println!("{src:60} => {r:?}");
    }
}
