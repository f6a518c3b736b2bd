//! A real OTLP trace receiver for the tests of trace export: a small Python server built on
//! the `opentelemetry-proto` package (and `grpcio` for gRPC), which decodes each
//! `ExportTraceServiceRequest` and appends its spans as JSON lines to a file the test reads.
//! The packages are installed with pip when missing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::host::TestDir;

/// The receiver, in Python: `receiver.py http|grpc <out file>`; prints its port once ready.
const RECEIVER: &str = r#"
import json, sys, threading
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

mode, out_path = sys.argv[1], sys.argv[2]
lock = threading.Lock()

def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(v, kind))
    return getattr(v, kind)

def dump(req):
    lines = []
    for rs in req.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                lines.append(json.dumps({
                    "trace_id": sp.trace_id.hex(),
                    "span_id": sp.span_id.hex(),
                    "parent_span_id": sp.parent_span_id.hex(),
                    "name": sp.name,
                    "kind": sp.kind,
                    "status": sp.status.code,
                    "service": resource.get("service.name"),
                    "attributes": {a.key: value(a.value) for a in sp.attributes},
                }))
    with lock:
        with open(out_path, "a") as f:
            for line in lines:
                f.write(line + "\n")

if mode == "http":
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            dump(req)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
else:
    from concurrent import futures
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            dump(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
"#;

/// The OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Protobuf over HTTP (`http/protobuf`).
    Http,
    /// gRPC.
    Grpc,
}

impl Transport {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol(self) -> &'static str {
        match self {
            Transport::Http => "http/protobuf",
            Transport::Grpc => "grpc",
        }
    }
}

/// One span as the receiver got it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i64,
    pub service: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl ReceivedSpan {
    /// The attribute `key` as text (numbers and booleans written out), if set.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// A running receiver; stopped when dropped.
pub struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: TestDir,
}

/// Python with the receiver's packages, installed with pip when missing (once per process).
fn ensure_python_packages() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let check = || {
        Command::new("python3")
            .args([
                "-c",
                "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !check() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "opentelemetry-proto",
                "grpcio",
            ])
            .status()
            .expect("python3 runs (the OTLP receiver of the trace tests needs it)");
        assert!(
            status.success() && check(),
            "cannot install the Python packages opentelemetry-proto and grpcio"
        );
    }
    *done = true;
}

impl Receiver {
    /// Start a receiver on 127.0.0.1 for `transport`.
    pub fn start(transport: Transport) -> Receiver {
        ensure_python_packages();
        let dir = TestDir::new();
        let script = dir.path().join("receiver.py");
        std::fs::write(&script, RECEIVER).expect("write the receiver");
        let out = dir.path().join("spans.jsonl");
        let mode = match transport {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        };
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(mode)
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the receiver's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver printed {line:?}, not its port"));
        Receiver {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("span {l}: {e}")))
            .collect()
    }

    /// The spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long spans may take to reach the receiver (the host exports in batches).
pub const EXPORT_WAIT: Duration = Duration::from_secs(30);
