//! A fault layer in front of moto: a small HTTP/1.1 proxy on loopback that records every EC2 request
//! and can answer chosen ones with an EC2 error instead of forwarding them.
//!
//! moto ignores `ClientToken` and never throttles, so the behaviour that depends on both is checked
//! here: the proxy sees each request's action, region, `ClientToken` and `TagSpecification` parameters;
//! it can throttle the first N requests of an action the way EC2 does (HTTP 503,
//! `RequestLimitExceeded`); and it can honour client tokens the way EC2 does (a repeated
//! `RunInstances` token gets the first response again, nothing new is launched). With
//! [`FaultProxy::fail_randomly`] a seeded share of all requests fails the ways EC2 and networks do:
//! throttled, 5xx, the connection reset before or after moto acted, or a `NotFound` for an
//! instance just launched (EC2's eventual consistency).
//!
//! S3 requests (the state backend) pass through too, recorded as `METHOD /bucket/key`. moto checks an
//! S3 conditional write (`If-None-Match: *`, `If-Match: <etag>`) and then writes, on one of its server
//! threads, without a lock around the two: two racing creates of one key can both succeed, which S3
//! never allows. The proxy therefore forwards conditional writes one at a time, which makes moto's
//! check-then-write atomic as S3's is; every other request still runs concurrently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy answers instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// EC2's throttling answer: HTTP 503, `RequestLimitExceeded`.
    Throttle,
    /// Any EC2 error.
    Error {
        /// HTTP status.
        status: u16,
        /// EC2 error code.
        code: String,
    },
    /// The request reaches moto and takes effect, then the connection closes without an answer:
    /// a timeout or a reset after EC2 acted.
    LoseResponse,
}

impl Fault {
    fn status(&self) -> u16 {
        match self {
            Fault::Throttle => 503,
            Fault::Error { status, .. } => *status,
            // Never answered; see `serve`.
            Fault::LoseResponse => 0,
        }
    }

    fn code(&self) -> &str {
        match self {
            Fault::Throttle => "RequestLimitExceeded",
            Fault::Error { code, .. } => code,
            Fault::LoseResponse => "",
        }
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The EC2 action (`RunInstances`), or `METHOD /bucket/key` for an S3 request.
    pub action: String,
    /// The region from the request's SigV4 credential scope.
    pub region: Option<String>,
    /// Every form parameter (`ClientToken`, `TagSpecification.1.ResourceType`, ...).
    pub params: BTreeMap<String, String>,
    /// The status the client got.
    pub status: u16,
    /// Answered by the proxy (a fault, or a replayed client token) rather than by moto.
    pub answered_by_proxy: bool,
}

impl Recorded {
    /// The request's `ClientToken`, if it had one.
    pub fn client_token(&self) -> Option<&str> {
        self.params.get("ClientToken").map(String::as_str)
    }

    /// The (resource type, tags) of each `TagSpecification` the request carried.
    pub fn tag_specifications(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let Some(kind) = self.params.get(&format!("TagSpecification.{n}.ResourceType")) else { break };
            let mut tags = BTreeMap::new();
            for m in 1.. {
                let Some(key) = self.params.get(&format!("TagSpecification.{n}.Tag.{m}.Key")) else { break };
                let value = self
                    .params
                    .get(&format!("TagSpecification.{n}.Tag.{m}.Value"))
                    .cloned()
                    .unwrap_or_default();
                tags.insert(key.clone(), value);
            }
            out.push((kind.clone(), tags));
        }
        out
    }
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Recorded>,
    faults: HashMap<String, VecDeque<Fault>>,
    honour_tokens: bool,
    tokens: HashMap<String, Vec<u8>>,
    fault_count: u64,
    /// Seeded random faults: (generator, probability per request).
    random: Option<(StdRng, f64)>,
    /// Whether an instance was launched since a describe was last refused as "not visible yet".
    launched: bool,
    /// Actions whose responses random faults never lose after moto acted.
    spared: Vec<String>,
}

/// What a random fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Random {
    /// Answer this fault without forwarding.
    Answer(u8),
    /// Close the connection without answering (a reset, or a timeout's end).
    ResetBefore,
    /// Forward, then close the connection without answering: moto acted, the client never knows.
    ResetAfter,
    /// Answer `InvalidInstanceID.NotFound` for an instance launched a moment ago.
    NotFoundYet,
}

impl State {
    fn roll(&mut self, action: &str) -> Option<Random> {
        let (rng, rate) = self.random.as_mut()?;
        if rng.random::<f64>() >= *rate {
            return None;
        }
        let x: u8 = rng.random_range(0..10);
        Some(match x % 5 {
            0 if action == "DescribeInstances" && self.launched => {
                self.launched = false;
                Random::NotFoundYet
            }
            0 | 1 => Random::Answer(x % 2),
            2 => Random::ResetBefore,
            3 if self.spared.iter().any(|a| a == action) => Random::ResetBefore,
            3 => Random::ResetAfter,
            _ => Random::Answer(2),
        })
    }
}

/// The proxy. Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// Held while one conditional S3 write is forwarded (see the module documentation).
type Conditional = Arc<tokio::sync::Mutex<()>>;

impl FaultProxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream` (moto), on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let conditional = Conditional::default();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (state, conditional) = (shared.clone(), conditional.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(client, upstream, state, conditional).await {
                        tracing::debug!(error = %e, "fault proxy connection ended");
                    }
                });
            }
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// From now on, each request fails with probability `rate`, from a PRNG seeded with `seed`:
    /// throttled (503 `RequestLimitExceeded`), a 500 or 503 server error, the connection reset
    /// before or after moto acted, or `InvalidInstanceID.NotFound` from a describe right after a
    /// launch. Faults armed with [`FaultProxy::fail`] strike first.
    pub fn fail_randomly(&self, seed: u64, rate: f64) {
        self.lock().random = Some((StdRng::seed_from_u64(seed), rate));
    }

    /// Random faults never lose the response of `actions` after moto acted (they reset the
    /// connection before forwarding instead): for actions that are known not to survive it.
    pub fn spare_lost_responses(&self, actions: &[&str]) {
        self.lock().spared = actions.iter().map(|a| a.to_string()).collect();
    }

    /// Its endpoint URL, for [`crate::AwsSettings::endpoint_url`].
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// The requests of one action.
    pub fn requests_of(&self, action: &str) -> Vec<Recorded> {
        self.lock().log.iter().filter(|r| r.action == action).cloned().collect()
    }

    /// How many requests of `action` were seen (faulted ones included).
    pub fn count(&self, action: &str) -> usize {
        self.lock().log.iter().filter(|r| r.action == action).count()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.lock().log.clear();
    }

    /// Answers the next `times` requests of `action` with `fault`.
    pub fn fail(&self, action: &str, times: usize, fault: Fault) {
        let mut state = self.lock();
        let queue = state.faults.entry(action.to_string()).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Drops every fault not injected yet.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Makes `RunInstances` honour `ClientToken` as EC2 does: a token seen in a successful launch gets
    /// that launch's response again, without forwarding.
    pub fn honour_client_tokens(&self, on: bool) {
        self.lock().honour_tokens = on;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread may poison the lock; the recorded data is still what was seen.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A parsed HTTP message: head lines and body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The message with its framing rewritten: a fixed `Content-Length`, and `connection`. The answer
    /// to a `HEAD` (`bodiless`) keeps its own `Content-Length`: it is the object's, not the body's.
    fn encode(&self, connection: &str, bodiless: bool) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            if ["content-length", "transfer-encoding", "connection", "keep-alive"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
            {
                continue;
            }
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let length = match self.header("content-length") {
            Some(given) if bodiless => given.to_string(),
            _ => self.body.len().to_string(),
        };
        out.push_str(&format!("Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// How a message's body ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After `Content-Length` bytes (none without it): a request.
    Length,
    /// After `Content-Length` bytes, else at the end of the stream: a response.
    LengthOrEof,
    /// There is none whatever the headers say: the answer to a `HEAD`.
    None,
}

/// Reads one message framed as `framing` says. `Ok(None)` at a clean end of stream before any byte.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("HTTP head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(io::Error::other("truncated HTTP head")) };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut message = Message { start, headers, body: Vec::new() };
    if framing == Framing::None {
        return Ok(Some(message));
    }
    if message.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err(io::Error::other("chunked bodies are not supported by the fault proxy"));
    }
    match message.header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(len)) => {
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::other("truncated HTTP body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            message.body = buf.drain(..len).collect();
        }
        Some(Err(_)) => return Err(io::Error::other("bad Content-Length")),
        None if framing == Framing::LengthOrEof => {
            stream.read_to_end(buf).await?;
            message.body = std::mem::take(buf);
        }
        None => {}
    }
    Ok(Some(message))
}

/// The region in a SigV4 `Authorization` header's credential scope.
fn region_of(authorization: &str) -> Option<String> {
    let scope = authorization.split("Credential=").nth(1)?;
    scope.split(['/', ',']).nth(2).map(str::to_string)
}

fn error_response(fault: &Fault, request_id: &str) -> Message {
    let reason = if fault.status() == 503 { "Service Unavailable" } else { "Error" };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>injected by \
         the peerfleet fault proxy</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
        fault.code()
    );
    Message {
        start: format!("HTTP/1.1 {} {reason}", fault.status()),
        headers: vec![("Content-Type".into(), "text/xml;charset=UTF-8".into())],
        body: body.into_bytes(),
    }
}

fn status_of(response: &Message) -> u16 {
    response.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Serves one client connection (keep-alive): each request is faulted, replayed or forwarded.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    conditional: Conditional,
) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buf, Framing::Length).await? {
        let (method, target) = request.start.split_once(' ').unwrap_or_default();
        let (method, path) = (method.to_string(), target.split(' ').next().unwrap_or_default());
        // EC2 requests are forms; an S3 request's body is the object, and it has no action.
        let ec2 = request
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        let params: BTreeMap<String, String> = if ec2 {
            form_urlencoded::parse(&request.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        } else {
            BTreeMap::new()
        };
        let action = match params.get("Action") {
            Some(a) => a.clone(),
            None => format!("{method} {}", path.split('?').next().unwrap_or_default()),
        };
        let is_conditional_write = matches!(method.as_str(), "PUT" | "DELETE")
            && (request.header("if-match").is_some() || request.header("if-none-match").is_some());
        let region = request.header("authorization").and_then(region_of);
        let token = params.get("ClientToken").cloned().filter(|_| action == "RunInstances");

        let random = lock(&state).roll(&action);
        let random_answer = match random {
            Some(Random::ResetBefore) => return Ok(()),
            Some(Random::Answer(n)) => Some(match n {
                0 => Fault::Throttle,
                1 => Fault::Error { status: 500, code: "InternalError".into() },
                _ => Fault::Error { status: 503, code: "Unavailable".into() },
            }),
            Some(Random::NotFoundYet) => {
                Some(Fault::Error { status: 400, code: "InvalidInstanceID.NotFound".into() })
            }
            _ => None,
        };
        let (canned, lose) = {
            let mut s = lock(&state);
            let armed = s.faults.get_mut(&action).and_then(VecDeque::pop_front);
            let lose = armed == Some(Fault::LoseResponse);
            let armed = armed.filter(|_| !lose);
            let canned = if let Some(fault) = armed.or(random_answer) {
                s.fault_count += 1;
                Some(error_response(&fault, &format!("peerfleet-fault-{}", s.fault_count)))
            } else {
                let replay = token.as_ref().filter(|_| s.honour_tokens).and_then(|t| s.tokens.get(t));
                replay.map(|body| Message {
                    start: "HTTP/1.1 200 OK".into(),
                    headers: vec![("Content-Type".into(), "text/xml;charset=UTF-8".into())],
                    body: body.clone(),
                })
            };
            (canned, lose)
        };
        let (response, by_proxy) = match canned {
            Some(r) => (r, true),
            None if is_conditional_write => {
                let _one_at_a_time = conditional.lock().await;
                (forward(&request, upstream).await?, false)
            }
            None => (forward(&request, upstream).await?, false),
        };
        let status = status_of(&response);
        {
            let mut s = lock(&state);
            if let (Some(t), false, 200) = (&token, by_proxy, status) {
                s.tokens.entry(t.clone()).or_insert_with(|| response.body.clone());
            }
            if action == "RunInstances" && status == 200 && s.random.is_some() {
                s.launched = true;
            }
            s.log.push(Recorded { action, region, params, status, answered_by_proxy: by_proxy });
        }
        if lose || random == Some(Random::ResetAfter) {
            return Ok(());
        }
        client.write_all(&response.encode("keep-alive", method == "HEAD")).await?;
    }
    Ok(())
}

/// Sends the request to moto on a fresh connection and reads the whole response.
async fn forward(request: &Message, upstream: SocketAddr) -> io::Result<Message> {
    let mut conn = TcpStream::connect(upstream).await?;
    conn.write_all(&request.encode("close", false)).await?;
    let mut buf = Vec::new();
    let framing = if request.start.starts_with("HEAD ") { Framing::None } else { Framing::LengthOrEof };
    read_message(&mut conn, &mut buf, framing)
        .await?
        .ok_or_else(|| io::Error::other("moto closed without answering"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20250101/cn-north-1/ec2/aws4_request, SignedHeaders=host, Signature=x";
        assert_eq!(region_of(auth).as_deref(), Some("cn-north-1"));
        assert_eq!(region_of("Bearer x"), None);
    }

    #[test]
    fn tag_specifications_are_read_from_form_parameters() {
        let params: BTreeMap<String, String> = [
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "peerfleet:network"),
            ("TagSpecification.1.Tag.1.Value", "n"),
            ("TagSpecification.1.Tag.2.Key", "peer_cluster"),
            ("TagSpecification.2.ResourceType", "volume"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = Recorded {
            action: "RunInstances".into(),
            region: None,
            params,
            status: 200,
            answered_by_proxy: false,
        };
        let specs = r.tag_specifications();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].1.get("peer_cluster").map(String::as_str), Some(""));
        assert_eq!(specs[1], ("volume".to_string(), BTreeMap::new()));
    }
}
