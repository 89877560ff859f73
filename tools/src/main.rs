//! `tessera-wal`: inspect a Tessera WAL directory (stats, dump, verify, repair).
//!
//! Exit status: 0 on success, 1 when `verify` finds a problem or a command fails.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera_tools::inspect::{self, DumpFilter, Progress};
use tessera_wal::{LogIndex, RegionId};

#[derive(Parser)]
#[command(
    name = "tessera-wal",
    about = "Inspect a Tessera write-ahead log directory"
)]
struct Cli {
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long, global = true)]
    progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segments, records, per-Region index ranges and bytes.
    Stats {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Records and entries, optionally filtered.
    Dump {
        dir: PathBuf,
        #[arg(long)]
        region: Option<u64>,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Checks every checksum; exits non-zero on any problem.
    Verify { dir: PathBuf },
    /// Cuts a torn tail off the newest segment, keeping a backup of the cut bytes.
    Repair {
        dir: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tessera-wal: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(cli.progress);
    match cli.command {
        Command::Stats { dir, json } => println!("{}", inspect::stats(&dir, json, &progress)?),
        Command::Dump {
            dir,
            region,
            from,
            to,
            json,
        } => {
            let filter = DumpFilter {
                region: region.map(RegionId),
                from: from.map(LogIndex),
                to: to.map(LogIndex),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            inspect::dump(&dir, &filter, json, &mut out)?;
            out.flush()?;
        }
        Command::Verify { dir } => {
            let (records, problems) = inspect::verify(&dir, &progress)?;
            for p in &problems {
                let kind = if p.torn_tail {
                    "torn tail"
                } else {
                    "corruption"
                };
                println!(
                    "{kind}: segment {} offset {}: {}",
                    p.segment, p.offset, p.reason
                );
            }
            println!("{records} valid records, {} problems", problems.len());
            if !problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Repair { dir, yes } => {
            let mut confirm = |question: &str| yes || ask(question);
            println!("{}", inspect::repair(&dir, &mut confirm)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ask(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && answer.trim().eq_ignore_ascii_case("y")
}
