//! The `confidant` command line. Thin: flags are parsed in `cli::args`, validated into the
//! library's configs, and handed to the library.

mod cli;

/// mimalloc: per-thread free lists instead of glibc's contended arenas (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // SAFETY: the first statement of `main`: no other thread exists yet, so nothing reads
    // the environment while `pin_thread_count` writes it.
    #[allow(unsafe_code)]
    let threads = unsafe { confidant::secure::pin_thread_count() };
    let args = <cli::args::Cli as clap::Parser>::parse();
    if !args.command.is_server() {
        // Output to a closed pipe (`confidant inspect … | head`) ends the command quietly.
        confidant::secure::restore_default_sigpipe();
    }
    cli::init_logging(args.log_format);
    // The server's receipts gather while its workers have other calls to run.
    let idle_workers = confidant::audit::IdleWorkers::new();
    let runtime = match idle_workers
        .install(tokio::runtime::Builder::new_multi_thread().enable_all())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::debug!(threads, "thread pool sized");
    match runtime.block_on(cli::run(args.command, Some(idle_workers))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined by ": ", skipping a cause whose text its parent already
/// includes (our error types print their source inline).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
