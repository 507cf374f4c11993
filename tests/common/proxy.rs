//! A counting, fault-injecting HTTP proxy in front of moto, on a free
//! loopback port: counts calls by X-Amz-Target, keeps request bodies (for
//! ClientRequestTokens), and can answer errors, delay, or drop a response
//! after moto has acted on the request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this HTTP status and AWS error code, without forwarding.
    Error { status: u16, code: &'static str },
    /// Forward (moto acts on it), then close the connection unanswered.
    DropResponse,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Answer 200 with this JSON body, without forwarding (a page that
    /// moto would not give, such as AWS's empty page with a NextToken).
    Answer(&'static str),
}

struct Rule {
    /// Only requests signed for this region (SigV4 credential scope).
    region: Option<String>,
    target: String,
    needle: Option<String>,
    fault: Fault,
    remaining: usize,
}

struct State {
    upstream: u16,
    rules: Mutex<Vec<Rule>>,
    /// Each request's target, body and signing region.
    log: Mutex<Vec<(String, Vec<u8>, String)>>,
    /// While set, connections are refused (no listener) and open ones
    /// closed at their next request.
    refusing: AtomicBool,
    /// Requests being handled now, and the most ever at once.
    open: AtomicUsize,
    peak: AtomicUsize,
    /// Chaos and outage (the soak's modes); off unless turned on.
    soak: Soak,
}

/// Counts a request as open while it lives.
struct Open<'a>(&'a State);

impl<'a> Open<'a> {
    fn new(state: &'a State) -> Self {
        let now = state.open.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
    /// The accept loop (aborted while refusing: the port is then closed).
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The region a request is signed for: the SigV4 credential scope in its
/// Authorization header (`Credential=AKID/20261206/eu-west-1/secretsmanager/aws4_request`).
fn signing_region(msg: &Message) -> String {
    msg.header("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_string()
}

struct Message {
    head: String,
    raw: Vec<u8>,
    body_start: usize,
    has_length: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn body(&self) -> &[u8] {
        &self.raw[self.body_start..]
    }
}

/// Reads one HTTP/1.x message (head and Content-Length body; without a
/// length, up to EOF). None on a clean EOF before any byte.
async fn read_message(s: &mut TcpStream) -> std::io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut msg = Message {
        head,
        raw,
        body_start: head_end,
        has_length: false,
    };
    match msg
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) => {
            msg.has_length = true;
            while msg.raw.len() < head_end + len {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                msg.raw.extend_from_slice(&buf[..n]);
            }
        }
        None if msg.head.starts_with("HTTP/") => {
            s.read_to_end(&mut msg.raw).await?;
        }
        None => {}
    }
    Ok(Some(msg))
}

async fn forward(upstream: u16, req: &Message) -> std::io::Result<Message> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(&req.raw).await?;
    read_message(&mut up)
        .await?
        .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

async fn serve(state: Arc<State>, mut client: TcpStream) -> std::io::Result<()> {
    while let Some(req) = read_message(&mut client).await? {
        let target = req
            .header("x-amz-target")
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
            .unwrap_or_default();
        if state.refusing.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _open = Open::new(&state);
        let body = req.body().to_vec();
        let region = signing_region(&req);
        state
            .log
            .lock()
            .unwrap()
            .push((target.clone(), body.clone(), region.clone()));
        if state.soak.outage.load(Ordering::SeqCst) {
            state.soak.counts[INJ_OUTAGE].fetch_add(1, Ordering::SeqCst);
            client
                .write_all(&error_response(503, "ServiceUnavailable"))
                .await?;
            continue;
        }
        let fault = {
            let mut rules = state.rules.lock().unwrap();
            let text = String::from_utf8_lossy(&body);
            rules
                .iter_mut()
                .find(|r| {
                    r.remaining > 0
                        && r.region.as_deref().is_none_or(|reg| reg == region)
                        && (r.target == target || r.target == "*")
                        && r.needle.as_deref().is_none_or(|n| text.contains(n))
                })
                .map(|r| {
                    r.remaining -= 1;
                    r.fault.clone()
                })
        };
        let fault = fault.or_else(|| state.soak.pick());
        match fault {
            Some(Fault::Error { status, code }) => {
                let body =
                    format!(r#"{{"__type":"{code}","message":"injected by the test proxy"}}"#);
                let resp = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(resp.as_bytes()).await?;
                continue;
            }
            Some(Fault::DropResponse) => {
                let _ = forward(state.upstream, &req).await?;
                return Ok(());
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Answer(body)) => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(resp.as_bytes()).await?;
                continue;
            }
            None => {}
        }
        let resp = forward(state.upstream, &req).await?;
        client.write_all(&resp.raw).await?;
        if !resp.has_length {
            return Ok(());
        }
    }
    Ok(())
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    while let Ok((conn, _)) = listener.accept().await {
        let st = state.clone();
        tokio::spawn(async move {
            let _ = serve(st, conn).await;
        });
    }
}

impl Proxy {
    pub fn start() -> Proxy {
        let upstream = super::moto_port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            refusing: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            soak: Soak::default(),
        });
        let accepting = rt.spawn(accept(listener, state.clone()));
        Proxy {
            port,
            state,
            rt: Some(rt),
            accepting: Mutex::new(Some(accepting)),
        }
    }

    /// While `on`, the port is closed (connections are refused) and open
    /// connections are closed at their next request; off: listening again
    /// on the same port.
    pub fn refuse(&self, on: bool) {
        let rt = self.rt.as_ref().expect("running");
        let mut accepting = self.accepting.lock().unwrap();
        self.state.refusing.store(on, Ordering::SeqCst);
        if on {
            if let Some(task) = accepting.take() {
                task.abort();
                // The listener is closed once the aborted task is dropped.
                let _ = rt.block_on(task);
            }
        } else if accepting.is_none() {
            let listener = rt
                .block_on(TcpListener::bind(("127.0.0.1", self.port)))
                .expect("bind the proxy's port again");
            *accepting = Some(rt.spawn(accept(listener, self.state.clone())));
        }
    }

    /// Like `fault`, for requests signed for `region` only.
    pub fn fault_in(
        &self,
        region: &str,
        target: &str,
        needle: Option<&str>,
        fault: Fault,
        times: usize,
    ) {
        self.state.rules.lock().unwrap().push(Rule {
            region: Some(region.to_string()),
            target: target.to_string(),
            needle: needle.map(str::to_string),
            fault,
            remaining: times,
        });
    }

    /// Calls of `target` ("*": any) signed for `region`.
    pub fn count_in(&self, region: &str, target: &str) -> usize {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, r)| r == region && (target == "*" || t == target))
            .count()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to the next `times` calls of `target` ("*": any
    /// operation) whose body contains `needle` (a secret's name, say).
    pub fn fault(&self, target: &str, needle: Option<&str>, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            region: None,
            target: target.to_string(),
            needle: needle.map(str::to_string),
            fault,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    pub fn count(&self, target: &str) -> usize {
        self.count_for(target, None)
    }

    /// Calls of `target` whose body mentions `needle` (exact JSON string).
    pub fn count_for(&self, target: &str, needle: Option<&str>) -> usize {
        self.bodies(target)
            .iter()
            .filter(|b| needle.is_none_or(|n| b.to_string().contains(&format!("\"{n}\""))))
            .count()
    }

    pub fn bodies(&self, target: &str) -> Vec<serde_json::Value> {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == target)
            .map(|(_, b, _)| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// The most requests that were open at once (being forwarded, delayed
    /// or answered) since the start or the last `reset_peak`.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn reset_peak(&self) {
        let now = self.state.open.load(Ordering::SeqCst);
        self.state.peak.store(now, Ordering::SeqCst);
    }

    pub fn total(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Light random faults on every request, whatever its target, when no rule
/// applies: each request gets at most one of them, picked independently of
/// the others. All zero (the default) is off.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chaos {
    /// Longest delay before forwarding, for the `p_delay` share.
    pub delay_ms_max: u64,
    pub p_delay: f64,
    /// HTTP 500 InternalFailure, not forwarded.
    pub p_500: f64,
    /// HTTP 400 ThrottlingException, not forwarded.
    pub p_throttle: f64,
    /// Forwarded (moto acts on it), then closed unanswered.
    pub p_drop: f64,
}

/// Faults injected by chaos and outage since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub outage_503: usize,
    pub e500: usize,
    pub throttles: usize,
    pub drops: usize,
    pub delays: usize,
}

const INJ_OUTAGE: usize = 0;
const INJ_500: usize = 1;
const INJ_THROTTLE: usize = 2;
const INJ_DROP: usize = 3;
const INJ_DELAY: usize = 4;

#[derive(Default)]
struct Soak {
    chaos: Mutex<Chaos>,
    outage: AtomicBool,
    counts: [AtomicUsize; 5],
}

impl Soak {
    /// The chaos fault for one request, if the dice say so.
    fn pick(&self) -> Option<Fault> {
        let c = *self.chaos.lock().unwrap();
        let r = fastrand::f64();
        let (slot, fault) = if r < c.p_500 {
            (
                INJ_500,
                Fault::Error {
                    status: 500,
                    code: "InternalFailure",
                },
            )
        } else if r < c.p_500 + c.p_throttle {
            (
                INJ_THROTTLE,
                Fault::Error {
                    status: 400,
                    code: "ThrottlingException",
                },
            )
        } else if r < c.p_500 + c.p_throttle + c.p_drop {
            (INJ_DROP, Fault::DropResponse)
        } else if r < c.p_500 + c.p_throttle + c.p_drop + c.p_delay {
            let ms = fastrand::u64(0..=c.delay_ms_max);
            (INJ_DELAY, Fault::Delay(Duration::from_millis(ms)))
        } else {
            return None;
        };
        self.counts[slot].fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }
}

/// An AWS JSON error response, as the rules' `Fault::Error` answers.
fn error_response(status: u16, code: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"{code}","message":"injected by the test proxy"}}"#);
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Proxy {
    /// Turns chaos on for every later request (`Chaos::default()` turns it
    /// off). Rules set with `fault` take precedence.
    pub fn chaos(&self, chaos: Chaos) {
        *self.state.soak.chaos.lock().unwrap() = chaos;
    }

    /// While on, every request is answered 503 ServiceUnavailable without
    /// reaching moto (rules and chaos are not consulted).
    pub fn outage(&self, on: bool) {
        self.state.soak.outage.store(on, Ordering::SeqCst);
    }

    pub fn injected(&self) -> Injected {
        let n = |i: usize| self.state.soak.counts[i].load(Ordering::SeqCst);
        Injected {
            outage_503: n(INJ_OUTAGE),
            e500: n(INJ_500),
            throttles: n(INJ_THROTTLE),
            drops: n(INJ_DROP),
            delays: n(INJ_DELAY),
        }
    }
}
