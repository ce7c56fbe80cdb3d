//! Helpers shared by the ds-proto integration tests.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;

use ds_proto::{Config, Incoming, Role, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connected host/agent pair over a real socketpair.
pub async fn pair() -> (Session, Session) {
    pair_with(Config::default()).await
}

pub async fn pair_with(config: Config) -> (Session, Session) {
    let (a, b) = UnixStream::pair().unwrap();
    let host = Session::connect(a, Role::Host, config.clone());
    let agent = Session::connect(b, Role::Agent, config);
    let (host, agent) = tokio::join!(host, agent);
    (host.unwrap(), agent.unwrap())
}

/// Agent side: echoes every inbound HTTP stream back until its end.
pub fn spawn_agent_echo(agent: Session) -> tokio::task::JoinHandle<Session> {
    tokio::spawn(async move {
        while let Ok(incoming) = agent.accept().await {
            let Incoming::Http(mut stream) = incoming else {
                panic!("agent got egress")
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut stream);
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
        agent
    })
}

/// Host side: accepts every egress request and echoes its bytes.
pub fn spawn_host_egress_echo(host: Session) -> tokio::task::JoinHandle<Session> {
    tokio::spawn(async move {
        while let Ok(incoming) = host.accept().await {
            let Incoming::Egress(req) = incoming else {
                panic!("host got http")
            };
            tokio::spawn(async move {
                let mut stream = req.accept().await.unwrap();
                let (mut r, mut w) = tokio::io::split(&mut stream);
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
        host
    })
}

/// Writes `payload`, half-closes, and reads everything back.
pub async fn exchange<S>(stream: &mut S, payload: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    tokio::join!(write, read).1
}
