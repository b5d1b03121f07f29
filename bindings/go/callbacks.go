package kvfit

// Go ends of the C trampolines in callbacks.c. Each receives the
// runtime/cgo.Handle its caller registered and recovers any panic, which must
// not unwind through kvfit's C++ frames; the caller re-raises it.

// #include <stdint.h>
// #include <stdbool.h>
// #include <stddef.h>
import "C"

import "runtime/cgo"

type tokenSink struct {
	fn       func(token Token, text string) bool
	panicked interface{}
}

type progressSink struct {
	fn       func(progress float32) bool
	panicked interface{}
}

//export kvfitgoOnToken
func kvfitgoOnToken(token C.int32_t, text *C.char, textLen C.size_t, handle C.uintptr_t) (goOn C.bool) {
	sink := cgo.Handle(handle).Value().(*tokenSink)
	if sink.panicked != nil {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			sink.panicked = r
			goOn = false
		}
	}()
	var piece string
	if textLen > 0 {
		piece = C.GoStringN(text, C.int(textLen))
	}
	return C.bool(sink.fn(Token(token), piece))
}

//export kvfitgoOnProgress
func kvfitgoOnProgress(progress C.float, handle C.uintptr_t) (goOn C.bool) {
	sink := cgo.Handle(handle).Value().(*progressSink)
	if sink.panicked != nil {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			sink.panicked = r
			goOn = false
		}
	}()
	return C.bool(sink.fn(float32(progress)))
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
