//! The Lua scripts of `lua/` and typed calls to them, one file per script: `lua/X.lua` is called from
//! `src/scripts/X.rs`, which holds the call's arguments, its outcome (every return code in the script's
//! header decoded there, never error text) and the call itself. Each call passes every key in KEYS (all under
//! the queue's hash tag) and the clock as ARGV, so tests control time.

use crate::keys::QueueKeys;

/// Declares the script a file wraps: its source (`SOURCE`, the checked-in flattened file) and the loaded
/// `Script` (`SCRIPT`, EVALSHA with a NOSCRIPT fallback).
macro_rules! script {
    ($file:literal) => {
        /// The script's source, as Redis runs it.
        pub const SOURCE: &str = include_str!(concat!("../../lua/", $file));
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(SOURCE));
    };
}

mod reply;

pub mod ack;
pub mod adopt;
pub mod checkpoint;
pub mod delete;
pub mod drain;
pub mod enqueue;
pub mod extend;
pub mod fail;
pub mod fire;
pub mod heartbeat;
pub mod levels;
pub mod limit;
pub mod park;
pub mod permissions;
pub mod promote;
pub mod purge;
pub mod reclaim;
pub mod release;
pub mod requeue;
pub mod retire;
pub mod run_now;
pub mod signal;
pub mod state;
pub mod update;

pub use ack::{Ack, AckItem, LAZY_WINDOW_MS, Retention, ack};
pub use adopt::{Adopt, Adopted, adopt};
pub use checkpoint::{CheckpointWrite, Checkpointed, checkpoint};
pub use delete::{Deleted, delete};
pub use drain::{Drained, drain};
pub use enqueue::{Enqueued, NewJob, enqueue};
pub use extend::extend;
pub use fail::{Fail, FailMode, FailOutcome, fail};
pub use fire::{Fire, Fired, fire};
pub use heartbeat::{Beat, BeatFields, Heartbeat, heartbeat, refresh};
pub use levels::set_levels;
pub use limit::{LimitedRead, Limits, read_limited};
pub use park::park;
pub use permissions::permissions;
pub use promote::{Promoted, promote};
pub use purge::purge;
pub use reclaim::{Reclaim, ReclaimPage, reclaim};
pub use release::{HandBack, release};
pub use requeue::{Requeued, requeue};
pub use retire::retire;
pub use run_now::{RunNow, run_now};
pub use signal::{SignalApplied, SignalSend, SignalSent, signal};
pub use state::{StateRow, state};
pub use update::{RecordField, Update, update};

/// A script call a worker makes, as the metrics label it (`rill_redis_call_seconds{call}`, feature `metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Call {
    Ack,
    Fail,
    Extend,
    Reclaim,
    Adopt,
    Heartbeat,
    Promote,
    Release,
    Park,
    Fire,
}

#[cfg(feature = "metrics")]
impl Call {
    pub(crate) const ALL: [Call; 10] = [
        Call::Ack,
        Call::Fail,
        Call::Extend,
        Call::Reclaim,
        Call::Adopt,
        Call::Heartbeat,
        Call::Promote,
        Call::Release,
        Call::Park,
        Call::Fire,
    ];

    /// The label value: the script it runs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Call::Ack => "ack",
            Call::Fail => "fail",
            Call::Extend => "extend",
            Call::Reclaim => "reclaim",
            Call::Adopt => "adopt",
            Call::Heartbeat => "heartbeat",
            Call::Promote => "promote",
            Call::Release => "release",
            Call::Park => "park",
            Call::Fire => "fire",
        }
    }
}

/// The source of every script, by file name (for tests and for tools that load them elsewhere).
pub const SOURCES: &[(&str, &str)] = &[
    ("ack.lua", ack::SOURCE),
    ("extend.lua", extend::SOURCE),
    ("fail.lua", fail::SOURCE),
    ("reclaim.lua", reclaim::SOURCE),
    ("release.lua", release::SOURCE),
    ("promote.lua", promote::SOURCE),
    ("enqueue.lua", enqueue::SOURCE),
    ("update.lua", update::SOURCE),
    ("retire.lua", retire::SOURCE),
    ("state.lua", state::SOURCE),
    ("checkpoint.lua", checkpoint::SOURCE),
    ("signal.lua", signal::SOURCE),
    ("park.lua", park::SOURCE),
    ("heartbeat.lua", heartbeat::SOURCE),
    ("adopt.lua", adopt::SOURCE),
    ("requeue.lua", requeue::SOURCE),
    ("purge.lua", purge::SOURCE),
    ("permissions.lua", permissions::SOURCE),
    ("run_now.lua", run_now::SOURCE),
    ("delete.lua", delete::SOURCE),
    ("drain.lua", drain::SOURCE),
    ("fire.lua", fire::SOURCE),
    ("limit.lua", limit::SOURCE),
    ("levels.lua", levels::SOURCE),
];

/// Adds the tail of KEYS that the scripts routing or finding jobs by priority level take (SPEC §6g): the
/// priorities hash, then the streams of levels 1 to 15, then the held set of per-key limits (§6h).
trait LevelKeys {
    fn level_keys(&mut self, keys: &QueueKeys) -> &mut Self;
}

impl LevelKeys for redis::ScriptInvocation<'_> {
    fn level_keys(&mut self, keys: &QueueKeys) -> &mut Self {
        self.key(&keys.priorities);
        for s in keys.level_streams() {
            self.key(s);
        }
        // Entries set aside by per-key limits (SPEC §6h): the scripts that find jobs count them as waiting.
        self.key(&keys.held)
    }
}

/// A script call built straight into one `EVALSHA` command, for the calls made per batch of jobs (`ack`):
/// redis-rs's `ScriptInvocation` first puts every key and argument in a buffer of its own, then copies them into
/// the command, two allocations per job of a batch. Like it, a server that does not know the script
/// (`NOSCRIPT`: restarted, flushed, failed over) gets it loaded and the call sent again.
struct Eval {
    script: &'static redis::Script,
    cmd: redis::Cmd,
}

impl Eval {
    /// A call of `script` with `keys` keys, which the first `keys` [`Eval::arg`]s must be; `args`, the keys and
    /// arguments to come, sizes the command's buffers.
    fn new(script: &'static redis::Script, keys: usize, args: usize) -> Self {
        let mut cmd = redis::Cmd::with_capacity(3 + args, 64 * (3 + args));
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        Eval { script, cmd }
    }

    fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    async fn query<T, C>(&self, con: &mut C) -> redis::RedisResult<T>
    where
        T: redis::FromRedisValue,
        C: redis::aio::ConnectionLike + Send,
    {
        match self.cmd.query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                self.cmd.query_async(con).await
            }
            answer => answer,
        }
    }
}

/// One delivery as the scripts see it: the entry it came from and the delivery count it was handed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef<'a> {
    /// Stream entry id.
    pub entry_id: &'a str,
    /// Delivery count when this delivery began (the fencing token).
    pub token: u64,
}

/// Who calls a worker-side script and with which limits: the same for every call a worker makes, so call sites
/// pass it once instead of repeating keys, consumer and limits.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The queue's keys.
    pub keys: &'a QueueKeys,
    /// The calling consumer (worker).
    pub consumer: &'a str,
    /// Approximate length the events stream is trimmed to; 0 = the scripts write no events.
    pub events_maxlen: u64,
    /// Attempts for jobs that do not set their own.
    pub max_attempts: u32,
    /// The priority level of the deliveries the call is about (0 for a queue without priorities): the scripts
    /// that end, extend or take deliveries run on that level's stream.
    pub level: u8,
}

impl Caller<'_> {
    /// The stream of the caller's level.
    pub fn stream(&self) -> &str {
        self.keys.level(self.level)
    }

    /// The same caller, for deliveries of another priority level.
    pub fn at(&self, level: u8) -> Self {
        Caller { level, ..*self }
    }
}
