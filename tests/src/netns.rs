//! Several machines on one: a [`Network`] of Linux network namespaces, each a [`Machine`]
//! with its own loopback and one interface (`eth0`, a veth pair) on a bridge of the root
//! namespace, and a [`TcpRelay`] that makes a service of the root namespace that listens on
//! loopback only (the local RabbitMQ broker) reachable at the bridge's address.
//!
//! The addresses come from 198.18.0.0/15, the range set aside for benchmarking networks
//! (RFC 2544): each network takes one /24 of it, the bridge `.1`, the machines `.11` on.
//! Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` (iproute2,
//! installed from Debian's packages when missing); [`Network::unavailable`] says why a
//! machine cannot, so a test can skip with that reason there and only there.
//!
//! Everything is removed when the [`Network`] is dropped: deleting a namespace deletes its
//! end of the veth pair, and with it the other end; the bridge is deleted last.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tools::ensure_program;

/// The first address of the 198.18.0.0/15 benchmarking range, as the integer it starts at.
const RANGE_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// How many /24 networks that range holds.
const RANGE_NETWORKS: u32 = 512;
/// The host part of the first machine's address (the bridge is `.1`).
const FIRST_MACHINE: u8 = 11;

/// One machine of a [`Network`]: a network namespace with its own address.
#[derive(Clone, Debug)]
pub struct Machine {
    name: String,
    netns: String,
    addr: Ipv4Addr,
}

impl Machine {
    /// The name the test gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The namespace's file under `/run/netns`, for [`crate::HostOptions::netns`] and
    /// [`enter`].
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// A bridge in the root namespace and one namespace per machine attached to it.
pub struct Network {
    bridge: String,
    gateway: Ipv4Addr,
    machines: Vec<Machine>,
}

impl Network {
    /// Why namespaces cannot be made here, or `None` when they can (running as root).
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some(
                "creating network namespaces and veth pairs needs root (CI runs as root)"
                    .to_owned(),
            );
        }
        None
    }

    /// A network with one machine per name. Panics with the failing `ip` command when it
    /// cannot be made (check [`Network::unavailable`] first).
    pub fn new(names: &[&str]) -> Network {
        ensure_program("ip", &["iproute2"]);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id().wrapping_mul(31).wrapping_add(n)) & 0xff_ffff;
        let subnet = RANGE_BASE + ((id % RANGE_NETWORKS) << 8);
        let gateway = Ipv4Addr::from(subnet + 1);
        let bridge = format!("ctb{id:06x}");
        let mut network = Network {
            bridge: bridge.clone(),
            gateway,
            machines: Vec::new(),
        };

        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, name) in names.iter().enumerate() {
            let index = u8::try_from(i).expect("fewer than 200 machines");
            let addr = Ipv4Addr::from(subnet + u32::from(FIRST_MACHINE + index));
            let netns = format!("ctxhost-{id:06x}-{name}");
            let outside = format!("ctv{id:06x}{i}");
            let inside = format!("cti{id:06x}{i}");
            ip(&["netns", "add", &netns]);
            // Registered at once, so a failure below still removes the namespace.
            network.machines.push(Machine {
                name: (*name).to_owned(),
                netns: netns.clone(),
                addr,
            });
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            ip(&["link", "set", &inside, "netns", &netns]);
            let in_ns = |args: &[&str]| {
                let mut all = vec!["-n", netns.as_str()];
                all.extend_from_slice(args);
                ip(&all);
            };
            in_ns(&["link", "set", &inside, "name", "eth0"]);
            in_ns(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            in_ns(&["link", "set", "eth0", "up"]);
            in_ns(&["link", "set", "lo", "up"]);
            in_ns(&["route", "add", "default", "via", &gateway.to_string()]);
        }
        network
    }

    /// The machine named `name`.
    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name} in this network"))
    }

    /// The root namespace's address on the network (the bridge's), where a [`TcpRelay`]
    /// can stand for a service of this machine.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for machine in &self.machines {
            if let Err(e) = try_ip(&["netns", "del", &machine.netns]) {
                eprintln!("could not delete network namespace {}: {e}", machine.netns);
            }
        }
        if let Err(e) = try_ip(&["link", "del", &self.bridge]) {
            eprintln!("could not delete bridge {}: {e}", self.bridge);
        }
    }
}

/// Moves the calling thread into the network namespace of `fd` (`setns(2)`), a namespace
/// file opened with [`open_netns`]. Meant for `Command::pre_exec`, between fork and exec.
///
/// # Safety
///
/// `fd` must stay open for the call. Only async-signal-safe work is done (one system
/// call), as `pre_exec` requires.
pub(crate) unsafe fn enter_raw(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: setns(2) on a file descriptor the caller keeps open.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens the namespace file at `path` for [`enter_raw`]; panics with the reason when it
/// cannot.
pub(crate) fn open_netns(path: &Path) -> File {
    File::open(path)
        .unwrap_or_else(|e| panic!("cannot open network namespace {}: {e}", path.display()))
}

/// Makes `cmd` start inside the network namespace at `path`.
pub fn enter(cmd: &mut Command, path: &Path) {
    use std::os::unix::process::CommandExt;
    let file = open_netns(path);
    // SAFETY: the closure only calls setns(2), which is async-signal-safe; the file moves
    // into the closure, so the descriptor stays open until the command is dropped.
    unsafe {
        cmd.pre_exec(move || enter_raw(file.as_raw_fd()));
    }
}

/// Runs `ip <args>`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("{e}");
    }
}

/// Runs `ip <args>`; `Err` with the command and its output when it fails.
fn try_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A TCP relay: listens on `listen` and copies every connection both ways to `target`.
/// The relay and the connections it carries end when it is dropped.
pub struct TcpRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU32>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Starts relaying `listen` (port 0 picks a free one) to `target`.
    pub fn start(listen: SocketAddrV4, target: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("the relay cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().expect("the relay's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU32::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let acceptor = std::thread::spawn({
            let stop = stop.clone();
            let accepted = accepted.clone();
            let open = open.clone();
            move || accept_loop(&listener, target, &stop, &accepted, &open)
        });
        TcpRelay {
            addr,
            stop,
            accepted,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    stop: &AtomicBool,
    accepted: &AtomicU32,
    open: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                eprintln!("relay: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nonblocking(false);
        let server = match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
            Ok(server) => server,
            Err(e) => {
                eprintln!("relay: cannot reach {target}: {e}");
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|s| s.peer_addr().is_ok());
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                open.push(a);
                open.push(b);
            }
        }
        std::thread::spawn(move || pipe(client, server2));
        std::thread::spawn(move || pipe(server, client2));
    }
}

/// Copies `from` to `to` until either ends, then closes both directions of both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
