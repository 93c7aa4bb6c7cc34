//! The `stepflow` command: run, resume and inspect flows of sandboxed WebAssembly steps.
//!
//! Only this crate knows about terminals, exit codes and where files live by default; it parses
//! the command line, hands the work to `stepflow-engine` and the store, and renders the result.
//! This file is dispatch only: each command is a module of `commands`, each view (text and
//! JSON) a module of `views`.

mod cli;
mod commands;
mod error;
mod logging;
mod output;
mod progress;
mod signals;
mod views;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, PluginCommand};
use crate::error::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(match cli.command {
        Command::Server { log_format, .. } => logging::Style::Service(log_format),
        _ => logging::Style::Interactive,
    });
    // Worker threads receive signals while a plugin step runs on this thread (a step does not
    // yield until it ends), so a stop request is counted before the next step can start.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    let json = cli.json;
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            exit.print(json);
            ExitCode::from(exit.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Exit> {
    let json = cli.json;
    let db = stepflow_store::Database::from_arg(
        cli.db
            .unwrap_or_else(stepflow_engine::default_db_path)
            .as_os_str(),
    );
    commands::set_max_flow_bytes(cli.max_flow_size);
    commands::set_max_data_bytes(cli.max_data);
    match cli.command {
        Command::Run {
            flow,
            input,
            max_input,
            build,
            build_timeout,
            no_wait,
        } => {
            let build = build.then_some(build_timeout);
            commands::run::run(
                &db,
                &flow,
                input.as_deref(),
                max_input,
                build,
                no_wait,
                json,
            )
            .await
        }
        Command::Resume { run, now, no_wait } => {
            commands::run::resume(&db, &run, now, no_wait, json).await
        }
        Command::Runs {
            status,
            flow,
            deployment,
            limit,
        } => commands::runs::runs(&db, status, flow, deployment.as_deref(), limit, json),
        Command::Deployments { flow, limit } => {
            commands::deployments::deployments(&db, flow.as_deref(), limit, json)
        }
        Command::Upgrade {
            run,
            to,
            dry_run,
            flow,
        } => commands::upgrade::upgrade(
            &db,
            run.as_deref(),
            flow.as_deref(),
            to.as_deref(),
            dry_run,
            json,
        ),
        Command::Show { run } => commands::show::show(&db, &run, json),
        Command::Validate { flow } => commands::validate::validate(&flow, json),
        Command::Inspect { plugin } => commands::inspect::inspect(&plugin, json),
        Command::Graph { flow, format } => commands::graph::graph(&flow, format, json),
        Command::Cancel { run } => commands::cancel::cancel(&db, &run, json),
        Command::Rerun { run, from } => commands::rerun::rerun(&db, &run, from, json).await,
        Command::Signal {
            run,
            name,
            data,
            id,
        } => commands::signal::signal(&db, &run, &name, data.as_deref(), id.as_deref(), json),
        Command::Submit {
            flow,
            input,
            max_input,
            build,
            build_timeout,
        } => {
            let build = build.then_some(build_timeout);
            commands::submit::submit(&db, &flow, input.as_deref(), max_input, build, json).await
        }
        Command::Plugin(PluginCommand::New { lang, name, dir }) => {
            commands::plugin::new(lang, &name, dir.as_deref(), json)
        }
        Command::Plugin(PluginCommand::Build { dir }) => {
            commands::plugin::build(&dir, json).map(|_| ())
        }
        Command::Plugin(PluginCommand::Test { dir }) => commands::plugin::test(&dir, json).await,
        Command::Server {
            concurrency,
            drive_threads,
            lease,
            listen,
            no_api,
            reads_need_token,
            allow_dir,
            allow_env,
            ..
        } => {
            let api = (!no_api).then(|| commands::server::Api {
                listen,
                reads_need_token,
                policy: commands::server::policy(&allow_dir, allow_env),
            });
            let drives = commands::server::Drives {
                concurrency: usize::from(concurrency),
                threads: drive_threads.map(usize::from),
            };
            commands::server::server(&db, drives, lease, api, json).await
        }
    }
}
