//! A TCP fault proxy between clients and a private redis-server: it forwards bytes, and on command freezes
//! connections without closing them (a half-open black hole, one or both ways), delays them, or resets them.
//! Faults apply to the connections open at that moment (`*_existing`) or to every connection, new ones included.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What one direction of a connection does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// Bytes are not forwarded (held back, as a black hole that later heals would deliver them).
    pub blocked: bool,
    /// Each chunk waits this long before it is forwarded.
    pub delay: Duration,
}

/// Both directions of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Client to Redis.
    pub up: Flow,
    /// Redis to client.
    pub down: Flow,
}

struct Link {
    faults: watch::Sender<Faults>,
    pumps: [JoinHandle<()>; 2],
}

#[derive(Default)]
struct State {
    links: Vec<Link>,
    /// What new connections start with.
    new: Faults,
    /// New connections are closed at once (Redis unreachable).
    refuse: bool,
}

/// A running proxy. Dropping it stops accepting and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of `127.0.0.1:target`, listening on a free port.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.lock().unwrap().refuse {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let mut st = st.lock().unwrap();
                let (tx, rx) = watch::channel(st.new);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = tokio::spawn(pump(cr, sw, rx.clone(), |f| f.up));
                let down = tokio::spawn(pump(sr, cw, rx, |f| f.down));
                st.links.push(Link {
                    faults: tx,
                    pumps: [up, down],
                });
            }
        });
        FaultProxy {
            addr,
            state,
            accept,
        }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Applies `faults` to the connections open now; new connections are unaffected.
    pub fn set_existing(&self, faults: Faults) {
        for link in &self.state.lock().unwrap().links {
            let _ = link.faults.send(faults);
        }
    }

    /// Applies `faults` to every connection, open now or opened later.
    pub fn set_all(&self, faults: Faults) {
        let mut st = self.state.lock().unwrap();
        st.new = faults;
        for link in &st.links {
            let _ = link.faults.send(faults);
        }
    }

    /// Black hole both ways for the connections open now (they stay open, as behind a stuck middlebox).
    pub fn freeze_existing(&self) {
        self.set_existing(Faults {
            up: Flow {
                blocked: true,
                ..Flow::default()
            },
            down: Flow {
                blocked: true,
                ..Flow::default()
            },
        });
    }

    /// Forwarding as normal for every connection.
    pub fn heal(&self) {
        self.set_all(Faults::default());
    }

    /// Closes new connections at once while `refuse` holds (as if Redis were down); open ones are untouched.
    pub fn refuse_new(&self, refuse: bool) {
        self.state.lock().unwrap().refuse = refuse;
    }

    /// Closes every open connection at once (new ones are accepted).
    pub fn reset(&self) {
        for link in self.state.lock().unwrap().links.drain(..) {
            for p in link.pumps {
                p.abort();
            }
        }
    }

    /// Connections accepted and not reset.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().links.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

/// Forwards `from` to `to`, obeying the faults of its direction.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    dir: fn(&Faults) -> Flow,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While blocked, read nothing: the bytes wait in the sender's buffers, as in a black hole.
        while dir(&faults.borrow_and_update()).blocked {
            if faults.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A fault may arrive while waiting for bytes: look at it before forwarding anything more.
            r = faults.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        let delay = dir(&faults.borrow()).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        while dir(&faults.borrow_and_update()).blocked {
            if faults.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
