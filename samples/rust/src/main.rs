//! kvfit-chat-rs: the Rust twin of samples/chat.c, a command-line chat that
//! streams tokens as the model produces them.
//!
//!   kvfit-chat-rs -m model.gguf [-s SYSTEM] [-p PROMPT] [--temp T] [--top-k K]
//!                 [--top-p P] [--min-p P] [--repeat-penalty R] [--seed N] [-t THREADS]
//!                 [-c N_CTX] [-n MAX_TOKENS] [--template NAME] [--budget 64MiB] [--plan] [-v]
//!
//! Each turn renders the whole conversation with the chat template and feeds
//! the session only the part it has not seen, so earlier turns are never
//! recomputed. With --budget the session streams inside a fixed KV memory.
use kvfit::{ChatMessage, ErrorKind, GenerateOptions, Model, Sampler, SamplerParams, Session, SessionParams, StopReason};
use std::io::{self, BufRead, Write};
use std::process::ExitCode;

const USAGE: &str = "usage: kvfit-chat-rs -m MODEL.gguf [-s SYSTEM] [-p PROMPT] [--temp T] [--top-k K] [--top-p P]
                     [--min-p P] [--repeat-penalty R] [--seed N] [-t THREADS] [-c N_CTX]
                     [-n MAX_TOKENS] [--template NAME] [--budget 64MiB] [--plan] [-v]
Without -p it reads one user message per line from stdin until EOF.";

struct Options {
    model: String,
    system: Option<String>,
    prompt: Option<String>,
    template: Option<String>,
    sampler: SamplerParams,
    session: SessionParams,
    max_tokens: u32,
    show_plan: bool,
    verbose: bool,
}

/// "64MiB", "512K", "1.5GiB" or plain bytes (K/M/G are 1024-based), as the C tools read them.
fn parse_size(s: &str) -> Option<u64> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let scale: u64 = match unit {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && (fraction.is_empty() || scale == 1)) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(scale)?;
    if !fraction.is_empty() {
        let digits = &fraction[..fraction.len().min(9)];
        let part: u64 = digits.parse().ok()?;
        bytes = bytes.checked_add(part * scale / 10u64.pow(digits.len() as u32))?;
    }
    (bytes > 0).then_some(bytes)
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        model: String::new(),
        system: None,
        prompt: None,
        template: None,
        sampler: SamplerParams { temperature: 0.7, repeat_penalty: 1.1, ..SamplerParams::default() },
        session: SessionParams { n_ctx: 4096, ..SessionParams::default() },
        max_tokens: 512,
        show_plan: false,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--plan" => o.show_plan = true,
            "-v" => o.verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {
                let value = args.next().ok_or_else(|| format!("unknown or incomplete argument '{flag}'"))?;
                let bad = || format!("bad value '{value}' for {flag}");
                match flag.as_str() {
                    "-m" | "--model" => o.model = value.clone(),
                    "-s" | "--system" => o.system = Some(value.clone()),
                    "-p" | "--prompt" => o.prompt = Some(value.clone()),
                    "--template" => o.template = Some(value.clone()),
                    "--temp" => o.sampler.temperature = value.parse().map_err(|_| bad())?,
                    "--top-k" => o.sampler.top_k = value.parse().map_err(|_| bad())?,
                    "--top-p" => o.sampler.top_p = value.parse().map_err(|_| bad())?,
                    "--min-p" => o.sampler.min_p = value.parse().map_err(|_| bad())?,
                    "--repeat-penalty" => o.sampler.repeat_penalty = value.parse().map_err(|_| bad())?,
                    "--seed" => o.sampler.seed = value.parse().map_err(|_| bad())?,
                    "-t" | "--threads" => o.session.n_threads = value.parse().map_err(|_| bad())?,
                    "-c" | "--ctx" => o.session.n_ctx = value.parse().map_err(|_| bad())?,
                    "-n" | "--max-tokens" => o.max_tokens = value.parse().map_err(|_| bad())?,
                    "--budget" => o.session.kv_budget_bytes = parse_size(&value).ok_or_else(bad)?,
                    _ => return Err(format!("unknown argument '{flag}'")),
                }
            }
        }
    }
    if o.model.is_empty() {
        return Err("-m MODEL is required".into());
    }
    Ok(o)
}

fn print_plan(session: &Session<'_>) -> kvfit::Result<()> {
    let plan = session.plan()?;
    eprintln!("plan: {} layers, {:.2} MiB of KV state", plan.layers.len(), plan.total_bytes as f64 / 1048576.0);
    let mut first = 0;
    while first < plan.layers.len() {
        let l = plan.layers[first];
        let same = |m: &kvfit::LayerPlan| m.codec == l.codec && m.n_window == l.n_window && m.n_sink == l.n_sink;
        let last = first + plan.layers[first..].iter().take_while(|m| same(m)).count() - 1;
        let kind = if l.kind == kvfit::LayerKind::Streaming { "streaming" } else { "dense" };
        eprintln!(
            "  layers {first}-{last}: {kind}, {}, {} sinks + {} window, {:.2} MiB each",
            l.codec,
            l.n_sink,
            l.n_window,
            l.bytes as f64 / 1048576.0
        );
        first = last + 1;
    }
    Ok(())
}

fn run(o: &Options) -> kvfit::Result<()> {
    if o.verbose {
        kvfit::set_log_callback(kvfit::LogLevel::Info, |_, message| eprintln!("[kvfit] {message}"));
    }
    let model = Model::load(&o.model)?;
    let mut session = Session::new(&model, &o.session)?;
    let mut sampler = Sampler::new(&o.sampler)?;
    if o.show_plan {
        print_plan(&session)?;
    }
    let template = o.template.clone().unwrap_or_else(|| model.chat_template().to_string());
    if o.prompt.is_none() {
        eprintln!("kvfit {}, template {template}. Type a message, Ctrl-D to quit.", kvfit::version());
    }

    let base: Vec<ChatMessage> = o.system.iter().map(|s| ChatMessage::new("system", s.as_str())).collect();
    let mut history = base.clone();
    let mut seen = 0usize; // bytes of the rendered conversation already in the session
    let options = GenerateOptions { max_tokens: o.max_tokens, ..GenerateOptions::default() };
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let user = match &o.prompt {
            Some(p) => p.clone(),
            None => {
                eprint!("> ");
                match lines.next() {
                    Some(Ok(line)) if line.trim().is_empty() => continue,
                    Some(Ok(line)) => line,
                    _ => break,
                }
            }
        };
        history.push(ChatMessage::new("user", user));
        let text = model.apply_chat_template(Some(&template), &history, true)?;
        // If the template re-rendered an earlier turn differently, start the session over.
        let fresh = match text.get(seen..) {
            Some(rest) => rest,
            None => {
                session.reset()?;
                seen = 0;
                &text[..]
            }
        };
        let tokens = model.tokenize(fresh, seen == 0, true)?;
        let mut reply = String::new();
        let result = session.generate(&tokens, Some(&mut sampler), &options, |_, piece| {
            reply.push_str(piece);
            print!("{piece}");
            let _ = io::stdout().flush();
            true
        });
        let generation = match result {
            Err(e) if e.kind() == ErrorKind::ContextFull => None,
            other => Some(other?),
        };
        println!();
        let full = generation.map_or(true, |g| g.stop_reason == StopReason::ContextFull);
        if full {
            eprintln!("[context full: starting a new conversation]");
            session.reset()?;
            history.clone_from(&base);
            seen = 0;
        } else {
            seen = text.len() + reply.len();
            history.push(ChatMessage::new("assistant", reply));
        }
        if o.prompt.is_some() {
            break;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(why) => {
            eprintln!("kvfit-chat-rs: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvfit-chat-rs: {e}");
            ExitCode::FAILURE
        }
    }
}
