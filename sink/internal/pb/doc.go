// Package pb holds the generated protobuf and gRPC code of the sink plugin
// protocol (sink.proto). It is internal: package sink wraps it so that plugin
// authors see only sink.Sink, sink.Record, sink.Result and sink.Serve.
//
// The generated files are committed, so building needs no protoc. After
// editing sink.proto, regenerate them with protoc (Debian: protobuf-compiler)
// and the two Go generators on PATH:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	go generate ./sink/internal/pb
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative sink.proto
