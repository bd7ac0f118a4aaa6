//! Printing: aligned tables for people, JSON for programs, CBOR payloads shown as JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json, json};

/// Columns aligned on the widest cell; numbers are right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = |i: usize| {
        !rows.is_empty()
            && rows.iter().all(|r| {
                r.get(i).is_some_and(|c| {
                    c == "-" || c.trim_end_matches(['s', '%']).parse::<f64>().is_ok()
                })
            })
    };
    let aligned: Vec<bool> = (0..headers.len()).map(numeric).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if aligned[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn print_json(v: &Json) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Decodes a CBOR value for display. Byte strings become arrays of numbers (as serde writes `Vec<u8>`);
/// what cannot be decoded is shown as a note, never a panic.
/// A lifecycle event as JSON: `entry_id`, `event`, and its fields, the numeric ones of SPEC.md's events table
/// (`attempt`, `ms`, `delay_ms`, `count`) as JSON numbers.
pub fn event_json(e: &rill::Event) -> Json {
    let mut doc = json!({ "entry_id": e.entry_id, "event": e.kind });
    for (k, v) in &e.fields {
        if k == "event" {
            continue;
        }
        let number = matches!(k.as_str(), "attempt" | "ms" | "delay_ms" | "count")
            .then(|| v.parse::<u64>().ok())
            .flatten();
        doc[k] = number.map_or_else(|| json!(v), |n| json!(n));
    }
    doc
}

pub fn cbor_to_json(bytes: &[u8]) -> Json {
    match ciborium::from_reader::<ciborium::Value, _>(bytes) {
        Ok(v) => from_cbor(v),
        Err(e) => json!({ "undecodable_cbor": e.to_string(), "bytes": bytes.len() }),
    }
}

pub fn from_cbor(v: ciborium::Value) -> Json {
    use ciborium::Value as C;
    match v {
        C::Null => Json::Null,
        C::Bool(b) => Json::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            i64::try_from(i)
                .map(Json::from)
                .or_else(|_| u64::try_from(i).map(Json::from))
                .unwrap_or_else(|_| Json::String(i.to_string()))
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        C::Text(s) => Json::String(s),
        C::Bytes(b) => Json::Array(b.into_iter().map(Json::from).collect()),
        C::Array(a) => Json::Array(a.into_iter().map(from_cbor).collect()),
        C::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    C::Text(s) => s,
                    other => from_cbor(other).to_string(),
                };
                out.insert(key, from_cbor(v));
            }
            Json::Object(out)
        }
        C::Tag(_, inner) => from_cbor(*inner),
        _ => Json::Null,
    }
}

/// `v` as JSON with nothing lost, or why it cannot be: what `rill work` hands a job's process, which must not
/// receive bytes as a list of numbers or NaN as null without a word.
pub fn exact_json(v: ciborium::Value) -> Result<Json, String> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Json::Null,
        C::Bool(b) => Json::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            i64::try_from(i)
                .map(Json::from)
                .or_else(|_| u64::try_from(i).map(Json::from))
                .map_err(|_| format!("the integer {i} is outside JSON's 64-bit range"))?
        }
        C::Float(f) => serde_json::Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| format!("the float {f} has no JSON form"))?,
        C::Text(s) => Json::String(s),
        C::Bytes(b) => {
            return Err(format!(
                "a byte string ({} bytes) has no JSON form",
                b.len()
            ));
        }
        C::Array(a) => Json::Array(a.into_iter().map(exact_json).collect::<Result<_, _>>()?),
        C::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let C::Text(key) = k else {
                    return Err(format!("a map key that is not text ({k:?})"));
                };
                if out.insert(key.clone(), exact_json(v)?).is_some() {
                    return Err(format!("the map key {key:?} appears twice"));
                }
            }
            Json::Object(out)
        }
        C::Tag(tag, _) => return Err(format!("a CBOR tag ({tag}) has no JSON form")),
        other => return Err(format!("the CBOR value {other:?} has no JSON form")),
    })
}

/// One line of JSON, for tables' cells.
pub fn compact(v: &Json, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        s
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Text on one line (newlines shown as ⏎), cut to `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let flat = s.trim().replace('\n', " ⏎ ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `12s`, `3m 4s`, `2h 5m`: how long ago `ms` was, to a useful precision.
pub fn ago(ms: u64, now: u64) -> String {
    age(Duration::from_millis(now.saturating_sub(ms)))
}

pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// RFC 3339, UTC, to the second.
pub fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_json_refuses_what_json_cannot_hold() {
        use ciborium::Value as C;
        let ok = C::Map(vec![
            (C::Text("n".into()), C::Integer(u64::MAX.into())),
            (C::Text("f".into()), C::Float(1.5)),
            (C::Text("l".into()), C::Array(vec![C::Null, C::Bool(true)])),
        ]);
        assert_eq!(
            exact_json(ok).unwrap(),
            json!({"n": u64::MAX, "f": 1.5, "l": [null, true]})
        );
        for (bad, why) in [
            (C::Bytes(vec![1, 2]), "byte string"),
            (C::Float(f64::NAN), "no JSON form"),
            (
                C::Integer(ciborium::value::Integer::try_from(-(1i128 << 64)).unwrap()),
                "64-bit range",
            ),
            (C::Tag(2, Box::new(C::Bytes(vec![1; 9]))), "tag (2)"),
            (C::Map(vec![(C::Integer(1.into()), C::Null)]), "not text"),
            (
                C::Map(vec![
                    (C::Text("a".into()), C::Null),
                    (C::Text("a".into()), C::Null),
                ]),
                "twice",
            ),
        ] {
            let e = exact_json(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let t = table(
            &["QUEUE", "WAITING"],
            &[
                vec!["emails".into(), "5".into()],
                vec!["a".into(), "1200".into()],
            ],
        );
        assert_eq!(t, "QUEUE   WAITING\nemails        5\na          1200\n");
    }

    #[test]
    fn cbor_shows_as_json() {
        let mut buf = Vec::new();
        ciborium::into_writer(&json!({"to": "a", "n": [1, 2.5, null]}), &mut buf).unwrap();
        assert_eq!(cbor_to_json(&buf), json!({"to": "a", "n": [1, 2.5, null]}));
        let mut buf = Vec::new();
        ciborium::into_writer(&ciborium::Value::Bytes(vec![1, 2]), &mut buf).unwrap();
        assert_eq!(cbor_to_json(&buf), json!([1, 2]));
        // Tags are looked through; non-text map keys are shown as JSON text; booleans stay booleans.
        use ciborium::Value as C;
        let v = C::Tag(
            1,
            Box::new(C::Map(vec![
                (C::Integer(7.into()), C::Bool(true)),
                (C::Text("big".into()), C::Integer(u64::MAX.into())),
            ])),
        );
        assert_eq!(from_cbor(v), json!({"7": true, "big": u64::MAX}));
        assert!(
            cbor_to_json(&[0xff, 0x00])
                .get("undecodable_cbor")
                .is_some()
        );
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(ago(1_000, 1_250), "250ms");
        assert_eq!(ago(0, 75_000), "1m 15s");
        assert_eq!(ago(0, 7_500_000), "2h 5m");
        assert_eq!(ago(0, 97_200_000), "1d 3h");
        assert_eq!(compact(&json!({"a": "bbbbbbbbbb"}), 8), "{\"a\":\"b…");
        assert_eq!(one_line("a\nb", 10), "a ⏎ b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
