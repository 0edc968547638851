//! The `tollgate` command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

mod admin_cli;
use clap::{Parser, Subcommand};
use tollgate::config::{Config, generate_key, hash_key, starter_config};
use tollgate::event::Usage;
use tollgate::pricing::{PriceBook, PriceQuery};
use tollgate::roles::{self, Role};

/// mimalloc instead of the system allocator: the hot path allocates and
/// frees many small buffers per request (headers, JSON, events), and
/// glibc's malloc/free were the largest user-space cost in profiles (CPU
/// per request fell ~25% with mimalloc). Transparent huge pages are off
/// (`no_thp`): with them idle RSS grew by ~15 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_t` in
/// mimalloc v3's `mimalloc.h` (`libmimalloc-sys` does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's own default for the purge delay, in milliseconds (v3.3's;
/// the header's comment still says 10): what the option above must read
/// before it is changed, so that an upgrade that moved or changed the
/// option is noticed (and the option left alone) instead of setting some
/// other option.
const MI_DEFAULT_PURGE_DELAY: std::ffi::c_long = 1000;

/// Has mimalloc hand freed memory back to the OS at once instead of a
/// second later. Under a burst the delayed purges kept tens of MiB of
/// freed pages resident: in the benchmark `tollgate serve` peaked at
/// 119–132 MiB with the default and 97–98 MiB without the delay, with the
/// same CPU per request at 500 requests/s (0.28–0.31 / 0.37–0.43 ms for
/// small / Claude Code bodies either way; runs alternated, 2026-12-02).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain calls into mimalloc's options table, which checks the
    // option's range (out of range it reads 0 and is left alone); the
    // value is set only after the option read as the purge delay's default.
    let applied = unsafe {
        let default =
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY;
        if default {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
        default
    };
    if !applied {
        // Logging is not set up yet; this is for whoever upgrades mimalloc.
        eprintln!("tollgate: mimalloc's purge delay is not where expected; left as it is");
    }
}

/// Gateway and cost-accounting pipeline for Claude Code.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter tollgate.toml with one new key (printed
    /// once, on the last line).
    Init,
    /// Run every role in one process (gateway, accountant, sink, query API).
    Serve {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the gateway (needs bus.kind = "kafka"); run as many as you like.
    Gateway {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the accountant (needs bus.kind = "kafka").
    Accountant {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the lake sink (needs bus.kind = "kafka").
    Sink {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the query API over the lake.
    Api {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the notifier (budget alerts to webhooks; needs bus.kind = "kafka").
    Notifier {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Rebuild every budget ledger from the event log and print them (JSON);
    /// the same numbers the running accountant holds.
    Replay {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Make the control state (keys, budgets, rate limits, webhooks) match
    /// a config file: writes the difference as control events. Entries the
    /// file declares are set to its values; entries it set before and no
    /// longer declares are removed; entries made through the admin API are
    /// left alone.
    Apply {
        #[arg(short = 'f', long = "file", default_value = "tollgate.toml")]
        file: PathBuf,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Print the events as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Keys and budgets over the admin API (`--output json|table`).
    Admin {
        #[command(subcommand)]
        command: admin_cli::AdminCommand,
    },
    /// Manage tollgate keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Check price tables.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Explain the price of one request, line by line.
    Price {
        /// The model ID as the provider names it.
        #[arg(long)]
        model: String,
        /// The Anthropic `usage` object as the API returns it (JSON).
        #[arg(long)]
        usage: String,
        #[arg(long, default_value = "anthropic", value_parser = ["anthropic", "bedrock", "vertex"])]
        provider: String,
        /// The provider region (Vertex location, e.g. `global` or `us-east5`).
        #[arg(long)]
        region: Option<String>,
        /// When the request happened (a date or RFC 3339 time; default now).
        #[arg(long)]
        at: Option<String>,
        /// Print the breakdown as JSON.
        #[arg(long)]
        json: bool,
        /// Price tables to use instead of the built-in ones.
        #[arg(long)]
        pricing_dir: Option<PathBuf>,
    },
    /// Recompute the cost of stored events with the current price tables.
    Reprice {
        /// First day (YYYY-MM-DD) to reprice.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day (YYYY-MM-DD) to reprice, inclusive.
        #[arg(long)]
        to: chrono::NaiveDate,
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// Price tables to use instead of the configured ones.
        #[arg(long)]
        pricing_dir: Option<PathBuf>,
    },
    /// Merge small lake files into large sorted ones (the sink also does
    /// this periodically).
    Compact {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// Fewest consecutive small files worth merging.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
    },
    /// Show every request of a trace with its totals, from the query API.
    Logs {
        #[arg(long)]
        trace_id: String,
        /// The query API's base URL.
        #[arg(
            long,
            env = "TOLLGATE_API_URL",
            default_value = "http://127.0.0.1:8787"
        )]
        url: String,
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Subcommand)]
enum PricingCommand {
    /// Validate every table: overlaps, gaps, unparsable matchers, negative
    /// prices; errors name file and line.
    Check {
        #[arg(long, default_value = "pricing")]
        dir: PathBuf,
        /// Also warn about models seen in the lake in the last 30 days that
        /// no entry matches (they are priced provisionally).
        #[arg(long)]
        lake: bool,
        /// The config naming the lake (with --lake).
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Add or update Claude entries from a published price catalogue
    /// (LiteLLM's model_prices_and_context_window.json or a Portkey
    /// models pricing/*.json), printing the diff first. Prices that
    /// contradict an entry in force are refused unless --accept-changes.
    Import {
        /// The catalogue file.
        #[arg(long)]
        from: PathBuf,
        /// The tables to update.
        #[arg(long, default_value = "pricing")]
        dir: PathBuf,
        /// The provider a Portkey file prices (default: from its name).
        #[arg(long, value_parser = ["anthropic", "bedrock", "vertex"])]
        provider: Option<String>,
        /// When imported prices take effect (default today).
        #[arg(long)]
        effective_from: Option<chrono::NaiveDate>,
        /// Write contradicting prices as new entries from --effective-from.
        #[arg(long)]
        accept_changes: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new key and print the [[keys]] entry to add to the config.
    New {
        #[arg(long)]
        team: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        #[arg(long, default_value = "anthropic")]
        provider: String,
        /// The key's non-secret id (defaults to a random one).
        #[arg(long)]
        id: Option<String>,
        /// Subscription passthrough: the client sends this key as
        /// `x-tollgate-api-key` and its own Claude subscription / Anthropic
        /// credential goes to Anthropic.
        #[arg(long)]
        passthrough: bool,
        /// Create the key through the admin API (live on every gateway)
        /// instead of printing a [[keys]] entry.
        #[arg(long)]
        apply: bool,
        /// The query API's base URL (with --apply).
        #[arg(
            long,
            env = "TOLLGATE_API_URL",
            default_value = "http://127.0.0.1:8787"
        )]
        url: String,
        /// An admin token with keys:write (with --apply).
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Init => init(),
        Command::Key {
            command:
                KeyCommand::New {
                    team,
                    user,
                    workspace,
                    provider,
                    id,
                    passthrough,
                    apply,
                    url,
                    token,
                },
        } if apply => {
            let token = token.context("--apply needs --token (or TOLLGATE_ADMIN_TOKEN)")?;
            let target = admin_cli::Target {
                url,
                token: Some(token),
                output: admin_cli::Output::Table,
            };
            if id.is_some() {
                bail!("--id cannot be chosen with --apply: the API names the key");
            }
            let args = admin_cli::NewKeyArgs {
                team,
                user,
                workspace: Some(workspace),
                provider: Some(provider),
                route: None,
                passthrough,
                expires_at: None,
            };
            runtime()?.block_on(admin_cli::run(admin_cli::AdminCommand::Keys {
                command: admin_cli::KeysCommand::Create(args),
                target,
            }))?;
            Ok(())
        }
        Command::Key {
            command:
                KeyCommand::New {
                    team,
                    user,
                    workspace,
                    provider,
                    id,
                    passthrough,
                    ..
                },
        } => {
            let key = generate_key();
            let id = id.unwrap_or_else(|| format!("key_{}", &hash_key(&key)[7..19]));
            println!("# add to tollgate.toml:");
            println!(
                "[[keys]]\nid = \"{id}\"\nhash = \"{}\"\nworkspace = \"{workspace}\"\nteam = \"{team}\"\nuser = \"{user}\"\nprovider = \"{provider}\"\n{}",
                hash_key(&key),
                if passthrough {
                    "passthrough = true\n"
                } else {
                    ""
                }
            );
            if passthrough {
                println!(
                    "# send it as ANTHROPIC_CUSTOM_HEADERS=\"x-tollgate-api-key: <key>\"; Claude Code keeps its own login"
                );
            }
            println!("# the key (shown once):");
            println!("{key}");
            Ok(())
        }
        Command::Pricing {
            command:
                PricingCommand::Import {
                    from,
                    dir,
                    provider,
                    effective_from,
                    accept_changes,
                },
        } => pricing_import(
            &from,
            &dir,
            provider.as_deref(),
            effective_from,
            accept_changes,
        ),
        Command::Pricing {
            command: PricingCommand::Check { dir, lake, config },
        } => {
            if lake {
                lake_check(&dir, &config)?;
            }
            let issues = PriceBook::check_dir(&dir)?;
            if issues.is_empty() {
                let book = PriceBook::load_dir(&dir)?;
                println!(
                    "{}: price tables valid (version {})",
                    dir.display(),
                    book.version()
                );
                return Ok(());
            }
            for issue in &issues {
                eprintln!("{}", issue);
            }
            bail!(
                "{} problem(s) in the price tables under {}",
                issues.len(),
                dir.display()
            )
        }
        Command::Price {
            model,
            usage,
            provider,
            region,
            at,
            json,
            pricing_dir,
        } => price(
            &model,
            &usage,
            &provider,
            region.as_deref(),
            at.as_deref(),
            json,
            pricing_dir,
        ),
        #[cfg(not(feature = "lake"))]
        Command::Reprice { .. } | Command::Compact { .. } => Err(no_lake()),
        #[cfg(feature = "lake")]
        Command::Reprice {
            from,
            to,
            config,
            pricing_dir,
        } => {
            let cfg = Config::load(&config)?;
            let book = roles::load_price_book(&cfg, pricing_dir.as_deref())?;
            let rt = runtime()?;
            let layout =
                rt.block_on(async { tollgate::lake::files::LakeLayout::from_config(&cfg) })?;
            let report = tollgate::lake::reprice::reprice(&layout, &book, from, to)?;
            println!(
                "repriced {} events in {} files with price tables {}",
                report.rows,
                report.files,
                book.version()
            );
            Ok(())
        }
        Command::Serve { config } => runtime()?.block_on(run_roles(config, &Role::ALL)),
        Command::Gateway { config } => runtime()?.block_on(run_roles(config, &[Role::Gateway])),
        Command::Accountant { config } => {
            runtime()?.block_on(run_roles(config, &[Role::Accountant]))
        }
        Command::Sink { config } => runtime()?.block_on(run_roles(config, &[Role::Sink])),
        Command::Api { config } => runtime()?.block_on(run_roles(config, &[Role::Api])),
        Command::Notifier { config } => runtime()?.block_on(run_roles(config, &[Role::Notifier])),
        Command::Apply {
            file,
            dry_run,
            json,
        } => runtime()?.block_on(async move {
            let cfg = Config::load(&file)?;
            let actor = format!("file:{}", file.display());
            let events = roles::apply(&cfg, &actor, dry_run).await?;
            print_plan(&events, json, dry_run)?;
            Ok(())
        }),
        Command::Replay { config } => runtime()?.block_on(async move {
            let cfg = Config::load(&config)?;
            let states = roles::replay(&cfg).await?;
            println!("{}", serde_json::to_string_pretty(&states)?);
            Ok(())
        }),
        #[cfg(feature = "lake")]
        Command::Compact { config, min_files } => {
            let cfg = Config::load(&config)?;
            let rt = runtime()?;
            let layout =
                rt.block_on(async { tollgate::lake::files::LakeLayout::from_config(&cfg) })?;
            let options = tollgate::lake::compact::CompactOptions {
                min_files: min_files.max(2),
                ..Default::default()
            };
            let report = tollgate::lake::compact::compact(&layout, &options)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Logs {
            trace_id,
            url,
            token,
        } => runtime()?.block_on(logs(trace_id, url, token)),
        Command::Admin { command } => Ok(runtime()?.block_on(admin_cli::run(command))?),
    }
}

fn price(
    model: &str,
    usage: &str,
    provider: &str,
    region: Option<&str>,
    at: Option<&str>,
    json: bool,
    pricing_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let book = match pricing_dir {
        Some(dir) => PriceBook::load_dir(&dir)?,
        None => PriceBook::embedded(),
    };
    let usage_json: serde_json::Value =
        serde_json::from_str(usage).context("--usage is not valid JSON")?;
    if !usage_json.is_object() {
        bail!(
            "--usage must be the Anthropic usage object, e.g. '{{\"input_tokens\":1000,\"output_tokens\":500}}'"
        );
    }
    let usage = Usage::from_anthropic_json(&usage_json);
    let at = match at {
        None => chrono::Utc::now(),
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&chrono::Utc),
            Err(_) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .with_context(|| {
                    format!("--at {text:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time")
                })?
                .and_hms_opt(12, 0, 0)
                .expect("noon exists")
                .and_utc(),
        },
    };
    let q = PriceQuery {
        provider,
        model,
        region,
        at,
    };
    let p = tollgate::pricing::cost::quote(&book, &q, &usage);
    if json {
        let l = &p.lines;
        let s = |d: rust_decimal::Decimal| d.normalize().to_string();
        println!(
            "{}",
            serde_json::json!({
                "model": model, "provider": provider, "region": region, "at": at.to_rfc3339(),
                "family": p.entry.family, "tier": p.tier(), "effective_from": p.entry.effective_from.to_string(),
                "multiplier": s(p.multiplier), "source": p.entry.source,
                "input_usd": s(l.input_usd), "output_usd": s(l.output_usd),
                "cache_write_5m_usd": s(l.cache_write_5m_usd), "cache_write_1h_usd": s(l.cache_write_1h_usd),
                "cache_read_usd": s(l.cache_read_usd), "web_search_usd": s(l.web_search_usd),
                "total_usd": s(l.total_usd), "pricing_basis": p.basis(), "pricing_notes": p.notes,
                "price_table_version": book.version(),
            })
        );
    } else {
        println!(
            "{model} ({provider})\n{}\nprice tables {}",
            p.explain(&usage),
            book.version()
        );
    }
    Ok(())
}

/// Where a catalogue format is published, for the entries' `source`.
fn catalogue_url(format: tollgate::pricing::import::Format, from: &std::path::Path) -> String {
    let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    match format {
        tollgate::pricing::import::Format::LiteLlm => {
            "https://github.com/BerriAI/litellm/blob/main/model_prices_and_context_window.json"
                .to_owned()
        }
        tollgate::pricing::import::Format::Portkey => {
            format!("https://github.com/Portkey-AI/models/blob/main/pricing/{name}")
        }
    }
}

/// `tollgate pricing import`: diff, refuse contradictions unless accepted,
/// append entries, and keep the old files if the result does not check.
fn pricing_import(
    from: &std::path::Path,
    dir: &std::path::Path,
    provider: Option<&str>,
    effective_from: Option<chrono::NaiveDate>,
    accept_changes: bool,
) -> anyhow::Result<()> {
    use tollgate::pricing::import;
    let text =
        std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (format, offers) = import::read_offers(&text, name, provider)?;
    let book = PriceBook::load_dir(dir)?;
    let day = effective_from.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let changes = import::compare(&book, &offers, day);
    println!("{}", import::render_diff(&changes, day));
    let contradicting = changes
        .iter()
        .filter(|c| matches!(c, import::Change::Changed { .. }))
        .count();
    if contradicting > 0 && !accept_changes {
        bail!(
            "{contradicting} imported price(s) contradict the entries in force (marked ~); nothing written. \
             Check them against Anthropic's pricing page, then rerun with --accept-changes to add them as new entries from {day}"
        );
    }
    let entries = import::new_entries(
        &book,
        &changes,
        day,
        &catalogue_url(format, from),
        accept_changes,
    );
    if entries.is_empty() {
        println!("nothing to write");
        return Ok(());
    }
    let mut originals = Vec::new();
    for (provider, add) in &entries {
        let path = dir.join(format!("{provider}.toml"));
        let old = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| format!("provider = \"{provider}\"\n"));
        std::fs::write(&path, format!("{}\n{add}", old.trim_end()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        originals.push((path, old));
    }
    if let Err(e) = PriceBook::load_dir(dir) {
        for (path, old) in &originals {
            std::fs::write(path, old)
                .with_context(|| format!("cannot restore {}", path.display()))?;
        }
        bail!("the imported entries do not check, tables left as they were: {e}");
    }
    let book = PriceBook::load_dir(dir)?;
    println!(
        "wrote {} provider table(s) under {}; price tables now {}",
        entries.len(),
        dir.display(),
        book.version()
    );
    Ok(())
}

/// Why a lake command cannot run in a build without the `lake` feature.
#[cfg(not(feature = "lake"))]
fn no_lake() -> anyhow::Error {
    anyhow::anyhow!(
        "this tollgate was built without the `lake` feature (a gateway build): lake commands are not in it"
    )
}

/// `tollgate pricing check --lake` in a build without the lake.
#[cfg(not(feature = "lake"))]
fn lake_check(_dir: &std::path::Path, _config: &std::path::Path) -> anyhow::Result<()> {
    Err(no_lake())
}

/// `tollgate pricing check --lake`: models in the lake's last 30 days that
/// no entry matches, each named once with its provider.
#[cfg(feature = "lake")]
fn lake_check(dir: &std::path::Path, config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let book = PriceBook::load_dir(dir)?;
    let layout = tollgate::lake::files::LakeLayout::new(cfg.data.lake_dir());
    let since = chrono::Utc::now().date_naive() - chrono::Days::new(30);
    let seen = tollgate::lake::files::models_seen_since(&layout, since)?;
    let at = chrono::Utc::now();
    let mut unmatched = 0;
    for (provider, model, region) in &seen {
        let q = PriceQuery {
            provider,
            model,
            region: region.as_deref(),
            at,
        };
        if book.find(&q).is_none() {
            unmatched += 1;
            eprintln!(
                "warning: {provider} model {model:?} seen in the lake since {since} matches no entry: its events are priced provisionally"
            );
        }
    }
    println!(
        "lake: {} model(s) seen since {since}, {unmatched} without an entry",
        seen.len()
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init() -> anyhow::Result<()> {
    let path = PathBuf::from("tollgate.toml");
    let key = generate_key();
    let id = format!("key_{}", &hash_key(&key)[7..19]);
    let mut file = match tollgate::private_fs::open_options()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; not overwriting it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    let kafka = std::env::var("TOLLGATE_KAFKA_BROKERS").is_ok_and(|b| !b.trim().is_empty());
    file.write_all(starter_config(&key, &id, kafka).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let bus = if kafka {
        "Kafka at $TOLLGATE_KAFKA_BROKERS"
    } else {
        "the embedded log"
    };
    println!(
        "wrote {} (bus: {bus}; data under ./tollgate-data)",
        path.display()
    );
    println!("start it with: tollgate serve");
    println!(
        "point Claude Code at it: ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_AUTH_TOKEN=<key below>"
    );
    println!("your team key (shown once, only its hash is stored):");
    println!("{key}");
    Ok(())
}

async fn run_roles(config: PathBuf, which: &[Role]) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    roles::run(cfg, which, roles::shutdown_signal(), |listening| {
        for (what, addr) in listening {
            println!("tollgate {what} listening on http://{addr}");
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(())
}

async fn logs(trace_id: String, url: String, token: String) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(&url).with_context(|| format!("{url} is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the API URL cannot take a path"))?
        .pop_if_empty()
        .extend(["v1", "traces", trace_id.as_str()]);
    let response = reqwest::Client::new()
        .get(url.clone())
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).context("the API's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            body.pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("(no message)")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// Prints `tollgate apply`'s events: a line each (kind, id, after), or
/// JSON lines; then how many were written or would be.
fn print_plan(
    events: &[tollgate::control::ControlEvent],
    json: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    for e in events {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            let after = e.after.as_ref().map(|a| a.to_string()).unwrap_or_default();
            println!("{:<20} {:<24} {after}", e.kind.as_str(), e.id);
        }
    }
    let verb = if dry_run { "would write" } else { "wrote" };
    eprintln!("{verb} {} control event(s)", events.len());
    Ok(())
}
