module kvfit-chat-go

go 1.19

require kvfit v0.0.0

replace kvfit => ../../bindings/go
