//! Following changes (CONTRACT.md §9): the event of every committed change, `opportunity.changes`
//! pages, ordering under concurrent writers, retention, and live subscriptions over WebSocket.

use std::collections::BTreeSet;
use std::time::Duration;

use jsonrpsee::core::client::{Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use opportunity_client::{
    ArchiveOpportunity, Changes, ChangesPage, EventType, Include, RestoreOpportunity, Stage, UpdateOpportunity,
    VisibilityMode,
};
use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::*;

async fn changes(app: &TestApp, token: &str, params: Value) -> Value {
    ok(&call(app, token, "opportunity.changes", params).await).clone()
}

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_committed_change_records_one_event_in_order() {
    let app = spawn_app().await;
    let client = app.client();
    let start = client.changes(&Changes::new()).await.unwrap();
    assert_eq!(start.events, []);
    let origin = start.next_since; // a start position, never null

    let create = new_opportunity("Chiller").idempotency_key("k1");
    let o = client.create(create.clone()).await.unwrap();
    assert_eq!(client.create(create).await.unwrap(), o, "a replay: the first answer, and no event");
    let updated = client.update(UpdateOpportunity::new(o.id, 1).stage(Stage::Survey)).await.unwrap();
    // a no-op update writes nothing and records nothing
    let again = client.update(UpdateOpportunity::new(o.id, 2).stage(Stage::Survey)).await.unwrap();
    assert_eq!(again, updated);
    let archived = client.archive(ArchiveOpportunity::new(o.id, 2)).await.unwrap();
    assert_eq!(client.archive(ArchiveOpportunity::new(o.id, 3)).await.unwrap(), archived); // no-op
    let restored = client.restore(RestoreOpportunity::new(o.id, 3)).await.unwrap();
    // a refused change records nothing
    let stale = client.update(UpdateOpportunity::new(o.id, 1).title("stale")).await.unwrap_err();
    assert_eq!(refusal(&stale), (Some(-32009), Some("CONFLICT"), Some("version_mismatch")));

    let page = client.changes(&Changes::new().since(origin.clone())).await.unwrap();
    let got = &page.events;
    let kinds: Vec<EventType> = got.iter().map(|e| e.event_type).collect();
    assert_eq!(kinds, [EventType::Created, EventType::Updated, EventType::Archived, EventType::Restored]);
    for (event, answer) in got.iter().zip([&o, &updated, &archived, &restored]) {
        assert_eq!(&event.opportunity, answer, "the opportunity after the change, as answered");
        assert_eq!((event.workspace_id, event.actor), (app.workspace, app.user));
        assert_eq!(event.occurred_at, answer.updated_at);
    }
    assert!(got.windows(2).all(|w| w[0].event_id < w[1].event_id), "increasing: {got:?}");
    assert_eq!(page.next_since, got[3].event_id);
    // without since: from the oldest kept
    assert_eq!(&client.changes(&Changes::new()).await.unwrap().events, got);
    // pages
    let first = client.changes(&Changes::new().since(origin).limit(3)).await.unwrap();
    assert_eq!(first.events, got[..3]);
    let rest = client.changes(&Changes::new().since(first.next_since).limit(3)).await.unwrap();
    assert_eq!(rest.events, got[3..]);
    // polling at the end: nothing, and since comes back
    let end = client.changes(&Changes::new().since(page.next_since.clone())).await.unwrap();
    assert_eq!(end.events, []);
    assert_eq!(end.next_since, page.next_since);
}

/// An event id `ahead` positions past the feed's head, after one create: never issued.
/// Pages of large opportunities (each with five texts of 10,000 characters, about 50 KB of JSON)
/// end before their `limit`, within 4 MiB, on `opportunity.changes` and `opportunity.list`
/// alike, and following `nextSince` / `nextCursor` still gives every one once, in order: a page
/// of 1,000 such events (50 MB) was over MAX_RESPONSE_BYTES, never answered, and built whole.
#[tokio::test]
async fn pages_of_large_opportunities_end_early_and_lose_nothing() {
    let app = spawn_app().await;
    let token = app.token();
    let text = "x".repeat(10_000);
    let big = json!({"scopeSummary": text, "competitorNotes": text, "winLossReason": text,
                     "nextStepDescription": text, "technicalRequirements": text});
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(create(&app, &token, big.clone()).await["id"].as_str().unwrap().to_string());
    }
    // The feed, from its start.
    let mut seen = Vec::new();
    let mut since: Option<Value> = None;
    let mut pages = 0;
    loop {
        let mut params = json!({"limit": 1000});
        if let Some(s) = &since {
            params["since"] = s.clone();
        }
        let page = changes(&app, &token, params).await;
        let got = events(&page);
        if got.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.to_string().len() <= 5 * 1024 * 1024, "a page of {} events holds more than 4 MiB", got.len());
        seen.extend(got.iter().map(|e| e["opportunity"]["id"].as_str().unwrap().to_string()));
        since = Some(page["nextSince"].clone());
    }
    assert!(pages >= 2, "100 events of 50 KB end the first page early ({pages} pages)");
    assert_eq!(seen, ids, "every event once, in order");
    // The list, newest first.
    let mut listed = Vec::new();
    let mut cursor: Option<Value> = None;
    let mut pages = 0;
    loop {
        let mut params = json!({"limit": 200});
        if let Some(c) = &cursor {
            params["cursor"] = c.clone();
        }
        let answer = call(&app, &token, "opportunity.list", params).await;
        let page = ok(&answer);
        pages += 1;
        assert!(page.to_string().len() <= 5 * 1024 * 1024, "a list page over 4 MiB");
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty(), "{answer}");
        listed.extend(items.iter().map(|o| o["id"].as_str().unwrap().to_string()));
        if page["nextCursor"].is_null() {
            break;
        }
        cursor = Some(page["nextCursor"].clone());
    }
    assert!(pages >= 2, "100 opportunities of 50 KB end the first list page early ({pages} pages)");
    ids.reverse();
    assert_eq!(listed, ids, "every opportunity once, newest first");
}

async fn past_the_head(app: &TestApp, token: &str, ahead: i64) -> String {
    create(app, token, json!({})).await;
    let head = changes(app, token, json!({})).await["nextSince"].as_str().unwrap().to_string();
    format!("{:020}", head.parse::<i64>().unwrap() + ahead)
}

#[tokio::test]
async fn bad_since_and_limits_are_refused() {
    let app = spawn_app().await;
    let token = app.token();
    let beyond = past_the_head(&app, &token, 5).await;
    for (params, field) in [
        (json!({"since": "nope"}), "since"),
        (json!({"since": 5}), "since"),
        (json!({"since": beyond}), "since"),
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 1001}), "limit"),
        (json!({"include": "all"}), "include"),
    ] {
        let r = call(&app, &token, "opportunity.changes", params.clone()).await;
        assert_eq!(r["error"]["code"], -32602, "{params}: {r}");
        assert!(r["error"]["data"]["fieldErrors"][field].is_array(), "{params}: {r}");
    }
    let r = call(&app, &token, "opportunity.changes", json!({"cursor": "x"})).await;
    assert_eq!(r["error"]["data"]["formErrors"], json!(["unknown field \"cursor\""]));
}

/// A well-formed `since` past the feed's head is a params problem like the others: reported with
/// them, and before the workspace grant (§4's order), over HTTP and on a subscribe.
#[tokio::test]
async fn a_since_never_issued_is_reported_with_the_other_problems_and_before_the_grant() {
    let app = spawn_app().await;
    let token = app.token();
    let beyond = past_the_head(&app, &token, 100_000).await;
    let r = call(&app, &token, "opportunity.changes", json!({"since": beyond, "limit": 0, "foo": 1})).await;
    field_errors(&r, &["since", "limit"]);
    assert_eq!(r["error"]["data"]["formErrors"], json!(["unknown field \"foo\""]), "{r}");
    let elsewhere = Uuid::new_v4().to_string();
    let r = call(&app, &token, "opportunity.changes", json!({"since": beyond, "workspaceId": elsewhere})).await;
    field_errors(&r, &["since"]);

    let ws = app.ws(&[("authorization", &format!("Bearer {token}"))]).await;
    for (params, fields) in [
        (json!({"since": beyond, "stage": ["bogus"]}), vec!["since", "stage.0"]),
        (json!({"since": beyond, "workspaceId": elsewhere}), vec!["since"]),
    ] {
        let mut object = ObjectParams::new();
        for (k, v) in params.as_object().unwrap() {
            object.insert(k, v.clone()).unwrap();
        }
        let refused = ws.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
        let envelope = ws_envelope(refused.map(|_| Value::Null));
        field_errors(&envelope, &fields);
    }
    // Too many filter items, each valid: the message says the limit, as opportunity.list's.
    let mut object = ObjectParams::new();
    object.insert("stage", vec!["lead"; 29]).unwrap();
    let refused = ws.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
    let envelope = ws_envelope(refused.map(|_| Value::Null));
    field_errors(&envelope, &["stage"]);
    assert_eq!(envelope["error"]["data"]["fieldErrors"]["stage"], json!(["must have at most 28 items"]), "{envelope}");
    // An issued one is still accepted.
    let first = changes(&app, &token, json!({"since": "00000000000000000000"})).await;
    assert_eq!(events(&first).len(), 1, "{first}");
}

#[tokio::test]
async fn events_reach_the_readers_who_can_read_the_opportunity_after_or_before() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let in_a = app.client_as(&token_for(app.user, &[a], ALL_SCOPES));
    let in_b = app.client_as(&token_for(app.user, &[b], ALL_SCOPES));
    let local = in_a.create(new_opportunity("Local")).await.unwrap();
    let shared = in_a.create(new_opportunity("Shared").visibility_mode(VisibilityMode::Shared)).await.unwrap();
    // shared → local: readers elsewhere could read it before, so they get this event too
    let made_local = in_a
        .update(UpdateOpportunity::new(shared.id, 1).visibility_mode(VisibilityMode::WorkspaceLocal))
        .await
        .unwrap();
    let renamed = in_a.update(UpdateOpportunity::new(local.id, 1).title("x")).await.unwrap();
    let seen =
        |page: &ChangesPage| page.events.iter().map(|e| (e.event_type, e.opportunity.clone())).collect::<Vec<_>>();
    let own_b = in_b.changes(&Changes::new()).await.unwrap();
    assert!(own_b.events.is_empty(), "include own: only B's own opportunities");
    let visible_b = in_b.changes(&Changes::new().include(Include::Visible)).await.unwrap();
    assert_eq!(seen(&visible_b), [(EventType::Created, shared.clone()), (EventType::Updated, made_local.clone())]);
    assert!(visible_b.events.iter().all(|e| e.workspace_id == a), "the workspace of the opportunity: {visible_b:?}");
    let own_a = in_a.changes(&Changes::new()).await.unwrap();
    assert_eq!(
        seen(&own_a),
        [
            (EventType::Created, local),
            (EventType::Created, shared),
            (EventType::Updated, made_local),
            (EventType::Updated, renamed)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poller_sees_every_event_of_concurrent_writers_once_and_in_order() {
    let app = spawn_app().await;
    let client = app.client();
    let origin = client.changes(&Changes::new()).await.unwrap().next_since;
    let writers = (0..8).map(|w| {
        let client = client.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                let o = client.create(new_opportunity(&format!("w{w} #{i}"))).await.unwrap();
                if i % 3 == 0 {
                    client.update(UpdateOpportunity::new(o.id, 1).stage(Stage::Won)).await.unwrap();
                }
                ids.push(o.id);
            }
            ids
        }
    });
    let poller = async {
        let mut seen = Vec::new();
        let mut since = origin.clone();
        for _ in 0..2000 {
            let page = client.changes(&Changes::new().since(since).limit(7)).await.unwrap();
            seen.extend(page.events);
            since = page.next_since;
            if seen.len() >= 8 * (15 + 5) {
                break;
            }
            tokio::task::yield_now().await;
        }
        seen
    };
    let (created, seen) = tokio::join!(futures_util::future::join_all(writers), poller);
    let created: BTreeSet<Uuid> = created.into_iter().flatten().collect();
    assert!(seen.windows(2).all(|w| w[0].event_id < w[1].event_id), "no repeat, in order");
    let of = |kind: EventType| seen.iter().filter(move |e| e.event_type == kind);
    assert_eq!(of(EventType::Created).map(|e| e.opportunity.id).collect::<BTreeSet<_>>(), created, "every create seen");
    assert_eq!(of(EventType::Created).count(), 8 * 15, "once");
    assert_eq!(of(EventType::Updated).count(), 8 * 5);
    assert!(of(EventType::Updated).all(|e| e.opportunity.stage == Stage::Won && e.opportunity.version == 2));
    // and a reader from the start afterwards sees the same sequence
    let mut all = Vec::new();
    let mut since = origin;
    loop {
        let page = client.changes(&Changes::new().since(since).limit(1000)).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        all.extend(page.events);
        since = page.next_since;
    }
    assert_eq!(all, seen);
}

#[tokio::test]
async fn events_older_than_the_retention_are_purged_and_since_then_expires() {
    let app = spawn_app_with(&["--event-retention", "1s"]).await;
    let token = app.token();
    let origin = changes(&app, &token, json!({})).await["nextSince"].as_str().unwrap().to_string();
    create(&app, &token, json!({})).await;
    let mut expired = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = call(&app, &token, "opportunity.changes", json!({"since": origin})).await;
        if r.get("error").is_some() {
            expired = Some(r);
            break;
        }
    }
    let r = expired.expect("the event was purged within 5 s of a 1 s retention");
    assert_eq!(r["error"]["code"], -32009);
    assert_eq!(r["error"]["data"]["reason"], "events_expired");
    // listing afresh and following from the newest works
    // (an event past the retention may still be there until the purge's delete commits)
    let fresh = changes(&app, &token, json!({})).await;
    let o = create(&app, &token, json!({})).await;
    let next = changes(&app, &token, json!({"since": fresh["nextSince"]})).await;
    assert_eq!(events(&next).last().unwrap()["opportunity"]["id"], o["id"]);
}

async fn subscribe(client: &jsonrpsee::ws_client::WsClient, params: Value) -> Subscription<Value> {
    let mut object = ObjectParams::new();
    for (k, v) in params.as_object().unwrap() {
        object.insert(k, v).unwrap();
    }
    client.subscribe("opportunity.subscribe", object, "opportunity.unsubscribe").await.expect("subscribed")
}

async fn next_event(sub: &mut Subscription<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an event within 5 s")
        .expect("the subscription is open")
        .expect("an event")
}

#[tokio::test]
async fn a_subscriber_replays_from_since_then_gets_live_events_without_gap_or_repeat() {
    let app = spawn_app().await;
    let token = app.token();
    let origin = changes(&app, &token, json!({})).await["nextSince"].as_str().unwrap().to_string();
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(create(&app, &token, json!({})).await);
        }
        v
    };
    let auth = format!("Bearer {token}");
    let ws = app.ws(&[("authorization", &auth)]).await;
    let mut replaying = subscribe(&ws, json!({"since": origin})).await;
    let mut live_only = subscribe(&ws, json!({})).await;
    let mut won_only = subscribe(&ws, json!({"stage": ["won"]})).await;
    let after = create(&app, &token, json!({})).await;
    let won = create(&app, &token, json!({"stage": "won"})).await;
    for o in before.iter().chain([&after, &won]) {
        assert_eq!(next_event(&mut replaying).await["opportunity"]["id"], o["id"]);
    }
    assert_eq!(next_event(&mut live_only).await["opportunity"]["id"], after["id"], "live only: what came after");
    assert_eq!(next_event(&mut live_only).await["opportunity"]["id"], won["id"]);
    assert_eq!(next_event(&mut won_only).await["opportunity"]["id"], won["id"], "filtered by stage");
    // unsubscribe by name and by position both answer true
    let mut params = ObjectParams::new();
    let jsonrpsee::core::client::SubscriptionKind::Subscription(sub_id) = replaying.kind().clone() else {
        panic!("a subscription id")
    };
    params.insert("subscription", sub_id).unwrap();
    let by_name: Result<bool, _> =
        jsonrpsee::core::client::ClientT::request(&ws, "opportunity.unsubscribe", params).await;
    assert!(matches!(by_name, Ok(true)), "{by_name:?}");
    live_only.unsubscribe().await.unwrap();
}

#[tokio::test]
async fn a_second_instance_on_the_same_database_delivers_within_a_second() {
    let app = spawn_app().await;
    let token = app.token();
    // Another instance of the service: its own pool, writer and feed, the same database.
    let other = opportunity_service::Application::build(&settings(&app.db, &[])).await.unwrap();
    let other_addr = other.local_addr();
    let _other = other.start();
    let auth = format!("Bearer {token}");
    let ws = app.ws(&[("authorization", &auth)]).await;
    let mut sub = subscribe(&ws, json!({})).await;
    let started = std::time::Instant::now();
    let response = create_request(&app.http, other_addr, &token, &valid_params()).send().await.unwrap();
    let created: Value = response.json().await.unwrap();
    let event = next_event(&mut sub).await;
    assert_eq!(event["opportunity"]["id"], created["result"]["id"]);
    eprintln!("cross-instance delivery took {:?}", started.elapsed());
}

/// CONTRACT.md §2: a WebSocket idle past `REQUEST_TIMEOUT` is closed, although its client
/// answers every ping; a live subscription keeps one open however quiet, until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_are_closed_but_not_while_subscribed() {
    let app = spawn_app_with(&["--request-timeout", "1s", "--ws-ping-interval", "200ms"]).await;
    let auth = app.bearer();
    let following = app.ws(&[("authorization", &auth)]).await;
    let mut sub = subscribe(&following, json!({})).await;
    // Opened just before its call, so that a slow machine cannot make it idle first.
    let quiet = app.ws(&[("authorization", &auth)]).await;
    ws_create(&quiet, &valid_params()).await.expect("a create on the quiet connection");
    let answered = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), quiet.on_disconnect())
        .await
        .expect("a WebSocket with nothing to do is closed after REQUEST_TIMEOUT");
    assert!(answered.elapsed() >= Duration::from_millis(900), "closed {:?} after its last answer", answered.elapsed());
    // The subscribed connection, as quiet for three times REQUEST_TIMEOUT, is open and served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(following.is_connected(), "a connection with a live subscription stays open");
    assert_eq!(next_event(&mut sub).await["type"], "created", "the quiet connection's create is delivered");
    ws_create(&following, &valid_params()).await.expect("the subscribed connection is served");
    assert_eq!(next_event(&mut sub).await["type"], "created");
    // Once its subscription ends, it is idle like any other.
    sub.unsubscribe().await.expect("unsubscribed");
    tokio::time::timeout(Duration::from_secs(5), following.on_disconnect())
        .await
        .expect("closed after REQUEST_TIMEOUT once its subscription ended");
}

#[tokio::test]
async fn subscribe_is_refused_over_http_and_beyond_16_per_connection() {
    let app = spawn_app().await;
    let token = app.token();
    let r = call(&app, &token, "opportunity.subscribe", json!({})).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert_eq!(r["error"]["data"]["code"], "BAD_REQUEST");
    assert!(r["error"]["message"].as_str().unwrap().contains("WebSocket"), "{r}");
    // §4's order comes first: no token is UNAUTHORIZED, a token without the scope FORBIDDEN.
    for method in ["opportunity.subscribe", "opportunity.unsubscribe"] {
        let (_, r) = app.post_raw(request(json!(1), method, json!({})).to_string(), &[]).await;
        assert_eq!(r["error"]["data"]["code"], "UNAUTHORIZED", "{method}: {r}");
    }
    let unscoped = token_for(app.user, &[app.workspace], "opportunity:global");
    let r = call(&app, &unscoped, "opportunity.subscribe", json!({})).await;
    assert_eq!(r["error"]["data"]["code"], "FORBIDDEN", "{r}");
    let auth = format!("Bearer {token}");
    let ws = app.ws(&[("authorization", &auth)]).await;
    let mut subs = Vec::new();
    for _ in 0..16 {
        subs.push(subscribe(&ws, json!({})).await);
    }
    let mut object = ObjectParams::new();
    object.insert("include", "own").unwrap();
    let refused = ws.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
    let text = format!("{refused:?}");
    assert!(text.contains("-32009") && text.contains("too_many_subscriptions"), "{text}");
    // §4's order on the full connection too: bad params are BAD_REQUEST and a workspace not
    // granted FORBIDDEN, before the limit's CONFLICT.
    let mut object = ObjectParams::new();
    object.insert("stage", json!(["bogus"])).unwrap();
    let refused = ws.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
    let text = format!("{refused:?}");
    assert!(text.contains("InvalidParams") && text.contains("\"stage.0\""), "{text}");
    let mut object = ObjectParams::new();
    object.insert("workspaceId", Uuid::now_v7().to_string()).unwrap();
    let refused = ws.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
    let text = format!("{refused:?}");
    assert!(text.contains("-32003") && text.contains("FORBIDDEN"), "{text}");
    // A subscription ended gives its place back.
    subs.pop().unwrap().unsubscribe().await.unwrap();
    let again = ws.subscribe::<Value, _>("opportunity.subscribe", ObjectParams::new(), "opportunity.unsubscribe").await;
    subs.push(again.expect("a place is free once a subscription is unsubscribed"));
    // bad params are refused before anything is subscribed
    let mut object = ObjectParams::new();
    object.insert("since", "garbage").unwrap();
    let fresh = app.ws(&[("authorization", &auth)]).await;
    let refused = fresh.subscribe::<Value, _>("opportunity.subscribe", object, "opportunity.unsubscribe").await;
    let text = format!("{refused:?}");
    assert!(text.contains("InvalidParams") && text.contains("\"since\""), "{text}");
}

/// A raw WebSocket client: handshake, one masked text frame, and unmasked frames read back.
struct RawWs {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl RawWs {
    async fn connect(app: &TestApp, token: &str) -> Self {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n",
            app.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut ws = Self { stream, buffer: Vec::new() };
        loop {
            if let Some(end) = ws.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(ws.buffer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&ws.buffer));
                ws.buffer.drain(..end + 4);
                return ws;
            }
            let mut chunk = [0u8; 4096];
            let n = ws.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            ws.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let mask = [1u8, 2, 3, 4];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next text message, or `None` when none comes within `wait`.
    async fn next_text(&mut self, wait: Duration) -> Option<String> {
        loop {
            if self.buffer.len() >= 2 {
                let opcode = self.buffer[0] & 0x0f;
                let (len, start) = match self.buffer[1] & 0x7f {
                    126 if self.buffer.len() >= 4 => (u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize, 4),
                    127 if self.buffer.len() >= 10 => {
                        (u64::from_be_bytes(self.buffer[2..10].try_into().unwrap()) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buffer.len() >= start + len {
                    let payload: Vec<u8> = self.buffer.drain(..start + len).skip(start).collect();
                    if opcode == 1 {
                        return Some(String::from_utf8(payload).unwrap());
                    }
                    continue; // pings and others
                }
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = tokio::time::timeout(wait, self.stream.read(&mut chunk)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_is_ended_as_a_slow_consumer_with_a_resume_point() {
    let app = spawn_app().await;
    let token = app.token();
    let mut ws = RawWs::connect(&app, &token).await;
    ws.send_text(r#"{"jsonrpc":"2.0","id":1,"method":"opportunity.subscribe","params":{}}"#).await;
    let answer: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.unwrap()).unwrap();
    let subscription = answer["result"].clone();
    assert!(!subscription.is_null(), "{answer}");
    // The client reads nothing while far more than 1,000 events are committed.
    let batch: Vec<Value> = (0..100).map(|i| request(json!(i), "opportunity.create", valid_params())).collect();
    for _ in 0..60 {
        let (_, answers) = app.post(&json!(batch), &token).await;
        assert_eq!(answers.as_array().unwrap().len(), 100);
    }
    // Now it reads: events in order, then the end.
    let mut delivered: Vec<String> = Vec::new();
    let mut ending = None;
    while let Some(text) = ws.next_text(Duration::from_secs(10)).await {
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(message["method"], "opportunity.changed");
        assert_eq!(message["params"]["subscription"], subscription);
        if let Some(error) = message["params"].get("error") {
            ending = Some(error.clone());
            break;
        }
        delivered.push(message["params"]["result"]["eventId"].as_str().unwrap().to_string());
    }
    let error = ending.expect("a final notification ends the subscription");
    assert_eq!(error["code"], -32009, "{error}");
    assert_eq!(error["data"]["code"], "CONFLICT");
    assert_eq!(error["data"]["reason"], "slow_consumer");
    assert!(delivered.len() < 6000, "it was ended before everything was queued for it");
    assert!(delivered.windows(2).all(|w| w[0] < w[1]));
    let resume = error["data"]["resumeFrom"].as_str().unwrap().to_string();
    if let Some(last) = delivered.last() {
        assert!(resume <= *last, "resumeFrom {resume} is at most the last delivered {last}");
    }
    // Resuming from there misses nothing: what came before it plus what follows it is all.
    let mut all: BTreeSet<String> = delivered.iter().filter(|id| **id <= resume).cloned().collect();
    let mut since = resume;
    loop {
        let page = changes(&app, &token, json!({"since": since, "limit": 1000})).await;
        if events(&page).is_empty() {
            break;
        }
        all.extend(events(&page).iter().map(|e| e["eventId"].as_str().unwrap().to_string()));
        since = page["nextSince"].as_str().unwrap().to_string();
    }
    assert_eq!(all.len(), 6000, "every event, once");
}

#[tokio::test]
async fn a_subscription_ends_unauthorized_when_its_token_expires() {
    // REQUEST_TIMEOUT shorter than the subscription's quiet life: its end must still arrive,
    // and the connection stay open after it (it counts as a message), not be closed as idle.
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    // A token 27 s past its exp is still accepted (30 s leeway) and expires for good in 2-3 s.
    let mut c = claims(app.user, &[app.workspace], ALL_SCOPES);
    c.exp = chrono::Utc::now().timestamp() - 27;
    let token = sign(&c);
    let mut ws = RawWs::connect(&app, &token).await;
    ws.send_text(r#"{"jsonrpc":"2.0","id":1,"method":"opportunity.subscribe","params":{}}"#).await;
    let answer: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert!(answer.get("result").is_some(), "{answer}");
    let ending: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.expect("an end")).unwrap();
    assert_eq!(ending["params"]["error"]["code"], -32001, "{ending}");
    assert_eq!(ending["params"]["error"]["data"]["code"], "UNAUTHORIZED");
    // From the end on, calls with that token are refused too: one instant for both.
    ws.send_text(r#"{"jsonrpc":"2.0","id":2,"method":"opportunity.changes","params":{}}"#).await;
    let after: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(after["error"]["data"]["code"], "UNAUTHORIZED", "a call after the end: {after}");
}

/// jsonrpsee answers a subscribe before it registers the subscription: an unsubscribe sent the
/// moment the id arrives must still find it (`true`), end it, and free its place among the 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_sent_as_soon_as_the_id_arrives_ends_the_subscription() {
    let app = spawn_app().await;
    let token = app.token();
    let mut ws = RawWs::connect(&app, &token).await;
    let answer = async |ws: &mut RawWs, text: String| -> Value {
        ws.send_text(&text).await;
        serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.expect("an answer")).unwrap()
    };
    for round in 0..100 {
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "opportunity.subscribe", "params": {}});
        let subscribed = answer(&mut ws, subscribe.to_string()).await;
        let id = subscribed["result"].clone();
        assert!(id.is_string() || id.is_number(), "round {round}: {subscribed}");
        let params = if round % 2 == 0 { json!([id]) } else { json!({"subscription": id}) };
        let unsubscribe = json!({"jsonrpc": "2.0", "id": 2, "method": "opportunity.unsubscribe", "params": params});
        let unsubscribed = answer(&mut ws, unsubscribe.to_string()).await;
        if unsubscribed["result"] != true {
            // What else the socket says (an end of the subscription?) tells why.
            let mut after = Vec::new();
            while let Some(text) = ws.next_text(Duration::from_millis(500)).await {
                after.push(text);
            }
            panic!("round {round}: subscribed {subscribed}, unsubscribe answered {unsubscribed}, then {after:?}");
        }
    }
    // Nothing of the 100 is left: a create reaches no one, and 16 new ones fit.
    create(&app, &token, json!({})).await;
    assert_eq!(ws.next_text(Duration::from_millis(1500)).await, None, "no notification after unsubscribing");
    for n in 0..16 {
        let subscribe = json!({"jsonrpc": "2.0", "id": 3, "method": "opportunity.subscribe", "params": {}});
        let subscribed = answer(&mut ws, subscribe.to_string()).await;
        assert!(subscribed.get("result").is_some(), "subscription {n} of 16: {subscribed}");
    }
}

/// A subscribe is answered once, and only as a call of its own (CONTRACT.md §2): in a batch it
/// is refused as an item of the batch's one answer (jsonrpsee wrote its id to the socket and
/// again in the batch), sent as a notification it gets no answer and opens nothing, and an
/// unsubscribe whose params cannot be read is refused instead of answered `false`.
#[tokio::test]
async fn a_subscribe_is_answered_once_and_only_as_a_call_of_its_own() {
    let app = spawn_app().await;
    let token = app.token();
    let mut ws = RawWs::connect(&app, &token).await;
    let quiet = Duration::from_millis(800);
    let batch = json!([
        {"jsonrpc": "2.0", "id": "s1", "method": "opportunity.subscribe", "params": {}},
        {"jsonrpc": "2.0", "id": "c1", "method": "opportunity.changes", "params": {"limit": 1}},
        {"jsonrpc": "2.0", "method": "opportunity.subscribe", "params": {}}
    ]);
    ws.send_text(&batch.to_string()).await;
    let answer: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.expect("an answer")).unwrap();
    let items = answer.as_array().unwrap_or_else(|| panic!("one answer, the batch's: {answer}"));
    assert_eq!(items.len(), 2, "the two calls, not the notification: {answer}");
    let refused = items.iter().find(|i| i["id"] == "s1").expect("the subscribe's item");
    assert_eq!(
        (refused["error"]["code"].clone(), refused["error"]["data"]["code"].clone()),
        (json!(-32600), json!("BAD_REQUEST"))
    );
    assert!(refused["error"]["message"].as_str().unwrap().contains("batch"), "{refused}");
    assert!(items.iter().any(|i| i["id"] == "c1" && i["result"]["events"].is_array()), "{answer}");
    for notification in [
        json!({"jsonrpc": "2.0", "method": "opportunity.subscribe", "params": {}}),
        json!([{"jsonrpc": "2.0", "method": "opportunity.subscribe", "params": {"stage": ["lead"]}}]),
    ] {
        ws.send_text(&notification.to_string()).await;
    }
    assert_eq!(ws.next_text(quiet).await, None, "nothing answers a notification");
    create(&app, &token, json!({})).await;
    assert_eq!(ws.next_text(quiet).await, None, "and no subscription was opened");

    // A subscription of its own, then unsubscribes that name it wrongly: refused, and it runs on.
    let call = async |ws: &mut RawWs, method: &str, params: Value| -> Value {
        let text = json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string();
        ws.send_text(&text).await;
        serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.expect("an answer")).unwrap()
    };
    let id = call(&mut ws, "opportunity.subscribe", json!({})).await["result"].clone();
    assert!(id.is_number(), "{id}");
    let extra = call(&mut ws, "opportunity.unsubscribe", json!({"subscription": id, "x": 1})).await;
    assert_eq!(extra["error"]["code"], -32602, "{extra}");
    assert_eq!(extra["error"]["data"]["formErrors"], json!(["unknown field \"x\""]), "{extra}");
    let nameless = call(&mut ws, "opportunity.unsubscribe", json!({})).await;
    assert_eq!(nameless["error"]["data"]["fieldErrors"]["subscription"], json!(["is required"]), "{nameless}");
    let not_an_id = call(&mut ws, "opportunity.unsubscribe", json!([true])).await;
    assert!(not_an_id["error"]["data"]["fieldErrors"]["subscription"].is_array(), "{not_an_id}");
    let o = create(&app, &token, json!({})).await;
    let event: Value = serde_json::from_str(&ws.next_text(Duration::from_secs(5)).await.expect("an event")).unwrap();
    assert_eq!(
        (event["params"]["subscription"].clone(), event["params"]["result"]["opportunity"]["id"].clone()),
        (id.clone(), o["id"].clone())
    );
    // The object alone in an array (§2) names it too.
    assert_eq!(call(&mut ws, "opportunity.unsubscribe", json!([{"subscription": id}])).await["result"], true);
    assert_eq!(call(&mut ws, "opportunity.unsubscribe", json!([id])).await["result"], false, "ended already");
}
