//! The binary: read settings, start telemetry, run the chosen subcommand.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use opportunity_service::config::{Cli, Command, LogFormat, ServeArgs, TokenArgs};
use opportunity_service::db::DatabaseUrl;
use opportunity_service::{Application, DevSecret, auth, resolve_secret, telemetry};

/// mimalloc rather than glibc's allocator: a call allocates and frees many small buffers on
/// both tokio workers, and glibc's malloc and free were 16% of the service's CPU under `get`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Serve(args)) => args.log_format,
        // `LOG_FORMAT` (the environment; `migrate` takes no such flag) holds for migrate too.
        None | Some(Command::Migrate(_)) => cli.serve.log_format,
        Some(Command::Token(_)) => LogFormat::Text,
    };
    // The log's writing thread: dropped (and so flushed) before the final error line below,
    // so that this line comes last.
    let log = telemetry::init(log_format);
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Migrate(args)) => DatabaseUrl::parse(&args.database_url).and_then(|url| {
            let database = url.redacted();
            tracing::info!(backend = url.backend(), %database, "applying pending migrations");
            let applied = opportunity_service::db::migrate(&url)?;
            tracing::info!(applied, backend = url.backend(), %database, "migrations applied");
            Ok(())
        }),
        Some(Command::Token(args)) => token(args),
    };
    // With LOG_FORMAT=json, why the start failed is one more line of the JSON log; as text,
    // a plain line after the log's last one.
    if let (Err(e), LogFormat::Json) = (&result, log_format) {
        tracing::error!("{e:#}");
    }
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if log_format == LogFormat::Text {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Install the handlers before the address is logged, so that a signal sent as soon as
        // the service says it listens is already ours.
        let shutdown = shutdown_signal()?;
        let app = Application::build(&args).await?;
        let handle = app.start();
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing calls in flight");
        handle.stop().ok();
        handle.stopped().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A future that resolves on SIGINT or SIGTERM; the handlers are installed when this returns.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        tokio::signal::ctrl_c().await.ok();
    })
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    let (secret, dev_secret) = resolve_secret(&args.auth, &url, DevSecret::ReadOnly)?;
    if let Some(file) = dev_secret {
        eprintln!("signed with the development secret {}", file.display());
    }
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(args.ttl.as_secs()).context("--ttl is too long")?;
    let claims = auth::Claims {
        sub: args.user.unwrap_or_else(uuid::Uuid::new_v4).to_string(),
        workspaces: args.workspaces.iter().map(ToString::to_string).collect(),
        scope: Some(args.scope),
        exp: now + ttl,
        nbf: None,
        iat: Some(now),
        iss: args.auth.auth_jwt_issuer,
        aud: args.auth.auth_jwt_audience.map(Into::into),
    };
    println!("{}", auth::mint(&secret, &claims)?);
    Ok(())
}
