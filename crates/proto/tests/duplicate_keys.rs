//! Invariant I9 for repeated member names: `docs/protocol.md` says a message has no repeated
//! member names, so a frame with one is an error (never "last one wins"), in the envelope and
//! in every object nested anywhere below it, free-form values included.

#![cfg(test)]

use p3ak_proto::{
    DEFAULT_MAX_FRAME, Envelope, HEADER_LEN, Message, ProtoError, decode, encode, from_slice_strict,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Asserts that `payload` is refused as a repeated key and that the error names `key`.
fn refused(payload: &str, key: &str) {
    match decode(payload.as_bytes()) {
        Err(ProtoError::Invalid(message)) => assert!(
            message.contains(&format!("duplicate key `{key}`")),
            "{payload}: {message}"
        ),
        other => panic!("{payload}: expected a duplicate key error, got {other:?}"),
    }
}

#[test]
fn invariant_i9_duplicate_type_is_refused() {
    // Last-wins would make this a `shutdown`; first-wins a `ping`. Neither: it is refused.
    refused(r#"{"v":1,"id":1,"type":"ping","type":"shutdown"}"#, "type");
    refused(r#"{"v":1,"id":1,"type":"ping","type":"ping"}"#, "type");
}

#[test]
fn invariant_i9_duplicate_envelope_fields_are_refused() {
    refused(r#"{"v":1,"id":1,"id":2,"type":"ping"}"#, "id");
    refused(r#"{"v":1,"v":1,"id":1,"type":"pong"}"#, "v");
    refused(
        r#"{"v":1,"id":4,"type":"invoke","agent":"a","action":"read","agent":"b","args":{}}"#,
        "agent",
    );
}

#[test]
fn invariant_i9_duplicate_key_in_nested_args_is_refused() {
    refused(
        r#"{"v":1,"id":2,"type":"invoke","agent":"a","action":"pay","args":{"amount":1,"amount":1000000}}"#,
        "amount",
    );
    refused(
        r#"{"v":1,"id":2,"type":"invoke","agent":"a","action":"pay","args":{"to":{"iban":"X","bic":"Y","iban":"Z"}}}"#,
        "iban",
    );
    refused(
        r#"{"v":1,"id":1,"type":"welcome","version":1,"config":{"root":"/a","deep":{"x":[{"y":{"root":1,"root":2}}]}}}"#,
        "root",
    );
    refused(
        r#"{"v":1,"id":3,"type":"result","output":{"ok":true,"ok":false}}"#,
        "ok",
    );
}

#[test]
fn invariant_i9_duplicate_key_in_arrays_of_objects_is_refused() {
    refused(
        r#"{"v":1,"id":2,"type":"register","kind":"tool","actions":[{"name":"a","tier":"observe"},{"name":"b","tier":"observe","tier":"commit"}]}"#,
        "tier",
    );
    refused(
        r#"{"v":1,"id":5,"type":"inference_response","stop":"tool_use","tool_calls":[{"id":"c1","name":"files__read","arguments":{"path":"/etc/motd","path":"/etc/shadow"}}]}"#,
        "path",
    );
    refused(
        r#"{"v":1,"id":5,"type":"inference_request","messages":[{"role":"user","content":"hi"},{"role":"user","role":"assistant"}]}"#,
        "role",
    );
    refused(
        r#"{"v":1,"id":3,"type":"result","output":[[{"a":1}],[{"b":1,"b":1}]]}"#,
        "b",
    );
}

#[test]
fn invariant_i9_duplicate_key_written_with_different_escapes_is_refused() {
    // `"\u0061"` is `"a"` once unescaped; `"\u0074ype"` is `"type"`.
    refused(
        r#"{"v":1,"id":3,"type":"result","output":{"a":1,"\u0061":2}}"#,
        "a",
    );
    refused(
        r#"{"v":1,"id":1,"type":"ping","\u0074ype":"shutdown"}"#,
        "type",
    );
    refused(
        r#"{"v":1,"id":3,"type":"result","output":{"\/x":1,"/x":2}}"#,
        "/x",
    );
    // As docs/protocol.md shows it.
    assert_eq!(
        from_slice_strict::<Value>(br#"{"a":1,"\u0061":2}"#)
            .unwrap_err()
            .to_string(),
        "invalid message: duplicate key `a` at line 1 column 15"
    );
    // A surrogate pair against the character itself.
    refused(
        r#"{"v":1,"id":3,"type":"result","output":{"😀":1,"\ud83d\ude00":2}}"#,
        "😀",
    );
}

#[test]
fn invariant_i9_the_error_names_the_key_escaped_and_bounded() {
    let long = "k\"\n".repeat(10_000);
    let escaped = serde_json::to_string(&long).unwrap();
    let payload =
        format!(r#"{{"v":1,"id":3,"type":"result","output":{{{escaped}:1,{escaped}:2}}}}"#);
    let Err(ProtoError::Invalid(message)) = decode(payload.as_bytes()) else {
        panic!("a repeated long key is refused");
    };
    assert!(
        message.contains(r#"duplicate key `k\"\nk\"\n"#),
        "{message}"
    );
    assert!(message.len() < 300, "{} bytes: {message}", message.len());
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn invariant_i9_same_key_in_different_objects_is_fine() {
    let envelope = decode(
        br#"{"v":1,"id":3,"type":"result","output":{"a":{"a":1},"b":[{"a":2},{"a":3}],"c":{"b":{"a":4}}}}"#,
    )
    .unwrap();
    let Message::Result(result) = envelope.message else {
        panic!("a result");
    };
    assert_eq!(
        result.output,
        json!({"a":{"a":1},"b":[{"a":2},{"a":3}],"c":{"b":{"a":4}}})
    );
}

#[test]
fn invariant_i9_deep_nesting_is_an_error_not_a_crash() {
    for open in ["[", "{\"a\":"] {
        let deep = format!(
            r#"{{"v":1,"id":3,"type":"result","output":{}}}"#,
            open.repeat(100_000)
        );
        assert!(decode(deep.as_bytes()).is_err());
        assert!(from_slice_strict::<Value>(open.repeat(100_000).as_bytes()).is_err());
    }
    // Within serde_json's limit (128 levels), nesting is fine.
    let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(from_slice_strict::<Value>(ok.as_bytes()).is_ok());
}

#[test]
fn invariant_i9_a_wide_object_decodes() {
    // Many distinct keys: each is checked once, not against every other.
    let wide: serde_json::Map<String, Value> = (0..50_000)
        .map(|i| (format!("k{i}"), Value::from(i)))
        .collect();
    let payload = serde_json::to_vec(&json!({"v":1,"id":3,"type":"result","output":wide})).unwrap();
    assert!(payload.len() < DEFAULT_MAX_FRAME);
    let Message::Result(result) = decode(&payload).unwrap().message else {
        panic!("a result");
    };
    assert_eq!(result.output, Value::Object(wide));
}

#[test]
fn strict_parsing_of_other_types_refuses_repeated_keys() {
    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Request {
        command: String,
        args: Value,
    }
    let ok: Request = from_slice_strict(br#"{"command":"chat","args":{"text":"hi"}}"#).unwrap();
    assert_eq!(ok.args, json!({"text":"hi"}));
    for bad in [
        &br#"{"command":"chat","command":"stop","args":{}}"#[..],
        br#"{"command":"chat","args":{"text":"hi","text":"bye"}}"#,
        br#"{"command":"chat","args":{},"\u0061rgs":{}}"#,
    ] {
        assert!(
            matches!(from_slice_strict::<Request>(bad), Err(ProtoError::Invalid(m)) if m.contains("duplicate key")),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Syntax errors and trailing bytes are still JSON errors; type errors are invalid.
    assert!(matches!(
        from_slice_strict::<Request>(b"{\"command\":"),
        Err(ProtoError::Json(_))
    ));
    assert!(matches!(
        from_slice_strict::<Request>(br#"{"command":"chat","args":{}} x"#),
        Err(ProtoError::Json(_))
    ));
    assert!(matches!(
        from_slice_strict::<Request>(br#"{"command":1,"args":{}}"#),
        Err(ProtoError::Invalid(_))
    ));
}

/// Member names from a small alphabet (escapes and a non-ASCII letter included), so that
/// siblings often share names.
const KEY: &str = "[ab\\\\\"é]{0,2}";

/// JSON without floats.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((KEY, inner), 0..5).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// How many objects with at least one member `value` holds, itself included.
fn members(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(members).sum(),
        Value::Object(map) => {
            usize::from(!map.is_empty()) + map.values().map(members).sum::<usize>()
        }
        _ => 0,
    }
}

/// Writes `value` as JSON text, repeating the first member of the non-empty object numbered
/// `target` (in document order). Returns the key repeated, if `target` was reached.
fn write_with_repeat(
    value: &Value,
    target: usize,
    seen: &mut usize,
    out: &mut String,
) -> Option<String> {
    match value {
        Value::Array(items) => {
            out.push('[');
            let mut repeated = None;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                repeated = repeated.or(write_with_repeat(item, target, seen, out));
            }
            out.push(']');
            repeated
        }
        Value::Object(map) => {
            let this = *seen;
            if !map.is_empty() {
                *seen += 1;
            }
            out.push('{');
            let mut repeated = None;
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push(':');
                repeated = repeated.or(write_with_repeat(item, target, seen, out));
            }
            if this == target
                && let Some((key, item)) = map.iter().next()
            {
                out.push(',');
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push(':');
                out.push_str(&serde_json::to_string(item).unwrap());
                repeated = Some(key.clone());
            }
            out.push('}');
            repeated
        }
        leaf => {
            out.push_str(&serde_json::to_string(leaf).unwrap());
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Without repeated keys the strict parser is serde_json: same value, same outcome.
    #[test]
    fn invariant_i9_strict_parsing_agrees_with_serde_json(value in json()) {
        let text = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(from_slice_strict::<Value>(&text).unwrap(), value.clone());
        let payload = serde_json::to_vec(&json!({"v":1,"id":3,"type":"result","output":value})).unwrap();
        let plain: Value = serde_json::from_slice(&payload).unwrap();
        let strict = decode(&payload).unwrap();
        let Message::Result(result) = strict.message else { panic!("a result") };
        prop_assert_eq!(&result.output, &plain["output"]);
    }

    /// One repeated key anywhere is refused, and the error names it.
    #[test]
    fn invariant_i9_a_repeat_anywhere_is_refused(
        value in vec((KEY, json()), 1..5).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        target in any::<prop::sample::Index>()) {
        let mut text = String::new();
        let count = members(&value);
        let target = if count == 0 { usize::MAX } else { target.index(count) };
        let repeated = write_with_repeat(&value, target, &mut 0, &mut text);
        prop_assert_eq!(repeated.is_some(), count > 0);
        let strict = from_slice_strict::<Value>(text.as_bytes());
        match repeated {
            None => prop_assert_eq!(strict.unwrap(), value),
            Some(key) => {
                let Err(ProtoError::Invalid(message)) = strict else {
                    panic!("{text}: accepted a repeated {key:?}");
                };
                let shown: String = key.chars().flat_map(char::escape_debug).collect();
                prop_assert!(message.contains(&format!("duplicate key `{shown}`")), "{}", message);
            }
        }
    }

    /// Every message the encoder writes, the strict decoder reads back unchanged.
    #[test]
    fn invariant_i9_encoded_messages_decode_unchanged(id in any::<u64>(), output in json()) {
        let envelope = Envelope::new(id, Message::Result(p3ak_proto::ToolResult { output }));
        let frame = encode(&envelope, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode(&frame[HEADER_LEN..]).unwrap(), envelope);
    }
}
