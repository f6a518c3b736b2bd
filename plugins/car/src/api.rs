//! The `/cars` resources.

use ctxhost_sdk::body::JsonObject;
use ctxhost_sdk::events::publish_json;
use ctxhost_sdk::router::route;
use ctxhost_sdk::{ApiResult, Request, Response, page, store};
use serde_json::json;

use crate::model::{CAR_SEQUENCE, CAR_TABLE, Car, car_key};

/// Route one request.
pub(crate) fn handle(req: Request) -> ApiResult {
    let method = req.method.as_str();
    if route("/cars", &req.path).is_some() {
        return match method {
            "GET" => page::list_json::<Car>(&req, CAR_TABLE),
            "POST" => register(&req),
            _ => Err(Response::method_not_allowed(method, &["GET", "POST"])),
        };
    }
    if let Some(p) = route("/cars/{id}", &req.path) {
        return match method {
            "GET" => get(p.id("id")?),
            _ => Err(Response::method_not_allowed(method, &["GET"])),
        };
    }
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}

/// `POST /cars {"name", "stock"}`: register a car model, publish `CarRegistered`.
fn register(req: &Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let name = body.nonempty_string("name")?;
    let stock = body.int("stock", 0)?;
    let id = store::next_id(CAR_SEQUENCE)?;
    let car = Car {
        id,
        name,
        stock,
        available: stock,
    };
    store::put_json(&car_key(id), &car)?;
    publish_json(
        "CarRegistered",
        &id.to_string(),
        &json!({ "carId": id, "name": car.name, "stock": stock, "available": stock }),
    )?;
    Ok(Response::created(&format!("/cars/{id}"), &car))
}

fn get(id: u64) -> ApiResult {
    match store::get_json::<Car>(&car_key(id))? {
        Some(car) => Ok(Response::json(200, &car)),
        None => Err(Response::not_found(&format!("car {id} does not exist"))),
    }
}
