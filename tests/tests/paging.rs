//! Paged lists: every list endpoint of every context answers at most `limit` items (default
//! 100, at most 1,000) with ids above `after`, in id order, as a JSON array, with a
//! `Link: <...>; rel="next"` header while more follow and none on the last page; a bad
//! `limit` or `after` is a 400 problem naming it.

use ctxhost_tests::{Api, Host, HostOptions, SETTLE, ensure_that, eventually, id};
use serde_json::Value;

/// The `field` ids of a page.
fn ids(page: &Value, field: &str) -> Vec<u64> {
    page.as_array()
        .unwrap_or_else(|| panic!("a page is a JSON array: {page}"))
        .iter()
        .map(|item| id(item, field))
        .collect()
}

/// Reads the list at `path` in pages of `limit`, following each `Link`, and checks that the
/// pages hold `expected` (ids in `field`) in order, `limit` at a time, that each `Link` names
/// the page after the last id seen, and that the last page has none.
async fn walk(api: &Api, path: &str, field: &str, limit: usize, expected: &[u64]) {
    let mut next = Some(format!("{path}?limit={limit}"));
    let mut seen: Vec<u64> = Vec::new();
    while let Some(page) = next {
        let resp = api.get(&page).await;
        let got = ids(&resp.expect(200), field);
        let end = (seen.len() + limit).min(expected.len());
        assert_eq!(got, expected[seen.len()..end], "GET {page}");
        seen.extend(got);
        next = resp.next_page();
        if seen.len() < expected.len() {
            let last = seen.last().copied().unwrap_or_default();
            assert_eq!(
                next,
                Some(format!("{path}?limit={limit}&after={last}")),
                "GET {page}: the link to the next page"
            );
        } else {
            assert_eq!(next, None, "GET {page}: the last page links to another");
        }
    }
    assert_eq!(seen, expected, "{path}");
}

#[tokio::test]
async fn every_list_is_paged_in_id_order_with_a_link_to_the_next_page() {
    // One scan may answer at most 100 entries here: a page as large as that (the default
    // page) must still find out whether a next page exists.
    let host = Host::start(HostOptions::new().host_config("[limits]\nscan_entries = 100\n"));
    // 101 cars: one more than the default page.
    let mut cars = Vec::new();
    for n in 0..101 {
        cars.push(host.create_car(&format!("car-{n}"), 100).await);
    }
    let mut orders = Vec::new();
    let mut payments = Vec::new();
    for _ in 0..5 {
        let order = host.place_order(cars[0], 1, "pager").await;
        orders.push(id(&order, "id"));
        payments.push(id(&order, "paymentId"));
    }

    walk(&host, "/cars", "id", 40, &cars).await;
    walk(&host, "/orders", "id", 2, &orders).await;
    walk(&host, "/payments", "id", 2, &payments).await;
    // A page as large as what is left has no next page; so has one past the end.
    walk(&host, "/orders", "id", 5, &orders).await;
    walk(&host, "/cars", "id", 100, &cars).await;
    let after = host.get(&format!("/cars?after={}", cars[100])).await;
    assert_eq!(after.expect(200), Value::Array(Vec::new()));
    assert_eq!(after.next_page(), None);
    let tail = host.get(&format!("/orders?after={}", orders[2])).await;
    assert_eq!(ids(&tail.expect(200), "id"), orders[3..]);

    // Without parameters: the first 100, and a link to the rest.
    let first = host.get("/cars").await;
    assert_eq!(ids(&first.expect(200), "id"), cars[..100]);
    assert_eq!(
        first.next_page(),
        Some(format!("/cars?limit=100&after={}", cars[99]))
    );

    // The view's lists, once it has caught up.
    eventually(SETTLE, || async {
        let rows = host.get_all_pages("/availability", false).await;
        ensure_that!(rows.len() == cars.len(), "{} cars in the view", rows.len());
        let rows = host.customer_orders("pager").await;
        ensure_that!(
            rows.len() == orders.len(),
            "{} orders in the view",
            rows.len()
        );
        Ok(())
    })
    .await;
    walk(&host, "/availability", "carId", 40, &cars).await;
    walk(&host, "/availability", "carId", 100, &cars).await;
    walk(&host, "/customers/pager/orders", "orderId", 2, &orders).await;
    let first = host.get("/availability").await;
    assert_eq!(ids(&first.expect(200), "carId"), cars[..100]);
    assert!(
        first.next_page().is_some(),
        "GET /availability: no next page"
    );
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_400_naming_the_parameter() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", 5).await;
    host.place_order(car, 1, "pager").await;
    let lists = [
        "/cars",
        "/orders",
        "/payments",
        "/availability",
        "/customers/pager/orders",
    ];
    for list in lists {
        for limit in ["0", "1001", "ten", "-1", "", "2.5"] {
            host.get(&format!("{list}?limit={limit}"))
                .await
                .expect_problem_naming(400, "`limit`");
        }
        for after in ["-1", "x", "", "18446744073709551616"] {
            host.get(&format!("{list}?after={after}"))
                .await
                .expect_problem_naming(400, "`after`");
        }
        // The bounds themselves are fine.
        for fine in ["limit=1", "limit=1000", "after=0", "limit=1000&after=1"] {
            host.get(&format!("{list}?{fine}")).await.expect(200);
        }
    }
}
