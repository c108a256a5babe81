//! The SQLite (or PostgreSQL) baseline of `bench/run`: creates made directly through the crate's
//! storage layer, with no HTTP, JSON-RPC, auth or validation in front.
//!
//! ```sh
//! cargo bench --bench storage -- --db /tmp/x.db --concurrency 32 --duration 10s
//! cargo bench --bench storage -- --url postgres://postgres@127.0.0.1:5432/x --concurrency 32
//! ```
//!
//! It opens the database as the service does (`Database::connect`, which migrates it, with the
//! backend's default pool unless `--pool-size`), then N tokio tasks each build a varied
//! `Opportunity` (as `opportunity.create` would from a valid body) and store it, one after
//! another, until the time is up, along one of two paths (`--path`):
//!
//! - `service` (the default): `Database::create_opportunity`, what the RPC handler calls: the
//!   group-commit writer of the backend (`src/db/writer.rs`, `src/db/pg_writer.rs`);
//! - `pool`: `db::opportunity::create` on a pooled connection through `Database::run`, one
//!   transaction (or one autocommitted INSERT) per create, the design before group commit.
//!
//! With `--op get` or `--op list` (the limits of bench/run's get and list on SQLite) the tasks
//! read instead, as the handlers do: `Database::get_opportunity` (grouped reads) of a random id
//! of `--ids FILE`, or one page of `db::list::list` through `Database::run` (`--workspace`,
//! stages proposal and negotiation, by expected close date, descending, 50 a page; with
//! `--after DATE,ID,AS_OF` the page after that row, as a cursor names it). `creates` then counts
//! those calls.
//!
//! Only the storage call is timed. The last line is machine-readable for `bench/run`:
//!
//! `STORAGE backend=sqlite path=service concurrency=32 duration_s=10.00 creates=… creates_per_s=… p50_us=… p99_us=… max_us=… errors=…`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use opportunity_service::db::opportunity::CreateOutcome;
use opportunity_service::db::{Database, DatabaseUrl, PoolOptions};
use opportunity_service::domain::opportunity::{
    CreateOpportunity, LostReasonCategory, Money, Opportunity, PipelineType, Priority, Source, Stage, VisibilityMode,
};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use uuid::Uuid;

/// The pool timeout (the service's default `DATABASE_TIMEOUT`).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(about = "Creates through the storage layer alone (no HTTP): the baseline of bench/run")]
struct Args {
    /// SQLite database file (created and migrated when missing).
    #[arg(long, conflicts_with = "url")]
    db: Option<PathBuf>,
    /// A full DATABASE_URL instead (`sqlite://…` or `postgres://…`).
    #[arg(long)]
    url: Option<String>,
    /// Concurrent tasks, each doing one create after another.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to run, e.g. `10s` or `10`.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    duration: Duration,
    /// Unmeasured run before the measured one.
    #[arg(long, default_value = "0s", value_parser = parse_seconds)]
    warmup: Duration,
    /// Which storage path: the service's (`Database::create_opportunity`) or one transaction
    /// per create on a pooled connection (`Database::run` + `db::opportunity::create`).
    #[arg(long, value_enum, default_value_t = StoragePath::Service)]
    path: StoragePath,
    /// Pool size; the backend's default (as in the service) when absent.
    #[arg(long)]
    pool_size: Option<u32>,
    /// What each call does: a create (along `--path`), a get, or a list page.
    #[arg(long, value_enum, default_value_t = Op::Create)]
    op: Op,
    /// `--op get`: a file of ids, one a line.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// `--op list`: the workspace listed.
    #[arg(long)]
    workspace: Option<Uuid>,
    /// `--op list`: the page after this row: `EXPECTED_CLOSE_DATE,ID,AS_OF` (RFC 3339, UUID, feed position).
    #[arg(long)]
    after: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Create,
    Get,
    List,
}

/// What a read task needs (built once; its size does not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Read {
    Get(std::sync::Arc<Vec<Uuid>>),
    List(opportunity_service::db::list::ListQuery),
}

fn read_spec(args: &Args) -> anyhow::Result<Option<Read>> {
    use opportunity_service::db::list::{ListQuery, OrderBy, SortValue};
    Ok(match args.op {
        Op::Create => None,
        Op::Get => {
            let path = args.ids.as_ref().context("--op get needs --ids FILE")?;
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let ids = text.lines().filter(|l| !l.is_empty()).map(Uuid::parse_str).collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                bail!("--ids names no id");
            }
            Some(Read::Get(std::sync::Arc::new(ids)))
        }
        Op::List => {
            let workspace = args.workspace.context("--op list needs --workspace")?;
            let (after, as_of) = match &args.after {
                None => (None, None),
                Some(text) => {
                    let parts: Vec<&str> = text.split(',').collect();
                    let &[date, id, as_of] = parts.as_slice() else { bail!("--after is DATE,ID,AS_OF") };
                    let date = DateTime::parse_from_rfc3339(date)?.with_timezone(&Utc);
                    (Some((SortValue::Instant(date), Uuid::parse_str(id)?)), Some(as_of.parse::<i64>()?))
                }
            };
            Some(Read::List(ListQuery {
                workspace,
                // sorted, as opportunity.list sorts them
                stages: Some(vec!["negotiation", "proposal"]),
                order_by: Some(OrderBy::ExpectedCloseDate),
                descending: true,
                limit: 50,
                after,
                as_of,
                ..Default::default()
            }))
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoragePath {
    /// `Database::create_opportunity`: group commit.
    Service,
    /// `Database::run` + `db::opportunity::create`: one transaction per create, pooled.
    Pool,
}

impl StoragePath {
    fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Pool => "pool",
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err("must be a non-negative number of seconds".into()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

const TITLES: &[&str] = &[
    "Chiller retrofit, Building C",
    "Access control, east wing",
    "Fire alarm upgrade – Terminal 2",
    "BMS integration for the new lab",
    "Service agreement HVAC controls 2027",
    "Kältezentrale Erweiterung Halle 4",
    "CCTV and intrusion, distribution centre",
    "Smoke extraction, underground car park",
];
const FAMILIES: &[&str] =
    &["HVAC controls", "Access control", "Fire alarm", "CCTV", "BMS", "Intrusion", "Smoke control", "Energy metering"];
const TEXT: &str = "Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the \
                    existing BMS over BACnet/IP, and commission the new sequences before the cooling season.";

fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn maybe<T>(rng: &mut SmallRng, p: f64, value: impl FnOnce(&mut SmallRng) -> T) -> Option<T> {
    if rng.random_bool(p) { Some(value(rng)) } else { None }
}

fn instant(rng: &mut SmallRng, now: DateTime<Utc>) -> DateTime<Utc> {
    // Whole seconds, as most callers send them, 1 to 700 days ahead.
    let seconds = rng.random_range(86_400..700 * 86_400);
    DateTime::from_timestamp(now.timestamp() + seconds, 0).expect("in range")
}

/// A valid, varied create input, with the mix of bench/create.lua.
fn input(rng: &mut SmallRng, serial: u64, now: DateTime<Utc>) -> CreateOpportunity {
    const STAGES: &[Stage] = &[
        Stage::Lead,
        Stage::Lead,
        Stage::Qualified,
        Stage::Survey,
        Stage::Proposal,
        Stage::Negotiation,
        Stage::Won,
        Stage::Lost,
    ];
    const PIPELINES: &[PipelineType] = &[
        PipelineType::NewConstruction,
        PipelineType::Retrofit,
        PipelineType::ServiceAgreement,
        PipelineType::Expansion,
        PipelineType::Other,
    ];
    const SOURCES: &[Source] = &[
        Source::Referral,
        Source::Website,
        Source::ColdCall,
        Source::ExistingCustomer,
        Source::Partner,
        Source::TradeShow,
        Source::PortalRequest,
        Source::Other,
    ];
    const PRIORITIES: &[Priority] = &[Priority::Low, Priority::Medium, Priority::High, Priority::Urgent];
    const LOST: &[LostReasonCategory] = &[
        LostReasonCategory::Price,
        LostReasonCategory::Timing,
        LostReasonCategory::Competitor,
        LostReasonCategory::ScopeMismatch,
        LostReasonCategory::NoDecision,
        LostReasonCategory::Relationship,
        LostReasonCategory::Other,
    ];
    let stage = pick(rng, STAGES);
    let probability = match stage {
        Stage::Won => maybe(rng, 0.5, |_| 100),
        Stage::Lost => maybe(rng, 0.5, |_| 0),
        _ => maybe(rng, 0.5, |r| r.random_range(0..=100)),
    };
    let families = rng.random_range(0..=3);
    let start = rng.random_range(0..FAMILIES.len());
    let solution_families: Vec<String> =
        (0..families).map(|i| FAMILIES[(start + i) % FAMILIES.len()].to_string()).collect();
    CreateOpportunity {
        customer_id: Some(Uuid::new_v4()),
        primary_contact_id: maybe(rng, 0.5, |_| Uuid::new_v4()),
        site_id: maybe(rng, 0.3, |_| Uuid::new_v4()),
        title: Some(format!("{} #{serial:x}", pick(rng, TITLES))),
        stage: Some(stage),
        pipeline_type: Some(pick(rng, PIPELINES)),
        source: maybe(rng, 0.6, |r| pick(r, SOURCES)),
        estimated_value: maybe(rng, 0.6, |r| Money::from_cents(r.random_range(0..5_000_000_000))),
        expected_close_date: maybe(rng, 0.6, |r| instant(r, now)),
        probability,
        solution_families: maybe(rng, 0.7, |_| solution_families),
        scope_summary: maybe(rng, 0.5, |_| TEXT.to_string()),
        competitor_notes: maybe(rng, 0.2, |_| "Incumbent integrator, strong on price".to_string()),
        win_loss_reason: None,
        next_step_description: maybe(rng, 0.4, |_| "Site survey with the facility manager".to_string()),
        next_step_date: maybe(rng, 0.4, |r| instant(r, now)),
        bid_due_date: maybe(rng, 0.3, |r| instant(r, now)),
        budget_confirmed: Some(rng.random_bool(0.4)),
        priority: maybe(rng, 0.6, |r| pick(r, PRIORITIES)),
        lost_reason_category: if stage == Stage::Lost { maybe(rng, 0.7, |r| pick(r, LOST)) } else { None },
        technical_requirements: maybe(rng, 0.3, |_| "BACnet/IP, EN 54 certified devices".to_string()),
        owner_user_id: None,
        workspace_id: None,
        visibility_mode: Some(if rng.random_bool(0.8) {
            VisibilityMode::WorkspaceLocal
        } else {
            VisibilityMode::Shared
        }),
        idempotency_key: None,
    }
}

struct TaskResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `concurrency` tasks until `deadline`; only the storage call is timed.
async fn drive(
    db: &Database,
    path: StoragePath,
    read: Option<&Read>,
    concurrency: usize,
    deadline: Instant,
    task_seed: u64,
) -> Vec<TaskResult> {
    let workspace = Uuid::new_v4();
    let user = Uuid::new_v4();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let db = db.clone();
            let read = read.cloned();
            tokio::spawn(async move {
                if let Some(read) = read {
                    return read_task(&db, read, deadline, task_seed ^ task as u64).await;
                }
                let mut rng = SmallRng::seed_from_u64(task_seed ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut result = TaskResult { latencies_us: Vec::with_capacity(1 << 14), errors: 0, first_error: None };
                // Distinct titles across tasks and runs: the seed's high bits, then the task, then a count.
                let mut serial = (task_seed & 0xffff_ff00_0000_0000) | ((task as u64) << 32);
                while Instant::now() < deadline {
                    serial += 1;
                    let now = Utc::now();
                    let opportunity = Opportunity::new(input(&mut rng, serial, now), workspace, user, now)
                        .expect("the input has every required field");
                    let started = Instant::now();
                    let outcome = match path {
                        StoragePath::Service => db.create_opportunity(opportunity, None).await,
                        StoragePath::Pool => {
                            // As the service bounds a call: stop a little before the pool timeout.
                            let call_deadline = started + TIMEOUT.mul_f64(0.9);
                            let json = serde_json::to_string(&opportunity).expect("serializes");
                            let event = opportunity_service::db::events::NewEvent::created(&opportunity, json);
                            db.run(move |conn| {
                                opportunity_service::db::opportunity::create(
                                    conn,
                                    &opportunity,
                                    None,
                                    &event,
                                    call_deadline,
                                )
                            })
                            .await
                        }
                    };
                    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    match outcome {
                        Ok(CreateOutcome::Created) => result.latencies_us.push(micros),
                        Ok(other) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| format!("unexpected outcome {other:?}"));
                        }
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(concurrency);
    for task in tasks {
        results.push(task.await.expect("a bench task panicked"));
    }
    results
}

/// One task of `--op get|list`: one call after another until `deadline`.
async fn read_task(db: &Database, read: Read, deadline: Instant, seed: u64) -> TaskResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut result = TaskResult { latencies_us: Vec::with_capacity(1 << 14), errors: 0, first_error: None };
    while Instant::now() < deadline {
        let started = Instant::now();
        let outcome = match &read {
            Read::Get(ids) => {
                let id = ids[rng.random_range(0..ids.len())];
                db.get_opportunity(id).await.map(|o| o.is_some())
            }
            Read::List(q) => {
                let q = q.clone();
                db.run(move |conn| opportunity_service::db::list::list(conn, &q))
                    .await
                    .map(|(rows, _, _)| !rows.is_empty())
            }
        };
        let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match outcome {
            Ok(true) => result.latencies_us.push(micros),
            Ok(false) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| "nothing found".to_string());
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    result
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let url = match (&args.db, &args.url) {
        (Some(path), None) => DatabaseUrl::Sqlite(path.clone()),
        (None, Some(url)) => DatabaseUrl::parse(url)?,
        _ => bail!("name the database with --db PATH (SQLite) or --url DATABASE_URL"),
    };
    let backend = url.backend();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let options = PoolOptions { size: args.pool_size, timeout: TIMEOUT };
        let db = tokio::task::spawn_blocking(move || Database::connect(url, options))
            .await?
            .context("cannot open the database")?;
        let seed: u64 = rand::random();
        let read = read_spec(&args)?;
        if !args.warmup.is_zero() {
            drive(&db, args.path, read.as_ref(), args.concurrency, Instant::now() + args.warmup, seed.rotate_left(17))
                .await;
        }
        let started = Instant::now();
        let results = drive(&db, args.path, read.as_ref(), args.concurrency, started + args.duration, seed).await;
        let elapsed = started.elapsed().as_secs_f64();

        let errors: u64 = results.iter().map(|r| r.errors).sum();
        if let Some(first) = results.iter().find_map(|r| r.first_error.as_deref()) {
            eprintln!("first storage error: {first}");
        }
        let mut latencies: Vec<u32> = results.into_iter().flat_map(|r| r.latencies_us).collect();
        latencies.sort_unstable();
        let creates = latencies.len();
        println!(
            "STORAGE backend={backend} path={} concurrency={} duration_s={elapsed:.2} creates={creates} creates_per_s={:.1} p50_us={} p99_us={} max_us={} errors={errors}",
            match args.op {
                Op::Create => args.path.name(),
                Op::Get => "get",
                Op::List => "list",
            },
            args.concurrency,
            creates as f64 / elapsed,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or(0),
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
