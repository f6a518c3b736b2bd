//! The cost of verifying bearer tokens: the same release host with authentication off (no
//! token sent) against HS256 and RS256 verification of a token on every request, side by
//! side (see [`crate::variants`]). The tokens carry the `admin` role so that every write is
//! allowed; `POST /cars` is opened by the operator so the harness can register its car.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use ctxhost_tests::jwt::{RsaKey, hs256, jwks};
use serde_json::{Value, json};

use crate::variants::{Variant, run};

/// The shared secret of the HS256 variant (32 bytes, the host's minimum).
const SECRET: &str = "bench-secret-of-at-least-32-bytes";

/// Claims valid for a day: subject `bench` with the `admin` role.
fn claims() -> Value {
    let now = ctxhost_tests::jwt::now();
    json!({"sub": "bench", "roles": ["admin"], "iat": now, "exp": now + 86_400})
}

/// An RSA key in `dir` (made by `openssl`): its JWKS file and an RS256 token signed by it.
fn rs256(dir: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let key = RsaKey::generate(dir, "bench");
    let path = dir.join("bench-jwks.json");
    std::fs::write(&path, jwks(&[&key]).to_string())?;
    Ok((path, key.sign(&claims())))
}

/// Run the suite: off (baseline), HS256, RS256.
pub(crate) async fn run_suite(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ctxhost-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (jwks, rs_token) = rs256(&dir)?;
    let open_cars = "[plugins.car.access]\n\"POST /cars\" = \"public\"\n".to_string();
    let variants = vec![
        Variant {
            name: "authentication off",
            config: String::new(),
            env: Vec::new(),
            max_cost: None,
            bearer: None,
        },
        Variant {
            name: "HS256 token verified",
            config: open_cars.clone(),
            env: vec![("CTXHOST_AUTH_HS256_SECRET".into(), SECRET.into())],
            max_cost: Some(0.05),
            bearer: Some(Arc::from(hs256(SECRET.as_bytes(), &claims(), json!({})))),
        },
        Variant {
            name: "RS256 token verified",
            config: open_cars,
            env: vec![(
                "CTXHOST_AUTH_JWKS_FILE".into(),
                jwks.to_str().context("a UTF-8 path")?.into(),
            )],
            max_cost: Some(0.10),
            bearer: Some(Arc::from(rs_token)),
        },
    ];
    let result = run(
        "Cost of verifying bearer tokens: HS256 and RS256 against authentication off",
        bin,
        plugin_dir,
        variants,
        connections,
        seconds,
        rounds,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
