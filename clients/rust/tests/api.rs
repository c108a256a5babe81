//! The client against the real service, in-process: every method over HTTP and over WebSocket.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures_util::{StreamExt, TryStreamExt};
use opportunity_client::{
    ArchiveOpportunity, Archived, Changes, Client, ClientError, CreateOpportunity, EventType, ListOpportunities, Money,
    Opportunity, Order, OrderBy, PipelineType, Priority, ReconnectPolicy, Stage, Subscribe, UpdateOpportunity, Uuid,
};
use support::{TestApp, spawn_app};

const CUSTOMER: Uuid = Uuid::from_u128(0x550e8400_e29b_41d4_a716_446655440000);

fn chiller() -> CreateOpportunity {
    CreateOpportunity::new(CUSTOMER, "Chiller retrofit, Building C", PipelineType::Retrofit)
}

/// create → get → update (set, clear, stage convenience) → list pages → archive/restore →
/// changes → errors → idempotent replay, through `client`.
async fn exercise(app: &TestApp, client: &Client) {
    // create, with an exact amount and a date with an offset.
    let close = Utc.with_ymd_and_hms(2027, 3, 31, 17, 0, 0).unwrap();
    let created = client
        .create(
            chiller()
                .stage(Stage::Proposal)
                .estimated_value("125000.5".parse::<Money>().unwrap())
                .expected_close_date(close)
                .solution_families(["hvac controls"])
                .priority(Priority::High),
        )
        .await
        .expect("create");
    assert_eq!(created.version, 1);
    assert_eq!(created.stage, Stage::Proposal);
    assert_eq!(created.pipeline_type, PipelineType::Retrofit);
    assert_eq!(created.estimated_value, Some(Money::from_cents(12_500_050)));
    assert_eq!(created.expected_close_date, Some(close));
    assert_eq!(created.solution_families, vec!["hvac controls".to_string()]);
    assert_eq!((created.workspace_id, created.created_by, created.owner_user_id), (app.workspace, app.user, app.user));
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.archived_at, None);

    // get answers the same opportunity.
    let got = client.get(created.id).await.expect("get");
    assert_eq!(got, created);

    // update: set.
    let set = client
        .update(
            UpdateOpportunity::new(created.id, 1)
                .probability(60)
                .next_step_description("Site survey with the facility manager")
                .estimated_value(Money::from_cents(99_999_999_999_999)),
        )
        .await
        .expect("update set");
    assert_eq!(set.version, 2);
    assert_eq!(set.probability, Some(60));
    assert_eq!(set.next_step_description.as_deref(), Some("Site survey with the facility manager"));
    assert_eq!(set.estimated_value.unwrap().to_json_text(), "999999999999.99");

    // update: clear, and untouched fields stay.
    let cleared = client
        .update(
            UpdateOpportunity::new(created.id, 2).clear_priority().clear_estimated_value().clear_solution_families(),
        )
        .await
        .expect("update clear");
    assert_eq!(cleared.version, 3);
    assert_eq!((cleared.priority, cleared.estimated_value), (None, None));
    assert!(cleared.solution_families.is_empty());
    assert_eq!(cleared.probability, Some(60), "untouched stays");
    assert_eq!(cleared.expected_close_date, Some(close), "untouched stays");

    // update: the stage convenience (won sets probability 100).
    let won = client.update(UpdateOpportunity::new(created.id, 3).stage(Stage::Won)).await.expect("update won");
    assert_eq!((won.version, won.probability, won.is_closed, won.is_won), (4, Some(100), true, true));

    // A stale version: version_mismatch with currentVersion.
    let stale = client.update(UpdateOpportunity::new(created.id, 1).title("Stale")).await.unwrap_err();
    assert_eq!(stale.code(), Some(-32009), "{stale}");
    assert_eq!(stale.data_code(), Some("CONFLICT"));
    assert_eq!(stale.reason(), Some("version_mismatch"));
    assert_eq!(stale.current_version(), Some(4));
    assert!(!stale.retryable());

    // A validation error exposes fieldErrors.
    let invalid =
        client.create(CreateOpportunity::new(CUSTOMER, " ", PipelineType::Other).probability(101)).await.unwrap_err();
    assert_eq!(invalid.code(), Some(-32602), "{invalid}");
    assert_eq!(invalid.data_code(), Some("BAD_REQUEST"));
    let fields = invalid.field_errors().unwrap();
    assert_eq!(fields["title"], vec!["must not be empty".to_string()], "{fields:?}");
    assert!(fields.contains_key("probability"), "{fields:?}");
    assert_eq!(invalid.rpc().unwrap().http_status, Some(400));

    // list: four more, paged two at a time by the cursor, oldest first.
    let mut ids = vec![created.id];
    for n in 0..4 {
        ids.push(client.create(chiller().title(format!("More {n}"))).await.expect("create more").id);
    }
    let mut query = ListOpportunities::new().order_by(OrderBy::CreatedAt).order(Order::Asc).limit(2);
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.list(&query).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= 2);
        listed.extend(page.items.iter().map(|o| o.id));
        match page.next_cursor {
            Some(cursor) => query = query.cursor(cursor),
            None => break,
        }
    }
    assert_eq!(listed, ids, "every opportunity once, in creation order");
    assert!(pages >= 3);

    // archive / restore.
    let archived = client.archive(ArchiveOpportunity::new(ids[1], 1)).await.expect("archive");
    assert_eq!(archived.version, 2);
    assert!(archived.archived_at.is_some());
    let default_list = client.list(&ListOpportunities::new().limit(50)).await.unwrap();
    assert!(!default_list.items.iter().any(|o| o.id == ids[1]), "archived is left out");
    let only = client.list(&ListOpportunities::new().archived(Archived::Only)).await.unwrap();
    assert_eq!(only.items.iter().map(|o| o.id).collect::<Vec<_>>(), vec![ids[1]]);
    let archived_update = client.update(UpdateOpportunity::new(ids[1], 2).priority(Priority::Low)).await.unwrap_err();
    assert_eq!(archived_update.reason(), Some("archived"));
    let restored = client.restore(ArchiveOpportunity::new(ids[1], 2)).await.expect("restore");
    assert_eq!((restored.version, restored.archived_at), (3, None));

    // Idempotency: the same key twice answers the same opportunity and stores one.
    let key = format!("client-test-{}", Uuid::new_v4());
    let first = client.create(chiller().title("Keyed").idempotency_key(key.clone())).await.expect("keyed create");
    let again = client.create(chiller().title("Keyed").idempotency_key(key.clone())).await.expect("keyed replay");
    assert_eq!(first, again);
    let reused = client.create(chiller().title("Other").idempotency_key(key)).await.unwrap_err();
    assert_eq!(reused.reason(), Some("idempotency_key_reused"));
    let all = client.list(&ListOpportunities::new().title_contains("Keyed")).await.unwrap();
    assert_eq!(all.items.len(), 1);

    // changes: every event, in order, paged one at a time from a position.
    let page = client.changes(&Changes::new().limit(1000)).await.expect("changes");
    let types: Vec<EventType> = page.events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            vec![EventType::Created, EventType::Updated, EventType::Updated, EventType::Updated],
            vec![EventType::Created; 4],
            vec![EventType::Archived, EventType::Restored, EventType::Created],
        ]
        .concat()
    );
    assert_eq!(page.next_since, page.events.last().unwrap().event_id);
    assert_eq!(page.events[0].opportunity, created);
    assert_eq!(page.events[0].actor, app.user);
    assert_eq!(page.events[3].opportunity, won);
    let next = client.changes(&Changes::new().since(page.events[9].event_id.clone()).limit(1)).await.unwrap();
    assert_eq!(next.events.len(), 1);
    assert_eq!(next.events[0].opportunity.id, first.id);
    let end = client.changes(&Changes::new().since(page.next_since.clone())).await.unwrap();
    assert!(end.events.is_empty());
    assert_eq!(end.next_since, page.next_since);
}

#[tokio::test]
async fn every_method_over_http() {
    let app = spawn_app().await;
    let client = Client::http(&app.url(), &app.token()).unwrap();
    exercise(&app, &client).await;
}

#[tokio::test]
async fn every_method_over_websocket() {
    let app = spawn_app().await;
    let client = Client::ws(&app.ws_url(), &app.token()).await.unwrap();
    exercise(&app, &client).await;
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = Result<opportunity_client::OpportunityEvent, ClientError>> + Unpin),
) -> opportunity_client::OpportunityEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

#[tokio::test]
async fn subscribe_sees_a_create() {
    let app = spawn_app().await;
    let ws = Client::ws(&app.ws_url(), &app.token()).await.unwrap();
    let http = Client::http(&app.url(), &app.token()).unwrap();
    let mut events = Box::pin(ws.subscribe(Subscribe::new().pipeline_type([PipelineType::Retrofit])));
    // The stream subscribes when first polled: poll it while the create is made, until it yields.
    let created = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        http.create(chiller()).await.expect("create")
    });
    let event = next_event(&mut events).await;
    let created: Opportunity = created.await.unwrap();
    assert_eq!(event.event_type, EventType::Created);
    assert_eq!(event.opportunity, created);
    assert_eq!(event.workspace_id, app.workspace);
}

#[tokio::test]
async fn subscribe_with_since_replays_and_a_filter_applies() {
    let app = spawn_app().await;
    let client = Client::ws(&app.ws_url(), &app.token()).await.unwrap();
    let a = client.create(chiller()).await.unwrap();
    let _other = client.create(CreateOpportunity::new(CUSTOMER, "New hall", PipelineType::NewConstruction)).await;
    let b = client.create(chiller().title("Second")).await.unwrap();
    let start = "00000000000000000000".to_string();
    let mut events = Box::pin(client.subscribe(Subscribe::new().since(start).pipeline_type([PipelineType::Retrofit])));
    assert_eq!(next_event(&mut events).await.opportunity.id, a.id);
    assert_eq!(next_event(&mut events).await.opportunity.id, b.id);
}

#[tokio::test]
async fn subscribe_over_http_is_refused() {
    let app = spawn_app().await;
    let client = Client::http(&app.url(), &app.token()).unwrap();
    let mut events = Box::pin(client.subscribe(Subscribe::new()));
    let error = events.next().await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::Invalid(_)), "{error}");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn subscribe_with_bad_params_yields_the_error_and_ends() {
    let app = spawn_app().await;
    let client = Client::ws(&app.ws_url(), &app.token()).await.unwrap();
    let mut events = Box::pin(client.subscribe(Subscribe::new().since("4")));
    let error = events.next().await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(-32602), "{error}");
    assert!(error.field_errors().unwrap().contains_key("since"));
    assert!(events.next().await.is_none());
}

/// A subscriber that does not read while more events arrive than its buffers hold loses the
/// subscription (the client's buffer of 1024 overflows, or the service ends it as
/// `slow_consumer`); the stream resumes from the last event it yielded: every event once, in order.
#[tokio::test]
async fn a_lagging_subscription_resumes_without_gap_or_repeat() {
    let app = spawn_app().await;
    let ws = Client::ws(&app.ws_url(), &app.token()).await.unwrap();
    let http = Client::http(&app.url(), &app.token()).unwrap();
    let mut events = Box::pin(ws.subscribe(Subscribe::new()));
    // The control: the same, on a connection of its own, without resuming.
    let no_resume = Client::ws(&app.ws_url(), &app.token())
        .await
        .unwrap()
        .with_reconnect(ReconnectPolicy { max_attempts: 0, ..ReconnectPolicy::default() });
    let mut control = Box::pin(no_resume.subscribe(Subscribe::new()));
    let creator = http.clone();
    let first = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        creator.create(chiller()).await.unwrap()
    });
    let (first_event, control_first) = tokio::join!(next_event(&mut events), next_event(&mut control));
    let first = first.await.unwrap();
    assert_eq!(first_event.opportunity.id, first.id);
    assert_eq!(control_first.opportunity.id, first.id);

    // 1,100 more while nobody reads.
    let total = 1100;
    let created: Vec<Uuid> = futures_util::stream::iter(0..total)
        .map(|n| {
            let http = http.clone();
            async move { http.create(chiller().title(format!("Flood {n}"))).await.map(|o| o.id) }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
        .expect("creates");
    let created: HashSet<Uuid> = created.into_iter().collect();

    let mut seen = Vec::with_capacity(total);
    let mut last_id = first_event.event_id.clone();
    while seen.len() < total {
        let event = next_event(&mut events).await;
        assert!(event.event_id > last_id, "in order, no repeat: {} after {last_id}", event.event_id);
        last_id = event.event_id.clone();
        seen.push(event.opportunity.id);
    }
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), created, "every event once");

    // Without resuming, the lagging subscription ends before it delivered them all: the test
    // above passed because the stream resumed.
    let mut delivered = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), control.next()).await.expect("no stall") {
            Some(Ok(_)) => delivered += 1,
            Some(Err(error)) => break error,
            None => panic!("the stream ends with an error"),
        }
    };
    assert!(matches!(ended, ClientError::SubscriptionLost { .. }), "{ended}");
    assert!(delivered < total, "{delivered}");
    assert!(control.next().await.is_none());
}

/// A lost connection: the stream opens a new one and resubscribes from the last event.
#[tokio::test]
async fn a_lost_connection_is_resumed_from_the_last_event() {
    let app = spawn_app().await;
    let proxy = support::Proxy::start(app.addr).await;
    let ws = Client::ws(&format!("ws://{}/", proxy.addr), &app.token()).await.unwrap();
    let http = Client::http(&app.url(), &app.token()).unwrap();
    let mut events = Box::pin(ws.subscribe(Subscribe::new()));
    let creator = http.clone();
    let first = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        creator.create(chiller()).await.unwrap()
    });
    let first_event = next_event(&mut events).await;
    assert_eq!(first_event.opportunity.id, first.await.unwrap().id);

    // Cut the connection, and change things while the subscriber is away.
    proxy.cut();
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(http.create(chiller().title(format!("While away {n}"))).await.unwrap().id);
    }
    let mut seen = Vec::new();
    let mut last_id = first_event.event_id;
    for _ in 0..3 {
        let event = next_event(&mut events).await;
        assert!(event.event_id > last_id, "in order, no repeat");
        last_id = event.event_id.clone();
        seen.push(event.opportunity.id);
    }
    assert_eq!(seen, created);
    assert_eq!(proxy.accepted(), 2, "the stream opened a second connection");

    // Calls on the client open a new connection too.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ws.get(created[0]).await.expect("get after a cut").id, created[0]);
}
