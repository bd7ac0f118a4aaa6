//! What every subcommand starts from: the client, the output mode, and errors a person can act on.

use anyhow::{Context as _, bail};

use crate::Global;

/// Job payloads as the CLI sees them: any JSON value, CBOR on the wire.
pub type Json = serde_json::Value;

pub struct Context {
    pub client: rill::Client,
    pub url: String,
    pub namespace: String,
    pub json: bool,
    tls: rill::Tls,
}

/// The TLS settings the global options name, the files read.
pub fn tls(g: &Global) -> anyhow::Result<rill::Tls> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
    };
    let tls = rill::Tls {
        ca_pem: g
            .tls_ca
            .as_deref()
            .map(|p| read("--tls-ca", p))
            .transpose()?,
        client_pem: match (&g.tls_cert, &g.tls_key) {
            (Some(c), Some(k)) => Some((read("--tls-cert", c)?, read("--tls-key", k)?)),
            _ => None,
        },
        insecure: g.tls_insecure,
    };
    let set = tls.ca_pem.is_some() || tls.client_pem.is_some() || tls.insecure;
    if set && !g.redis.starts_with("rediss://") {
        bail!(
            "--tls-ca, --tls-cert, --tls-key and --tls-insecure need a rediss:// URL (got {:?})",
            g.redis
        );
    }
    Ok(tls)
}

/// A client for `url` in `namespace` with these TLS settings, or a one-line error saying which URLs work.
pub fn client(
    url: &str,
    namespace: &str,
    allow_eviction: bool,
    tls: &rill::Tls,
) -> anyhow::Result<rill::Client> {
    let config = rill::ClientConfig {
        namespace: namespace.to_owned(),
        allow_eviction,
        tls: tls.clone(),
        ..Default::default()
    };
    match rill::Client::with_config(url, config) {
        Ok(c) => Ok(c),
        Err(rill::Error::InvalidUrl { url, .. }) => bail!(
            "invalid Redis URL {url:?}: use redis://host:6379, rediss://host:6380 (TLS), redis+unix:///path/redis.sock \
             , redis+sentinel://host:26379,host2:26379/SERVICE or redis+cluster://host:7000,host2:7001"
        ),
        Err(e) => Err(e.into()),
    }
}

/// `host:port` (no scheme) means `redis://host:port`, as `redis-cli -u` users expect; anything with a scheme
/// is left as written.
pub fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("redis://{url}")
    }
}

impl Context {
    pub fn new(g: &Global) -> anyhow::Result<Self> {
        let tls = tls(g)?;
        Ok(Context {
            client: client(&g.redis, &g.namespace, g.allow_eviction, &tls)?,
            url: g.redis.clone(),
            namespace: g.namespace.clone(),
            json: g.json,
            tls,
        })
    }

    /// A client for the same Redis (and TLS settings) in another namespace.
    pub fn client_in(&self, namespace: &str) -> anyhow::Result<rill::Client> {
        client(
            &self.url,
            namespace,
            self.client.config().allow_eviction,
            &self.tls,
        )
    }

    /// Opens the connection, or says which address failed and how to point elsewhere.
    pub async fn connect(&self) -> anyhow::Result<()> {
        match self.client.connect().await {
            Ok(()) => Ok(()),
            Err(e) => bail!(
                "cannot connect to Redis at {}: {e}\n  start redis-server there, or point rill elsewhere with \
                 --redis URL (or the REDIS_URL environment variable)",
                self.url
            ),
        }
    }

    /// A queue handle (the name checked, nothing read).
    pub fn queue(&self, name: &str) -> anyhow::Result<rill::Queue<Json>> {
        Ok(self.client.queue::<Json>(name)?)
    }

    /// A queue that must already exist: listed in the namespace's queue set, or holding jobs.
    pub async fn existing_queue(&self, name: &str) -> anyhow::Result<rill::Queue<Json>> {
        let q = self.queue(name)?;
        self.connect().await?;
        let known = self.client.queues().await?;
        if known.iter().any(|k| k == name) {
            return Ok(q);
        }
        let c = q.counts().await?;
        if c.waiting + c.active + c.delayed + c.dead + c.parked > 0 {
            return Ok(q);
        }
        if known.is_empty() {
            bail!(
                "unknown queue {name:?}: namespace {:?} on {} has no queues yet (enqueue a job or start a worker \
                 first, or check --redis / --namespace)",
                self.namespace,
                self.url
            );
        }
        bail!(
            "unknown queue {name:?} in namespace {:?} (known: {})",
            self.namespace,
            known.join(", ")
        )
    }

    /// The named queue, or every known queue.
    pub async fn queues_or_all(
        &self,
        name: Option<&str>,
    ) -> anyhow::Result<Vec<rill::Queue<Json>>> {
        match name {
            Some(n) => Ok(vec![self.existing_queue(n).await?]),
            None => {
                self.connect().await?;
                self.client
                    .queues()
                    .await?
                    .iter()
                    .map(|n| self.queue(n))
                    .collect()
            }
        }
    }
}

/// Asks `question` on the terminal and says whether the answer was yes; `yes` (the `--yes` flag) answers for
/// scripts. Without a terminal to ask on, refuses rather than guess.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Not asked: stdin is not a terminal; pass --yes to do it from a script");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
