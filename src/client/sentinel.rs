//! Redis Sentinel: `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]` names the
//! Sentinels (port 26379 by default) and the monitored primary's service name; the password and database are the
//! primary's. Every connection the client opens asks the Sentinels for the current primary, so after a failover
//! the next connection goes to the new one; the shared connection is retired when it meets a demoted primary
//! (`READONLY`) or loses its link (see `Connection`).

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use crate::error::{Error, Result};

/// The scheme of Sentinel URLs.
pub(super) const SCHEME: &str = "redis+sentinel://";

/// Where the primary is found.
pub(super) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
}

/// A Sentinel URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    user: Option<String>,
    password: Option<String>,
    sentinels: Vec<(String, u16)>,
    service: String,
    db: i64,
}

fn parse(url: &str) -> std::result::Result<Parts, &'static str> {
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or("not a redis+sentinel:// URL")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
            None => (Some(a.to_owned()), None),
        },
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("no service name: redis+sentinel://host:26379/<service>")?;
    let sentinels = hosts
        .split(',')
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) => port
                .parse::<u16>()
                .map(|p| (host.to_owned(), p))
                .map_err(|_| "a Sentinel port is not a number"),
            None => Ok((h.to_owned(), 26379)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if sentinels.iter().any(|(h, _)| h.is_empty()) {
        return Err("an empty Sentinel host");
    }
    let mut path = path.split('/');
    let service = path.next().unwrap_or_default().to_owned();
    if service.is_empty() {
        return Err("no service name: redis+sentinel://host:26379/<service>");
    }
    let db = match path.next() {
        None | Some("") => 0,
        Some(d) => d.parse().map_err(|_| "the database is not a number")?,
    };
    Ok(Parts {
        user,
        password,
        sentinels,
        service,
        db,
    })
}

impl Sentinel {
    /// The Sentinels of `url`; nothing is contacted yet.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a URL that does not parse.
    pub(super) fn new(url: &str) -> Result<Self> {
        let p = parse(url).map_err(|reason| Error::InvalidOption {
            option: "redis+sentinel URL",
            reason,
        })?;
        let mut info = redis::RedisConnectionInfo::default().set_db(p.db);
        if let Some(u) = &p.user {
            info = info.set_username(u);
        }
        if let Some(pw) = &p.password {
            info = info.set_password(pw);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        let sentinels: Vec<String> = p
            .sentinels
            .iter()
            .map(|(h, port)| format!("redis://{h}:{port}"))
            .collect();
        let client =
            SentinelClient::build(sentinels, p.service, Some(node), SentinelServerType::Master)
                .map_err(|_| Error::InvalidOption {
                    option: "redis+sentinel URL",
                    reason: "the Sentinel addresses do not parse",
                })?;
        Ok(Sentinel {
            client: tokio::sync::Mutex::new(client),
        })
    }

    /// A client for the primary the Sentinels name now.
    ///
    /// # Errors
    /// Redis errors (no Sentinel answers, or none knows the service).
    pub(super) async fn primary(&self) -> Result<redis::Client> {
        Ok(self.client.lock().await.async_get_client().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_sentinels_service_db_and_credentials() {
        assert_eq!(
            parse("redis+sentinel://s1:26380,s2,10.0.0.3:5000/mymaster/2").unwrap(),
            Parts {
                user: None,
                password: None,
                sentinels: vec![
                    ("s1".into(), 26380),
                    ("s2".into(), 26379),
                    ("10.0.0.3".into(), 5000)
                ],
                service: "mymaster".into(),
                db: 2,
            }
        );
        let p = parse("redis+sentinel://:pw@s1/main").unwrap();
        assert_eq!((p.user, p.password.as_deref(), p.db), (None, Some("pw"), 0));
        let p = parse("redis+sentinel://app:p@ss@s1/main/").unwrap();
        assert_eq!(
            (p.user.as_deref(), p.password.as_deref()),
            (Some("app"), Some("p@ss"))
        );
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel://s1:port/m",
            "redis+sentinel://,s2/m",
            "redis+sentinel://s1/m/zero",
            "redis://s1/m",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
            assert!(Sentinel::new(bad).is_err(), "{bad}");
        }
        assert!(
            Sentinel::new("redis+sentinel://127.0.0.1:1/m").is_ok(),
            "no I/O at build"
        );
    }
}
