//! End-to-end tests on the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf,
//! or $KVFIT_MODEL). Tests that need it print why and pass when it is absent.
use kvfit::{
    ChatMessage, ErrorKind, GenerateOptions, KvCodec, LayerKind, Model, Sampler, SamplerParams, Session,
    SessionParams, StopReason, Token,
};
use std::path::PathBuf;
use std::sync::OnceLock;

fn model_path() -> PathBuf {
    match std::env::var_os("KVFIT_MODEL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

/// One model shared by every test (and so by several threads at once).
fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        let path = model_path();
        if !path.exists() {
            return None;
        }
        Some(Model::load(&path).expect("loading the default model"))
    });
    if model.is_none() {
        eprintln!("skipped: default model {} not found (run `make models`)", model_path().display());
    }
    model.as_ref()
}

fn small_session(model: &Model) -> Session<'_> {
    let params = SessionParams { n_ctx: 512, n_threads: 2, ..SessionParams::default() };
    Session::new(model, &params).expect("creating a session")
}

fn chat_prompt(model: &Model, question: &str) -> Vec<Token> {
    let text = model.apply_chat_template(None, &[ChatMessage::new("user", question)], true).unwrap();
    model.tokenize(&text, true, true).unwrap()
}

/// Greedy reply to a question: its tokens, its streamed text and how it ended.
fn reply(session: &mut Session<'_>, prompt: &[Token], max_tokens: u32) -> (Vec<Token>, String, kvfit::Generation) {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let options = GenerateOptions { max_tokens, ..GenerateOptions::default() };
    let generation = session
        .generate(prompt, None, &options, |token, piece| {
            tokens.extend(token);
            text.push_str(piece);
            true
        })
        .expect("generating");
    (tokens, text, generation)
}

#[test]
fn version_matches_its_number() {
    let parts: Vec<u32> = kvfit::version().split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0] * 10000 + parts[1] * 100 + parts[2], kvfit::version_number());
}

#[test]
fn missing_file_is_an_io_error_with_kvfits_message() {
    let err = Model::load("/nonexistent/kvfit-test.gguf").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(err.kind().name(), "KVFIT_E_IO");
    assert!(err.message().contains("kvfit-test.gguf"), "message: {}", err.message());
    assert!(err.to_string().ends_with("(KVFIT_E_IO)"));
}

#[test]
fn nul_in_a_path_is_rejected_before_the_library() {
    let err = Model::load("a\0b").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Arg);
}

#[test]
fn devices_start_with_the_cpu() {
    let devices = kvfit::devices().unwrap();
    assert!(!devices.is_empty());
    assert_eq!(devices[0].backend, kvfit::Backend::Cpu);
    assert_eq!(devices[0].device_type, kvfit::DeviceType::Cpu);
    assert!(devices[0].memory_bytes > 0 && !devices[0].name.is_empty(), "{devices:?}");
}

#[test]
fn model_loads_on_a_chosen_device() {
    let Some(_) = model() else { return };
    let cpu = kvfit::ModelParams { backend: kvfit::Backend::Cpu, device: Some(0), ..Default::default() };
    let model = Model::load_with(model_path(), &cpu, None).unwrap();
    assert_eq!(model.info().unwrap().arch, "llama");
    let absent = kvfit::ModelParams { device: Some(999), ..cpu };
    let err = Model::load_with(model_path(), &absent, None).unwrap_err();
    assert!(err.message().contains("999"), "{err}");
    // A cancelling progress callback stops the load.
    let mut calls = 0;
    let mut cancel = |_: f32| {
        calls += 1;
        false
    };
    let err = Model::load_with(model_path(), &kvfit::ModelParams::default(), Some(&mut cancel)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(calls, 1);
}

#[test]
fn handles_have_the_c_abis_thread_rules() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<Model>();
    send::<Session<'static>>();
    send::<Sampler>();
}

#[test]
fn model_info_and_tokens() {
    let Some(model) = model() else { return };
    let info = model.info().unwrap();
    assert_eq!(info.arch, "llama");
    assert_eq!(info.tokenizer, "gpt2");
    assert_eq!(info.n_vocab, 49152);
    assert!(info.n_layer > 0 && info.n_params > 100_000_000);
    assert_eq!(model.meta("general.architecture").unwrap(), "llama");
    assert_eq!(model.meta("no.such.key").unwrap_err().kind(), ErrorKind::Arg);

    let text = "Hello, world! Ünïcödé too.";
    let tokens = model.tokenize(text, false, false).unwrap();
    assert!(tokens.len() > 3 && tokens.len() < text.len());
    assert_eq!(model.detokenize(&tokens, false).unwrap(), text);
    let pieces: Vec<u8> = tokens.iter().flat_map(|&t| model.token_to_piece(t, false).unwrap()).collect();
    assert_eq!(pieces, text.as_bytes());
    assert_eq!(model.token_to_piece(1 << 30, false).unwrap_err().kind(), ErrorKind::Token);
}

#[test]
fn chat_template_renders_chatml() {
    let Some(model) = model() else { return };
    assert_eq!(model.chat_template(), "chatml");
    let text = model
        .apply_chat_template(Some("chatml"), &[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert!(text.contains("<|im_start|>user\nHi<|im_end|>"), "{text}");
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
    let err = model.apply_chat_template(Some("no-such-template"), &[], false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Arg);
}

#[test]
fn greedy_chat_turn_streams_the_generated_text() {
    let Some(model) = model() else { return };
    let mut session = small_session(model);
    let prompt = chat_prompt(model, "What is the capital of France?");
    let (tokens, text, generation) = reply(&mut session, &prompt, 16);
    assert!(generation.n_generated > 0 && generation.n_generated <= 16);
    assert_eq!(tokens.len(), generation.n_generated as usize);
    assert!(!text.trim().is_empty());
    // The streamed pieces are exactly the generated tokens' text.
    assert_eq!(model.detokenize(&tokens, false).unwrap(), text);
    assert_eq!(session.n_past(), (prompt.len() + tokens.len()) as u64);
    if generation.stop_reason == StopReason::Length {
        assert_eq!(generation.n_generated, 16);
    }

    // Greedy decoding is deterministic: a fresh session says the same.
    let mut again = small_session(model);
    assert_eq!(reply(&mut again, &prompt, 16).1, text);
}

#[test]
fn callback_returning_false_stops_generation() {
    let Some(model) = model() else { return };
    let mut session = small_session(model);
    let prompt = chat_prompt(model, "Count from one to twenty.");
    let mut seen = 0;
    let generation = session
        .generate(&prompt, None, &GenerateOptions::default(), |token, _| {
            seen += usize::from(token.is_some());
            seen < 3
        })
        .unwrap();
    assert_eq!(generation.stop_reason, StopReason::Callback);
    assert_eq!(generation.n_generated, 3);
    assert_eq!(seen, 3);
}

#[test]
fn panic_in_the_callback_reaches_the_caller_and_the_session_survives() {
    let Some(model) = model() else { return };
    let mut session = small_session(model);
    let prompt = chat_prompt(model, "Say something.");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = session.generate(&prompt, None, &GenerateOptions::default(), |_, _| panic!("from the callback"));
    }));
    let payload = caught.expect_err("the panic should propagate");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"from the callback"));
    session.reset().unwrap();
    assert_eq!(session.n_past(), 0);
    let (_, text, _) = reply(&mut session, &prompt, 4);
    assert!(!text.is_empty());
}

#[test]
fn budgeted_session_plans_inside_its_budget() {
    let Some(model) = model() else { return };
    let budget = 8u64 << 20;
    let params = SessionParams { kv_budget_bytes: budget, n_ctx: 8192, n_threads: 2, ..SessionParams::default() };
    let mut session = Session::new(model, &params).unwrap();
    let plan = session.plan().unwrap();
    assert_eq!(plan.layers.len() as u32, model.info().unwrap().n_layer);
    assert!(plan.total_bytes <= budget && plan.total_bytes > budget / 2, "{plan:?}");
    // The total also counts state shared by the layers.
    assert!(plan.layers.iter().map(|l| l.bytes).sum::<u64>() <= plan.total_bytes);
    assert!(plan.layers.iter().all(|l| l.kind == LayerKind::Streaming && l.n_window > 0));
    assert!(plan.layers.iter().all(|l| l.codec != KvCodec::Auto));
    assert_eq!(session.kv_bytes(), plan.total_bytes);
    // Streaming keeps memory fixed while generating.
    let before = session.kv_bytes();
    let prompt = chat_prompt(model, "Tell me a story.");
    reply(&mut session, &prompt, 8);
    assert_eq!(session.kv_bytes(), before);

    // A pinned codec comes back in the plan.
    let pinned = SessionParams { kv_codec: KvCodec::Q4Channel, ..params.clone() };
    let plan = Session::new(model, &pinned).unwrap().plan().unwrap();
    assert!(plan.layers.iter().all(|l| l.codec == KvCodec::Q4Channel && l.n_window % 32 == 0), "{plan:?}");
    assert_eq!(KvCodec::Q4Channel.to_string(), "q4c");

    let tiny = SessionParams { kv_budget_bytes: 1024, ..params };
    let err = Session::new(model, &tiny).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Budget);
    assert!(err.message().chars().any(|c| c.is_ascii_digit()), "message names a budget: {}", err.message());
}

#[test]
fn logits_state_and_nll() {
    let Some(model) = model() else { return };
    let mut session = small_session(model);
    assert_eq!(session.logits().unwrap_err().kind(), ErrorKind::State);
    let tokens = model.tokenize("The quick brown fox jumps over the lazy dog.", true, false).unwrap();
    let nll = session.prefill_nll(&tokens).unwrap();
    assert_eq!(nll.len(), tokens.len());
    assert!(nll[0].is_nan());
    assert!(nll[1..].iter().all(|v| v.is_finite() && *v >= 0.0));
    let logits = session.logits().unwrap().to_vec();
    assert_eq!(logits.len(), model.info().unwrap().n_vocab as usize);

    let state = session.save_state().unwrap();
    session.decode(tokens[1]).unwrap();
    assert_ne!(session.logits().unwrap(), &logits[..]);
    session.load_state(&state).unwrap();
    assert_eq!(session.n_past(), tokens.len() as u64);
    assert_eq!(session.logits().unwrap(), &logits[..]);
    assert_eq!(session.load_state(b"not a kvfit state").unwrap_err().kind(), ErrorKind::Format);
    assert_eq!(session.decode(-5).unwrap_err().kind(), ErrorKind::Token);
}

#[test]
fn seeded_sampler_repeats_itself() {
    let Some(model) = model() else { return };
    let prompt = chat_prompt(model, "Write a short poem about the sea.");
    let run = || {
        let params = SamplerParams { temperature: 0.9, seed: 42, ..SamplerParams::default() };
        let mut sampler = Sampler::new(&params).unwrap();
        let mut session = small_session(model);
        let mut text = String::new();
        let options = GenerateOptions { max_tokens: 12, ..GenerateOptions::default() };
        session
            .generate(&prompt, Some(&mut sampler), &options, |_, piece| {
                text.push_str(piece);
                true
            })
            .unwrap();
        text
    };
    assert_eq!(run(), run());

    let mut sampler = Sampler::new(&SamplerParams { temperature: 0.0, ..SamplerParams::default() }).unwrap();
    let mut session = small_session(model);
    session.prefill(&prompt).unwrap();
    let logits = session.logits().unwrap();
    let argmax = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as Token;
    assert_eq!(sampler.sample(&session).unwrap(), argmax);
    sampler.accept(argmax).unwrap();
    assert_eq!(sampler.accept(-1).unwrap_err().kind(), ErrorKind::Arg);
}

#[test]
fn one_model_serves_sessions_on_several_threads() {
    let Some(model) = model() else { return };
    let prompt = chat_prompt(model, "Name a colour.");
    let texts: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let params = SessionParams { n_ctx: 256, n_threads: 1, ..SessionParams::default() };
                    let mut session = Session::new(model, &params).unwrap();
                    reply(&mut session, &prompt, 6).1
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(texts[0], texts[1]);
    assert!(!texts[0].is_empty());
}
