use clap::{Parser, Subcommand, ValueEnum};
use creditbook::config::{Config, LogFormat};
use creditbook::store::Store;
use creditbook::store::keys::{Label, Revoked, Scope};
use std::path::PathBuf;
use std::process::ExitCode;

/// The gate allocates many small, short-lived values per request and per batch from several
/// threads at once; mimalloc serves that without glibc's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "creditbook",
    version,
    about = "Credit ledger and pre-call gate for AI products"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        global = true,
        env = "CREDITBOOK_CONFIG",
        default_value = "creditbook.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Migrate the database, then serve HTTP.
    Serve {
        /// Enable POST /v1/test-clock/advance (never in production).
        #[arg(long)]
        test_clock: bool,
    },
    /// Run the database migrations and exit.
    Migrate,
    /// Copy a SQLite database to FILE while it serves: a consistent snapshot, checked after the
    /// copy (for PostgreSQL, use pg_dump).
    Backup {
        /// The copy to make; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Work with Stripe.
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
    /// Revenue recognition reports.
    Revenue {
        #[command(subcommand)]
        command: RevenueCommand,
    },
}

#[derive(Subcommand)]
enum RevenueCommand {
    /// Write the journal of the dates FROM to TO to FILE (CSV), and the roll-forward and the
    /// waterfall of their months beside it (<stem>.rollforward.csv, <stem>.waterfall.csv).
    Export {
        /// First booking date, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: String,
        /// Last booking date, inclusive.
        #[arg(long)]
        to: String,
        /// The journal's CSV file; the roll-forward and the waterfall are written beside it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum StripeCommand {
    /// Backfill from the Stripe API: paid invoices, completed checkout sessions, refunds and
    /// disputes created since DATE, and every subscription. Safe to run again, and after webhooks.
    Sync {
        /// YYYY-MM-DD (UTC) or an RFC 3339 time.
        #[arg(long)]
        since: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line, and only its SHA-256 is stored.
    Create {
        /// What the key may call.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// What the key is for (shown by `keys list`): 1 to 100 bytes, no control characters.
        #[arg(long)]
        label: Option<String>,
    },
    /// List every key, oldest first, one tab-separated line each: id, scope, label, created,
    /// last used, revoked. Never the key itself. "Last used" is exact to within
    /// [server] key_cache_seconds.
    List,
    /// Revoke key ID (from `keys list`): refused at once by a process that has not used it in the
    /// last [server] key_cache_seconds, and by every process within that bound.
    Revoke {
        /// The key's id, `key_...`.
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    /// For applications: check, authorize, capture, void, usage, and read customers.
    App,
    /// For operators: grants, plans and the test clock (each scope calls only its own endpoints).
    Admin,
    /// For accounting: the revenue reports and journal, and closing a month.
    Finance,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("creditbook: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `CREDITBOOK_LOG` (default: `info` for the server, `warn`
/// for one-shot commands), as text (coloured only on a terminal) or JSON lines.
fn init_logs(format: LogFormat, serving: bool) -> Result<(), String> {
    use std::io::IsTerminal;
    let default_level = if serving { "info" } else { "warn" };
    let filter = match std::env::var("CREDITBOOK_LOG") {
        Ok(filter) => tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| format!("CREDITBOOK_LOG={filter:?}: {e}"))?,
        Err(_) => tracing_subscriber::EnvFilter::new(default_level),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

/// Completes on SIGTERM (systemd, Docker and Kubernetes stop with it) or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
    init_logs(
        config.log_format,
        matches!(cli.command, Commands::Serve { .. }),
    )?;
    match cli.command {
        Commands::Stripe {
            command: StripeCommand::Sync { since },
        } => stripe_sync(&config, &since).await,
        Commands::Revenue {
            command: RevenueCommand::Export { from, to, out },
        } => revenue_export(&config, &from, &to, &out).await,
        Commands::Serve { test_clock } => {
            let state = creditbook::build_state(&config, test_clock)
                .await
                .map_err(|e| format!("database {}: {e}", redact(&config.database_url)))?;
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%address, database = %redact(&config.database_url), test_clock, "creditbook serving");
            // Where a person signs in: printed whatever the log filter, for the quick start.
            println!(
                "creditbook: pages at {}/login (sign in with a finance or admin key)",
                state.pages.public_url
            );
            let drain = std::time::Duration::from_secs(config.shutdown_timeout_seconds);
            let stopped = creditbook::serve(
                listener,
                state,
                config.job_interval_seconds,
                drain,
                stop_signal(),
            )
            .await
            .map_err(|e| e.to_string())?;
            match stopped {
                creditbook::Stopped::Drained => {
                    tracing::info!("stopped: every in-flight request answered");
                    Ok(())
                }
                creditbook::Stopped::TimedOut => Err(format!(
                    "stopped after [server] shutdown_timeout_seconds = {} with requests or a job \
                     still running (what they had not committed is not applied)",
                    config.shutdown_timeout_seconds
                )),
            }
        }
        Commands::Backup { out } => {
            if !config.database_url.starts_with("sqlite:") {
                return Err(
                    "backup copies SQLite databases; back PostgreSQL up with pg_dump (see the README)"
                        .into(),
                );
            }
            let store = connect(&config).await?;
            let bytes = store.backup(&out).await?;
            println!(
                "backed up {} to {} ({bytes} bytes)",
                redact(&config.database_url),
                out.display()
            );
            Ok(())
        }
        Commands::Migrate => {
            let store = connect(&config).await?;
            store.migrate().await.map_err(|e| e.to_string())?;
            println!("migrated {}", redact(&config.database_url));
            Ok(())
        }
        Commands::Keys { command } => {
            let store = connect(&config).await?;
            store.migrate().await.map_err(|e| e.to_string())?;
            keys(&store, command).await
        }
    }
}

async fn keys(store: &Store, command: KeysCommand) -> Result<(), String> {
    let now = chrono::Utc::now();
    match command {
        KeysCommand::Create { scope, label } => {
            let label = label.as_deref().map(Label::parse).transpose()?;
            let scope = match scope {
                ScopeArg::App => Scope::App,
                ScopeArg::Admin => Scope::Admin,
                ScopeArg::Finance => Scope::Finance,
            };
            let (id, key) = store
                .create_api_key(scope, label.as_ref(), now)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "created {} key {id}; store it now, it is not shown again:",
                scope.as_str()
            );
            println!("{key}");
        }
        KeysCommand::List => {
            let keys = store.list_api_keys().await.map_err(|e| e.to_string())?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            };
            for key in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.scope.as_str(),
                    key.label.as_deref().unwrap_or("-"),
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    time(key.revoked_at),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            match store
                .revoke_api_key(&id, now, None)
                .await
                .map_err(|e| e.to_string())?
            {
                None => {
                    return Err(format!(
                        "no key with id {id:?} (see `creditbook keys list`)"
                    ));
                }
                Some(Revoked::Now) => println!("revoked key {id}"),
                Some(Revoked::Already(at)) => println!(
                    "key {id} was already revoked at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            }
        }
    }
    Ok(())
}

async fn stripe_sync(config: &Config, since: &str) -> Result<(), String> {
    let since = parse_since(since)?;
    let api = creditbook::stripe::api::StripeApi::from_config(&config.stripe)
        .map_err(|e| e.to_string())?
        .ok_or("no Stripe API key: set [stripe] api_key or CREDITBOOK_STRIPE_API_KEY")?;
    let store = connect(config).await?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let report = creditbook::stripe::sync::run(
        &store,
        &api,
        config.stripe.livemode,
        since,
        chrono::Utc::now,
        |line| eprintln!("{line}"),
    )
    .await
    .map_err(|e| format!("sync stopped: {e} (run it again: what was applied stays applied)"))?;
    let outcomes: Vec<String> = report
        .outcomes
        .iter()
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect();
    println!("synced {} objects: {}", report.read, outcomes.join(", "));
    Ok(())
}

async fn revenue_export(
    config: &Config,
    from: &str,
    to: &str,
    out: &std::path::Path,
) -> Result<(), String> {
    use std::io::{IsTerminal, Write};
    // One connection: the export reads page after page on it, so its memory is one connection's
    // page cache (and, on SQLite, one memory map), whatever the history's size.
    let one = Config {
        pool: creditbook::store::PoolSettings {
            max_connections: Some(1),
            ..config.pool
        },
        ..config.clone()
    };
    let store = connect(&one).await?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let terminal = std::io::stderr().is_terminal();
    let mut shown_percent = None;
    let exported = creditbook::export::export(&store, from, to, out, |done, total| {
        let bar = creditbook::export::progress_bar(done, total);
        if terminal {
            eprint!("\r{bar}");
            let _ = std::io::stderr().flush();
        } else {
            // Logs get a line per tenth, not a line per page.
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if shown_percent != Some(tenth) {
                shown_percent = Some(tenth);
                eprintln!("{bar}");
            }
        }
    })
    .await
    .map_err(|e| format!("export failed: {e}"))?;
    if terminal {
        eprintln!();
    }
    println!(
        "exported {} journal lines to {}; roll-forward {}; waterfall {}",
        exported.journal_lines,
        exported.journal.display(),
        exported.rollforward.display(),
        exported.waterfall.display()
    );
    Ok(())
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("--since {text:?}: expected YYYY-MM-DD or an RFC 3339 time"))
}

async fn connect(config: &Config) -> Result<Store, String> {
    Store::connect_with(&config.database_url, config.pool)
        .await
        .map(|store| {
            store
                .with_catalog(std::sync::Arc::new(config.catalog.clone()))
                .with_policy(creditbook::domain::gate::Policy {
                    past_due_grace_seconds: config.stripe.past_due_grace_seconds,
                })
                .with_key_cache(std::time::Duration::from_secs(config.key_cache_seconds))
        })
        .map_err(|e| format!("database {}: {e}", redact(&config.database_url)))
}

/// The database URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    creditbook::config::redact_url_password(url)
}
