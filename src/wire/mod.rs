//! The wire format (SPEC.md, "Stream entries"): the fields of a job entry, CBOR payloads, and strict parsing of
//! whatever another client may have written. Nothing here talks to Redis.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// Value of the `v` field this build writes and accepts.
pub const FORMAT_VERSION: &str = "1";

/// Field names of a job entry.
pub mod field {
    /// Format version, decimal string. Required.
    pub const V: &str = "v";
    /// CBOR-encoded job data. Required.
    pub const PAYLOAD: &str = "payload";
    /// Job id; absent means the entry id is the job id.
    pub const ID: &str = "id";
    /// Attempts already made before this entry, decimal. Absent = 0.
    pub const ATTEMPTS: &str = "attempts";
    /// Most attempts allowed, decimal >= 1. Absent = the worker's default.
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    /// First enqueue time, ms since the Unix epoch, decimal. Absent = the entry id's time.
    pub const ENQUEUED_MS: &str = "enqueued_ms";
    /// Longest an attempt may run, ms, decimal >= 1. Absent = the worker's default.
    pub const TIMEOUT_MS: &str = "timeout_ms";
    /// Priority level, decimal 0 to 15. Absent = 0.
    pub const PRIORITY: &str = "priority";
    /// Error of the previous attempt, UTF-8.
    pub const LAST_ERROR: &str = "last_error";
    /// Prefix of free extension fields (trace context, application headers), ignored by rill.
    pub const EXTENSION_PREFIX: &str = "x-";
}

/// Highest `attempts` / `max_attempts` value accepted.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1_000_000;

/// Longest `timeout_ms` accepted: 366 days.
pub const MAX_TIMEOUT_MS: u64 = 366 * 24 * 3600 * 1000;

/// Why a job ended in the dead-letter stream (the `dead_reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// The handler failed it permanently.
    Failed,
    /// Out of attempts (failed or stalled each time).
    Exhausted,
    /// The entry could not be parsed.
    Malformed,
    /// The payload is larger than the worker's limit.
    TooLarge,
}

impl DeadReason {
    /// The `dead_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Failed => "failed",
            DeadReason::Exhausted => "exhausted",
            DeadReason::Malformed => "malformed",
            DeadReason::TooLarge => "too_large",
        }
    }

    /// Parses a `dead_reason` string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "failed" => DeadReason::Failed,
            "exhausted" => DeadReason::Exhausted,
            "malformed" => DeadReason::Malformed,
            "too_large" => DeadReason::TooLarge,
            _ => return None,
        })
    }
}

/// Encodes a value as CBOR.
///
/// # Errors
/// [`Error::Encode`] if serde refuses the value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    ciborium::into_writer(value, &mut out).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Appends `value`'s CBOR encoding to `out` and returns its length, refused over `limit` bytes (many payloads
/// in one buffer: one allocation for a bulk enqueue instead of one per job).
///
/// # Errors
/// [`Error::Encode`], or [`Error::PayloadTooLarge`] over the limit (`out` then holds a partial encoding after
/// its previous contents).
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize> {
    let start = out.len();
    ciborium::into_writer(value, &mut *out).map_err(|e| Error::Encode(e.to_string()))?;
    let size = out.len() - start;
    if size > limit {
        return Err(Error::PayloadTooLarge { size, limit });
    }
    Ok(size)
}

/// Encodes `value` as CBOR and checks the result against `limit` bytes (payloads, checkpoint states, bus
/// messages).
///
/// # Errors
/// [`Error::Encode`], or [`Error::PayloadTooLarge`] over the limit.
pub fn encode_within<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>> {
    let bytes = encode(value)?;
    if bytes.len() > limit {
        return Err(Error::PayloadTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// A CBOR decoding error as a person reads it (ciborium's own text is its `Debug` form, `Semantic(None, "...")`).
fn decode_error_text(e: &ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the value ends early".to_owned()
        }
        E::Io(io) => format!("read failed: {io}"),
        E::Syntax(at) => format!("not valid CBOR (at byte {at})"),
        E::Semantic(Some(at), what) => format!("{what} (at byte {at})"),
        E::Semantic(None, what) => what.clone(),
        E::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

/// Decodes exactly one CBOR value.
///
/// # Errors
/// [`Error::Decode`] if the bytes are not CBOR of the expected shape, or if bytes follow the value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut rest = bytes;
    let value =
        ciborium::from_reader(&mut rest).map_err(|e| Error::Decode(decode_error_text(&e)))?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the CBOR value",
            rest.len()
        )));
    }
    Ok(value)
}

/// A stream entry as read: its id and fields, or `None` fields when the entry was deleted while pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Stream entry id (`ms-seq`).
    pub id: String,
    /// Field/value pairs in stream order; `None` if the entry is gone.
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// A job entry that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Stream entry id of this delivery.
    pub entry_id: String,
    /// Job id.
    pub job_id: String,
    /// CBOR job data.
    pub payload: Vec<u8>,
    /// Attempts made before this entry.
    pub attempts: u32,
    /// Max attempts, if the entry sets it.
    pub max_attempts: Option<u32>,
    /// Longest an attempt may run, ms, if the entry sets it.
    pub timeout_ms: Option<u64>,
    /// Priority level (0 when absent).
    pub priority: u8,
    /// First enqueue time, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Previous attempt's error.
    pub last_error: Option<String>,
    /// The entry's `x-*` extension fields (trace context, application headers), in entry order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why an entry was refused, as stored in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// `malformed` or `too_large`.
    pub reason: DeadReason,
    /// A precise, human-readable description.
    pub detail: String,
}

impl Malformed {
    fn new(detail: impl Into<String>) -> Self {
        Malformed {
            reason: DeadReason::Malformed,
            detail: detail.into(),
        }
    }
}

/// The value of field `name` in a stream entry's fields (the first, if repeated).
pub fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// Orders stream entry ids (`<ms>-<seq>`) as Redis does; ids that do not parse sort last, by text.
pub fn entry_id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |id: &str| {
        id.split_once('-')
            .and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)))
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Milliseconds part of a stream id `ms-seq`.
pub fn entry_id_ms(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

fn utf8<'a>(name: &str, value: &'a [u8]) -> Result<&'a str, Malformed> {
    std::str::from_utf8(value)
        .map_err(|_| Malformed::new(format!("field `{name}` is not valid UTF-8")))
}

fn decimal(name: &str, value: &[u8], max: u64) -> Result<u64, Malformed> {
    let s = utf8(name, value)?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed::new(format!(
            "field `{name}` must be a non-negative decimal integer, got {:?}",
            truncate(s, 40)
        )));
    }
    match s.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Malformed::new(format!(
            "field `{name}` is out of range (max {max}), got {:?}",
            truncate(s, 40)
        ))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The job id an entry names in its `id` field, when it names exactly one valid id; `None` otherwise (then the
/// entry id is the job id). Read even from an entry that is otherwise malformed, so it is dead-lettered, shown
/// and retried under the id its producer gave it.
pub fn job_id_of(raw: &RawEntry) -> Option<String> {
    let mut ids = raw
        .fields
        .as_ref()?
        .iter()
        .filter(|(k, _)| k == field::ID.as_bytes());
    let (_, id) = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?;
    crate::keys::validate_job_id(id).ok()?;
    Some(id.to_owned())
}

/// Checks a job entry against SPEC.md v1. Unknown fields are refused unless they start with `x-`; a field may
/// appear only once; the payload must fit `max_payload` bytes (CBOR validity is checked when it is decoded into
/// the handler's type).
///
/// # Errors
/// [`Malformed`] with the reason to dead-letter it with.
pub fn parse_entry(raw: RawEntry, max_payload: usize) -> Result<Envelope, Malformed> {
    let RawEntry {
        id: entry_id,
        fields,
    } = raw;
    let Some(fields) = fields else {
        return Err(Malformed::new("entry was deleted while pending"));
    };
    let entry_ms = entry_id_ms(&entry_id)
        .ok_or_else(|| Malformed::new(format!("entry id {entry_id:?} is not ms-seq")))?;
    let mut v = None;
    let mut payload = None;
    let mut id = None;
    let mut attempts = None;
    let mut max_attempts = None;
    let mut timeout = None;
    let mut priority = None;
    let mut enqueued = None;
    let mut last_error = None;
    let mut headers = Vec::new();
    for (name, value) in fields {
        let name = std::str::from_utf8(&name)
            .map_err(|_| Malformed::new("a field name is not valid UTF-8"))?;
        let slot: &mut Option<Vec<u8>> = match name {
            field::V => &mut v,
            field::PAYLOAD => &mut payload,
            field::ID => &mut id,
            field::ATTEMPTS => &mut attempts,
            field::MAX_ATTEMPTS => &mut max_attempts,
            field::TIMEOUT_MS => &mut timeout,
            field::PRIORITY => &mut priority,
            field::ENQUEUED_MS => &mut enqueued,
            field::LAST_ERROR => &mut last_error,
            other if other.starts_with(field::EXTENSION_PREFIX) => {
                headers.push((other.to_owned(), value));
                continue;
            }
            other => {
                return Err(Malformed::new(format!(
                    "unknown field {:?} (format v1 allows only the SPEC.md fields and `x-` extensions)",
                    truncate(other, 64)
                )));
            }
        };
        if slot.is_some() {
            return Err(Malformed::new(format!("field `{name}` appears twice")));
        }
        *slot = Some(value);
    }
    let v = v.ok_or_else(|| Malformed::new("missing field `v` (format version)"))?;
    let v = utf8(field::V, &v)?;
    if v != FORMAT_VERSION {
        return Err(Malformed::new(format!(
            "unsupported format version {:?} (this worker reads version {FORMAT_VERSION})",
            truncate(v, 20)
        )));
    }
    let payload = payload.ok_or_else(|| Malformed::new("missing field `payload`"))?;
    if payload.len() > max_payload {
        return Err(Malformed {
            reason: DeadReason::TooLarge,
            detail: format!(
                "payload of {} bytes exceeds the limit of {max_payload} bytes",
                payload.len()
            ),
        });
    }
    if payload.is_empty() {
        return Err(Malformed::new("field `payload` is empty (not CBOR)"));
    }
    let job_id = match id {
        None => entry_id.clone(),
        Some(id) => {
            let id = utf8(field::ID, &id)?;
            crate::keys::validate_job_id(id)
                .map_err(|e| Malformed::new(format!("field `id`: {e}")))?;
            id.to_owned()
        }
    };
    let attempts = match attempts {
        None => 0,
        Some(a) => decimal(field::ATTEMPTS, &a, u64::from(MAX_ATTEMPTS_LIMIT))? as u32,
    };
    let max_attempts = match max_attempts {
        None => None,
        Some(m) => {
            let m = decimal(field::MAX_ATTEMPTS, &m, u64::from(MAX_ATTEMPTS_LIMIT))? as u32;
            if m == 0 {
                return Err(Malformed::new("field `max_attempts` must be at least 1"));
            }
            Some(m)
        }
    };
    let timeout_ms = match timeout {
        None => None,
        Some(t) => match decimal(field::TIMEOUT_MS, &t, MAX_TIMEOUT_MS)? {
            0 => return Err(Malformed::new("field `timeout_ms` must be at least 1")),
            t => Some(t),
        },
    };
    let priority = match priority {
        None => 0,
        Some(p) => decimal(
            field::PRIORITY,
            &p,
            u64::from(crate::priority::MAX_LEVELS - 1),
        )? as u8,
    };
    let enqueued_ms = match enqueued {
        None => entry_ms,
        // Up to year ~2500: anything later is a unit mistake (µs or ns), not a time.
        Some(t) => decimal(field::ENQUEUED_MS, &t, 16_725_225_600_000)?,
    };
    let last_error = last_error.map(|e| String::from_utf8_lossy(&e).into_owned());
    Ok(Envelope {
        entry_id,
        job_id,
        payload,
        attempts,
        max_attempts,
        timeout_ms,
        priority,
        enqueued_ms,
        last_error,
        headers,
    })
}

/// Parses an array of `[id, [field, value, ...]]` stream entries (XRANGE, XAUTOCLAIM, one stream of
/// XREADGROUP). A nil field list means the entry was deleted.
///
/// # Errors
/// [`Error::Protocol`] if the reply does not have that shape.
pub fn parse_entries(value: redis::Value) -> Result<Vec<RawEntry>> {
    let bad = |detail: &str| Error::Protocol {
        what: "stream entries",
        detail: detail.to_owned(),
    };
    let redis::Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let redis::Value::Array(pair) = item else {
            return Err(bad("entry is not an array"));
        };
        let Ok([id, fields]) = <[redis::Value; 2]>::try_from(pair) else {
            return Err(bad("entry is not [id, fields]"));
        };
        let id = into_bytes(id).ok_or_else(|| bad("entry id is not a string"))?;
        let id = String::from_utf8(id).map_err(|_| bad("entry id is not UTF-8"))?;
        let fields = match fields {
            redis::Value::Nil => None,
            redis::Value::Array(flat) => {
                if flat.len() % 2 != 0 {
                    return Err(bad("odd number of field items"));
                }
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let k = into_bytes(k).ok_or_else(|| bad("field name is not a string"))?;
                    let v = into_bytes(v).ok_or_else(|| bad("field value is not a string"))?;
                    pairs.push((k, v));
                }
                Some(pairs)
            }
            _ => return Err(bad("fields are neither an array nor nil")),
        };
        out.push(RawEntry { id, fields });
    }
    Ok(out)
}

/// The entries of an `XREADGROUP` reply, all streams together in reply order (nil on timeout = none).
///
/// # Errors
/// [`Error::Protocol`] if the reply does not have that shape.
pub fn parse_read_reply(value: redis::Value) -> Result<Vec<RawEntry>> {
    let mut streams = parse_read_reply_by_stream(value)?;
    if streams.len() == 1 {
        return Ok(streams.pop().map(|(_, e)| e).unwrap_or_default());
    }
    Ok(streams.into_iter().flat_map(|(_, e)| e).collect())
}

/// The entries of an `XREADGROUP` reply by stream: (stream key, its entries), in reply order (nil on timeout =
/// none).
///
/// # Errors
/// [`Error::Protocol`] if the reply does not have that shape.
pub fn parse_read_reply_by_stream(value: redis::Value) -> Result<Vec<(String, Vec<RawEntry>)>> {
    let bad = |detail: &str| Error::Protocol {
        what: "XREADGROUP",
        detail: detail.to_owned(),
    };
    let key = |k: redis::Value| {
        into_bytes(k)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("stream key is not a string"))
    };
    match value {
        redis::Value::Nil => Ok(Vec::new()),
        redis::Value::Array(streams) => {
            let mut out = Vec::with_capacity(streams.len());
            for s in streams {
                match s {
                    redis::Value::Array(kv) if kv.len() == 2 => {
                        let mut kv = kv.into_iter();
                        let (k, entries) = (kv.next(), kv.next());
                        let (Some(k), Some(entries)) = (k, entries) else {
                            return Err(bad("stream is not [key, entries]"));
                        };
                        out.push((key(k)?, parse_entries(entries)?));
                    }
                    _ => return Err(bad("stream is not [key, entries]")),
                }
            }
            Ok(out)
        }
        redis::Value::Map(streams) => {
            let mut out = Vec::with_capacity(streams.len());
            for (k, entries) in streams {
                out.push((key(k)?, parse_entries(entries)?));
            }
            Ok(out)
        }
        _ => Err(bad("reply is neither nil nor an array")),
    }
}

/// Takes the bytes of a string reply.
fn into_bytes(v: redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
