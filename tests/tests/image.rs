//! The container image (`cargo xtask image`): what is in it, and that what is in it serves
//! the API. The OCI archive is unpacked and its entry point run as a container runtime
//! would: chrooted into the image's files, as the image's user, with the root filesystem
//! read-only, a directory of the test as the data volume, only the image's environment,
//! and a network namespace of its own. The rental story then runs over HTTP at that
//! namespace's address; SIGTERM stops it cleanly, and a second start serves the same state
//! from the volume. A second test runs it with the Kubernetes dev overlay's ConfigMap and a
//! Secret mounted the way Kubernetes mounts them.
//!
//! Needs root (mounts, chroot, network namespaces); elsewhere the test says why and
//! returns. CI runs as root, after `cargo xtask test` has built the image.

use std::collections::BTreeSet;
use std::time::Duration;

use ctxhost_tests::netns::Network;
use ctxhost_tests::oci::{Container, Mount, OciImage, chown, image_archive, owner};
use ctxhost_tests::{TestDir, availability_is, id, plugin_dir, rental_snapshot, settled, text};
use serde_json::json;

/// The port the image's configuration listens on.
const PORT: u16 = 8080;
/// The image's data directory (its volume).
const DATA: &str = "/var/lib/ctxhost";
/// The plugins the image carries.
const PLUGINS: [&str; 4] = ["order", "payment", "car", "view"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_holds_only_the_host_and_plugins_and_its_entry_point_serves_the_api() {
    if let Some(why) = Network::unavailable() {
        eprintln!("SKIPPED the image test: {why}");
        return;
    }
    let archive = image_archive();
    let dir = TestDir::new();
    let image = OciImage::unpack(&archive, dir.path());

    // The configuration: entry point, user, port, volume, stop signal.
    assert_eq!(image.strings("Entrypoint"), ["/usr/bin/ctxhost"]);
    assert_eq!(
        image.strings("Cmd"),
        ["serve", "--config", "/etc/ctxhost/ctxhost.toml"]
    );
    let (uid, gid) = image.user();
    assert_eq!((uid, gid), (65532, 65532), "the image's user");
    assert!(
        image.config["ExposedPorts"].get("8080/tcp").is_some(),
        "8080/tcp not exposed: {}",
        image.config
    );
    assert!(
        image.config["Volumes"].get(DATA).is_some(),
        "{DATA} is not a volume: {}",
        image.config
    );
    assert_eq!(image.config["StopSignal"], "SIGTERM", "{}", image.config);

    // Its files: the host, the four plugins, the configuration and the user; nothing else
    // (no shell, no libraries: the host must be static to run at all below).
    let files = image.files();
    let mut want: BTreeSet<String> = [
        "/usr/bin/ctxhost",
        "/etc/ctxhost/ctxhost.toml",
        "/etc/passwd",
        "/etc/group",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for name in PLUGINS {
        want.insert(format!("/usr/lib/ctxhost/plugins/{name}.wasm"));
    }
    let got: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(got, want, "the image's files");
    for name in PLUGINS {
        let in_image = std::fs::read(
            image
                .rootfs
                .join(format!("usr/lib/ctxhost/plugins/{name}.wasm")),
        )
        .expect("a plugin in the image");
        let built = std::fs::read(plugin_dir().join(format!("{name}.wasm"))).expect("built plugin");
        assert!(
            in_image == built,
            "{name}.wasm in the image is not the one built"
        );
    }
    assert_eq!(
        owner(&image.rootfs.join(DATA.trim_start_matches('/'))),
        (uid, gid),
        "{DATA} in the image is not the user's"
    );
    let size: u64 = image.layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    eprintln!(
        "image: {} layer(s), {:.1} MiB; the host {:.1} MiB",
        image.layers.len(),
        size as f64 / 1048576.0,
        files["/usr/bin/ctxhost"] as f64 / 1048576.0
    );

    // Run it: its own network, a fresh volume given to its user (as fsGroup would).
    let net = Network::new(&["image"]);
    let machine = net.machine("image");
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).expect("the volume");
    chown(&volume, uid, gid);
    let log = dir.path().join("container.log");
    let mounts = [Mount::volume(&volume, DATA)];
    let mut container = Container::start(&image, machine, PORT, &mounts, &[], &log);
    let api = container.api();

    for probe in ["/healthz", "/readyz"] {
        let resp = api.get(probe).await;
        assert_eq!(resp.status, 200, "{probe}: {}", resp.body);
    }
    let car = api.create_car("Image", 3).await;
    let rented = id(&api.place_order(car, 2, "alice-img").await, "id");
    settled(&api, &api, "alice-img", rented, "RENTED", "APPROVED").await;
    let rejected = id(&api.place_order(car, 2, "bob-img").await, "id");
    settled(&api, &api, "bob-img", rejected, "REJECTED", "CANCELLED").await;
    availability_is(&api, car, Some(3), 1).await;
    let metrics = api.get("/metrics").await;
    assert!(
        metrics.status == 200 && metrics.body.contains("ctxhost_"),
        "no ctxhost metrics from the image's host"
    );
    let before = rental_snapshot(&api, &["alice-img", "bob-img"]).await;

    // SIGTERM: a graceful stop, exit status 0.
    let status = container
        .terminate(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM\n{}", container.log_text()));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        container.log_text()
    );
    // Everything it wrote is in the volume (the root filesystem was read-only), as its user.
    let written: Vec<_> = std::fs::read_dir(&volume)
        .expect("read the volume")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert!(!written.is_empty(), "nothing written to the volume");
    for path in &written {
        assert_eq!(
            owner(path),
            (uid, gid),
            "{} is not the user's",
            path.display()
        );
    }

    // Started again on the same volume: the same state.
    drop(container);
    let container = Container::start(&image, machine, PORT, &mounts, &[], &log);
    let api = container.api();
    assert_eq!(
        rental_snapshot(&api, &["alice-img", "bob-img"]).await,
        before,
        "the state after a restart on the volume"
    );
    let car_now = api.car(car).await;
    assert_eq!(text(&car_now, "name"), "Image");
    assert_eq!(car_now["available"], json!(1));
}

/// The development layout of `deploy/kubernetes/overlays/dev` on the image: its ConfigMap
/// (the overlay's `config/ctxhost.toml`) mounted read-only over `/etc/ctxhost`, a Secret with
/// the overlay's keys at `/run/secrets/ctxhost` (files 0440, group 65532, as `fsGroup` and
/// `defaultMode` give them), the data volume. Authentication, the admin token and payment's
/// signing key must all come from those files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_runs_the_dev_overlays_configmap_and_secret() {
    if let Some(why) = Network::unavailable() {
        eprintln!("SKIPPED the dev overlay on the image: {why}");
        return;
    }
    use std::os::unix::fs::PermissionsExt;

    const HS256_SECRET: &str = "image-test-hs256-secret-of-at-least-32-bytes";
    const ADMIN_TOKEN: &str = "image-test-admin-token";
    let archive = image_archive();
    let dir = TestDir::new();
    let image = OciImage::unpack(&archive, dir.path());
    let (uid, gid) = image.user();

    let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/overlays/dev/config");
    let config = dir.path().join("configmap");
    std::fs::create_dir_all(&config).expect("the ConfigMap's directory");
    std::fs::copy(overlay.join("ctxhost.toml"), config.join("ctxhost.toml"))
        .expect("the overlay's configuration");
    let secrets = dir.path().join("secret");
    std::fs::create_dir_all(&secrets).expect("the Secret's directory");
    for (name, value) in [
        ("admin-token", ADMIN_TOKEN),
        ("hs256-secret", HS256_SECRET),
        ("signing-key", "image-test-signing-key"),
    ] {
        let path = secrets.join(name);
        std::fs::write(&path, value).expect("a secret file");
        chown(&path, 0, gid);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440))
            .expect("the secret's mode");
    }
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).expect("the volume");
    chown(&volume, uid, gid);

    let net = Network::new(&["dev"]);
    let mounts = [
        Mount::read_only(&config, "/etc/ctxhost"),
        Mount::read_only(&secrets, "/run/secrets/ctxhost"),
        Mount::volume(&volume, DATA),
    ];
    let log = dir.path().join("container.log");
    let container = Container::start(&image, net.machine("dev"), PORT, &mounts, &[], &log);
    let api = container.api();

    let token = |sub: &str, roles: &[&str]| {
        ctxhost_tests::jwt::hs256(
            HS256_SECRET.as_bytes(),
            &json!({
                "sub": sub,
                "roles": roles,
                "iat": ctxhost_tests::jwt::now(),
                "exp": ctxhost_tests::jwt::now() + 600,
            }),
            json!({}),
        )
    };
    let admin = api.with_bearer(&token("root", &["admin"]));
    let alice = api.with_bearer(&token("alice-dev", &["customer"]));

    // Authentication is on, with the Secret's key.
    let refused = api
        .anonymous()
        .post_json("/cars", &json!({"name": "Dev", "stock": 3}))
        .await;
    assert_eq!(
        refused.status, 401,
        "anonymous POST /cars: {}",
        refused.body
    );
    let forged = api
        .with_bearer(&ctxhost_tests::jwt::hs256(
            b"not-the-secret-of-the-overlay-at-all-32b",
            &json!({"sub": "root", "roles": ["admin"], "exp": ctxhost_tests::jwt::now() + 600}),
            json!({}),
        ))
        .post_json("/cars", &json!({"name": "Dev", "stock": 3}))
        .await;
    assert_eq!(
        forged.status, 401,
        "a token of another key: {}",
        forged.body
    );

    let car = admin.create_car("Dev", 3).await;
    let order = alice
        .post_json("/orders", &json!({"carId": car, "qty": 2}))
        .await
        .expect(201);
    let order_id = id(&order, "id");
    settled(&admin, &admin, "alice-dev", order_id, "RENTED", "APPROVED").await;
    // payment read its signing key from the Secret: the receipt is there.
    let payment = admin.payment(id(&order, "paymentId")).await;
    assert!(
        payment["receipt"].as_str().is_some_and(|r| !r.is_empty()),
        "no receipt, so the signing key was not read from the Secret: {payment}"
    );

    // The admin API takes the Secret's admin token, and no other.
    let plugins = api.with_bearer(ADMIN_TOKEN).get("/admin/plugins").await;
    assert_eq!(plugins.status, 200, "/admin/plugins: {}", plugins.body);
    let other = api
        .with_bearer("not-the-admin-token")
        .get("/admin/plugins")
        .await;
    assert_eq!(
        other.status, 401,
        "/admin/plugins, a wrong token: {}",
        other.body
    );
    // The host wrote the compilation cache into the volume, not onto the read-only root.
    assert!(
        volume.join("cache").is_dir(),
        "no compilation cache in the volume"
    );
}
