//! Several machines, proven on one: three hosts, each in a network namespace of its own with
//! its own address, data directory and contexts (`order`+`payment`, `car`, `view`), joined
//! only by RabbitMQ reached over that network as a broker user of the test's own (`guest`
//! may only connect from loopback). The rental story runs through the hosts' addresses; then
//! the `car` machine is killed with SIGKILL in the middle of a load of orders, started again
//! on its data directory, and every order must settle once with the view matching.
//!
//! The local broker listens on loopback only, so a relay in the test process stands for it
//! at the network's gateway address (as a load balancer in front of a broker would): the
//! hosts have no other way out of their namespaces.
//!
//! Creating namespaces needs root. Elsewhere the test says why and returns; CI runs as root
//! and so runs it.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use ctxhost_tests::broker::{self, BrokerUser, Namespace};
use ctxhost_tests::netns::{Machine, Network, TcpRelay};
use ctxhost_tests::{
    Api, Host, HostOptions, OrderLoad, assert_rental_consistent_across,
    assert_some_rented_some_rejected, assert_view_matches_orders, availability_across, ensure_that,
    eventually, id, settled, text,
};
use serde_json::{Value, json};

/// The port every host listens on, at its machine's address.
const PORT: u16 = 8080;
/// How long a host gets to connect to the broker.
const CONNECT: Duration = Duration::from_secs(90);
/// How long the saga and the view get to settle.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the state gets to converge after the car machine comes back.
const CONVERGE: Duration = Duration::from_secs(120);

/// Waits until `/readyz` says ready over a connected AMQP transport.
async fn wait_connected(api: &Api) {
    eventually(CONNECT, || async {
        let resp = api.get("/readyz").await;
        let body: Value = resp.json();
        let transport = &body["transport"];
        ensure_that!(
            resp.status == 200
                && transport["transport"] == "amqp"
                && transport["state"] == "connected"
                && transport["ready"] == true,
            "/readyz {}: {body}",
            resp.status
        );
        Ok(())
    })
    .await;
}

/// A host of `contexts` on `machine`, listening on the machine's address and reaching the
/// broker at `amqp_url` in namespace `ns`.
fn start_on(machine: &Machine, contexts: &[&str], ns: &Namespace, amqp_url: &str) -> Host {
    Host::start(
        HostOptions::new()
            .contexts(contexts)
            .amqp(ns.name())
            .amqp_url(amqp_url)
            .netns(machine.netns_path())
            .listen(&format!("{}:{PORT}", machine.addr())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_machines_joined_by_rabbitmq_run_the_story_and_survive_a_killed_car_machine() {
    if let Some(why) = Network::unavailable() {
        eprintln!("SKIPPED three_machines_...: {why}");
        return;
    }
    const STOCK: u64 = 300;
    const CLIENTS: usize = 16;
    const ORDERS: usize = 400;

    // Dropped in the reverse order: hosts, relay, network, broker user, broker objects.
    let ns = Namespace::new();
    let user = BrokerUser::for_namespace(&ns);
    let net = Network::new(&["order-payment", "car", "view"]);
    let broker_addr = broker::broker_addr().expect("the tests' broker address");
    let relay = TcpRelay::start(SocketAddrV4::new(net.gateway(), 5672), broker_addr);
    let url = user.url_at(relay.addr());

    let op_machine = net.machine("order-payment");
    let car_machine = net.machine("car");
    let view_machine = net.machine("view");
    let op = start_on(op_machine, &["order", "payment"], &ns, &url);
    let mut car_host = start_on(car_machine, &["car"], &ns, &url);
    let view = start_on(view_machine, &["view"], &ns, &url);

    // Each host serves at its machine's address, and only its own contexts.
    for (host, machine) in [
        (&op, op_machine),
        (&car_host, car_machine),
        (&view, view_machine),
    ] {
        assert_eq!(
            host.addr(),
            format!("{}:{PORT}", machine.addr())
                .parse()
                .expect("address"),
            "the host of {} listens elsewhere",
            machine.name()
        );
        wait_connected(host).await;
    }
    op.get("/cars").await.expect_problem(404);
    car_host.get("/orders").await.expect_problem(404);
    view.get("/cars").await.expect_problem(404);
    car_host.get("/availability").await.expect_problem(404);
    let relayed = relay.accepted();
    assert!(
        relayed >= 3,
        "the hosts reached the broker other than through the network ({relayed} connections relayed)"
    );

    // The story, through the three addresses.
    let cars = car_host.api();
    let car = cars.create_car("Three machines", 3).await;
    availability_across(&cars, &view, car, Some(3), 3).await;
    let rented = op.place_order(car, 2, "alice-mm").await;
    let rented_id = id(&rented, "id");
    settled(&op, &view, "alice-mm", rented_id, "RENTED", "APPROVED").await;
    availability_across(&cars, &view, car, Some(3), 1).await;
    let rejected = id(&op.place_order(car, 2, "bob-mm").await, "id");
    settled(&op, &view, "bob-mm", rejected, "REJECTED", "CANCELLED").await;
    let cancelled = id(&op.place_order(car, 1, "alice-mm").await, "id");
    settled(&op, &view, "alice-mm", cancelled, "RENTED", "APPROVED").await;
    availability_across(&cars, &view, car, Some(3), 0).await;
    let answer = op
        .post_json(&format!("/orders/{cancelled}/cancel"), &json!({}))
        .await
        .expect(200);
    assert_eq!(text(&answer, "status"), "CANCELLED", "cancel: {answer}");
    settled(&op, &view, "alice-mm", cancelled, "CANCELLED", "CANCELLED").await;
    availability_across(&cars, &view, car, Some(3), 1).await;

    // A fleet, then a load of orders; the car machine dies in the middle of it.
    let fleet = cars.create_car("Fleet", STOCK).await;
    availability_across(&cars, &view, fleet, Some(STOCK), STOCK as i64).await;
    let op_api = op.api();
    let load = OrderLoad::start(&op_api, fleet, CLIENTS, ORDERS);
    let answered = load.wait_answered(ORDERS / 4, SETTLE).await;
    car_host.kill();
    let killed_at = Instant::now();
    eprintln!("SIGKILL to the car machine after {answered} orders answered");
    let seen = load.join(CONVERGE).await;
    assert!(
        seen.unexpected.is_empty() && seen.transport_errors.is_empty(),
        "orders not answered 201 while the car machine was down: {:?} {:?}\n{}",
        seen.unexpected,
        seen.transport_errors,
        op.log_tail(40)
    );
    assert_eq!(seen.created.len(), ORDERS, "orders answered 201");

    // While the car machine is down, what it has not taken waits for it in its durable
    // queue, and the orders behind those events stay PAID.
    eventually(SETTLE, || async {
        let (ready, consumers) = broker::queue_counts(&ns, "car").await?;
        ensure_that!(
            consumers == 0 && ready > 0,
            "{}: {ready} ready, {consumers} consumers",
            ns.queue("car")
        );
        Ok(())
    })
    .await;
    let waiting = op
        .orders()
        .await
        .iter()
        .filter(|o| o["carId"] == json!(fleet) && text(o, "status") == "PAID")
        .count();
    assert!(waiting > 0, "no order waits for the car machine");
    eprintln!("{waiting} orders waiting for the car machine");

    car_host.start_again();
    wait_connected(&car_host).await;
    let cars = car_host.api();
    assert_rental_consistent_across(&op_api, &cars, &view, fleet, STOCK, &seen.created, CONVERGE)
        .await;
    assert_view_matches_orders(&op_api, &view, CONVERGE).await;
    eprintln!(
        "settled {} orders {:.1} s after the kill",
        seen.created.len(),
        killed_at.elapsed().as_secs_f64()
    );

    // Demand (about 2 units an order) is above the stock: some rented, some rejected; and
    // the story's car was not touched by the catch-up.
    assert_some_rented_some_rejected(&op_api, fleet).await;
    // Nothing was given up on: the broker's dead-letter queue is empty.
    let dead = broker::dead_letter_messages(&ns)
        .await
        .unwrap_or_else(|e| panic!("reading {}: {e}", ns.dead_letter_queue()));
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    availability_across(&cars, &view, car, Some(3), 1).await;
    for host in [&op, &view] {
        wait_connected(host).await;
    }
}
