//! Metrics in the Prometheus text format, served on `GET /metrics`: calls by method and outcome,
//! call latency, pool connections, queued writes and database errors. Each application has its own registry,
//! so that several in one process (as in the tests) count apart.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::db::Database;

/// The metrics of one application.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    duration: HistogramVec,
    db_errors: IntCounterVec,
    pool: IntGaugeVec,
    reachable: IntGauge,
    queued: IntGauge,
    subscriptions: IntGauge,
    events_delivered: IntCounter,
    delivery_lag: Histogram,
    slow_consumers: IntCounter,
}

/// Counts a live subscription while it is held.
#[derive(Debug)]
pub struct LiveSubscription(IntGauge);

impl Drop for LiveSubscription {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new("rpc_calls_total", "JSON-RPC calls by method and outcome (OK or the data.code of the error)"),
            &["method", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("rpc_call_duration_seconds", "Time from reading a call to its answer")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method"],
        )
        .expect("valid metric");
        let db_errors = IntCounterVec::new(
            Opts::new("database_errors_total", "Database calls that failed, by kind (unavailable or query)"),
            &["kind"],
        )
        .expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new("database_pool_connections", "Pooled database connections by state (in_use or idle)"),
            &["state"],
        )
        .expect("valid metric");
        let reachable = IntGauge::new(
            "database_reachable",
            "1 when the last database call got a connection and an answer, 0 when it found the database unavailable",
        )
        .expect("valid metric");
        let queued = IntGauge::new(
            "database_writes_queued",
            "Creates and changes waiting for a group-commit writer thread (grows when the database cannot keep up)",
        )
        .expect("valid metric");
        let subscriptions =
            IntGauge::new("subscriptions_live", "Live opportunity.subscribe subscriptions").expect("valid metric");
        let events_delivered =
            IntCounter::new("subscription_events_delivered_total", "Events sent to subscribers").expect("valid metric");
        let delivery_lag = Histogram::with_opts(
            HistogramOpts::new(
                "subscription_delivery_lag_seconds",
                "From a change (its occurredAt) to its notification being handed to the subscriber's connection",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let slow_consumers = IntCounter::new(
            "subscription_slow_consumer_ends_total",
            "Subscriptions ended because more than 1,000 events waited for the subscriber",
        )
        .expect("valid metric");
        for collector in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(db_errors.clone()),
            Box::new(pool.clone()),
            Box::new(reachable.clone()),
            Box::new(queued.clone()),
            Box::new(subscriptions.clone()),
            Box::new(events_delivered.clone()),
            Box::new(delivery_lag.clone()),
            Box::new(slow_consumers.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        // Both kinds exist from the start, so that a rate over them never starts from nothing.
        for kind in ["unavailable", "query"] {
            db_errors.with_label_values(&[kind]);
        }
        Self {
            registry,
            calls,
            duration,
            db_errors,
            pool,
            reachable,
            queued,
            subscriptions,
            events_delivered,
            delivery_lag,
            slow_consumers,
        }
    }

    /// Counts one call. `method` is a registered name or `unknown` (see
    /// [`crate::rpc::MethodNames`]), so that no caller can grow the label set; `outcome` is
    /// `OK` or a `data.code` of §4.
    pub fn observe_call(&self, method: &'static str, outcome: &'static str, seconds: f64) {
        self.calls.with_label_values(&[method, outcome]).inc();
        self.duration.with_label_values(&[method]).observe(seconds);
    }

    /// Counts a subscription until the guard is dropped.
    pub fn subscription_started(&self) -> LiveSubscription {
        self.subscriptions.inc();
        LiveSubscription(self.subscriptions.clone())
    }

    /// Counts one event handed to a subscriber and, for a live one, its lag since the change.
    pub fn observe_event_delivered(&self, live_since: Option<chrono::DateTime<chrono::Utc>>) {
        self.events_delivered.inc();
        if let Some(occurred_at) = live_since {
            let lag = (chrono::Utc::now() - occurred_at).to_std().unwrap_or_default();
            self.delivery_lag.observe(lag.as_secs_f64());
        }
    }

    /// Counts a subscription ended as a slow consumer.
    pub fn observe_slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// Counts one failed database call.
    pub fn observe_db_error(&self, kind: &str) {
        self.db_errors.with_label_values(&[kind]).inc();
    }

    /// The text exposition, with the pool's state read now.
    pub fn render(&self, db: &Database) -> String {
        let (in_use, idle) = db.pool_state();
        self.pool.with_label_values(&["in_use"]).set(i64::from(in_use));
        self.pool.with_label_values(&["idle"]).set(i64::from(idle));
        self.reachable.set(i64::from(db.reachable()));
        self.queued.set(i64::try_from(db.queued_writes()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
