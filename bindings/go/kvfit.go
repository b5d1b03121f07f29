// Package kvfit runs LLM inference with kvfit, an embeddable runtime whose
// sessions keep their KV memory inside a budget fixed in bytes up front.
//
//	model, err := kvfit.LoadModel("models/SmolLM2-135M-Instruct.Q4_1.gguf", nil)
//	if err != nil { ... }
//	defer model.Close()
//	opts := kvfit.DefaultSessionOptions()
//	opts.KVBudgetBytes = 64 << 20
//	session, err := model.NewSession(&opts)
//	if err != nil { ... }
//	defer session.Close()
//	prompt, _ := model.ApplyChatTemplate("", []kvfit.ChatMessage{{Role: "user", Content: "Hi!"}}, true)
//	tokens, _ := model.Tokenize(prompt, true, true)
//	_, err = session.Generate(tokens, nil, nil, func(t kvfit.Token, text string) bool {
//		fmt.Print(text)
//		return true // false stops generation
//	})
//
// A Model is immutable and safe for concurrent use; it may serve many
// sessions on many goroutines. A Session or a Sampler serializes its calls
// (the C library allows one thread at a time). Close releases memory at once
// and is idempotent; finalizers release what was not closed. Closing a model
// that still has open sessions defers the release until the last one closes.
//
// Failures are *Error values carrying kvfit's status and message; compare
// them with errors.Is against ErrBudget, ErrIO and the other sentinels.
//
// The library is found through pkg-config (kvfit.pc, or a build tree's
// kvfit-uninstalled.pc via PKG_CONFIG_PATH).
package kvfit

// #cgo pkg-config: kvfit
// #include <stdlib.h>
// #include <kvfit.h>
// #include "callbacks.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Token is a token id of the model's vocabulary.
type Token = int32

// Version is the "MAJOR.MINOR.PATCH" of the library actually loaded.
func Version() string { return C.GoString(C.kvfit_version()) }

// VersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the loaded library.
func VersionNumber() uint32 { return uint32(C.kvfit_version_number()) }

// Status is a kvfit status code (KVFIT_E_* in kvfit.h).
type Status int32

const (
	StatusArg                Status = C.KVFIT_E_ARG
	StatusBufferTooSmall     Status = C.KVFIT_E_BUFFER_TOO_SMALL
	StatusUTF8               Status = C.KVFIT_E_UTF8
	StatusToken              Status = C.KVFIT_E_TOKEN
	StatusState              Status = C.KVFIT_E_STATE
	StatusIO                 Status = C.KVFIT_E_IO
	StatusFormat             Status = C.KVFIT_E_FORMAT
	StatusUnsupported        Status = C.KVFIT_E_UNSUPPORTED
	StatusNoMem              Status = C.KVFIT_E_NOMEM
	StatusBudget             Status = C.KVFIT_E_BUDGET
	StatusContextFull        Status = C.KVFIT_E_CONTEXT_FULL
	StatusBackend            Status = C.KVFIT_E_BACKEND
	StatusBackendUnavailable Status = C.KVFIT_E_BACKEND_UNAVAILABLE
	StatusCancelled          Status = C.KVFIT_E_CANCELLED
	StatusInternal           Status = C.KVFIT_E_INTERNAL
	StatusTemplate           Status = C.KVFIT_E_TEMPLATE
)

// String is the constant's name, e.g. "KVFIT_E_BUDGET".
func (s Status) String() string { return C.GoString(C.kvfit_status_str(C.kvfit_status(s))) }

// Error is a failed kvfit call: its status and kvfit's explanation.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "kvfit: " + e.Status.String()
	}
	return "kvfit: " + e.Message + " (" + e.Status.String() + ")"
}

// Is matches the sentinels (ErrBudget, ...) by status, whatever the message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Status == e.Status
}

// Sentinels for errors.Is, one per status.
var (
	ErrArg                = &Error{Status: StatusArg}
	ErrBufferTooSmall     = &Error{Status: StatusBufferTooSmall}
	ErrUTF8               = &Error{Status: StatusUTF8}
	ErrToken              = &Error{Status: StatusToken}
	ErrState              = &Error{Status: StatusState}
	ErrIO                 = &Error{Status: StatusIO}
	ErrFormat             = &Error{Status: StatusFormat}
	ErrUnsupported        = &Error{Status: StatusUnsupported}
	ErrNoMem              = &Error{Status: StatusNoMem}
	ErrBudget             = &Error{Status: StatusBudget}
	ErrContextFull        = &Error{Status: StatusContextFull}
	ErrBackend            = &Error{Status: StatusBackend}
	ErrBackendUnavailable = &Error{Status: StatusBackendUnavailable}
	ErrCancelled          = &Error{Status: StatusCancelled}
	ErrInternal           = &Error{Status: StatusInternal}
	ErrTemplate           = &Error{Status: StatusTemplate}
)

// ErrClosed is returned by methods of a closed Model, Session or Sampler.
var ErrClosed = errors.New("kvfit: use of a closed handle")

// ErrReentrant is returned when a token callback calls its own session.
var ErrReentrant = errors.New("kvfit: session called from its own token callback")

// call runs one fallible C call and reads the thread's error message on the
// same OS thread: kvfit_last_error is thread-local, and goroutines migrate.
func call(f func() C.kvfit_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.KVFIT_OK {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.kvfit_last_error())}
}

// readSized calls a function that fills a buffer and reports the size it
// needs, growing the buffer once if it was too small. nul: the function also
// writes a terminating NUL, which is not part of the result.
func readSized(nul bool, f func(buf *C.char, size C.size_t, n *C.size_t) C.kvfit_status) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		var n C.size_t
		var tooSmall bool
		err := call(func() C.kvfit_status {
			st := f((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
			tooSmall = st == C.KVFIT_E_BUFFER_TOO_SMALL
			return st
		})
		needed := int(n)
		if nul {
			needed++
		}
		if tooSmall && needed > len(buf) {
			buf = make([]byte, needed)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// tokensPtr is the C view of a token slice (NULL when empty).
func tokensPtr(tokens []Token) *C.int32_t {
	if len(tokens) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&tokens[0]))
}

// LogLevel is the severity of a log line.
type LogLevel int32

const (
	LogDebug LogLevel = C.KVFIT_LOG_DEBUG
	LogInfo  LogLevel = C.KVFIT_LOG_INFO
	LogWarn  LogLevel = C.KVFIT_LOG_WARN
	LogError LogLevel = C.KVFIT_LOG_ERROR
)

var (
	logMu sync.RWMutex
	logFn func(LogLevel, string)
)

// SetLogCallback routes kvfit's log lines at or above minLevel to fn,
// process-wide; nil silences them (the default). fn may be called from any
// thread that runs kvfit code, concurrently.
func SetLogCallback(minLevel LogLevel, fn func(level LogLevel, message string)) {
	logMu.Lock()
	logFn = fn
	logMu.Unlock()
	C.kvfitgo_set_log_callback(C.bool(fn != nil), C.kvfit_log_level(minLevel))
}

// Backend picks the device that runs a model.
type Backend int32

const (
	// BackendAuto picks CUDA, then Vulkan on a GPU, then the CPU; the
	// KVFIT_BACKEND environment variable (auto, cpu, cuda, vulkan) overrides it.
	BackendAuto   Backend = C.KVFIT_BACKEND_AUTO
	BackendCPU    Backend = C.KVFIT_BACKEND_CPU
	BackendCUDA   Backend = C.KVFIT_BACKEND_CUDA
	BackendVulkan Backend = C.KVFIT_BACKEND_VULKAN
)

// nameOf looks v up in names; values a newer library may add get their number.
func nameOf[T ~int32](names map[T]string, v T, kind string) string {
	if name, ok := names[v]; ok {
		return name
	}
	return fmt.Sprintf("%s %d", kind, int32(v))
}

var backendNames = map[Backend]string{BackendAuto: "auto", BackendCPU: "cpu", BackendCUDA: "cuda", BackendVulkan: "vulkan"}

func (b Backend) String() string { return nameOf(backendNames, b, "backend") }

// DeviceType is the kind of hardware a device is.
type DeviceType int32

const (
	DeviceCPU           DeviceType = C.KVFIT_DEVICE_CPU // the CPU backend, or a Vulkan device running on the CPU
	DeviceIntegratedGPU DeviceType = C.KVFIT_DEVICE_INTEGRATED_GPU
	DeviceDiscreteGPU   DeviceType = C.KVFIT_DEVICE_DISCRETE_GPU
	DeviceVirtualGPU    DeviceType = C.KVFIT_DEVICE_VIRTUAL_GPU
	DeviceOther         DeviceType = C.KVFIT_DEVICE_OTHER
)

// DeviceInfo describes a device kvfit can compute on.
type DeviceInfo struct {
	Backend     Backend
	Index       int // the device's index within its backend, for ModelOptions.Device
	Type        DeviceType
	Name        string
	MemoryBytes uint64 // device-local memory (for the CPU: physical RAM)
}

// Devices lists the devices kvfit can compute on: the CPU first, then every
// usable device of each GPU backend built in.
func Devices() ([]DeviceInfo, error) {
	var n C.size_t
	if err := call(func() C.kvfit_status { return C.kvfit_device_count(&n) }); err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, n)
	for i := C.size_t(0); i < n; i++ {
		var d C.kvfit_device_info
		d.struct_size = C.uint32_t(unsafe.Sizeof(d))
		if err := call(func() C.kvfit_status { return C.kvfit_device_get_info(i, &d) }); err != nil {
			return nil, err
		}
		out = append(out, DeviceInfo{Backend: Backend(d.backend), Index: int(d.index), Type: DeviceType(d._type),
			Name: C.GoString(d.name), MemoryBytes: uint64(d.memory_bytes)})
	}
	return out, nil
}

// ModelOptions control loading; the zero value is the default.
type ModelOptions struct {
	Backend Backend
	// Device is the device's index within the backend (DeviceInfo.Index);
	// nil = the KVFIT_DEVICE environment variable if set, else the best device.
	Device    *int
	VocabOnly bool // only metadata and tokenizer: no weights, no sessions
	// Progress is called with values in [0, 1]; returning false cancels the
	// load, which then fails with ErrCancelled.
	Progress func(progress float32) bool
}

// Model is a loaded GGUF model, safe for concurrent use.
type Model struct {
	mu       sync.RWMutex // write-held only to release the C model
	ptr      *C.kvfit_model
	sessions int  // open sessions, guarded by mu
	closing  bool // Close was called; release when sessions reaches 0
}

// LoadModel memory-maps a GGUF file. opts may be nil.
func LoadModel(path string, opts *ModelOptions) (*Model, error) {
	if opts == nil {
		opts = &ModelOptions{}
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var handle cgo.Handle
	var sink *progressSink
	if opts.Progress != nil {
		sink = &progressSink{fn: opts.Progress}
		handle = cgo.NewHandle(sink)
		defer handle.Delete()
	}
	device := -1
	if opts.Device != nil {
		device = *opts.Device
	}
	var ptr *C.kvfit_model
	err := call(func() C.kvfit_status {
		return C.kvfitgo_model_load(cpath, C.kvfit_backend_kind(opts.Backend), C.int32_t(device), C.bool(opts.VocabOnly),
			C.uintptr_t(handle), &ptr)
	})
	if sink != nil && sink.panicked != nil {
		C.kvfit_model_free(ptr)
		panic(sink.panicked)
	}
	if err != nil {
		return nil, err
	}
	m := &Model{ptr: ptr}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close releases the model, at once or, if sessions are still open, when the
// last of them closes. Calling it again does nothing.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closing = true
	m.releaseLocked()
	return nil
}

func (m *Model) releaseLocked() {
	if m.closing && m.sessions == 0 && m.ptr != nil {
		C.kvfit_model_free(m.ptr)
		m.ptr = nil
		runtime.SetFinalizer(m, nil)
	}
}

// use runs f with the C model while holding it open.
func (m *Model) use(f func(p *C.kvfit_model) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil || m.closing {
		return ErrClosed
	}
	return f(m.ptr)
}

// ModelInfo describes a model.
type ModelInfo struct {
	Arch       string
	Name       string
	Tokenizer  string // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
	Layers     uint32
	Heads      uint32
	KVHeads    uint32
	Embedding  uint32
	ContextLen uint32 // training context
	VocabSize  uint32
	Params     uint64
	WeightSize uint64 // bytes of the weights as stored
	BOS        Token  // -1 if none
	EOS        Token  // -1 if none
}

// Info describes the model.
func (m *Model) Info() (ModelInfo, error) {
	var out ModelInfo
	err := m.use(func(p *C.kvfit_model) error {
		var i C.kvfit_model_info
		i.struct_size = C.uint32_t(unsafe.Sizeof(i))
		if err := call(func() C.kvfit_status { return C.kvfit_model_get_info(p, &i) }); err != nil {
			return err
		}
		out = ModelInfo{
			Arch: C.GoString(i.arch), Name: C.GoString(i.name), Tokenizer: C.GoString(i.tokenizer),
			Layers: uint32(i.n_layer), Heads: uint32(i.n_head), KVHeads: uint32(i.n_head_kv),
			Embedding: uint32(i.n_embd), ContextLen: uint32(i.n_ctx_train), VocabSize: uint32(i.n_vocab),
			Params: uint64(i.n_params), WeightSize: uint64(i.weight_bytes),
			BOS: Token(i.bos_token), EOS: Token(i.eos_token),
		}
		return nil
	})
	return out, err
}

// Meta is a GGUF metadata value as text (ErrArg if the key is absent).
func (m *Model) Meta(key string) (string, error) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var out []byte
	err := m.use(func(p *C.kvfit_model) (err error) {
		out, err = readSized(true, func(buf *C.char, size C.size_t, n *C.size_t) C.kvfit_status {
			return C.kvfit_model_meta(p, ckey, buf, size, n)
		})
		return err
	})
	return string(out), err
}

// Tokenize splits UTF-8 text into tokens. addSpecial adds BOS/EOS as the
// model asks; parseSpecial turns control-token text such as "<|im_start|>"
// into those tokens.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	bytes := []byte(text)
	var textPtr *C.char
	if len(bytes) > 0 {
		textPtr = (*C.char)(unsafe.Pointer(&bytes[0]))
	}
	tokens := make([]Token, len(bytes)+8)
	err := m.use(func(p *C.kvfit_model) error {
		for {
			var n C.size_t
			var tooSmall bool
			err := call(func() C.kvfit_status {
				st := C.kvfit_tokenize(p, textPtr, C.size_t(len(bytes)), C.bool(addSpecial), C.bool(parseSpecial),
					tokensPtr(tokens), C.size_t(len(tokens)), &n)
				tooSmall = st == C.KVFIT_E_BUFFER_TOO_SMALL
				return st
			})
			if tooSmall && int(n) > len(tokens) {
				tokens = make([]Token, n)
				continue
			}
			tokens = tokens[:n]
			return err
		}
	})
	if err != nil {
		return nil, err
	}
	return tokens, nil
}

// TokenToPiece is the bytes of one token (possibly part of a UTF-8 character).
func (m *Model) TokenToPiece(token Token, renderSpecial bool) ([]byte, error) {
	var out []byte
	err := m.use(func(p *C.kvfit_model) (err error) {
		out, err = readSized(false, func(buf *C.char, size C.size_t, n *C.size_t) C.kvfit_status {
			return C.kvfit_token_to_piece(p, C.int32_t(token), C.bool(renderSpecial), buf, size, n)
		})
		return err
	})
	return out, err
}

// Detokenize is the text of a token sequence.
func (m *Model) Detokenize(tokens []Token, renderSpecial bool) (string, error) {
	var out []byte
	err := m.use(func(p *C.kvfit_model) (err error) {
		out, err = readSized(false, func(buf *C.char, size C.size_t, n *C.size_t) C.kvfit_status {
			return C.kvfit_detokenize(p, tokensPtr(tokens), C.size_t(len(tokens)), C.bool(renderSpecial), buf, size, n)
		})
		return err
	})
	return string(out), err
}

// IsEOG reports end-of-generation tokens (EOS, EOT, <|im_end|>, ...).
func (m *Model) IsEOG(token Token) bool {
	var eog bool
	_ = m.use(func(p *C.kvfit_model) error {
		eog = bool(C.kvfit_token_is_eog(p, C.int32_t(token)))
		return nil
	})
	return eog
}

// ChatTemplate is the template family the model's own template resembles
// ("chatml", "llama3", ..., "custom" for none kvfit knows by name).
func (m *Model) ChatTemplate() string {
	name := "chatml"
	_ = m.use(func(p *C.kvfit_model) error {
		name = C.GoString(C.kvfit_model_chat_template(p))
		return nil
	})
	return name
}

// ChatMessage is one turn of a conversation; Role is "system", "user" or "assistant".
type ChatMessage struct {
	Role    string
	Content string
}

// ApplyChatTemplate renders a conversation: template "" renders the model's
// own Jinja template as Hugging Face does; a family name ("chatml", ...) a
// built-in rendering; Jinja text that template itself. addAssistant appends
// the header that opens the assistant's turn. A template's refusal of the
// conversation is ErrTemplate; Jinja kvfit cannot render, ErrUnsupported.
func (m *Model) ApplyChatTemplate(template string, messages []ChatMessage, addAssistant bool) (string, error) {
	var ctemplate *C.char
	if template != "" {
		ctemplate = C.CString(template)
		defer C.free(unsafe.Pointer(ctemplate))
	}
	// C strings in Go memory are allowed: the slice holds no Go pointers.
	raw := make([]C.kvfit_chat_message, len(messages)+1)
	for i, msg := range messages {
		raw[i].role = C.CString(msg.Role)
		raw[i].content = C.CString(msg.Content)
		defer C.free(unsafe.Pointer(raw[i].role))
		defer C.free(unsafe.Pointer(raw[i].content))
	}
	var out []byte
	err := m.use(func(p *C.kvfit_model) (err error) {
		out, err = readSized(true, func(buf *C.char, size C.size_t, n *C.size_t) C.kvfit_status {
			return C.kvfit_chat_apply(p, ctemplate, &raw[0], C.size_t(len(messages)), C.bool(addAssistant), buf, size, n)
		})
		return err
	})
	return string(out), err
}

// KVCodec is how an attention layer stores keys and values.
type KVCodec int32

const (
	KVAuto       KVCodec = C.KVFIT_KV_AUTO // the planner chooses
	KVF16        KVCodec = C.KVFIT_KV_F16
	KVQ8         KVCodec = C.KVFIT_KV_Q8
	KVQ4         KVCodec = C.KVFIT_KV_Q4
	KVQ4Hadamard KVCodec = C.KVFIT_KV_Q4_HADAMARD // Q4 with Hadamard-rotated keys
	KVQ4Channel  KVCodec = C.KVFIT_KV_Q4_CHANNEL  // Q4 with keys grouped per channel; windows are multiples of 32
	KVF32        KVCodec = C.KVFIT_KV_F32         // recurrent layers' state (reported only, not requested)
	KVBF16       KVCodec = C.KVFIT_KV_BF16        // a recurrent layer's state matrix in BF16 (reported only)
)

var codecNames = map[KVCodec]string{
	KVAuto: "auto", KVF16: "f16", KVQ8: "q8", KVQ4: "q4", KVQ4Hadamard: "q4h", KVQ4Channel: "q4c", KVF32: "f32", KVBF16: "bf16",
}

// String gives the names kvfit's tools use: auto, f16, q8, q4, q4h, q4c, f32, bf16.
func (c KVCodec) String() string { return nameOf(codecNames, c, "codec") }

// SessionOptions size a session's KV memory; see kvfit_session_params in
// kvfit.h. Start from DefaultSessionOptions: some zero values mean something.
type SessionOptions struct {
	Context       uint32 // dense: tokens held; streaming: context the planner covers. 0 = training context
	Batch         uint32 // tokens per prefill step; 0 = 512
	Threads       int32  // CPU threads; 0 = all cores (at most 16)
	KVBudgetBytes uint64 // 0 = no budget (dense unless Window is set)
	Sinks         int32  // sink tokens per attention layer; -1 = 4 when streaming
	Window        uint32 // ring size in tokens; 0 = the planner decides
	Codec         KVCodec
}

// DefaultSessionOptions are the library's defaults.
func DefaultSessionOptions() SessionOptions {
	var p C.kvfit_session_params
	C.kvfit_session_params_init(&p)
	return SessionOptions{
		Context: uint32(p.n_ctx), Batch: uint32(p.n_batch), Threads: int32(p.n_threads),
		KVBudgetBytes: uint64(p.kv_budget_bytes), Sinks: int32(p.n_sink), Window: uint32(p.n_window),
		Codec: KVCodec(p.kv_codec),
	}
}

// Session is a conversation's state on a model: KV memory, position, logits.
type Session struct {
	mu         sync.Mutex
	ptr        *C.kvfit_session
	model      *Model
	inCallback atomic.Bool
}

// NewSession allocates all of a session's memory; opts nil = defaults. A
// budget too small for any plan fails with ErrBudget, whose message names
// the smallest budget that works.
func (m *Model) NewSession(opts *SessionOptions) (*Session, error) {
	o := DefaultSessionOptions()
	if opts != nil {
		o = *opts
	}
	var p C.kvfit_session_params
	C.kvfit_session_params_init(&p)
	p.n_ctx = C.uint32_t(o.Context)
	p.n_batch = C.uint32_t(o.Batch)
	p.n_threads = C.int32_t(o.Threads)
	p.kv_budget_bytes = C.uint64_t(o.KVBudgetBytes)
	p.n_sink = C.int32_t(o.Sinks)
	p.n_window = C.uint32_t(o.Window)
	p.kv_codec = C.kvfit_kv_codec(o.Codec)

	// The write lock keeps Close from releasing the model mid-creation.
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr == nil || m.closing {
		return nil, ErrClosed
	}
	var ptr *C.kvfit_session
	if err := call(func() C.kvfit_status { return C.kvfit_session_create(m.ptr, &p, &ptr) }); err != nil {
		return nil, err
	}
	m.sessions++
	s := &Session{ptr: ptr, model: m}
	runtime.SetFinalizer(s, (*Session).Close)
	return s, nil
}

// Close releases the session's memory. Calling it again does nothing.
func (s *Session) Close() error {
	if s.inCallback.Load() {
		return ErrReentrant
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil
	}
	C.kvfit_session_free(s.ptr)
	s.ptr = nil
	runtime.SetFinalizer(s, nil)
	s.model.mu.Lock()
	s.model.sessions--
	s.model.releaseLocked()
	s.model.mu.Unlock()
	return nil
}

// use runs f with the C session, holding it for that time. It refuses
// calls from the session's own token callback (which would deadlock) and
// calls after Close.
func (s *Session) use(f func(p *C.kvfit_session) error) error {
	if s.inCallback.Load() {
		return ErrReentrant
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return ErrClosed
	}
	return f(s.ptr)
}

// do runs one fallible C call on the session.
func (s *Session) do(f func(p *C.kvfit_session) C.kvfit_status) error {
	return s.use(func(p *C.kvfit_session) error { return call(func() C.kvfit_status { return f(p) }) })
}

// Reset forgets all tokens; the memory stays allocated.
func (s *Session) Reset() error {
	return s.do(func(p *C.kvfit_session) C.kvfit_status { return C.kvfit_session_reset(p) })
}

// Prefill appends tokens, computing the logits of the last one.
func (s *Session) Prefill(tokens []Token) error {
	return s.do(func(p *C.kvfit_session) C.kvfit_status {
		return C.kvfit_session_prefill(p, tokensPtr(tokens), C.size_t(len(tokens)))
	})
}

// Decode appends one token and computes its logits.
func (s *Session) Decode(token Token) error {
	return s.do(func(p *C.kvfit_session) C.kvfit_status { return C.kvfit_session_decode(p, C.int32_t(token)) })
}

// Logits is a copy of the newest token's logits (ErrState before any token).
func (s *Session) Logits() ([]float32, error) {
	var out []float32
	err := s.do(func(p *C.kvfit_session) C.kvfit_status {
		var logits *C.float
		var n C.size_t
		st := C.kvfit_session_logits(p, &logits, &n)
		if st == C.KVFIT_OK && n > 0 {
			out = append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(logits)), int(n))...)
		}
		return st
	})
	return out, err
}

// NPast is the number of tokens the session holds (0 once closed).
func (s *Session) NPast() uint64 {
	var n uint64
	_ = s.use(func(p *C.kvfit_session) error { n = uint64(C.kvfit_session_n_past(p)); return nil })
	return n
}

// KVBytes is the memory allocated for per-token and per-sequence state.
func (s *Session) KVBytes() uint64 {
	var n uint64
	_ = s.use(func(p *C.kvfit_session) error { n = uint64(C.kvfit_session_kv_bytes(p)); return nil })
	return n
}

// LayerKind says whether a layer attends to every token, to sinks + a
// window, or to the model's own sliding window.
type LayerKind int32

const (
	LayerDense     LayerKind = C.KVFIT_LAYER_DENSE
	LayerStreaming LayerKind = C.KVFIT_LAYER_STREAMING
	LayerWindow    LayerKind = C.KVFIT_LAYER_WINDOW
	LayerRecurrent LayerKind = C.KVFIT_LAYER_RECURRENT // a fixed-size state (Gated DeltaNet, RWKV)
)

var layerKindNames = map[LayerKind]string{LayerDense: "dense", LayerStreaming: "streaming", LayerWindow: "window", LayerRecurrent: "recurrent"}

func (k LayerKind) String() string { return nameOf(layerKindNames, k, "layer kind") }

// LayerPlan is what the planner chose for one layer.
type LayerPlan struct {
	Kind   LayerKind
	Codec  KVCodec
	Sinks  uint32
	Window uint32 // dense layers: the tokens they hold
	Bytes  uint64 // codes, scales, minima
}

// Plan is a session's plan: one entry per layer and all KV state's bytes.
type Plan struct {
	Layers     []LayerPlan
	TotalBytes uint64
}

// Plan reports what the planner chose.
func (s *Session) Plan() (Plan, error) {
	var n C.size_t
	var total C.uint64_t
	var layers []C.kvfit_layer_plan
	err := s.use(func(p *C.kvfit_session) error {
		if err := call(func() C.kvfit_status { return C.kvfit_session_plan(p, nil, 0, &n, nil) }); err != nil {
			return err
		}
		layers = make([]C.kvfit_layer_plan, n+1)
		return call(func() C.kvfit_status {
			return C.kvfit_session_plan(p, &layers[0], C.size_t(len(layers)), &n, &total)
		})
	})
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{TotalBytes: uint64(total)}
	for _, l := range layers[:n] {
		plan.Layers = append(plan.Layers, LayerPlan{
			Kind: LayerKind(l.kind), Codec: KVCodec(l.codec), Sinks: uint32(l.n_sink),
			Window: uint32(l.n_window), Bytes: uint64(l.bytes),
		})
	}
	return plan, nil
}

// SaveState is the session's state as bytes (tokens' KV, position, logits),
// loadable into a session of the same model with the same plan.
func (s *Session) SaveState() ([]byte, error) {
	var buf []byte
	var written C.size_t
	err := s.use(func(p *C.kvfit_session) error {
		var size C.size_t
		if err := call(func() C.kvfit_status { return C.kvfit_session_state_size(p, &size) }); err != nil {
			return err
		}
		buf = make([]byte, size+1)
		return call(func() C.kvfit_status { return C.kvfit_session_save(p, unsafe.Pointer(&buf[0]), size, &written) })
	})
	if err != nil {
		return nil, err
	}
	return buf[:written], nil
}

// LoadState restores what SaveState wrote; the session is unchanged on failure.
func (s *Session) LoadState(state []byte) error {
	buf := append(append([]byte(nil), state...), 0) // a valid pointer even for empty input
	return s.do(func(p *C.kvfit_session) C.kvfit_status {
		return C.kvfit_session_load(p, unsafe.Pointer(&buf[0]), C.size_t(len(state)))
	})
}

// PrefillNLL is Prefill that also returns -log p(token | everything before)
// in nats per token (NaN for the first if the session had no logits).
func (s *Session) PrefillNLL(tokens []Token) ([]float32, error) {
	nll := make([]float32, len(tokens)+1)
	err := s.do(func(p *C.kvfit_session) C.kvfit_status {
		return C.kvfit_session_prefill_nll(p, tokensPtr(tokens), C.size_t(len(tokens)), (*C.float)(&nll[0]))
	})
	if err != nil {
		return nil, err
	}
	return nll[:len(tokens)], nil
}

// StopReason says why generation ended.
type StopReason int32

const (
	StopEOG         StopReason = C.KVFIT_STOP_EOG      // an end-of-generation token
	StopLength      StopReason = C.KVFIT_STOP_LENGTH   // MaxTokens reached
	StopCallback    StopReason = C.KVFIT_STOP_CALLBACK // the callback returned false
	StopContextFull StopReason = C.KVFIT_STOP_CONTEXT  // the session's cache is full
)

var stopReasonNames = map[StopReason]string{
	StopEOG: "end of generation", StopLength: "length", StopCallback: "callback", StopContextFull: "context full",
}

func (r StopReason) String() string { return nameOf(stopReasonNames, r, "stop reason") }

// GenerateOptions control Generate; start from DefaultGenerateOptions.
type GenerateOptions struct {
	MaxTokens     uint32
	RenderSpecial bool // pass control tokens' text to the callback
}

// DefaultGenerateOptions are the library's defaults.
func DefaultGenerateOptions() GenerateOptions {
	var p C.kvfit_generate_params
	C.kvfit_generate_params_init(&p)
	return GenerateOptions{MaxTokens: uint32(p.max_tokens), RenderSpecial: bool(p.render_special)}
}

// GenerateResult is how a generation ended.
type GenerateResult struct {
	Generated  uint32 // tokens generated (an end-of-generation token is not counted)
	StopReason StopReason
}

// Generate prefills prompt (may be empty if the session has logits), then
// samples and appends tokens until an end-of-generation token, MaxTokens, the
// callback returning false, or a full cache. onToken (may be nil) receives
// each token with its newly completed UTF-8 text (possibly empty while a
// character is incomplete), and token -1 with bytes still pending at the end.
// It must not call this session. sampler nil = greedy; opts nil = defaults.
// A panic in onToken stops generation and is re-raised here.
func (s *Session) Generate(prompt []Token, sampler *Sampler, opts *GenerateOptions,
	onToken func(token Token, text string) bool) (GenerateResult, error) {
	o := DefaultGenerateOptions()
	if opts != nil {
		o = *opts
	}
	var handle cgo.Handle
	var sink *tokenSink
	if onToken != nil {
		sink = &tokenSink{fn: func(t Token, text string) bool {
			s.inCallback.Store(true)
			defer s.inCallback.Store(false)
			return onToken(t, text)
		}}
		handle = cgo.NewHandle(sink)
		defer handle.Delete()
	}
	var r C.kvfit_generate_result
	run := func(p *C.kvfit_session, samplerPtr *C.kvfit_sampler) error {
		return call(func() C.kvfit_status {
			return C.kvfitgo_generate(p, tokensPtr(prompt), C.size_t(len(prompt)), samplerPtr, C.uint32_t(o.MaxTokens),
				C.bool(o.RenderSpecial), C.uintptr_t(handle), &r)
		})
	}
	// Session first, then sampler, as everywhere both are held.
	err := s.use(func(p *C.kvfit_session) error {
		if sampler == nil {
			return run(p, nil)
		}
		return sampler.use(func(sp *C.kvfit_sampler) error { return run(p, sp) })
	})
	if sink != nil && sink.panicked != nil {
		panic(sink.panicked)
	}
	return GenerateResult{Generated: uint32(r.n_generated), StopReason: StopReason(r.stop_reason)}, err
}

// SamplerOptions configure a sampling chain; start from DefaultSamplerOptions.
type SamplerOptions struct {
	Temperature   float32 // <= 0: greedy
	TopK          int32   // <= 0: off
	TopP          float32 // >= 1: off
	MinP          float32 // <= 0: off
	RepeatPenalty float32 // 1: off
	RepeatLastN   int32   // tokens of history the penalty looks at
	Seed          uint64  // the same seed and logits give the same tokens
}

// DefaultSamplerOptions are the library's defaults.
func DefaultSamplerOptions() SamplerOptions {
	var p C.kvfit_sampler_params
	C.kvfit_sampler_params_init(&p)
	return SamplerOptions{
		Temperature: float32(p.temperature), TopK: int32(p.top_k), TopP: float32(p.top_p), MinP: float32(p.min_p),
		RepeatPenalty: float32(p.repeat_penalty), RepeatLastN: int32(p.repeat_last_n), Seed: uint64(p.seed),
	}
}

// Sampler is a sampling chain with its own history and random state.
type Sampler struct {
	mu  sync.Mutex
	ptr *C.kvfit_sampler
}

// NewSampler creates a sampler; opts nil = defaults.
func NewSampler(opts *SamplerOptions) (*Sampler, error) {
	o := DefaultSamplerOptions()
	if opts != nil {
		o = *opts
	}
	var p C.kvfit_sampler_params
	C.kvfit_sampler_params_init(&p)
	p.temperature = C.float(o.Temperature)
	p.top_k = C.int32_t(o.TopK)
	p.top_p = C.float(o.TopP)
	p.min_p = C.float(o.MinP)
	p.repeat_penalty = C.float(o.RepeatPenalty)
	p.repeat_last_n = C.int32_t(o.RepeatLastN)
	p.seed = C.uint64_t(o.Seed)
	var ptr *C.kvfit_sampler
	if err := call(func() C.kvfit_status { return C.kvfit_sampler_create(&p, &ptr) }); err != nil {
		return nil, err
	}
	smp := &Sampler{ptr: ptr}
	runtime.SetFinalizer(smp, (*Sampler).Close)
	return smp, nil
}

// use runs f with the C sampler, holding it for that time.
func (smp *Sampler) use(f func(p *C.kvfit_sampler) error) error {
	smp.mu.Lock()
	defer smp.mu.Unlock()
	if smp.ptr == nil {
		return ErrClosed
	}
	return f(smp.ptr)
}

// Close releases the sampler. Calling it again does nothing.
func (smp *Sampler) Close() error {
	smp.mu.Lock()
	defer smp.mu.Unlock()
	if smp.ptr != nil {
		C.kvfit_sampler_free(smp.ptr)
		smp.ptr = nil
		runtime.SetFinalizer(smp, nil)
	}
	return nil
}

// Reset forgets the history and reseeds.
func (smp *Sampler) Reset() error {
	return smp.use(func(p *C.kvfit_sampler) error { C.kvfit_sampler_reset(p); return nil })
}

// Sample picks a token from the session's current logits (does not append it).
func (smp *Sampler) Sample(s *Session) (Token, error) {
	var token C.int32_t
	// Session first, then sampler, as Generate takes them.
	err := s.use(func(sp *C.kvfit_session) error {
		return smp.use(func(p *C.kvfit_sampler) error {
			return call(func() C.kvfit_status { return C.kvfit_sampler_sample(p, sp, &token) })
		})
	})
	return Token(token), err
}

// Accept records a token in the history the repetition penalty looks at.
func (smp *Sampler) Accept(token Token) error {
	return smp.use(func(p *C.kvfit_sampler) error {
		return call(func() C.kvfit_status { return C.kvfit_sampler_accept(p, C.int32_t(token)) })
	})
}
