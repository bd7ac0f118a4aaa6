//! A cursor over a script's reply: each script's wrapper reads its reply item by item and says what it
//! expected, so a reply of the wrong shape becomes [`Error::Protocol`] naming the script, never a panic.

use redis::Value;

use crate::error::{Error, Result};
use crate::wire::{self, RawEntry};

/// The error for a reply that does not match a script's header.
pub(crate) fn protocol(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        what,
        detail: detail.into(),
    }
}

/// The error for a return code a script's header does not list.
pub(crate) fn unknown_code(what: &'static str, code: i64) -> Error {
    protocol(what, format!("unknown code {code}"))
}

/// An integer reply (or a string holding one).
pub(crate) fn int(v: &Value, what: &'static str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => wire::bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol(what, format!("expected an integer, got {other:?}"))),
    }
}

/// A string reply.
pub(crate) fn string(v: &Value, what: &'static str) -> Result<String> {
    wire::bytes(v)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| protocol(what, format!("expected a string, got {v:?}")))
}

/// An array of exactly `n` integer codes (one per item of a batch call).
pub(crate) fn codes(v: &Value, what: &'static str, n: usize) -> Result<Vec<i64>> {
    Reply::new(v, what, n)?.rest(|c| int(c, what))
}

/// Reads an array reply of a known length, item by item.
pub(crate) struct Reply<'a> {
    items: std::slice::Iter<'a, Value>,
    what: &'static str,
}

impl<'a> Reply<'a> {
    /// The reply of `what` (a script file name), which must be an array of `n` items.
    pub(crate) fn new(v: &'a Value, what: &'static str, n: usize) -> Result<Self> {
        let Value::Array(a) = v else {
            return Err(protocol(what, format!("expected an array, got {v:?}")));
        };
        if a.len() != n {
            return Err(protocol(
                what,
                format!("expected {n} items, got {}", a.len()),
            ));
        }
        Ok(Reply {
            items: a.iter(),
            what,
        })
    }

    fn next(&mut self) -> Result<&'a Value> {
        // `new` checked the length; callers read at most that many.
        self.items
            .next()
            .ok_or_else(|| protocol(self.what, "reply ended early"))
    }

    /// The next item as an integer.
    pub(crate) fn int(&mut self) -> Result<i64> {
        let v = self.next()?;
        int(v, self.what)
    }

    /// The next item as a count (negative values read as 0).
    pub(crate) fn count(&mut self) -> Result<u64> {
        Ok(self.int()?.max(0) as u64)
    }

    /// The next item as text.
    pub(crate) fn string(&mut self) -> Result<String> {
        let v = self.next()?;
        string(v, self.what)
    }

    /// The next item as a list of strings.
    pub(crate) fn strings(&mut self) -> Result<Vec<String>> {
        let what = self.what;
        match self.next()? {
            Value::Array(items) => items.iter().map(|v| string(v, what)).collect(),
            v => Err(protocol(what, format!("expected an array, got {v:?}"))),
        }
    }

    /// The next item as a list of taken deliveries: `{entry id, token, fields}` each (reclaim.lua, adopt.lua).
    pub(crate) fn taken(&mut self) -> Result<Vec<(RawEntry, u64)>> {
        let what = self.what;
        let v = self.next()?;
        let Value::Array(items) = v else {
            return Err(protocol(what, format!("expected an array, got {v:?}")));
        };
        items
            .iter()
            .map(|t| {
                let mut item = Reply::new(t, what, 3)?;
                let id = item.next()?.clone();
                let token = item.count()?;
                let fields = item.next()?.clone();
                let pair = Value::Array(vec![Value::Array(vec![id, fields])]);
                let mut e = wire::parse_entries(pair)?;
                Ok((e.remove(0), token))
            })
            .collect()
    }

    /// The next item as it is.
    pub(crate) fn value(&mut self) -> Result<&'a Value> {
        self.next()
    }

    /// Every remaining item, read by `f`.
    pub(crate) fn rest<T>(self, f: impl Fn(&Value) -> Result<T>) -> Result<Vec<T>> {
        self.items.map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_checks_shape_and_types() {
        let v = Value::Array(vec![
            Value::Int(2),
            Value::BulkString(b"7".to_vec()),
            Value::BulkString(b"x".to_vec()),
        ]);
        let mut r = Reply::new(&v, "t.lua", 3).unwrap();
        assert_eq!(r.int().unwrap(), 2);
        assert_eq!(r.count().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "x");
        assert!(matches!(
            Reply::new(&v, "t.lua", 2),
            Err(Error::Protocol { what: "t.lua", .. })
        ));
        assert!(Reply::new(&Value::Int(1), "t.lua", 1).is_err());
        let mut r = Reply::new(&v, "t.lua", 3).unwrap();
        r.int().unwrap();
        r.int().unwrap();
        assert!(r.int().is_err(), "x is not an integer");
        assert_eq!(
            codes(
                &Value::Array(vec![Value::Int(1), Value::Int(0)]),
                "t.lua",
                2
            )
            .unwrap(),
            vec![1, 0]
        );
        assert!(codes(&Value::Array(vec![Value::Int(1)]), "t.lua", 2).is_err());
    }
}
