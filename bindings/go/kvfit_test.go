package kvfit

// End-to-end tests on the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf,
// or $KVFIT_MODEL); tests that need it skip, saying why, when it is absent.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func modelPath() string {
	if p := os.Getenv("KVFIT_MODEL"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

var (
	sharedOnce  sync.Once
	sharedModel *Model
	sharedErr   error
)

// testModel is one model shared by every test (and so by several goroutines).
func testModel(t *testing.T) *Model {
	t.Helper()
	path := modelPath()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("default model %s not found (run `make models`)", path)
	}
	sharedOnce.Do(func() { sharedModel, sharedErr = LoadModel(path, nil) })
	if sharedErr != nil {
		t.Fatalf("loading %s: %v", path, sharedErr)
	}
	return sharedModel
}

func smallSession(t *testing.T, m *Model) *Session {
	t.Helper()
	opts := DefaultSessionOptions()
	opts.Context = 512
	opts.Threads = 2
	s, err := m.NewSession(&opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func chatPrompt(t *testing.T, m *Model, question string) []Token {
	t.Helper()
	text, err := m.ApplyChatTemplate("", []ChatMessage{{Role: "user", Content: question}}, true)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := m.Tokenize(text, true, true)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// reply generates greedily and returns the tokens, the streamed text and the result.
func reply(t *testing.T, s *Session, prompt []Token, maxTokens uint32) ([]Token, string, GenerateResult) {
	t.Helper()
	var tokens []Token
	var text strings.Builder
	opts := DefaultGenerateOptions()
	opts.MaxTokens = maxTokens
	res, err := s.Generate(prompt, nil, &opts, func(tok Token, piece string) bool {
		if tok >= 0 {
			tokens = append(tokens, tok)
		}
		text.WriteString(piece)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return tokens, text.String(), res
}

func TestVersionMatchesItsNumber(t *testing.T) {
	var major, minor, patch uint32
	if _, err := fmt.Sscanf(Version(), "%d.%d.%d", &major, &minor, &patch); err != nil {
		t.Fatalf("version %q: %v", Version(), err)
	}
	if got := major*10000 + minor*100 + patch; got != VersionNumber() {
		t.Fatalf("version %s is not number %d", Version(), VersionNumber())
	}
}

func TestMissingFileIsAnIOErrorWithKvfitsMessage(t *testing.T) {
	_, err := LoadModel(filepath.Join(t.TempDir(), "absent.gguf"), nil)
	if !errors.Is(err, ErrIO) || errors.Is(err, ErrFormat) {
		t.Fatalf("want ErrIO, got %v", err)
	}
	var kerr *Error
	if !errors.As(err, &kerr) || !strings.Contains(kerr.Message, "absent.gguf") {
		t.Fatalf("message should name the file: %v", err)
	}
	if !strings.HasSuffix(err.Error(), "(KVFIT_E_IO)") {
		t.Fatalf("error text: %q", err.Error())
	}
}

func TestNotAModelIsAFormatError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.gguf")
	if err := os.WriteFile(path, []byte("this is not a GGUF file at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModel(path, nil); !errors.Is(err, ErrFormat) {
		t.Fatalf("want ErrFormat, got %v", err)
	}
}

func TestDevicesStartWithTheCPU(t *testing.T) {
	devices, err := Devices()
	if err != nil || len(devices) == 0 {
		t.Fatalf("devices %v, %v", devices, err)
	}
	if d := devices[0]; d.Backend != BackendCPU || d.Type != DeviceCPU || d.MemoryBytes == 0 || d.Name == "" {
		t.Fatalf("first device %+v", d)
	}
}

func TestModelLoadsOnAChosenDevice(t *testing.T) {
	path := modelPathOrSkip(t)
	zero, absent := 0, 999
	m, err := LoadModel(path, &ModelOptions{Backend: BackendCPU, Device: &zero})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := LoadModel(path, &ModelOptions{Backend: BackendCPU, Device: &absent}); err == nil ||
		!strings.Contains(err.Error(), "999") {
		t.Fatalf("device 999: %v", err)
	}
	// A cancelling progress callback stops the load.
	calls := 0
	_, err = LoadModel(path, &ModelOptions{Progress: func(float32) bool { calls++; return false }})
	if !errors.Is(err, ErrCancelled) || calls != 1 {
		t.Fatalf("cancelled load: %v after %d calls", err, calls)
	}
}

func TestModelInfoAndTokens(t *testing.T) {
	m := testModel(t)
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Arch != "llama" || info.Tokenizer != "gpt2" || info.VocabSize != 49152 || info.Params < 100_000_000 {
		t.Fatalf("unexpected info %+v", info)
	}
	if arch, err := m.Meta("general.architecture"); err != nil || arch != "llama" {
		t.Fatalf("meta: %q, %v", arch, err)
	}
	if _, err := m.Meta("no.such.key"); !errors.Is(err, ErrArg) {
		t.Fatalf("want ErrArg, got %v", err)
	}
	text := "Hello, world! Ünïcödé too."
	tokens, err := m.Tokenize(text, false, false)
	if err != nil || len(tokens) < 4 || len(tokens) >= len(text) {
		t.Fatalf("tokens %v, %v", tokens, err)
	}
	if back, err := m.Detokenize(tokens, false); err != nil || back != text {
		t.Fatalf("round trip gave %q, %v", back, err)
	}
	var pieces []byte
	for _, tok := range tokens {
		p, err := m.TokenToPiece(tok, false)
		if err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, p...)
	}
	if string(pieces) != text {
		t.Fatalf("pieces %q", pieces)
	}
	if _, err := m.TokenToPiece(1<<30, false); !errors.Is(err, ErrToken) {
		t.Fatalf("want ErrToken, got %v", err)
	}
	if _, err := m.Tokenize("bad \xff utf-8", false, false); !errors.Is(err, ErrUTF8) {
		t.Fatalf("want ErrUTF8, got %v", err)
	}
}

func TestChatTemplateRendersChatML(t *testing.T) {
	m := testModel(t)
	if m.ChatTemplate() != "chatml" {
		t.Fatalf("template %q", m.ChatTemplate())
	}
	text, err := m.ApplyChatTemplate("chatml", []ChatMessage{{Role: "user", Content: "Hi"}}, true)
	if err != nil || !strings.Contains(text, "<|im_start|>user\nHi<|im_end|>") ||
		!strings.HasSuffix(text, "<|im_start|>assistant\n") {
		t.Fatalf("rendered %q, %v", text, err)
	}
	if _, err := m.ApplyChatTemplate("no-such-template", nil, false); !errors.Is(err, ErrArg) {
		t.Fatalf("want ErrArg, got %v", err)
	}
}

func TestGreedyChatTurnStreamsTheGeneratedText(t *testing.T) {
	m := testModel(t)
	s := smallSession(t, m)
	prompt := chatPrompt(t, m, "What is the capital of France?")
	tokens, text, res := reply(t, s, prompt, 16)
	if res.Generated == 0 || res.Generated > 16 || len(tokens) != int(res.Generated) {
		t.Fatalf("generated %d, streamed %d tokens", res.Generated, len(tokens))
	}
	if strings.TrimSpace(text) == "" {
		t.Fatal("empty reply")
	}
	if back, _ := m.Detokenize(tokens, false); back != text {
		t.Fatalf("streamed %q but tokens say %q", text, back)
	}
	if s.NPast() != uint64(len(prompt)+len(tokens)) {
		t.Fatalf("n_past %d", s.NPast())
	}
	// Greedy decoding is deterministic: a fresh session says the same.
	if _, again, _ := reply(t, smallSession(t, m), prompt, 16); again != text {
		t.Fatalf("second run said %q, first %q", again, text)
	}
}

func TestCallbackReturningFalseStopsGeneration(t *testing.T) {
	m := testModel(t)
	s := smallSession(t, m)
	seen := 0
	res, err := s.Generate(chatPrompt(t, m, "Count from one to twenty."), nil, nil, func(tok Token, _ string) bool {
		seen++
		return seen < 3
	})
	if err != nil || res.StopReason != StopCallback || res.Generated != 3 || seen != 3 {
		t.Fatalf("result %+v, seen %d, %v", res, seen, err)
	}
}

func TestCallbackCannotReenterItsSession(t *testing.T) {
	m := testModel(t)
	s := smallSession(t, m)
	var inner error
	_, err := s.Generate(chatPrompt(t, m, "Hi"), nil, nil, func(Token, string) bool {
		inner = s.Reset()
		return false
	})
	if err != nil || !errors.Is(inner, ErrReentrant) {
		t.Fatalf("generate %v, reset from the callback %v", err, inner)
	}
}

func TestPanicInTheCallbackReachesTheCallerAndTheSessionSurvives(t *testing.T) {
	m := testModel(t)
	s := smallSession(t, m)
	prompt := chatPrompt(t, m, "Say something.")
	func() {
		defer func() {
			if r := recover(); r != "from the callback" {
				t.Fatalf("recovered %v", r)
			}
		}()
		s.Generate(prompt, nil, nil, func(Token, string) bool { panic("from the callback") })
		t.Fatal("the panic did not propagate")
	}()
	if err := s.Reset(); err != nil || s.NPast() != 0 {
		t.Fatalf("reset %v, n_past %d", err, s.NPast())
	}
	if _, text, _ := reply(t, s, prompt, 4); text == "" {
		t.Fatal("no text after the panic")
	}
}

func TestBudgetedSessionPlansInsideItsBudget(t *testing.T) {
	m := testModel(t)
	const budget = 8 << 20
	opts := DefaultSessionOptions()
	opts.KVBudgetBytes = budget
	opts.Context = 8192
	opts.Threads = 2
	s, err := m.NewSession(&opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plan, err := s.Plan()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := m.Info()
	if len(plan.Layers) != int(info.Layers) || plan.TotalBytes > budget || plan.TotalBytes < budget/2 {
		t.Fatalf("plan %+v", plan)
	}
	var sum uint64
	for _, l := range plan.Layers {
		sum += l.Bytes
		if l.Kind != LayerStreaming || l.Window == 0 || l.Codec == KVAuto {
			t.Fatalf("layer %+v", l)
		}
	}
	if sum > plan.TotalBytes || s.KVBytes() != plan.TotalBytes {
		t.Fatalf("layers %d, total %d, kv bytes %d", sum, plan.TotalBytes, s.KVBytes())
	}
	before := s.KVBytes()
	reply(t, s, chatPrompt(t, m, "Tell me a story."), 8)
	if s.KVBytes() != before {
		t.Fatalf("kv bytes moved from %d to %d", before, s.KVBytes())
	}

	// A pinned codec comes back in the plan.
	pinned := opts
	pinned.Codec = KVQ4Channel
	ps, err := m.NewSession(&pinned)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if plan, err := ps.Plan(); err != nil || plan.Layers[0].Codec != KVQ4Channel || plan.Layers[0].Window%32 != 0 {
		t.Fatalf("pinned q4c: %+v, %v", plan, err)
	}
	if KVQ4Channel.String() != "q4c" {
		t.Fatalf("codec name %q", KVQ4Channel.String())
	}

	opts.KVBudgetBytes = 1024
	_, err = m.NewSession(&opts)
	var kerr *Error
	if !errors.Is(err, ErrBudget) || !errors.As(err, &kerr) || !strings.ContainsAny(kerr.Message, "0123456789") {
		t.Fatalf("want ErrBudget naming a budget, got %v", err)
	}
}

func TestLogitsStateAndNLL(t *testing.T) {
	m := testModel(t)
	s := smallSession(t, m)
	if _, err := s.Logits(); !errors.Is(err, ErrState) {
		t.Fatalf("want ErrState, got %v", err)
	}
	tokens, _ := m.Tokenize("The quick brown fox jumps over the lazy dog.", true, false)
	nll, err := s.PrefillNLL(tokens)
	if err != nil || len(nll) != len(tokens) || !math.IsNaN(float64(nll[0])) {
		t.Fatalf("nll %v, %v", nll, err)
	}
	for _, v := range nll[1:] {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < 0 {
			t.Fatalf("nll %v", nll)
		}
	}
	logits, _ := s.Logits()
	state, err := s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Decode(tokens[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadState(state); err != nil {
		t.Fatal(err)
	}
	restored, _ := s.Logits()
	if s.NPast() != uint64(len(tokens)) || len(restored) != len(logits) {
		t.Fatalf("n_past %d, %d logits", s.NPast(), len(restored))
	}
	for i := range logits {
		if restored[i] != logits[i] {
			t.Fatalf("logit %d: %v != %v", i, restored[i], logits[i])
		}
	}
	if err := s.LoadState([]byte("not a kvfit state")); !errors.Is(err, ErrFormat) {
		t.Fatalf("want ErrFormat, got %v", err)
	}
	if err := s.Decode(-5); !errors.Is(err, ErrToken) {
		t.Fatalf("want ErrToken, got %v", err)
	}
}

func TestSeededSamplerRepeatsItself(t *testing.T) {
	m := testModel(t)
	prompt := chatPrompt(t, m, "Write a short poem about the sea.")
	run := func() string {
		o := DefaultSamplerOptions()
		o.Temperature, o.Seed = 0.9, 42
		smp, err := NewSampler(&o)
		if err != nil {
			t.Fatal(err)
		}
		defer smp.Close()
		var text strings.Builder
		g := DefaultGenerateOptions()
		g.MaxTokens = 12
		if _, err := smallSession(t, m).Generate(prompt, smp, &g, func(_ Token, p string) bool {
			text.WriteString(p)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return text.String()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("same seed, different text: %q vs %q", a, b)
	}

	o := DefaultSamplerOptions()
	o.Temperature = 0
	smp, _ := NewSampler(&o)
	defer smp.Close()
	s := smallSession(t, m)
	if err := s.Prefill(prompt); err != nil {
		t.Fatal(err)
	}
	logits, _ := s.Logits()
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if tok, err := smp.Sample(s); err != nil || tok != Token(best) {
		t.Fatalf("greedy sample %d (%v), argmax %d", tok, err, best)
	}
	if err := smp.Accept(-1); !errors.Is(err, ErrArg) {
		t.Fatalf("want ErrArg, got %v", err)
	}
}

func TestCloseIsIdempotentAndClosedHandlesFailCleanly(t *testing.T) {
	m, err := LoadModel(modelPathOrSkip(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	tiny := DefaultSessionOptions()
	tiny.Context = 64
	s, err := m.NewSession(&tiny)
	if err != nil {
		t.Fatal(err)
	}
	// The model outlives Close while a session is open...
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.NewSession(&tiny); !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if err := s.Prefill([]Token{1, 2, 3}); err != nil {
		t.Fatalf("the open session should still work: %v", err)
	}
	// ...and is released with the last session.
	s.Close()
	s.Close()
	m.Close()
	if m.ptr != nil {
		t.Fatal("the model was not released with its last session")
	}
	if err := s.Decode(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if _, err := m.Tokenize("x", false, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	smp, _ := NewSampler(nil)
	smp.Close()
	smp.Close()
	if _, err := smp.Sample(s); !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}

func modelPathOrSkip(t *testing.T) string {
	testModel(t)
	return modelPath()
}

func TestFinalizersReleaseForgottenHandles(t *testing.T) {
	m, err := LoadModel(modelPathOrSkip(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	tiny := DefaultSessionOptions()
	tiny.Context = 64
	for i := 0; i < 4; i++ {
		if _, err := m.NewSession(&tiny); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	// The unreferenced sessions' finalizers close them and so release the model.
	for i := 0; i < 20; i++ {
		runtime.GC()
		m.mu.RLock()
		released := m.ptr == nil
		m.mu.RUnlock()
		if released {
			return
		}
	}
	t.Fatal("finalizers did not release the sessions and the model")
}

func TestOneModelServesSessionsOnSeveralGoroutines(t *testing.T) {
	m := testModel(t)
	prompt := chatPrompt(t, m, "Name a colour.")
	texts := make([]string, 2)
	var wg sync.WaitGroup
	for i := range texts {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			opts := DefaultSessionOptions()
			opts.Context, opts.Threads = 256, 1
			s, err := m.NewSession(&opts)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			var b strings.Builder
			g := DefaultGenerateOptions()
			g.MaxTokens = 6
			if _, err := s.Generate(prompt, nil, &g, func(_ Token, p string) bool { b.WriteString(p); return true }); err != nil {
				t.Error(err)
			}
			texts[i] = b.String()
		}(i)
	}
	wg.Wait()
	if texts[0] == "" || texts[0] != texts[1] {
		t.Fatalf("texts %q", texts)
	}
}
