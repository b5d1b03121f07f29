package kvfit

// Go ends of the C trampolines in callbacks.c. Each receives the
// runtime/cgo.Handle its caller registered and recovers any panic, which must
// not unwind through kvfit's C++ frames; the caller re-raises it.

// #include <stdint.h>
// #include <stdbool.h>
// #include <stddef.h>
import "C"

import "runtime/cgo"

// panicTrap runs a Go callback for C and keeps its panic instead of letting
// it unwind; once it has one, it refuses further calls.
type panicTrap struct {
	panicked interface{}
}

func (t *panicTrap) run(f func() bool) (goOn bool) {
	if t.panicked != nil {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			t.panicked = r
			goOn = false
		}
	}()
	return f()
}

type tokenSink struct {
	panicTrap
	fn func(token Token, text string) bool
}

type progressSink struct {
	panicTrap
	fn func(progress float32) bool
}

//export kvfitgoOnToken
func kvfitgoOnToken(token C.int32_t, text *C.char, textLen C.size_t, handle C.uintptr_t) C.bool {
	sink := cgo.Handle(handle).Value().(*tokenSink)
	return C.bool(sink.run(func() bool {
		var piece string
		if textLen > 0 {
			piece = C.GoStringN(text, C.int(textLen))
		}
		return sink.fn(Token(token), piece)
	}))
}

//export kvfitgoOnProgress
func kvfitgoOnProgress(progress C.float, handle C.uintptr_t) C.bool {
	sink := cgo.Handle(handle).Value().(*progressSink)
	return C.bool(sink.run(func() bool { return sink.fn(float32(progress)) }))
}

//export kvfitgoOnLog
func kvfitgoOnLog(level C.int, message *C.char) {
	logMu.RLock()
	fn := logFn
	logMu.RUnlock()
	if fn == nil {
		return
	}
	// A logger that panics loses that line rather than crashing in C.
	defer func() { _ = recover() }()
	fn(LogLevel(level), C.GoString(message))
}
