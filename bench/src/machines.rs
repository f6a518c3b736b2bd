//! Orders end to end with the four contexts in one host against the three-host layout of
//! the deployment (`order`+`payment`, `car`, `view`), each host on a machine of its own: a
//! network namespace with its own address, joined to the others only by RabbitMQ reached
//! over that network (see `ctxhost_tests::netns`). The one-host layout runs on such a
//! machine too, over the same broker path, so the difference is the split itself; a host
//! with the embedded bus on loopback is printed beside them for reference.
//!
//! Each round measures both layouts, interleaved, with fresh hosts, data directories and
//! broker objects; the table gives medians and the paired ratio three/one. Needs root
//! (network namespaces) and the broker (`CTXHOST_BENCH_AMQP_URL`, default the local one).

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use ctxhost_tests::broker::{BrokerUser, Namespace};
use ctxhost_tests::netns::{Network, TcpRelay};

use crate::events::{STOCK, caught_up_across, wait_connected, wait_view};
use crate::host::{BenchHost, Placement};
use crate::median;
use crate::read::register_car;
use crate::write::order_load;

/// The broker the runs use (`CTXHOST_BENCH_AMQP_URL` overrides).
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The port every host listens on, at its machine's address.
const PORT: u16 = 8080;

/// What one layout measured in one round.
#[derive(Clone, Copy, Debug)]
struct Run {
    accepted_per_s: f64,
    end_to_end_per_s: f64,
    drain_s: f64,
    p99_ms: f64,
    failures: u64,
}

/// The three hosts of a layout, by role; one host plays every role in the one-host layout.
struct Layout {
    hosts: Vec<BenchHost>,
    orders: String,
    cars: String,
    view: String,
}

/// Run the suite and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    clients: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    if let Some(why) = Network::unavailable() {
        anyhow::bail!("the machines suite cannot run here: {why}");
    }
    let url = std::env::var("CTXHOST_BENCH_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
    let broker = ctxhost_tests::broker::addr_of(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let net = Network::new(&["one", "order-payment", "car", "view"]);
    let relay = TcpRelay::start(SocketAddrV4::new(net.gateway(), 5672), broker);

    let mut embedded = Vec::new();
    let mut one = Vec::new();
    let mut three = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: one host (embedded bus, loopback)");
        let host = BenchHost::start(bin, plugin_dir, "")?;
        let layout = Layout {
            orders: host.base.clone(),
            cars: host.base.clone(),
            view: host.base.clone(),
            hosts: vec![host],
        };
        embedded.push(measure(&layout, clients, seconds).await?);
        drop(layout);

        for split in [false, true] {
            let ns = Namespace::on_broker("ctxhost-bench", &url)
                .map_err(|e| anyhow::anyhow!("no broker at the benchmark's URL: {e}"))?;
            let user = BrokerUser::for_namespace(&ns);
            let amqp = format!(
                "[amqp]\nurl = {:?}\nnamespace = {:?}\n",
                user.url_at(relay.addr()),
                ns.name()
            );
            let place = |machine: &str, contexts: &'static [&'static str]| {
                let m = net.machine(machine);
                let listen = format!("{}:{PORT}", m.addr());
                BenchHost::start_as(
                    bin,
                    plugin_dir,
                    &Placement {
                        extra: &amqp,
                        contexts,
                        listen: &listen,
                        netns: Some(&m.netns_path()),
                        ..Placement::default()
                    },
                )
            };
            let layout = if split {
                eprintln!("round {round}/{rounds}: three hosts on three machines (RabbitMQ)");
                let op = place("order-payment", &["order", "payment"])?;
                let car = place("car", &["car"])?;
                let view = place("view", &["view"])?;
                Layout {
                    orders: op.base.clone(),
                    cars: car.base.clone(),
                    view: view.base.clone(),
                    hosts: vec![op, car, view],
                }
            } else {
                eprintln!("round {round}/{rounds}: one host on one machine (RabbitMQ)");
                let host = place("one", &[])?;
                Layout {
                    orders: host.base.clone(),
                    cars: host.base.clone(),
                    view: host.base.clone(),
                    hosts: vec![host],
                }
            };
            let client = client()?;
            for host in &layout.hosts {
                wait_connected(&client, &host.base).await?;
            }
            let run = measure(&layout, clients, seconds).await?;
            if split {
                three.push(run);
            } else {
                one.push(run);
            }
            // Hosts first, then the broker user and objects.
            drop(layout);
            drop(user);
            drop(ns);
        }
    }
    drop(relay);

    println!(
        "\n## Machines: one host against three hosts on three machines, `POST /orders` until the \
         view shows it, {clients} clients, {seconds} s, {rounds} round(s), medians\n"
    );
    println!(
        "| round | embedded, end-to-end orders/s | one host, RabbitMQ | three machines, RabbitMQ | three/one |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, ((e, o), t)) in embedded.iter().zip(&one).zip(&three).enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.3} |",
            i + 1,
            e.end_to_end_per_s,
            o.end_to_end_per_s,
            t.end_to_end_per_s,
            t.end_to_end_per_s / o.end_to_end_per_s
        );
    }
    println!();
    println!(
        "| layout | accepted orders/s | end-to-end orders/s | view drain after load s | POST p99 ms | failed |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, runs) in [
        ("one host, embedded bus (loopback)", &embedded),
        ("one host on one machine, RabbitMQ", &one),
        ("three hosts on three machines, RabbitMQ", &three),
    ] {
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.1} | {} |",
            m(|r| r.accepted_per_s),
            m(|r| r.end_to_end_per_s),
            m(|r| r.drain_s),
            m(|r| r.p99_ms),
            runs.iter().map(|r| r.failures).sum::<u64>(),
        );
    }
    let paired = |f: fn(&Run) -> f64| {
        median(
            &three
                .iter()
                .zip(&one)
                .map(|(t, o)| f(t) / f(o))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "\nthree machines / one host (RabbitMQ both), paired medians: end-to-end orders/s {:.2}, \
         accepted orders/s {:.2}",
        paired(|r| r.end_to_end_per_s),
        paired(|r| r.accepted_per_s),
    );
    let embedded_e2e = median(
        &embedded
            .iter()
            .map(|r| r.end_to_end_per_s)
            .collect::<Vec<_>>(),
    );
    println!(
        "three machines / one host with the embedded bus: end-to-end orders/s {:.2}",
        median(&three.iter().map(|r| r.end_to_end_per_s).collect::<Vec<_>>()) / embedded_e2e
    );
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// A car of [`STOCK`] registered on the car host and known to the view; `clients` clients
/// posting orders to the order host for `seconds` (after a second of warm-up); then the time
/// until the car host and the view have applied every order.
async fn measure(layout: &Layout, clients: usize, seconds: u64) -> anyhow::Result<Run> {
    let client = client()?;
    let (car, _) = register_car(&layout.cars, STOCK).await?;
    wait_view(
        &client,
        &layout.view,
        car,
        STOCK as i64,
        Duration::from_secs(60),
    )
    .await?;
    let started = Instant::now();
    let report = order_load(&layout.orders, car, clients, seconds).await?;
    let load_ended = Instant::now();
    let rented = caught_up_across(&client, &layout.cars, &layout.view, car).await?;
    let done = Instant::now();
    Ok(Run {
        accepted_per_s: report.throughput(),
        end_to_end_per_s: rented as f64 / (done - started).as_secs_f64(),
        drain_s: (done - load_ended).as_secs_f64(),
        p99_ms: report.quantile_ms(0.99),
        failures: report.failures,
    })
}
