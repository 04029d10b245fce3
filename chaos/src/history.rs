//! A history: what the clients asked and what they were told, with times.
//!
//! Every operation a client invokes is recorded once, as an [`Operation`]:
//! its key, its input (put a value, get, delete), the time it was invoked,
//! and its [`Outcome`]. Times are nanoseconds since the start of the run,
//! read from one monotonic clock shared by every client, so "A completed
//! before B was invoked" is a fact about real time that the checker may use.
//!
//! The outcome is one of three, and the difference is the whole point of a
//! fault-injection test:
//!
//! * `Completed` — the server answered, and the answer says what happened
//!   (a write acknowledged, a read's value or its absence).
//! * `Failed` — the operation certainly had no effect: the connection was
//!   refused before a byte was sent, a follower redirected the write, or the
//!   node answered that it knows no leader before proposing anything. Such an
//!   operation is left out of the check.
//! * `Unknown` — the request was sent and then the answer was lost (timeout,
//!   broken connection, "may or may not be applied"). A write with an
//!   unknown outcome may take effect at any instant after its invocation, or
//!   never; the checker treats it as an operation that never returns. A read
//!   with an unknown outcome observed nothing and is left out.
//!
//! Values are unique per write (a client number and a counter, packed into
//! a `u64`), so a read names exactly one write, and a read of a value no
//! write ever carried is caught at once.

use serde::{Deserialize, Serialize};

/// A value written by the workload: unique per write.
pub type Value = u64;

/// A value that no write carried (a read returned bytes that do not parse
/// as a workload value); no put writes it, so any read of it is a violation.
pub const FOREIGN: Value = u64::MAX;

/// What the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    Put(Value),
    Get,
    Delete,
}

/// What the client was told, for a completed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Output {
    /// A put or a delete was acknowledged.
    Ok,
    /// A get returned this value, or `None` for "not found".
    Read(Option<Value>),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Answered at `at` (ns since the run's start) with `output`.
    Completed { at: u64, output: Output },
    /// Certainly not applied; the reason is for the report.
    Failed { at: u64, reason: String },
    /// Sent, but the answer was lost: may be applied later, or never.
    Unknown { reason: String },
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u32,
    pub key: String,
    pub input: Input,
    /// Invocation time, ns since the run's start.
    pub call: u64,
    pub outcome: Outcome,
}

impl Operation {
    /// A completed operation (for tests and final reads).
    pub fn completed(
        client: u32,
        key: &str,
        input: Input,
        call: u64,
        at: u64,
        output: Output,
    ) -> Self {
        Operation {
            client,
            key: key.to_string(),
            input,
            call,
            outcome: Outcome::Completed { at, output },
        }
    }

    /// An operation whose outcome is unknown (for tests).
    pub fn unknown(client: u32, key: &str, input: Input, call: u64) -> Self {
        Operation {
            client,
            key: key.to_string(),
            input,
            call,
            outcome: Outcome::Unknown {
                reason: "test".into(),
            },
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self.input, Input::Get)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let value = |v: Value| {
            if v == FOREIGN {
                "<bytes no write carried>".to_string()
            } else {
                format!("{}.{}", v >> 32, v & 0xffff_ffff)
            }
        };
        let input = match self.input {
            Input::Put(v) => format!("put({}, {})", self.key, value(v)),
            Input::Get => format!("get({})", self.key),
            Input::Delete => format!("delete({})", self.key),
        };
        match &self.outcome {
            Outcome::Completed { at, output } => {
                let output = match output {
                    Output::Ok => "ok".to_string(),
                    Output::Read(Some(v)) => value(*v),
                    Output::Read(None) => "not found".to_string(),
                };
                write!(
                    f,
                    "client {} {input} -> {output}  [{:.3} ms .. {:.3} ms]",
                    self.client,
                    ms(self.call),
                    ms(*at)
                )
            }
            Outcome::Failed { at, reason } => write!(
                f,
                "client {} {input} -> failed ({reason})  [{:.3} ms .. {:.3} ms]",
                self.client,
                ms(self.call),
                ms(*at)
            ),
            Outcome::Unknown { reason } => write!(
                f,
                "client {} {input} -> unknown ({reason})  [{:.3} ms .. never]",
                self.client,
                ms(self.call)
            ),
        }
    }
}

/// Packs a client number and its counter into a unique value.
pub fn value_of(client: u32, counter: u32) -> Value {
    (u64::from(client) << 32) | u64::from(counter)
}

/// The bytes a value is written as (`client.counter`), and back.
pub fn encode_value(value: Value) -> String {
    format!("{}.{}", value >> 32, value & 0xffff_ffff)
}

/// Parses bytes written by [`encode_value`]; anything else is [`FOREIGN`].
pub fn decode_value(bytes: &[u8]) -> Value {
    let parsed = std::str::from_utf8(bytes).ok().and_then(|s| {
        let (client, counter) = s.split_once('.')?;
        Some(value_of(client.parse().ok()?, counter.parse().ok()?))
    });
    match parsed {
        Some(v) if v != FOREIGN => v,
        _ => FOREIGN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_foreign() {
        let v = value_of(7, 42);
        assert_eq!(decode_value(encode_value(v).as_bytes()), v);
        assert_eq!(decode_value(b"hello"), FOREIGN);
        assert_eq!(decode_value(b"1.2.3"), FOREIGN);
        assert_eq!(decode_value(&[0xff, 0xfe]), FOREIGN);
    }
}
