//! A fault-injecting TCP proxy for storage tests: it sits between Patina and the in-process S3
//! server and, connection by connection, passes traffic through or breaks it the way networks
//! and providers do — 503 answers, resets, truncated responses. Faults are queued; when the
//! queue is empty (or the proxy is healed) traffic passes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Answer `503 Service Unavailable` without contacting the server.
    Unavailable,
    /// Close the connection as soon as the request starts (the client sees it drop).
    Reset,
    /// Forward the request, but cut the response after this many bytes.
    Truncate(usize),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Fault>,
    /// When set, every connection gets this fault (an outage) until healed.
    always: Option<Fault>,
    connections: u64,
}

/// The proxy; dropping it leaves the listener task running until the runtime ends.
pub struct FaultyProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FaultyProxy {
    /// Proxy `127.0.0.1:0` → `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = {
                    let mut s = shared.lock().unwrap();
                    s.connections += 1;
                    s.always
                        .or_else(|| s.queue.pop_front())
                        .unwrap_or(Fault::Pass)
                };
                tokio::spawn(handle(client, upstream, fault));
            }
        });
        FaultyProxy { addr, state }
    }

    /// `http://127.0.0.1:PORT`, for an S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue faults for the next connections.
    pub fn inject(&self, faults: &[Fault]) {
        self.state.lock().unwrap().queue.extend(faults);
    }

    /// Every connection fails with `fault` until [`FaultyProxy::heal`].
    pub fn outage(&self, fault: Fault) {
        self.state.lock().unwrap().always = Some(fault);
    }

    /// Back to normal: pending and permanent faults are dropped.
    pub fn heal(&self) {
        let mut s = self.state.lock().unwrap();
        s.always = None;
        s.queue.clear();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.lock().unwrap().connections
    }
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    match fault {
        Fault::Reset => {
            let mut buf = [0u8; 1];
            let _ = client.read(&mut buf).await;
            drop(client);
        }
        Fault::Unavailable => {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = client.read(&mut buf).await;
            let _ = client
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = client.shutdown().await;
        }
        Fault::Pass => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Fault::Truncate(limit) => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let mut sent = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            while sent < limit {
                match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let n = n.min(limit - sent);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                    }
                }
            }
            up.abort();
            drop(client_write);
        }
    }
}
