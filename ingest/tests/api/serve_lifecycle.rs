//! The listener's lifecycle: a request past its deadline gets Google's `504` body, connections
//! beyond the cap wait to be accepted instead of being refused, sockets that are silent, trickle
//! a head byte by byte or sit idle after an answer are closed at the head deadline so that they
//! cannot hold the cap against a device, a thousand idle sockets from one address stop at that
//! address's cap, idle keep-alive connections give way when the cap is nearly reached, and
//! shutdown lets quick in-flight requests finish but
//! returns once the drain time is up. Handlers are held and
//! released through semaphores so the tests wait on events, not on guessed sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ingest::http::serve::{ServeOptions, serve};
use ingest::telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

/// A handler that reports its arrival and then waits until the test releases it.
#[derive(Clone)]
struct Gate {
    arrived: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

async fn held(State(gate): State<Gate>) -> &'static str {
    let _ = gate.arrived.send(());
    gate.release.acquire().await.unwrap().forget();
    "done"
}

async fn forever() -> &'static str {
    std::future::pending::<()>().await;
    "unreachable"
}

struct Harness {
    addr: SocketAddr,
    arrived: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Harness {
    async fn start(options: ServeOptions) -> Self {
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let app = Router::new()
            .route("/held", get(held))
            .route("/forever", get(forever))
            .route("/quick", get(|| async { "quick" }))
            .with_state(Gate {
                arrived: arrived_tx,
                release: release.clone(),
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(listener, app, options, shutdown));
        Self {
            addr,
            arrived,
            release,
            stop: Some(stop),
            server,
        }
    }

    /// Sends `GET path` on a new connection and returns the task reading the answer.
    async fn send(&self, path: &str) -> JoinHandle<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::spawn(read_response(stream))
    }

    async fn arrival(&mut self) {
        within(Duration::from_secs(5), self.arrived.recv())
            .await
            .unwrap();
    }

    fn shut_down(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
    }
}

/// The status and body of a `Connection: close` response.
async fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, work)
        .await
        .expect("timed out waiting")
}

fn options() -> ServeOptions {
    ServeOptions {
        max_connections: 16,
        max_connections_per_address: 0,
        head_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(30),
        metrics: Some(Metrics::new()),
    }
}

#[tokio::test]
async fn a_slow_request_gets_googles_deadline_exceeded() {
    let harness = Harness::start(ServeOptions {
        request_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    let started = Instant::now();
    let (status, body) = within(Duration::from_secs(5), harness.send("/forever").await)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(status, 504);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], 504);
    assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED");
    assert!(body["error"]["message"].as_str().unwrap().contains("200ms"));
    // Quick requests are untouched.
    let (status, body) = harness.send("/quick").await.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "quick"));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_to_be_accepted() {
    let mut harness = Harness::start(ServeOptions {
        max_connections: 2,
        ..options()
    })
    .await;
    let first = harness.send("/held").await;
    let second = harness.send("/held").await;
    harness.arrival().await;
    harness.arrival().await;
    // The kernel completes the third handshake, but the server does not accept it yet.
    let third = harness.send("/held").await;
    let early = tokio::time::timeout(Duration::from_millis(300), harness.arrived.recv()).await;
    assert!(early.is_err(), "a third connection was served past the cap");

    harness.release.add_permits(1);
    let done = within(Duration::from_secs(5), async {
        tokio::select! {
            answer = first => answer,
            answer = second => answer,
        }
    })
    .await
    .unwrap();
    assert_eq!(done, (200, "done".to_owned()));
    // A slot is free: the waiting connection is accepted and served, not dropped.
    harness.arrival().await;
    harness.release.add_permits(2);
    let (status, body) = within(Duration::from_secs(5), third).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
}

#[tokio::test]
async fn shutdown_lets_a_quick_in_flight_request_finish() {
    let mut harness = Harness::start(options()).await;
    let in_flight = harness.send("/held").await;
    harness.arrival().await;
    harness.shut_down();
    // New connections are refused once the listener closes.
    within(Duration::from_secs(5), async {
        while TcpStream::connect(harness.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!harness.server.is_finished(), "returned before the drain");

    harness.release.add_permits(1);
    let (status, body) = within(Duration::from_secs(5), in_flight).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
    within(Duration::from_secs(5), harness.server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_returns_when_the_drain_time_is_up() {
    let drain = Duration::from_millis(300);
    let mut harness = Harness::start(ServeOptions {
        drain_timeout: drain,
        ..options()
    })
    .await;
    let _stuck = harness.send("/held").await;
    harness.arrival().await;
    let started = Instant::now();
    harness.shut_down();
    within(Duration::from_secs(5), harness.server)
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= drain,
        "returned after {took:?}, before the drain time"
    );
    assert!(took < drain + Duration::from_secs(2), "took {took:?}");
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(mut stream: TcpStream, started: Instant) -> Duration {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
    started.elapsed()
}

#[tokio::test]
async fn silent_and_trickling_sockets_are_closed_at_the_head_deadline_and_a_device_gets_in() {
    let head = Duration::from_secs(1);
    let harness = Harness::start(ServeOptions {
        max_connections: 20,
        head_timeout: head,
        ..options()
    })
    .await;
    let started = Instant::now();
    let mut held = Vec::new();
    for n in 0..20 {
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        if n % 2 == 1 {
            // A head that never ends: a byte every 100 ms, the slow-loris way.
            stream.write_all(b"GET /quick HTTP/1.1\r\n").await.unwrap();
            let (reader, mut writer) = stream.into_split();
            tokio::spawn(async move {
                while writer.write_all(b"X").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            held.push(tokio::spawn(async move {
                let mut reader = reader;
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink).await;
                started.elapsed()
            }));
        } else {
            held.push(tokio::spawn(closed_after(stream, started)));
        }
    }
    // Every slot is taken; a device's request is served once the deadline frees them.
    let device = harness.send("/quick").await;
    let (status, body) = within(Duration::from_secs(5), device).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "quick"));
    assert!(
        started.elapsed() < head * 3,
        "served after {:?}",
        started.elapsed()
    );
    // Each is closed by the deadline at the latest; the silent ones may go sooner, shed when the
    // cap was reached.
    for socket in held {
        let took = within(Duration::from_secs(5), socket).await.unwrap();
        assert!(took < head * 3, "closed only after {took:?}");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_idle_after_its_answer_is_closed_at_the_head_deadline() {
    let head = Duration::from_millis(800);
    let harness = Harness::start(ServeOptions {
        head_timeout: head,
        ..options()
    })
    .await;
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    stream
        .write_all(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = within(Duration::from_secs(5), stream.read(&mut first))
        .await
        .unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let answered = Instant::now();
    let took = within(Duration::from_secs(5), closed_after(stream, answered)).await;
    assert!(
        took >= head.mul_f32(0.9) && took < head * 3,
        "closed after {took:?}"
    );
}

/// A connection from `source` (a loopback address of its own) to the harness.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn a_thousand_idle_sockets_from_one_address_do_not_keep_a_device_out() {
    let harness = Harness::start(ServeOptions {
        max_connections: 1000,
        max_connections_per_address: 50,
        ..options()
    })
    .await;
    // 1,000 sockets from 127.0.0.2 that send nothing: 50 are held, the rest closed at once.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(connect_from("127.0.0.2", harness.addr).await);
    }
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert!(
        (940..=950).contains(&closed),
        "{closed} of 1000 closed at once"
    );

    // A device from another address is answered at once.
    let started = Instant::now();
    let device = harness.send("/quick").await;
    let (status, body) = within(Duration::from_secs(1), device).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "quick"));
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(idle);
}

#[tokio::test]
async fn idle_keep_alive_connections_give_way_when_the_cap_is_nearly_reached() {
    let harness = Harness::start(ServeOptions {
        max_connections: 32,
        ..options()
    })
    .await;
    // 32 keep-alive connections, each answered once and then idle: every slot is taken.
    let mut kept = Vec::new();
    for _ in 0..32 {
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        stream
            .write_all(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 256];
        let n = within(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        kept.push(stream);
    }
    // A new device is served long before the 10 s head deadline would free a slot.
    let started = Instant::now();
    let device = harness.send("/quick").await;
    let (status, _) = within(Duration::from_secs(2), device).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut closed = 0;
    for stream in &mut kept {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed > 0, "no idle keep-alive connection gave way");
}
